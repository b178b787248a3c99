"""Reports over a realistic day of stored events, and their command line."""

import datetime as dt

import cv2
import numpy as np
import pytest

from bytelocker import contract
from bytelocker.cli import main
from central import reports
from central.commands import parse_time
from central.db import open_database
from central.store import store_events

DAY = dt.date(2026, 11, 24)


def at(hour, minute=0):
    return dt.datetime.combine(DAY, dt.time(hour, minute))


def face():
    ok, buf = cv2.imencode(".jpg", np.full((40, 40, 3), 90, np.uint8))
    return buf.tobytes()


@pytest.fixture
def day_of_events(tmp_path):
    """A working day at three doors: staff with and without door roles, strangers, alarms."""
    url = f"sqlite:///{tmp_path}/central.db"
    open_database(url)
    seqs = {}

    def ev(door, hour, minute, kind, **details):
        seqs[door] = seqs.get(door, 0) + 1
        snapshot = details.pop("snapshot", None)
        return contract.Event.build(door, seqs[door], kind, details, ts=at(hour, minute), snapshot_jpeg=snapshot)

    events = [
        # Alice uses the front door's entry and exit readers.
        ev("front-in", 8, 2, "granted", person_id="alice", distance=0.31, direction="entry"),
        ev("lab", 9, 15, "granted", person_id="alice", distance=0.35),
        ev("front-out", 12, 30, "granted", person_id="alice", distance=0.30, direction="exit"),
        ev("front-in", 13, 10, "granted", person_id="alice", distance=0.29, direction="entry"),
        ev("front-out", 17, 45, "granted", person_id="alice", distance=0.33, direction="exit"),
        # Bob only passes doors without roles: every grant counts as an entry.
        ev("lab", 10, 0, "granted", person_id="bob", distance=0.40),
        ev("lab", 15, 30, "granted", person_id="bob", distance=0.41),
        # Carol was denied, then let in.
        ev("front-in", 7, 55, "denied", person_id="carol", reason="outside schedule"),
        ev("front-in", 8, 30, "granted", person_id="carol", distance=0.38, direction="entry"),
        # Strangers and alarms.
        ev("front-in", 11, 0, "unidentified", frames_used=5, snapshot=face()),
        ev("lab", 19, 5, "unidentified", frames_used=5, snapshot=face()),
        ev("lab", 19, 6, "door_forced"),
        ev("lab", 22, 0, "exit_button"),
    ]
    # The day before and after must not leak into the report.
    events.append(contract.Event.build("lab", 99, "granted", {"person_id": "dave"}, ts=at(0) - dt.timedelta(minutes=1)))
    events.append(contract.Event.build("lab", 100, "granted", {"person_id": "dave"}, ts=at(0) + dt.timedelta(days=1)))
    store_events(events, str(tmp_path / "snapshots"))
    return url


def test_unidentified_lists_snapshots_since_a_time(day_of_events):
    rows = reports.unidentified(at(12))
    assert [(r["door_id"], r["ts"]) for r in rows] == [("lab", at(19, 5))]
    assert rows[0]["snapshot_path"].endswith(".jpg")
    assert len(reports.unidentified(at(0))) == 2


def test_events_report_filters_by_door_and_time(day_of_events):
    rows = reports.events(door="lab", since=at(19), until=at(0) + dt.timedelta(days=1))
    assert [r["type"] for r in rows] == ["unidentified", "door_forced", "exit_button"]
    assert all(r["door_id"] == "lab" for r in rows)


def test_report_events_command_prints_a_table(day_of_events, capsys):
    assert main(["report", "events", "--door", "lab", "--since", "2026-11-24T19:00",
                 "--until", "2026-11-25", "--database", day_of_events]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["ts", "door_id", "seq", "type"]
    assert len(lines) == 4 and "door_forced" in lines[2]


def test_report_unidentified_command_prints_csv_with_snapshot_paths(day_of_events, capsys):
    assert main(["report", "unidentified", "--since", "2026-11-24", "--database", day_of_events, "--csv"]) == 0
    assert capsys.readouterr().out.count(".jpg") == 2


def test_report_with_a_bad_time_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["report", "events", "--since", "last tuesday-ish"])
    assert "not a time" in capsys.readouterr().err


def test_since_accepts_ages_and_iso_times():
    now = dt.datetime(2026, 11, 25, 12, 0)
    assert parse_time("24h", now) == dt.datetime(2026, 11, 24, 12, 0)
    assert parse_time("90m", now) == dt.datetime(2026, 11, 25, 10, 30)
    assert parse_time("2026-11-25T08:00Z", now) == dt.datetime(2026, 11, 25, 8, 0)


@pytest.mark.parametrize("text", ["1000000d", "0001-01-01T00:00+01:00", "9999-12-31T23:59-01:00"])
def test_times_out_of_the_calendar_are_usage_errors_not_tracebacks(text, capsys):
    with pytest.raises(SystemExit):
        main(["report", "events", "--since", text])
    assert "not a time" in capsys.readouterr().err


def test_csv_cells_are_never_spreadsheet_formulas(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/central.db"
    open_database(url)
    store_events([contract.Event.build("lab", 1, "granted", {"person_id": '=HYPERLINK("http://x","y")'},
                                       ts=at(9))], str(tmp_path / "snapshots"))
    assert main(["report", "events", "--database", url, "--csv"]) == 0
    out = capsys.readouterr().out
    assert "'=HYPERLINK" in out and ',=HYPERLINK' not in out


def test_a_mistyped_database_is_an_error_not_an_empty_site(tmp_path, capsys):
    missing = tmp_path / "stat" / "centrl.db"
    assert main(["report", "events", "--database", f"sqlite:///{missing}"]) == 1
    assert "no central database" in capsys.readouterr().err
    assert not missing.exists() and not missing.parent.exists()
    assert main(["report", "events", "--database", f"sqllite:///{missing}"]) == 1
    err = capsys.readouterr().err
    assert "sqllite" in err and "Traceback" not in err and "sqlite:////absolute/path" in err


def test_a_database_created_by_root_belongs_to_its_folders_owner(tmp_path, monkeypatch):
    import os

    from central import db as central_db

    folder = tmp_path / "state"
    folder.mkdir()
    owners = []
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(os, "chown", lambda path, uid, gid: owners.append((os.path.basename(path), uid, gid)))
    central_db.open_database(f"sqlite:///{folder / 'central.db'}")
    stat = folder.stat()
    assert ("central.db", stat.st_uid, stat.st_gid) in owners


@pytest.mark.parametrize("limit", ["-5", "0", "ten"])
def test_a_limit_below_one_is_a_usage_error(limit, capsys):
    with pytest.raises(SystemExit):
        main(["report", "events", "--limit", limit])
    assert "at least 1" in capsys.readouterr().err
