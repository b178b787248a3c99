"""Following faces across frames and voting on who they are.

A face is followed from frame to frame by box overlap (IoU): each new box
continues an open track it overlaps by at least ``iou`` (the most recently
seen such track, then the one it overlaps most); otherwise it starts a new
track.  A track not seen for ``timeout_seconds`` (in the caller's clock) is
dropped.

Each undecided track keeps the match results of its last N described frames
(``window_frames``) and decides:

* ``granted`` as soon as K of those N frames (``votes_needed``) matched the
  *same* person.  One lucky frame never opens the door.
* ``unknown`` only after N frames in a row with no match at all, so a face
  turning towards the camera gets N chances before it is called a stranger.
* ``ambiguous`` after N frames with no match when most of them were
  ambiguous (too close to two enrolled people to tell apart), or when the
  track has used ``3 * N`` descriptors without settling either way; a human
  should look at the snapshot.

Ambiguous frames never count as a vote for anyone.

Boxes alone cannot tell two faces apart when one takes the other's place
(two people close together, or a stranger stepping into the spot someone
just left), so a track also checks that it still follows the same *face*:

* each descriptor is compared with the track's previous one; one further
  than :data:`SAME_FACE_DISTANCE` means another face, and the votes so far
  are cleared, so K votes always come from one face;
* a decided track is described again when it is picked up after a frame
  without it, and every :data:`IDENTITY_CHECK_SECONDS` while it stays in
  view (one descriptor, a few milliseconds); a different face restarts it
  as a new track with a new id, so a tailgater standing where a granted
  person stood gets their own decision, event and snapshot.

The descriptor (60-100 ms each with dlib-bin, a few ms with the ``fast``
engine) is the door's budget, so a decided track is
not described again: a granted face that stays in view costs only detection,
for as long as it is followed.  A track called unknown or ambiguous gets one
exception, ``retry_seconds``: a person often looks at the camera only after
the first frames (walking in, turning their head), so such a track gets a
fresh vote after ``retry_seconds``, then after twice that, four times... (the
budget of a stranger loitering at the door shrinks over time).  A fresh vote
is reported only if its verdict differs from the one already reported, so a
stranger yields one ``unknown``, not one per retry.  ``retry_seconds = 0``
turns retries off: every decision is final.
"""

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Optional

import cv2
import numpy as np

from edge.detect import Box
from edge.match import AMBIGUOUS, MATCH

logger = logging.getLogger(__name__)

GRANTED = "granted"
UNKNOWN = "unknown"
UNDECIDED_BUDGET_WINDOWS = 3
# Two descriptors of one face in consecutive frames are ~0.1-0.4 apart; 0.6
# is dlib's same-person verification threshold (on lfw-dev pairs only 0.5% of
# different people are nearer), so beyond it the track is following someone else.
SAME_FACE_DISTANCE = 0.6
IDENTITY_CHECK_SECONDS = 2.0
CROP_MAX_PX = 112
CROP_PADDING = 0.25


@dataclass
class Decision:
    """What the loop decided about one tracked face.

    ``decision`` is ``"granted"``, ``"unknown"`` or ``"ambiguous"``; ``person``
    is the granted person's id (None otherwise).  ``distance`` is the *median*
    Euclidean distance of the frames behind the decision: for a grant, the
    frames that agreed on the person; otherwise the distance to the nearest
    enrolled person over the window (``inf`` with an empty gallery).
    ``frames_used`` counts the descriptors the track consumed.  ``decide_ms``
    is the time from the track's first frame to this decision, and ``t`` the
    time of the deciding frame, both in the caller's clock (video time for
    files).  ``face_crop`` is a small RGB crop of the largest view of the face,
    for the unidentified-person snapshot.  For an ``ambiguous`` decision,
    ``nearest`` is the enrolled person the ambiguous frames were nearest to
    most often (for the audit log; it is not an identification).
    """

    track_id: int
    decision: str
    person: object
    distance: float
    frames_used: int
    decide_ms: float
    t: float
    box: Box
    face_crop: Optional[np.ndarray] = field(default=None, repr=False)
    nearest: object = None

    @property
    def granted(self):
        return self.decision == GRANTED


def face_crop(frame, box, *, padding=CROP_PADDING, max_px=CROP_MAX_PX):
    """Return a small RGB copy of the face in ``box``, with some margin around it."""
    height, width = frame.shape[:2]
    pad_x, pad_y = int(box.width * padding), int(box.height * padding)
    crop = frame[max(0, box.top - pad_y):min(height, box.bottom + pad_y),
                 max(0, box.left - pad_x):min(width, box.right + pad_x)]
    if crop.size == 0:
        return None
    scale = min(1.0, max_px / float(max(crop.shape[:2])))
    if scale < 1.0:
        crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), max(1, int(crop.shape[0] * scale))),
                          interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(crop)


