"""The MQTT contract between doors and central: topics, payloads, limits.

Both sides import this module; ``docs/mqtt.md`` documents the same contract
for people.  Every payload is JSON with a ``schema`` version.  QoS 1
everywhere, so every subscriber must survive duplicates (events carry a UUID
``event_id``).

Payloads are checked by pydantic models: :class:`Event`, :class:`Status` and
:class:`Available` (door to central) and :class:`Receipt` (central to door).
Each side parses what it receives with :func:`parse_event`,
:func:`parse_status`, :func:`parse_available` or :func:`parse_receipt`, which
raise :class:`~bytelocker.errors.MessageRejected` with a sentence naming the
topic, and never anything else.
"""

import base64
import binascii
import datetime as dt
import json
import re
import uuid
from typing import Literal, Optional, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bytelocker.errors import MessageRejected

SCHEMA_VERSION = 1
QOS = 1
DEFAULT_PREFIX = "bytelocker"

# Largest payload central accepts on any topic, bytes.
MAX_PAYLOAD_BYTES = 256 * 1024
# Largest JPEG face crop an event may carry, bytes before base64 (base64 adds
# a third, so an event with the largest snapshot still fits MAX_PAYLOAD_BYTES).
MAX_SNAPSHOT_BYTES = 128 * 1024
# Largest ``details`` object of an event, bytes of compact JSON.
MAX_DETAILS_BYTES = 8 * 1024
# Largest ``status`` payload, bytes.
MAX_STATUS_BYTES = 16 * 1024
# Door ids: what door.yaml accepts, so they are always one topic level and a
# safe folder name: a letter or digit first, so never "." or "..".
DOOR_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# A person in an enrolment update: what the door takes and central checks before it enrols.
MAX_PERSON_ID_CHARS = 128
MAX_PERSON_NAME_CHARS = 256

EventType = Literal[
    "granted",
    "denied",
    "unidentified",
    "door_forced",
    "door_held_open",
    "door_held_open_cleared",
    "exit_button",
    "door_status",
]
EVENT_TYPES = get_args(EventType)

AVAILABLE_ONLINE = "online"
AVAILABLE_OFFLINE = "offline"
AVAILABLE_STOPPED = "stopped"
AVAILABLE_STATES = (AVAILABLE_ONLINE, AVAILABLE_OFFLINE, AVAILABLE_STOPPED)

# ``details.reason`` of the door_status event an outbox writes when it had to
# drop events to stay within its size limit (see edge/outbox.py).
REASON_OUTBOX_OVERFLOW = "outbox_overflow"
# ``details.snapshot_dropped`` on an event whose face crop was dropped.
SNAPSHOT_DROPPED_OUTBOX_FULL = "outbox_full"


# --------------------------------------------------------------------- topics

def door_topic(prefix, door_id, leaf):
    """``<prefix>/doors/<door_id>/<leaf>``."""
    return f"{prefix.rstrip('/')}/doors/{door_id}/{leaf}"


def events_topic(prefix, door_id):
    """Every event of one door (QoS 1, not retained)."""
    return door_topic(prefix, door_id, "events")


def status_topic(prefix, door_id):
    """The door's last status (QoS 1, retained, republished periodically)."""
    return door_topic(prefix, door_id, "status")


def available_topic(prefix, door_id):
    """``online``/``offline``/``stopped`` (QoS 1, retained; ``offline`` is the last will)."""
    return door_topic(prefix, door_id, "available")


def all_doors_filter(prefix, leaf="+"):
    """Subscription filter for ``leaf`` of every door."""
    return f"{prefix.rstrip('/')}/doors/+/{leaf}"


def door_id_from_topic(prefix, topic):
    """Return ``door_id`` from ``<prefix>/doors/<door_id>/<leaf>``, or None."""
    parts = topic.split("/")
    base = prefix.rstrip("/").split("/")
    if len(parts) != len(base) + 3 or parts[: len(base)] != base or parts[len(base)] != "doors":
        return None
    return parts[len(base) + 1]


def is_door_id(value):
    """True if ``value`` is a valid door id (:data:`DOOR_ID_PATTERN`)."""
    return isinstance(value, str) and re.fullmatch(DOOR_ID_PATTERN, value) is not None


