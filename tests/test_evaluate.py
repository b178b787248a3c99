"""Measured accuracy: pairs-file parsing, the 10-fold protocol, the gallery split,
the descriptor cache, and the two ``bytelocker eval`` commands on real faces."""

import json
import os

import cv2
import numpy as np
import pytest

from bytelocker.cli import main
from bytelocker.errors import DatasetError
from edge.evaluate import (
    DETECTED,
    FAILED,
    DescribeSettings,
    DescriptorCache,
    describe_photos,
    lfw_photo_path,
    list_people,
    parse_pairs,
    split_gallery,
    ten_fold,
)

# --- pairs files --------------------------------------------------------------


def write_pairs(tmp_path, text):
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return str(path)


def test_pairs_file_is_read_into_folds_and_labels(tmp_path):
    path = write_pairs(tmp_path, "2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\nCy\t2\t4\nBob 1   Cy 1\n")
    pairs = parse_pairs(path)
    assert [(p.fold, p.same) for p in pairs] == [(0, True), (0, False), (1, True), (1, False)]
    assert (pairs[1].name_a, pairs[1].number_a, pairs[1].name_b, pairs[1].number_b) == ("Ann", 1, "Bob", 3)
    assert (pairs[2].name_a, pairs[2].name_b, pairs[2].number_b) == ("Cy", "Cy", 4)


@pytest.mark.parametrize("text, where", [
    ("2\t1\nAnn\t1\t2\nAnn\t1\tBob\nCy\t2\t4\nBob\t1\tCy\t1\n", "line 3"),
    ("2\t1\nAnn\t1\ttwo\nAnn\t1\tBob\t3\nCy\t2\t4\nBob\t1\tCy\t1\n", "line 2"),
    ("2\t1\nAnn\t1\t2\nAnn\t0\tBob\t3\nCy\t2\t4\nBob\t1\tCy\t1\n", "line 3"),
    ("ten\t300\nAnn\t1\t2\n", "line 1"),
    ("2\t1\nAnn\t1\t2\nAnn\t1\tBob\t3\n", "promises 2 folds"),
    ("", "line 1"),
])
def test_a_malformed_pairs_file_is_refused_naming_the_file_and_line(tmp_path, text, where):
    path = write_pairs(tmp_path, text)
    with pytest.raises(DatasetError) as info:
        parse_pairs(path)
    assert path in str(info.value) and where in str(info.value)


def test_a_missing_pairs_file_is_refused_by_name(tmp_path):
    with pytest.raises(DatasetError, match="nope.txt"):
        parse_pairs(str(tmp_path / "nope.txt"))


def test_ten_fold_picks_each_threshold_without_the_fold_it_tests():
    # Fold 0 alone would be best served by a cut near 0.9; the other folds
    # agree on a cut between 0.4 and 0.6, so fold 0 must be judged with that.
    distances = np.array([0.3, 0.4, 0.6, 0.7] * 3 + [0.8, 0.85, 0.95, 1.0])
    same = np.array([True, True, False, False] * 3 + [True, True, False, False])
    folds = np.array([1] * 4 + [2] * 4 + [3] * 4 + [0] * 4)
    accuracies, thresholds = ten_fold(distances, same, folds)
    assert 0.4 <= thresholds[0] < 0.6
    assert accuracies[0] == 0.5
    assert all(0.7 <= t < 0.8 or 0.4 <= t < 0.6 for t in thresholds[1:])


# --- the gallery split -----------------------------------------------------------


def toy_people():
    counts = {"Ann": 1, "Bob": 2, "Cy": 3, "Di": 5, "Ed": 2, "Flo": 4, "Gus": 1, "Hal": 3}
    return {n: [f"/photos/{n}/{n}_{i:04d}.jpg" for i in range(1, c + 1)] for n, c in counts.items()}


