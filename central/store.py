"""Central's record of doors, their events and face snapshots (peewee models).

Declared once on :data:`central.db.database`, bound at start-up to SQLite or
PostgreSQL by :func:`central.db.open_database`; the same code runs on both.
Times are naive UTC datetimes.

Events are stored idempotently by ``event_id`` (a duplicate QoS 1 delivery
is ignored), and the person of an event lives only in ``events.person_id``
(never inside ``details``: an ambiguous face's ``nearest`` goes to
:class:`EventNearest`) so that erasing a person
(:func:`central.registry.anonymise_person_rows`) leaves no trace of them.
Events that arrive after a person was forgotten (from a door that was
offline) are stored anonymised and without their snapshot: see
:class:`central.registry.ForgottenPerson`.
"""

import datetime as dt
import json
import logging
import os

import peewee as pw

from bytelocker.errors import StorageError
from central.db import BaseModel, database, erasure_lock, register, write_transaction
from central.registry import forgotten_among

logger = logging.getLogger(__name__)


def utcnow():
    """Now, as a naive UTC datetime (how every time is stored)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def naive_utc(when):
    """``when`` as a naive UTC datetime."""
    if when.tzinfo is not None:
        when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return when


@register
class Door(BaseModel):
    """A door central has heard from: availability, last status, last event."""

    door_id = pw.CharField(primary_key=True, max_length=64)
    availability = pw.CharField(max_length=16, default="unknown")
    availability_at = pw.DateTimeField(null=True)
    last_seen = pw.DateTimeField(null=True)
    last_event_at = pw.DateTimeField(null=True)
    last_seq = pw.BigIntegerField(default=0)
    status_json = pw.TextField(null=True)
    status_at = pw.DateTimeField(null=True)
    outbox_depth = pw.IntegerField(null=True)

    class Meta:
        table_name = "doors"

    @property
    def status(self):
        """The last status payload as a dict (empty if none came yet)."""
        return json.loads(self.status_json) if self.status_json else {}


@register
class StoredEvent(BaseModel):
    """One door event, stored once however often it was delivered."""

    event_id = pw.CharField(max_length=36, unique=True)
    door_id = pw.CharField(max_length=64)
    seq = pw.BigIntegerField()
    ts = pw.DateTimeField(index=True)
    type = pw.CharField(max_length=32)
    person_id = pw.CharField(max_length=128, null=True, index=True)
    details_json = pw.TextField(default="{}")
    snapshot_path = pw.CharField(max_length=512, null=True)
    received_at = pw.DateTimeField()

    class Meta:
        table_name = "events"
        indexes = ((("door_id", "seq"), False), (("type", "ts"), False))

    @property
    def details(self):
        return json.loads(self.details_json)


@register
class Snapshot(BaseModel):
    """A face crop saved on disk for an event; purged after the retention period."""

    event_id = pw.CharField(max_length=36, unique=True)
    door_id = pw.CharField(max_length=64)
    ts = pw.DateTimeField(index=True)
    path = pw.CharField(max_length=512)
    size = pw.IntegerField()

    class Meta:
        table_name = "snapshots"


@register
class EventNearest(BaseModel):
    """Whom an ambiguous face was nearest to: a ``denied`` event's ``details.nearest``.

    Kept out of ``details_json``, where an erasure could not clear it; an
    erasure deletes the row, and the event's snapshot with it.
    """

    event = pw.ForeignKeyField(StoredEvent, field=StoredEvent.event_id, primary_key=True,
                               column_name="event_id", on_delete="CASCADE")
    person_id = pw.CharField(max_length=128, null=True, index=True)

    class Meta:
        table_name = "event_nearest"


MODELS = (Door, StoredEvent, Snapshot, EventNearest)

# Keys of an event's details that name a person; each has its own column.
PERSON_DETAILS = ("person_id", "nearest")


def snapshot_path(snapshot_dir, door_id, event_id, ts):
    """Where an event's crop is saved: ``<dir>/<door>/<YYYY-MM-DD>/<event_id>.jpg``."""
    return os.path.join(snapshot_dir, door_id, ts.strftime("%Y-%m-%d"), f"{event_id}.jpg")


