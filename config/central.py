"""central.yaml: the central collector's configuration."""

from pydantic import Field

from config.base import Section
from config.mqtt import MqttSection

CURRENT_VERSION = 1


class DatabaseSection(Section):
    url: str = Field("sqlite:////var/lib/bytelocker/central.db",
                     description="sqlite:///PATH or postgresql://user@host:port/db (password from the environment).")


class StorageSection(Section):
    snapshot_dir: str = Field("/var/lib/bytelocker/snapshots", description="Where face snapshots are saved.")
    snapshot_retention_days: int = Field(30, ge=1, le=3650, description="Delete unidentified snapshots after this many days.")
    event_retention_days: int = Field(365, ge=1, le=36500, description="Delete events after this many days.")


class CentralConfig(Section):
    version: int = Field(CURRENT_VERSION, ge=1, le=CURRENT_VERSION, description="Config file format version.")
    mqtt: MqttSection = Field(default_factory=MqttSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    storage: StorageSection = Field(default_factory=StorageSection)
