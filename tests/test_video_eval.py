"""``bytelocker eval video``: reading clips, enrolling folders, decisions on real video."""

import json

import cv2
import numpy as np
import pytest
from skimage import data

from bytelocker.cli import main
from bytelocker.errors import EnrolmentError, VideoError
from config.door import DoorConfig
from edge.pipeline import build_loop
from edge.video_eval import enrol_folder, read_video, run_video


def _write_jpg(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _write_clip(path, frames, fps=10.0):
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def eileen(astronaut):
    return np.ascontiguousarray(astronaut[0:300, 90:350])


@pytest.fixture
def clip(tmp_path, eileen):
    """A 2-second clip: an empty room, then Eileen Collins standing in it."""
    room = cv2.resize(data.coffee(), (480, 360), interpolation=cv2.INTER_AREA)
    with_face = room.copy()
    with_face[30:330, 110:370] = eileen
    path = tmp_path / "door.mp4"
    _write_clip(path, [room] * 5 + [with_face] * 15)
    return path


@pytest.fixture
def enrol_dir(tmp_path, eileen, grace_hopper):
    folder = tmp_path / "enrol"
    _write_jpg(folder / "eileen_collins" / "1.jpg", eileen)
    _write_jpg(folder / "grace_hopper" / "1.jpg", grace_hopper)
    return folder


def test_missing_video_is_a_clear_error(tmp_path):
    path = tmp_path / "nowhere.mp4"
    with pytest.raises(VideoError, match="nowhere.mp4 does not exist"):
        list(read_video(str(path)))
    with pytest.raises(VideoError, match="is a folder; give a video file"):
        list(read_video(str(tmp_path)))


def test_text_file_named_mp4_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    with pytest.raises(VideoError, match="notes.mp4 cannot be opened"):
        list(read_video(str(path)))


def test_cli_reports_unreadable_video_without_a_traceback(tmp_path, enrol_dir, capsys):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n")
    assert main(["eval", "video", "--video", str(path), "--enroll", str(enrol_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bytelocker: error: The video file")
    assert "notes.mp4" in err and "Traceback" not in err


def test_frames_carry_video_time_not_wall_time(clip):
    times = [t for _, t in read_video(str(clip))]
    assert len(times) == 20
    assert times[0] == 0.0
    assert times[-1] == pytest.approx(1.9)


def test_enrolment_photo_with_two_faces_is_refused(tmp_path, describer, eileen, grace_hopper):
    both = np.full((600, 900, 3), 200, np.uint8)
    both[0:300, 0:260] = eileen
    both[0:600, 360:872] = grace_hopper
    _write_jpg(tmp_path / "enrol" / "pair" / "group.jpg", both)
    with pytest.raises(EnrolmentError, match=r"group\.jpg shows 2 faces"):
        enrol_folder(str(tmp_path / "enrol"), describer)


def test_enrolment_photo_without_a_face_is_refused(tmp_path, describer):
    _write_jpg(tmp_path / "enrol" / "cup" / "coffee.jpg", data.coffee())
    with pytest.raises(EnrolmentError, match=r"coffee\.jpg shows no face"):
        enrol_folder(str(tmp_path / "enrol"), describer)


def test_enrolment_folder_without_people_is_refused(tmp_path, describer):
    (tmp_path / "empty").mkdir()
    with pytest.raises(EnrolmentError, match="no <person_id>/ sub-folders"):
        enrol_folder(str(tmp_path / "empty"), describer)


def test_eval_video_json_lists_each_decision(clip, enrol_dir, capsys):
    assert main(["eval", "video", "--video", str(clip), "--enroll", str(enrol_dir), "--json"]) == 0
    decisions = json.loads(capsys.readouterr().out)
    assert [(d["decision"], d["person"]) for d in decisions] == [("granted", "eileen_collins")]
    assert set(decisions[0]) >= {"t", "track", "decision", "person", "distance"}
    # The face appears at frame 5 (0.5 s); three agreeing frames later it is granted.
    assert decisions[0]["t"] == pytest.approx(0.7)
    assert 0 < decisions[0]["distance"] < DoorConfig().recognition.threshold


def test_eval_video_prints_a_line_per_decision(clip, enrol_dir, capsys):
    assert main(["eval", "video", "--video", str(clip), "--enroll", str(enrol_dir)]) == 0
    out = capsys.readouterr().out
    [line] = [l for l in out.splitlines() if " granted " in l]
    assert line.split()[0] == "0.70"
    assert "eileen_collins" in line
    assert "granted: eileen_collins." in out


@pytest.fixture(scope="module")
def people_gallery(shared_data, describer):
    """All six people of the shared data's people/ folder."""
    return enrol_folder(str(shared_data / "people"), describer)


def _play_clip(path, gallery):
    loop = build_loop(DoorConfig())
    loop.set_gallery(gallery)
    return run_video(str(path), loop)


@pytest.fixture(scope="module")
def hamilton(shared_data, people_gallery):
    return _play_clip(shared_data / "video" / "hamilton.mp4", people_gallery)


@pytest.mark.slow
@pytest.mark.data
def test_hamilton_grants_lin_manuel_miranda(hamilton):
    assert "Lin_Manuel_Miranda" in hamilton.granted()


@pytest.mark.slow
@pytest.mark.data
def test_hamilton_grants_no_one_else(hamilton):
    assert hamilton.granted() <= {"Lin_Manuel_Miranda"}
    assert len(hamilton.decisions) >= 1


@pytest.mark.slow
@pytest.mark.data
def test_corridor_of_strangers_grants_no_one(shared_data, people_gallery):
    run = _play_clip(shared_data / "video" / "corridor.mp4", people_gallery)
    assert run.granted() == set()
    # The strangers were seen and turned away, not missed by the detector.
    assert any(d.decision == "unknown" for d in run.decisions)
