"""Attendance per local day, who is on site, and door health, over realistic stored events."""

import csv
import datetime as dt
import io
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from bytelocker import contract
from bytelocker.cli import main
from central import attendance, registry
from central.attendance import MISSING_ENTRY, MISSING_EXIT, NO_DIRECTION, ON_SITE
from central.db import open_database
from central.door_health import door_health
from central.store import StoredEvent, store_available, store_events, store_status
from tests.postgres import postgres_cluster, postgres_url  # noqa: F401 (fixtures)

BERLIN = "Europe/Berlin"
DAY = dt.date(2026, 11, 24)           # CET, UTC+1
NEXT = DAY + dt.timedelta(days=1)
BEFORE = DAY - dt.timedelta(days=1)
FALL_BACK = dt.date(2026, 10, 25)      # 03:00 CEST becomes 02:00 CET: a 25-hour day
SPRING_FORWARD = dt.date(2026, 3, 29)  # 02:00 CET becomes 03:00 CEST: a 23-hour day


def local(day, hour, minute=0, fold=0):
    """Berlin wall-clock time as naive UTC (how events are stored)."""
    when = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=ZoneInfo(BERLIN)).replace(fold=fold)
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def berlin(day, hour, minute=0):
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=ZoneInfo(BERLIN))


@pytest.fixture
def site(tmp_path):
    """A realistic day at four doors, with the night before and after, stored through the store."""
    url = f"sqlite:///{tmp_path}/central.db"
    store_site(url, tmp_path)
    return url


def store_site(url, tmp_path):
    open_database(url)
    rng = np.random.default_rng(1)
    for person, groups in [("alice", ["staff"]), ("bob", ["staff"]), ("carol", ["night"]),
                           ("dave", ["contractors"]), ("erin", ["staff"]), ("frank", ["night"]),
                           ("gina", ["night"])]:
        registry.enrol(person, rng.normal(size=(1, 128)).astype(np.float32), name=person.title(), groups=groups)
    seqs = {}

    def grant(door, when, person, direction=None):
        seqs[door] = seqs.get(door, 0) + 1
        details = {"person_id": person, "distance": 0.3}
        if direction:
            details["direction"] = direction
        return contract.Event.build(door, seqs[door], "granted", details, ts=when)

    events = [
        # Alice: in, an inner door without a role, out for lunch, back, out.
        grant("front-in", local(DAY, 8, 2), "alice", "entry"),
        grant("lab", local(DAY, 9, 15), "alice"),
        grant("front-out", local(DAY, 12, 30), "alice", "exit"),
        grant("front-in", local(DAY, 13, 10), "alice", "entry"),
        grant("front-out", local(DAY, 17, 45), "alice", "exit"),
        # Bob came in and his exit was never seen.
        grant("front-in", local(DAY, 9, 0), "bob", "entry"),
        # Carol works nights: the shift that began the evening before ends this morning,
        # and tonight's ends tomorrow morning.
        grant("front-in", local(BEFORE, 22, 0), "carol", "entry"),
        grant("front-out", local(DAY, 6, 0), "carol", "exit"),
        grant("front-in", local(DAY, 22, 0), "carol", "entry"),
        grant("front-out", local(NEXT, 6, 0), "carol", "exit"),
        # Dave re-enters through the side door.
        grant("front-in", local(DAY, 7, 30), "dave", "entry"),
        grant("side", local(DAY, 10, 0), "dave", "exit"),
        grant("side", local(DAY, 10, 15), "dave", "entry"),
        grant("front-out", local(DAY, 16, 0), "dave", "exit"),
        # Erin's entry was missed (tailgating): only her exit.
        grant("front-out", local(DAY, 7, 0), "erin", "exit"),
        # Frank's night shift across the autumn DST change, and a short visit after midnight.
        grant("front-in", local(FALL_BACK - dt.timedelta(days=1), 22, 0), "frank", "entry"),
        grant("front-out", local(FALL_BACK, 6, 0), "frank", "exit"),
        grant("front-in", local(FALL_BACK, 23, 30), "frank", "entry"),
        grant("front-out", local(FALL_BACK + dt.timedelta(days=1), 0, 45), "frank", "exit"),
        # Gina's night shift across the spring DST change.
        grant("front-in", local(SPRING_FORWARD - dt.timedelta(days=1), 22, 0), "gina", "entry"),
        grant("front-out", local(SPRING_FORWARD, 6, 0), "gina", "exit"),
    ]
    # Denials and other events never count.
    events.append(contract.Event.build("front-in", 900, "denied", {"person_id": "bob", "reason": "expired"},
                                       ts=local(DAY, 20, 0)))
    events.append(contract.Event.build("lab", 901, "door_forced", {}, ts=local(DAY, 19, 0)))
    store_events(events, str(tmp_path / "snapshots"))


