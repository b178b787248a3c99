"""The dashboard's pages: Today, Unidentified, Doors, People, Events, and the login.

Every view needs a login; the ones that change the registry or erase data
need the admin role (:func:`central.web.auth.admin_required`) and, like every
POST, a CSRF token.  Enrolment, revocation and erasure call the same
functions as the command line (:mod:`central.enrolment`, :mod:`central.registry`),
so a change made here reaches the doors through the same signed sync.
"""

import argparse
import datetime as dt
import io
import logging
import os
import tempfile
from urllib.parse import urlsplit

from flask import (Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request,
                   send_file, session, url_for)
from flask_login import current_user, login_required, login_user, logout_user
from werkzeug.utils import secure_filename

from bytelocker import contract
from bytelocker.errors import ByteLockerError, EnrolmentError
from central import attendance, registry
from central.commands import csv_safe
from central.clusters import StrangerCluster, clusters as list_clusters
from central.door_health import CAMERA_OK, door_health
from central.web import auth, queries

logger = logging.getLogger(__name__)

bp = Blueprint("dash", __name__, static_folder="static", template_folder="templates",
               static_url_path="/static")

EVENTS_PER_PAGE = 200
MAX_EVENTS_PAGE = 1_000_000
UNCLUSTERED_DAYS = 7
# A page of faces stays loadable: the most recently seen visitors, each with
# their newest sightings.  Promotion enrols at most PROMOTE_PHOTOS of them.
CLUSTERS_SHOWN = 100
SIGHTINGS_SHOWN = 24
PROMOTE_PHOTOS = 20
FIRST_DAY = dt.date(1970, 1, 1)
LAST_DAY = dt.date(9998, 12, 31)


def _state():
    return current_app.extensions["bytelocker"]


def _config():
    return _state()["config"]


def format_when(value, fmt="%Y-%m-%d %H:%M:%S"):
    """A datetime as text in its own zone ("" for None): naive UTC, or the site's local time."""
    return value.strftime(fmt) if value else ""


def format_duration(value):
    """A :class:`datetime.timedelta` as ``7h05`` ("" for None)."""
    if value is None:
        return ""
    minutes = int(value.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}"


def _now():
    """Naive UTC now, from the app's clock."""
    return _state()["clock"]()


def _site():
    """``(timezone, max_visit)``: ``site.timezone`` and ``attendance.max_visit_hours`` of central.yaml."""
    config = _config()
    return config.site.timezone, dt.timedelta(hours=config.attendance.max_visit_hours)


def _today():
    """The site's local date now."""
    timezone, _ = _site()
    return attendance.site_today(timezone, now=_now())


def _client_address():
    return request.remote_addr or "?"


def _safe_next(target):
    # Only paths on this site.  Browsers read "//evil" and "/\\evil" as other
    # hosts, and drop tabs and newlines first ("/\t/evil" is "//evil"), so any
    # control character, space or backslash sends the user home instead.
    if (target and all(0x20 < ord(c) < 0x7f for c in target) and "\\" not in target
            and target.startswith("/") and not target.startswith("//")):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for("dash.today")


# ------------------------------------------------------------------ login

@bp.route("/login", methods=["GET", "POST"])
def login():
    """The login form; failed attempts are limited per user name and address."""
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    username = request.form.get("username", "").strip()[:64]
    password = request.form.get("password", "")
    address = _client_address()
    limiter = _state()["limiter"]
    # Counted as a failure before the slow password check, so parallel guesses
    # cannot all pass the limit first; a success clears it.
    wait = limiter.attempt(username, address)
    if wait:
        logger.warning("Dashboard login for %r from %s refused: too many failures.", username, address)
        return render_template("login.html", next=request.form.get("next", ""),
                               error=f"Too many failed logins. Try again in {max(1, wait // 60)} minute(s)."), 429
    user = auth.authenticate(username, password)
    if user is None:
        logger.warning("Failed dashboard login for %r from %s.", username, address)
        return render_template("login.html", next=request.form.get("next", ""),
                               error="Wrong user name or password."), 401
    limiter.succeeded(username, address)
    session.clear()
    login_user(user)
    session.permanent = True
    logger.info("Dashboard user %s (%s) logged in from %s.", user.username, user.role, address)
    return redirect(_safe_next(request.form.get("next")))


@bp.route("/logout", methods=["POST"])
def logout():
    """End the session (a POST with a CSRF token, so no page can log anyone out)."""
    logout_user()
    session.clear()
    return redirect(url_for("dash.login"))


