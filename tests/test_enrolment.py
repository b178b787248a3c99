"""Enrolment photo quality checks and enrolment, on real photos."""

import cv2
import numpy as np
import pytest

from bytelocker.cli import main
from bytelocker.errors import EnrolmentError
from central import registry
from central.db import open_database
from central.enrolment import PhotoChecker, enrol_photos, forget_everywhere, photo_paths
from central.store import Snapshot, StoredEvent
from config.central import EnrolmentSection
from edge.detect import FaceDetector


@pytest.fixture(scope="module")
def checker(describer):
    return PhotoChecker(EnrolmentSection(), describer)


@pytest.fixture
def central_db(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'central.db'}")
    yield db
    db.close()


def save(path, rgb):
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return str(path)


def test_photo_of_one_sharp_well_lit_face_passes(checker, grace_hopper):
    check = checker.check_image(grace_hopper, "grace.jpg")
    assert check.ok, check.reason
    assert check.descriptor.shape == (128,)
    assert check.face_px >= 80


def test_real_enrolment_photos_all_pass(checker, shared_data):
    paths = photo_paths([shared_data / "people" / name for name in ("Barack_Obama", "Kit_Harington", "Rose_Leslie")])
    checks = [checker.check_file(p) for p in paths]
    assert [c.reason for c in checks if not c.ok] == []


def test_group_photo_is_rejected_for_several_faces(checker, shared_data):
    check = checker.check_file(str(shared_data / "scenes" / "group.jpg"))
    assert not check.ok
    assert "6 faces found" in check.reason
    assert "REJECTED group.jpg: 6 faces found" in check.describe()


def test_photo_of_two_people_is_rejected(checker, shared_data):
    check = checker.check_file(str(shared_data / "scenes" / "obama_and_biden.jpg"))
    assert not check.ok and "faces found" in check.reason


def test_blurred_photo_is_rejected_as_blurred(checker, shared_data):
    from edge.images import load_rgb

    photo = load_rgb(str(shared_data / "people" / "Barack_Obama" / "obama.jpg"))
    check = checker.check_image(cv2.GaussianBlur(photo, (0, 0), 8), "obama-blurred.jpg")
    assert not check.ok
    assert check.reason.startswith("too blurred")


def test_blurred_sample_photo_is_rejected_as_blurred(checker, grace_hopper):
    check = checker.check_image(cv2.GaussianBlur(grace_hopper, (0, 0), 7), "grace-blurred.jpg")
    assert not check.ok
    assert check.reason.startswith("too blurred")


def test_dark_photo_is_rejected_as_dark(checker, grace_hopper):
    check = checker.check_image((grace_hopper * 0.2).astype(np.uint8), "grace-dark.jpg")
    assert not check.ok
    assert check.reason.startswith("too dark")


def test_small_face_is_rejected_with_its_size(checker, grace_hopper):
    small = cv2.resize(grace_hopper, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    check = checker.check_image(small, "grace-small.jpg")
    assert not check.ok
    assert "px wide, at least 80 px needed" in check.reason


def test_blank_image_is_rejected_for_no_face(checker):
    check = checker.check_image(np.full((480, 640, 3), 128, np.uint8), "blank.png")
    assert not check.ok and check.reason.startswith("no face found")


def test_scene_crop_without_a_face_is_rejected_for_no_face(checker, astronaut):
    check = checker.check_image(np.ascontiguousarray(astronaut[300:, 250:]), "astronaut-corner.png")
    assert not check.ok and check.reason.startswith("no face found")


def test_corrupt_file_is_rejected_naming_the_file(checker, tmp_path, grace_hopper):
    good = save(tmp_path / "grace.jpg", grace_hopper)
    data = open(good, "rb").read()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[:200])
    check = checker.check_file(str(broken))
    assert not check.ok
    assert "broken.jpg" in check.reason and "corrupt" in check.reason


