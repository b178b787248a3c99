"""Measured accuracy: ``bytelocker eval pairs`` and ``bytelocker eval gallery``.

Both commands describe every photo of a labelled folder (``DIR/<Name>/*.jpg``)
once, through the door's own detector and describer, and keep the
descriptors in an on-disk cache so a re-run costs seconds, not minutes:

* ``eval pairs`` runs the LFW View-2 verification protocol (is this pair the
  same person?) and reports the 10-fold accuracy and the error rates at the
  configured threshold.
* ``eval gallery`` asks the door's real question, open-set 1:N: enrol some
  people, then show the door the other photos of those people *and* photos of
  people it has never seen, and count strangers let in (FAR), people taken
  for someone else (misidentification) and people turned away (FRR).  It
  uses :func:`edge.match.match` with the same settings as the door.

The descriptor cache is one SQLite file, ``descriptors.sqlite``, in
``$BYTELOCKER_CACHE_DIR``, else ``$XDG_CACHE_HOME/bytelocker``, else
``~/.cache/bytelocker``.  A row is reused only while the image's absolute
path, size and modification time, and the describe settings (engine,
augmentation, detector, upsampling, fallback box, minimum face size, model
folder) are unchanged.
"""

import json
import logging
import multiprocessing
import os
import random
import sqlite3
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

from bytelocker.errors import DatasetError, ImageError, StorageError
from edge.images import IMAGE_SUFFIXES, load_rgb

logger = logging.getLogger(__name__)

# Where the face usually is in an LFW deep-funneled 250x250 image, as fractions
# of width/height: the median dlib HOG box over a random sample of lfw-dev
# (77, 89, 182, 190 px).  Used only when HOG finds no face even upsampled,
# because those images are aligned and the face is known to be there.
CENTRAL_BOX = (0.31, 0.36, 0.73, 0.76)

DETECTED = "detected"
UPSAMPLED = "upsampled"
CENTRAL = "central"
FAILED = "failed"

CACHE_FILE = "descriptors.sqlite"


def cache_dir():
    """The folder of the descriptor cache (created on first use).

    ``$BYTELOCKER_CACHE_DIR`` wins, then ``$XDG_CACHE_HOME/bytelocker``, then
    ``~/.cache/bytelocker``.
    """
    override = os.environ.get("BYTELOCKER_CACHE_DIR")
    if override:
        return override
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bytelocker")


@dataclass(frozen=True)
class DescribeSettings:
    """How evaluation photos are turned into descriptors.

    Photos are searched with the HOG/CNN detector at full resolution with
    ``upsample`` passes, then, if no face was found, ``fallback_upsample``
    passes; if there is still none and ``central_fallback`` is set, the
    :data:`CENTRAL_BOX` is described (right for aligned sets such as LFW,
    wrong for arbitrary photos).  When several faces are found the one
    nearest the image centre is used: in LFW the named person is the
    central face.

    ``engine`` and ``augment`` are ``recognition.engine`` and
    ``recognition.augment``: photos are described as the door describes faces.
    """

    detector: str = "hog"
    upsample: int = 0
    fallback_upsample: int = 1
    central_fallback: bool = True
    min_face_px: int = 20
    engine: str = "fast"
    augment: str = "none"
    models_dir: Optional[str] = None

    def key(self):
        """A string that changes whenever a descriptor could change."""
        central = ",".join(f"{f:.3f}" for f in CENTRAL_BOX) if self.central_fallback else "none"
        # "none" adds nothing, so caches written before augmentation existed stay valid.
        augment = f";augment={self.augment}" if self.augment != "none" else ""
        return (f"v1;engine={self.engine};models={self.models_dir or 'package'};"
                f"detector={self.detector};upsample={self.upsample};"
                f"fallback_upsample={self.fallback_upsample};central={central};"
                f"min_face_px={self.min_face_px}{augment}")


@dataclass(frozen=True)
class ImageDescriptor:
    """One photo's descriptor (``None`` when the photo failed) and how it was found."""

    path: str
    vector: Optional[np.ndarray]
    how: str
    error: str = ""


