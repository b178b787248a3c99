"""1:N matching on real descriptors of two real people."""

import cv2
import numpy as np
import pytest

from bytelocker.errors import StorageError
from config.recognition import RecognitionSection
from edge.detect import FaceDetector
from edge.match import (
    AMBIGUOUS,
    DEFAULT_MARGIN,
    DEFAULT_THRESHOLD,
    MATCH,
    UNKNOWN,
    Cohort,
    Gallery,
    load_cohort,
    match,
)


def describe_one(detector, describer, frame):
    boxes = detector.detect(frame)
    assert boxes, "the sample photo must show a detectable face"
    return describer.describe(frame, boxes[:1])[0]


def crop_around_face(frame, box, pad):
    h, w = frame.shape[:2]
    return np.ascontiguousarray(frame[max(0, box.top - pad):min(h, box.bottom + pad),
                                      max(0, box.left - pad):min(w, box.right + pad)])


VARIANTS = {
    "tight crop": lambda f, b: crop_around_face(f, b, 60),
    "loose crop": lambda f, b: crop_around_face(f, b, 140),
    "half size": lambda f, b: cv2.resize(f, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA),
    "1.5x size": lambda f, b: cv2.resize(f, None, fx=1.5, fy=1.5, interpolation=cv2.INTER_LINEAR),
    "darker": lambda f, b: (f * 0.55).astype(np.uint8),
    "brighter": lambda f, b: np.clip(f.astype(np.int16) + 50, 0, 255).astype(np.uint8),
}


@pytest.fixture(scope="module")
def faces(astronaut, grace_hopper, describer):
    """Descriptors of each person's photo and of every variant of it."""
    # Upsampled once so the half-size astronaut (a 44 px face) is still found.
    detector = FaceDetector(model="hog", scale=1.0, upsample=1, min_face_px=20)
    out = {}
    for name, frame in (("eileen", astronaut), ("grace", grace_hopper)):
        box = detector.detect(frame)[0]
        out[name] = {"original": describe_one(detector, describer, frame)}
        for variant, make in VARIANTS.items():
            out[name][variant] = describe_one(detector, describer, make(frame, box))
    return out


@pytest.fixture(scope="module")
def both_enrolled(faces):
    return Gallery.from_people({name: [d["original"]] for name, d in faces.items()})


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("person", ["eileen", "grace"])
def test_each_person_is_recognised_through_crops_scales_and_brightness(faces, both_enrolled, person, variant):
    result = match(faces[person][variant], both_enrolled)[0]
    assert result.status == MATCH
    assert result.person == person
    assert result.distance <= DEFAULT_THRESHOLD


@pytest.mark.parametrize("enrolled, stranger", [("eileen", "grace"), ("grace", "eileen")])
def test_each_person_is_a_stranger_to_the_other(faces, enrolled, stranger):
    gallery = Gallery.from_people({enrolled: [faces[enrolled]["original"]]})
    probes = np.array([faces[stranger][v] for v in ["original", *VARIANTS]])
    results = match(probes, gallery)
    assert all(r.status == UNKNOWN and r.person is None for r in results)
    assert all(r.nearest == enrolled and r.distance > DEFAULT_THRESHOLD for r in results)


def test_two_enrolled_people_within_the_margin_are_ambiguous(faces):
    # Two enrolments of the same face under different names: a probe is
    # about equally near both, which is exactly what the margin guards.
    gallery = Gallery.from_people({"eileen": [faces["eileen"]["darker"]],
                                   "lookalike": [faces["eileen"]["brighter"]]})
    probe = faces["eileen"]["original"]
    first = match(probe, gallery, margin=0.0)[0]
    gap = first.second_distance - first.distance
    assert first.status == MATCH
    result = match(probe, gallery, margin=gap + 0.01)[0]
    assert result.status == AMBIGUOUS
    assert result.person is None and result.nearest == first.person


