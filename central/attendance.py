"""Attendance and who is on site, from the stored ``granted`` events.

A *pass* is one ``granted`` event of an enrolled person: its time, door and
direction.  The direction is the event's ``details.direction`` (``entry`` or
``exit``, from doors with a role); a grant without a direction counts as an
**entry** and carries ``assumed=True`` (the day is flagged ``no_direction``).

Passes become *visits*, per person, in time order:

* an entry with no visit open opens one; an entry while a visit is open is
  part of that visit (an inner door, or a missed exit we cannot place);
* an exit closes the open visit; an exit with no visit open is a visit of its
  own with no entry (flagged ``missing_entry``) and no time on site;
* a visit still open ``max_visit`` after its entry ends there without an exit
  (flagged ``missing_exit``): nothing is invented, and a later exit does not
  close it.

**Days** are local dates in the site's time zone.  A visit, and every pass in
it, belongs to the day on which it *started*: an exit at 06:00 after an entry
at 22:00 the evening before closes the previous day's visit (night shifts).
Time on site is the real elapsed time of closed entry→exit visits only (on a
DST day a 22:00→06:00 shift is 7 or 9 hours, as the clocks say), so a day
whose last pass is an entry has no last-out, is flagged ``missing_exit``, and
its open visit adds nothing.  A visit still open and younger than
``max_visit`` at report time is flagged ``on_site`` instead.

Times in the records are timezone-aware, in the site's zone.  Stored times
are naive UTC (:mod:`central.store`).
"""

import collections
import dataclasses
import datetime as dt
import json
import logging
from zoneinfo import ZoneInfo

from bytelocker.errors import ReportError
from central.registry import Person
from central.store import StoredEvent, utcnow

logger = logging.getLogger(__name__)

ENTRY = "entry"
EXIT = "exit"

MISSING_EXIT = "missing_exit"
MISSING_ENTRY = "missing_entry"
ON_SITE = "on_site"
NO_DIRECTION = "no_direction"

DEFAULT_MAX_VISIT = dt.timedelta(hours=16)

# The stable CSV columns of ``report attendance --csv`` (docs/attendance.md).
CSV_COLUMNS = ("date", "person_id", "name", "groups", "first_in", "last_out", "time_on_site_minutes",
               "time_on_site", "visits", "entries", "exits", "doors", "flags", "passes")
TABLE_COLUMNS = ("date", "person_id", "name", "first_in", "last_out", "time_on_site", "visits", "doors", "flags")
ONSITE_COLUMNS = ("person_id", "name", "since", "on_site_for", "last_seen", "last_door", "last_direction")


@dataclasses.dataclass(frozen=True)
class Pass:
    """One granted passage: ``ts`` naive UTC, ``local`` the same instant in the site's zone."""

    ts: dt.datetime
    local: dt.datetime
    door_id: str
    direction: str
    assumed: bool = False


@dataclasses.dataclass
class Visit:
    """An entry and its exit, either of which may be missing (never both)."""

    passes: list
    entry: Pass = None
    exit: Pass = None

    @property
    def closed(self):
        return self.entry is not None and self.exit is not None

    @property
    def duration(self):
        """Elapsed time from entry to exit, or None when either is missing."""
        return self.exit.ts - self.entry.ts if self.closed else None

    @property
    def day(self):
        """The local date the visit started on (night-shift rule)."""
        return self.passes[0].local.date()


@dataclasses.dataclass
class DayRecord:
    """One person's attendance on one local day.

    ``first_in`` is the first entry and ``last_out`` the exit of the day's
    last visit (None when that visit has no exit); ``time_on_site`` sums the
    closed visits only.  ``flags`` is a sorted tuple of ``missing_exit``,
    ``missing_entry``, ``on_site`` and ``no_direction``.
    """

    date: dt.date
    person_id: str
    name: str
    groups: tuple
    visits: list
    flags: tuple

    @property
    def passes(self):
        return [p for v in self.visits for p in v.passes]

    @property
    def first_in(self):
        entries = [v.entry for v in self.visits if v.entry is not None]
        return entries[0].local if entries else None

    @property
    def last_out(self):
        last = self.visits[-1]
        return last.exit.local if last.exit is not None else None

    @property
    def time_on_site(self):
        return sum((v.duration for v in self.visits if v.closed), dt.timedelta())

    @property
    def doors(self):
        return sorted({p.door_id for p in self.passes})