def by_person(records):
    return {r.person_id: r for r in records}


def day_report(day=DAY, **kwargs):
    kwargs.setdefault("now", local(NEXT, 12, 0))
    return by_person(attendance.report(day, day, BERLIN, **kwargs))


def test_first_in_last_out_and_time_on_site_count_only_closed_visits(site):
    alice = day_report()["alice"]
    assert alice.first_in == berlin(DAY, 8, 2)
    assert alice.last_out == berlin(DAY, 17, 45)
    # 08:02-12:30 and 13:10-17:45; the lunch hour outside does not count.
    assert alice.time_on_site == dt.timedelta(hours=9, minutes=3)
    assert len(alice.visits) == 2
    assert alice.doors == ["front-in", "front-out", "lab"]


def test_a_grant_without_direction_counts_as_entry_and_is_flagged(site):
    alice = day_report()["alice"]
    lab = [p for p in alice.passes if p.door_id == "lab"][0]
    assert lab.direction == "entry" and lab.assumed
    assert NO_DIRECTION in alice.flags


def test_a_missing_exit_is_flagged_and_adds_no_time(site):
    bob = day_report()["bob"]
    assert bob.first_in == berlin(DAY, 9, 0)
    assert bob.last_out is None
    assert bob.time_on_site == dt.timedelta(0)
    assert bob.flags == (MISSING_EXIT,)


def test_an_open_visit_is_on_site_rather_than_missing_while_it_is_young(site):
    assert day_report(now=local(DAY, 12, 0))["bob"].flags == (ON_SITE,)


def test_a_missing_entry_is_flagged_without_inventing_one(site):
    erin = day_report()["erin"]
    assert erin.first_in is None
    assert erin.last_out == berlin(DAY, 7, 0)
    assert erin.time_on_site == dt.timedelta(0)
    assert erin.flags == (MISSING_ENTRY,)


def test_re_entries_make_several_visits_in_one_day(site):
    dave = day_report()["dave"]
    assert [(v.entry.local.time(), v.exit.local.time()) for v in dave.visits] == [
        (dt.time(7, 30), dt.time(10, 0)), (dt.time(10, 15), dt.time(16, 0))]
    assert dave.time_on_site == dt.timedelta(hours=8, minutes=15)
    assert dave.flags == ()


def test_a_night_shift_belongs_to_the_day_it_started(site):
    carol = day_report()["carol"]
    # This morning's 06:00 exit closed yesterday's shift; tonight's shift ends tomorrow.
    assert carol.first_in == berlin(DAY, 22, 0)
    assert carol.last_out == berlin(NEXT, 6, 0)
    assert carol.time_on_site == dt.timedelta(hours=8)
    assert len(carol.passes) == 2
    yesterday = day_report(BEFORE)["carol"]
    assert yesterday.last_out == berlin(DAY, 6, 0) and yesterday.time_on_site == dt.timedelta(hours=8)
    assert "carol" not in day_report(NEXT)


def test_days_and_durations_follow_the_site_time_zone_across_dst(site):
    before = day_report(FALL_BACK - dt.timedelta(days=1))["frank"]
    # 22:00 CEST to 06:00 CET is nine hours of real time.
    assert before.time_on_site == dt.timedelta(hours=9)
    assert before.first_in.utcoffset() == dt.timedelta(hours=2)
    assert before.last_out.utcoffset() == dt.timedelta(hours=1)
    # 23:30 on the 25th is still the 25th locally although it is 22:30 UTC.
    late = day_report(FALL_BACK)["frank"]
    assert late.first_in == berlin(FALL_BACK, 23, 30) and late.time_on_site == dt.timedelta(hours=1, minutes=15)
    assert day_report(FALL_BACK)["frank"].date == FALL_BACK
    # In spring the same shift is seven hours.
    spring = day_report(SPRING_FORWARD - dt.timedelta(days=1))["gina"]
    assert spring.time_on_site == dt.timedelta(hours=7)
    assert spring.last_out == berlin(SPRING_FORWARD, 6, 0)
    assert "gina" not in day_report(SPRING_FORWARD)


