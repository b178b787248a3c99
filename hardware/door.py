"""The door's behaviour on top of its hardware: grants, alarms, exit button.

:class:`DoorController` turns decisions into one unlock pulse and an
indicator pattern, re-locks as soon as the door closes, and raises the
door's alarms as events through the daemon's ``emit(event_type, details)``:

==========================  ==================================================
``door_forced``             the contact opened while the lock was engaged, and
                            no grant or exit press released it less than
                            ``forced_window_seconds`` before (once for
                            openings closer together than 2 s)
``door_held_open``          the door stayed open ``held_open_seconds``
``door_held_open_cleared``  it closed after ``door_held_open``
``exit_button``             the request-to-exit button was pressed (the lock
                            is released for one pulse)
==========================  ==================================================

What the door does: on a crash of the held-open thread or of a contact or
button callback the lock is engaged; on :meth:`DoorController.close` timers
stop and the lock is engaged.  On power loss the lock's ``fail_mode``
decides (docs/hardware.md).
"""

import logging
import math
import threading
import time

logger = logging.getLogger(__name__)

# How often the held-open thread looks at the door; an alarm due at 30 s may
# come this much late, which nobody at a door can tell apart.
HELD_OPEN_TICK = 0.1
# A bouncing reed switch or a door rattled in its frame opens the contact
# several times in a moment; one door_forced covers them all.
FORCED_REPEAT_SECONDS = 2.0
DENIED_SECONDS = 2.0
UNKNOWN_SECONDS = 2.0
JOIN_TIMEOUT = 2.0


