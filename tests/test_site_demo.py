"""`bytelocker demo`: broker, central, signed enrolment and a door on one machine."""

import json
import sqlite3
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_lets_in_both_enrolled_people_and_central_stores_the_stranger(tmp_path):
    workdir = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "bytelocker", "demo", "--workdir", str(workdir)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    with sqlite3.connect(workdir / "central.db") as db:
        rows = db.execute("SELECT type, person_id, snapshot_path FROM events ORDER BY seq").fetchall()
    granted = sorted(person for kind, person, _ in rows if kind == "granted")
    assert granted == ["eileen_collins", "grace_hopper"]
    strangers = [path for kind, _, path in rows if kind == "unidentified"]
    assert strangers and all(path and (workdir / "snapshots").as_posix() in path for path in strangers)
    lines = [json.loads(line) for line in (workdir / "door" / "pins.jsonl").read_text().splitlines()]
    lock = [line["locked"] for line in lines if line["role"] == "lock"]
    assert lock[0] is True and lock[-1] is True
    assert sum(1 for before, after in zip(lock, lock[1:]) if before and not after) == 2
    assert "verified and applied central's signed update" in result.stdout


def test_demo_never_empties_a_folder_it_did_not_make(tmp_path):
    from bytelocker.demo import DEMO_MARKER, prepare_workdir
    from bytelocker.errors import DemoError

    # --workdir /var/lib/bytelocker by mistake: a real site's data.
    site = tmp_path / "site"
    (site / "snapshots").mkdir(parents=True)
    (site / "central.db").write_bytes(b"real data")
    with pytest.raises(DemoError, match="not made by 'bytelocker demo'"):
        prepare_workdir(str(site))
    assert (site / "central.db").read_bytes() == b"real data" and (site / "snapshots").is_dir()
    # Its own folder from an earlier run is emptied and used again.
    own = tmp_path / "own"
    prepare_workdir(str(own))
    (own / "central.db").write_bytes(b"old demo")
    (own / "door").mkdir()
    prepare_workdir(str(own))
    assert sorted(p.name for p in own.iterdir()) == [DEMO_MARKER]
    with pytest.raises(DemoError, match="is a file"):
        prepare_workdir(str(own / DEMO_MARKER))
