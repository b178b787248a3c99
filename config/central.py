"""central.yaml: the central collector's configuration."""

import datetime as dt
import os
from typing import Dict, Optional

from pydantic import Field, field_validator

from bytelocker.contract import is_area_name, is_door_id
from config.alerts import AlertsSection
from config.attendance import AttendanceSection
from config.base import Section, absolute_path
from config.mqtt import MqttSection
from config.policy import SiteSection, time_of_day

CURRENT_VERSION = 1


_DATABASE_FORMS = ("sqlite:////absolute/path/central.db (four slashes in all) or "
                   "postgresql://user@host:port/database")


class DatabaseSection(Section):
    url: str = Field("sqlite:////var/lib/bytelocker/central.db",
                     description="sqlite:////ABSOLUTE/PATH or postgresql://user@host:port/db (password from the environment).")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value):
        # The two kinds central/db.py opens and config/secrets.py knows the password of.
        if value.startswith("sqlite:///"):
            if not os.path.isabs(value[len("sqlite:///"):]):
                # The service's working directory is not where staff think it is.
                raise ValueError("must name an absolute path after sqlite:, which takes four slashes in "
                                 "all, like sqlite:////var/lib/bytelocker/central.db")
            return value
        if value.startswith(("postgresql://", "postgres://")):
            return value
        raise ValueError(f"must be {_DATABASE_FORMS}")


class StorageSection(Section):
    snapshot_dir: str = Field("/var/lib/bytelocker/snapshots", description="Where face snapshots are saved: an absolute path.")
    snapshot_retention_days: int = Field(30, ge=1, le=3650, description="Delete unidentified snapshots after this many days.")
    event_retention_days: int = Field(365, ge=1, le=36500, description="Delete events after this many days.")
    retention_interval_minutes: float = Field(60.0, ge=0.1, le=10080, description="Run the retention purge this often, minutes.")

    @field_validator("snapshot_dir")
    @classmethod
    def _check_snapshot_dir(cls, value):
        # Else a different folder for the collector, the dashboard and 'bytelocker forget'.
        return absolute_path(value, "/var/lib/bytelocker/snapshots")


class CollectorSection(Section):
    """How central takes events off the broker and into the database."""

    client_id: str = Field("bytelocker-central", min_length=1, max_length=64,
                           description="MQTT client id; the broker keeps this session's queue while central is away.")
    session_expiry_hours: float = Field(168.0, ge=0, le=8760, description="How long the broker keeps central's queue while it is disconnected, hours.")
    batch_max: int = Field(2000, ge=1, le=100_000, description="Most events written in one database transaction.")
    batch_wait_ms: float = Field(5.0, ge=0, le=1000, description="Wait this long for more events before a write, milliseconds.")
    queue_max: int = Field(100_000, ge=100, le=10_000_000, description="Messages held in memory for the writer; the broker holds the rest.")


class EnrolmentSection(Section):
    """Photo quality checks at enrolment and the signed change log doors sync from."""

    min_face_px: int = Field(80, ge=40, le=2000, description="Reject photos whose face is narrower than this, pixels.")
    min_sharpness: float = Field(20.0, ge=0, le=10000, description="Reject faces blurrier than this: variance of the Laplacian of the face scaled to 100x100 grey pixels (sharp photos measure 20-1500).")
    min_brightness: float = Field(45.0, ge=0, le=255, description="Reject faces darker than this mean grey level, 0-255 (well-lit faces measure 70-165).")
    duplicate_distance: float = Field(0.45, gt=0, le=1.2, description="Warn when a new photo is nearer than this descriptor distance to another person.")
    max_photo_px: int = Field(1024, ge=256, le=8192, description="Photos are shrunk to this longest side for face detection, pixels.")
    log_keep_changes: int = Field(10000, ge=10, le=10_000_000, description="Changes kept for doors' incremental catch-up; a door further behind gets a full snapshot.")


