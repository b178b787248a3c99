"""door.yaml: the door unit's configuration, composed of one model per section."""

from typing import Optional

from pydantic import BaseModel, Field, field_validator

from bytelocker.contract import DOOR_ID_PATTERN
from config.base import Problem, Section, absolute_path
from config.camera import CameraSection
from config.hardware import HardwareSection
from config.mqtt import MqttSection, OutboxSection
from config.policy import PolicySection, SiteSection
from config.recognition import DecisionSection, DetectionSection, RecognitionSection

# 2: the site got its own section (door.timezone -> site.timezone); see config/migrations.py.
CURRENT_VERSION = 2


class DoorSection(Section):
    """Who this door is and where it keeps its files."""

    id: str = Field("door-1", min_length=1, max_length=64, pattern=DOOR_ID_PATTERN,
                    description="This door's id: letters, digits, '-', '_' and '.', starting with a letter or "
                    "digit.")
    name: str = Field("", max_length=200, description="Human name of the door.")
    data_dir: str = Field("/var/lib/bytelocker", description="Where the cache, the outbox and the status file live (the service's StateDirectory).")
    central_public_key: Optional[str] = Field(None, description="Central's Ed25519 public key (base64, from 'bytelocker keys init'), pinned at install; during a key rotation, the old and new keys separated by a comma.")

    @field_validator("data_dir")
    @classmethod
    def _check_data_dir(cls, value):
        return absolute_path(value, "/var/lib/bytelocker")

    @field_validator("central_public_key")
    @classmethod
    def _check_central_public_key(cls, value):
        # Checked here, where the line is known; the door would otherwise fail only when it syncs.
        from bytelocker.errors import SigningKeyError
        from bytelocker.signing import parse_public_keys

        if value is None or not value.strip():
            return None
        try:
            parse_public_keys(value)
        except SigningKeyError:
            raise ValueError("is not a base64 Ed25519 public key (32 bytes); copy the line 'bytelocker keys "
                             "init' printed on central, or during a key rotation the old and new keys "
                             "separated by a comma") from None
        return value


class DoorConfig(Section):
    """The whole of door.yaml."""

    version: int = Field(CURRENT_VERSION, ge=1, le=CURRENT_VERSION, description="Config file format version.")
    door: DoorSection = Field(default_factory=DoorSection)
    camera: CameraSection = Field(default_factory=CameraSection)
    detection: DetectionSection = Field(default_factory=DetectionSection)
    recognition: RecognitionSection = Field(default_factory=RecognitionSection)
    decision: DecisionSection = Field(default_factory=DecisionSection)
    hardware: HardwareSection = Field(default_factory=HardwareSection)
    mqtt: MqttSection = Field(default_factory=MqttSection)
    outbox: OutboxSection = Field(default_factory=OutboxSection)
    site: SiteSection = Field(default_factory=SiteSection)
    policy: PolicySection = Field(default_factory=PolicySection)

    def cross_check(self):
        """Problems between sections that no single section can see, as :class:`Problem` s.

        The loader calls this after every section is valid and adds the line
        numbers.  Today: one GPIO pin wired to two roles.
        """
        problems = []
        seen = {}
        for loc, pin in _pins(self.hardware, ("hardware",)):
            if pin in seen:
                problems.append(Problem(loc, f"{'.'.join(seen[pin])} also uses GPIO {pin}; "
                                             "give each role its own pin", pin))
            else:
                seen[pin] = loc
        return problems


def _pins(section, loc):
    """Every ``(key path, GPIO number)`` in the hardware section, in file order."""
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            yield from _pins(value, loc + (name,))
        elif isinstance(value, int) and not isinstance(value, bool) and (name == "pin" or name.endswith("_pin")):
            yield loc + (name,), value
