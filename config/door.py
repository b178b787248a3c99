"""door.yaml: the door unit's configuration, composed of one model per section."""

from typing import Optional

from pydantic import Field

from config.base import Section
from config.camera import CameraSection
from config.hardware import HardwareSection
from config.mqtt import MqttSection, OutboxSection
from config.policy import PolicySection, SiteSection
from config.recognition import DecisionSection, DetectionSection, RecognitionSection

CURRENT_VERSION = 1


class DoorSection(Section):
    id: str = Field("door-1", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$",
                    description="This door's id: letters, digits, '-', '_' and '.'.")
    name: str = Field("", max_length=200, description="Human name of the door.")
    data_dir: str = Field("/var/lib/bytelocker", description="Where the cache and outbox live.")
    central_public_key: Optional[str] = Field(None, description="Central's Ed25519 public key (base64), pinned at install.")


class DoorConfig(Section):
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
