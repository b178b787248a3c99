"""The door's inputs: the door contact and the request-to-exit button.

Both turn pin levels into meanings (open/closed, pressed) from the wiring in
door.yaml, call ``when_*`` callbacks on changes, and on the simulated backend
have drivers for tests (``simulate_open()``, ``simulate_press()``).  Callbacks
run on the backend's event thread (gpiozero/Jetson.GPIO), or in the caller's
thread for the simulator.
"""

import logging
import threading
import time

from bytelocker.errors import HardwareError

logger = logging.getLogger(__name__)


def active_level(*, wiring, pull_up):
    """The pin level (True = high) of an *active* switch: door open, or button pressed.

    With a pull-up the switch pulls to ground, so a closed circuit reads low.
    NC (door contact): the circuit opens when the door opens.  NO (button):
    the circuit closes when pressed.
    """
    if wiring not in ("NO", "NC"):
        raise HardwareError(f"Switch wiring must be 'NO' or 'NC', not {wiring!r}.")
    circuit_closed_when_active = wiring == "NO"
    # closed circuit -> connected to the switch's rail: ground with a pull-up, 3.3 V with a pull-down
    return (not pull_up) if circuit_closed_when_active else bool(pull_up)


class _Switch:
    def __init__(self, line, *, door_id, wiring, pull_up):
        self.door_id = door_id
        self.wiring = wiring
        self.pull_up = bool(pull_up)
        self.active_level = active_level(wiring=wiring, pull_up=pull_up)
        self._line = line
        self._mutex = threading.Lock()

    @property
    def pin(self):
        return self._line.pin

    def _is_active(self):
        return self._line.level == self.active_level

    def _drive(self, active):
        drive = getattr(self._line, "drive", None)
        if drive is None:
            raise HardwareError(
                f"Door {self.door_id}: GPIO {self.pin} ({self._line.role}) is on the "
                f"{self._line.backend.name} backend; only the simulated backend can be driven from software."
            )
        drive(self.active_level if active else not self.active_level)

    def close(self):
        """Stop listening to the pin and release it."""
        self._line.close()


class DoorContact(_Switch):
    """The door-position contact (reed switch).

    :param wiring: ``"NC"`` (circuit closed while the door is closed; a cut
        wire then reads as "open", the safe reading) or ``"NO"``.
    :param pull_up: True if the contact switches to ground with a pull-up.

    ``when_opened`` and ``when_closed`` are called once per real change
    (repeated edges at the same state are ignored).  The contact does not
    move the lock; :class:`hardware.door.DoorController` does.
    """

    def __init__(self, line, *, door_id="door", wiring="NC", pull_up=True):
        super().__init__(line, door_id=door_id, wiring=wiring, pull_up=pull_up)
        self.when_opened = None
        self.when_closed = None
        self._was_open = self._is_active()
        line.when_changed = self._changed

    @property
    def is_open(self):
        """True if the door is open now (read from the pin)."""
        return self._is_active()

    def _changed(self, level):
        is_open = level == self.active_level
        with self._mutex:
            if is_open == self._was_open:
                return
            self._was_open = is_open
        callback = self.when_opened if is_open else self.when_closed
        if callback is not None:
            callback()

    def simulate_open(self):
        """Simulated backend: open the door (drive the contact's pin to its open level)."""
        self._drive(True)

    def simulate_close(self):
        """Simulated backend: close the door."""
        self._drive(False)


class ExitButton(_Switch):
    """The request-to-exit button, with software debounce.

    :param wiring: ``"NO"`` (closes when pressed; usual) or ``"NC"``.
    :param pull_up: True if the button switches to ground with a pull-up.
    :param debounce_ms: presses closer than this to the last accepted press
        are ignored, so contact bounce or hammering counts as one press.

    ``when_pressed`` is called once per accepted press.  This button is a
    convenience; the door's egress must not depend on it (docs/hardware.md).
    """

    def __init__(self, line, *, door_id="door", wiring="NO", pull_up=True, debounce_ms=50, clock=time.monotonic):
        super().__init__(line, door_id=door_id, wiring=wiring, pull_up=pull_up)
        self.debounce_seconds = max(0, debounce_ms) / 1000.0
        self.when_pressed = None
        self._clock = clock
        self._was_pressed = self._is_active()
        self._last_accepted = None
        line.when_changed = self._changed

    @property
    def is_pressed(self):
        """True while the button is held down."""
        return self._is_active()

    def _changed(self, level):
        pressed = level == self.active_level
        now = self._clock()
        with self._mutex:
            was_pressed, self._was_pressed = self._was_pressed, pressed
            if not pressed or was_pressed:
                return
            if self._last_accepted is not None and now - self._last_accepted < self.debounce_seconds:
                return
            self._last_accepted = now
        callback = self.when_pressed
        if callback is not None:
            callback()

    def simulate_press(self):
        """Simulated backend: press and release the button once."""
        self._drive(True)
        self._drive(False)