def _zone(timezone):
    return timezone if isinstance(timezone, dt.tzinfo) else ZoneInfo(timezone)


def site_today(timezone, *, now=None):
    """The site's local date at ``now`` (naive UTC; default the clock).

    Staff mean the site's day when they say "today": at 00:30 in Berlin the
    UTC date is still yesterday's.
    """
    now = now or utcnow()
    return now.replace(tzinfo=dt.timezone.utc).astimezone(_zone(timezone)).date()


def day_start_utc(day, timezone):
    """Local midnight starting ``day`` in ``timezone``, as naive UTC."""
    local = dt.datetime.combine(day, dt.time(), tzinfo=_zone(timezone))
    return local.astimezone(dt.timezone.utc).replace(tzinfo=None)


def load_passes(since, until, timezone, *, person_ids=None):
    """``{person_id: [Pass, ...]}`` of granted events with ``since <= ts < until`` (naive UTC), in time order."""
    zone = _zone(timezone)
    query = (StoredEvent.select(StoredEvent.person_id, StoredEvent.ts, StoredEvent.door_id,
                                StoredEvent.details_json)
             .where((StoredEvent.type == "granted") & StoredEvent.person_id.is_null(False)
                    & (StoredEvent.ts >= since) & (StoredEvent.ts < until))
             .order_by(StoredEvent.ts, StoredEvent.door_id, StoredEvent.seq))
    if person_ids is not None:
        query = query.where(StoredEvent.person_id.in_(list(person_ids)))
    people = collections.defaultdict(list)
    for person_id, ts, door_id, details_json in query.tuples():
        try:
            direction = json.loads(details_json or "{}").get("direction")
        except ValueError:
            direction = None
        assumed = direction not in (ENTRY, EXIT)
        local = ts.replace(tzinfo=dt.timezone.utc).astimezone(zone)
        people[person_id].append(Pass(ts, local, door_id, ENTRY if assumed else direction, assumed))
    return people


def load_anchored_passes(since, until, timezone, max_visit, *, person_ids=None):
    """:func:`load_passes`, each person's list reaching back to where visits can be grouped afresh.

    :func:`build_visits` lets an entry absorb the passes of the next
    ``max_visit``, so where the grouping starts changes the visits it finds.
    Each person's passes are extended back until their earliest one has no
    pass of theirs in the ``max_visit`` before it: no visit can be open
    there, so a one-day report groups the same passes as a month's.
    """
    people = load_passes(since, until, timezone, person_ids=person_ids)
    edge = since
    while True:
        # Only someone whose earliest pass is within max_visit of the edge
        # can have an earlier pass that still counts.
        reaching = [pid for pid, passes in people.items() if passes[0].ts - max_visit < edge]
        if not reaching:
            return people
        earlier = load_passes(edge - max_visit, edge, timezone, person_ids=reaching)
        if not earlier:
            return people
        for person_id, passes in earlier.items():
            people[person_id][:0] = passes
        edge -= max_visit


def build_visits(passes, max_visit=DEFAULT_MAX_VISIT):
    """Group one person's passes (time order) into :class:`Visit` objects; see the module docstring."""
    visits = []
    current = None
    for p in passes:
        if current is not None and p.ts - current.entry.ts > max_visit:
            current = None  # ended without an exit; stays open, flagged missing_exit
        if p.direction == ENTRY:
            if current is None:
                current = Visit(passes=[p], entry=p)
                visits.append(current)
            else:
                current.passes.append(p)
        elif current is None:
            visits.append(Visit(passes=[p], exit=p))
        else:
            current.passes.append(p)
            current.exit = p
            current = None
    return visits


