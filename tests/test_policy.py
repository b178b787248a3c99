"""Access policy: schedules in the site's time zone, holidays, validity, anti-passback, cooldown."""

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from config.policy import PolicySection
from edge import cache
from edge.policy import AccessPolicy, PersonFacts

BERLIN = "Europe/Berlin"
UTC = dt.timezone.utc


def policy(**kwargs):
    return PolicySection.model_validate(kwargs)


def at(text, zone=BERLIN):
    """An aware instant from local wall-clock text."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def make(section, people=None, zone=BERLIN):
    people = people or {"ann": PersonFacts(("staff",))}
    return AccessPolicy(section, zone, person_lookup=people.get, persist=False)


OFFICE = dict(rules=[
    {"groups": ["staff"], "days": ["mon-fri"], "from": "07:00", "to": "19:00"},
    {"groups": ["night"], "days": ["fri"], "from": "22:00", "to": "06:00"},
], cooldown_seconds=0)


def test_weekday_window_admits_staff_inside_and_denies_outside():
    p = make(policy(**OFFICE))
    assert p.check("ann", at("2026-11-23T07:00")).allowed  # Monday 07:00
    verdict = p.check("ann", at("2026-11-23T19:00"))
    assert not verdict.allowed and verdict.reason == "outside_schedule"


def test_weekend_is_outside_a_mon_fri_window():
    verdict = make(policy(**OFFICE)).check("ann", at("2026-11-28T10:00"))  # Saturday
    assert (verdict.allowed, verdict.reason) == (False, "outside_schedule")


def test_night_window_runs_past_midnight_into_the_next_day():
    p = make(policy(**OFFICE), {"nik": PersonFacts(("night",))})
    assert p.check("nik", at("2026-11-27T23:30")).allowed  # Friday night
    assert p.check("nik", at("2026-11-28T05:59")).allowed  # Saturday early, same shift
    assert not p.check("nik", at("2026-11-28T06:00")).allowed
    assert not p.check("nik", at("2026-11-28T23:30")).allowed  # Saturday night: no shift


def test_group_without_any_rule_is_denied_as_group_not_allowed():
    verdict = make(policy(**OFFICE), {"sam": PersonFacts(("students",))}).check(
        "sam", at("2026-11-23T10:00"))
    assert (verdict.allowed, verdict.reason) == (False, "group_not_allowed")


def test_window_follows_local_wall_clock_across_dst_change():
    # Berlin leaves DST on 2026-10-25; the window is wall-clock time, so 07:30 local is
    # inside on both sides of the change although the UTC instants differ by an hour.
    p = make(policy(rules=[{"groups": ["staff"], "days": ["mon-sun"], "from": "07:00", "to": "08:00"}],
                    cooldown_seconds=0))
    before = dt.datetime(2026, 10, 24, 5, 30, tzinfo=UTC)  # 07:30 CEST
    after = dt.datetime(2026, 10, 26, 6, 30, tzinfo=UTC)  # 07:30 CET
    assert p.check("ann", before).allowed
    assert p.check("ann", after).allowed
    assert not p.check("ann", dt.datetime(2026, 10, 26, 5, 30, tzinfo=UTC)).allowed  # 06:30 CET


def test_closed_holiday_replaces_the_normal_rules():
    p = make(policy(holidays=[{"date": "2026-12-25", "name": "Christmas"}], **OFFICE))
    verdict = p.check("ann", at("2026-12-25T10:00"))  # a Friday
    assert (verdict.allowed, verdict.reason) == (False, "outside_schedule")
    assert p.check("ann", at("2026-12-24T10:00")).allowed


def test_staff_only_holiday_admits_staff_and_not_others():
    section = policy(
        rules=[{"groups": [], "days": ["mon-sun"], "from": "00:00", "to": "24:00"}],
        holidays=[{"date": "2026-12-31", "rules": [{"groups": ["staff"], "from": "08:00", "to": "12:00"}]}],
        cooldown_seconds=0,
    )
    people = {"ann": PersonFacts(("staff",)), "sam": PersonFacts(("students",))}
    p = make(section, people)
    assert p.check("ann", at("2026-12-31T09:00")).allowed
    assert not p.check("ann", at("2026-12-31T13:00")).allowed
    assert not p.check("sam", at("2026-12-31T09:00")).allowed
    assert p.check("sam", at("2026-12-30T23:00")).allowed


def test_expired_and_not_yet_valid_people_are_denied_with_the_reason():
    people = {
        "old": PersonFacts(("staff",), valid_until=dt.datetime(2026, 1, 1, tzinfo=UTC)),
        "new": PersonFacts(("staff",), valid_from=dt.datetime(2027, 1, 1, tzinfo=UTC)),
    }
    p = make(policy(), people)
    now = at("2026-11-23T10:00")
    assert p.check("old", now).reason == "person_expired"
    assert p.check("new", now).reason == "person_not_yet_valid"


def test_person_missing_from_the_cache_is_denied():
    assert make(policy()).check("ghost", at("2026-11-23T10:00")).reason == "not_enrolled"


def test_hard_anti_passback_denies_a_second_entry_without_exit():
    p = make(policy(anti_passback="hard", cooldown_seconds=0))
    assert p.check("ann", at("2026-11-23T08:00")).allowed
    verdict = p.check("ann", at("2026-11-23T09:00"))
    assert (verdict.allowed, verdict.reason) == (False, "anti_passback")


def test_soft_anti_passback_grants_and_flags_the_violation():
    p = make(policy(anti_passback="soft", cooldown_seconds=0))
    assert "anti_passback_violation" not in p.check("ann", at("2026-11-23T08:00")).details
    verdict = p.check("ann", at("2026-11-23T09:00"))
    assert verdict.allowed and verdict.details["anti_passback_violation"] is True


def test_anti_passback_resets_daily_at_the_configured_time():
    p = make(policy(anti_passback="hard", anti_passback_reset="04:00", cooldown_seconds=0))
    assert p.check("ann", at("2026-11-23T20:00")).allowed
    assert not p.check("ann", at("2026-11-24T03:59")).allowed
    assert p.check("ann", at("2026-11-24T04:01")).allowed


def test_a_reset_time_inside_the_spring_forward_gap_is_never_in_the_future():
    # Berlin skips 02:00-03:00 on 2026-03-29, so that day's 02:30 reset is 03:30 CEST.
    p = make(policy(anti_passback="hard", anti_passback_reset="02:30", cooldown_seconds=0))
    assert p.check("ann", at("2026-03-29T03:05")).allowed
    assert p.check("ann", at("2026-03-29T03:15")).reason == "anti_passback"
    for wall in ("2026-03-29T03:10", "2026-03-29T03:29", "2026-03-29T03:31", "2026-03-28T12:00"):
        assert p.schedule.last_reset(at(wall), "02:30") <= at(wall)


def test_both_door_alternates_direction_per_person():
    p = make(policy(role="both", direction="alternate", cooldown_seconds=0),
             {"ann": PersonFacts(("staff",)), "bob": PersonFacts(("staff",))})
    t = at("2026-11-23T08:00")
    assert p.check("ann", t).details["direction"] == "entry"
    assert p.check("bob", t).details["direction"] == "entry"
    assert p.check("ann", t).details["direction"] == "exit"
    assert p.check("ann", t).details["direction"] == "entry"


def test_cooldown_suppresses_repeated_grants_of_one_person():
    p = make(policy(cooldown_seconds=60), {"ann": PersonFacts(("staff",)), "bob": PersonFacts(())})
    t = at("2026-11-23T08:00")
    first = p.check("ann", t)
    assert first.allowed and not first.suppressed
    again = p.check("ann", t)
    assert again.allowed and again.suppressed
    assert not p.check("bob", t).suppressed


def test_anti_passback_state_survives_a_restart(tmp_path):
    cache.open_cache(str(tmp_path / "cache.db"))
    try:
        cache.upsert_person("ann", [[0.0] * 128], groups=["staff"])
        section = policy(anti_passback="hard", cooldown_seconds=0)
        assert AccessPolicy(section, BERLIN).check("ann", at("2026-11-23T08:00")).allowed
        verdict = AccessPolicy(section, BERLIN).check("ann", at("2026-11-23T09:00"))
        assert verdict.reason == "anti_passback"
    finally:
        cache.close_cache()


@pytest.mark.parametrize("bad", [
    {"rules": [{"from": "25:00"}]},
    {"rules": [{"days": ["funday"]}]},
    {"holidays": [{"date": "2026-12-25"}, {"date": "2026-12-25"}]},
    {"anti_passback": "maybe"},
])
def test_bad_policy_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        policy(**bad)