def leaf_from_topic(prefix, topic):
    """Return ``leaf`` from ``<prefix>/doors/<door_id>/<leaf>``, or None."""
    if door_id_from_topic(prefix, topic) is None:
        return None
    return topic.rsplit("/", 1)[1]


# ------------------------------------------------------------------- payloads

def utc_now():
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.timezone.utc)


def format_timestamp(when):
    """ISO 8601 UTC with microseconds and a ``Z``: ``2026-11-25T17:06:10.123456Z``."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class EventDetails(BaseModel):
    """What an event says beyond its type.  Known keys are typed; others are kept.

    ``distance`` is the Euclidean descriptor distance of the best match (lower
    is closer; 0.45 is the default threshold), ``decide_ms`` the time from the
    face's first frame to the decision in milliseconds.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    person_id: Optional[str] = Field(None, max_length=128)
    distance: Optional[float] = Field(None, ge=0, le=10)
    frames_used: Optional[int] = Field(None, ge=0, le=100_000)
    decide_ms: Optional[float] = Field(None, ge=0, le=3_600_000)
    reason: Optional[str] = Field(None, max_length=200)
    direction: Optional[Literal["entry", "exit"]] = None
    snapshot_dropped: Optional[str] = Field(None, max_length=64)
    dropped_events: Optional[int] = Field(None, ge=0)


