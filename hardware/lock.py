"""The door lock: one relay line, unlock pulses that end by themselves.

What the door does (see docs/hardware.md for the wiring behind it):

- **On start**: the lock line is driven to the locked level before anything
  else is opened.
- **Power loss**: the relay drops. A fail-secure lock (electric strike)
  stays locked; a fail-safe lock (maglock) releases and the door is open.
- **Crash** (unhandled exception in the pulse thread): the thread engages the
  lock and carries on; the daemon's own excepthook engages it too.
- **A failed write of the locked level** (GPIO busy, expander glitch): the
  pulse stays "due to end" and the thread retries with backoff until the
  line is locked; meanwhile :attr:`Lock.fault` says so, :meth:`Lock.unlock`
  is refused, and the daemon stops petting the systemd watchdog so systemd
  restarts it (``ExecStopPost=bytelocker door lock`` then engages the lock).
- **kill -9**: nothing in the process can act; the line stays where it was
  until systemd's ``ExecStopPost=bytelocker door lock`` drives it locked.
  On boards where the kernel resets a released line, the relay goes to the
  line's default level, which the wiring must make "locked" (fail-secure).
- **Exit** (:meth:`Lock.close`): the lock is engaged and its line stays
  driven at the locked level; it is never released to a floating input.

The daemon must never be the only way out: egress uses a hardware exit
device (mechanical handle, or a REX wired to the lock power), and a
fail-safe maglock needs a fire-alarm release as local code requires.
"""

import logging
import threading
import time

from bytelocker.errors import HardwareError

logger = logging.getLogger(__name__)

FAIL_MODES = ("secure", "safe")
# Longest pulse the Lock accepts; config keeps unlock_seconds to 1-30, and a
# longer request can only be a bug, so it is refused rather than clipped.
MAX_PULSE_SECONDS = 30.0
JOIN_TIMEOUT = 2.0
RESTART_DELAY = 0.5
# Retrying a failed locked write: fast first (most GPIO errors are
# momentary), then no more often than every 2 s so a dead line does not
# flood the journal.
RETRY_INITIAL_SECONDS = 0.05
RETRY_MAX_SECONDS = 2.0


def locked_level(*, fail_mode, active_high):
    """The pin level (True = high) at which the lock is locked.

    fail-secure: locked = relay off; fail-safe: locked = relay on. The relay
    is on at high when ``active_high``, at low otherwise.
    """
    if fail_mode not in FAIL_MODES:
        raise HardwareError(f"Lock fail_mode must be 'secure' or 'safe', not {fail_mode!r}.")
    relay_on_when_locked = fail_mode == "safe"
    return relay_on_when_locked == bool(active_high)


