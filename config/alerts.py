"""The ``alerts`` section of central.yaml: when central raises an alert on MQTT."""

from typing import Literal

from pydantic import Field

from config.base import Section


class AlertsSection(Section):
    """Alerts central publishes on ``<prefix>/central/alerts`` (docs/attendance.md)."""

    enabled: bool = Field(True, description="Raise alerts (unknown visitors, doors offline, doors forced) and publish them.")
    stranger_min_doors: int = Field(
        2, ge=2, le=100,
        description="Alert when one unknown visitor is seen at this many different doors within stranger_window_minutes.")
    stranger_repeat_count: int = Field(
        3, ge=2, le=1000,
        description="Alert when one unknown visitor is seen this many times within stranger_window_minutes.")
    stranger_window_minutes: float = Field(60.0, ge=1, le=10080, description="The window of the two stranger alerts, minutes.")
    stranger_realert_hours: float = Field(
        24.0, ge=0, le=8760,
        description="The same unknown visitor raises the same alert again only after this many hours.")
    stranger_threshold: float = Field(
        0.5, gt=0, le=1.2,
        description="Descriptor distance under which an unknown face joins a known visitor; lower keeps "
        "different strangers apart more strictly (0.5 is typical).")
    stranger_engine: Literal["dlib", "fast"] = Field(
        "fast",
        description="Descriptor engine for unknown faces: 'fast' (onnxruntime, ~20x cheaper, and it does not "
        "hold up event ingest) or 'dlib'.")
    stranger_queue_max: int = Field(
        1000, ge=10, le=100_000,
        description="Unknown faces waiting to be described; when more arrive at once, the extra ones are "
        "skipped for clustering (they are still stored).")
    door_offline_minutes: float = Field(
        5.0, ge=0.5, le=10080, description="Alert when a door has been offline this long, minutes.")
    stopped_is_offline: bool = Field(
        False, description="Also alert on a door that was stopped cleanly (maintenance) for door_offline_minutes.")
    forced_repeat_seconds: float = Field(
        60.0, ge=0, le=86400,
        description="A door forced open again within this many seconds of its last forced-open alert raises no new one.")
    check_interval_seconds: float = Field(
        30.0, ge=1, le=3600, description="How often central looks for doors offline too long, seconds.")