def _flags(visits, now, max_visit, is_latest):
    flags = set()
    for i, visit in enumerate(visits):
        if visit.entry is None:
            flags.add(MISSING_ENTRY)
        elif visit.exit is None:
            still_open = is_latest and i == len(visits) - 1 and now - visit.entry.ts <= max_visit
            flags.add(ON_SITE if still_open else MISSING_EXIT)
        if any(p.assumed for p in visit.passes):
            flags.add(NO_DIRECTION)
    return tuple(sorted(flags))


def _people(person=None, group=None):
    """``{person_id: (name, groups)}`` of the registry, or None for "everyone" when unfiltered."""
    query = Person.select(Person.person_id, Person.name, Person.groups_json)
    if person is not None:
        query = query.where(Person.person_id == person)
    found = {}
    for person_id, name, groups_json in query.tuples():
        groups = tuple(json.loads(groups_json or "[]"))
        if group is None or group in groups:
            found[person_id] = (name, groups)
    return found


def report(first_day, last_day, timezone, *, person=None, group=None, max_visit=DEFAULT_MAX_VISIT, now=None):
    """Attendance per person per local day, ``first_day`` to ``last_day`` inclusive.

    :param timezone: the site's IANA zone name (``site.timezone``) or a tzinfo.
    :param person: only this person id.
    :param group: only people whose registry groups include this group.
    :param max_visit: a :class:`datetime.timedelta`; an entry without an exit
        stops counting as a visit this long after it (``attendance.max_visit_hours``).
    :param now: naive UTC "now", for the ``on_site`` flag (default: now).

    Returns :class:`DayRecord` objects ordered by date, then first pass, then person.
    """
    if last_day < first_day:
        first_day, last_day = last_day, first_day
    now = now or utcnow()
    known = _people(person, group)
    person_ids = None
    if group is not None:
        person_ids = list(known)
    elif person is not None:
        person_ids = [person]
    if person_ids is not None and not person_ids:
        return []
    # A visit starting on last_day may end up to max_visit later; one that an
    # exit on first_day closes began up to max_visit earlier, and what came
    # before it is found by load_anchored_passes.
    since = day_start_utc(first_day, timezone) - max_visit
    until = day_start_utc(last_day + dt.timedelta(days=1), timezone) + max_visit
    records = []
    for person_id, passes in load_anchored_passes(since, until, timezone, max_visit,
                                                  person_ids=person_ids).items():
        visits = build_visits(passes, max_visit)
        name, groups = known.get(person_id, ("", ()))
        by_day = collections.OrderedDict()
        for visit in visits:
            by_day.setdefault(visit.day, []).append(visit)
        latest_day = visits[-1].day if visits else None
        for day, day_visits in by_day.items():
            if first_day <= day <= last_day:
                flags = _flags(day_visits, now, max_visit, day == latest_day)
                records.append(DayRecord(day, person_id, name, groups, day_visits, flags))
    records.sort(key=lambda r: (r.date, r.passes[0].ts, r.person_id))
    return records


def on_site(timezone, *, now=None, max_visit=DEFAULT_MAX_VISIT):
    """Who is on site at ``now`` (naive UTC): people whose latest visit is open and younger than ``max_visit``.

    Returns dicts ordered by arrival: ``person_id``, ``name``, ``groups``,
    ``since`` (the visit's entry), ``on_site_for`` (a timedelta),
    ``last_seen``, ``last_door`` and ``last_direction`` (their latest pass).
    Times are aware, in the site's zone.  A night shift stays on site past
    midnight; someone whose exit was missed drops off after ``max_visit``.
    """
    now = now or utcnow()
    known = _people()
    rows = []
    passes_by_person = load_anchored_passes(now - max_visit, now + dt.timedelta(seconds=1), timezone, max_visit)
    for person_id, passes in passes_by_person.items():
        visits = build_visits(passes, max_visit)
        last = visits[-1] if visits else None
        if last is None or last.entry is None or last.exit is not None or now - last.entry.ts > max_visit:
            continue
        latest = last.passes[-1]
        name, groups = known.get(person_id, ("", ()))
        rows.append({"person_id": person_id, "name": name, "groups": groups, "since": last.entry.local,
                     "on_site_for": now - last.entry.ts, "last_seen": latest.local,
                     "last_door": latest.door_id, "last_direction": latest.direction})
    rows.sort(key=lambda r: (r["since"], r["person_id"]))
    return rows


