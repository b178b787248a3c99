"""GPIO backends: the registry and the real boards (gpiozero, Jetson.GPIO).

A backend hands out *lines*: an :class:`OutputLine` the devices drive to a
level (True = high), and an :class:`InputLine` whose level they read and whose
changes they hear about.  Devices (:mod:`hardware.lock`, :mod:`hardware.inputs`,
:mod:`hardware.indicators`) know the meaning of levels; backends only move
pins.  Backends are registered by name, like gpiozero's pin factories, and
picked by ``hardware.backend`` in door.yaml.  A backend that fails to load
raises :class:`~bytelocker.errors.HardwareError` saying what to install or fix;
nothing ever falls back to the simulator.

On exit the lock line is *kept*: it stays driven at the locked level instead
of being released, because releasing a line turns it into a floating input
(gpiozero's ``close()``), which a fail-safe lock reads as "unlocked".
"""

import importlib
import logging
import threading

from bytelocker.errors import HardwareError

logger = logging.getLogger(__name__)

BACKENDS = {}


def register_backend(name):
    """Class decorator: make a backend class available as ``hardware.backend: <name>``."""

    def add(cls):
        BACKENDS[name] = cls
        cls.name = name
        return cls

    return add


def open_backend(section, *, door_id="door"):
    """Return the backend named by ``section.backend``, loaded and ready to hand out lines.

    A section that names no backend is refused with a ConfigError: the
    simulator is never a default.
    """
    from config.hardware import require_backend

    require_backend(section, source=f"Door {door_id}")
    try:
        cls = BACKENDS[section.backend]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise HardwareError(
            f"Door {door_id}: there is no hardware backend called {section.backend!r}; use one of {known}."
        ) from None
    return cls(section, door_id=door_id)


class OutputLine:
    """One output pin. ``level`` is the electrical level: True = high."""

    def __init__(self, backend, pin, role):
        self.backend = backend
        self.pin = pin
        self.role = role
        self.keep = False
        self.closed = False

    @property
    def level(self):
        raise NotImplementedError

    def set(self, level):
        """Drive the pin high (True) or low (False)."""
        raise NotImplementedError

    def release(self):
        """Give the pin back (it becomes an input); only for lines not kept."""

    def close(self):
        """Release the pin, unless it is :attr:`keep` (then it stays driven where it is)."""
        if not self.closed:
            self.closed = True
            if not self.keep:
                self.release()


class InputLine:
    """One input pin. ``when_changed(level)`` is called from the backend's event thread."""

    def __init__(self, backend, pin, role):
        self.backend = backend
        self.pin = pin
        self.role = role
        self.when_changed = None
        self.closed = False

    @property
    def level(self):
        raise NotImplementedError

    def _changed(self, level):
        callback = self.when_changed
        if callback is not None and not self.closed:
            callback(bool(level))

    def release(self):
        """Stop edge detection and give the pin back."""

    def close(self):
        if not self.closed:
            self.closed = True
            self.when_changed = None
            self.release()


class Backend:
    """Base of every backend: hands out lines, refuses a pin used twice, closes them all."""

    name = "?"

    def __init__(self, section, *, door_id="door"):
        self.section = section
        self.door_id = door_id
        self.lines = []
        self._used = {}
        self._mutex = threading.Lock()

    def _claim(self, pin, role):
        with self._mutex:
            if pin in self._used:
                raise HardwareError(
                    f"Door {self.door_id}: GPIO {pin} is wired to both {self._used[pin]} and {role}; "
                    "give each role its own pin."
                )
            self._used[pin] = role

    def output(self, pin, *, role, level, describe=None):
        """Claim ``pin`` as an output starting at ``level`` (True = high) and return its line.

        ``describe(level) -> dict`` optionally says what a level means (e.g.
        ``{"locked": True}``), for backends that log their outputs.
        """
        self._claim(pin, role)
        line = self._open_output(pin, role, bool(level), describe)
        self.lines.append(line)
        return line

    def input(self, pin, *, role, pull_up, rest_level):
        """Claim ``pin`` as an input with a pull-up (or pull-down) and return its line.

        ``rest_level`` is the level of the idle part (closed door, released
        button); real boards read the wire, the simulator starts there.
        """
        self._claim(pin, role)
        line = self._open_input(pin, role, bool(pull_up), bool(rest_level))
        self.lines.append(line)
        return line

    def _open_output(self, pin, role, level, describe):
        raise NotImplementedError

    def _open_input(self, pin, role, pull_up, rest_level):
        raise NotImplementedError

    def close(self):
        """Close every line; kept lines (the lock) stay driven at their level."""
        for line in reversed(self.lines):
            try:
                line.close()
            except Exception:  # one stuck pin must not stop the others from being released
                logger.exception("door=%s could not release GPIO %s (%s)", self.door_id, line.pin, line.role)

    def _pin_error(self, pin, role, exc):
        return HardwareError(
            f"Door {self.door_id}: the {self.name} backend cannot use GPIO {pin} for the {role}: {exc}."
        )