class DescriptorCache:
    """Descriptors of evaluation photos in one SQLite file, safe to share.

    Several processes (or engineers) may read and write it at once: it uses
    WAL mode and a generous busy timeout, and only the parent process writes.
    """

    def __init__(self, folder=None):
        folder = folder or cache_dir()
        self.path = os.path.join(folder, CACHE_FILE)
        try:
            os.makedirs(folder, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS descriptors ("
                " path TEXT NOT NULL, settings TEXT NOT NULL, size INTEGER NOT NULL,"
                " mtime_ns INTEGER NOT NULL, how TEXT NOT NULL, error TEXT NOT NULL,"
                " vector BLOB, PRIMARY KEY (path, settings))"
            )
            self._db.commit()
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"Cannot open the descriptor cache {self.path}: {exc}.") from exc

    def lookup(self, stats, settings_key):
        """Return ``{path: ImageDescriptor}`` for the ``{path: (size, mtime_ns)}`` still valid."""
        found = {}
        rows = self._db.execute(
            "SELECT path, size, mtime_ns, how, error, vector FROM descriptors WHERE settings = ?",
            (settings_key,),
        )
        for path, size, mtime_ns, how, error, blob in rows:
            if stats.get(path) == (size, mtime_ns):
                vector = np.frombuffer(blob, dtype=np.float32).copy() if blob else None
                found[path] = ImageDescriptor(path, vector, how, error)
        return found

    def store(self, records, settings_key):
        """Save ``[(path, size, mtime_ns, how, error, vector_bytes)]`` in one transaction."""
        try:
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO descriptors (path, settings, size, mtime_ns, how, error, vector)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(p, settings_key, s, m, h, e, v) for p, s, m, h, e, v in records],
                )
        except sqlite3.Error as exc:
            raise StorageError(f"Cannot write the descriptor cache {self.path}: {exc}.") from exc

    def close(self):
        self._db.close()


class _PhotoDescriber:
    """Detector(s) and describer of one worker process, built once per process."""

    def __init__(self, settings):
        from edge.describe import FaceDescriber
        from edge.detect import FaceDetector
        from edge.fast_engine import make_engine

        common = dict(model=settings.detector, scale=1.0, min_face_px=settings.min_face_px,
                      models_dir=settings.models_dir)
        self.settings = settings
        self.first = FaceDetector(upsample=settings.upsample, **common)
        self.fallback = None
        if settings.fallback_upsample > settings.upsample:
            self.fallback = FaceDetector(upsample=settings.fallback_upsample, **common)
        # make_engine checks 'fast' against dlib once per worker and falls back
        # to dlib on a mismatch, as the door does; both give the same numbers.
        engine = make_engine(settings)
        self.describer = FaceDescriber(engine=engine, models_dir=settings.models_dir, augment=settings.augment)

    def __call__(self, job):
        path, size, mtime_ns = job
        try:
            return self._describe(path, size, mtime_ns)
        except ImageError as exc:
            return path, size, mtime_ns, FAILED, str(exc), None
        except (RuntimeError, ValueError, MemoryError) as exc:
            # dlib raises RuntimeError on odd images; one photo must not end a
            # run over thousands, so it is reported by name like a corrupt one.
            return path, size, mtime_ns, FAILED, f"Cannot describe {path}: {exc}.", None

    def _describe(self, path, size, mtime_ns):
        from edge.detect import Box

        frame = load_rgb(path)
        height, width = frame.shape[:2]
        how, boxes = DETECTED, self.first.detect(frame)
        if not boxes and self.fallback is not None:
            how, boxes = UPSAMPLED, self.fallback.detect(frame)
        if not boxes:
            if not self.settings.central_fallback:
                return path, size, mtime_ns, FAILED, f"No face found in {path}.", None
            fl, ft, fr, fb = CENTRAL_BOX
            how, boxes = CENTRAL, [Box(int(fl * width), int(ft * height), int(fr * width), int(fb * height))]
        cx, cy = width / 2.0, height / 2.0
        box = min(boxes, key=lambda b: ((b.left + b.right) / 2 - cx) ** 2 + ((b.top + b.bottom) / 2 - cy) ** 2)
        vector = self.describer.describe(frame, [box])[0]
        return path, size, mtime_ns, how, "", vector.astype(np.float32).tobytes()


_worker = None


def _init_worker(settings):
    global _worker
    _worker = _PhotoDescriber(settings)


def _describe_in_worker(job):
    return _worker(job)


