"""The door's store-and-forward outbox of events (peewee SQLite, WAL mode).

Every event is written here, durably, in the same step that gives it its
UUID, sequence number and time; the publisher sends rows in order and deletes
one only when the broker has acknowledged it and, with ``mqtt.receipts`` (the
default), central's receipt says it is stored.  Sent but unconfirmed rows
are sent again after every reconnect, so a broker that crashes with events
it acknowledged but had not delivered loses nothing.  The outbox has its own database
file and its own peewee database object (not the cache's); one outbox is open
per process.

Size policy (``docs/mqtt.md`` says the same):

* Face crops are dropped first.  When the crops held would pass
  ``max_bytes``, the oldest crops are removed (oldest first) and each event
  that lost its crop says so in ``details.snapshot_dropped = "outbox_full"``.
* Events are never dropped silently.  When ``max_events`` are waiting, the
  oldest events are deleted (5 % of ``max_events`` at a time, so it
  happens rarely) and a ``door_status`` event with ``details.reason =
  "outbox_overflow"`` records how many were lost and their sequence range.
  Such a marker that is itself dropped carries its count into the next one.
* A full disk raises :class:`~bytelocker.errors.StorageError`; the event that
  could not be written is reported to the caller and nothing already stored
  is lost.
"""

import base64
import dataclasses
import json
import logging
import os
import threading
import time

import cv2
import numpy as np
import peewee as pw

from bytelocker import contract
from bytelocker.errors import MessageRejected, StorageError

logger = logging.getLogger(__name__)

database = pw.SqliteDatabase(None)

PRAGMAS = {
    "journal_mode": "wal",
    # FULL: a granted/denied event must survive power loss right after it
    # was recorded, not only a process crash.
    "synchronous": "full",
    "busy_timeout": 10000,
}


class _Model(pw.Model):
    class Meta:
        database = database


class OutboxEvent(_Model):
    """One event waiting to be acknowledged by the broker."""

    seq = pw.BigIntegerField(primary_key=True)
    event_id = pw.CharField(max_length=36, unique=True)
    type = pw.CharField(max_length=32)
    # The published JSON without the snapshot, which is kept raw beside it.
    payload = pw.TextField()
    snapshot = pw.BlobField(null=True)
    snapshot_size = pw.IntegerField(default=0)
    # On an outbox_overflow marker: the events it reports lost.
    dropped = pw.BigIntegerField(default=0)
    # When the broker acknowledged it (unix time); the row stays until
    # central's receipt, and is sent again after a reconnect.
    sent_at = pw.FloatField(null=True)

    class Meta:
        table_name = "outbox_event"


class OutboxMeta(_Model):
    """Counters that must outlive the rows, such as the next sequence number."""

    key = pw.CharField(primary_key=True, max_length=64)
    value = pw.BigIntegerField()

    class Meta:
        table_name = "outbox_meta"


MODELS = (OutboxEvent, OutboxMeta)


@dataclasses.dataclass(frozen=True)
class PendingEvent:
    """An event ready to publish: its sequence number, id and JSON bytes."""

    seq: int
    event_id: str
    type: str
    payload: bytes


def fit_jpeg(jpeg, max_bytes):
    """Return ``jpeg`` re-encoded to at most ``max_bytes``, or None if it cannot be.

    Lowers the JPEG quality first (90 down to 40), then halves the size, as
    often as needed down to 24 pixels on the short side.  A crop already
    small enough is returned unchanged.
    """
    if len(jpeg) <= max_bytes:
        return bytes(jpeg)
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    return encode_jpeg(image, max_bytes, bgr=True)


def encode_jpeg(image, max_bytes, *, bgr=False):
    """Encode an RGB (or BGR) uint8 array as a JPEG of at most ``max_bytes``, or None."""
    if not bgr:
        image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    while min(image.shape[:2]) >= 24:
        for quality in (90, 75, 60, 40):
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and buf.size <= max_bytes:
                return buf.tobytes()
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
    return None


