"""Grouping unidentified faces into strangers: "unknown visitor #12, seen 5 times at 2 doors".

Central describes each unidentified snapshot itself (doors never send face
descriptors over the wire) and assigns it to the nearest existing stranger
cluster when any member is within ``threshold``; otherwise it starts a new
cluster.  Nearest-member (single linkage) matching keeps a stranger together
across changes of pose and light better than a centroid does.
"""

import datetime as dt
import json
import logging

import numpy as np
import peewee as pw

from central.db import BaseModel, database, register
from edge.detect import Box

logger = logging.getLogger(__name__)

# Same-person distances of dlib descriptors are mostly below 0.5; a stricter
# value than the door's avoids merging two strangers into one visitor.
DEFAULT_THRESHOLD = 0.5


@register
class StrangerCluster(BaseModel):
    """One unknown visitor, as far as central can tell."""

    id = pw.AutoField()
    first_seen = pw.DateTimeField()
    last_seen = pw.DateTimeField()
    sightings = pw.IntegerField(default=0)
    doors_json = pw.TextField(default="[]")

    @property
    def doors(self):
        return json.loads(self.doors_json)

    @property
    def label(self):
        doors = self.doors
        return (f"unknown visitor #{self.id}: {self.sightings} sighting{'s' if self.sightings != 1 else ''}"
                f" at {len(doors)} door{'s' if len(doors) != 1 else ''}")


@register
class Sighting(BaseModel):
    """One unidentified face assigned to a cluster; the descriptor stays at central."""

    event_id = pw.CharField(primary_key=True, max_length=64)
    cluster = pw.ForeignKeyField(StrangerCluster, backref="members", on_delete="CASCADE")
    door_id = pw.CharField(max_length=64)
    seen_at = pw.DateTimeField()
    snapshot_path = pw.TextField(null=True)
    vector = pw.BlobField()


_purges = 0


def descriptors_purged():
    """Tell every :class:`StrangerClusters` that stored sightings were deleted.

    Each reloads its in-memory descriptors before its next match, so a
    purged face is neither kept in memory nor matched again.
    """
    global _purges
    _purges += 1


class StrangerClusters:
    """Assign unidentified faces to stranger clusters.

    :param threshold: Euclidean distance under which a face joins a cluster
        (any member); lower keeps strangers apart more strictly.
    :param describer: a :class:`edge.describe.FaceDescriber` (loaded lazily).
    :param detector: a :class:`edge.detect.FaceDetector` used on snapshots.
    """

    def __init__(self, *, threshold=DEFAULT_THRESHOLD, describer=None, detector=None):
        self.threshold = threshold
        self._describer = describer
        self._detector = detector
        self._matrix = None
        self._owners = None
        self._loaded_after = _purges

    def _engine(self):
        if self._describer is None:
            from edge.describe import FaceDescriber
            from edge.detect import FaceDetector

            self._describer = FaceDescriber()
            self._detector = FaceDetector(model="hog", scale=1.0, upsample=1, min_face_px=20)
        return self._detector, self._describer

    def describe_snapshot(self, rgb):
        """The descriptor of the face in a snapshot crop, or None if there is no face.

        Door snapshots are tight crops, so when the detector finds nothing the
        whole crop is taken as the face box.
        """
        detector, describer = self._engine()
        boxes = detector.detect(rgb)
        if not boxes:
            h, w = rgb.shape[:2]
            if min(h, w) < 40:
                return None
            boxes = [Box(0, 0, w, h)]
        return describer.describe(rgb, boxes[:1])[0]

    def _load(self):
        self._loaded_after = _purges
        rows = list(Sighting.select(Sighting.cluster, Sighting.vector).tuples())
        if rows:
            self._owners = np.array([r[0] for r in rows], dtype=np.int64)
            self._matrix = np.stack([np.frombuffer(r[1], dtype=np.float32) for r in rows])
        else:
            self._owners = np.zeros(0, dtype=np.int64)
            self._matrix = np.zeros((0, 128), np.float32)

    def assign(self, descriptor, *, event_id, door_id, seen_at=None, snapshot_path=None):
        """Put one unidentified face into a cluster; return the :class:`StrangerCluster`.

        Reloads the stored descriptors first when sightings were purged, in
        this process or in another one (``bytelocker forget``): fewer rows
        than held in memory means some were.
        """
        if (self._matrix is None or self._loaded_after != _purges
                or Sighting.select().count() < len(self._matrix)):
            self._load()
        descriptor = np.asarray(descriptor, dtype=np.float32).reshape(128)
        seen_at = seen_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        cluster = None
        if len(self._matrix):
            dists = np.linalg.norm(self._matrix - descriptor, axis=1)
            best = int(np.argmin(dists))
            if dists[best] <= self.threshold:
                cluster = StrangerCluster.get_or_none(StrangerCluster.id == int(self._owners[best]))
        with database.atomic():
            if cluster is None:
                cluster = StrangerCluster.create(first_seen=seen_at, last_seen=seen_at)
            doors = set(cluster.doors) | {door_id}
            cluster.sightings += 1
            cluster.last_seen = max(cluster.last_seen, seen_at)
            cluster.doors_json = json.dumps(sorted(doors))
            cluster.save()
            Sighting.insert(event_id=event_id, cluster=cluster.id, door_id=door_id, seen_at=seen_at,
                            snapshot_path=snapshot_path, vector=descriptor.tobytes()
                            ).on_conflict_ignore().execute()
        self._matrix = np.vstack([self._matrix, descriptor[None, :]])
        self._owners = np.append(self._owners, cluster.id)
        return cluster

    def forget_cluster(self, cluster_id):
        """Delete a cluster and its sightings (privacy); returns the snapshot paths to remove."""
        paths = [s.snapshot_path for s in Sighting.select().where(Sighting.cluster == cluster_id)
                 if s.snapshot_path]
        with database.atomic():
            Sighting.delete().where(Sighting.cluster == cluster_id).execute()
            StrangerCluster.delete().where(StrangerCluster.id == cluster_id).execute()
        self._matrix = None
        # Other matchers in this process (the alerter's) still hold these faces.
        descriptors_purged()
        return paths