class Track:
    """One face followed across frames, with its vote.

    ``decision`` is the last decision reported for this face (None until the
    first vote settles).  Call :meth:`wants_descriptor` before describing the
    face, and :meth:`vote` with each match result.
    """

    def __init__(self, track_id, box, t, *, votes_needed, window_frames, retry_seconds=0.0, new_id=None):
        self.track_id = track_id
        self._new_id = new_id
        self.box = box
        self.last_t = t
        self.frames_seen = 1
        self.votes_needed = votes_needed
        self.window_frames = window_frames
        self.retry_seconds = float(retry_seconds)
        self._votes = deque(maxlen=window_frames)
        self._start_face(t)
        self._last_descriptor = None
        self._check_at = float("inf")
        self.missed = False  # set by the Tracker: not seen in the previous frame

    @property
    def decided(self):
        """True once a decision has been reported for this face."""
        return self.decision is not None

    @property
    def granted(self):
        return self.decision is not None and self.decision.decision == GRANTED

    def __repr__(self):
        state = self.decision.decision if self.decision else f"{len(self._votes)} votes"
        return f"<Track {self.track_id} {state} seen {self.frames_seen}>"

    def _retry_due(self, t):
        return not self.granted and self.retry_seconds > 0 and t >= self._retry_at

    def _identity_check_due(self, t):
        return self.missed or t >= self._check_at

    def wants_descriptor(self, t):
        """True if the face should be described on the frame at ``t``."""
        if self._voting:
            return True
        return self._retry_due(t) or self._identity_check_due(t)

    def _same_face(self, descriptor):
        if descriptor is None or self._last_descriptor is None:
            return True
        return float(np.linalg.norm(np.asarray(descriptor) - self._last_descriptor)) <= SAME_FACE_DISTANCE

    def _remember(self, descriptor):
        if descriptor is not None:
            self._last_descriptor = np.array(descriptor, dtype=np.float32, copy=True)

    def _start_face(self, t):
        """Undecided, no votes: the state of a face first seen at ``t``."""
        self.first_t = t
        self.frames_described = 0
        self.decision = None
        self._voting = True
        self._votes.clear()
        self._attempt_frames = 0
        self._frames_without_match = 0
        self._retries = 0
        self._retry_at = float("inf")
        self._best_area = -1
        self._crop = None

    def _restart(self, t):
        """Another face has taken this track's box: follow it as a new, undecided track."""
        old = self.track_id
        if self._new_id is not None:
            self.track_id = self._new_id()
        logger.info("track %s now shows another face; following it as track %s", old, self.track_id)
        self._start_face(t)

    def vote(self, result, t, frame=None, descriptor=None):
        """Add one frame's :class:`~edge.match.Match`; return a new Decision or None.

        ``frame`` (the RGB frame the match came from) is used only to keep a
        crop of the largest view of the face; ``descriptor`` (the face's
        descriptor in that frame) tells whether the track still follows the
        same face.  Raises ValueError if the track did not want a descriptor
        at ``t`` (a caller bug that would waste the budget).
        """
        if not self._voting:
            if not self.wants_descriptor(t):
                raise ValueError(f"track {self.track_id} is decided; it must not be described at t={t}")
            self.missed = False
            self._check_at = t + IDENTITY_CHECK_SECONDS
            if not self._same_face(descriptor):
                self._restart(t)
            elif not self._retry_due(t):
                self._remember(descriptor)  # the same face, still decided: nothing to vote on
                return None
            self._voting = True
            self._votes.clear()
            self._attempt_frames = 0
            self._frames_without_match = 0
        if not self._same_face(descriptor):
            # Another face in this track's box: its votes must not add to the last face's.
            logger.debug("track %s: another face mid-vote; votes cleared", self.track_id)
            self._votes.clear()
            self._attempt_frames = 0
            self._frames_without_match = 0
        self._remember(descriptor)
        self.missed = False
        self.frames_described += 1
        self._attempt_frames += 1
        self._votes.append(result)
        if frame is not None and self.box.area > self._best_area:
            self._best_area = self.box.area
            self._crop = face_crop(frame, self.box)
        if result.status == MATCH:
            self._frames_without_match = 0
            agreeing = [v.distance for v in self._votes if v.status == MATCH and v.person == result.person]
            if len(agreeing) >= self.votes_needed:
                return self._settle(GRANTED, result.person, float(np.median(agreeing)), t)
        else:
            self._frames_without_match += 1
            if self._frames_without_match >= self.window_frames:
                recent = list(self._votes)
                ambiguous = sum(1 for v in recent if v.status == AMBIGUOUS)
                verdict = AMBIGUOUS if ambiguous * 2 > len(recent) else UNKNOWN
                return self._settle(verdict, None, self._median_distance(recent), t, self._nearest(recent))
        # A face that keeps half-matching must not burn descriptors forever.
        if self._attempt_frames >= UNDECIDED_BUDGET_WINDOWS * self.window_frames:
            recent = list(self._votes)
            return self._settle(AMBIGUOUS, None, self._median_distance(recent), t, self._nearest(recent))
        return None

    @staticmethod
    def _nearest(votes):
        names = [v.nearest for v in votes if v.status == AMBIGUOUS and v.nearest is not None]
        return Counter(names).most_common(1)[0][0] if names else None

    @staticmethod
    def _median_distance(votes):
        distances = [v.distance for v in votes if np.isfinite(v.distance)]
        return float(np.median(distances)) if distances else float("inf")

    def _settle(self, verdict, person, distance, t, nearest=None):
        self._voting = False
        self._votes.clear()
        self._check_at = t + IDENTITY_CHECK_SECONDS
        if verdict != GRANTED:
            self._retry_at = t + self.retry_seconds * (2 ** self._retries)
            self._retries += 1
        if self.decision is not None and self.decision.decision == verdict:
            logger.debug("track %s still %s after a retry", self.track_id, verdict)
            return None
        self.decision = Decision(
            track_id=self.track_id,
            decision=verdict,
            person=person,
            distance=distance,
            frames_used=self.frames_described,
            decide_ms=(t - self.first_t) * 1000.0,
            t=t,
            box=self.box,
            face_crop=self._crop,
            nearest=nearest if verdict == AMBIGUOUS else None,
        )
        logger.debug("track %s decided %s after %s frames", self.track_id, verdict, self.frames_described)
        return self.decision