class Outbox:
    """The door's durable queue of events, in sequence order.

    ``max_events`` bounds the events waiting; ``snapshot_max_bytes`` bounds
    each face crop (bigger ones are re-encoded smaller); ``max_bytes`` bounds
    the crops held in total (default: 256 MiB).  Safe to use from the door's
    loop and the publisher thread at once.
    """

    def __init__(self, path, door_id, *, max_events, snapshot_max_bytes, max_bytes=256 * 1024 * 1024):
        self.path = os.fspath(path)
        self.door_id = door_id
        self.max_events = int(max_events)
        self.snapshot_max_bytes = int(snapshot_max_bytes)
        self.max_bytes = int(max_bytes)
        # Serialises writers in this process; SQLite's lock covers other processes.
        self._lock = threading.Lock()
        try:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            if not database.is_closed():
                database.close()
            database.init(self.path, pragmas=PRAGMAS)
            database.connect(reuse_if_open=True)
            database.create_tables(MODELS)
            if "sent_at" not in {c.name for c in database.get_columns(OutboxEvent._meta.table_name)}:
                # Outboxes made before receipts existed.
                database.execute_sql("ALTER TABLE outbox_event ADD COLUMN sent_at REAL")
        except (pw.DatabaseError, OSError) as exc:
            raise StorageError(f"Door {door_id} cannot open its outbox {self.path}: {exc}.") from exc

    @classmethod
    def from_config(cls, path, door_id, section):
        """Open the outbox at ``path`` with the limits of an :class:`~config.mqtt.OutboxSection`."""
        return cls(path, door_id, max_events=section.max_events,
                   snapshot_max_bytes=section.snapshot_max_bytes,
                   max_bytes=int(section.max_megabytes * 1024 * 1024))

    def close(self):
        """Close this thread's connection to the outbox file."""
        if not database.is_closed():
            database.close()

    # ------------------------------------------------------------- writing

    def record(self, event_type, details, snapshot_jpeg=None, *, occurred_at=None):
        """Write a new event and return it as a dict (the snapshot left out).

        The event gets its UUID, sequence number and UTC time inside the same
        transaction that stores it, so an event that exists has been stored.
        ``snapshot_jpeg`` (raw JPEG bytes) is re-encoded smaller if it passes
        ``snapshot_max_bytes``.  Raises :class:`StorageError` if the disk is
        full, :class:`MessageRejected` for an unknown ``event_type``.  Details
        that break the contract (NaN, too big) are replaced by
        ``details_rejected`` with the reason, keeping ``person_id``: the event
        itself is never lost to a bad detail.  ``occurred_at`` (an aware
        datetime) is the event's time when it is written late (the daemon
        held it through a full disk); the default is now.
        """
        details = dict(details or {})
        if snapshot_jpeg is not None:
            fitted = fit_jpeg(snapshot_jpeg, self.snapshot_max_bytes)
            if fitted is None:
                logger.warning("Door %s dropped an unreadable or unshrinkable %s snapshot.", self.door_id, event_type)
                details["snapshot_dropped"] = "unreadable"
            snapshot_jpeg = fitted
        try:
            with self._lock, database.atomic("IMMEDIATE"):
                if self.depth() >= self.max_events:
                    self._drop_oldest_events()
                if snapshot_jpeg is not None and not self._make_room(len(snapshot_jpeg)):
                    details["snapshot_dropped"] = contract.SNAPSHOT_DROPPED_OUTBOX_FULL
                    snapshot_jpeg = None
                event = self._insert(event_type, details, snapshot_jpeg, ts=occurred_at)
        except pw.OperationalError as exc:
            raise self._storage_error(exc, event_type) from exc
        except pw.DatabaseError as exc:
            raise StorageError(
                f"Door {self.door_id} could not record a {event_type} event in its outbox {self.path}: {exc}."
            ) from exc
        return event.to_dict() | ({"snapshot_bytes": len(snapshot_jpeg)} if snapshot_jpeg else {})

    def _storage_error(self, exc, event_type):
        # On SQLITE_FULL SQLite rolls the transaction back itself, so peewee's
        # own rollback then fails with "cannot rollback"; the cause is the
        # error it was handling.
        if "cannot rollback" in str(exc) and exc.__context__ is not None:
            exc = exc.__context__
        text = str(exc)
        if "full" in text:
            return StorageError(
                f"Door {self.door_id} could not record a {event_type} event: its outbox {self.path} "
                f"is on a full disk ({text}). Events already stored are kept; free space on that disk."
            )
        return StorageError(f"Door {self.door_id} could not record a {event_type} event in its outbox {self.path}: {text}.")

    def _next_seq(self):
        row = OutboxMeta.get_or_none(OutboxMeta.key == "next_seq")
        seq = row.value if row else 1
        OutboxMeta.insert(key="next_seq", value=seq + 1).on_conflict_replace().execute()
        return seq

    def _insert(self, event_type, details, snapshot_jpeg, dropped=0, ts=None):
        seq = self._next_seq()
        try:
            event = contract.Event.build(self.door_id, seq, event_type, details, ts=ts)
        except MessageRejected as exc:
            if event_type not in contract.EVENT_TYPES:
                raise
            # A bad detail (NaN, a huge value) must not cost the door its event.
            logger.error("%s Recording it without those details.", exc)
            person = details.get("person_id")
            kept = {"details_rejected": str(exc)[:200]}
            if isinstance(person, str) and len(person) <= 128:
                kept["person_id"] = person
            event = contract.Event.build(self.door_id, seq, event_type, kept, ts=ts)
        OutboxEvent.create(
            seq=event.seq, event_id=str(event.event_id), type=event.type,
            payload=event.to_json().decode("utf-8"), snapshot=snapshot_jpeg,
            snapshot_size=len(snapshot_jpeg) if snapshot_jpeg else 0, dropped=dropped,
        )
        return event

    def _make_room(self, size):
        """Drop the oldest crops until ``size`` more bytes fit; False if it never will."""
        if size > self.max_bytes:
            return False
        held = OutboxEvent.select(pw.fn.COALESCE(pw.fn.SUM(OutboxEvent.snapshot_size), 0)).scalar()
        if held + size <= self.max_bytes:
            return True
        query = (OutboxEvent.select(OutboxEvent.seq, OutboxEvent.payload, OutboxEvent.snapshot_size)
                 .where(OutboxEvent.snapshot_size > 0).order_by(OutboxEvent.seq))
        dropped = 0
        for row in query:
            if held + size <= self.max_bytes:
                break
            payload = json.loads(row.payload)
            payload["details"]["snapshot_dropped"] = contract.SNAPSHOT_DROPPED_OUTBOX_FULL
            (OutboxEvent.update(snapshot=None, snapshot_size=0,
                                payload=json.dumps(payload, separators=(",", ":")))
             .where(OutboxEvent.seq == row.seq).execute())
            held -= row.snapshot_size
            dropped += 1
        logger.warning("Door %s outbox is full of face crops: dropped the %d oldest.", self.door_id, dropped)
        return held + size <= self.max_bytes

    def _drop_oldest_events(self):
        count = self.depth()
        # Room for the marker and the new event, and a margin (5 %) so this is rare.
        n = max(count - self.max_events + 2, self.max_events // 20)
        rows = list(OutboxEvent.select(OutboxEvent.seq, OutboxEvent.dropped)
                    .order_by(OutboxEvent.seq).limit(n).tuples())
        if not rows:
            return
        lost = len(rows) + sum(carried for _, carried in rows)
        first, last = rows[0][0], rows[-1][0]
        OutboxEvent.delete().where(OutboxEvent.seq <= last).execute()
        logger.error("Door %s outbox holds %d events, its limit: dropped %d oldest (seq %d-%d).",
                     self.door_id, count, len(rows), first, last)
        self._insert("door_status", {
            "reason": contract.REASON_OUTBOX_OVERFLOW, "dropped_events": lost,
            "first_dropped_seq": first, "last_dropped_seq": last,
        }, None, dropped=lost)

    # ------------------------------------------------------------- reading

    def pending(self, limit=100, after_seq=0):
        """The oldest ``limit`` unsent events with ``seq > after_seq``, ready to publish, in order."""
        try:
            rows = (OutboxEvent.select(OutboxEvent.seq, OutboxEvent.event_id, OutboxEvent.type,
                                       OutboxEvent.payload, OutboxEvent.snapshot)
                    .where((OutboxEvent.seq > after_seq) & OutboxEvent.sent_at.is_null())
                    .order_by(OutboxEvent.seq).limit(limit).tuples())
            out = []
            for seq, event_id, event_type, payload, snapshot in rows:
                out.append(PendingEvent(seq, event_id, event_type, _with_snapshot(payload, snapshot)))
            return out
        except pw.DatabaseError as exc:
            raise StorageError(f"Door {self.door_id} cannot read its outbox {self.path}: {exc}.") from exc

    def mark_sent(self, event_ids):
        """Note that the broker acknowledged these events; they wait for central's receipt."""
        ids = [str(e) for e in event_ids]
        if not ids:
            return 0
        try:
            with self._lock, database.atomic("IMMEDIATE"):
                done = 0
                for start in range(0, len(ids), 500):
                    done += (OutboxEvent.update(sent_at=time.time())
                             .where(OutboxEvent.event_id.in_(ids[start:start + 500])).execute())
                return done
        except pw.DatabaseError as exc:
            raise StorageError(f"Door {self.door_id} cannot update its outbox {self.path}: {exc}.") from exc

    def unsend_all(self, older_than=None):
        """Make sent but unconfirmed events pending again: all, or those sent before ``older_than`` (unix time)."""
        condition = OutboxEvent.sent_at.is_null(False)
        if older_than is not None:
            condition &= OutboxEvent.sent_at < older_than
        try:
            with self._lock, database.atomic("IMMEDIATE"):
                return OutboxEvent.update(sent_at=None).where(condition).execute()
        except pw.DatabaseError as exc:
            raise StorageError(f"Door {self.door_id} cannot update its outbox {self.path}: {exc}.") from exc

    def unconfirmed(self):
        """Events the broker acknowledged that central has not confirmed yet."""
        return OutboxEvent.select().where(OutboxEvent.sent_at.is_null(False)).count()

    def acknowledge(self, event_id):
        """Delete an event that is delivered for good; returns True if it was there."""
        try:
            with self._lock, database.atomic("IMMEDIATE"):
                return OutboxEvent.delete().where(OutboxEvent.event_id == str(event_id)).execute() > 0
        except pw.DatabaseError as exc:
            raise StorageError(f"Door {self.door_id} cannot update its outbox {self.path}: {exc}.") from exc

    def acknowledge_many(self, event_ids):
        """Delete every event in ``event_ids`` in one transaction; returns how many were there."""
        ids = [str(e) for e in event_ids]
        if not ids:
            return 0
        try:
            with self._lock, database.atomic("IMMEDIATE"):
                gone = 0
                for start in range(0, len(ids), 500):
                    gone += OutboxEvent.delete().where(OutboxEvent.event_id.in_(ids[start:start + 500])).execute()
                return gone
        except pw.DatabaseError as exc:
            raise StorageError(f"Door {self.door_id} cannot update its outbox {self.path}: {exc}.") from exc

    def depth(self):
        """Events not yet delivered for good (unsent, or sent and unconfirmed)."""
        try:
            return OutboxEvent.select().count()
        except pw.DatabaseError as exc:
            raise StorageError(f"Door {self.door_id} cannot read its outbox {self.path}: {exc}.") from exc

    def last_seq(self):
        """The sequence number of the last event recorded (0 if none ever was)."""
        row = OutboxMeta.get_or_none(OutboxMeta.key == "next_seq")
        return row.value - 1 if row else 0


def _with_snapshot(payload, snapshot):
    if not snapshot:
        return payload.encode("utf-8")
    # Splice rather than re-serialise: the stored JSON ends with "}".
    return (payload[:-1] + ',"snapshot":"' + base64.b64encode(snapshot).decode("ascii") + '"}').encode("utf-8")
