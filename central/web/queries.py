"""What the dashboard reads that central's modules do not offer (yet).

The pages call :mod:`central.attendance`, :mod:`central.door_health`,
:mod:`central.registry`, :mod:`central.enrolment` and :mod:`central.clusters`
first.  This module holds only the thin queries they lack: late arrivals and
arrivals per hour from an attendance report, events stored per door, the
events log newest first with a person filter, the latest events per door, the
sightings of stranger clusters, and erasing a stranger cluster's files.
When a central module grows one of these, the page should call that instead
and the function here should go.
"""

import collections
import datetime as dt
import json
import logging
import os

import peewee as pw

from central import attendance, reports
from central.clusters import Sighting, StrangerCluster, StrangerClusters
from central.db import database
from central.store import Door, EventNearest, Snapshot, StoredEvent, utcnow

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------- today

def today_rows(records, day_start):
    """The Today table: :func:`central.attendance.table_row` of each record, plus ``record`` and ``late``.

    ``records`` are :class:`central.attendance.DayRecord` objects of one day;
    ``late`` is a first entry after ``day_start`` (a :class:`datetime.time`
    read on the site's clock, like the records' times).
    """
    rows = []
    for record in records:
        arrived = record.first_in
        rows.append(dict(attendance.table_row(record), record=record,
                         late=arrived is not None and arrived.time() > day_start))
    return rows


def arrivals_per_hour(records):
    """24 counts: how many first entries fell in each local hour of the site's day."""
    counts = [0] * 24
    for record in records:
        if record.first_in is not None:
            counts[record.first_in.hour] += 1
    return counts


def without_exit(records):
    """Who was still in at the end of a past day: records whose last visit has an entry and no exit.

    Dicts like :func:`central.attendance.on_site`'s: ``person_id``, ``name``
    and ``since`` (that visit's entry, local).  Such a visit is flagged
    ``missing_exit``, or ``on_site`` when it is still open now.
    """
    rows = []
    for record in records:
        last = record.visits[-1]
        if last.entry is not None and last.exit is None:
            rows.append({"person_id": record.person_id, "name": record.name, "since": last.entry.local})
    return rows


# ----------------------------------------------------------------- doors

def events_stored_by_door():
    """``{door_id: number of stored events}`` (:func:`central.door_health.door_health` does not count them)."""
    return dict(StoredEvent.select(StoredEvent.door_id, pw.fn.COUNT(StoredEvent.id))
                .group_by(StoredEvent.door_id).tuples())


def latest_events_by_door(per_door=5):
    """``{door_id: [event dict, ...]}``: each door's newest ``per_door`` events, newest first."""
    out = collections.OrderedDict()
    for door_id in [d for (d,) in Door.select(Door.door_id).order_by(Door.door_id).tuples()]:
        query = (StoredEvent.select().where(StoredEvent.door_id == door_id)
                 .order_by(StoredEvent.ts.desc(), StoredEvent.seq.desc()).limit(per_door))
        out[door_id] = [event_dict(e) for e in query]
    return out