# ------------------------------------------------------------------ today

def _day_arg():
    text = request.args.get("date", "")
    if not text:
        return _today()
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        abort(400, description="The date must look like 2026-11-25.")
    # A report reaches days beyond its own (night shifts, time zones): keep clear of date.min and date.max.
    if not FIRST_DAY <= day <= LAST_DAY:
        abort(400, description=f"The date must be between {FIRST_DAY} and {LAST_DAY}.")
    return day


@bp.route("/")
@login_required
def today():
    """Who came on a local day (today by default): on site now, first in, last out, late arrivals.

    Days, times and ``web.day_start`` are the site's (``site.timezone``), as
    in ``bytelocker report attendance``.
    """
    day = _day_arg()
    timezone, max_visit = _site()
    day_start = _config().web.day_start
    now = _now()
    records = attendance.report(day, day, timezone, max_visit=max_visit, now=now)
    rows = queries.today_rows(records, day_start)
    counts = queries.arrivals_per_hour(records)
    is_today = day == _today()
    if is_today:
        present = attendance.on_site(timezone, now=now, max_visit=max_visit)
    else:
        present = queries.without_exit(records)
    return render_template(
        "today.html", day=day, is_today=is_today, rows=rows, day_start=day_start, timezone=timezone,
        on_site=present, late=[r for r in rows if r["late"]], hours=counts, peak=max(counts) or 1)


