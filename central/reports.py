"""Reports for staff, computed from the stored events (SQLite or PostgreSQL alike).

Each function returns a list of dicts, one per row, with the columns in
display order; ``bytelocker report ...`` prints them as a table or CSV.
Times are naive UTC datetimes, and a report "date" is a UTC day.

Attendance by the site's local day (visits, night shifts, who is on site)
is :mod:`central.attendance`, and door health is :mod:`central.door_health`:
the command line and the dashboard use those.
"""

import json

from central.store import StoredEvent

ENTRY = "entry"
EXIT = "exit"


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


def event_query(*, door=None, person=None, event_type=None, since=None, until=None):
    """An unordered query of stored events, each filter applied when given (``until`` excluded)."""
    query = StoredEvent.select()
    if door:
        query = query.where(StoredEvent.door_id == door)
    if person:
        query = query.where(StoredEvent.person_id == person)
    if event_type:
        query = query.where(StoredEvent.type == event_type)
    if since:
        query = query.where(StoredEvent.ts >= since)
    if until:
        query = query.where(StoredEvent.ts < until)
    return query


def events(door=None, since=None, until=None, event_type=None, limit=None):
    """Stored events, oldest first, optionally of one door, type and time range."""
    query = (event_query(door=door, event_type=event_type, since=since, until=until)
             .order_by(StoredEvent.ts, StoredEvent.door_id, StoredEvent.seq))
    if limit:
        query = query.limit(limit)
    return [{
        "ts": e.ts, "door_id": e.door_id, "seq": e.seq, "type": e.type, "person_id": e.person_id,
        "details": e.details_json, "snapshot_path": e.snapshot_path, "event_id": e.event_id,
    } for e in query]