class WebSection(Section):
    """The staff dashboard (``bytelocker central web``).  Its session key is a secret:
    ``BYTELOCKER_WEB_SECRET_KEY`` or the systemd credential ``web-secret-key``, never this file."""

    enabled: bool = Field(True, description="Serve the staff dashboard; false makes 'bytelocker central web' refuse to start.")
    host: str = Field("127.0.0.1", min_length=1, max_length=255, description="Address to listen on; keep loopback and put nginx with TLS in front (docs/dashboard.md).")
    port: int = Field(8080, ge=1, le=65535, description="TCP port to listen on.")
    day_start: dt.time = Field(
        dt.time(9, 0),
        description="A first entry after this time of day (HH:MM) is listed as late on the dashboard; the site's "
        "local time (site.timezone), like the attendance report.",
    )
    cookie_secure: bool = Field(False, description="Send the session cookie over HTTPS only; set true behind a TLS proxy.")
    behind_proxy: bool = Field(False, description="Trust one proxy's X-Forwarded-For/-Proto (nginx on this host), so login limits see the real client address.")
    session_hours: float = Field(12.0, ge=0.1, le=720, description="A login lasts this long, hours.")
    login_failures_max: int = Field(5, ge=1, le=1000, description="Failed logins allowed per user name and address within login_window_minutes.")
    login_window_minutes: float = Field(5.0, ge=0.1, le=1440, description="The window of login_failures_max, minutes.")
    refresh_seconds: float = Field(5.0, ge=1, le=3600, description="How often the Doors page refreshes itself, seconds.")
    threads: int = Field(4, ge=1, le=64, description="Worker threads of the web server.")

    @field_validator("day_start", mode="before")
    @classmethod
    def _check_day_start(cls, value):
        # Only HH:MM, like the policy times: 9 or 0900 are guesses, and a time with a
        # zone ('09:00+02:00') cannot be compared with the Today page's local times.
        if isinstance(value, dt.time) and value.tzinfo is None:
            return value
        try:
            return time_of_day(value)
        except ValueError:
            raise ValueError("must be a time of day as HH:MM, like 09:00 (the site's local time)") from None


class DoorEntry(Section):
    """One door unit that central serves."""

    area: str = Field(
        "site", min_length=1, max_length=64,
        description="The door's anti-passback area (policy.area in its door.yaml; 'site' there and here by "
        "default). Central relays this door's passes to this area only, whatever the door's events say.",
    )

    @field_validator("area")
    @classmethod
    def _check_area(cls, value):
        if not is_area_name(value):
            raise ValueError("must not contain '/', '+' or '#' (it is part of an MQTT topic)")
        return value


class CentralConfig(Section):
    version: int = Field(CURRENT_VERSION, ge=1, le=CURRENT_VERSION, description="Config file format version.")
    mqtt: MqttSection = Field(default_factory=MqttSection)
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    collector: CollectorSection = Field(default_factory=CollectorSection)
    enrolment: EnrolmentSection = Field(default_factory=EnrolmentSection)
    web: WebSection = Field(default_factory=WebSection)
    site: SiteSection = Field(default_factory=SiteSection)
    attendance: AttendanceSection = Field(default_factory=AttendanceSection)
    alerts: AlertsSection = Field(default_factory=AlertsSection)
    doors: Dict[str, Optional[DoorEntry]] = Field(
        default_factory=dict,
        description="The door units central serves, by door id (each door's MQTT user name), each with its "
        "area. Listed: only these doors are stored, answered with enrolments and relayed as area passes, so "
        "no other broker account can pose as a door. Empty: any door id is accepted and no passes are "
        "relayed (a demo or a broker only doors can reach); central warns at start.",
    )

    @field_validator("doors")
    @classmethod
    def _check_doors(cls, value):
        for door_id in value:
            if not is_door_id(door_id):
                raise ValueError(f"{door_id!r} is not a door id: letters, digits, '-', '_' and '.', "
                                 f"starting with a letter or digit")
        # "front-in:" with nothing after it lists the door with the defaults.
        return {door_id: entry or DoorEntry() for door_id, entry in value.items()}

    def serves(self, door_id):
        """True if central accepts messages from ``door_id`` (any door when no doors are listed)."""
        return not self.doors or door_id in self.doors

    def area_of(self, door_id):
        """The listed door's area, or None for a door that is not listed."""
        entry = self.doors.get(door_id)
        return entry.area if entry is not None else None
