"""Enrolment photos: quality checks, then descriptors into the registry.

Each photo is checked on its own and the verdict reported per photo, in this
order (thresholds from ``enrolment`` in central.yaml, calibrated on the real
photos in the shared data folder):

1. it decodes (a corrupt or truncated file is named as such);
2. exactly one face (dlib HOG on a copy shrunk to ``max_photo_px``; a group
   photo is rejected, since we cannot know which face is the person);
3. the face is at least ``min_face_px`` wide in the original photo;
4. the face is bright enough: mean grey level of the face >= ``min_brightness``
   (well-lit faces measure 70-165; the same photos at a quarter of the
   exposure measure 17-40);
5. the face is sharp enough: variance of the Laplacian of the face scaled to
   100x100 >= ``min_sharpness`` (sharp photos measure 23-2000; blurred with a
   Gaussian of sigma about 4% of the face width they measure 3-16).

An accepted photo still gets a *warning* when its descriptor is nearer than
``duplicate_distance`` to another enrolled person (a look-alike, or the same
person under two ids), or far (> 0.6) from the person's other photos.
"""

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from typing import NamedTuple, Optional

import cv2
import numpy as np
import peewee as pw

from bytelocker.errors import EnrolmentError, ImageError, StorageError
from central import clusters, registry, store
from central.db import database, erasure_lock
from central.store import Snapshot, StoredEvent
from edge.detect import Box, FaceDetector
from edge.images import IMAGE_SUFFIXES, as_rgb, list_images, load_rgb
from edge.match import Gallery

logger = logging.getLogger(__name__)

# HOG scores below this are mostly false detections (a flag, a patterned
# shirt); they are not counted as "another face" in the photo.
MIN_FACE_SCORE = 0.3
# A second face this wide (full-size pixels) makes a photo ambiguous: whose face is enrolled?
SECOND_FACE_MIN_PX = 40
# Further than this from the person's own other photos is suspicious: dlib's
# usual same-person bound.
SAME_PERSON_DISTANCE = 0.6
CROP_SIZE = 100


@dataclass
class PhotoCheck:
    """The verdict on one enrolment photo.  ``reason`` says why it was rejected."""

    source: str
    ok: bool = False
    reason: str = ""
    warnings: list = field(default_factory=list)
    face_px: int = 0
    sharpness: float = None
    brightness: float = None
    descriptor: np.ndarray = field(default=None, repr=False)

    def describe(self):
        """One line for staff: ``ok   photo.jpg: face 224 px, ...`` or ``REJECTED photo.jpg: ...``."""
        name = os.path.basename(self.source) or self.source
        if not self.ok:
            return f"REJECTED {name}: {self.reason}"
        line = (f"ok       {name}: face {self.face_px} px, brightness {self.brightness:.0f}, "
                f"sharpness {self.sharpness:.0f}")
        return line + "".join(f"\n         warning: {w}" for w in self.warnings)


