"""The ``hardware`` section of door.yaml: backend, lock, contact, button, indicators.

Pin numbers are GPIO numbers as the backend counts them: BCM numbers on a
Raspberry Pi (``gpiozero``; the 40-pin header carries GPIO 0-27, Compute
Modules up to 53), physical header pins (BOARD numbers 1-40) on a Jetson.
The simulated backend behaves like a Pi's header (GPIO 0-27).  One pin wired
to two roles is reported by ``DoorConfig.cross_check`` with its line number.

What the door does on power loss, crash and exit is decided by
``lock.fail_mode`` together with the wiring; see docs/hardware.md.
"""

from typing import Literal, Optional

from pydantic import Field, model_validator

from bytelocker.errors import ConfigError
from config.base import Section

# Highest GPIO a Raspberry Pi SoC has (BCM2711 and earlier: 0-53); BOARD pins on
# a Jetson header stop at 40, which the cross-field check below enforces.
MAX_GPIO = 53
JETSON_BOARD_PINS = range(1, 41)

BACKEND_NOT_NAMED = (
    "hardware.backend is not set; it must name the GPIO backend: gpiozero (Raspberry Pi), "
    "jetson (Jetson.GPIO) or simulated (tests and demos only: it moves no real pin, so a real lock "
    "stays where it is). ByteLocker never picks one by itself"
)


class PinSection(Section):
    """One indicator output (LED or buzzer)."""

    pin: int = Field(..., ge=0, le=MAX_GPIO,
                     description="GPIO number: BCM on a Pi (0-27 on the header), BOARD header pin (1-40) on a Jetson.")
    active_high: bool = Field(True, description="true if the LED/buzzer is on when the line is high; false for active-low wiring.")


class LockSection(Section):
    """The lock relay.

    ``fail_mode`` and ``active_high`` together give the pin level that means
    "locked": fail-secure (electric strike, locked without power) is locked
    with the relay off; fail-safe (maglock, unlocked without power) is locked
    with the relay on.
    """

    pin: int = Field(17, ge=0, le=MAX_GPIO, description="GPIO driving the lock relay.")
    active_high: bool = Field(
        True, description="true if the relay energises when the line is high; false for active-low relay boards."
    )
    fail_mode: Literal["secure", "safe"] = Field(
        "secure",
        description="secure: the lock is locked without power (electric strike), so 'locked' = relay off. "
        "safe: the lock is unlocked without power (maglock), so 'locked' = relay on; a dead controller "
        "or a power cut leaves the door unlocked.",
    )
    unlock_seconds: float = Field(5.0, ge=1, le=30, description="Length of one unlock pulse, seconds.")


class ContactSection(Section):
    """The door-position contact (reed switch) and the alarms it drives."""

    pin: int = Field(27, ge=0, le=MAX_GPIO, description="GPIO of the door contact (reed switch).")
    wiring: Literal["NO", "NC"] = Field(
        "NC",
        description="NC: the contact circuit is closed while the door is closed (usual; a cut wire reads as open). "
        "NO: the circuit closes when the door opens.",
    )
    pull_up: bool = Field(
        True,
        description="true: internal pull-up, contact switches to ground. false: pull-down, contact switches to 3.3 V.",
    )
    held_open_seconds: float = Field(
        30.0, ge=5, le=3600, description="Raise 'door held open' when the door stays open this long, seconds."
    )
    forced_window_seconds: float = Field(
        2.0, ge=0, le=30,
        description="An opening is 'forced' unless the lock is released, or was released by a grant or the "
        "exit button and re-engaged less than this long ago, seconds.",
    )


class ButtonSection(Section):
    """The request-to-exit (REX) button: unlocks the door from inside."""

    pin: int = Field(22, ge=0, le=MAX_GPIO, description="GPIO of the request-to-exit button.")
    wiring: Literal["NO", "NC"] = Field(
        "NO", description="NO: the button closes its circuit when pressed (usual). NC: it opens the circuit."
    )
    pull_up: bool = Field(
        True, description="true: internal pull-up, button switches to ground. false: pull-down, button switches to 3.3 V."
    )
    debounce_ms: int = Field(
        50, ge=0, le=2000, description="Presses closer together than this count once, milliseconds."
    )


