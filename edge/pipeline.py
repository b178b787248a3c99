"""The recognition loop: frames in, door decisions out.

``RecognitionLoop.process(frame, t)`` runs, for one RGB frame taken at time
``t`` (seconds, in the caller's clock):

1. the motion gate: with no face being tracked and a static view, stop here;
2. detection: faces as boxes;
3. tracking: each box continues a track or starts one (:mod:`edge.track`);
4. description, only of tracks whose vote is open, in one batch;
5. 1:N matching against the gallery with the recognition threshold and margin;
6. the K-of-N vote of each described track; settled votes are returned.

The gallery can be swapped at any time from another thread with
:meth:`RecognitionLoop.set_gallery`; each frame uses the gallery that was in
place when its matching started, so a frame never sees half an update.
"""

import logging
import threading
import time
from collections import deque

from edge.match import Gallery, load_cohort, match
from edge.motion import MotionGate
from edge.track import Decision, Tracker

logger = logging.getLogger(__name__)

__all__ = ["Decision", "RecognitionLoop", "build_loop"]

FPS_WINDOW_SECONDS = 5.0


class RecognitionLoop:
    """Turn frames into door decisions.

    :param detector: an :class:`edge.detect.FaceDetector` (or anything with
        ``detect(frame) -> list[Box]``).
    :param describer: an :class:`edge.describe.FaceDescriber` (or anything with
        ``describe(frame, boxes) -> ndarray[n, 128]``).
    :param gallery: the enrolled :class:`edge.match.Gallery`; None means empty.
    :param recognition: the ``recognition`` config section (threshold, margin,
        optional cohort file).
    :param decision: the ``decision`` config section (K, N, tracking).
    :param detection: the ``detection`` config section (motion threshold).

    ``process`` is meant to be called from one thread; ``set_gallery`` and
    ``stats`` may be called from any thread.
    """

    def __init__(self, detector, describer, gallery=None, *, recognition, decision, detection):
        self.detector = detector
        self.describer = describer
        self.threshold = float(recognition.threshold)
        self.margin = float(recognition.margin)
        cohort_file = getattr(recognition, "cohort_file", None)
        self.cohort = load_cohort(cohort_file) if cohort_file else None
        self.tracker = Tracker.from_config(decision)
        self.gate = MotionGate(detection.motion_threshold)
        self._gallery = gallery if gallery is not None else Gallery.empty()
        self._lock = threading.Lock()
        self._frames = 0
        self._skipped = 0
        self._detected = 0
        self._described = 0
        self._decisions = 0
        self._busy = 0.0
        self._recent_t = deque()

    @property
    def gallery(self):
        """The gallery the next frame will be matched against."""
        return self._gallery

    def set_gallery(self, gallery):
        """Swap in a new enrolled gallery without stopping the loop.

        Tracks already decided keep their decision; undecided tracks are
        matched against the new gallery from the next frame on.
        """
        if not isinstance(gallery, Gallery):
            raise TypeError(f"set_gallery needs an edge.match.Gallery, not {type(gallery).__name__}")
        # One reference assignment: a frame in progress keeps the gallery it took.
        self._gallery = gallery
        logger.info("gallery swapped: %s people, %s descriptors", len(gallery), gallery.size)

    def process(self, frame, t):
        """Handle one RGB ``frame`` taken at ``t`` seconds; return the decisions made on it."""
        started = time.perf_counter()
        try:
            return self._process(frame, float(t))
        finally:
            with self._lock:
                self._frames += 1
                self._busy += time.perf_counter() - started
                self._recent_t.append(float(t))
                while self._recent_t and self._recent_t[0] < t - FPS_WINDOW_SECONDS:
                    self._recent_t.popleft()

    def _process(self, frame, t):
        self.tracker.expire(t)
        if not self.gate.should_detect(frame, force=bool(self.tracker.tracks)):
            self._skipped += 1
            return []
        self._detected += 1
        boxes = self.detector.detect(frame)
        tracks = self.tracker.update(boxes, t)
        todo = [track for track in tracks if track.wants_descriptor(t)]
        if not todo:
            return []
        descriptors = self.describer.describe(frame, [track.box for track in todo])
        self._described += len(todo)
        gallery = self._gallery
        results = match(descriptors, gallery, threshold=self.threshold, margin=self.margin, cohort=self.cohort)
        decisions = []
        for track, result, descriptor in zip(todo, results, descriptors):
            made = track.vote(result, t, frame, descriptor)
            if made is not None:
                decisions.append(made)
                # No person id: journald keeps logs past 'bytelocker forget'; the event has it.
                logger.info("track %s: %s (distance %.3f, %s frames, %.0f ms)",
                            made.track_id, made.decision, made.distance, made.frames_used, made.decide_ms)
        self._decisions += len(decisions)
        return decisions

    def stats(self):
        """Return the loop's counters as a JSON-ready dict.

        ``frames``, ``frames_skipped`` (by the motion gate), ``frames_detected``,
        ``faces_described``, ``decisions``, ``open_tracks``, ``gallery_people``;
        ``fps`` is frames handled per second of the caller's clock over the
        last few seconds (what the camera delivers and the loop keeps up with),
        ``ms_per_frame`` the mean wall-clock cost of :meth:`process`.
        """
        with self._lock:
            span = self._recent_t[-1] - self._recent_t[0] if len(self._recent_t) > 1 else 0.0
            return {
                "frames": self._frames,
                "frames_skipped": self._skipped,
                "frames_detected": self._detected,
                "faces_described": self._described,
                "decisions": self._decisions,
                "open_tracks": len(self.tracker.tracks),
                "gallery_people": len(self._gallery),
                "fps": round((len(self._recent_t) - 1) / span, 2) if span > 0 else 0.0,
                "ms_per_frame": round(1000.0 * self._busy / self._frames, 2) if self._frames else 0.0,
            }


def build_loop(config, gallery=None, *, engine_cache_dir=None):
    """Build a :class:`RecognitionLoop` from a :class:`config.door.DoorConfig`.

    The descriptor engine is the one ``recognition.engine`` names, built by
    :func:`edge.fast_engine.make_engine` (which checks ``fast`` against dlib
    at start-up and falls back to dlib if they disagree); faces are described
    with ``recognition.augment`` views, as enrolment must describe them too.
    """
    from edge.describe import FaceDescriber
    from edge.detect import FaceDetector
    from edge.fast_engine import make_engine

    det, rec = config.detection, config.recognition
    detector = FaceDetector(model=det.model, scale=det.scale, upsample=det.upsample,
                            min_face_px=det.min_face_px, models_dir=rec.models_dir)
    engine = make_engine(rec, cache_dir=engine_cache_dir)
    describer = FaceDescriber(engine=engine, models_dir=rec.models_dir, augment=rec.augment)
    return RecognitionLoop(detector, describer, gallery,
                           recognition=rec, decision=config.decision, detection=det)