def face_brightness_and_sharpness(image, box):
    """``(mean grey 0-255, variance of the Laplacian)`` of the face in ``box``, scaled to 100x100."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    crop = grey[max(0, box.top):box.bottom, max(0, box.left):box.right]
    crop = cv2.resize(crop, (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_AREA)
    return float(crop.mean()), float(cv2.Laplacian(crop, cv2.CV_64F).var())


class PhotoChecker:
    """Check enrolment photos and describe the face of the good ones.

    :param settings: the ``enrolment`` section of central.yaml
        (:class:`~config.central.EnrolmentSection`).
    :param describer: a :class:`~edge.describe.FaceDescriber` (loaded once, ~0.1 s per face).
    """

    def __init__(self, settings, describer, *, detector=None):
        self.settings = settings
        self.describer = describer
        # Upsample 0 on a <= 1024 px copy finds faces from ~75 px: the useful
        # ones.  Smaller faces are looked for only to say "too small".
        self.detector = detector or FaceDetector(model="hog", upsample=0, min_face_px=20)
        self._small_detector = FaceDetector(model="hog", upsample=1, min_face_px=20)
        # dlib's detectors crash the process (not raise) when two threads run
        # one at once, and the dashboard serves enrolments from several threads.
        self._busy = threading.Lock()

    def _faces(self, image):
        height, width = image.shape[:2]
        scale = min(1.0, self.settings.max_photo_px / float(max(height, width)))
        work = image if scale == 1.0 else cv2.resize(
            image, (max(1, int(width * scale)), max(1, int(height * scale))), interpolation=cv2.INTER_AREA)
        boxes = [b for b in self.detector.detect(work) if b.score >= MIN_FACE_SCORE]
        if len(boxes) <= 1:
            # The finer pass finds faces from ~40 px: a lone face too small for
            # the first pass, or a second, smaller person in an "only one face" photo.
            small = [b for b in self._small_detector.detect(work) if b.score >= MIN_FACE_SCORE]
            if not boxes:
                boxes = small
            else:
                boxes += [b for b in small if b.iou(boxes[0]) < 0.3 and b.width >= SECOND_FACE_MIN_PX * scale]
        inv = 1.0 / scale
        return [Box(int(b.left * inv), int(b.top * inv), int(b.right * inv), int(b.bottom * inv),
                    b.score).clipped(width, height) for b in boxes]

    def check_image(self, image, source="<image>"):
        """Check one RGB photo; the :class:`PhotoCheck` has the descriptor if it passed.

        Safe to call from several threads: one photo is checked at a time.
        """
        with self._busy:
            return self._check_image(image, source)

    def _check_image(self, image, source):
        s = self.settings
        check = PhotoCheck(source)
        try:
            image = as_rgb(image)
        except ImageError as exc:
            check.reason = str(exc).rstrip(".")
            return check
        faces = self._faces(image)
        if not faces:
            mean = float(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).mean())
            hint = f" (the photo is very dark: brightness {mean:.0f})" if mean < s.min_brightness else ""
            check.reason = f"no face found{hint}; use a photo of the face from the front"
            return check
        if len(faces) > 1:
            check.reason = f"{len(faces)} faces found; use a photo with only the person being enrolled"
            return check
        box = faces[0]
        check.face_px = box.width
        check.brightness, check.sharpness = face_brightness_and_sharpness(image, box)
        if box.width < s.min_face_px:
            check.reason = (f"the face is only {box.width} px wide, at least {s.min_face_px} px needed; "
                            "use a closer or larger photo")
        elif check.brightness < s.min_brightness:
            check.reason = (f"too dark: face brightness {check.brightness:.0f}, at least "
                            f"{s.min_brightness:.0f} needed; use a better-lit photo")
        elif check.sharpness < s.min_sharpness:
            check.reason = (f"too blurred: face sharpness {check.sharpness:.0f}, at least "
                            f"{s.min_sharpness:.0f} needed; use a sharper photo")
        else:
            check.ok = True
            check.descriptor = self.describer.describe(image, [box])[0]
        return check

    def check_file(self, path):
        """Check the photo at ``path``; a corrupt or unreadable file is a rejection, not an error."""
        try:
            image = load_rgb(path)
        except ImageError as exc:
            # The file's own name: an upload's temporary folder means nothing to staff.
            reason = str(exc).rstrip(".").replace(os.fspath(path), os.path.basename(os.fspath(path)))
            return PhotoCheck(os.fspath(path), reason=reason)
        return self.check_image(image, os.fspath(path))


def photo_paths(paths):
    """Expand files and folders (their image files, sorted) into one list of paths."""
    out = []
    for path in paths:
        path = os.fspath(path)
        if os.path.isdir(path):
            found = list_images(path)
            if not found:
                raise EnrolmentError(f"The folder {path} holds no photos ({', '.join(IMAGE_SUFFIXES)}).")
            out.extend(found)
        else:
            out.append(path)
    return out


def warn_about_likeness(checks, person_id, duplicate_distance):
    """Add warnings to accepted ``checks`` that look like another person or unlike this one."""
    others = {k: v for k, v in registry.descriptors_by_person().items() if k != person_id}
    gallery = Gallery.from_people(others)
    own = list(registry.descriptors_of(person_id))
    for check in checks:
        if not check.ok:
            continue
        if gallery.size:
            dists = gallery.person_distances(check.descriptor)[0]
            nearest = int(np.argmin(dists))
            if dists[nearest] < duplicate_distance:
                check.warnings.append(
                    f"looks like enrolled person {gallery.people[nearest]!r} (distance {dists[nearest]:.2f}, "
                    f"below {duplicate_distance:.2f}); check this is not the same person under two ids")
        if own:
            far = float(np.min(np.linalg.norm(np.asarray(own) - check.descriptor, axis=1)))
            if far > SAME_PERSON_DISTANCE:
                check.warnings.append(
                    f"does not look like the other photos of {person_id!r} (distance {far:.2f})")
        own.append(check.descriptor)


@dataclass
class EnrolmentResult:
    """What an enrolment did: the per-photo checks and the change version (None if nothing enrolled)."""

    person_id: str
    checks: list
    version: int = None
    added: int = 0

    @property
    def rejected(self):
        return [c for c in self.checks if not c.ok]


def enrol_photos(person_id, sources, checker, *, name=None, groups=None, doors=None, valid_from=None,
                 valid_until=None, reinstate=False, replace_doors=False, progress=None):
    """Check every photo in ``sources`` (paths, or ``(label, rgb_array)`` pairs) and enrol the good ones.

    Returns an :class:`EnrolmentResult`; raises :class:`EnrolmentError` (listing
    every photo's reason) if no photo passed.  ``progress`` wraps the iteration (tqdm).
    """
    checks = []
    iterable = progress(sources) if progress else sources
    for source in iterable:
        if isinstance(source, tuple):
            check = checker.check_image(source[1], source[0])
        else:
            check = checker.check_file(source)
        logger.info("%s", check.describe().split("\n")[0])
        checks.append(check)
    warn_about_likeness(checks, person_id, checker.settings.duplicate_distance)
    good = [c for c in checks if c.ok]
    result = EnrolmentResult(person_id, checks)
    if not good:
        raise EnrolmentError(
            f"No photo of {person_id!r} passed the quality checks: "
            + "; ".join(f"{os.path.basename(c.source)}: {c.reason}" for c in checks)
        )
    result.version = registry.enrol(
        person_id, [c.descriptor for c in good], name=name, sources=[os.path.basename(c.source) for c in good],
        groups=groups, doors=doors, valid_from=valid_from, valid_until=valid_until, reinstate=reinstate,
        replace_doors=replace_doors)
    result.added = len(good)
    return result


class Erasure(NamedTuple):
    """What :func:`forget_everywhere` erased."""

    version: Optional[int]
    """The removal change that erases the person on the doors; None if they were no longer enrolled."""
    events: int
    """Event rows that named the person and no longer do."""
    snapshots: int
    """Snapshot files deleted."""
    sightings: int
    """Stranger sightings (face descriptors) deleted: the person's unrecognised appearances."""


def forget_everywhere(person_id, snapshot_dir=None, *, threshold=None):
    """Privacy erasure of ``person_id`` at central; returns an :class:`Erasure`.

    In one transaction:

    - the stranger sightings within ``threshold`` of any of the person's
      enrolled descriptors (default :data:`central.clusters.DEFAULT_THRESHOLD`;
      give ``alerts.stranger_threshold``) are deleted, with their crops: these
      are the person's unidentified appearances;
    - the crops of the events that name them (``person_id``, or an ambiguous
      face's ``nearest``) are deleted, files first;
    - identity and descriptors leave the registry, and a signed removal reaches
      every door;
    - every event names them no more, and their id is kept (hashed) so that
      events arriving later from an offline door are stored anonymised too.

    Forgetting an id that is no longer enrolled (forgotten already) still
    scrubs events and snapshots; its sightings cannot be found any more.
    Snapshot paths are stored already joined with ``storage.snapshot_dir``, so
    ``snapshot_dir`` is not needed (kept for callers).  Raises
    :class:`StorageError` when a file cannot be deleted (a missing one is
    fine); nothing is erased from the database then.
    """
    threshold = clusters.DEFAULT_THRESHOLD if threshold is None else threshold
    # The command line may have opened the database before these tables' modules were imported.
    database.create_tables([clusters.StrangerCluster, clusters.Sighting, registry.ForgottenPerson,
                            store.EventNearest], safe=True)
    if isinstance(database.obj, pw.SqliteDatabase):
        # Overwrite deleted rows instead of leaving the faces in free pages.
        database.execute_sql("PRAGMA secure_delete = ON")
    with registry.write_transaction():
        erasure_lock(exclusive=True)
        enrolled = registry.Person.get_or_none(registry.Person.person_id == person_id) is not None
        near = clusters.sightings_near(registry.descriptors_of(person_id), threshold)
        theirs, nearest, legacy = _events_naming(person_id)
        event_ids = sorted({e for e, _ in near + theirs + nearest} | {e for e, _, _ in legacy})
        paths = {p for _, p in near + theirs + nearest if p} | {p for _, p, _ in legacy if p}
        for ids in _chunks(event_ids):
            paths.update(p for (p,) in Snapshot.select(Snapshot.path).where(Snapshot.event_id.in_(ids)).tuples())
        # Files before rows, as retention does: a failure leaves a row pointing
        # to a missing file (the next forget finishes), never a face on disk
        # that nothing points to.
        deleted = _delete_snapshot_files(paths, person_id)
        for ids in _chunks(event_ids):
            Snapshot.delete().where(Snapshot.event_id.in_(ids)).execute()
            StoredEvent.update(snapshot_path=None).where(StoredEvent.event_id.in_(ids)).execute()
        sightings = 0
        for ids in _chunks([e for e, _ in near]):
            sightings += clusters.purge_sightings(clusters.Sighting.event_id.in_(ids))
        store.EventNearest.delete().where(store.EventNearest.person_id == person_id).execute()
        for event_id, _, details in legacy:
            del details["nearest"]
            (StoredEvent.update(details_json=json.dumps(details, separators=(",", ":"), default=str))
             .where(StoredEvent.event_id == event_id).execute())
        version = registry.forget(person_id) if enrolled else None
        changed = registry.anonymise_person_rows(person_id)
        registry.mark_forgotten(person_id)
    return Erasure(version, sum(changed.values()) + len(nearest) + len(legacy), deleted, sightings)


def _chunks(items, size=500):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _events_naming(person_id):
    """The events naming ``person_id``, as ``(theirs, nearest, legacy)``.

    ``theirs`` and ``nearest`` are ``[(event_id, snapshot_path)]``: the events
    of the person, and the ambiguous faces nearest to them
    (:class:`central.store.EventNearest`).  ``legacy`` is
    ``[(event_id, snapshot_path, details)]``: events stored before ``nearest``
    left ``details``, which still name the person there.
    """
    theirs = list(StoredEvent.select(StoredEvent.event_id, StoredEvent.snapshot_path)
                  .where(StoredEvent.person_id == person_id).tuples())
    nearest = list(StoredEvent.select(StoredEvent.event_id, StoredEvent.snapshot_path)
                   .join(store.EventNearest, on=(store.EventNearest.event == StoredEvent.event_id))
                   .where(store.EventNearest.person_id == person_id).tuples())
    legacy = []
    # LIKE narrows the scan (its wildcards in an id only widen it); the JSON decides.
    needle = '"nearest":' + json.dumps(person_id)
    query = (StoredEvent.select(StoredEvent.event_id, StoredEvent.snapshot_path, StoredEvent.details_json)
             .where(StoredEvent.details_json.contains(needle)).tuples())
    for event_id, path, details_json in query:
        try:
            details = json.loads(details_json or "{}")
        except ValueError:
            continue
        if isinstance(details, dict) and details.get("nearest") == person_id:
            legacy.append((event_id, path, details))
    return theirs, nearest, legacy


def _delete_snapshot_files(paths, person_id):
    deleted = 0
    for path in sorted(paths):
        try:
            os.remove(path)
            deleted += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StorageError(
                f"Cannot delete the snapshot {path} while forgetting {person_id!r}: {exc.strerror or exc}. "
                "Nothing was erased from the database; fix that and run forget again.") from exc
    return deleted