def test_only_people_with_more_photos_than_enrolled_are_enrolled():
    split = split_gallery(toy_people(), enroll_per_person=2, unknown_share=0.0, seed=1)
    assert set(split.enrolled) == {"Cy", "Di", "Flo", "Hal"}
    assert all(len(photos) == 2 for photos in split.enrolled.values())


def test_probes_never_include_an_enrolment_photo_and_strangers_are_never_enrolled():
    people = toy_people()
    split = split_gallery(people, enroll_per_person=1, unknown_share=0.5, seed=3)
    enrolled_photos = {p for photos in split.enrolled.values() for p in photos}
    probes = split.known_probes + split.unknown_probes
    assert not enrolled_photos & {p for _, p in probes}
    assert all(n in split.enrolled for n, _ in split.known_probes)
    assert not {n for n, _ in split.unknown_probes} & set(split.enrolled)
    assert len(enrolled_photos) + len(probes) == sum(len(p) for p in people.values())


def test_the_split_is_the_same_for_the_same_seed_and_differs_between_seeds():
    people = toy_people()
    a = split_gallery(people, enroll_per_person=1, seed=7)
    b = split_gallery(people, enroll_per_person=1, seed=7)
    assert a == b
    assert any(split_gallery(people, enroll_per_person=1, seed=s) != a for s in range(8, 20))


def test_a_split_with_nobody_to_enrol_is_refused():
    with pytest.raises(DatasetError, match="more than 9 photos"):
        split_gallery(toy_people(), enroll_per_person=9)


# --- describing photos and the cache ---------------------------------------------


@pytest.fixture
def photo_folder(tmp_path, astronaut, grace_hopper):
    """``Eileen/`` with two photos, ``Grace/`` with one good and one corrupt photo."""
    root = tmp_path / "photos"
    for name in ("Eileen", "Grace"):
        (root / name).mkdir(parents=True)
    bgr = {"Eileen": cv2.cvtColor(astronaut, cv2.COLOR_RGB2BGR),
           "Grace": cv2.cvtColor(grace_hopper, cv2.COLOR_RGB2BGR)}
    cv2.imwrite(lfw_photo_path(str(root), "Eileen", 1), bgr["Eileen"])
    cv2.imwrite(lfw_photo_path(str(root), "Eileen", 2), cv2.resize(bgr["Eileen"], None, fx=0.8, fy=0.8))
    cv2.imwrite(lfw_photo_path(str(root), "Grace", 1), bgr["Grace"])
    good = open(lfw_photo_path(str(root), "Grace", 1), "rb").read()
    with open(lfw_photo_path(str(root), "Grace", 2), "wb") as fh:
        fh.write(good[:200] + b"\0" * 50)
    return root


def test_a_corrupt_photo_is_reported_by_name_and_the_rest_are_described(tmp_path, photo_folder):
    paths = [p for photos in list_people(str(photo_folder)).values() for p in photos]
    records = describe_photos(paths, jobs=1, cache=DescriptorCache(str(tmp_path / "cache")), progress=False)
    corrupt = records[lfw_photo_path(str(photo_folder), "Grace", 2)]
    assert corrupt.how == FAILED and corrupt.vector is None
    assert "Grace_0002.jpg" in corrupt.error and "corrupt" in corrupt.error
    good = [r for r in records.values() if r is not corrupt]
    assert all(r.how == DETECTED and r.vector.shape == (128,) for r in good)


def test_cached_descriptors_are_reused_until_the_photo_changes(tmp_path, photo_folder):
    cache = DescriptorCache(str(tmp_path / "cache"))
    path = lfw_photo_path(str(photo_folder), "Eileen", 1)
    first = describe_photos([path], jobs=1, cache=cache, progress=False)[path]
    st = os.stat(path)
    key = DescribeSettings().key()
    assert path in cache.lookup({path: (st.st_size, st.st_mtime_ns)}, key)
    assert path not in cache.lookup({path: (st.st_size, st.st_mtime_ns)}, DescribeSettings(upsample=1).key())
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    st = os.stat(path)
    assert path not in cache.lookup({path: (st.st_size, st.st_mtime_ns)}, key)
    again = describe_photos([path], jobs=1, cache=cache, progress=False)[path]
    assert np.allclose(first.vector, again.vector)


