"""The door's status file and `bytelocker door status`."""

import json
import os
import subprocess
import sys
import time

import pytest

from bytelocker.cli import main
from bytelocker.errors import StorageError
from config.door import DoorConfig
from edge.status import STALE_AFTER_SECONDS, assess, read_status, status_path, write_status

HEALTH = {
    "door_id": "lab-1",
    "camera": "ok",
    "camera_detail": "",
    "broker": "connected",
    "outbox_depth": 3,
    "cache_version": 42,
    "fps": 14.8,
    "last_decision": {"decision": "granted", "person": "alice", "at": None},
}


@pytest.fixture
def door_yaml(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    path = tmp_path / "door.yaml"
    path.write_text(f"version: 2\ndoor:\n  id: lab-1\n  data_dir: {data}\n", encoding="utf-8")
    return path, data / "status.json"


def test_status_path_is_in_the_doors_data_dir():
    config = DoorConfig.model_validate({"door": {"data_dir": "/srv/door"}})

    assert status_path(config) == "/srv/door/status.json"
    assert status_path(config.door) == "/srv/door/status.json"


def test_written_status_reads_back_with_time_and_pid(tmp_path):
    path = tmp_path / "status.json"

    write_status(path, HEALTH)
    status = read_status(path)

    assert status["outbox_depth"] == 3 and status["pid"] == os.getpid()
    assert abs(status["updated"] - time.time()) < 5


def test_write_leaves_no_temp_files_and_replaces_the_old_status(tmp_path):
    path = tmp_path / "status.json"
    write_status(path, dict(HEALTH, fps=1.0))
    write_status(path, dict(HEALTH, fps=2.0))

    assert os.listdir(tmp_path) == ["status.json"]
    assert read_status(path)["fps"] == 2.0


def test_write_into_a_missing_folder_is_a_storage_error(tmp_path):
    with pytest.raises(StorageError, match="Cannot write the door status"):
        write_status(tmp_path / "nowhere" / "status.json", HEALTH)


def test_missing_status_file_reads_as_none(tmp_path):
    assert read_status(tmp_path / "status.json") is None


def test_corrupt_status_file_is_a_storage_error(tmp_path):
    path = tmp_path / "status.json"
    path.write_text('{"updated": 1, "fps"')

    with pytest.raises(StorageError, match="not valid JSON"):
        read_status(path)


def test_fresh_status_of_a_live_process_is_running():
    state, age = assess({"updated": time.time() - 1, "pid": os.getpid()})

    assert state == "running" and age < 5


def test_old_status_is_stale():
    state, _ = assess({"updated": time.time() - STALE_AFTER_SECONDS - 5, "pid": os.getpid()})

    assert state == "stale"


def test_status_of_an_ended_process_is_not_running():
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)

    state, _ = assess({"updated": time.time(), "pid": int(child.stdout)})

    assert state == "not running"


def test_door_status_says_not_running_without_a_status_file(door_yaml, capsys):
    path, _ = door_yaml

    code = main(["door", "status", "-c", str(path)])

    out = capsys.readouterr().out
    assert code == 1
    assert "door lab-1: not running" in out and "no status file" in out


def test_door_status_shows_the_running_doors_health(door_yaml, capsys):
    path, status_file = door_yaml
    write_status(status_file, dict(HEALTH, last_decision={"decision": "granted", "person": "alice",
                                                          "at": time.time() - 12}))

    code = main(["door", "status", "-c", str(path)])

    out = capsys.readouterr().out
    assert code == 0
    assert "door lab-1: running" in out
    assert "last decision: granted (alice) 12 s ago" in out
    assert "fps:           14.8" in out
    assert "broker:        connected" in out
    assert "outbox:        3 event(s)" in out
    assert "cache version: 42" in out


def test_door_status_flags_a_hung_daemon(door_yaml, capsys):
    path, status_file = door_yaml
    write_status(status_file, HEALTH)
    record = json.loads(status_file.read_text())
    record["updated"] -= 600
    status_file.write_text(json.dumps(record))

    code = main(["door", "status", "-c", str(path)])

    assert code == 1
    assert "NOT RESPONDING (status last written 10 min ago" in capsys.readouterr().out


def test_door_status_json_is_one_object_with_the_state(door_yaml, capsys):
    path, status_file = door_yaml
    write_status(status_file, HEALTH)

    code = main(["door", "status", "-c", str(path), "--json"])

    data = json.loads(capsys.readouterr().out)
    assert code == 0
    assert data["state"] == "running" and data["outbox_depth"] == 3
    assert data["status_file"] == str(status_file)


def test_door_status_json_without_a_file_says_not_running(door_yaml, capsys):
    path, _ = door_yaml

    main(["door", "status", "-c", str(path), "--json"])

    data = json.loads(capsys.readouterr().out)
    assert data["state"] == "not running" and data["door_id"] == "lab-1"
