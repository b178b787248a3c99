"""The motion gate: an idle door skips detection, a change brings it back."""

import cv2
import numpy as np
import pytest
from skimage import data

from config.recognition import DecisionSection, DetectionSection, RecognitionSection
from edge.detect import FaceDetector
from edge.match import Gallery
from edge.motion import MotionGate, change_score, thumbnail
from edge.pipeline import RecognitionLoop


class CountingDetector(FaceDetector):
    """The real HOG detector, counting how often it runs."""

    def __init__(self):
        super().__init__(model="hog", scale=1.0, upsample=0, min_face_px=40)
        self.calls = 0

    def detect(self, frame):
        self.calls += 1
        return super().detect(frame)


@pytest.fixture(scope="module")
def room():
    """A real photo with no face in it, at door-camera size."""
    return cv2.resize(data.coffee(), (640, 480), interpolation=cv2.INTER_AREA)


def _noisy(image, rng, sigma=4.0):
    return np.clip(image.astype(np.float32) + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def _with_face(room, face, left, top):
    frame = room.copy()
    frame[top:top + face.shape[0], left:left + face.shape[1]] = face
    return frame


def _loop(detector, describer, threshold=6.0):
    return RecognitionLoop(detector, describer, Gallery.empty(), recognition=RecognitionSection(),
                           decision=DecisionSection(), detection=DetectionSection(motion_threshold=threshold))


def test_sensor_noise_does_not_open_the_gate(room):
    rng = np.random.default_rng(1)
    gate = MotionGate(6.0)
    assert gate.should_detect(_noisy(room, rng))
    assert not any(gate.should_detect(_noisy(room, rng)) for _ in range(20))


def test_face_entering_a_corner_opens_the_gate(room, astronaut):
    gate = MotionGate(6.0)
    face = cv2.resize(astronaut[60:180, 160:280], (80, 80))
    assert gate.should_detect(room)
    assert gate.should_detect(_with_face(room, face, 0, 0))


def test_slow_change_adds_up_against_the_last_examined_frame(room):
    gate = MotionGate(6.0)
    assert gate.should_detect(room)
    darker = [np.clip(room.astype(np.int16) - step, 0, 255).astype(np.uint8) for step in (2, 4, 6, 8)]
    # Each step is 2 grey levels from the previous frame, but the gate compares
    # with the last frame it examined, so the drift is caught.
    assert [gate.should_detect(f) for f in darker] == [False, False, True, False]


def test_threshold_zero_examines_every_frame(room):
    gate = MotionGate(0.0)
    assert all(gate.should_detect(room) for _ in range(5))


def test_change_score_is_zero_for_identical_frames(room):
    assert change_score(thumbnail(room), thumbnail(room)) == 0.0


def test_static_scene_skips_detection(room, describer):
    detector = CountingDetector()
    loop = _loop(detector, describer)
    rng = np.random.default_rng(2)
    for i in range(30):
        assert loop.process(_noisy(room, rng), i / 15.0) == []
    assert detector.calls == 1
    assert loop.stats()["frames_skipped"] == 29


def test_detection_resumes_when_the_scene_changes(room, astronaut, describer):
    detector = CountingDetector()
    loop = _loop(detector, describer)
    face = astronaut[0:300, 90:350]
    for i in range(5):
        loop.process(room, i / 15.0)
    assert detector.calls == 1
    loop.process(_with_face(room, face, 200, 50), 5 / 15.0)
    assert detector.calls == 2
    assert loop.stats()["open_tracks"] == 1


def test_open_track_keeps_detection_running_on_a_static_scene(room, astronaut, describer):
    detector = CountingDetector()
    loop = _loop(detector, describer)
    frame = _with_face(room, astronaut[0:300, 90:350], 200, 50)
    for i in range(8):
        loop.process(frame, i / 15.0)
    assert detector.calls == 8
    assert loop.stats()["frames_skipped"] == 0


def test_gate_threshold_zero_detects_on_every_static_frame(room, describer):
    detector = CountingDetector()
    loop = _loop(detector, describer, threshold=0.0)
    for i in range(6):
        loop.process(room, i / 15.0)
    assert detector.calls == 6
