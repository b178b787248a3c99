"""The ``mqtt`` and ``outbox`` sections (door.yaml and central.yaml)."""

from typing import Optional

from pydantic import Field

from config.base import Section


class MqttSection(Section):
    """The broker link. The password comes from the environment, never the YAML."""

    enabled: bool = Field(True, description="Publish events to the central collector.")
    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port (8883 for TLS).")
    prefix: str = Field("bytelocker", min_length=1, description="Topic prefix.")
    username: Optional[str] = Field(None, description="Broker user; the password is read from $BYTELOCKER_MQTT_PASSWORD or the systemd credential 'mqtt-password'.")
    tls: bool = Field(False, description="Use TLS to the broker.")
    ca_file: Optional[str] = Field(None, description="CA bundle that signed the broker's certificate.")
    keepalive_seconds: int = Field(30, ge=5, le=600, description="MQTT keepalive, seconds.")
    status_interval_seconds: float = Field(30.0, ge=1, le=3600, description="Republish the retained status this often, seconds.")


class OutboxSection(Section):
    """Store-and-forward of events on the door."""

    max_events: int = Field(100000, ge=100, le=10_000_000, description="Outbox size limit, events.")
    snapshot_max_bytes: int = Field(32768, ge=1024, le=1_048_576, description="Largest JPEG face crop sent, bytes.")
    send_full_frame: bool = Field(False, description="Attach the full frame to unidentified events (privacy: off).")
