"""1:N matching: ``match(descriptors, gallery, ...) -> list[Match]``.

The gallery is one contiguous float32 matrix of every enrolled descriptor,
sorted by person, so all distances for a batch of probes are one matrix
product and the per-person minimum is one ``np.minimum.reduceat``.

A face is matched to its nearest enrolled person only if

1. that person is within ``threshold`` (Euclidean distance), and
2. the *rival* -- the next other enrolled person, or the nearest face of the
   optional cohort of never-enrolled people -- is at least ``margin``
   further away.

The second test is what keeps strangers out of a large gallery: a stranger
is usually about equally near to several enrolled people, while a genuine
face is clearly nearest to its owner.  On held-out LFW with one photo
enrolled for each of ~460 people, ``threshold=0.50, margin=0.08`` let in
under 1% of strangers where ``threshold`` alone needed 0.44 and turned away
almost half of the enrolled people (docs/accuracy.md has the figures).
"""

import logging
import os
from dataclasses import dataclass, field

import numpy as np

from bytelocker.errors import StorageError

logger = logging.getLogger(__name__)

MATCH = "match"
UNKNOWN = "unknown"
AMBIGUOUS = "ambiguous"

# Chosen on lfw-dev with `bytelocker eval gallery --enroll-per-person 1`
# (6 seeds): FAR <= 0.83%, misidentification <= 0.19%, FRR <= 28%.
# config.recognition.RecognitionSection uses the same numbers.
DEFAULT_THRESHOLD = 0.50
DEFAULT_MARGIN = 0.08


@dataclass(frozen=True)
class Match:
    """The result of matching one probe descriptor.

    ``status`` is ``"match"`` (``person`` is set), ``"unknown"`` (no enrolled
    person within the threshold, or a cohort face is as near as the best
    person) or ``"ambiguous"`` (the nearest and second-nearest *other*
    enrolled person are within the margin of each other).  ``distance`` is
    the Euclidean distance to the nearest person's nearest descriptor;
    ``second_distance`` to the rival: the next person, or the nearest cohort
    face if that is nearer (``inf`` if there is neither).  ``nearest`` is the
    nearest person whatever the status.
    """

    status: str
    person: object = None
    distance: float = float("inf")
    second_distance: float = float("inf")
    nearest: object = None


def _as_descriptors(descriptors):
    return np.ascontiguousarray(descriptors, dtype=np.float32).reshape(-1, 128)


def _distances(probes, matrix, sq_norms):
    """``(len(probes), len(matrix))`` Euclidean distances as one matrix product."""
    sq = (np.einsum("ij,ij->i", probes, probes)[:, None] + sq_norms[None, :]
          - 2.0 * (probes @ matrix.T))
    return np.sqrt(np.maximum(sq, 0.0, out=sq), out=sq)


@dataclass
class Gallery:
    """Enrolled descriptors as one contiguous ``(N, 128)`` float32 matrix.

    Rows are grouped by person: ``people[i]`` owns rows
    ``starts[i]:starts[i+1]``.  Build it with :meth:`from_people`.  A person
    with several descriptors (photos) is as near as their nearest one.
    """

    matrix: np.ndarray
    people: list
    starts: np.ndarray
    sq_norms: np.ndarray = field(repr=False, default=None)

    def __post_init__(self):
        self.matrix = _as_descriptors(self.matrix)
        self.starts = np.asarray(self.starts, dtype=np.int64)
        self.sq_norms = np.einsum("ij,ij->i", self.matrix, self.matrix)

    @classmethod
    def from_people(cls, descriptors_by_person):
        """Build from ``{person_id: [descriptor, ...]}``; people with none are skipped."""
        people, blocks, starts, row = [], [], [], 0
        for person, descs in descriptors_by_person.items():
            descs = _as_descriptors(descs)
            if len(descs) == 0:
                continue
            people.append(person)
            starts.append(row)
            blocks.append(descs)
            row += len(descs)
        matrix = np.concatenate(blocks) if blocks else np.zeros((0, 128), np.float32)
        return cls(matrix, people, np.asarray(starts, dtype=np.int64))

    @classmethod
    def empty(cls):
        return cls.from_people({})

    def __len__(self):
        return len(self.people)

    @property
    def size(self):
        """Number of descriptor rows."""
        return self.matrix.shape[0]

    def person_distances(self, descriptors):
        """Return ``(n, len(people))`` distances: each person's nearest descriptor."""
        probes = _as_descriptors(descriptors)
        if self.size == 0:
            return np.zeros((len(probes), 0), np.float32)
        return np.minimum.reduceat(_distances(probes, self.matrix, self.sq_norms), self.starts, axis=1)