def describe_photos(paths, *, settings=None, jobs=0, cache=None, progress=True):
    """Return ``{path: ImageDescriptor}`` for every photo in ``paths``.

    Cached descriptors are reused; the rest are computed in ``jobs`` worker
    processes (0: one per CPU core) and saved to ``cache`` as they arrive, so
    an interrupted run keeps its work.  A photo that cannot be read gets
    ``vector=None``, ``how="failed"`` and a one-sentence ``error``; it is
    never a traceback.

    :param cache: a :class:`DescriptorCache`; ``None`` opens the default one,
        ``False`` disables caching.
    :param progress: show a tqdm bar on stderr.
    """
    settings = settings or DescribeSettings()
    key = settings.key()
    paths = [os.path.abspath(p) for p in paths]
    stats = {}
    results = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError as exc:
            results[path] = ImageDescriptor(path, None, FAILED, f"Cannot read image {path}: {exc.strerror or exc}.")
            continue
        stats[path] = (st.st_size, st.st_mtime_ns)
    own_cache = cache is None
    if own_cache:
        cache = DescriptorCache()
    try:
        if cache:
            results.update(cache.lookup(stats, key))
        todo = [(p, *stats[p]) for p in stats if p not in results]
        if todo:
            logger.info("describing %s photos (%s already cached)", len(todo), len(stats) - len(todo))
            _compute(todo, settings, key, jobs, cache, results, progress)
    finally:
        if own_cache:
            cache.close()
    return results


def _compute(todo, settings, key, jobs, cache, results, progress):
    from tqdm import tqdm

    from edge.describe import AUGMENTS
    from edge.models import model_paths

    # Checked here, not only in the workers: a pool whose initializer raises
    # restarts it forever instead of reporting the error.
    if settings.engine not in ("dlib", "fast"):
        raise DatasetError(f"Unknown descriptor engine {settings.engine!r}: use 'fast' or 'dlib'.")
    if settings.augment not in AUGMENTS:
        raise DatasetError(f"Unknown descriptor augmentation {settings.augment!r}: use one of {', '.join(AUGMENTS)}.")
    if settings.detector not in ("hog", "cnn"):
        raise DatasetError(f"Unknown face detector {settings.detector!r}: use 'hog' or 'cnn'.")
    model_paths(settings.models_dir)
    jobs = jobs or os.cpu_count() or 1
    jobs = max(1, min(jobs, len(todo)))
    pending = []
    bar = tqdm(total=len(todo), desc="describing photos", unit="photo", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)

    def collect(record):
        path, _size, _mtime, how, error, blob = record
        vector = np.frombuffer(blob, dtype=np.float32).copy() if blob else None
        results[path] = ImageDescriptor(path, vector, how, error)
        pending.append(record)
        bar.update(1)
        if cache and len(pending) >= 200:
            cache.store(pending, key)
            pending.clear()

    try:
        if jobs == 1:
            worker = _PhotoDescriber(settings)
            for job in todo:
                collect(worker(job))
        else:
            # Each worker loads its own models once; chunks keep IPC small.
            with multiprocessing.get_context("fork").Pool(jobs, _init_worker, (settings,)) as pool:
                for record in pool.imap_unordered(_describe_in_worker, todo, chunksize=8):
                    collect(record)
    finally:
        bar.close()
        if cache and pending:
            cache.store(pending, key)


# --- labelled folders -------------------------------------------------------


def list_people(images_dir):
    """Return ``{name: [photo paths sorted]}`` for every ``images_dir/<name>/`` with photos."""
    if not os.path.isdir(images_dir):
        raise DatasetError(f"The image folder {images_dir} does not exist.")
    people = {}
    for name in sorted(os.listdir(images_dir)):
        folder = os.path.join(images_dir, name)
        if not os.path.isdir(folder):
            continue
        photos = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                        if f.lower().endswith(IMAGE_SUFFIXES))
        if photos:
            people[name] = photos
    if not people:
        raise DatasetError(f"The image folder {images_dir} has no <name>/<photo> subfolders.")
    return people


def lfw_photo_path(images_dir, name, number):
    """``images_dir/<name>/<name>_NNNN.jpg``, the LFW naming scheme."""
    return os.path.join(images_dir, name, f"{name}_{number:04d}.jpg")


# --- eval pairs -------------------------------------------------------------


@dataclass(frozen=True)
class Pair:
    """One line of an LFW pairs file: two photos and whether they show the same person."""

    fold: int
    name_a: str
    number_a: int
    name_b: str
    number_b: int
    same: bool


