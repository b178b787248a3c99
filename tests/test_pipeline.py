"""The recognition loop end to end on frames of real faces."""

import threading

import cv2
import numpy as np
import pytest
from skimage import data

from config.recognition import DecisionSection, DetectionSection, RecognitionSection
from edge.describe import FaceDescriber
from edge.detect import Box
from edge.match import Gallery
from edge.pipeline import Decision, RecognitionLoop


class CountingDescriber(FaceDescriber):
    """The real dlib describer, counting the faces it describes."""

    def __init__(self):
        super().__init__()
        self.faces = 0

    def describe(self, frame, boxes):
        self.faces += len(boxes)
        return super().describe(frame, boxes)


@pytest.fixture(scope="module")
def counting_describer():
    return CountingDescriber()


@pytest.fixture(scope="module")
def wall():
    return cv2.resize(data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def eileen(astronaut):
    return np.ascontiguousarray(astronaut[0:300, 90:350])


@pytest.fixture(scope="module")
def grace(grace_hopper):
    return cv2.resize(grace_hopper, (256, 300), interpolation=cv2.INTER_AREA)


def _scene(wall, *photos):
    frame = wall.copy()
    left = 20
    for photo in photos:
        frame[60:60 + photo.shape[0], left:left + photo.shape[1]] = photo
        left += photo.shape[1] + 40
    return frame


@pytest.fixture(scope="module")
def gallery(detector, describer, eileen, grace):
    return Gallery.from_people({
        "eileen_collins": describer.describe(eileen, detector.detect(eileen)[:1]),
        "grace_hopper": describer.describe(grace, detector.detect(grace)[:1]),
    })


def _loop(detector, describer, gallery, **decision):
    return RecognitionLoop(detector, describer, gallery, recognition=RecognitionSection(),
                           decision=DecisionSection(**decision), detection=DetectionSection())


def _play(loop, frame, n, t0=0.0, fps=10.0):
    out = []
    for i in range(n):
        out.extend(loop.process(frame, t0 + i / fps))
    return out


def test_enrolled_face_is_granted_after_k_frames(detector, describer, gallery, wall, eileen):
    loop = _loop(detector, describer, gallery, votes_needed=3, window_frames=5)
    frame = _scene(wall, eileen)
    assert _play(loop, frame, 2) == []
    [decision] = loop.process(frame, 0.2)
    assert isinstance(decision, Decision)
    assert (decision.decision, decision.person) == ("granted", "eileen_collins")
    assert decision.frames_used == 3
    assert decision.decide_ms == pytest.approx(200.0)
    assert decision.distance < RecognitionSection().threshold
    assert isinstance(decision.box, Box)
    assert decision.box.left >= 20 and decision.box.right <= 20 + eileen.shape[1]


def test_decision_carries_a_small_crop_of_the_face(detector, describer, gallery, wall, eileen):
    loop = _loop(detector, describer, gallery, votes_needed=1, window_frames=1)
    [decision] = loop.process(_scene(wall, eileen), 0.0)
    crop = decision.face_crop
    assert crop.dtype == np.uint8 and crop.ndim == 3 and crop.shape[2] == 3
    assert max(crop.shape[:2]) <= 112
    assert crop.shape[0] >= 40 and crop.shape[1] >= 40


def test_decided_track_is_not_described_again(detector, counting_describer, gallery, wall, eileen):
    loop = _loop(detector, counting_describer, gallery, votes_needed=3, window_frames=5)
    before = counting_describer.faces
    decisions = _play(loop, _scene(wall, eileen), 12)
    assert [d.decision for d in decisions] == ["granted"]
    assert counting_describer.faces - before == 3
    assert loop.stats()["faces_described"] == 3


def test_unenrolled_face_is_unknown_after_n_frames(detector, describer, wall, eileen, grace):
    only_eileen = Gallery.from_people({"eileen_collins": describer.describe(eileen, detector.detect(eileen)[:1])})
    loop = _loop(detector, describer, only_eileen, votes_needed=3, window_frames=5)
    frame = _scene(wall, grace)
    assert _play(loop, frame, 4) == []
    [decision] = loop.process(frame, 0.4)
    assert decision.decision == "unknown"
    assert decision.person is None
    assert decision.frames_used == 5
    assert decision.face_crop is not None


def test_two_people_in_one_frame_are_decided_separately(detector, describer, gallery, wall, eileen, grace):
    loop = _loop(detector, describer, gallery, votes_needed=3, window_frames=5)
    decisions = _play(loop, _scene(wall, eileen, grace), 4)
    assert sorted(d.person for d in decisions) == ["eileen_collins", "grace_hopper"]
    assert len({d.track_id for d in decisions}) == 2


def test_empty_gallery_grants_no_one(detector, describer, wall, eileen):
    loop = _loop(detector, describer, None, votes_needed=3, window_frames=5)
    decisions = _play(loop, _scene(wall, eileen), 6)
    assert [d.decision for d in decisions] == ["unknown"]


def test_set_gallery_takes_effect_without_restarting_the_loop(detector, describer, gallery, wall, grace):
    loop = _loop(detector, describer, Gallery.empty(), votes_needed=3, window_frames=5, retry_seconds=1.0)
    frame = _scene(wall, grace)
    assert [d.decision for d in _play(loop, frame, 5)] == ["unknown"]
    loop.set_gallery(gallery)
    # The same face, still in view, gets a fresh vote after retry_seconds.
    decisions = _play(loop, frame, 15, t0=0.5)
    assert [(d.decision, d.person) for d in decisions] == [("granted", "grace_hopper")]
    assert loop.stats()["gallery_people"] == 2


def test_set_gallery_from_another_thread_while_frames_are_processed(detector, describer, gallery, wall, eileen):
    loop = _loop(detector, describer, Gallery.empty(), votes_needed=3, window_frames=5, retry_seconds=0.5)
    stop = threading.Event()
    swaps = []

    def swapper():
        while not stop.wait(0.01):
            loop.set_gallery(gallery if len(swaps) % 2 else Gallery.empty())
            swaps.append(1)
        loop.set_gallery(gallery)

    thread = threading.Thread(target=swapper, name="swapper")
    thread.start()
    try:
        decisions = _play(loop, _scene(wall, eileen), 10)
    finally:
        stop.set()
        thread.join(5)
    assert swaps
    # Once the swaps stop on the real gallery, the face is granted (if it was not already).
    decisions += _play(loop, _scene(wall, eileen), 20, t0=1.0)
    assert {d.person for d in decisions} <= {"eileen_collins", None}
    assert ("granted", "eileen_collins") in [(d.decision, d.person) for d in decisions]


def test_set_gallery_refuses_something_that_is_not_a_gallery(detector, describer):
    loop = _loop(detector, describer, None)
    with pytest.raises(TypeError):
        loop.set_gallery({"eileen_collins": np.zeros((1, 128), np.float32)})


def test_stats_count_frames_and_work(detector, describer, gallery, wall, eileen):
    loop = _loop(detector, describer, gallery, votes_needed=3, window_frames=5)
    _play(loop, wall, 3)
    _play(loop, _scene(wall, eileen), 5, t0=0.3)
    stats = loop.stats()
    assert stats["frames"] == 8
    assert stats["frames_skipped"] == 2
    assert stats["frames_detected"] == 6
    assert stats["faces_described"] == 3
    assert stats["decisions"] == 1
    assert stats["fps"] == pytest.approx(10.0)
    assert stats["ms_per_frame"] > 0
