"""The ``hardware`` section of door.yaml: backend, lock, contact, button, indicators."""

from typing import Literal, Optional

from pydantic import Field

from config.base import Section


class PinSection(Section):
    """One GPIO line."""

    pin: int = Field(..., ge=0, le=255, description="GPIO number (BCM numbering on a Pi, BOARD on Jetson).")
    active_high: bool = Field(True, description="True if the signal is active when the line is high.")


class LockSection(Section):
    pin: int = Field(17, ge=0, le=255, description="GPIO driving the lock relay.")
    active_high: bool = Field(True, description="True if the relay energises when the line is high.")
    fail_mode: Literal["secure", "safe"] = Field(
        "secure", description="secure: locked without power (strike); safe: unlocked without power (maglock)."
    )
    unlock_seconds: float = Field(5.0, ge=1, le=30, description="Length of an unlock pulse, seconds.")


class ContactSection(Section):
    pin: int = Field(27, ge=0, le=255, description="GPIO of the door contact (reed switch).")
    wiring: Literal["NO", "NC"] = Field("NC", description="Normally-open or normally-closed contact.")
    pull_up: bool = Field(True, description="Use the internal pull-up resistor.")
    held_open_seconds: float = Field(30.0, ge=5, le=3600, description="Raise 'door held open' after this long, seconds.")
    forced_window_seconds: float = Field(2.0, ge=0, le=30, description="Grace after a grant or exit press before an opening is 'forced', seconds.")


class ButtonSection(Section):
    pin: int = Field(22, ge=0, le=255, description="GPIO of the request-to-exit button.")
    pull_up: bool = Field(True, description="Use the internal pull-up resistor (button to ground).")
    debounce_ms: int = Field(50, ge=0, le=2000, description="Software debounce, milliseconds.")


class HardwareSection(Section):
    backend: Literal["gpiozero", "jetson", "simulated"] = Field(
        "simulated", description="gpiozero (Raspberry Pi), jetson (Jetson.GPIO) or simulated (tests, demos)."
    )
    pin_factory: Optional[str] = Field(None, description="gpiozero pin factory: lgpio (Pi 5), rpigpio, pigpio, native.")
    simulated_log: Optional[str] = Field(None, description="Simulated backend: write every output change here as JSON lines.")
    lock: LockSection = Field(default_factory=LockSection)
    contact: Optional[ContactSection] = Field(default_factory=ContactSection)
    exit_button: Optional[ButtonSection] = Field(default_factory=ButtonSection)
    green_led: Optional[PinSection] = None
    red_led: Optional[PinSection] = None
    buzzer: Optional[PinSection] = None