def test_a_range_gives_one_row_per_person_per_day(site):
    records = attendance.report(BEFORE, NEXT, BERLIN, now=local(NEXT, 12))
    assert [(r.date, r.person_id) for r in records if r.person_id == "carol"] == [(BEFORE, "carol"), (DAY, "carol")]
    assert [r.date for r in records] == sorted(r.date for r in records)


def test_person_and_group_filters_use_the_registry(site):
    assert set(day_report(group="staff")) == {"alice", "bob", "erin"}
    assert set(day_report(person="dave")) == {"dave"}
    assert day_report(group="nobody") == {}


def test_denied_events_never_count(site):
    assert len(day_report()["bob"].passes) == 1


def test_attendance_csv_has_the_documented_columns(site, capsys):
    assert main(["report", "attendance", "--from", BEFORE.isoformat(), "--to", DAY.isoformat(),
                 "--timezone", BERLIN, "--database", site, "--csv"]) == 0
    out = capsys.readouterr().out
    reader = csv.DictReader(io.StringIO(out))
    rows = list(reader)
    assert tuple(reader.fieldnames) == attendance.CSV_COLUMNS
    alice = [r for r in rows if r["person_id"] == "alice"][0]
    assert alice == {
        "date": "2026-11-24", "person_id": "alice", "name": "Alice", "groups": "staff",
        "first_in": "2026-11-24T08:02:00+01:00", "last_out": "2026-11-24T17:45:00+01:00",
        "time_on_site_minutes": "543", "time_on_site": "9h03", "visits": "2", "entries": "3", "exits": "2",
        "doors": "front-in;front-out;lab", "flags": "no_direction",
        "passes": "2026-11-24T08:02:00+01:00 entry front-in;2026-11-24T09:15:00+01:00 entry lab;"
                  "2026-11-24T12:30:00+01:00 exit front-out;2026-11-24T13:10:00+01:00 entry front-in;"
                  "2026-11-24T17:45:00+01:00 exit front-out",
    }
    assert [r["date"] for r in rows if r["person_id"] == "carol"] == ["2026-11-23", "2026-11-24"]