# --------------------------------------------------------------- gpiozero


# gpiozero's own table of built-in factories; we load by name and never try
# the next one, because gpiozero's silent fallback could land on a factory
# that half-works on this board.
PIN_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory"),
    "rpigpio": ("gpiozero.pins.rpigpio", "RPiGPIOFactory"),
    "pigpio": ("gpiozero.pins.pigpio", "PiGPIOFactory"),
    "native": ("gpiozero.pins.native", "NativeFactory"),
}

PIN_FACTORY_HINTS = {
    "lgpio": "install lgpio (sudo apt install python3-lgpio, or pip install lgpio in ByteLocker's venv) "
             "and add the service user to the gpio group (sudo usermod -aG gpio bytelocker) so it may "
             "open /dev/gpiochip0 (/dev/gpiochip4 on a Pi 5 with an older kernel)",
    "rpigpio": "install RPi.GPIO (sudo apt install python3-rpi.gpio); it does not work on a Pi 5, "
               "use pin_factory: lgpio there",
    "pigpio": "install pigpio and start its daemon (sudo apt install pigpio python3-pigpio; "
              "sudo systemctl enable --now pigpiod); it does not work on a Pi 5",
    "native": "the native factory only works on a Pi 4 or older and needs read-write access to "
              "/dev/gpiomem (gpio group)",
}


def load_pin_factory(name, *, door_id="door"):
    """Return a gpiozero pin factory by name, or raise HardwareError saying what to fix."""
    try:
        module_name, cls_name = PIN_FACTORIES[name]
    except KeyError:
        raise HardwareError(
            f"Door {door_id}: gpiozero has no pin factory {name!r}; use one of {', '.join(PIN_FACTORIES)}."
        ) from None
    try:
        module = importlib.import_module(module_name)
        return getattr(module, cls_name)()
    except Exception as exc:  # ImportError, lgpio.error, OSError, PinFactoryFallback...: all mean "not here"
        raise HardwareError(
            f"Door {door_id}: the gpiozero pin factory {name!r} could not be loaded ({exc}). "
            f"To fix it, {PIN_FACTORY_HINTS[name]}."
        ) from exc


class GpiozeroOutput(OutputLine):
    """An output on a gpiozero pin object, used directly so no Device cleans it up on exit."""

    def __init__(self, backend, pin, role, pin_obj, level):
        super().__init__(backend, pin, role)
        self._pin = pin_obj
        self._pin.output_with_state(level)

    @property
    def level(self):
        return bool(self._pin.state)

    def set(self, level):
        self._pin.state = bool(level)

    def release(self):
        self._pin.close()


class LgpioOutput(OutputLine):
    """An output claimed through lgpio with its first level in the same call.

    gpiozero's lgpio pin claims a line as a floating input when it is made,
    then as an output at low, and only then sets the level: a glitch that a
    lock whose locked level is high must not see while the daemon starts.
    """

    def __init__(self, backend, pin, role, lgpio, handle, level):
        super().__init__(backend, pin, role)
        self._lgpio = lgpio
        self._handle = handle
        lgpio.gpio_claim_output(handle, pin, int(level))
        self._level = bool(level)

    @property
    def level(self):
        return self._level

    def set(self, level):
        self._lgpio.gpio_write(self._handle, self.pin, int(bool(level)))
        self._level = bool(level)

    def release(self):
        self._lgpio.gpio_free(self._handle, self.pin)


class GpiozeroInput(InputLine):
    """An input on a gpiozero pin object with edge callbacks on both edges."""

    def __init__(self, backend, pin, role, pin_obj, pull_up):
        super().__init__(backend, pin, role)
        self._pin = pin_obj
        self._pin.function = "input"
        self._pin.pull = "up" if pull_up else "down"
        self._pin.edges = "both"
        self._pin.when_changed = self._edge

    def _edge(self, ticks, state):
        self._changed(state)

    @property
    def level(self):
        return bool(self._pin.state)

    def release(self):
        self._pin.when_changed = None
        self._pin.close()