def png_claiming(width, height):
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_photo_over_the_pixel_limit_is_rejected_by_name_before_it_is_decoded(checker, tmp_path):
    import subprocess
    import sys

    # Over OpenCV's own 2**30 limit: refused in any process.
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_claiming(40000, 40000))
    check = checker.check_file(str(huge))
    assert not check.ok and "huge.png" in check.reason and "too large" in check.reason
    assert str(tmp_path) not in check.reason  # the name, not an upload's temporary folder
    # 144 megapixels, within OpenCV's default: refused by ByteLocker's own limit,
    # which every entry point sets by importing the bytelocker package first.
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_claiming(12000, 12000))
    run = subprocess.run([sys.executable, "-c", "import sys, bytelocker\nfrom edge.images import load_rgb\n"
                          "load_rgb(sys.argv[1])", str(bomb)], capture_output=True, text=True, timeout=60)
    assert run.returncode != 0 and "ImageError" in run.stderr and "too large" in run.stderr


def test_a_second_smaller_face_makes_the_photo_ambiguous(checker, detector, astronaut, grace_hopper):
    # Grace's face shrunk to ~45 px in a corner of Eileen's photo: whose face would be enrolled?
    face = detector.detect(grace_hopper)[0]
    scale = 45.0 / face.width
    small = cv2.resize(grace_hopper, (int(grace_hopper.shape[1] * scale), int(grace_hopper.shape[0] * scale)),
                       interpolation=cv2.INTER_AREA)
    photo = astronaut.copy()
    photo[-small.shape[0]:, -small.shape[1]:] = small
    check = checker.check_image(photo)
    assert not check.ok and check.reason.startswith("2 faces found")
    assert checker.check_image(astronaut).ok