def _photo_number(text, path, line_no):
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number < 1:
        raise DatasetError(f"Pairs file {path} line {line_no}: {text!r} is not a photo number (1, 2, ...).")
    return number


def parse_pairs(path):
    """Read an LFW View-2 ``pairs.txt`` into a list of :class:`Pair`.

    The first line is ``<folds><TAB><n>``; then each fold has ``n`` lines
    ``name n1 n2`` (same person) and ``n`` lines ``name1 n1 name2 n2``
    (different people).  Raises :class:`DatasetError` naming the file and
    line of the first problem.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"Cannot read the pairs file {path}: {getattr(exc, 'strerror', None) or exc}.") from exc
    while lines and not lines[-1].strip():
        lines.pop()
    header = lines[0].split() if lines else []
    if len(header) != 2 or not all(h.isdigit() and int(h) > 0 for h in header):
        raise DatasetError(
            f"Pairs file {path} line 1 must be '<folds> <pairs per fold and kind>', e.g. '10\t300', "
            f"not {lines[0] if lines else ''!r}."
        )
    folds, per_kind = int(header[0]), int(header[1])
    expected = folds * 2 * per_kind
    if len(lines) - 1 != expected:
        raise DatasetError(
            f"Pairs file {path} promises {folds} folds of {2 * per_kind} pairs ({expected} lines) "
            f"but has {len(lines) - 1} pair lines."
        )
    pairs = []
    for index, line in enumerate(lines[1:]):
        line_no = index + 2
        fields = line.split()
        if len(fields) == 3:
            name, a, b = fields
            pair = Pair(index // (2 * per_kind), name, _photo_number(a, path, line_no),
                        name, _photo_number(b, path, line_no), True)
        elif len(fields) == 4:
            name_a, a, name_b, b = fields
            pair = Pair(index // (2 * per_kind), name_a, _photo_number(a, path, line_no),
                        name_b, _photo_number(b, path, line_no), False)
        else:
            raise DatasetError(
                f"Pairs file {path} line {line_no}: expected 'name n1 n2' or 'name1 n1 name2 n2', "
                f"got {line!r}."
            )
        pairs.append(pair)
    return pairs


def best_threshold(distances, same):
    """The distance threshold that classifies ``distances`` (same if ``<=``) most accurately.

    Returns ``(threshold, accuracy)``; the threshold is the midpoint of the
    winning gap between two sorted distances.
    """
    distances = np.asarray(distances, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    order = np.argsort(distances, kind="stable")
    d, s = distances[order], same[order]
    finite = np.isfinite(d)
    d_finite = d[finite]
    # Accepting the i smallest distances: right = same among them + different among the rest.
    same_below = np.concatenate([[0], np.cumsum(s)])
    diff_above = np.concatenate([[0], np.cumsum((~s)[::-1])])[::-1]
    correct = same_below + diff_above
    # Only cut between distinct values (and never past the infinite ones).
    cuts = np.arange(len(d) + 1)
    valid = (cuts == 0) | (cuts == len(d)) | np.concatenate([[True], d[1:] != d[:-1], [True]])
    valid &= cuts <= len(d_finite)
    i = int(np.argmax(np.where(valid, correct, -1)))
    if i == 0:
        threshold = float(d[0]) - 1e-6 if len(d) else 0.0
    elif i >= len(d_finite):
        threshold = float(d_finite[-1]) + 1e-6 if len(d_finite) else 0.0
    else:
        threshold = float(d[i - 1] + d[i]) / 2.0
    return threshold, correct[i] / max(1, len(d))


def ten_fold(distances, same, folds):
    """LFW protocol: per fold, pick the threshold on the other folds and test on it.

    Returns ``(fold_accuracies, fold_thresholds)`` as arrays.
    """
    distances = np.asarray(distances, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    folds = np.asarray(folds)
    accuracies, thresholds = [], []
    for fold in np.unique(folds):
        test = folds == fold
        threshold, _ = best_threshold(distances[~test], same[~test])
        predicted = distances[test] <= threshold
        accuracies.append(float(np.mean(predicted == same[test])))
        thresholds.append(threshold)
    return np.asarray(accuracies), np.asarray(thresholds)


def rates_at(distances, same, threshold):
    """``(accuracy, far, frr)`` of accepting pairs with distance ``<= threshold``."""
    distances = np.asarray(distances, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    accepted = distances <= threshold
    accuracy = float(np.mean(accepted == same))
    far = float(np.mean(accepted[~same])) if (~same).any() else 0.0
    frr = float(np.mean(~accepted[same])) if same.any() else 0.0
    return accuracy, far, frr


# --- eval gallery -----------------------------------------------------------


@dataclass
class GallerySplit:
    """Who is enrolled with which photos, and which photos probe the door.

    ``known_probes`` and ``unknown_probes`` are lists of ``(name, path)``.
    """

    enrolled: dict
    known_probes: list
    unknown_probes: list


def split_gallery(people, *, enroll_per_person, unknown_share=0.5, seed=0):
    """Split ``{name: [photos]}`` into enrolled people, known probes and stranger probes.

    Only people with more than ``enroll_per_person`` photos can be enrolled
    (someone must be left to probe with).  ``unknown_share`` of those are
    held out as strangers, as is everyone with too few photos; every photo of
    a stranger is a probe.  The split depends only on the names, photo paths
    and ``seed``.
    """
    if enroll_per_person < 1:
        raise DatasetError(f"--enroll-per-person must be at least 1, not {enroll_per_person}.")
    if not 0.0 <= unknown_share < 1.0:
        raise DatasetError(f"--unknown-share must be at least 0 and below 1, not {unknown_share}.")
    rng = random.Random(seed)
    eligible = sorted(name for name, photos in people.items() if len(photos) > enroll_per_person)
    rng.shuffle(eligible)
    held_out = int(round(unknown_share * len(eligible)))
    enrolled_names = sorted(eligible[held_out:])
    if not enrolled_names:
        raise DatasetError(
            f"No one can be enrolled: nobody has more than {enroll_per_person} photos "
            f"once {unknown_share:.0%} are held out as strangers."
        )
    enrolled, known = {}, []
    for name in enrolled_names:
        photos = sorted(people[name])
        rng.shuffle(photos)
        enrolled[name] = sorted(photos[:enroll_per_person])
        known.extend((name, p) for p in sorted(photos[enroll_per_person:]))
    chosen = set(enrolled_names)
    unknown = [(name, p) for name in sorted(people) if name not in chosen for p in people[name]]
    return GallerySplit(enrolled, known, unknown)


def gallery_report(split, descriptors, *, threshold, margin, cohort=None):
    """Match every probe of ``split`` the way the door does; return the rates.

    ``descriptors`` is ``{path: ImageDescriptor}``.  Photos without a
    descriptor are left out (counted in ``skipped``); an enrolled person whose
    enrolment photos all failed is treated as never enrolled.

    Rates are per probe photo: ``far`` is the share of stranger photos
    matched to anyone; ``misid`` the share of enrolled people's photos
    matched to someone else; ``frr`` the share of them not matched at all
    (unknown or ambiguous); ``rank1`` the share whose nearest enrolled person
    is right, whatever the threshold.
    """
    from edge.match import MATCH, Gallery, match

    def vector(path):
        record = descriptors.get(os.path.abspath(path))
        return None if record is None else record.vector

    enrolled = {}
    for name, photos in split.enrolled.items():
        vectors = [v for v in (vector(p) for p in photos) if v is not None]
        if vectors:
            enrolled[name] = vectors
    gallery = Gallery.from_people(enrolled)
    known, unknown, skipped = [], [], 0
    for name, path in split.known_probes + split.unknown_probes:
        v = vector(path)
        if v is None:
            skipped += 1
        elif name in enrolled:
            known.append((name, v))
        else:
            unknown.append((name, v))
    if not known or not unknown:
        raise DatasetError("The split left no photos of enrolled people or no photos of strangers to test with.")
    known_results = match(np.array([v for _, v in known]), gallery,
                          threshold=threshold, margin=margin, cohort=cohort)
    unknown_results = match(np.array([v for _, v in unknown]), gallery,
                            threshold=threshold, margin=margin, cohort=cohort)
    accepted_right = sum(r.status == MATCH and r.person == n for (n, _), r in zip(known, known_results))
    accepted_wrong = sum(r.status == MATCH and r.person != n for (n, _), r in zip(known, known_results))
    rank1 = sum(r.nearest == n for (n, _), r in zip(known, known_results))
    let_in = sum(r.status == MATCH for r in unknown_results)
    return {
        "far": let_in / len(unknown),
        "misid": accepted_wrong / len(known),
        "frr": (len(known) - accepted_right - accepted_wrong) / len(known),
        "rank1": rank1 / len(known),
        "probes_known": len(known),
        "probes_unknown": len(unknown),
        "enrolled_people": len(gallery),
        "threshold": threshold,
        "margin": margin,
        "cohort_faces": 0 if cohort is None else len(cohort),
        "skipped": skipped,
    }


def pairs_report(pairs, images_dir, descriptors, *, threshold):
    """Score LFW ``pairs`` with ``descriptors`` (``{path: ImageDescriptor}``).

    A pair with an unreadable photo gets an infinite distance, i.e. it is
    called "different", as the door would.  Returns a dict with the 10-fold
    accuracy (mean and standard deviation over folds), the mean chosen
    threshold, and accuracy/FAR/FRR at ``threshold``; ``distances`` and
    ``same`` are included for plotting.
    """
    distances = np.empty(len(pairs))
    for i, pair in enumerate(pairs):
        a = descriptors[os.path.abspath(lfw_photo_path(images_dir, pair.name_a, pair.number_a))].vector
        b = descriptors[os.path.abspath(lfw_photo_path(images_dir, pair.name_b, pair.number_b))].vector
        distances[i] = np.inf if a is None or b is None else float(np.linalg.norm(a - b))
    same = np.array([p.same for p in pairs])
    folds = np.array([p.fold for p in pairs])
    fold_acc, fold_thr = ten_fold(distances, same, folds)
    accuracy, far, frr = rates_at(distances, same, threshold)
    return {
        "accuracy_10fold": float(fold_acc.mean()),
        "accuracy_10fold_std": float(fold_acc.std()),
        "threshold_10fold_mean": float(fold_thr.mean()),
        "accuracy_at_threshold": accuracy,
        "far_at_threshold": far,
        "frr_at_threshold": frr,
        "threshold": threshold,
        "pairs": len(pairs),
        "distances": distances,
        "same": same,
    }


def pair_photo_paths(pairs, images_dir):
    """The distinct photo paths ``pairs`` use; raises :class:`DatasetError` for a missing one."""
    paths = sorted({lfw_photo_path(images_dir, p.name_a, p.number_a) for p in pairs}
                   | {lfw_photo_path(images_dir, p.name_b, p.number_b) for p in pairs})
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DatasetError(f"The pairs file names photos that are not in {images_dir}: {missing[0]}{more}.")
    return paths


def no_face_summary(records):
    """Count photos by how their face was found: ``{"no_face": n, "upsampled": .., ...}``.

    ``no_face`` is every photo in which the detector found nothing at its
    first setting; the other keys say what was done with them.
    """
    counts = {UPSAMPLED: 0, CENTRAL: 0, FAILED: 0}
    for record in records:
        if record.how in counts:
            counts[record.how] += 1
    return {"no_face": sum(counts.values()), "upsampled": counts[UPSAMPLED],
            "central_box": counts[CENTRAL], "unreadable": counts[FAILED]}


def plot_roc(distances, same, threshold, path):
    """Save the ROC curve (true accepts against false accepts) to ``path``."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise DatasetError(
            f"Cannot draw {path}: matplotlib is not installed (pip install 'bytelocker[plot]')."
        ) from exc
    finite = np.unique(distances[np.isfinite(distances)])
    grid = np.concatenate([[-np.inf], finite, [np.inf]])
    tar = np.array([np.mean(distances[same] <= t) for t in grid])
    far = np.array([np.mean(distances[~same] <= t) for t in grid])
    _, at_far, at_frr = rates_at(distances, same, threshold)
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.plot(far, tar, lw=1.5, label="dlib descriptors")
    ax.plot([at_far], [1 - at_frr], "o", label=f"threshold {threshold:.2f}")
    ax.set_xscale("symlog", linthresh=1e-3)
    ax.set_xlim(0, 1)
    ax.set_xlabel("false accept rate (different people accepted)")
    ax.set_ylabel("true accept rate (same person accepted)")
    ax.set_title("ROC on the pairs file")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    try:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    except OSError as exc:
        raise DatasetError(f"Cannot write the ROC plot {path}: {exc.strerror or exc}.") from exc
    finally:
        plt.close(fig)