class Tracker:
    """Follow faces across frames by box overlap.

    :param iou: minimum intersection-over-union that continues a track; lower
        follows fast movement at low frame rates but may swap two close faces.
    :param timeout_seconds: a track not seen for this long is dropped, in the
        caller's clock.
    :param votes_needed: K, frames that must agree on one person to grant.
    :param window_frames: N, the frames the vote looks back over; also the
        frames in a row with no match before a track is called unknown.
    :param retry_seconds: first wait before a track called unknown or
        ambiguous gets a fresh vote (doubling after each retry); 0 never retries.
    """

    def __init__(self, *, iou=0.3, timeout_seconds=2.0, votes_needed=3, window_frames=5, retry_seconds=0.0):
        if not 1 <= votes_needed <= window_frames:
            raise ValueError(
                f"votes_needed ({votes_needed}) must be between 1 and window_frames ({window_frames})"
            )
        self.iou = float(iou)
        self.timeout_seconds = float(timeout_seconds)
        self.votes_needed = int(votes_needed)
        self.window_frames = int(window_frames)
        self.retry_seconds = float(retry_seconds)
        self.tracks = []
        self._next_id = 1

    @classmethod
    def from_config(cls, decision):
        """Build from the ``decision`` section of door.yaml."""
        return cls(iou=decision.track_iou, timeout_seconds=decision.track_timeout_seconds,
                   votes_needed=decision.votes_needed, window_frames=decision.window_frames,
                   retry_seconds=decision.retry_seconds)

    def expire(self, t):
        """Drop tracks not seen for ``timeout_seconds`` before ``t``; return them."""
        kept, dropped = [], []
        for track in self.tracks:
            (dropped if t - track.last_t > self.timeout_seconds else kept).append(track)
        self.tracks = kept
        return dropped

    def update(self, boxes, t):
        """Assign this frame's ``boxes`` to tracks; return the track of each box, in order.

        Pairs overlapping by at least ``iou`` are taken greedily, most recently
        seen track first and then by decreasing overlap, so each track takes
        at most one box and each box continues at most one track.  Recency
        comes first so that a face walking onto the spot where someone else
        stood a second ago keeps its own track instead of inheriting the
        other person's (already made) decision.
        """
        self.expire(t)
        pairs = sorted(
            ((track.last_t, overlap, bi, ti)
             for bi, box in enumerate(boxes) for ti, track in enumerate(self.tracks)
             for overlap in (box.iou(track.box),) if overlap >= self.iou),
            reverse=True,
        )
        assigned = [None] * len(boxes)
        taken = set()
        for _, _, bi, ti in pairs:
            if assigned[bi] is not None or ti in taken:
                continue
            assigned[bi] = self.tracks[ti]
            taken.add(ti)
        for ti, track in enumerate(self.tracks):
            if ti not in taken:
                # Whoever continues it next may be someone else: a decided track checks.
                track.missed = True
        for bi, box in enumerate(boxes):
            track = assigned[bi]
            if track is None:
                track = Track(self._take_id(), box, t, votes_needed=self.votes_needed,
                              window_frames=self.window_frames, retry_seconds=self.retry_seconds,
                              new_id=self._take_id)
                self.tracks.append(track)
                assigned[bi] = track
            else:
                track.box = box
                track.last_t = t
                track.frames_seen += 1
        return assigned

    def _take_id(self):
        track_id = self._next_id
        self._next_id += 1
        return track_id

    @property
    def open_tracks(self):
        """Tracks still followed (decided or not)."""
        return list(self.tracks)
