"""Purging what central may no longer keep (run periodically by ``central run``).

Face data of unidentified visitors is personal data kept only to review it:
after ``storage.snapshot_retention_days`` (default 30) the JPEG files and
every reference to them go, and so do the stranger-cluster sightings with
the face descriptors central computed from them (a cluster left with no
sighting is emptied, and deleted with the events).  Events and alerts go after
``storage.event_retention_days`` (default 365), with any snapshot they still
have.  ``docs/central.md`` gives the privacy reasoning.
"""

import datetime as dt
import logging
import os

import peewee as pw

from bytelocker.errors import StorageError
from central import clusters
from central.alerts import Alert
from central.clusters import Sighting, StrangerCluster
from central.db import database
from central.store import Snapshot, StoredEvent, utcnow

logger = logging.getLogger(__name__)

BATCH = 1000


def purge(storage, now=None):
    """Delete snapshots and events older than the retention periods of ``storage``.

    Returns ``{"snapshots": n, "sightings": s, "events": m, "alerts": a}``.
    Files are deleted before the rows that point to them, so a crash in
    between leaves a reference to a missing file (retried next run), never an
    orphaned face on disk.
    """
    now = now or utcnow()
    snap_cutoff = now - dt.timedelta(days=storage.snapshot_retention_days)
    event_cutoff = now - dt.timedelta(days=storage.event_retention_days)
    try:
        snapshots = _purge_snapshots(Snapshot.ts < snap_cutoff)
        snapshots += _purge_snapshots(Snapshot.event_id.in_(
            StoredEvent.select(StoredEvent.event_id).where(StoredEvent.ts < event_cutoff)))
        events = 0
        while True:
            with database.atomic():
                ids = [i for (i,) in StoredEvent.select(StoredEvent.id)
                       .where(StoredEvent.ts < event_cutoff).limit(BATCH).tuples()]
                if not ids:
                    break
                events += StoredEvent.delete().where(StoredEvent.id.in_(ids)).execute()
        sightings = clusters.purge_sightings(Sighting.seen_at < snap_cutoff)
        with database.atomic():
            (StrangerCluster.delete()
             .where((StrangerCluster.sightings == 0) & (StrangerCluster.last_seen < event_cutoff)).execute())
        with database.atomic():
            alerts = Alert.delete().where(Alert.at < event_cutoff).execute()
    except pw.PeeweeException as exc:
        raise StorageError(f"Central retention purge failed: {exc}.") from exc
    if snapshots or sightings or events or alerts:
        logger.info("Retention: deleted %d snapshots and %d stranger sightings older than %d days, "
                    "%d events and %d alerts older than %d days.", snapshots, sightings,
                    storage.snapshot_retention_days, events, alerts, storage.event_retention_days)
    return {"snapshots": snapshots, "sightings": sightings, "events": events, "alerts": alerts}


def _purge_snapshots(condition):
    purged = 0
    while True:
        rows = list(Snapshot.select(Snapshot.event_id, Snapshot.path).where(condition).limit(BATCH).tuples())
        if not rows:
            return purged
        for _, path in rows:
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise StorageError(f"Central cannot delete the expired snapshot {path}: {exc.strerror or exc}.") from exc
        ids = [event_id for event_id, _ in rows]
        with database.atomic():
            StoredEvent.update(snapshot_path=None).where(StoredEvent.event_id.in_(ids)).execute()
            purged += Snapshot.delete().where(Snapshot.event_id.in_(ids)).execute()
