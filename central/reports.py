"""Reports for staff, computed from the stored events (SQLite or PostgreSQL alike).

Each function returns a list of dicts, one per row, with the columns in
display order; ``bytelocker report ...`` prints them as a table or CSV.
Times are naive UTC datetimes, and a report "date" is a UTC day.
"""

import datetime as dt
import json

import peewee as pw

from central.store import Door, StoredEvent

ENTRY = "entry"
EXIT = "exit"


def attendance(day):
    """Who came on ``day`` (a :class:`datetime.date`, UTC): one row per person.

    Built from ``granted`` events.  An event with ``details.direction`` of
    ``entry`` or ``exit`` (doors with a role) counts as that; one without
    counts as an entry, and the person's last granted event of the day is
    then their last sighting.  Columns: ``person_id``, ``first_entry``,
    ``last_exit`` (None unless an exit was seen), ``last_seen``,
    ``time_on_site`` (a :class:`datetime.timedelta` from first entry to last
    exit, or to last seen when no exit was seen), ``doors`` (sorted, joined
    by ``,``) and ``events``.
    """
    start = dt.datetime.combine(day, dt.time())
    end = start + dt.timedelta(days=1)
    query = (StoredEvent.select(StoredEvent.person_id, StoredEvent.ts, StoredEvent.door_id,
                                StoredEvent.details_json)
             .where((StoredEvent.type == "granted") & StoredEvent.person_id.is_null(False)
                    & (StoredEvent.ts >= start) & (StoredEvent.ts < end))
             .order_by(StoredEvent.ts).tuples())
    people = {}
    for person_id, ts, door_id, details_json in query:
        direction = json.loads(details_json or "{}").get("direction") or ENTRY
        row = people.setdefault(person_id, {
            "person_id": person_id, "first_entry": None, "last_exit": None, "last_seen": None,
            "time_on_site": None, "doors": set(), "events": 0,
        })
        if direction == ENTRY and row["first_entry"] is None:
            row["first_entry"] = ts
        if direction == EXIT:
            row["last_exit"] = ts
        row["last_seen"] = ts
        row["doors"].add(door_id)
        row["events"] += 1
    rows = []
    for row in sorted(people.values(), key=lambda r: (r["first_entry"] or r["last_seen"], r["person_id"])):
        begin = row["first_entry"] or row["last_seen"]
        finish = row["last_exit"] if row["last_exit"] and row["last_exit"] >= begin else row["last_seen"]
        row["time_on_site"] = finish - begin
        row["doors"] = ",".join(sorted(row["doors"]))
        rows.append(row)
    return rows


def unidentified(since):
    """Every ``unidentified`` event since ``since`` (naive UTC), oldest first, with its snapshot path."""
    query = (StoredEvent.select(StoredEvent.ts, StoredEvent.door_id, StoredEvent.event_id,
                                StoredEvent.snapshot_path, StoredEvent.details_json)
             .where((StoredEvent.type == "unidentified") & (StoredEvent.ts >= since))
             .order_by(StoredEvent.ts, StoredEvent.id).tuples())
    rows = []
    for ts, door_id, event_id, path, details_json in query:
        details = json.loads(details_json or "{}")
        rows.append({"ts": ts, "door_id": door_id, "event_id": event_id, "snapshot_path": path,
                     "snapshot_dropped": details.get("snapshot_dropped")})
    return rows


def doors(now=None, stale_after=dt.timedelta(minutes=5)):
    """Every door central knows: availability, last seen, outbox depth, events stored.

    ``state`` is the door's own ``available`` message, except that a door
    which says ``online`` but has not been heard from for ``stale_after``
    shows as ``silent``.
    """
    counts = dict(StoredEvent.select(StoredEvent.door_id, pw.fn.COUNT(StoredEvent.id))
                  .group_by(StoredEvent.door_id).tuples())
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    rows = []
    for door in Door.select().order_by(Door.door_id):
        state = door.availability
        if state == "online" and door.last_seen is not None and now - door.last_seen > stale_after:
            state = "silent"
        rows.append({
            "door_id": door.door_id, "state": state, "since": door.availability_at,
            "last_seen": door.last_seen, "last_event": door.last_event_at, "last_seq": door.last_seq,
            "outbox_depth": door.outbox_depth, "events_stored": counts.get(door.door_id, 0),
        })
    return rows


def events(door=None, since=None, until=None, event_type=None, limit=None):
    """Stored events, oldest first, optionally of one door, type and time range."""
    query = StoredEvent.select().order_by(StoredEvent.ts, StoredEvent.door_id, StoredEvent.seq)
    if door:
        query = query.where(StoredEvent.door_id == door)
    if since:
        query = query.where(StoredEvent.ts >= since)
    if until:
        query = query.where(StoredEvent.ts < until)
    if event_type:
        query = query.where(StoredEvent.type == event_type)
    if limit:
        query = query.limit(limit)
    return [{
        "ts": e.ts, "door_id": e.door_id, "seq": e.seq, "type": e.type, "person_id": e.person_id,
        "details": e.details_json, "snapshot_path": e.snapshot_path, "event_id": e.event_id,
    } for e in query]
