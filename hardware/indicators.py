"""The door's LEDs and buzzer: named patterns played by one worker thread.

Patterns (green LED, red LED, buzzer):

============  =========================================================
``idle``      everything off
``granted``   green steady, one short chirp
``denied``    red steady, one long beep
``unknown``   red blinking (4 per second) after two short chirps
``fault``     red and green steady together (amber on a two-colour LED),
              no sound; shown while the camera is lost or stalled, events
              cannot be stored (full disk) or the lock cannot be engaged
============  =========================================================

A shown pattern lasts ``seconds`` and then gives way to the base pattern:
``fault`` while :meth:`Indicators.set_fault` is on, else ``idle``.  Missing
LEDs or buzzer are simply skipped.  Indicators never touch the lock.
"""

import logging
import threading
import time

from bytelocker.errors import HardwareError

logger = logging.getLogger(__name__)

ROLES = ("green", "red", "buzzer")
JOIN_TIMEOUT = 2.0

# Each pattern: steps of (seconds or None to hold, green, red, buzzer), and
# the index the pattern loops back to after its last timed step (None: hold
# the last step).
PATTERNS = {
    "idle": ([(None, 0, 0, 0)], None),
    "granted": ([(0.15, 1, 0, 1), (None, 1, 0, 0)], None),
    "denied": ([(0.6, 0, 1, 1), (None, 0, 1, 0)], None),
    "unknown": ([(0.1, 0, 1, 1), (0.1, 0, 0, 0), (0.1, 0, 1, 1), (0.125, 0, 0, 0),
                 (0.125, 0, 1, 0), (0.125, 0, 0, 0)], 4),
    "fault": ([(None, 1, 1, 0)], None),
}
DEFAULT_SECONDS = 3.0


class Indicators:
    """Green LED, red LED and buzzer, any of which may be absent.

    :param lines: ``{"green": line, "red": line, "buzzer": line}``; missing
        keys are parts the door does not have.
    :param active_high: ``{role: bool}``, True if the part is on at high.

    On exit (:meth:`close`) everything is switched off and released.
    """

    def __init__(self, lines, *, door_id="door", active_high=None):
        self.door_id = door_id
        self._lines = {role: line for role, line in lines.items() if line is not None}
        self._active_high = {role: True for role in self._lines}
        self._active_high.update(active_high or {})
        self._stop = threading.Event()
        # A Condition so a new pattern starts at once and blink steps keep time.
        self._cond = threading.Condition()
        self._fault = False
        self._pattern = None
        self._until = None
        self._steps = ()
        self._loop_from = None
        self._index = 0
        self._step_end = None
        self._start("idle", None)
        self._thread = None
        if self._lines:
            self._thread = threading.Thread(target=self._run, name=f"{door_id}-indicators", daemon=True)
            self._thread.start()

    @property
    def pattern(self):
        """The name of the pattern showing now."""
        with self._cond:
            return self._pattern

    @property
    def fault(self):
        return self._fault

    def show(self, pattern, *, seconds=DEFAULT_SECONDS):
        """Show ``pattern`` for ``seconds``, then the base pattern; ``show("idle")`` returns to base now."""
        if pattern not in PATTERNS:
            raise HardwareError(
                f"Door {self.door_id}: there is no indicator pattern {pattern!r}; use one of {', '.join(PATTERNS)}."
            )
        with self._cond:
            if pattern == "idle":
                self._start(self._base(), None)
            else:
                self._start(pattern, time.monotonic() + seconds)
            self._cond.notify_all()

    def set_fault(self, on):
        """Show the steady ``fault`` pattern while ``on`` (camera or broker lost); a shown pattern still plays first."""
        with self._cond:
            self._fault = bool(on)
            if self._until is None:
                self._start(self._base(), None)
            self._cond.notify_all()

    def close(self):
        """Stop the worker, switch everything off and release the lines."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)
        with self._cond:
            self._apply((None, 0, 0, 0))
        for line in self._lines.values():
            line.close()

    def _base(self):
        return "fault" if self._fault else "idle"

    def _start(self, pattern, until):
        self._pattern = pattern
        self._until = until
        self._steps, self._loop_from = PATTERNS[pattern]
        self._index = 0
        self._enter_step()

    def _enter_step(self):
        step = self._steps[self._index]
        self._step_end = None if step[0] is None else time.monotonic() + step[0]
        self._apply(step)

    def _apply(self, step):
        for role, on in zip(ROLES, step[1:]):
            line = self._lines.get(role)
            if line is not None and not line.closed:
                line.set(bool(on) == self._active_high[role])

    def _run(self):
        while not self._stop.is_set():
            try:
                self._serve()
            except Exception:
                logger.exception("door=%s indicator thread failed; restarting it", self.door_id)
                self._stop.wait(0.5)

    def _serve(self):
        with self._cond:
            while not self._stop.is_set():
                now = time.monotonic()
                if self._until is not None and now >= self._until:
                    self._start(self._base(), None)
                    continue
                if self._step_end is not None and now >= self._step_end:
                    self._index += 1
                    if self._index >= len(self._steps):
                        self._index = self._loop_from if self._loop_from is not None else len(self._steps) - 1
                    self._enter_step()
                    continue
                deadlines = [d for d in (self._until, self._step_end) if d is not None]
                self._cond.wait(min(deadlines) - now if deadlines else None)