@bp.route("/today.csv")
@login_required
def today_csv():
    """The day's attendance as CSV: the columns of ``bytelocker report attendance --csv``."""
    from central.commands import print_rows

    day = _day_arg()
    timezone, max_visit = _site()
    records = attendance.report(day, day, timezone, max_visit=max_visit, now=_now())
    rows = [{k: csv_safe(v) for k, v in attendance.csv_row(r).items()} for r in records]
    out = io.StringIO()
    print_rows(rows, list(attendance.CSV_COLUMNS), as_csv=True, out=out)
    return current_app.response_class(
        out.getvalue(), mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="attendance-{day.isoformat()}.csv"'})


# ----------------------------------------------------------- unidentified

@bp.route("/unidentified")
@login_required
def unidentified():
    """Stranger clusters with their sightings, and unidentified faces not grouped yet."""
    found = list_clusters()
    shown = found[:CLUSTERS_SHOWN]
    sightings = queries.cluster_sightings([c.id for c in shown], per_cluster=SIGHTINGS_SHOWN)
    since = _now() - dt.timedelta(days=UNCLUSTERED_DAYS)
    return render_template("unidentified.html", clusters=shown, hidden=len(found) - len(shown),
                           sightings=sightings, loose=queries.unclustered_unidentified(since),
                           loose_days=UNCLUSTERED_DAYS, promote_photos=PROMOTE_PHOTOS)


def _checker():
    state = _state()
    with state["checker_lock"]:
        if state["checker"] is None:
            from central.enrolment import PhotoChecker
            from edge.describe import FaceDescriber

            state["checker"] = PhotoChecker(_config().enrolment, FaceDescriber())
        return state["checker"]


def _person_form():
    person_id = request.form.get("person_id", "").strip()
    name = request.form.get("name", "").strip()
    groups = [g.strip() for g in request.form.get("groups", "").split(",") if g.strip()]
    problem = None
    if not person_id:
        problem = "Give the person an id."
    elif (len(person_id) > contract.MAX_PERSON_ID_CHARS or len(name) > contract.MAX_PERSON_NAME_CHARS
          or any(len(g) > 64 for g in groups)):
        problem = (f"The id ({contract.MAX_PERSON_ID_CHARS}), name ({contract.MAX_PERSON_NAME_CHARS}) "
                   "or a group (64 characters) is too long.")
    return person_id, name or None, groups or None, problem


@bp.route("/unidentified/<int:cluster_id>/promote", methods=["POST"])
@auth.admin_required
def promote(cluster_id):
    """Enrol a stranger cluster's snapshots as a person, through the normal photo checks."""
    cluster = StrangerCluster.get_or_none(StrangerCluster.id == cluster_id)
    if cluster is None:
        abort(404)
    person_id, name, groups, problem = _person_form()
    if problem:
        flash(problem, "error")
        return redirect(url_for("dash.unidentified"))
    paths = queries.cluster_photo_paths(cluster_id, _state()["snapshot_dir"], limit=PROMOTE_PHOTOS)
    if not paths:
        flash(f"{cluster.label} has no snapshot left to enrol.", "error")
        return redirect(url_for("dash.unidentified"))
    from central.enrolment import enrol_photos

    label = cluster.label
    try:
        result = enrol_photos(person_id, paths, _checker(), name=name, groups=groups)
    except EnrolmentError as exc:
        return render_template("enrolled.html", person_id=person_id, error=str(exc), result=None,
                               back=url_for("dash.unidentified")), 422
    # The stranger is now a person: the cluster, its descriptors and its crops go.
    # A crop left on disk would name no one, so erasing the person could not find it.
    queries.forget_stranger(cluster_id, _state()["snapshot_dir"])
    logger.warning("Dashboard user %s promoted %s to person %r: %d photo(s) enrolled, change version %s.",
                   current_user.username, label, person_id, result.added, result.version)
    return render_template("enrolled.html", person_id=person_id, result=result, error=None,
                           promoted=label, back=url_for("dash.people"))


@bp.route("/unidentified/<int:cluster_id>/forget", methods=["POST"])
@auth.admin_required
def forget_cluster(cluster_id):
    """Erase a stranger: the cluster, its sightings and their snapshot files."""
    cluster = StrangerCluster.get_or_none(StrangerCluster.id == cluster_id)
    if cluster is None:
        abort(404)
    label = cluster.label
    sightings, files = queries.forget_stranger(cluster_id, _state()["snapshot_dir"])
    logger.warning("Dashboard user %s erased %s: %d sighting(s), %d snapshot file(s) deleted.",
                   current_user.username, label, sightings, files)
    flash(f"Erased {label}: {sightings} sighting(s) and {files} snapshot file(s) deleted.", "ok")
    return redirect(url_for("dash.unidentified"))


@bp.route("/snapshots/<event_id>.jpg")
@login_required
def snapshot(event_id):
    """One face snapshot, only if its file lies inside ``storage.snapshot_dir``."""
    if len(event_id) > 64:
        abort(404)
    path = queries.snapshot_path_of(event_id, _state()["snapshot_dir"])
    if path is None:
        abort(404)
    response = send_file(path, mimetype="image/jpeg", max_age=0, conditional=False, etag=False)
    response.headers["Cache-Control"] = "private, no-store"
    return response


# ------------------------------------------------------------------ doors

def _doors_payload():
    now = _now()
    rows = door_health(now)
    stored = queries.events_stored_by_door()
    latest = queries.latest_events_by_door()
    version = registry.current_version()

    def row_json(r):
        return {
            "door_id": r["door_id"], "state": r["state"], "state_for": format_duration(r["for"]),
            "last_seen": format_when(r["last_seen"]), "camera": r["camera"],
            "camera_ok": r["camera"] in (None, CAMERA_OK), "fps": r["fps"], "outbox_depth": r["outbox_depth"],
            "cache_version": r["cache_version"], "behind": bool(r["behind"]), "flags": list(r["flags"]),
            "events_stored": stored.get(r["door_id"], 0),
        }

    return {
        "enrolment_version": version,
        "doors": [row_json(r) for r in rows],
        "events": {door: [{"ts": format_when(e["ts"]), "type": e["type"], "person_id": e["person_id"] or "",
                           "seq": e["seq"]} for e in events] for door, events in latest.items()},
        "at": format_when(now),
    }


@bp.route("/doors")
@login_required
def doors():
    """Every door's health (:func:`central.door_health.door_health`), events stored and latest events."""
    start, strips = queries.door_activity(now=_now())
    peak = max([max(counts) for counts in strips.values()] + [1])
    return render_template("doors.html", data=_doors_payload(), refresh=_config().web.refresh_seconds,
                           activity=strips, activity_start=start, activity_peak=peak)


@bp.route("/doors.json")
@login_required
def doors_json():
    """What the Doors page shows, polled by its script every ``web.refresh_seconds``."""
    return jsonify(_doors_payload())


# ----------------------------------------------------------------- people

@bp.route("/people")
@login_required
def people():
    """Enrolled and revoked people with groups, validity and photo count."""
    return render_template("people.html", people=registry.list_people(), version=registry.current_version())


@bp.route("/people/enrol", methods=["POST"])
@auth.admin_required
def enrol():
    """Enrol uploaded photos (or add them to an existing person), like ``bytelocker enroll``."""
    from central.enrolment import enrol_photos

    person_id, name, groups, problem = _person_form()
    uploads = [f for f in request.files.getlist("photos") if f and f.filename]
    if not problem and not uploads:
        problem = "Choose at least one photo."
    if problem:
        flash(problem, "error")
        return redirect(url_for("dash.people"))
    with tempfile.TemporaryDirectory(prefix="bytelocker-enrol-") as folder:
        paths = []
        for i, upload in enumerate(uploads):
            # The numbered prefix keeps two "photo.jpg" uploads apart.
            path = os.path.join(folder, f"{i + 1:02d}-{secure_filename(upload.filename) or 'photo'}")
            upload.save(path)
            paths.append(path)
        try:
            result = enrol_photos(person_id, paths, _checker(), name=name, groups=groups,
                                  reinstate=bool(request.form.get("reinstate")))
        except EnrolmentError as exc:
            return render_template("enrolled.html", person_id=person_id, error=str(exc), result=None,
                                   back=url_for("dash.people")), 422
    logger.warning("Dashboard user %s enrolled %r: %d photo(s), change version %s.",
                   current_user.username, person_id, result.added, result.version)
    return render_template("enrolled.html", person_id=person_id, result=result, error=None,
                           back=url_for("dash.people"))


@bp.route("/people/revoke", methods=["POST"])
@auth.admin_required
def revoke():
    """Remove a person's access at every door now, like ``bytelocker revoke``."""
    person_id = request.form.get("person_id", "")
    try:
        version = registry.revoke(person_id)
    except EnrolmentError as exc:
        flash(str(exc), "error")
    else:
        logger.warning("Dashboard user %s revoked %r (change version %d).", current_user.username, person_id, version)
        flash(f"Revoked {person_id} at every door (change version {version}).", "ok")
    return redirect(url_for("dash.people"))


@bp.route("/people/forget", methods=["POST"])
@auth.admin_required
def forget():
    """Erase a person everywhere, like ``bytelocker forget``; the id must be typed again to confirm."""
    from central.enrolment import forget_everywhere

    person_id = request.form.get("person_id", "")
    if request.form.get("confirm", "").strip() != person_id:
        flash(f"Nothing erased: type the id {person_id} in the box to confirm.", "error")
        return redirect(url_for("dash.people"))
    try:
        erased = forget_everywhere(person_id, _state()["snapshot_dir"],
                                   threshold=_config().alerts.stranger_threshold)
    except ByteLockerError as exc:
        flash(str(exc), "error")
        return redirect(url_for("dash.people"))
    logger.warning("Dashboard user %s erased person %r: change version %s, %d event(s) anonymised, "
                   "%d snapshot(s) and %d stranger sighting(s) deleted.", current_user.username, person_id,
                   erased.version, erased.events, erased.snapshots, erased.sightings)
    where = (f"everywhere (change version {erased.version})" if erased.version is not None
             else "from central (the id was no longer enrolled)")
    flash(f"Erased {person_id} {where}: {erased.events} event(s) anonymised, {erased.snapshots} snapshot(s) "
          f"and {erased.sightings} stranger sighting(s) deleted.", "ok")
    return redirect(url_for("dash.people"))


# ----------------------------------------------------------------- events

def _time_arg(name):
    from central.commands import parse_time

    text = request.args.get(name, "").strip()
    if not text:
        return None, ""
    try:
        return parse_time(text), text
    except argparse.ArgumentTypeError as exc:
        flash(f"{name}: {exc}", "error")
        return None, text


@bp.route("/events")
@login_required
def events():
    """The event log, newest first, filtered by door, person, type and time."""
    since, since_text = _time_arg("since")
    until, until_text = _time_arg("until")
    event_type = request.args.get("type", "")
    if event_type and event_type not in contract.EVENT_TYPES:
        event_type = ""
    try:
        # Capped: a huge page number is an OFFSET the database cannot take.
        page = min(max(0, int(request.args.get("page", "0"))), MAX_EVENTS_PAGE)
    except ValueError:
        page = 0
    filters = {"door": request.args.get("door", "")[:64], "person": request.args.get("person", "")[:128],
               "type": event_type, "since": since_text, "until": until_text}
    rows, more = queries.events_log(door=filters["door"] or None, person=filters["person"] or None,
                                    event_type=event_type or None, since=since, until=until,
                                    limit=EVENTS_PER_PAGE, offset=page * EVENTS_PER_PAGE)
    return render_template("events.html", rows=rows, more=more, page=page, filters=filters,
                           doors=queries.known_doors(), types=contract.EVENT_TYPES)
