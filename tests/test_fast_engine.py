"""The fast descriptor engine: same descriptors as dlib, checked at start-up, cached conversion."""

import json
import os

import numpy as np
import pytest

from bytelocker.errors import ImageError
from config.recognition import RecognitionSection
from edge.detect import FaceDetector
from edge.fast_engine import TOLERANCE, FastEngine, default_cache_dir, make_engine, synthetic_chip
from edge.images import load_rgb
from edge.models import model_paths


@pytest.fixture(scope="module")
def fast(tmp_path_factory):
    return FastEngine(model_paths().resnet, cache_dir=tmp_path_factory.mktemp("engine-cache"))


@pytest.fixture(scope="module")
def sample_chips(astronaut, grace_hopper, detector, describer):
    chips = []
    for photo in (astronaut, grace_hopper):
        boxes = detector.detect(photo)
        assert boxes, "the sample photo should show a face"
        chips += describer.chips(photo, boxes[:1])
    return chips


def fast_section():
    return RecognitionSection(engine="fast")


def test_fast_descriptors_match_dlib_on_the_sample_photos(fast, describer, sample_chips):
    want = describer.engine.describe_chips(sample_chips)
    got = fast.describe_chips(sample_chips)
    assert got.shape == (2, 128) and got.dtype == np.float32
    assert np.abs(got - want).max() <= TOLERANCE


def test_fast_descriptors_tell_the_two_sample_people_apart(fast, sample_chips):
    a, b = fast.describe_chips(sample_chips)
    assert np.linalg.norm(a - b) > 0.6


def test_a_batch_gives_the_same_descriptors_as_single_chips(fast, sample_chips):
    batch = fast.describe_chips(sample_chips * 10)
    singles = np.concatenate([fast.describe_chips([chip]) for chip in sample_chips])
    assert batch.shape == (20, 128)
    assert np.abs(batch - np.tile(singles, (10, 1))).max() <= 1e-6


def test_no_chips_give_an_empty_array(fast):
    assert fast.describe_chips([]).shape == (0, 128)


def test_chips_of_the_wrong_size_are_refused(fast, astronaut):
    with pytest.raises(ImageError, match="150x150 RGB uint8"):
        fast.describe_chips([astronaut])


def test_describer_works_with_the_fast_engine(fast, describer, astronaut, detector):
    from edge.describe import FaceDescriber

    boxes = detector.detect(astronaut)
    door = FaceDescriber(engine=fast)
    assert np.abs(door.describe(astronaut, boxes) - describer.describe(astronaut, boxes)).max() <= TOLERANCE


def test_recognition_defaults_to_the_fast_engine():
    assert RecognitionSection().engine == "fast"


def test_make_engine_keeps_fast_when_it_agrees_with_dlib(tmp_path):
    engine = make_engine(fast_section(), cache_dir=tmp_path)
    assert engine.name == "fast"
    assert engine.fallback_reason is None
    assert engine.check["max_abs_diff"] <= TOLERANCE
    assert "astronaut" in engine.check["image"]


def test_make_engine_gives_dlib_when_configured(tmp_path):
    engine = make_engine(RecognitionSection(engine="dlib"), cache_dir=tmp_path)
    assert engine.name == "dlib" and engine.fallback_reason is None
    assert not os.listdir(tmp_path)


def test_conversion_is_cached_and_reused_on_a_second_start(tmp_path):
    first = make_engine(fast_section(), cache_dir=tmp_path)
    assert first.check["cache"] == "converted"
    cached = first.cache_file
    written = cached.stat().st_mtime_ns
    second = make_engine(fast_section(), cache_dir=tmp_path)
    assert second.name == "fast" and second.check["cache"] == "reused"
    assert second.cache_file == cached and cached.stat().st_mtime_ns == written
    assert [p.name for p in tmp_path.iterdir()] == [cached.name]