def test_descriptors_are_cached_apart_per_engine_and_augmentation():
    keys = {DescribeSettings().key(), DescribeSettings(engine="dlib").key(),
            DescribeSettings(augment="mirror").key(), DescribeSettings(engine="dlib", augment="mirror").key()}

    assert len(keys) == 4


def test_photos_are_described_with_the_mirror_augmentation_when_asked(tmp_path, photo_folder):
    path = lfw_photo_path(str(photo_folder), "Eileen", 1)
    cache = DescriptorCache(str(tmp_path / "cache"))
    plain = describe_photos([path], jobs=1, cache=cache, progress=False)[path].vector
    mirror = describe_photos([path], settings=DescribeSettings(augment="mirror"), jobs=1, cache=cache,
                             progress=False)[path].vector

    # The average with the mirror image is a different vector of the same face.
    assert mirror.shape == (128,) and not np.allclose(plain, mirror, atol=1e-3)
    assert np.linalg.norm(plain - mirror) < 0.2


def test_an_unknown_augmentation_is_refused_by_name(tmp_path, photo_folder):
    path = lfw_photo_path(str(photo_folder), "Eileen", 1)
    with pytest.raises(DatasetError, match="'jitter99'"):
        describe_photos([path], settings=DescribeSettings(augment="jitter99"), jobs=1, cache=False, progress=False)


def test_the_door_and_central_enrolment_describe_faces_the_same_way_by_default():
    from config.recognition import RecognitionSection
    from edge.describe import DEFAULT_AUGMENT

    # Central enrolment builds FaceDescriber() with its defaults; the door's
    # live descriptors must be made the same way or distances mean nothing.
    assert RecognitionSection().augment == DEFAULT_AUGMENT == DescribeSettings().augment


def test_eval_pairs_measures_another_augmentation_than_the_doors(tmp_path, photo_folder, monkeypatch, capsys):
    from edge.commands import AUGMENTS as CLI_AUGMENTS
    from edge.describe import AUGMENTS

    assert CLI_AUGMENTS == AUGMENTS
    monkeypatch.setenv("BYTELOCKER_CACHE_DIR", str(tmp_path / "cache"))
    pairs = write_pairs(tmp_path, "1\t1\nEileen\t1\t2\nEileen\t1\tGrace\t1\n")
    reports = {}
    for augment in AUGMENTS:
        assert main(["eval", "pairs", "--images", str(photo_folder), "--pairs", pairs, "--json", "--jobs", "1",
                     "--augment", augment]) == 0
        reports[augment] = json.loads(capsys.readouterr().out)
    assert [reports[a]["augment"] for a in AUGMENTS] == list(AUGMENTS)
    # Each run described the photos its own way: both sets are in the cache, and they differ.
    path = lfw_photo_path(str(photo_folder), "Eileen", 1)
    st = os.stat(path)
    cache = DescriptorCache(str(tmp_path / "cache"))
    vectors = [cache.lookup({path: (st.st_size, st.st_mtime_ns)}, DescribeSettings(augment=a).key())[path].vector
               for a in AUGMENTS]
    assert not np.allclose(vectors[0], vectors[1], atol=1e-3)


def test_eval_pairs_reports_a_corrupt_photo_without_a_traceback(tmp_path, photo_folder, monkeypatch, capsys):
    monkeypatch.setenv("BYTELOCKER_CACHE_DIR", str(tmp_path / "cache"))
    pairs = write_pairs(tmp_path, "2\t1\nEileen\t1\t2\nEileen\t1\tGrace\t1\n"
                                  "Eileen\t2\t1\nEileen\t2\tGrace\t2\n")
    code = main(["eval", "pairs", "--images", str(photo_folder), "--pairs", pairs, "--json", "--jobs", "1"])
    out, err = capsys.readouterr()
    assert code == 0
    assert "Grace_0002.jpg" in err and "Traceback" not in err
    report = json.loads(out)
    assert report["unreadable"] == 1 and report["photos"] == 4