# --- the commands ----------------------------------------------------------


def _settings_from_config(args):
    from config.loader import load_door_config

    config = load_door_config(getattr(args, "config", None))
    rec = config.recognition
    augment = getattr(args, "augment", None) or rec.augment
    settings = DescribeSettings(detector=config.detection.model, engine=rec.engine, augment=augment,
                                models_dir=rec.models_dir)
    return config, settings


def _warn_failed(records):
    for record in records:
        if record.how == FAILED:
            print(f"bytelocker: warning: skipped a photo: {record.error}", file=sys.stderr)


def cmd_pairs(args):
    """``bytelocker eval pairs``: the LFW View-2 verification protocol."""
    config, settings = _settings_from_config(args)
    threshold = config.recognition.threshold
    if args.plot and not os.path.isdir(os.path.dirname(os.path.abspath(args.plot))):
        # Said now, not after minutes of describing photos.
        raise DatasetError(f"Cannot save the ROC curve to {args.plot}: its folder does not exist.")
    pairs = parse_pairs(args.pairs)
    paths = pair_photo_paths(pairs, args.images)
    descriptors = describe_photos(paths, settings=settings, jobs=args.jobs)
    records = [descriptors[os.path.abspath(p)] for p in paths]
    _warn_failed(records)
    report = pairs_report(pairs, args.images, descriptors, threshold=threshold)
    faces = no_face_summary(records)
    if args.plot:
        plot_roc(report["distances"], report["same"], threshold, args.plot)
    del report["distances"], report["same"]
    report["photos"] = len(paths)
    report.update(faces, engine=settings.engine, augment=settings.augment)
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    print(f"LFW pairs: {report['pairs']} pairs of {len(paths)} photos in {len(set(p.fold for p in pairs))} folds "
          f"(engine {settings.engine}, augment {settings.augment})")
    print(f"10-fold accuracy:        {report['accuracy_10fold']:.2%} "
          f"(+/- {report['accuracy_10fold_std']:.2%}; threshold chosen on 9 folds, "
          f"mean {report['threshold_10fold_mean']:.3f})")
    print(f"At the door threshold {threshold:.2f}: accuracy {report['accuracy_at_threshold']:.2%}, "
          f"FAR {report['far_at_threshold']:.2%} (different people accepted), "
          f"FRR {report['frr_at_threshold']:.2%} (same person rejected)")
    print(f"Photos with no face found by {settings.detector.upper()} at upsample {settings.upsample}: "
          f"{faces['no_face']} -- {faces['upsampled']} found with upsample {settings.fallback_upsample}, "
          f"{faces['central_box']} described from the central face box of the aligned image, "
          f"{faces['unreadable']} unreadable (their pairs count as 'different')")
    if args.plot:
        print(f"ROC curve saved to {args.plot}")
    return 0


