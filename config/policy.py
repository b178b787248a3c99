"""The ``policy`` section of door.yaml: who may pass this door, and when."""

import datetime as dt
import re
from typing import List, Literal

from pydantic import Field, field_validator, model_validator

from config.base import Section

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def _parse_days(value):
    """``["mon-fri", "sun"]`` -> ``[0, 1, 2, 3, 4, 6]``."""
    days = set()
    for item in value:
        item = str(item).strip().lower()
        if "-" in item:
            first, last = (part.strip()[:3] for part in item.split("-", 1))
            if first not in DAY_NAMES or last not in DAY_NAMES:
                raise ValueError(f"'{item}' is not a day range like mon-fri")
            a, b = DAY_NAMES.index(first), DAY_NAMES.index(last)
            days.update(range(a, b + 1) if a <= b else list(range(a, 7)) + list(range(0, b + 1)))
        elif item[:3] in DAY_NAMES:
            days.add(DAY_NAMES.index(item[:3]))
        else:
            raise ValueError(f"'{item}' is not a day name (mon, tue, wed, thu, fri, sat, sun)")
    return sorted(days)


class RuleSection(Section):
    """One time window in which some groups may pass.

    ``from``/``to`` are local wall-clock times in the site's time zone.  A
    window whose ``to`` is earlier than its ``from`` runs past midnight into
    the next day (night shifts); ``days`` names the day it starts on.
    """

    groups: List[str] = Field(default_factory=list, description="Groups this rule admits; empty admits every enrolled person.")
    days: List[str] = Field(default_factory=lambda: ["mon-sun"], description="Days the window starts on: mon..sun or ranges like mon-fri.")
    from_: str = Field("00:00", alias="from", description="Window start, HH:MM local time.")
    to: str = Field("24:00", description="Window end, HH:MM local time (24:00 = end of day).")

    @field_validator("from_", "to")
    @classmethod
    def _check_time(cls, value):
        if value != "24:00" and not _TIME.match(value):
            raise ValueError("must be a time of day as HH:MM, like 07:30")
        return value

    @field_validator("days")
    @classmethod
    def _check_days(cls, value):
        _parse_days(value)
        return value

    def day_numbers(self):
        return _parse_days(self.days)

    def minutes(self):
        """(start, end) in minutes after midnight; end may be <= start (wraps)."""
        def to_min(text):
            return 24 * 60 if text == "24:00" else int(text[:2]) * 60 + int(text[3:])
        return to_min(self.from_), to_min(self.to)


class HolidaySection(Section):
    """A date on which this door's normal rules are replaced."""

    date: dt.date = Field(..., description="The local date, YYYY-MM-DD.")
    name: str = Field("", max_length=200, description="What the day is, for reports.")
    rules: List[RuleSection] = Field(default_factory=list, description="Rules for that day; none means closed.")


class PolicySection(Section):
    """Access policy, evaluated on the door so it works offline."""

    role: Literal["entry", "exit", "both"] = Field("entry", description="Attendance direction of a grant at this door.")
    direction: Literal["alternate", "entry", "exit"] = Field(
        "alternate",
        description="For role 'both': alternate (each person's next pass is the opposite of their last), "
        "or count every pass as entry or as exit.",
    )
    area: str = Field(
        "site", min_length=1, max_length=64,
        description="Area for anti-passback. Must not contain '/', '+' or '#' (it is part of an MQTT topic).",
    )
    rules: List[RuleSection] = Field(
        default_factory=lambda: [RuleSection()],
        description="Who may pass and when; the default admits every enrolled person at any time.",
    )
    holidays: List[HolidaySection] = Field(default_factory=list, description="Dates with replacement rules.")
    anti_passback: Literal["off", "soft", "hard"] = Field(
        "off", description="soft logs a violation; hard denies a second entry without an exit."
    )
    anti_passback_reset: str = Field("04:00", description="Local time of day at which anti-passback state resets, HH:MM.")
    share_anti_passback: bool = Field(
        True,
        description="Learn the passes at the area's other door units from central's signed relay, so an area "
        "with separate entry and exit units enforces anti-passback as one; off: this unit knows only its own passes.",
    )
    cooldown_seconds: float = Field(10.0, ge=0, le=3600, description="One grant event per person per this many seconds.")

    @field_validator("area")
    @classmethod
    def _check_area(cls, value):
        # The area is one level of an MQTT topic (<prefix>/areas/<area>/passages).
        if any(c in value for c in "/+#\x00"):
            raise ValueError("must not contain '/', '+' or '#' (it is part of an MQTT topic)")
        return value

    @field_validator("anti_passback_reset")
    @classmethod
    def _check_reset(cls, value):
        if not _TIME.match(value):
            raise ValueError("must be a time of day as HH:MM, like 04:00")
        return value

    @model_validator(mode="after")
    def _unique_holidays(self):
        seen = set()
        for holiday in self.holidays:
            if holiday.date in seen:
                raise ValueError(f"holiday {holiday.date} is listed twice")
            seen.add(holiday.date)
        return self


class SiteSection(Section):
    """Facts about the site shared by every rule."""

    timezone: str = Field("UTC", description="IANA time zone of the site, like Europe/Berlin; days and schedules use it.")

    @field_validator("timezone")
    @classmethod
    def _check_zone(cls, value):
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("must be an IANA time zone name like Europe/Berlin or America/New_York") from None
        return value