class HardwareSection(Section):
    """Which GPIO backend to use and what is wired to it.

    Optional parts (contact, exit button, LEDs, buzzer) are left out with
    ``null``; the door then simply has no such part.

    ``backend`` has no default.  A simulated default once let a door.yaml
    that forgot the key run a real maglock on the simulator (door unlocked,
    daemon healthy), so a section with settings but no backend is a config
    error.  A section built with no settings at all (``DoorConfig()`` for
    the recognition tools, or a door.yaml without ``hardware:``) has
    ``backend = None``, and :func:`require_backend` refuses it wherever pins
    would be driven.
    """

    backend: Optional[Literal["gpiozero", "jetson", "simulated"]] = Field(
        None,
        description="gpiozero (Raspberry Pi), jetson (Jetson.GPIO) or simulated (tests and demos; moves no "
        "real pin). Required: there is no default.",
    )
    pin_factory: Optional[Literal["lgpio", "rpigpio", "pigpio", "native"]] = Field(
        None,
        description="gpiozero pin factory. Empty means lgpio, which works on every Pi with a current "
        "Raspberry Pi OS and is the only choice on a Pi 5; rpigpio and native work on a Pi 4 and older; "
        "pigpio needs the pigpiod daemon.",
    )
    simulated_log: Optional[str] = Field(
        None, description="Simulated backend: append every output change to this file as one JSON line."
    )
    simulated_state: Optional[str] = Field(
        None,
        description="Simulated backend: file holding the current output levels, so they outlive the process "
        "like a real pin does. Empty means '<simulated_log>.state' when simulated_log is set.",
    )
    lock: LockSection = Field(default_factory=LockSection, description="The lock relay.")
    contact: Optional[ContactSection] = Field(default_factory=ContactSection, description="The door contact, or null.")
    exit_button: Optional[ButtonSection] = Field(
        default_factory=ButtonSection, description="The request-to-exit button, or null."
    )
    green_led: Optional[PinSection] = Field(None, description="Green LED ('granted'), or null.")
    red_led: Optional[PinSection] = Field(None, description="Red LED ('denied', 'unknown'), or null.")
    buzzer: Optional[PinSection] = Field(None, description="Buzzer, or null.")

    @model_validator(mode="after")
    def _backend_is_named(self):
        # Only an empty section may leave it out (see the class docstring);
        # written settings without a backend are the dangerous case.  After
        # the fields, so a wrong pin or pulse in the same section is reported too.
        if self.model_fields_set and self.backend is None:
            raise ValueError(BACKEND_NOT_NAMED)
        return self

    @model_validator(mode="after")
    def _jetson_pins_are_header_pins(self):
        if self.backend == "jetson":
            for role, pin in self.pins():
                if pin not in JETSON_BOARD_PINS:
                    raise ValueError(
                        f"{role} pin {pin} is not a Jetson header pin; the jetson backend uses "
                        "BOARD numbering, 1 to 40"
                    )
        return self

    def pins(self):
        """Every ``(role, pin)`` wired, lock first: lock, contact, exit_button, green, red, buzzer."""
        parts = (("lock", self.lock), ("contact", self.contact), ("exit_button", self.exit_button),
                 ("green", self.green_led), ("red", self.red_led), ("buzzer", self.buzzer))
        return [(role, part.pin) for role, part in parts if part is not None]

    def simulated_state_path(self):
        """Where the simulated backend keeps its output levels, or None to keep them in memory only."""
        if self.simulated_state:
            return self.simulated_state
        if self.simulated_log:
            return self.simulated_log + ".state"
        return None


def require_backend(section, *, source="door.yaml"):
    """Raise :class:`~bytelocker.errors.ConfigError` unless ``section`` names its backend.

    Called before any pin is driven (``door run``, ``door lock``,
    :func:`hardware.open_hardware`).  ``source`` names the file (or "the
    built-in defaults") in the message.
    """
    if section is None or section.backend is None:
        raise ConfigError(
            f"{source}: {BACKEND_NOT_NAMED}. Add it under 'hardware:', for example 'backend: gpiozero', "
            f"and check the file with 'bytelocker check-config'."
        )
    return section.backend