def door_activity(hours=24, now=None):
    """``(start, {door_id: [count per hour]})``: each door's events in the last ``hours`` whole hours.

    The last bucket is the current, unfinished hour.
    """
    now = now or utcnow()
    start = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=hours - 1)
    strips = {d: [0] * hours for d in known_doors()}
    query = (StoredEvent.select(StoredEvent.door_id, StoredEvent.ts)
             .where((StoredEvent.ts >= start) & (StoredEvent.ts < start + dt.timedelta(hours=hours))).tuples())
    for door_id, ts in query:
        strips.setdefault(door_id, [0] * hours)[int((ts - start).total_seconds() // 3600)] += 1
    return start, strips


# ---------------------------------------------------------------- events

def event_dict(event):
    """A stored event as a dict for templates and JSON (details parsed)."""
    try:
        details = json.loads(event.details_json or "{}")
    except ValueError:
        details = {}
    return {"event_id": event.event_id, "ts": event.ts, "door_id": event.door_id, "seq": event.seq,
            "type": event.type, "person_id": event.person_id, "details": details,
            "has_snapshot": bool(event.snapshot_path)}


def events_log(*, door=None, person=None, event_type=None, since=None, until=None, limit=200, offset=0):
    """Stored events newest first, filtered; returns ``(rows, more)``.

    ``more`` is True when older rows exist past ``offset + limit``.
    (:func:`central.reports.events` is the same filters, oldest first.)
    """
    query = (reports.event_query(door=door, person=person, event_type=event_type, since=since, until=until)
             .order_by(StoredEvent.ts.desc(), StoredEvent.id.desc()))
    rows = [event_dict(e) for e in query.limit(limit + 1).offset(offset)]
    rows, more = rows[:limit], len(rows) > limit
    # Whom an ambiguous face was nearest to is kept outside details (erasure clears it there).
    nearest = dict(EventNearest.select(EventNearest.event, EventNearest.person_id)
                   .where(EventNearest.event.in_([r["event_id"] for r in rows])
                          & EventNearest.person_id.is_null(False)).tuples()) if rows else {}
    for row in rows:
        if row["event_id"] in nearest:
            row["details"]["nearest"] = nearest[row["event_id"]]
    return rows, more


def known_doors():
    """Every door id central knows, sorted."""
    return [d for (d,) in Door.select(Door.door_id).order_by(Door.door_id).tuples()]


# ------------------------------------------------------------ strangers

def cluster_sightings(cluster_ids, per_cluster=24):
    """``{cluster_id: [Sighting, ...]}``: each cluster's newest ``per_cluster`` sightings, newest first."""
    out = {}
    for cluster_id in cluster_ids:
        out[cluster_id] = list(Sighting.select().where(Sighting.cluster == cluster_id)
                               .order_by(Sighting.seen_at.desc()).limit(per_cluster))
    return out


def unclustered_unidentified(since, limit=200):
    """Unidentified events with a snapshot since ``since`` that no stranger cluster holds yet, newest first."""
    query = (StoredEvent.select()
             .where((StoredEvent.type == "unidentified") & (StoredEvent.ts >= since)
                    & StoredEvent.snapshot_path.is_null(False)
                    & StoredEvent.event_id.not_in(Sighting.select(Sighting.event_id)))
             .order_by(StoredEvent.ts.desc()).limit(limit))
    return [event_dict(e) for e in query]


def cluster_photo_paths(cluster_id, snapshot_dir, limit=20):
    """The snapshot files (newest ``limit``) of a cluster's sightings that exist inside ``snapshot_dir``."""
    paths = []
    for s in Sighting.select().where(Sighting.cluster == cluster_id).order_by(Sighting.seen_at.desc()):
        path = snapshot_path_of(s.event_id, snapshot_dir)
        if path:
            paths.append(path)
            if len(paths) == limit:
                break
    return paths


def inside(path, folder):
    """True if ``path`` (after resolving links and ``..``) lies inside ``folder``."""
    root = os.path.realpath(folder)
    real = os.path.realpath(path)
    return real != root and os.path.commonpath([real, root]) == root


def snapshot_path_of(event_id, snapshot_dir):
    """The snapshot file of ``event_id`` if it exists inside ``snapshot_dir``, else None.

    The path stored with the event, the sighting or the snapshot row is
    never trusted alone: it must resolve to a file under the snapshot folder.
    """
    candidates = [p for (p,) in Snapshot.select(Snapshot.path).where(Snapshot.event_id == event_id).tuples()]
    candidates += [p for (p,) in StoredEvent.select(StoredEvent.snapshot_path)
                   .where(StoredEvent.event_id == event_id).tuples()]
    candidates += [p for (p,) in Sighting.select(Sighting.snapshot_path)
                   .where(Sighting.event_id == event_id).tuples()]
    for path in candidates:
        if not path:
            continue
        if not os.path.isabs(path):
            path = os.path.join(snapshot_dir, path)
        if inside(path, snapshot_dir) and os.path.isfile(path):
            return os.path.realpath(path)
    return None


def forget_stranger(cluster_id, snapshot_dir, clusters=None):
    """Privacy erasure of one stranger: the cluster, its sightings and their snapshot files.

    Calls :meth:`central.clusters.StrangerClusters.forget_cluster`, then deletes
    each snapshot file (only inside ``snapshot_dir``) and the references the
    events still hold to it.  Returns ``(sightings, files_deleted)``; raises
    :class:`KeyError` if there is no such cluster.
    """
    if StrangerCluster.get_or_none(StrangerCluster.id == cluster_id) is None:
        raise KeyError(cluster_id)
    event_ids = [e for (e,) in Sighting.select(Sighting.event_id).where(Sighting.cluster == cluster_id).tuples()]
    paths = {p for p in (snapshot_path_of(e, snapshot_dir) for e in event_ids) if p}
    paths |= {os.path.realpath(p if os.path.isabs(p) else os.path.join(snapshot_dir, p))
              for p in (clusters or StrangerClusters()).forget_cluster(cluster_id)}
    deleted = 0
    for path in sorted(paths):
        if not inside(path, snapshot_dir):
            logger.warning("Not deleting %s: it is outside the snapshot folder %s.", path, snapshot_dir)
            continue
        try:
            os.remove(path)
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            # The rows still go: the file is then an orphan retention cannot
            # see, so say loudly which one staff must remove by hand.
            logger.error("Could not delete the snapshot %s of forgotten stranger #%s: %s.",
                         path, cluster_id, exc.strerror or exc)
    with database.atomic():
        for start in range(0, len(event_ids), 500):
            chunk = event_ids[start:start + 500]
            Snapshot.delete().where(Snapshot.event_id.in_(chunk)).execute()
            StoredEvent.update(snapshot_path=None).where(StoredEvent.event_id.in_(chunk)).execute()
    return len(event_ids), deleted