class Lock:
    """An electric lock on one relay line, locked on construction.

    :param line: an output line from a backend (see :mod:`hardware.backends`).
    :param door_id: named in log lines and errors.
    :param fail_mode: ``"secure"`` (strike: locked without power, so locked =
        relay off) or ``"safe"`` (maglock: unlocked without power, so locked =
        relay on).  Safe default: ``"secure"``.
    :param active_high: True if the relay energises when the line is high.
    :param unlock_seconds: length of a pulse when :meth:`unlock` is given none.
        The Lock takes any length up to 30 s (tests use short pulses); the
        config keeps it between 1 and 30 s.

    On power loss the relay drops (strike locked, maglock released); on a
    crash of the pulse thread the lock is engaged; if driving the line locked
    fails, it is retried with backoff until it works (see :attr:`fault`); on
    :meth:`close` it is engaged and its line left driven locked.
    """

    def __init__(self, line, *, door_id="door", fail_mode="secure", active_high=True, unlock_seconds=5.0):
        self.door_id = door_id
        self.fail_mode = fail_mode
        self.active_high = bool(active_high)
        self.locked_level = locked_level(fail_mode=fail_mode, active_high=active_high)
        self.unlock_seconds = self._check_seconds(unlock_seconds)
        self._line = line
        self._line.keep = True
        self._stop = threading.Event()
        # A Condition, not stop.wait(t): a new pulse must wake the worker at
        # once so its end is timed exactly, and stop still ends the wait.
        self._cond = threading.Condition(threading.RLock())
        self._deadline = None
        self._fault = None
        self._retry_delay = RETRY_INITIAL_SECONDS
        self._line.set(self.locked_level)
        self._thread = threading.Thread(target=self._run, name=f"{door_id}-lock-pulse", daemon=True)
        self._thread.start()

    @property
    def pin(self):
        return self._line.pin

    @property
    def is_locked(self):
        """True if the relay is at the locked level."""
        return self._line.level == self.locked_level

    @property
    def fault(self):
        """None while the lock can be engaged; else a sentence saying why it cannot.

        Set when driving the line to the locked level failed (cleared by the
        next write that works) or when the pulse thread has died (then
        nothing would end a pulse).  The daemon reports it in its status and
        stops petting the systemd watchdog while it is set.
        """
        with self._cond:
            if self._fault is not None:
                return self._fault
        if not self._stop.is_set() and not self._thread.is_alive():
            return f"the lock's pulse thread on GPIO {self.pin} has stopped, so nothing would end an unlock pulse"
        return None

    @property
    def unlocked_until(self):
        """``time.monotonic()`` at which the current pulse ends, or None when locked."""
        with self._cond:
            return self._deadline

    def unlock(self, seconds=None):
        """Release the lock for one pulse of ``seconds`` (default: :attr:`unlock_seconds`); returns at once.

        The lock re-engages by itself when the pulse ends.  Asking again
        during a pulse extends it (the relay does not move twice).

        :raises HardwareError: the lock is closed, its pulse thread has died
            (the lock is engaged instead), or it has a :attr:`fault`: a door
            that might not re-lock is not opened.
        """
        seconds = self.unlock_seconds if seconds is None else self._check_seconds(seconds)
        if not self._stop.is_set() and not self._thread.is_alive():
            self._engage_after_failure()
            raise HardwareError(f"Door {self.door_id}: the lock's pulse thread on GPIO {self.pin} has stopped, "
                                "so an unlock would never end; the lock is engaged instead.")
        with self._cond:
            if self._stop.is_set():
                raise HardwareError(f"Door {self.door_id}: the lock on GPIO {self.pin} is closed and cannot unlock.")
            if self._fault is not None:
                raise HardwareError(f"Door {self.door_id}: refusing to unlock, because {self._fault}.")
            self._line.set(not self.locked_level)
            deadline = time.monotonic() + seconds
            if self._deadline is None or deadline > self._deadline:
                self._deadline = deadline
            self._cond.notify_all()
        logger.info("door=%s lock released for %.1f s (GPIO %s)", self.door_id, seconds, self.pin)

    def lock(self):
        """Engage the lock now, ending any pulse. Safe to call from any thread, any number of times.

        :raises HardwareError: the line could not be driven locked; the pulse
            thread keeps retrying and :attr:`fault` is set until it works.
        """
        with self._cond:
            error = self._try_engage()
            self._cond.notify_all()
        if error is not None:
            raise HardwareError(f"Door {self.door_id}: could not engage the lock on GPIO {self.pin} ({error}); "
                                "retrying until it works.") from error

    def close(self):
        """Stop the pulse thread and engage the lock; the line stays driven locked (never released)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not threading.current_thread():
            self._thread.join(JOIN_TIMEOUT)
        self.lock()
        self._line.close()

    def _check_seconds(self, seconds):
        seconds = float(seconds)
        if not 0 < seconds <= MAX_PULSE_SECONDS:
            raise HardwareError(
                f"Door {self.door_id}: an unlock pulse must last more than 0 and at most "
                f"{MAX_PULSE_SECONDS:.0f} seconds, not {seconds}."
            )
        return seconds

    def _run(self):
        while not self._stop.is_set():
            try:
                self._serve()
            except Exception:
                logger.exception("door=%s lock pulse thread failed; engaging the lock", self.door_id)
                self._engage_after_failure()
                self._stop.wait(RESTART_DELAY)

    def _serve(self):
        with self._cond:
            while not self._stop.is_set():
                if self._deadline is None:
                    self._cond.wait()
                    continue
                remaining = self._deadline - time.monotonic()
                if remaining > 0:
                    self._cond.wait(remaining)
                    continue
                if self._try_engage() is None:
                    logger.info("door=%s lock re-engaged at the end of the pulse", self.door_id)
                else:
                    self._cond.wait(self._retry_delay)
                    self._retry_delay = min(self._retry_delay * 2, RETRY_MAX_SECONDS)

    def _try_engage(self):
        """Drive the line locked (``self._cond`` held); return None, or the error if the write failed.

        The deadline is cleared only after a write that worked: a pending
        deadline is what makes the pulse thread try again.
        """
        try:
            self._line.set(self.locked_level)
        except Exception as exc:  # noqa: BLE001 - any failed write leaves the door possibly unlocked
            now = time.monotonic()
            if self._deadline is None or self._deadline > now:
                self._deadline = now
            if self._fault is None:
                logger.critical("door=%s cannot engage the lock on GPIO %s: %r; retrying until it works",
                                self.door_id, self.pin, exc)
            self._fault = f"the lock on GPIO {self.pin} could not be engaged ({type(exc).__name__}: {exc})"
            return exc
        self._deadline = None
        self._retry_delay = RETRY_INITIAL_SECONDS
        if self._fault is not None:
            logger.warning("door=%s lock engaged again on GPIO %s after a failed write", self.door_id, self.pin)
            self._fault = None
        return None

    def _engage_after_failure(self):
        try:
            self.lock()
        except Exception:
            logger.critical("door=%s could not engage the lock on GPIO %s after a failure",
                            self.door_id, self.pin, exc_info=True)