# ----------------------------------------------------------------- output

def _iso(when):
    return when.isoformat(timespec="seconds") if when is not None else ""


def _hours_minutes(delta):
    # The same "9h03" as the other reports' durations.
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}"


def csv_row(record):
    """One :class:`DayRecord` as the documented CSV columns (all strings)."""
    passes = record.passes
    return {
        "date": record.date.isoformat(),
        "person_id": record.person_id,
        "name": record.name,
        "groups": ";".join(record.groups),
        "first_in": _iso(record.first_in),
        "last_out": _iso(record.last_out),
        "time_on_site_minutes": str(int(record.time_on_site.total_seconds() // 60)),
        "time_on_site": _hours_minutes(record.time_on_site),
        "visits": str(len(record.visits)),
        "entries": str(sum(1 for p in passes if p.direction == ENTRY)),
        "exits": str(sum(1 for p in passes if p.direction == EXIT)),
        "doors": ";".join(record.doors),
        "flags": ";".join(record.flags),
        "passes": ";".join(f"{_iso(p.local)} {p.direction} {p.door_id}" for p in passes),
    }


def _table_time(when, day):
    if when is None:
        return ""
    text = when.strftime("%H:%M:%S")
    # A night shift's exit falls on a later date than the row's day.
    return text if when.date() == day else f"{when:%Y-%m-%d} {text}"


def table_row(record):
    """One :class:`DayRecord` for the terminal table: local times, ``H:MM`` durations."""
    row = csv_row(record)
    row["first_in"] = _table_time(record.first_in, record.date)
    row["last_out"] = _table_time(record.last_out, record.date)
    row["doors"] = ",".join(record.doors)
    row["flags"] = ",".join(record.flags)
    return row


# --------------------------------------------------------------- commands

def _site(args):
    """(timezone, max_visit) from central.yaml, or UTC and the defaults when only ``--database`` is given."""
    from bytelocker.errors import ConfigError
    from config.loader import load_central_config

    timezone = getattr(args, "timezone", None)
    max_visit = DEFAULT_MAX_VISIT
    try:
        config = load_central_config(args.config)
    except ConfigError:
        # With --database the config is optional: UTC and the defaults then.
        if not args.database:
            raise
        config = None
    if config is not None:
        timezone = timezone or config.site.timezone
        max_visit = dt.timedelta(hours=config.attendance.max_visit_hours)
    timezone = timezone or "UTC"
    try:
        ZoneInfo(timezone)
    except (ValueError, LookupError):
        raise ReportError(f"{timezone!r} is not an IANA time zone name like Europe/Berlin.") from None
    return timezone, max_visit


def cmd_attendance(args):
    """``bytelocker report attendance``: per person per local day, as a table or CSV."""
    from central.commands import TODAY, _open, print_rows

    if (args.from_date or args.date) is None:
        raise ReportError("Give the days to report: --date D, or --from D [--to D].")
    timezone, max_visit = _site(args)
    # "today" is parsed as a word, so it becomes the site's date, not UTC's.
    first, last, one_day = (site_today(timezone) if d == TODAY else d
                            for d in (args.from_date, args.to_date, args.date))
    first = first or one_day
    last = last or one_day or first
    _open(args)
    records = report(first, last, timezone, person=args.person, group=args.group, max_visit=max_visit)
    if args.csv:
        print_rows([csv_row(r) for r in records], list(CSV_COLUMNS), True)
    else:
        print_rows([table_row(r) for r in records], list(TABLE_COLUMNS), False)
    return 0


def cmd_onsite(args):
    """``bytelocker report onsite``: who is on site now, since when, and where last seen."""
    from central.commands import _open, print_rows

    timezone, max_visit = _site(args)
    _open(args)
    rows = []
    for row in on_site(timezone, max_visit=max_visit):
        rows.append(dict(row, since=_iso(row["since"]), last_seen=_iso(row["last_seen"]),
                         on_site_for=_hours_minutes(row["on_site_for"])))
    print_rows(rows, list(ONSITE_COLUMNS), args.csv)
    return 0