class Event(BaseModel):
    """One door event, as published on ``<prefix>/doors/<door_id>/events``.

    ``seq`` is the door's own monotonic sequence number (it survives restarts;
    a gap means events were dropped and a ``door_status`` event with
    ``details.reason == "outbox_overflow"`` says how many).  ``snapshot`` is an
    optional base64 JPEG face crop of at most :data:`MAX_SNAPSHOT_BYTES`.
    """

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    event_id: uuid.UUID
    door_id: str = Field(..., pattern=DOOR_ID_PATTERN)
    ts: dt.datetime
    seq: int = Field(..., ge=1, le=2**62)
    type: EventType
    details: EventDetails = Field(default_factory=EventDetails)
    snapshot: Optional[str] = Field(None, max_length=(MAX_SNAPSHOT_BYTES * 4) // 3 + 4)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("ts")
    @classmethod
    def _utc(cls, value):
        if value.tzinfo is None:
            raise ValueError("must carry a timezone (UTC, ending in Z)")
        return value.astimezone(dt.timezone.utc)

    @field_validator("details", mode="before")
    @classmethod
    def _small_details(cls, value):
        if isinstance(value, dict):
            size = len(json.dumps(value, separators=(",", ":"), default=str))
            if size > MAX_DETAILS_BYTES:
                raise ValueError(f"is {size} bytes of JSON, more than {MAX_DETAILS_BYTES}")
        return value

    @field_validator("snapshot")
    @classmethod
    def _jpeg(cls, value):
        if value is None:
            return value
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("is not valid base64") from None
        if not raw.startswith(b"\xff\xd8"):
            raise ValueError("is not a JPEG image")
        if len(raw) > MAX_SNAPSHOT_BYTES:
            raise ValueError(f"is {len(raw)} bytes, more than {MAX_SNAPSHOT_BYTES}")
        return value

    @classmethod
    def build(cls, door_id, seq, event_type, details=None, *, snapshot_jpeg=None,
              event_id=None, ts=None):
        """Return a new event with a fresh UUID and the current UTC time.

        ``snapshot_jpeg`` is raw JPEG bytes (already within the size limit);
        a naive ``ts`` is taken as UTC.  Raises :class:`MessageRejected` if any field is out of contract.
        """
        data = {
            "schema": SCHEMA_VERSION,
            "event_id": event_id or uuid.uuid4(),
            "door_id": door_id,
            "ts": (ts.replace(tzinfo=dt.timezone.utc) if ts and ts.tzinfo is None else ts) or utc_now(),
            "seq": seq,
            "type": event_type,
            "details": _plain_json(details or {}, door_id, event_type),
            "snapshot": base64.b64encode(snapshot_jpeg).decode("ascii") if snapshot_jpeg else None,
        }
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise MessageRejected(
                f"Door {door_id} cannot build a {event_type!r} event: {_first_problem(exc)}."
            ) from None

    @property
    def snapshot_jpeg(self):
        """The face crop as raw JPEG bytes, or None."""
        return base64.b64decode(self.snapshot) if self.snapshot else None

    def to_dict(self):
        """The payload as a JSON-ready dict (``snapshot`` left out when absent)."""
        out = {
            "schema": SCHEMA_VERSION,
            "event_id": str(self.event_id),
            "door_id": self.door_id,
            "ts": format_timestamp(self.ts),
            "seq": self.seq,
            "type": self.type,
            "details": self.details.model_dump(exclude_none=True),
        }
        if self.snapshot:
            out["snapshot"] = self.snapshot
        return out

    def to_json(self):
        """The payload as compact UTF-8 JSON bytes."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")


class Status(BaseModel):
    """The door's retained status.  Known keys are typed; a door may add more."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    door_id: str = Field(..., pattern=DOOR_ID_PATTERN)
    ts: dt.datetime
    uptime_seconds: Optional[float] = Field(None, ge=0)
    fps: Optional[float] = Field(None, ge=0, le=1000)
    camera: Optional[str] = Field(None, max_length=200)
    broker: Optional[str] = Field(None, max_length=200)
    cache_version: Optional[int] = Field(None, ge=0)
    outbox_depth: Optional[int] = Field(None, ge=0)

    def to_json(self):
        data = self.model_dump(by_alias=True, exclude_none=True)
        data["ts"] = format_timestamp(self.ts)
        return json.dumps(data, separators=(",", ":"), default=str).encode("utf-8")


class Available(BaseModel):
    """``online`` on connect, ``offline`` as the last will, ``stopped`` on a clean stop."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    door_id: str = Field(..., pattern=DOOR_ID_PATTERN)
    state: Literal["online", "offline", "stopped"]
    ts: Optional[dt.datetime] = None

    def to_json(self):
        data = {"schema": SCHEMA_VERSION, "door_id": self.door_id, "state": self.state}
        if self.ts is not None:
            data["ts"] = format_timestamp(self.ts)
        return json.dumps(data, separators=(",", ":")).encode("utf-8")


def status_payload(door_id, **fields):
    """Return retained status JSON bytes for ``door_id`` (``ts`` is now).

    Raises :class:`MessageRejected` if a field is out of contract or the
    payload would pass :data:`MAX_STATUS_BYTES`.
    """
    try:
        payload = Status.model_validate({"schema": SCHEMA_VERSION, "door_id": door_id,
                                         "ts": utc_now(), **fields}).to_json()
    except ValidationError as exc:
        raise MessageRejected(f"Door {door_id} status is out of contract: {_first_problem(exc)}.") from None
    if len(payload) > MAX_STATUS_BYTES:
        raise MessageRejected(f"Door {door_id} status is {len(payload)} bytes, more than {MAX_STATUS_BYTES}.")
    return payload


def available_payload(door_id, state, *, with_time=True):
    """Return ``available`` JSON bytes; the last will is sent without a time."""
    return Available(door_id=door_id, state=state, ts=utc_now() if with_time else None).to_json()


def _jsonable(value):
    # numpy scalars and arrays (from the recognition loop) and datetimes.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (dt.datetime, dt.date)):
        return format_timestamp(value) if isinstance(value, dt.datetime) else value.isoformat()
    return str(value)


def _plain_json(details, door_id, event_type):
    """``details`` as plain JSON types, so what is stored is exactly what is sent."""
    try:
        return json.loads(json.dumps(details, default=_jsonable, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise MessageRejected(f"Door {door_id} cannot build a {event_type!r} event: details are not JSON ({exc}).") from None


# -------------------------------------------------------------------- parsing

def _first_problem(exc):
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "payload"
    return f"{where} {err['msg']}"


def _decode(topic, payload, limit):
    if len(payload) > limit:
        raise MessageRejected(f"Message on {topic} is {len(payload)} bytes, more than {limit}.")
    try:
        data = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise MessageRejected(f"Message on {topic} is not valid UTF-8 JSON.") from None
    if not isinstance(data, dict):
        raise MessageRejected(f"Message on {topic} is JSON {type(data).__name__}, not an object.")
    if data.get("schema") != SCHEMA_VERSION:
        raise MessageRejected(
            f"Message on {topic} has schema {str(data.get('schema'))[:20]!r}; this central reads schema {SCHEMA_VERSION}."
        )
    return data


def _validate(model, topic, payload, topic_door):
    # Strict: "12" is not a seq and 1 is not a person id; JSON strings are
    # still read as UUIDs and timestamps.
    try:
        parsed = model.model_validate_json(payload, strict=True)
    except ValidationError as exc:
        raise MessageRejected(f"Message on {topic} rejected: {_first_problem(exc)[:300]}.") from None
    if parsed.door_id != topic_door:
        raise MessageRejected(
            f"Message on {topic} names door {parsed.door_id!r}, not the topic's door {topic_door!r}."
        )
    return parsed


def parse_event(topic, topic_door, payload):
    """Validate an events-topic payload from door ``topic_door``; return an :class:`Event`."""
    _decode(topic, payload, MAX_PAYLOAD_BYTES)
    return _validate(Event, topic, payload, topic_door)


def parse_status(topic, topic_door, payload):
    """Validate a status-topic payload from door ``topic_door``; return a :class:`Status`."""
    _decode(topic, payload, MAX_STATUS_BYTES)
    return _validate(Status, topic, payload, topic_door)


def parse_available(topic, topic_door, payload):
    """Validate an available-topic payload from door ``topic_door``; return an :class:`Available`."""
    _decode(topic, payload, 1024)
    return _validate(Available, topic, payload, topic_door)


# --- Receipts (central -> door): end-to-end confirmation that events are stored.
# A door keeps an event until central's receipt names it, so an event the
# broker acknowledged but lost (a broker crash) is sent again.
RECEIPT_MAX_IDS = 500
MAX_RECEIPT_BYTES = 32 * 1024


def receipts_topic(prefix, door_id):
    """``<prefix>/receipts/<door_id>``: central lists the events of this door it has stored."""
    return f"{prefix.rstrip('/')}/receipts/{door_id}"


class Receipt(BaseModel):
    """Central has stored (now or before) every event in ``event_ids`` of ``door_id``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema")
    door_id: str = Field(..., pattern=DOOR_ID_PATTERN)
    event_ids: list[uuid.UUID] = Field(..., min_length=1, max_length=RECEIPT_MAX_IDS)


def receipt_payloads(door_id, event_ids):
    """JSON payloads naming ``event_ids`` (at most :data:`RECEIPT_MAX_IDS` each)."""
    ids = [str(e) for e in event_ids]
    return [json.dumps({"schema": SCHEMA_VERSION, "door_id": door_id,
                        "event_ids": ids[i:i + RECEIPT_MAX_IDS]}, separators=(",", ":")).encode("utf-8")
            for i in range(0, len(ids), RECEIPT_MAX_IDS)]


def parse_receipt(topic, door_id, payload):
    """Validate a receipt for ``door_id``; return a :class:`Receipt`."""
    _decode(topic, payload, MAX_RECEIPT_BYTES)
    return _validate(Receipt, topic, payload, door_id)


# --- Enrolment sync (central -> doors); see docs/enrolment.md and docs/mqtt.md.
# Updates are signed envelopes {"body", "key_id", "signature"} (bytelocker.signing);
# body "kind" is "change" (live, on updates/all or updates/<door_id>), or
# "batch" / "snapshot" (answers to a door's sync_request, on updates/<door_id>).
UPDATE_KINDS = ("change", "batch", "snapshot")
UPDATES_ALL = "all"
# A snapshot of every enrolled person can be large (~700 bytes per descriptor).
MAX_UPDATE_BYTES = 64 * 1024 * 1024
MAX_SYNC_REQUEST_BYTES = 1024


def updates_topic(prefix, door_id=None):
    """``<prefix>/updates/all`` (door_id None) or ``<prefix>/updates/<door_id>``."""
    return f"{prefix.rstrip('/')}/updates/{door_id or UPDATES_ALL}"


def sync_request_topic(prefix, door_id):
    """``<prefix>/doors/<door_id>/sync_request``: a door asks for what it misses."""
    return door_topic(prefix, door_id, "sync_request")


# --- Alerts (central -> building automation); see docs/attendance.md and docs/mqtt.md.
# QoS 1, not retained: an alert is news, and a subscriber that joins later
# should not see an old alarm as new.  Payload: {"schema", "alert_id", "type",
# "ts", "message", "details"}; ``alert_id`` is a UUID to drop duplicates by.
ALERT_STRANGER_AT_DOORS = "stranger_at_doors"
ALERT_STRANGER_REPEATED = "stranger_repeated"
ALERT_DOOR_OFFLINE = "door_offline"
ALERT_DOOR_OFFLINE_CLEARED = "door_offline_cleared"
ALERT_DOOR_FORCED = "door_forced"
ALERT_TYPES = (ALERT_STRANGER_AT_DOORS, ALERT_STRANGER_REPEATED, ALERT_DOOR_OFFLINE,
               ALERT_DOOR_OFFLINE_CLEARED, ALERT_DOOR_FORCED)


def alerts_topic(prefix):
    """``<prefix>/central/alerts``: central's alerts (QoS 1, not retained)."""
    return f"{prefix.rstrip('/')}/central/alerts"


# --- Area passages (central -> doors): anti-passback across door units; see
# docs/policy.md and docs/mqtt.md.  Central turns each stored ``granted``
# event that names an area and a direction into a signed passage (signing
# domain ``bytelocker.signing.PASSAGE_DOMAIN``) on ``<prefix>/areas/<area>/passages``.
PASSAGE_KIND = "passage"
MAX_PASSAGE_BYTES = 4 * 1024
# An area is one topic level: no '/', and no MQTT wildcards.
AREA_PATTERN = r"^[^/+#\x00]{1,64}$"
PASSAGE_DIRECTIONS = ("entry", "exit")


def is_area_name(value):
    """True if ``value`` can be an area in a topic (one level, no wildcards)."""
    return isinstance(value, str) and re.match(AREA_PATTERN, value) is not None


def passages_topic(prefix, area):
    """``<prefix>/areas/<area>/passages``: signed passages of every door of ``area`` (QoS 1, not retained)."""
    return f"{prefix.rstrip('/')}/areas/{area}/passages"


def passage_body(event):
    """The body central signs for a stored :class:`Event`, or None if it is not a passage.

    A passage is a ``granted`` event whose details name a person, an area
    (:func:`is_area_name`) and a direction (``entry`` or ``exit``).
    """
    if event.type != "granted":
        return None
    details = event.details.model_dump()
    person_id, area, direction = details.get("person_id"), details.get("area"), details.get("direction")
    if not isinstance(person_id, str) or not person_id or direction not in PASSAGE_DIRECTIONS:
        return None
    if not is_area_name(area):
        return None
    return {
        "schema": SCHEMA_VERSION,
        "kind": PASSAGE_KIND,
        "person_id": person_id,
        "area": area,
        "direction": direction,
        "at": format_timestamp(event.ts),
        "door_id": event.door_id,
        "event_id": str(event.event_id),
    }


def read_passage(body, area):
    """Check a verified passage body for ``area``; return ``(person_id, direction, at, door_id)``.

    ``at`` is an aware UTC datetime.  Raises :class:`MessageRejected` with a
    sentence saying what is wrong (wrong schema, kind or area, a bad field).
    """
    if body.get("schema") != SCHEMA_VERSION:
        raise MessageRejected(f"The passage has schema {str(body.get('schema'))[:20]!r}, not {SCHEMA_VERSION}.")
    if body.get("kind") != PASSAGE_KIND:
        raise MessageRejected(f"The message is of kind {str(body.get('kind'))[:20]!r}, not a passage.")
    if body.get("area") != area:
        # A genuine passage of another area, replayed onto this area's topic.
        raise MessageRejected(f"The passage is for area {str(body.get('area'))[:64]!r}, not {area!r}.")
    person_id, direction, door_id = body.get("person_id"), body.get("direction"), body.get("door_id")
    if not isinstance(person_id, str) or not 0 < len(person_id) <= 128:
        raise MessageRejected("The passage names no valid person id.")
    if direction not in PASSAGE_DIRECTIONS:
        raise MessageRejected(f"The passage has direction {str(direction)[:20]!r}, not entry or exit.")
    if not isinstance(door_id, str) or not 0 < len(door_id) <= 64:
        raise MessageRejected("The passage names no valid door id.")
    try:
        at = dt.datetime.fromisoformat(body.get("at"))
    except (TypeError, ValueError):
        raise MessageRejected("The passage has no valid time 'at'.") from None
    if at.tzinfo is None:
        raise MessageRejected("The passage time 'at' carries no time zone.")
    return person_id, direction, at.astimezone(dt.timezone.utc), door_id
