"""The simulated backend: gpiozero's MockFactory pins with drivers and a recorded history.

It is a working backend, not a stub: the same gpiozero pin code as on a Pi,
on mock pins that behave like a Pi 3's header (GPIO 0-27).  Tests and demos

- drive inputs: ``contact.simulate_open()``, ``exit_button.simulate_press()``
  (which call :meth:`SimulatedInput.drive`);
- read outputs: :attr:`SimulatedBackend.history`, a list of
  :class:`OutputChange` ``(t, role, value, pin)`` with ``t`` from
  ``time.monotonic()`` and ``value`` the electrical level (1 high, 0 low), so
  active-low wiring shows as inverted levels.  The first entry of each line
  is its level when it was opened.

When ``hardware.simulated_log`` names a file, every output change is also
appended to it as one JSON line ``{"t": <epoch seconds>, "role": "lock",
"value": 0, "pin": 17, "door": "door-1"}`` (the lock's lines also carry
``"locked": true|false``), so a run can be checked from outside the process.

Real pins keep their level when the process that drove them dies.  To model
that, the current output levels are kept in a small JSON state file
(``hardware.simulated_state``, default ``<simulated_log>.state``); a new
process starts each output at its persisted level before driving it, which
is how ``bytelocker door lock`` can be tested after ``kill -9``.
"""

import json
import logging
import os
import threading
import time
from typing import NamedTuple

from bytelocker.errors import HardwareError
from hardware.backends import GpiozeroBackend, GpiozeroInput, GpiozeroOutput, register_backend

logger = logging.getLogger(__name__)


class OutputChange(NamedTuple):
    """One recorded output level: ``t`` is ``time.monotonic()``; ``value`` is 1 (high) or 0 (low)."""

    t: float
    role: str
    value: int
    pin: int


class SimulatedOutput(GpiozeroOutput):
    """A mock output pin that records each change; :meth:`inject_fault` makes writes fail."""

    def __init__(self, backend, pin, role, pin_obj, level, describe=None):
        super().__init__(backend, pin, role, pin_obj, level)
        self._fault = None
        self._fault_times = 0
        self.describe = describe
        backend.record(self)

    def set(self, level):
        if self._fault is not None:
            fault = self._fault
            self._fault_times -= 1
            if self._fault_times <= 0:
                self._fault = None
            raise fault
        before = self.level
        super().set(level)
        if self.level != before:
            self.backend.record(self)

    def inject_fault(self, exc, *, times=1):
        """Test hook: make the next ``times`` :meth:`set` calls raise ``exc`` without moving the pin.

        A failing GPIO write; ``times=float("inf")`` keeps failing until :meth:`clear_fault`.
        """
        self._fault = exc
        self._fault_times = times

    def clear_fault(self):
        """Test hook: writes work again."""
        self._fault = None
        self._fault_times = 0


class SimulatedInput(GpiozeroInput):
    """A mock input pin that tests drive with :meth:`drive`."""

    def __init__(self, backend, pin, role, pin_obj, pull_up, rest_level):
        super().__init__(backend, pin, role, pin_obj, pull_up)
        self.drive(rest_level)

    def drive(self, level):
        """Drive the wire to ``level`` (True = high), as the switch would; fires the change callback."""
        if self.closed:
            raise HardwareError(f"GPIO {self.pin} ({self.role}) is closed and cannot be driven.")
        if level:
            self._pin.drive_high()
        else:
            self._pin.drive_low()


@register_backend("simulated")
class SimulatedBackend(GpiozeroBackend):
    """Mock pins with input drivers, a timestamped output history, a JSON-lines log and persisted levels."""

    def __init__(self, section, *, door_id="door"):
        self.history = []
        self.log_path = section.simulated_log
        self.state_path = section.simulated_state_path()
        # The lock's first "locked" line is written before anything else runs,
        # so its folder must exist now (the door's data dir may not yet).
        for path in (self.log_path, self.state_path):
            if path:
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._record_lock = threading.Lock()
        super().__init__(section, door_id=door_id)
        self._persisted = self._read_state()

    def _make_factory(self, section):
        from gpiozero.pins.mock import MockFactory

        return MockFactory()

    def _open_output(self, pin, role, level, describe):
        pin_obj = self._pin(pin, role)
        persisted = self._persisted.get(str(pin), {}).get("value")
        # A real pin is still where the last process left it until we drive it.
        start = level if persisted is None else bool(persisted)
        line = SimulatedOutput(self, pin, role, pin_obj, start, describe)
        line.set(level)
        return line

    def _open_input(self, pin, role, pull_up, rest_level):
        pin_obj = self._pin(pin, role)
        return SimulatedInput(self, pin, role, pin_obj, pull_up, rest_level)

    def outputs(self, role=None):
        """The recorded output history, optionally only for one role."""
        with self._record_lock:
            return [c for c in self.history if role is None or c.role == role]

    def record(self, line):
        """Record ``line``'s current level in the history, the log and the state file."""
        value = int(line.level)
        with self._record_lock:
            self.history.append(OutputChange(time.monotonic(), line.role, value, line.pin))
            entry = {"t": time.time(), "role": line.role, "value": value, "pin": line.pin, "door": self.door_id}
            if line.describe is not None:
                entry.update(line.describe(line.level))
            # A log or state file we cannot write must never stop the pin moving.
            try:
                self._append_log(entry)
                self._write_state(line, value)
            except OSError as exc:
                logger.warning("door=%s simulated backend cannot write its files: %s", self.door_id, exc)

    def _append_log(self, entry):
        if self.log_path:
            # One write per line on an O_APPEND file: lines from two processes never interleave.
            with open(self.log_path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(entry) + "\n")

    def _read_state(self):
        if not self.state_path:
            return {}
        try:
            with open(self.state_path, encoding="utf-8") as fh:
                return json.load(fh).get("outputs", {})
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            logger.warning("door=%s ignoring unreadable simulated state %s: %s", self.door_id, self.state_path, exc)
            return {}

    def _write_state(self, line, value):
        if not self.state_path:
            return
        self._persisted[str(line.pin)] = {"role": line.role, "value": value}
        tmp = f"{self.state_path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"door": self.door_id, "updated": time.time(), "outputs": self._persisted}, fh)
        os.replace(tmp, self.state_path)


def read_state(path):
    """Return ``{pin: {"role": ..., "value": ...}}`` from a simulated state file (for tests and tools)."""
    with open(path, encoding="utf-8") as fh:
        return {int(pin): out for pin, out in json.load(fh)["outputs"].items()}