def test_eval_pairs_refuses_a_plot_into_a_missing_folder_before_any_work(tmp_path, photo_folder, capsys):
    pairs = write_pairs(tmp_path, "1\t1\nEileen\t1\t2\nEileen\t1\tGrace\t1\n")
    assert main(["eval", "pairs", "--images", str(photo_folder), "--pairs", pairs,
                 "--plot", str(tmp_path / "nowhere" / "roc.png")]) == 1
    assert "its folder does not exist" in capsys.readouterr().err


def test_eval_pairs_draws_the_roc_curve_to_a_png(tmp_path, photo_folder, monkeypatch, capsys):
    monkeypatch.setenv("BYTELOCKER_CACHE_DIR", str(tmp_path / "cache"))
    pairs = write_pairs(tmp_path, "2\t1\nEileen\t1\t2\nEileen\t1\tGrace\t1\n"
                                  "Eileen\t2\t1\nEileen\t2\tGrace\t1\n")
    plot = tmp_path / "roc.png"
    assert main(["eval", "pairs", "--images", str(photo_folder), "--pairs", pairs,
                 "--plot", str(plot), "--jobs", "1"]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "10-fold accuracy" in capsys.readouterr().out


def test_eval_pairs_names_a_photo_missing_from_the_folder(tmp_path, photo_folder, monkeypatch, capsys):
    monkeypatch.setenv("BYTELOCKER_CACHE_DIR", str(tmp_path / "cache"))
    pairs = write_pairs(tmp_path, "1\t1\nEileen\t1\t7\nEileen\t1\tGrace\t1\n")
    assert main(["eval", "pairs", "--images", str(photo_folder), "--pairs", pairs]) == 1
    assert "Eileen_0007.jpg" in capsys.readouterr().err


# --- the real data set (slow with a cold cache) ----------------------------------


@pytest.fixture(scope="session")
def lfw_dev(shared_data, tmp_path_factory):
    """lfw-dev with every photo described once per session.

    The descriptors go to a session temp cache unless ``BYTELOCKER_CACHE_DIR``
    is already set (point it at a warm cache to make these tests take seconds);
    the eval commands below then read them from that cache.
    """
    images = shared_data / "lfw-dev"
    if not images.is_dir():
        pytest.skip(f"{images} is missing")
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get("BYTELOCKER_CACHE_DIR"):
            mp.setenv("BYTELOCKER_CACHE_DIR", str(tmp_path_factory.mktemp("descriptor-cache")))
        paths = [p for photos in list_people(str(images)).values() for p in photos]
        describe_photos(paths, jobs=0)
        yield images


@pytest.mark.slow
@pytest.mark.data
def test_eval_pairs_on_lfw_dev_keeps_the_measured_accuracy(lfw_dev, shared_data, capsys):
    code = main(["eval", "pairs", "--images", str(lfw_dev),
                 "--pairs", str(shared_data / "lfw-dev-pairs.txt"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    # The door's pipeline measured 98.73% (docs/accuracy.md), short of the
    # 99.0% asked for; this floor catches a broken detector, alignment or
    # protocol (each costs whole points), not that shortfall.
    assert report["accuracy_10fold"] >= 0.985
    assert {"accuracy_10fold", "accuracy_at_threshold", "far_at_threshold", "frr_at_threshold",
            "threshold", "no_face"} <= set(report)


@pytest.mark.slow
@pytest.mark.data
def test_eval_gallery_defaults_keep_strangers_out_of_lfw_dev(lfw_dev, capsys):
    code = main(["eval", "gallery", "--images", str(lfw_dev), "--enroll-per-person", "1", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert report["far"] <= 0.01
    assert report["misid"] <= 0.005
    assert report["frr"] <= 0.30
    assert report["probes_known"] > 1000 and report["probes_unknown"] > 1000
