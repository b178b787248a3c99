"""The ``mqtt`` and ``outbox`` sections (door.yaml and central.yaml)."""

from typing import Optional

from pydantic import Field

from bytelocker.contract import MAX_SNAPSHOT_BYTES
from config.base import Section


class MqttSection(Section):
    """The broker link. The password comes from the environment, never the YAML."""

    enabled: bool = Field(True, description="Publish events to the central collector.")
    host: str = Field("127.0.0.1", min_length=1, description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker TCP port (8883 for TLS).")
    prefix: str = Field("bytelocker", min_length=1, pattern=r"^[^#+]+$",
                        description="Topic prefix (no MQTT wildcards).")
    username: Optional[str] = Field(None, description="Broker user; the password is read from $BYTELOCKER_MQTT_PASSWORD or the systemd credential 'mqtt-password'.")
    tls: bool = Field(False, description="Use TLS to the broker.")
    ca_file: Optional[str] = Field(None, description="CA bundle that signed the broker's certificate (default: the system's CAs).")
    cert_file: Optional[str] = Field(None, description="Client certificate for TLS client authentication (optional).")
    key_file: Optional[str] = Field(None, description="Private key of cert_file (optional).")
    keepalive_seconds: int = Field(30, ge=5, le=600, description="MQTT keepalive, seconds.")
    status_interval_seconds: float = Field(30.0, ge=1, le=3600, description="Republish the retained status this often, seconds.")
    reconnect_min_seconds: float = Field(0.5, ge=0.05, le=60, description="First wait before reconnecting to a lost broker, seconds (doubles each try).")
    reconnect_max_seconds: float = Field(30.0, ge=1, le=600, description="Longest wait between reconnect attempts, seconds.")
    max_inflight: int = Field(100, ge=1, le=10000, description="Events published but not yet acknowledged by the broker, at most.")
    receipts: bool = Field(True, description="Keep each event until central's receipt says it is stored (true), not only until the broker has it (false).")


class OutboxSection(Section):
    """Store-and-forward of events on the door."""

    max_events: int = Field(100000, ge=100, le=10_000_000, description="Outbox size limit, events; the oldest are dropped past it, and a drop-count event says so.")
    max_megabytes: float = Field(256.0, ge=1, le=100_000, description="Outbox size limit, megabytes; face crops are dropped (oldest first) to stay within it.")
    snapshot_max_bytes: int = Field(32768, ge=1024, le=MAX_SNAPSHOT_BYTES, description="Largest JPEG face crop sent, bytes; bigger crops are re-encoded smaller.")
    send_full_frame: bool = Field(False, description="Attach the full frame (shrunk to snapshot_max_bytes) to unidentified events instead of the face crop (privacy: off).")