def test_photos_are_checked_one_at_a_time_from_several_threads(describer, astronaut):
    import threading
    import time

    # dlib's detector crashes the whole process (not an exception) when two
    # threads run it at once, and the dashboard checks uploads on several.
    class CountingDetector(FaceDetector):
        running = peak = 0

        def detect(self, frame):
            type(self).running += 1
            type(self).peak = max(type(self).peak, type(self).running)
            time.sleep(0.02)
            try:
                return super().detect(frame)
            finally:
                type(self).running -= 1

    checker = PhotoChecker(EnrolmentSection(), describer, detector=CountingDetector(model="hog", min_face_px=20))
    results = []
    threads = [threading.Thread(target=lambda: results.extend(checker.check_image(astronaut).ok for _ in range(3)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 12
    assert CountingDetector.peak == 1


def test_enrolment_keeps_good_photos_and_reports_each_rejection(checker, central_db, grace_hopper, tmp_path):
    sources = [("grace.jpg", grace_hopper), ("blank.png", np.zeros((300, 300, 3), np.uint8))]
    result = enrol_photos("grace", sources, checker, name="Grace Hopper", groups=["navy"])
    assert result.added == 1
    assert [c.source for c in result.rejected] == ["blank.png"]
    assert registry.descriptors_of("grace").shape == (1, 128)
    assert registry.get_person("grace").groups == ["navy"]


def test_enrolling_again_with_the_same_id_adds_descriptors(checker, central_db, grace_hopper):
    enrol_photos("grace", [("a.jpg", grace_hopper)], checker)
    flipped = np.ascontiguousarray(grace_hopper[:, ::-1])
    enrol_photos("grace", [("b.jpg", flipped)], checker)
    assert registry.descriptors_of("grace").shape == (2, 128)


def test_enrolment_with_no_usable_photo_is_an_error_listing_reasons(checker, central_db, shared_data):
    with pytest.raises(EnrolmentError, match="group.jpg: 6 faces found"):
        enrol_photos("crowd", [str(shared_data / "scenes" / "group.jpg")], checker)
    assert registry.Person.get_or_none(registry.Person.person_id == "crowd") is None


def test_photo_like_another_enrolled_person_is_enrolled_with_a_warning(checker, central_db, grace_hopper,
                                                                       astronaut):
    enrol_photos("grace", [("grace.jpg", grace_hopper)], checker)
    result = enrol_photos("hopper", [("grace-again.jpg", grace_hopper), ("eileen.png", astronaut)], checker)
    warned = {c.source: c.warnings for c in result.checks}
    assert any("looks like enrolled person 'grace'" in w for w in warned["grace-again.jpg"])
    assert any("does not look like the other photos of 'hopper'" in w for w in warned["eileen.png"])


def test_forget_anonymises_events_and_deletes_snapshots(checker, central_db, grace_hopper, tmp_path):
    enrol_photos("grace", [("grace.jpg", grace_hopper)], checker)
    snap = tmp_path / "snaps" / "door-1" / "e1.jpg"
    snap.parent.mkdir(parents=True)
    snap.write_bytes(b"jpeg")
    now = registry.utcnow()
    StoredEvent.create(event_id="e1", door_id="door-1", seq=1, ts=now, type="granted", person_id="grace",
                       snapshot_path=str(snap), received_at=now)
    StoredEvent.create(event_id="e2", door_id="door-1", seq=2, ts=now, type="granted", person_id="other",
                       received_at=now)
    Snapshot.create(event_id="e1", door_id="door-1", ts=now, path=str(snap), size=4)
    version, events, snapshots, sightings = forget_everywhere("grace", str(tmp_path / "snaps"))
    assert (events, snapshots, sightings) == (1, 1, 0)
    assert not snap.exists()
    assert StoredEvent.get(StoredEvent.event_id == "e1").person_id is None
    assert StoredEvent.get(StoredEvent.event_id == "e2").person_id == "other"
    assert Snapshot.select().count() == 0
    assert registry.Person.get_or_none(registry.Person.person_id == "grace") is None
    assert registry.descriptors_of("grace").shape == (0, 128)
    assert [c.op for c in registry.changes_after(0)] == ["remove"]


def test_enroll_command_reports_every_photo_and_people_lists_them(tmp_path, capsys, grace_hopper, shared_data):
    folder = tmp_path / "photos"
    folder.mkdir()
    save(folder / "grace.jpg", grace_hopper)
    save(folder / "dark.jpg", (grace_hopper * 0.2).astype(np.uint8))
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    config = tmp_path / "central.yaml"
    config.write_text(f"database:\n  url: sqlite:///{tmp_path / 'central.db'}\n")
    code = main(["enroll", "-c", str(config), "--id", "g1", "--name", "Grace Hopper", "--group", "navy",
                 "--valid-until", "2030-01-31", str(folder), str(shared_data / "scenes" / "group.jpg")])
    out = capsys.readouterr().out
    assert code == 0
    assert "ok       grace.jpg" in out
    assert "REJECTED dark.jpg: too dark" in out
    assert "REJECTED corrupt.jpg:" in out
    assert "REJECTED group.jpg: 6 faces found" in out
    assert main(["people", "-c", str(config)]) == 0
    listing = capsys.readouterr().out
    assert "g1" in listing and "Grace Hopper" in listing and "navy" in listing and "2030-01-31 23:59" in listing
    assert main(["revoke", "-c", str(config), "g1"]) == 0
    assert main(["people", "-c", str(config)]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["revoke", "-c", str(config), "nobody"]) == 1
    assert "No person with id 'nobody'" in capsys.readouterr().err


@pytest.mark.parametrize("person_id", ["", " rose", "rose ", "a" * 129, "line\nbreak"])
def test_an_id_the_doors_would_refuse_is_refused_before_anything_is_enrolled(central_db, person_id):
    # A door refuses a whole signed update over one such person and stays at
    # its old version: every later change, revocations too, would never arrive.
    with pytest.raises(EnrolmentError):
        registry.enrol(person_id, np.full((1, 128), 0.05, np.float32))
    assert registry.current_version() == 0 and registry.list_people() == []


def test_a_name_longer_than_a_door_takes_is_refused(central_db):
    with pytest.raises(EnrolmentError, match="at most 256"):
        registry.enrol("rose", np.full((1, 128), 0.05, np.float32), name="N" * 300)