def test_match_is_returned_when_the_rival_is_beyond_the_margin(faces, both_enrolled):
    probe = faces["eileen"]["tight crop"]
    result = match(probe, both_enrolled, margin=0.0)[0]
    gap = result.second_distance - result.distance
    assert match(probe, both_enrolled, margin=gap - 0.01)[0].status == MATCH
    assert match(probe, both_enrolled, margin=gap + 0.01)[0].status == AMBIGUOUS


def test_a_person_is_as_near_as_their_nearest_descriptor(faces):
    several = [faces["grace"]["original"], faces["eileen"]["darker"], faces["eileen"]["half size"]]
    gallery = Gallery.from_people({"eileen": several[1:], "grace": several[:1]})
    probe = faces["eileen"]["original"]
    expected = min(np.linalg.norm(probe - d) for d in several[1:])
    distances = gallery.person_distances(probe)[0]
    assert distances[gallery.people.index("eileen")] == pytest.approx(expected, abs=1e-4)
    result = match(probe, gallery)[0]
    assert result.person == "eileen" and result.distance == pytest.approx(expected, abs=1e-4)


def test_a_face_beyond_the_threshold_is_unknown_but_names_its_nearest(faces, both_enrolled):
    probe = faces["eileen"]["darker"]
    distance = match(probe, both_enrolled)[0].distance
    result = match(probe, both_enrolled, threshold=distance - 0.01)[0]
    assert result.status == UNKNOWN and result.person is None and result.nearest == "eileen"


def test_a_cohort_face_as_near_as_the_best_match_makes_the_probe_unknown(faces):
    gallery = Gallery.from_people({"eileen": [faces["eileen"]["original"]]})
    probe = faces["eileen"]["tight crop"]
    lookalike = Cohort([faces["eileen"]["loose crop"], faces["grace"]["original"]])
    result = match(probe, gallery, cohort=lookalike)[0]
    assert result.status == UNKNOWN
    assert result.second_distance == pytest.approx(float(np.linalg.norm(probe - faces["eileen"]["loose crop"])), abs=1e-4)


def test_a_cohort_of_other_people_does_not_stop_a_genuine_match(faces):
    gallery = Gallery.from_people({"eileen": [faces["eileen"]["original"]]})
    others = np.array([faces["grace"][v] for v in ["original", *VARIANTS]])
    result = match(faces["eileen"]["tight crop"], gallery, cohort=others)[0]
    assert result.status == MATCH and result.person == "eileen"


def test_an_empty_gallery_calls_every_face_unknown(faces):
    results = match(np.array([faces["eileen"]["original"], faces["grace"]["original"]]), Gallery.empty())
    assert [r.status for r in results] == [UNKNOWN, UNKNOWN]


def test_the_door_config_uses_the_measured_match_defaults():
    section = RecognitionSection()
    assert section.threshold == DEFAULT_THRESHOLD
    assert section.margin == DEFAULT_MARGIN
    assert section.cohort_file is None


def test_a_cohort_file_round_trips(tmp_path, faces):
    path = tmp_path / "cohort.npy"
    np.save(path, np.array([faces["grace"]["original"], faces["grace"]["darker"]]))
    cohort = load_cohort(str(path))
    assert len(cohort) == 2
    assert cohort.nearest(faces["grace"]["original"])[0] == pytest.approx(0.0, abs=1e-3)


def test_a_cohort_file_of_the_wrong_shape_is_refused_by_name(tmp_path):
    path = tmp_path / "cohort.npy"
    np.save(path, np.zeros((3, 64), np.float32))
    with pytest.raises(StorageError, match="cohort.npy"):
        load_cohort(str(path))


def test_a_missing_cohort_file_is_refused_by_name(tmp_path):
    with pytest.raises(StorageError, match="nothere.npy"):
        load_cohort(str(tmp_path / "nothere.npy"))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_descriptor_with_non_finite_values_is_never_a_match(faces, both_enrolled, bad):
    probe = np.array(faces["eileen"]["original"], dtype=np.float32)
    probe[7] = bad
    for margin in (0.0, 0.08):
        result = match([probe], both_enrolled, threshold=0.6, margin=margin)[0]
        assert result.status != MATCH and result.person is None
