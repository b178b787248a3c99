"""The ``policy`` section of door.yaml: who may pass this door, and when."""

import datetime as dt
import re
from typing import Annotated, List, Literal

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from config.base import Section

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
FULL_DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_TIME = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_DAY_HELP = "use mon, tue, wed, thu, fri, sat, sun (or the full names, like monday), or a range like mon-fri"


def _day_number(name):
    """0 for 'mon' or 'monday' (any capitalisation), else None; 'monkey' is not a day."""
    name = name.strip().lower()
    if name in DAY_NAMES:
        return DAY_NAMES.index(name)
    if name in FULL_DAY_NAMES:
        return FULL_DAY_NAMES.index(name)
    return None


def _parse_days(value):
    """``["mon-fri", "sun"]`` -> ``[0, 1, 2, 3, 4, 6]``."""
    days = set()
    for item in value:
        item = str(item).strip()
        if "-" in item:
            a, b = (_day_number(part) for part in item.split("-", 1))
            if a is None or b is None:
                raise ValueError(f"is not a day range; {_DAY_HELP}")
            days.update(range(a, b + 1) if a <= b else list(range(a, 7)) + list(range(0, b + 1)))
        elif _day_number(item) is not None:
            days.add(_day_number(item))
        else:
            raise ValueError(f"is not a day name; {_DAY_HELP}")
    return sorted(days)


def _check_day(value):
    _parse_days([value])
    return value


def time_of_day(text):
    """``"07:30"`` -> ``dt.time(7, 30)``; ValueError unless ``text`` is HH:MM from 00:00 to 23:59."""
    match = _TIME.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a time of day as HH:MM")
    return dt.time(int(match.group(1)), int(match.group(2)))


class RuleSection(Section):
    """One time window in which some groups may pass.

    ``from``/``to`` are local wall-clock times in the site's time zone.  A
    window whose ``to`` is earlier than its ``from`` runs past midnight into
    the next day (night shifts); ``days`` names the day it starts on.
    """

    groups: List[str] = Field(default_factory=list, description="Groups this rule admits; empty admits every enrolled person.")
    days: List[Annotated[str, AfterValidator(_check_day)]] = Field(
        default_factory=lambda: ["mon-sun"],
        description="Days the window starts on: mon..sun (or monday..sunday) or ranges like mon-fri.")
    from_: str = Field("00:00", alias="from", description="Window start, HH:MM local time, 00:00 to 23:59.")
    to: str = Field("24:00", description="Window end, HH:MM local time (24:00 = end of day); not the same as from.")

    @field_validator("from_")
    @classmethod
    def _check_from(cls, value):
        if value == "24:00":
            raise ValueError("must be a time of day from 00:00 to 23:59; 24:00 is allowed only in 'to' "
                             "(a window from the start of the day begins at 00:00)")
        if not _TIME.match(value):
            raise ValueError("must be a time of day as HH:MM, like 07:30")
        return value

    @field_validator("to")
    @classmethod
    def _check_to(cls, value, info: ValidationInfo):
        if value != "24:00" and not _TIME.match(value):
            raise ValueError("must be a time of day as HH:MM, like 07:30")
        # An equal end would read as a 24-hour window that runs past midnight, which is
        # never what the line says; the whole day has its own spelling.
        if value == info.data.get("from_"):
            raise ValueError('is the same as \'from\'; for the whole day write from: "00:00" and to: "24:00" '
                             "(a 24-hour window from another time is two rules)")
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