def sightings_near(descriptors, threshold=DEFAULT_THRESHOLD, *, batch=5000):
    """``[(event_id, snapshot_path)]`` of the sightings within ``threshold`` of any of ``descriptors``.

    ``descriptors`` is an ``(n, 128)`` array (a person's enrolled faces);
    ``threshold`` is a Euclidean distance, the clustering one (lower finds
    fewer: 0.5 is the default).  Finds a person's unrecognised appearances,
    so that erasing them also erases these.  Reads the table ``batch`` rows
    at a time.
    """
    wanted = np.asarray(descriptors, dtype=np.float32).reshape(-1, 128)
    found = []
    if not len(wanted):
        return found
    last = None
    while True:
        query = Sighting.select(Sighting.event_id, Sighting.snapshot_path, Sighting.vector)
        if last is not None:
            query = query.where(Sighting.event_id > last)
        rows = list(query.order_by(Sighting.event_id).limit(batch).tuples())
        if not rows:
            return found
        last = rows[-1][0]
        matrix = np.stack([np.frombuffer(r[2], dtype=np.float32) for r in rows])
        # (rows, n) distances; n is a handful of enrolment photos.
        nearest = np.linalg.norm(matrix[:, None, :] - wanted[None, :, :], axis=2).min(axis=1)
        found.extend((r[0], r[1]) for r, d in zip(rows, nearest) if d <= threshold)


def purge_sightings(condition):
    """Delete the sightings (face descriptors) matching ``condition``; fix or empty their clusters.

    Returns how many were deleted.  Snapshot files are the caller's: delete
    them first.  Every :class:`StrangerClusters` reloads before its next match.
    """
    with database.atomic():
        touched = {c for (c,) in Sighting.select(Sighting.cluster).where(condition).distinct().tuples()}
        if not touched:
            return 0
        purged = Sighting.delete().where(condition).execute()
        for cluster_id in touched:
            left = list(Sighting.select(Sighting.seen_at, Sighting.door_id)
                        .where(Sighting.cluster == cluster_id).tuples())
            if not left:
                # Emptied, not deleted: SQLite would give its number to the next new
                # visitor, and alerts still name "unknown visitor #N".  The empty
                # row goes with the events, after event_retention_days.
                (StrangerCluster.update(sightings=0, doors_json="[]")
                 .where(StrangerCluster.id == cluster_id).execute())
                continue
            # The label ("N sightings at M doors") must describe what is still kept.
            (StrangerCluster.update(first_seen=min(t for t, _ in left), last_seen=max(t for t, _ in left),
                                    sightings=len(left), doors_json=json.dumps(sorted({d for _, d in left})))
             .where(StrangerCluster.id == cluster_id).execute())
    # Matchers in this process still hold the purged descriptors in memory.
    descriptors_purged()
    return purged


def clusters(min_sightings=1):
    """Stranger clusters, most recently seen first."""
    return list(StrangerCluster.select().where(StrangerCluster.sightings >= min_sightings)
                .order_by(StrangerCluster.last_seen.desc()))
