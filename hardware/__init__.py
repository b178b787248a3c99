"""The door's hardware behind a small interface: lock, contact, exit button, indicators.

``open_hardware(section, door_id=...)`` picks the backend named in door.yaml
(``gpiozero`` | ``jetson`` | ``simulated``), engages the lock before anything
else, and returns a :class:`Hardware`::

    hw = open_hardware(config.hardware, door_id="door-1")
    hw.lock.unlock()            # one pulse of lock.unlock_seconds, re-locks itself
    hw.contact.is_open          # None if the door has no contact
    hw.indicators.show("denied")
    hw.close()                  # everything released, the lock engaged last

What the door does on power loss, crash and exit is set out in
:mod:`hardware.lock` and docs/hardware.md.  The daemon must never be the
only way out: egress is by a hardware exit device.

The door's behaviour (re-lock on close, forced/held-open alarms, exit
button) lives in :class:`hardware.door.DoorController`.
"""

import logging

from bytelocker.errors import HardwareError
from hardware.backends import BACKENDS, open_backend, register_backend
from hardware.indicators import Indicators
from hardware.inputs import DoorContact, ExitButton, active_level
from hardware.lock import Lock, locked_level

# Imported for its side effect: it registers the simulated backend.
import hardware.simulated  # noqa: F401

logger = logging.getLogger(__name__)

__all__ = [
    "BACKENDS",
    "DoorContact",
    "ExitButton",
    "Hardware",
    "Indicators",
    "Lock",
    "engage_lock",
    "open_hardware",
    "register_backend",
]


class Hardware:
    """The opened parts of one door.

    :attr:`lock` (:class:`~hardware.lock.Lock`), :attr:`contact`
    (:class:`~hardware.inputs.DoorContact` or None), :attr:`exit_button`
    (:class:`~hardware.inputs.ExitButton` or None), :attr:`indicators`
    (:class:`~hardware.indicators.Indicators`, parts may be absent) and
    :attr:`backend`.

    :meth:`close` releases inputs and indicators, then engages the lock last
    and leaves its line driven at the locked level.  Use it as a context
    manager to get that on every exit path.
    """

    def __init__(self, *, door_id, backend, lock, contact, exit_button, indicators):
        self.door_id = door_id
        self.backend = backend
        self.lock = lock
        self.contact = contact
        self.exit_button = exit_button
        self.indicators = indicators
        self.closed = False

    def history(self, role=None):
        """Simulated backend: recorded output changes ``(t, role, value, pin)``, optionally of one role."""
        outputs = getattr(self.backend, "outputs", None)
        if outputs is None:
            raise HardwareError(
                f"Door {self.door_id}: the {self.backend.name} backend records no output history; "
                "only the simulated backend does."
            )
        return outputs(role)

    def close(self):
        """Release everything, engaging the lock last. Safe to call twice and after a failure."""
        if self.closed:
            return
        self.closed = True
        try:
            for part in (self.indicators, self.exit_button, self.contact):
                if part is not None:
                    try:
                        part.close()
                    except Exception:  # keep going: the lock below matters more
                        logger.exception("door=%s could not close %r", self.door_id, part)
            self.backend.close()
        finally:
            self.lock.close()
        logger.info("door=%s hardware closed; lock engaged on GPIO %s", self.door_id, self.lock.pin)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<Hardware door={self.door_id} backend={self.backend.name} locked={self.lock.is_locked}>"


def _describe_lock(locked):
    def describe(level):
        return {"locked": level == locked}

    return describe


def _open_lock(backend, section, door_id):
    spec = section.lock
    locked = locked_level(fail_mode=spec.fail_mode, active_high=spec.active_high)
    line = backend.output(spec.pin, role="lock", level=locked, describe=_describe_lock(locked))
    return Lock(line, door_id=door_id, fail_mode=spec.fail_mode, active_high=spec.active_high,
                unlock_seconds=spec.unlock_seconds)


def open_hardware(section, *, door_id="door"):
    """Open the backend named in ``section`` and return the door's :class:`Hardware`, lock engaged first.

    :param section: a :class:`config.hardware.HardwareSection`.
    :param door_id: named in logs, errors and the simulated log.
    :raises HardwareError: the backend cannot load (with what to install or
        fix), a pin does not exist on this board, or a pin is wired twice.
        Nothing falls back to the simulated backend.
    :raises ConfigError: ``section`` names no backend (``hardware.backend``
        has no default).
    """
    backend = open_backend(section, door_id=door_id)
    if section.backend == "simulated":
        # Named in the YAML, so not a fallback; still, on a wired door it means the lock never moves.
        logger.warning("door %s runs the SIMULATED GPIO backend: no real relay, contact or button is "
                       "used (hardware.backend in door.yaml)", door_id)
    lock = _open_lock(backend, section, door_id)
    try:
        contact = exit_button = None
        if section.contact is not None:
            c = section.contact
            rest = not active_level(wiring=c.wiring, pull_up=c.pull_up)
            line = backend.input(c.pin, role="contact", pull_up=c.pull_up, rest_level=rest)
            contact = DoorContact(line, door_id=door_id, wiring=c.wiring, pull_up=c.pull_up)
        if section.exit_button is not None:
            b = section.exit_button
            rest = not active_level(wiring=b.wiring, pull_up=b.pull_up)
            line = backend.input(b.pin, role="exit_button", pull_up=b.pull_up, rest_level=rest)
            exit_button = ExitButton(line, door_id=door_id, wiring=b.wiring, pull_up=b.pull_up,
                                     debounce_ms=b.debounce_ms)
        lines, active_high = {}, {}
        for role, spec in (("green", section.green_led), ("red", section.red_led), ("buzzer", section.buzzer)):
            if spec is not None:
                lines[role] = backend.output(spec.pin, role=role, level=not spec.active_high)
                active_high[role] = spec.active_high
        indicators = Indicators(lines, door_id=door_id, active_high=active_high)
    except BaseException:
        try:
            backend.close()
        finally:
            lock.close()
        raise
    logger.info("door=%s hardware open on the %s backend; lock engaged on GPIO %s",
                door_id, backend.name, lock.pin)
    return Hardware(door_id=door_id, backend=backend, lock=lock, contact=contact,
                    exit_button=exit_button, indicators=indicators)


def engage_lock(section, *, door_id="door"):
    """Drive the lock line to the locked level and leave it there; return the :class:`Lock`'s level (True = high).

    For ``bytelocker door lock`` (systemd ExecStopPost), after the daemon is
    gone, even if it was killed with the pin driven unlocked.  Only the lock
    line is touched; it is not released afterwards.
    """
    backend = open_backend(section, door_id=door_id)
    spec = section.lock
    locked = locked_level(fail_mode=spec.fail_mode, active_high=spec.active_high)
    line = backend.output(spec.pin, role="lock", level=locked, describe=_describe_lock(locked))
    line.set(locked)
    line.keep = True
    return locked