def save_snapshot(path, jpeg):
    """Write ``jpeg`` to ``path`` atomically (a reader never sees half a file)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(jpeg)
    os.replace(tmp, path)


def store_events(events, snapshot_dir, received_at=None):
    """Store parsed :class:`~bytelocker.contract.Event` objects; return how many were new.

    Snapshots are written to ``snapshot_dir`` before the rows commit, and only
    for events not stored yet.  Duplicates (same ``event_id``) are ignored.
    Raises :class:`StorageError` if the database or the disk fails; nothing
    is half-stored then (the transaction rolls back; a crop file without a
    row is overwritten by the redelivery).
    """
    received_at = received_at or utcnow()
    unique = {}
    for event in events:
        unique.setdefault(str(event.event_id), event)
    if not unique:
        return 0
    try:
        with write_transaction():
            # Waits for a forget in progress (PostgreSQL), so its events are not missed by both.
            erasure_lock(exclusive=False)
            named = [getattr(e.details, key, None) for e in unique.values() for key in PERSON_DETAILS]
            forgotten = forgotten_among(n for n in named if isinstance(n, str))
            with_crops = [eid for eid, e in unique.items() if e.snapshot]
            known = set()
            for start in range(0, len(with_crops), 500):
                chunk = with_crops[start:start + 500]
                known.update(r for (r,) in StoredEvent.select(StoredEvent.event_id)
                             .where(StoredEvent.event_id.in_(chunk)).tuples())
            rows, crops, nearest_rows = [], [], []
            for event_id, event in unique.items():
                ts = naive_utc(event.ts)
                details = event.details.model_dump(exclude_none=True)
                person_id = details.pop("person_id", None)
                nearest = details.pop("nearest", None)
                erased = person_id in forgotten or (isinstance(nearest, str) and nearest in forgotten)
                if erased:
                    # Sent before the door heard of the erasure: store it as the erasure left
                    # the others, without the person and without their face.
                    person_id = None
                elif isinstance(nearest, str) and 0 < len(nearest) <= 128:
                    nearest_rows.append({"event": event_id, "person_id": nearest})
                path = None
                if event.snapshot and event_id not in known and not erased:
                    path = snapshot_path(snapshot_dir, event.door_id, event_id, ts)
                    jpeg = event.snapshot_jpeg
                    save_snapshot(path, jpeg)
                    crops.append({"event_id": event_id, "door_id": event.door_id, "ts": ts,
                                  "path": path, "size": len(jpeg)})
                rows.append({
                    "event_id": event_id, "door_id": event.door_id, "seq": event.seq, "ts": ts,
                    "type": event.type, "person_id": person_id,
                    "details_json": json.dumps(details, separators=(",", ":"), default=str),
                    "snapshot_path": path, "received_at": received_at,
                })
            new = _insert_ignoring_duplicates(StoredEvent, rows)
            if nearest_rows:
                EventNearest.insert_many(nearest_rows).on_conflict_ignore().execute()
            if crops:
                Snapshot.insert_many(crops).on_conflict_ignore().execute()
            _touch_doors(unique.values(), received_at)
    except (pw.PeeweeException, OSError) as exc:
        raise StorageError(f"Central could not store {len(unique)} events: {exc}.") from exc
    return new


def _insert_ignoring_duplicates(model, rows, chunk=100):
    """INSERT ... ON CONFLICT DO NOTHING for many dict rows; returns rows inserted.

    Peewee writes the one-row statement for the bound database's dialect; its
    VALUES group is repeated for ``chunk`` rows per statement on a server
    database (one statement per row costs a network round trip each), and
    SQLite runs the one-row statement for every row.  Building SQL row by
    row in peewee cost more than the database's own work.  100 rows of 9 columns stay
    under SQLite's oldest limit of 999 parameters.
    """
    fields = [model._meta.fields[name] for name in rows[0]]
    one, _ = model.insert_many([tuple(rows[0].values())], fields=fields).on_conflict_ignore().sql()
    start = one.index("VALUES (") + len("VALUES ")
    end = one.index(")", start) + 1
    head, group, tail = one[:start], one[start:end], one[end:]
    # The raw cursor bypasses peewee, so map driver errors to peewee's as its own calls do.
    with pw.__exception_wrapper__:
        cursor = database.cursor()
        if isinstance(database.obj, pw.SqliteDatabase):
            # In-process: one prepared statement run per row is fastest.
            cursor.executemany(one, [[f.db_value(v) for f, v in zip(fields, row.values())] for row in rows])
            return cursor.rowcount
        inserted = 0
        for first in range(0, len(rows), chunk):
            part = rows[first:first + chunk]
            params = [f.db_value(v) for row in part for f, v in zip(fields, row.values())]
            cursor.execute(head + ", ".join([group] * len(part)) + tail, params)
            inserted += cursor.rowcount
        return inserted


def _touch_doors(events, received_at):
    latest = {}
    for event in events:
        ts = naive_utc(event.ts)
        seq, last = latest.get(event.door_id, (0, None))
        latest[event.door_id] = (max(seq, event.seq), max(ts, last) if last else ts)
    for door_id, (seq, ts) in latest.items():
        Door.insert(door_id=door_id).on_conflict_ignore().execute()
        Door.update(last_seen=received_at).where(Door.door_id == door_id).execute()
        Door.update(last_seq=seq).where((Door.door_id == door_id) & (Door.last_seq < seq)).execute()
        (Door.update(last_event_at=ts)
         .where((Door.door_id == door_id) & (Door.last_event_at.is_null() | (Door.last_event_at < ts)))
         .execute())


def store_status(status, received_at=None, *, retained=False):
    """Keep a door's latest :class:`~bytelocker.contract.Status` (an older one is ignored).

    ``retained``: the broker repeated an old message on subscribe, so it
    says nothing about the door being alive now (``last_seen`` is kept).
    """
    received_at = received_at or utcnow()
    ts = naive_utc(status.ts)
    data = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    try:
        with database.atomic():
            Door.insert(door_id=status.door_id).on_conflict_ignore().execute()
            if not retained:
                Door.update(last_seen=received_at).where(Door.door_id == status.door_id).execute()
            (Door.update(status_json=json.dumps(data, separators=(",", ":")), status_at=ts,
                         outbox_depth=status.outbox_depth)
             .where((Door.door_id == status.door_id) & (Door.status_at.is_null() | (Door.status_at <= ts)))
             .execute())
    except pw.PeeweeException as exc:
        raise StorageError(f"Central could not store the status of door {status.door_id}: {exc}.") from exc


def store_available(available, received_at=None, *, retained=False):
    """Keep a door's availability (``online``/``offline``/``stopped``) and since when.

    "Since" changes only when the state does: the broker repeats a door's
    retained last will (offline, no time of its own) to central after every
    restart, which must not restart the outage (or raise its alert again).
    It is the door's time when the door sent one, but never later than
    central received it; central's when the door sent none, or a time not
    after the state before it (a clock still wrong after a power cut).
    ``retained`` messages do not count as a sign of life (``last_seen``).
    """
    received_at = received_at or utcnow()
    at = min(naive_utc(available.ts), received_at) if available.ts else received_at
    try:
        with database.atomic():
            Door.insert(door_id=available.door_id).on_conflict_ignore().execute()
            door = Door.get(Door.door_id == available.door_id)
            if door.availability != available.state:
                if door.availability_at is not None and at <= door.availability_at:
                    at = received_at  # the door's clock is behind: central's is the better guess
                Door.update(availability=available.state, availability_at=at).where(
                    Door.door_id == available.door_id).execute()
            if not retained:
                Door.update(last_seen=received_at).where(Door.door_id == available.door_id).execute()
    except pw.PeeweeException as exc:
        raise StorageError(f"Central could not store the availability of door {available.door_id}: {exc}.") from exc