def cmd_gallery(args):
    """``bytelocker eval gallery``: the open-set 1:N door question."""
    from edge.match import load_cohort

    config, settings = _settings_from_config(args)
    rec = config.recognition
    people = list_people(args.images)
    split = split_gallery(people, enroll_per_person=args.enroll_per_person,
                          unknown_share=args.unknown_share, seed=args.seed)
    paths = [p for photos in people.values() for p in photos]
    descriptors = describe_photos(paths, settings=settings, jobs=args.jobs)
    _warn_failed(descriptors[os.path.abspath(p)] for p in paths)
    cohort = load_cohort(rec.cohort_file) if rec.cohort_file else None
    report = gallery_report(split, descriptors, threshold=rec.threshold, margin=rec.margin, cohort=cohort)
    report.update(seed=args.seed, enroll_per_person=args.enroll_per_person, unknown_share=args.unknown_share,
                  engine=settings.engine, augment=settings.augment)
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    print(f"Enrolled {report['enrolled_people']} people with {args.enroll_per_person} photo(s) each "
          f"(seed {args.seed}); engine {settings.engine}, augment {settings.augment}; "
          f"threshold {rec.threshold:.2f}, margin {rec.margin:.2f}"
          + (f", cohort of {report['cohort_faces']} faces" if cohort is not None else ""))
    print(f"Strangers:      {report['probes_unknown']} photos; FAR {report['far']:.2%} were let in as someone")
    print(f"Enrolled people: {report['probes_known']} other photos; "
          f"FRR {report['frr']:.2%} turned away, misidentification {report['misid']:.2%} "
          f"let in as someone else, rank-1 {report['rank1']:.2%}")
    if report["skipped"]:
        print(f"{report['skipped']} unreadable photos were left out")
    return 0