class DoorController:
    """One door's behaviour.

    :param hardware: a :class:`hardware.Hardware` from :func:`hardware.open_hardware`.
    :param section: the :class:`config.hardware.HardwareSection` it was opened with
        (pulse length, alarm timings).
    :param emit: ``emit(event_type, details)``; called from the backend's GPIO
        thread and from the held-open thread, so it must be thread-safe.  If it
        raises, the lock is engaged and the error is logged.
    :param clock: monotonic seconds, for the alarm timings.

    Power loss: the lock's fail_mode decides.  Crash of the held-open thread
    or a GPIO callback: the lock is engaged.  Exit (:meth:`close`): timers stop
    and the lock is engaged.
    """

    def __init__(self, hardware, section, *, emit, clock=time.monotonic):
        self.hardware = hardware
        self.door_id = hardware.door_id
        self.lock = hardware.lock
        self.indicators = hardware.indicators
        self._emit = emit
        self._clock = clock
        self.unlock_seconds = section.lock.unlock_seconds
        contact = section.contact
        self.held_open_seconds = contact.held_open_seconds if contact is not None else None
        self.forced_window_seconds = contact.forced_window_seconds if contact is not None else 0.0
        self._mutex = threading.RLock()
        self._stop = threading.Event()
        self._authorised_until = -math.inf
        self._forced_at = -math.inf
        self._opened_at = None
        self._held_alarm = False
        self._thread = None
        if hardware.contact is not None:
            hardware.contact.when_opened = self._guarded(self._on_opened)
            hardware.contact.when_closed = self._guarded(self._on_closed)
            if hardware.contact.is_open:
                self._opened_at = self._clock()
            self._thread = threading.Thread(target=self._watch_held_open, name=f"{self.door_id}-held-open",
                                            daemon=True)
            self._thread.start()
        if hardware.exit_button is not None:
            hardware.exit_button.when_pressed = self._guarded(self._on_exit_pressed)

    # -- decisions from the recognition loop -------------------------------

    def grant(self, person_id=None):
        """Release the lock for one pulse of ``lock.unlock_seconds`` and show green."""
        self._authorise()
        self.lock.unlock(self.unlock_seconds)
        self.indicators.show("granted", seconds=self.unlock_seconds)
        # Not the person: logs outlive 'bytelocker forget'; the granted event names them.
        logger.info("door=%s granted: unlocking for %s s", self.door_id, self.unlock_seconds)

    def deny(self, reason=None):
        """Show red; the relay does not move."""
        self.indicators.show("denied", seconds=DENIED_SECONDS)
        logger.info("door=%s denied (%s)", self.door_id, reason)

    def unidentified(self):
        """Show the 'unknown' pattern; the relay does not move."""
        self.indicators.show("unknown", seconds=UNKNOWN_SECONDS)

    def set_fault(self, on):
        """Show the steady fault pattern while the camera or broker is lost."""
        self.indicators.set_fault(on)

    def close(self):
        """Stop the held-open timer, detach from the inputs and engage the lock."""
        self._stop.set()
        for part, names in ((self.hardware.contact, ("when_opened", "when_closed")),
                            (self.hardware.exit_button, ("when_pressed",))):
            if part is not None:
                for name in names:
                    setattr(part, name, None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)
        self.lock.lock()

    # -- inputs ------------------------------------------------------------

    def _authorise(self):
        with self._mutex:
            until = self._clock() + self.unlock_seconds + self.forced_window_seconds
            self._authorised_until = max(self._authorised_until, until)

    def _on_opened(self):
        now = self._clock()
        with self._mutex:
            self._opened_at = now
            self._held_alarm = False
            authorised = not self.lock.is_locked or now <= self._authorised_until
            repeat = now - self._forced_at < FORCED_REPEAT_SECONDS
            if not authorised:
                self._forced_at = now
        if authorised:
            return
        logger.warning("door=%s forced open%s", self.door_id, " again" if repeat else "")
        if not repeat:
            self._emit("door_forced", {"door": self.door_id, "lock_engaged": True})

    def _on_closed(self):
        now = self._clock()
        with self._mutex:
            opened_at, self._opened_at = self._opened_at, None
            alarmed, self._held_alarm = self._held_alarm, False
            # The door is shut again: a second opening on the same grant is
            # forced once the window has passed.
            self._authorised_until = min(self._authorised_until, now + self.forced_window_seconds)
        if not self.lock.is_locked:
            logger.info("door=%s closed; re-engaging the lock before the pulse ends", self.door_id)
        self.lock.lock()
        if self.indicators.pattern == "granted":
            self.indicators.show("idle")
        if alarmed:
            open_seconds = None if opened_at is None else round(now - opened_at, 1)
            self._emit("door_held_open_cleared", {"door": self.door_id, "open_seconds": open_seconds})

    def _on_exit_pressed(self):
        self._authorise()
        self.lock.unlock(self.unlock_seconds)
        self._emit("exit_button", {"door": self.door_id, "unlock_seconds": self.unlock_seconds})

    def _guarded(self, handler):
        def run():
            try:
                handler()
            except Exception:
                logger.exception("door=%s %s failed; engaging the lock", self.door_id, handler.__name__)
                self._engage_after_failure()

        return run

    # -- held-open timer ----------------------------------------------------

    def _watch_held_open(self):
        while not self._stop.wait(HELD_OPEN_TICK):
            try:
                self._check_held_open()
            except Exception:
                logger.exception("door=%s held-open timer failed; engaging the lock", self.door_id)
                self._engage_after_failure()

    def _check_held_open(self):
        now = self._clock()
        with self._mutex:
            if self._opened_at is None or self._held_alarm or now - self._opened_at < self.held_open_seconds:
                return
            self._held_alarm = True
            open_seconds = round(now - self._opened_at, 1)
        logger.warning("door=%s held open for %.0f s", self.door_id, open_seconds)
        self._emit("door_held_open", {"door": self.door_id, "open_seconds": open_seconds,
                                      "limit_seconds": self.held_open_seconds})

    def _engage_after_failure(self):
        try:
            self.lock.lock()
        except Exception:
            logger.critical("door=%s could not engage the lock after a failure", self.door_id, exc_info=True)