@register_backend("gpiozero")
class GpiozeroBackend(Backend):
    """Raspberry Pi pins through a gpiozero pin factory (lgpio unless ``pin_factory`` says otherwise).

    The pin factory's pins are used directly rather than through gpiozero
    devices: a gpiozero device resets its pin to a floating input when it is
    closed or garbage-collected and at interpreter exit, which would let a
    fail-safe lock go.  Our lock line is never closed; inputs and indicators
    are released on :meth:`close`.  The factory itself is left open, since
    closing it frees the lock line too; the process exit does that.  With
    lgpio, outputs are claimed through lgpio directly so the line starts at
    its level (:class:`LgpioOutput`).
    """

    def __init__(self, section, *, door_id="door"):
        super().__init__(section, door_id=door_id)
        self._lgpio_handle = None
        self.factory = self._make_factory(section)

    def _make_factory(self, section):
        return load_pin_factory(section.pin_factory or "lgpio", door_id=self.door_id)

    def _pin(self, pin, role):
        try:
            return self.factory.pin(pin)
        except Exception as exc:
            raise self._pin_error(pin, role, exc) from exc

    def _open_output(self, pin, role, level, describe):
        if type(self.factory).__name__ == "LGPIOFactory":
            return self._open_lgpio_output(pin, role, level)
        pin_obj = self._pin(pin, role)
        try:
            return GpiozeroOutput(self, pin, role, pin_obj, level)
        except Exception as exc:
            raise self._pin_error(pin, role, exc) from exc

    def _open_lgpio_output(self, pin, role, level):
        import lgpio

        try:
            if self._lgpio_handle is None:
                # Our own handle on the factory's chip: it is never closed, so
                # the lock line stays claimed at its level until the process ends.
                self._lgpio_handle = lgpio.gpiochip_open(self.factory.chip)
            return LgpioOutput(self, pin, role, lgpio, self._lgpio_handle, level)
        except Exception as exc:  # lgpio.error: no such line, line busy, no permission
            raise self._pin_error(pin, role, exc) from exc

    def _open_input(self, pin, role, pull_up, rest_level):
        pin_obj = self._pin(pin, role)
        try:
            return GpiozeroInput(self, pin, role, pin_obj, pull_up)
        except Exception as exc:
            raise self._pin_error(pin, role, exc) from exc


# ----------------------------------------------------------------- Jetson


JETSON_HINT = ("install Jetson.GPIO (pip install Jetson.GPIO in ByteLocker's venv) and add the service "
               "user to the gpio group (sudo groupadd -f -r gpio; sudo usermod -aG gpio bytelocker; "
               "then install NVIDIA's udev rules as Jetson.GPIO's README describes)")


class JetsonOutput(OutputLine):
    def __init__(self, backend, pin, role, gpio, level):
        super().__init__(backend, pin, role)
        self._gpio = gpio
        self._level = level
        gpio.setup(pin, gpio.OUT, initial=gpio.HIGH if level else gpio.LOW)

    @property
    def level(self):
        return self._level

    def set(self, level):
        self._gpio.output(self.pin, self._gpio.HIGH if level else self._gpio.LOW)
        self._level = bool(level)

    def release(self):
        self._gpio.cleanup(self.pin)


class JetsonInput(InputLine):
    def __init__(self, backend, pin, role, gpio):
        super().__init__(backend, pin, role)
        self._gpio = gpio
        # Jetson.GPIO cannot set the SoC's pull resistors; the wiring needs
        # external ones (docs/hardware.md).
        gpio.setup(pin, gpio.IN)
        gpio.add_event_detect(pin, gpio.BOTH, callback=self._edge)

    def _edge(self, channel):
        self._changed(self._gpio.input(channel))

    @property
    def level(self):
        return bool(self._gpio.input(self.pin))

    def release(self):
        self._gpio.remove_event_detect(self.pin)
        self._gpio.cleanup(self.pin)


@register_backend("jetson")
class JetsonBackend(Backend):
    """NVIDIA Jetson header pins through Jetson.GPIO, BOARD numbering (header pins 1-40).

    Jetson.GPIO is imported only when this backend is chosen.  Jetson.GPIO
    cannot enable internal pull resistors, so the contact and the exit button
    need external ones.  On JetPack 6 a line returns to its default when the
    process exits, whatever we leave it at (see docs/hardware.md).
    """

    def __init__(self, section, *, door_id="door"):
        super().__init__(section, door_id=door_id)
        try:
            import Jetson.GPIO as gpio
        except Exception as exc:  # ImportError off-board; RuntimeError when the board is not recognised
            raise HardwareError(
                f"Door {door_id}: the jetson backend could not load Jetson.GPIO ({exc}). To fix it, {JETSON_HINT}."
            ) from exc
        try:
            gpio.setwarnings(False)
            mode = gpio.getmode()
            if mode is None:
                gpio.setmode(gpio.BOARD)
            elif mode != gpio.BOARD:
                raise HardwareError(
                    f"Door {door_id}: Jetson.GPIO is already set to a numbering other than BOARD in this process."
                )
        except HardwareError:
            raise
        except Exception as exc:
            raise HardwareError(f"Door {door_id}: Jetson.GPIO failed to start ({exc}). To fix it, {JETSON_HINT}.") from exc
        self.gpio = gpio

    def _open_output(self, pin, role, level, describe):
        try:
            return JetsonOutput(self, pin, role, self.gpio, level)
        except Exception as exc:
            raise self._pin_error(pin, role, exc) from exc

    def _open_input(self, pin, role, pull_up, rest_level):
        try:
            return JetsonInput(self, pin, role, self.gpio)
        except Exception as exc:
            raise self._pin_error(pin, role, exc) from exc
