"""1:N matching: ``match(descriptors, gallery, ...) -> list[Match]``.

The gallery is one contiguous float32 matrix of every enrolled descriptor,
sorted by person, so all distances for a batch of probes are one matrix
product and the per-person minimum is one ``np.minimum.reduceat``.
"""

from dataclasses import dataclass, field

import numpy as np

MATCH = "match"
UNKNOWN = "unknown"
AMBIGUOUS = "ambiguous"


@dataclass(frozen=True)
class Match:
    """The result of matching one probe descriptor.

    ``status`` is ``"match"`` (``person`` is set), ``"unknown"`` or
    ``"ambiguous"`` (the nearest and second-nearest *other* person are within
    the margin of each other).  ``distance`` is the Euclidean distance to the
    nearest person's nearest descriptor; ``second_distance`` to the next
    person's (``inf`` if there is none).
    """

    status: str
    person: object = None
    distance: float = float("inf")
    second_distance: float = float("inf")
    nearest: object = None


@dataclass
class Gallery:
    """Enrolled descriptors as one contiguous ``(N, 128)`` float32 matrix.

    Rows are grouped by person: ``people[i]`` owns rows
    ``starts[i]:starts[i+1]``.  Build it with :meth:`from_people`.
    """

    matrix: np.ndarray
    people: list
    starts: np.ndarray
    sq_norms: np.ndarray = field(repr=False, default=None)

    def __post_init__(self):
        self.matrix = np.ascontiguousarray(self.matrix, dtype=np.float32).reshape(-1, 128)
        self.starts = np.asarray(self.starts, dtype=np.int64)
        self.sq_norms = np.einsum("ij,ij->i", self.matrix, self.matrix)

    @classmethod
    def from_people(cls, descriptors_by_person):
        """Build from ``{person_id: [descriptor, ...]}``; people with none are skipped."""
        people, blocks, starts, row = [], [], [], 0
        for person, descs in descriptors_by_person.items():
            descs = np.asarray(descs, dtype=np.float32).reshape(-1, 128)
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
        probes = np.asarray(descriptors, dtype=np.float32).reshape(-1, 128)
        if self.size == 0:
            return np.zeros((len(probes), 0), np.float32)
        sq = (np.einsum("ij,ij->i", probes, probes)[:, None] + self.sq_norms[None, :]
              - 2.0 * (probes @ self.matrix.T))
        per_row = np.sqrt(np.maximum(sq, 0.0, out=sq), out=sq)
        return np.minimum.reduceat(per_row, self.starts, axis=1)


def match(descriptors, gallery, *, threshold=0.6, margin=0.0):
    """Match each probe descriptor against ``gallery``.

    :param threshold: Euclidean distance; lower is stricter.  0.6 is dlib's
        LFW verification threshold and far too loose for a door with many
        enrolled people; see the README's trade-off table.
    :param margin: the nearest person must be at least this much nearer than
        the second-nearest *other* person, else the result is ambiguous.
    """
    dists = gallery.person_distances(descriptors)
    results = []
    for row in dists:
        if row.size == 0:
            results.append(Match(UNKNOWN))
            continue
        order = np.argsort(row)[:2]
        best = float(row[order[0]])
        second = float(row[order[1]]) if row.size > 1 else float("inf")
        person = gallery.people[order[0]]
        if best > threshold:
            results.append(Match(UNKNOWN, None, best, second, person))
        elif second - best < margin:
            results.append(Match(AMBIGUOUS, None, best, second, person))
        else:
            results.append(Match(MATCH, person, best, second, person))
    return results