class Cohort:
    """Descriptors of people who are never enrolled, used only as rivals.

    A face that is as near to one of them as to its best enrolled match looks
    like "someone else", so :func:`match` does not let it in.  Never build a
    cohort from photos of people who will be enrolled or of the faces you
    test with; descriptors of past visitors or of a public face set are right.
    """

    def __init__(self, descriptors):
        self.matrix = _as_descriptors(descriptors)
        self.sq_norms = np.einsum("ij,ij->i", self.matrix, self.matrix)

    def __len__(self):
        return self.matrix.shape[0]

    def nearest(self, descriptors):
        """Distance from each probe to its nearest cohort face (``inf`` if empty)."""
        probes = _as_descriptors(descriptors)
        if len(self) == 0:
            return np.full(len(probes), np.inf, np.float32)
        return _distances(probes, self.matrix, self.sq_norms).min(axis=1)


def load_cohort(path):
    """Read a cohort ``.npy`` file of ``(N, 128)`` descriptors into a :class:`Cohort`.

    Raises :class:`~bytelocker.errors.StorageError` naming the file when it is
    missing, unreadable or of the wrong shape.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StorageError(f"Cannot read the cohort file {path}: {exc}.") from exc
    if array.ndim != 2 or array.shape[1] != 128 or not np.all(np.isfinite(array)):
        raise StorageError(
            f"The cohort file {path} must hold an (N, 128) array of finite descriptors, "
            f"not shape {array.shape}."
        )
    logger.info("loaded a cohort of %s faces from %s", array.shape[0], os.path.basename(path))
    return Cohort(array)


def match(descriptors, gallery, *, threshold=DEFAULT_THRESHOLD, margin=DEFAULT_MARGIN, cohort=None):
    """Match each probe descriptor against ``gallery``; return one :class:`Match` each.

    :param threshold: Euclidean distance; lower is stricter.  0.6 is dlib's
        LFW *verification* threshold (one pair, one question) and far too loose
        for a door that compares every face with many people: it let 81% of
        strangers in on held-out LFW.  0.50 with the default margin kept FAR
        under 1% with ~460 people enrolled; 0.45-0.48 is stricter still.
    :param margin: distance by which the nearest person must beat the rival
        (the next other enrolled person, or the nearest cohort face); else
        the result is ``ambiguous`` (or ``unknown`` when the rival is a
        cohort face).  0 disables the test; 0.08 is the default; larger
        keeps more strangers out and turns more staff away.
    :param cohort: an optional :class:`Cohort` (or ``(M, 128)`` array) of
        never-enrolled faces that compete as rivals; it makes the door
        stricter in a small gallery, where few enrolled rivals exist.
    """
    probes = _as_descriptors(descriptors)
    dists = gallery.person_distances(probes)
    if cohort is not None and not isinstance(cohort, Cohort):
        cohort = Cohort(cohort)
    cohort_nearest = cohort.nearest(probes) if cohort is not None else None
    results = []
    for i, row in enumerate(dists):
        if row.size == 0:
            results.append(Match(UNKNOWN))
            continue
        if row.size > 2:
            top = np.argpartition(row, 1)[:2]
            order = top[np.argsort(row[top])]
        else:
            order = np.argsort(row)
        best = float(row[order[0]])
        second = float(row[order[1]]) if row.size > 1 else float("inf")
        rival_is_cohort = False
        if cohort_nearest is not None and float(cohort_nearest[i]) < second:
            second, rival_is_cohort = float(cohort_nearest[i]), True
        person = gallery.people[order[0]]
        # Written to fail closed: a NaN distance (a numeric fault in a
        # descriptor engine) passes neither test, so it is never a match.
        if not best <= threshold:
            results.append(Match(UNKNOWN, None, best, second, person))
        elif not second - best >= margin:
            results.append(Match(UNKNOWN if rival_is_cohort else AMBIGUOUS, None, best, second, person))
        else:
            results.append(Match(MATCH, person, best, second, person))
    return results