def test_attendance_date_option_is_a_one_day_range(site, capsys):
    assert main(["report", "attendance", "--date", DAY.isoformat(), "--timezone", BERLIN,
                 "--group", "night", "--database", site]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["date", "person_id", "name"]
    assert len(lines) == 2 and "carol" in lines[1] and "2026-11-25 06:00:00" in lines[1]


def test_a_day_groups_passes_as_a_longer_range_does(tmp_path):
    # Entries Sunday 15:00, Monday 06:00 and 14:00 at doors without a direction
    # role, an exit Tuesday 01:00 (16-hour visits): Monday 06:00 belongs to
    # Sunday's visit, so Monday 14:00 starts the visit Tuesday's exit closes,
    # whether the report starts on Sunday or on Tuesday.
    open_database(f"sqlite:///{tmp_path}/central.db")
    sunday = DAY - dt.timedelta(days=2)
    monday, tuesday = sunday + dt.timedelta(days=1), sunday + dt.timedelta(days=2)
    passes = [(local(sunday, 15), None), (local(monday, 6), None), (local(monday, 14), None),
              (local(tuesday, 1), "exit")]
    store_events([contract.Event.build("door", i + 1, "granted",
                                       {"person_id": "ivy", **({"direction": d} if d else {})}, ts=ts)
                  for i, (ts, d) in enumerate(passes)], str(tmp_path / "snapshots"))
    now = local(tuesday, 12)

    def rows(first, last):
        return {r.date: (r.first_in, r.last_out, r.time_on_site, r.flags)
                for r in attendance.report(first, last, BERLIN, now=now)}

    whole = rows(sunday, tuesday)
    assert whole[monday][:3] == (berlin(monday, 14), berlin(tuesday, 1), dt.timedelta(hours=11))
    assert rows(tuesday, tuesday) == {d: v for d, v in whole.items() if d == tuesday}
    assert rows(monday, monday) == {monday: whole[monday]}
    # The same anchoring for who is on site: without the exit, Monday 14:00's
    # visit is open at Tuesday 05:00.
    StoredEvent.delete().where(StoredEvent.seq == 4).execute()
    assert [r["since"] for r in attendance.on_site(BERLIN, now=local(tuesday, 5))] == [berlin(monday, 14)]


def test_today_is_the_sites_date_not_utcs(site, capsys, monkeypatch):
    # 00:30 in Berlin on DAY is still BEFORE in UTC: "today" must be DAY.
    monkeypatch.setattr(attendance, "utcnow", lambda: local(DAY, 0, 30))
    assert attendance.site_today(BERLIN) == DAY
    assert attendance.site_today("UTC") == BEFORE
    assert main(["report", "attendance", "--date", "today", "--timezone", BERLIN,
                 "--group", "staff", "--database", site, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert {r["date"] for r in rows} == {DAY.isoformat()}
    assert {r["person_id"] for r in rows} >= {"alice", "bob"}
    assert main(["report", "attendance", "--from", BEFORE.isoformat(), "--to", "today",
                 "--timezone", BERLIN, "--person", "carol", "--database", site, "--csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["date"] for r in rows] == [BEFORE.isoformat(), DAY.isoformat()]


def test_attendance_without_days_is_an_error(site, capsys):
    assert main(["report", "attendance", "--database", site]) == 1
    assert "--from" in capsys.readouterr().err


def test_attendance_with_an_unknown_time_zone_is_an_error(site, capsys):
    assert main(["report", "attendance", "--date", "2026-11-24", "--timezone", "Mars/Olympus",
                 "--database", site]) == 1
    assert "Mars/Olympus" in capsys.readouterr().err


# ------------------------------------------------------------------ onsite

def test_onsite_lists_people_whose_last_pass_is_an_entry(site):
    rows = {r["person_id"]: r for r in attendance.on_site(BERLIN, now=local(DAY, 12, 0))}
    assert set(rows) == {"alice", "bob", "dave"}
    alice = rows["alice"]
    assert alice["since"] == berlin(DAY, 8, 2)
    assert (alice["last_door"], alice["last_seen"]) == ("lab", berlin(DAY, 9, 15))
    assert alice["on_site_for"] == dt.timedelta(hours=3, minutes=58)


def test_onsite_keeps_a_night_shift_past_midnight_and_drops_a_missed_exit(site):
    rows = {r["person_id"]: r for r in attendance.on_site(BERLIN, now=local(NEXT, 3, 0))}
    # Carol came in at 22:00; Bob's 09:00 entry is older than the 16-hour longest visit.
    assert set(rows) == {"carol"}
    assert rows["carol"]["since"] == berlin(DAY, 22, 0)


def test_onsite_command_prints_a_table(site, capsys):
    assert main(["report", "onsite", "--timezone", BERLIN, "--database", site, "--csv"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert header.split(",") == list(attendance.ONSITE_COLUMNS)


# ------------------------------------------------------------- door health

@pytest.fixture
def doors(site):
    now = contract.utc_now()
    version = registry.current_version()
    store_available(contract.Available(door_id="front-in", state="online", ts=now - dt.timedelta(hours=2)))
    store_status(contract.Status.model_validate({"schema": 1, "door_id": "front-in", "ts": now, "fps": 4.8,
                                                 "camera": "ok", "cache_version": version, "outbox_depth": 0}))
    store_available(contract.Available(door_id="lab", state="online", ts=now - dt.timedelta(hours=1)))
    store_status(contract.Status.model_validate({"schema": 1, "door_id": "lab", "ts": now, "fps": 0.0,
                                                 "camera": "lost", "cache_version": version - 2,
                                                 "outbox_depth": 12}))
    store_available(contract.Available(door_id="side", state="offline", ts=now - dt.timedelta(minutes=42)))
    return site


def test_door_health_gives_state_duration_camera_fps_outbox_and_version(doors):
    rows = {r["door_id"]: r for r in door_health()}
    front = rows["front-in"]
    assert front["state"] == "online" and front["camera"] == "ok" and front["fps"] == 4.8
    assert front["behind"] == 0 and front["flags"] == ()
    assert dt.timedelta(minutes=119) < front["for"] < dt.timedelta(minutes=121)
    side = rows["side"]
    assert side["state"] == "offline" and "offline" in side["flags"]
    assert dt.timedelta(minutes=41) < side["for"] < dt.timedelta(minutes=43)
    assert side["cache_version"] is None and side["behind"] is None


def test_a_door_behind_centrals_enrolment_version_is_flagged(doors):
    lab = {r["door_id"]: r for r in door_health()}["lab"]
    assert lab["cache_version"] == lab["central_version"] - 2
    assert lab["behind"] == 2
    assert lab["flags"] == ("camera_lost", "behind")
    assert lab["outbox_depth"] == 12


def test_a_door_catches_up_when_its_cache_reaches_centrals_version(doors):
    store_status(contract.Status.model_validate({"schema": 1, "door_id": "lab", "ts": contract.utc_now(),
                                                 "camera": "ok", "cache_version": registry.current_version()}))
    assert {r["door_id"]: r for r in door_health()}["lab"]["flags"] == ()


def test_doors_command_prints_health(doors, capsys):
    assert main(["report", "doors", "--database", doors, "--csv"]) == 0
    rows = {r["door_id"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    assert rows["lab"]["flags"] == "camera_lost,behind"
    assert rows["side"]["state"] == "offline"


def test_door_health_flags_a_lock_or_storage_fault_the_door_reports(doors):
    store_status(contract.Status.model_validate({
        "schema": 1, "door_id": "side", "ts": contract.utc_now(), "camera": "ok",
        "lock_fault": "the lock on GPIO 17 could not be engaged (OSError: busy)",
        "storage_fault": "database or disk is full", "events_held": 3}))
    rows = {r["door_id"]: r for r in door_health()}
    assert {"lock_fault", "storage_fault"} <= set(rows["side"]["flags"])
    assert not {"lock_fault", "storage_fault"} & set(rows["front-in"]["flags"])


def test_attendance_and_door_health_are_the_same_on_postgresql(tmp_path, postgres_url):
    store_site(postgres_url, tmp_path)
    rows = {r.person_id: attendance.csv_row(r) for r in attendance.report(DAY, DAY, BERLIN, now=local(NEXT, 12))}
    assert {p: (r["first_in"], r["last_out"], r["time_on_site"], r["flags"]) for p, r in rows.items()} == {
        "alice": ("2026-11-24T08:02:00+01:00", "2026-11-24T17:45:00+01:00", "9h03", "no_direction"),
        "bob": ("2026-11-24T09:00:00+01:00", "", "0h00", "missing_exit"),
        "carol": ("2026-11-24T22:00:00+01:00", "2026-11-25T06:00:00+01:00", "8h00", ""),
        "dave": ("2026-11-24T07:30:00+01:00", "2026-11-24T16:00:00+01:00", "8h15", ""),
        "erin": ("", "2026-11-24T07:00:00+01:00", "0h00", "missing_entry"),
    }
    assert {r["person_id"] for r in attendance.on_site(BERLIN, now=local(DAY, 12))} == {"alice", "bob", "dave"}
    store_status(contract.Status.model_validate({"schema": 1, "door_id": "lab", "ts": contract.utc_now(),
                                                 "cache_version": 1}))
    assert {r["door_id"]: r for r in door_health()}["lab"]["flags"] == ("behind",)


def test_attendance_takes_the_time_zone_and_visit_limit_from_central_yaml(site, tmp_path, capsys):
    config = tmp_path / "central.yaml"
    config.write_text(f"database:\n  url: {site}\nsite:\n  timezone: {BERLIN}\nattendance:\n  max_visit_hours: 2\n")
    assert main(["report", "attendance", "--date", DAY.isoformat(), "--person", "alice", "-c", str(config),
                 "--csv"]) == 0
    [row] = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["first_in"] == "2026-11-24T08:02:00+01:00"
    # With visits of at most 2 hours, 08:02 never reaches its 12:30 exit.
    assert set(row["flags"].split(";")) == {MISSING_EXIT, MISSING_ENTRY, NO_DIRECTION}