def test_falls_back_to_dlib_when_the_cached_weights_are_corrupted(tmp_path, sample_chips, describer):
    cached = make_engine(fast_section(), cache_dir=tmp_path).cache_file
    # A plausible-looking but wrong file: every array still has its shape, one filter bank is altered.
    with np.load(cached) as arrays:
        corrupted = {name: arrays[name] for name in arrays.files}
    corrupted["l005_weights"] = corrupted["l005_weights"] * np.float32(1.01)
    with open(cached, "wb") as fh:
        np.savez(fh, **corrupted)

    engine = make_engine(fast_section(), cache_dir=tmp_path)

    assert engine.name == "dlib"
    assert "differs from dlib's" in engine.fallback_reason and "tolerance 0.0001" in engine.fallback_reason
    assert engine.check["max_abs_diff"] > TOLERANCE
    np.testing.assert_array_equal(engine.describe_chips(sample_chips), describer.engine.describe_chips(sample_chips))
    assert not cached.exists(), "the refused conversion is removed so the next start converts afresh"


def test_the_start_after_a_fallback_converts_afresh_and_uses_fast(tmp_path):
    cached = make_engine(fast_section(), cache_dir=tmp_path).cache_file
    with np.load(cached) as arrays:
        corrupted = {name: arrays[name] for name in arrays.files}
    corrupted["l000_bias"] = corrupted["l000_bias"] + np.float32(0.5)
    with open(cached, "wb") as fh:
        np.savez(fh, **corrupted)
    assert make_engine(fast_section(), cache_dir=tmp_path).name == "dlib"

    engine = make_engine(fast_section(), cache_dir=tmp_path)
    assert engine.name == "fast" and engine.check["cache"] == "converted"


def test_an_unreadable_cache_file_is_converted_again(tmp_path):
    cached = make_engine(fast_section(), cache_dir=tmp_path).cache_file
    cached.write_bytes(b"not a zip file at all")
    engine = make_engine(fast_section(), cache_dir=tmp_path)
    assert engine.name == "fast" and engine.check["cache"] == "converted"


def test_check_uses_the_photo_the_door_provides(tmp_path, grace_hopper):
    engine = make_engine(fast_section(), cache_dir=tmp_path, check_image=grace_hopper)
    assert engine.name == "fast" and engine.check["image"] == "the door's check image"


def test_the_synthetic_check_pattern_gives_dlibs_descriptor_too(fast, describer):
    chip = synthetic_chip()
    assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8
    assert np.abs(fast.describe_chips([chip]) - describer.engine.describe_chips([chip])).max() <= TOLERANCE


def test_cache_dir_defaults_to_bytelocker_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BYTELOCKER_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == str(tmp_path)
    monkeypatch.delenv("BYTELOCKER_CACHE_DIR")
    assert default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "bytelocker")


def lfw_faces(shared_data, describer, count):
    """Chips of ``count`` real faces from lfw-dev: the first photo of evenly spread people."""
    folder = shared_data / "lfw-dev"
    people = sorted(p for p in os.listdir(folder) if (folder / p).is_dir())
    first = FaceDetector(model="hog", upsample=0, min_face_px=20)
    second = FaceDetector(model="hog", upsample=1, min_face_px=20)
    chips = []
    for person in people[:: max(1, len(people) // (count + 20))]:
        photo = load_rgb(str(sorted((folder / person).iterdir())[0]))
        boxes = first.detect(photo) or second.detect(photo)
        if boxes:
            chips += describer.chips(photo, boxes[:1])
        if len(chips) == count:
            return chips
    pytest.fail(f"only {len(chips)} faces found in {folder}")


@pytest.mark.slow
@pytest.mark.data
def test_fast_descriptors_match_dlib_on_200_lfw_faces(fast, describer, shared_data):
    chips = lfw_faces(shared_data, describer, 200)
    want = describer.engine.describe_chips(chips)
    got = fast.describe_chips(chips)
    assert got.shape == (200, 128)
    assert np.abs(got - want).max() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.data
def test_bench_reports_both_engines_and_their_difference(shared_data, capsys):
    from bench.descriptor import main

    assert main(["--faces", str(shared_data / "people"), "--limit", "2", "--rounds", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["faces"] == 2
    assert {"dlib_ms", "fast_ms", "speedup", "max_abs_diff"} <= report.keys()
    assert report["max_abs_diff"] <= TOLERANCE
    assert report["engines"]["fast"]["startup_cache"] == "converted"
