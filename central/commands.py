"""``bytelocker central run`` and ``bytelocker report ...``.

Reports read the database named in central.yaml (or ``--database``) and
print a table, or CSV with ``--csv``.  Times are UTC.
"""

import argparse
import csv
import datetime as dt
import importlib

from bytelocker.cli import lazy
import re
import sys

from bytelocker.errors import ConfigError

DEFAULT_CONFIG = "/etc/bytelocker/central.yaml"


def register(subparsers):
    """Add ``central`` and ``report`` to ``subparsers``."""
    central = subparsers.add_parser("central", help="run the central collector")
    cs = central.add_subparsers(dest="central_command", metavar="ACTION", required=True)
    p = cs.add_parser("run", help="store every door's events until stopped (SIGTERM/SIGINT)")
    p.add_argument("--config", "-c", required=True, help="central.yaml")
    p.set_defaults(func=lazy("central.collector:cmd_run"))
    importlib.import_module("central.web_commands").register_central(cs)  # dashboard: web, add-user

    report = subparsers.add_parser("report", help="attendance, unidentified visitors, doors, events")
    rs = report.add_subparsers(dest="report_command", metavar="REPORT", required=True)

    def add(name, help_text, func, table=True):
        p = rs.add_parser(name, help=help_text)
        p.add_argument("--config", "-c", default=DEFAULT_CONFIG, help=f"central.yaml (default {DEFAULT_CONFIG})")
        p.add_argument("--database", metavar="URL", help="database URL instead of the config's database.url")
        if table:
            p.add_argument("--csv", action="store_true", help="print CSV instead of a table")
        p.set_defaults(func=func)
        return p

    # Attendance, onsite and door health live in central.attendance and central.door_health.
    p = add("attendance", "each person's first in, last out, time on site and passes per local day",
            lazy("central.attendance:cmd_attendance"))
    p.add_argument("--date", type=parse_date, metavar="YYYY-MM-DD", help="one day (site time zone), or 'today'")
    p.add_argument("--from", dest="from_date", type=parse_date, metavar="YYYY-MM-DD",
                   help="first day of a range, or 'today'")
    p.add_argument("--to", dest="to_date", type=parse_date, metavar="YYYY-MM-DD",
                   help="last day (default: --from), or 'today'")
    who = p.add_mutually_exclusive_group()
    who.add_argument("--person", metavar="ID", help="only this person")
    who.add_argument("--group", metavar="G", help="only people in this registry group")
    p.add_argument("--timezone", metavar="ZONE", help="site time zone instead of the config's site.timezone")
    p = add("onsite", "who is on site now, since when, and where they were last seen",
            lazy("central.attendance:cmd_onsite"))
    p.add_argument("--timezone", metavar="ZONE", help="site time zone instead of the config's site.timezone")
    p = add("unidentified", "faces nobody recognised, with their snapshot files", cmd_unidentified)
    p.add_argument("--since", required=True, type=parse_time, metavar="T",
                   help="UTC time (2026-11-25 or 2026-11-25T08:00) or an age (90m, 24h, 7d)")
    add("doors", "each door: online/offline and for how long, camera, fps, outbox, enrolment version",
        lazy("central.door_health:cmd_doors"))
    p = add("events", "stored events, oldest first", cmd_events)
    p.add_argument("--door", help="only this door")
    p.add_argument("--since", type=parse_time, metavar="T", help="UTC time or an age (24h, 7d)")
    p.add_argument("--until", type=parse_time, metavar="T", help="UTC time or an age")
    p.add_argument("--type", dest="event_type", help="only this event type (granted, denied, ...)")
    p.add_argument("--limit", type=positive_int, default=None, help="at most this many rows")


# ---------------------------------------------------------------- arguments

TODAY = "today"
"""What :func:`parse_date` returns for ``today``; the command resolves it in the site's time zone."""


def parse_date(text):
    """A :class:`datetime.date` from ``YYYY-MM-DD``, or :data:`TODAY` for ``today``."""
    if text == TODAY:
        return TODAY
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-11-25") from None


def positive_int(text):
    """A whole number of at least 1, for ``--limit``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def parse_time(text, now=None):
    """An ISO UTC date/time, or an age like ``90m``, ``24h``, ``7d`` before now; naive UTC."""
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    age = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if age:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[age.group(2)]
    try:
        if age:
            return now - dt.timedelta(**{unit: float(age.group(1))})
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        if when.tzinfo is not None:
            when = when.astimezone(dt.timezone.utc).replace(tzinfo=None)
    except (ValueError, OverflowError):
        # OverflowError: an age past year 1, or a time zone that moves year 1 or 9999 out of range.
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like 2026-11-25T08:00 or an age like 24h") from None
    return when


# ------------------------------------------------------------------ output

def _cell(value):
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, dt.timedelta):
        minutes = int(value.total_seconds() // 60)
        return f"{minutes // 60}h{minutes % 60:02d}"
    return str(value)


def csv_safe(value):
    """``value`` as CSV text that a spreadsheet will not run as a formula.

    Names, ids and groups are free text typed by people; a cell starting
    with ``=``, ``+``, ``-`` or ``@`` would be a formula in Excel or Calc.
    """
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def print_rows(rows, columns, as_csv=False, out=None):
    """Print ``rows`` (dicts) as an aligned table, or as CSV safe to open in a spreadsheet."""
    out = out or sys.stdout
    if as_csv:
        writer = csv.writer(out)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([csv_safe(_cell(row.get(c))) for c in columns])
        return
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(), file=out)
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)
    if not rows:
        print("(no rows)", file=out)


def _open(args):
    from central.db import open_database
    from config.loader import load_central_config

    url = args.database
    if url:
        from pydantic import ValidationError

        from config.central import DatabaseSection

        try:
            DatabaseSection(url=url)
        except ValidationError as exc:
            raise ConfigError(f"--database {url!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}.") from None
    else:
        try:
            url = load_central_config(args.config).database.url
        except ConfigError as exc:
            raise ConfigError(f"{exc} (give --config or --database)", exc.problems) from None
    password = None
    try:
        from config import secrets

        password = secrets.read_secret(secrets.DATABASE_PASSWORD.name, secrets.DATABASE_PASSWORD.env_var)
    except ImportError:  # pragma: no cover
        pass
    # Reports only read: a mistyped path must not create an empty database that looks like a quiet site.
    return open_database(url, password, create=False)


# ---------------------------------------------------------------- commands

def cmd_unidentified(args):
    from central import reports

    _open(args)
    print_rows(reports.unidentified(args.since), ["ts", "door_id", "event_id", "snapshot_path", "snapshot_dropped"],
               args.csv)


def cmd_events(args):
    from central import reports

    _open(args)
    rows = reports.events(door=args.door, since=args.since, until=args.until,
                          event_type=args.event_type, limit=args.limit)
    print_rows(rows, ["ts", "door_id", "seq", "type", "person_id", "details", "snapshot_path"], args.csv)
