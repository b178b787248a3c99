"""The staff dashboard through Flask's test client: logins, roles, CSRF, escaping, erasure."""

import datetime as dt
import io
import os
import re
import sys

import numpy as np
import pytest

from bytelocker import contract
from central import attendance, db, registry, store
from central.clusters import Sighting, StrangerCluster
from central.web import auth, create_app
from config.central import CentralConfig

PASSWORD = "correct horse battery"
HOSTILE = "<script>alert('x')</script>"
# A tiny but real JPEG (1x1 grey), as a door would send in an event.
JPEG = bytes.fromhex(
    "ffd8ffe000104a46494600010100000100010000ffdb004300080606070605080707070909080a0c140d0c0b0b0c1912130f"
    "141d1a1f1e1d1a1c1c20242e2720222c231c1c2837292c30313434341f27393d38323c2e333432ffc0000b080001000101011100"
    "ffc4001f0000010501010101010100000000000000000102030405060708090a0bffc400b5100002010303020403050504040000"
    "017d01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a25262728292a"
    "3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a838485868788898a9293949596"
    "9798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9cad2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2"
    "f3f4f5f6f7f8f9faffda0008010100003f00fbd3ffd9")

PAGES = ["/", "/?date=2026-11-24", "/today.csv", "/unidentified", "/doors", "/doors.json", "/people", "/events",
         "/events?door=front&type=granted&since=24h"]


def now():
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


@pytest.fixture
def config(tmp_path):
    return CentralConfig.model_validate({
        "database": {"url": f"sqlite:///{tmp_path / 'central.db'}"},
        "storage": {"snapshot_dir": str(tmp_path / "snapshots")},
        "web": {"day_start": "09:00"},
    })


@pytest.fixture
def app(config):
    import central.web.auth  # noqa: F401  (its table)

    database = db.open_database(config.database.url)
    auth.set_user("ada", PASSWORD, auth.ADMIN)
    auth.set_user("vic", PASSWORD, auth.VIEWER)
    app = create_app(config, secret_key="test-secret-key")
    yield app
    database.close()


def csrf_of(html):
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "page has no CSRF token"
    return match.group(1)


def log_in(client, username, password=PASSWORD):
    token = csrf_of(client.get("/login").get_data(as_text=True))
    return client.post("/login", data={"csrf_token": token, "username": username, "password": password})


@pytest.fixture
def admin(app):
    client = app.test_client()
    assert log_in(client, "ada").status_code == 302
    return client


@pytest.fixture
def viewer(app):
    client = app.test_client()
    assert log_in(client, "vic").status_code == 302
    return client


def client_at(config, when, username="ada"):
    """A logged-in client of a dashboard whose clock reads ``when`` (naive UTC)."""
    client = create_app(config, secret_key="test-secret-key", clock=lambda: when).test_client()
    assert log_in(client, username).status_code == 302
    return client


def token(client, page="/people"):
    return csrf_of(client.get(page).get_data(as_text=True))


def event(door_id, seq, event_type, when, person_id=None, direction=None, jpeg=None):
    details = {}
    if person_id:
        details["person_id"] = person_id
    if direction:
        details["direction"] = direction
    return contract.Event.build(door_id, seq, event_type, details, snapshot_jpeg=jpeg,
                                ts=when.replace(tzinfo=dt.timezone.utc))


@pytest.fixture
def site(app, config):
    """A day of events: alice on time, bob late, one stranger seen twice with snapshots."""
    today = now().replace(hour=0, minute=0, second=0, microsecond=0)
    registry.enrol("alice", np.random.default_rng(1).normal(size=(1, 128)) * 0.1, name="Alice Smith")
    registry.enrol("bob", np.random.default_rng(2).normal(size=(1, 128)) * 0.1, name="Bob Jones",
                   groups=["staff"])
    events = [
        event("front", 1, "granted", today + dt.timedelta(hours=8, minutes=50), "alice", "entry"),
        event("front", 2, "granted", today + dt.timedelta(hours=9, minutes=40), "bob", "entry"),
        event("front", 3, "unidentified", today + dt.timedelta(hours=10), jpeg=JPEG),
        event("back", 1, "unidentified", today + dt.timedelta(hours=10, minutes=5), jpeg=JPEG),
        event("back", 2, "granted", today + dt.timedelta(hours=17), "alice", "exit", jpeg=JPEG),
    ]
    store.store_events(events, config.storage.snapshot_dir)
    cluster = StrangerCluster.create(first_seen=today + dt.timedelta(hours=10),
                                     last_seen=today + dt.timedelta(hours=10, minutes=5),
                                     sightings=2, doors_json='["back", "front"]')
    for e in events[2:4]:
        stored = store.StoredEvent.get(store.StoredEvent.event_id == str(e.event_id))
        Sighting.create(event_id=stored.event_id, cluster=cluster, door_id=stored.door_id, seen_at=stored.ts,
                        snapshot_path=stored.snapshot_path, vector=np.zeros(128, np.float32).tobytes())
    return {"cluster": cluster, "events": events, "day": today.date()}


# ------------------------------------------------------------------ access

@pytest.mark.parametrize("page", PAGES + ["/snapshots/abc.jpg"])
def test_anonymous_user_is_sent_to_login(app, page):
    response = app.test_client().get(page)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


@pytest.mark.parametrize("who", ["admin", "viewer"])
def test_every_page_renders_for_both_roles(request, site, who):
    client = request.getfixturevalue(who)
    for page in PAGES:
        response = client.get(page)
        assert response.status_code == 200, page
        assert "no-store" in response.headers["Cache-Control"]
    people = client.get("/people").get_data(as_text=True)
    assert "Alice Smith" in people
    assert ("Check photos and enrol" in people) is (who == "admin")
    gallery = client.get("/unidentified").get_data(as_text=True)
    assert site["cluster"].label in gallery
    assert ("Enrol as this person" in gallery) is (who == "admin")


def test_viewer_cannot_post_admin_actions(viewer, site):
    csrf = token(viewer)
    cluster_id = site["cluster"].id
    posts = [
        ("/people/revoke", {"person_id": "alice"}),
        ("/people/forget", {"person_id": "alice", "confirm": "alice"}),
        ("/people/enrol", {"person_id": "mallory", "photos": (io.BytesIO(JPEG), "m.jpg")}),
        (f"/unidentified/{cluster_id}/promote", {"person_id": "mallory"}),
        (f"/unidentified/{cluster_id}/forget", {}),
    ]
    for url, data in posts:
        assert viewer.post(url, data={"csrf_token": csrf, **data}).status_code == 403, url
    assert registry.get_person("alice").active
    assert StrangerCluster.get_or_none(StrangerCluster.id == cluster_id) is not None


def test_post_without_csrf_token_is_rejected(admin, site):
    assert admin.post("/people/revoke", data={"person_id": "alice"}).status_code == 400
    assert admin.post("/people/revoke", data={"person_id": "alice", "csrf_token": "forged"}).status_code == 400
    assert registry.get_person("alice").active


def test_login_without_csrf_token_is_rejected(app):
    response = app.test_client().post("/login", data={"username": "ada", "password": PASSWORD})
    assert response.status_code == 400


def test_login_is_limited_per_user_and_address(app):
    client = app.test_client()
    for _ in range(5):
        assert log_in(client, "ada", "wrong password!").status_code == 401
    # Even the right password is refused now, from this address...
    assert log_in(client, "ada").status_code == 429
    # ...but not from another one, nor for another user.
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.7"
    assert log_in(elsewhere, "ada").status_code == 302
    assert log_in(app.test_client(), "vic").status_code == 302


def test_login_limit_window_expires():
    clock = [1000.0]
    limiter = auth.LoginLimiter(max_failures=2, window=300, clock=lambda: clock[0])
    limiter.failed("ada", "10.0.0.1")
    limiter.failed("ada", "10.0.0.1")
    assert limiter.blocked_for("ADA", "10.0.0.1") > 0
    clock[0] += 301
    assert limiter.blocked_for("ada", "10.0.0.1") == 0


@pytest.mark.parametrize("target, location", [
    ("//evil.example/phish", "/"),
    ("/\t/evil.example", "/"),       # browsers drop the tab: //evil.example
    ("/\n/evil.example", "/"),
    ("/\\evil.example", "/"),
    ("https://evil.example/", "/"),
    ("/ /evil.example", "/"),
    ("/people?sort=name", "/people?sort=name"),
])
def test_login_redirects_only_within_the_site(app, target, location):
    client = app.test_client()
    csrf = csrf_of(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"csrf_token": csrf, "username": "ada", "password": PASSWORD,
                                           "next": target})
    assert response.status_code == 302 and response.headers["Location"] == location


def test_parallel_login_attempts_cannot_pass_the_limit_together():
    import threading

    limiter = auth.LoginLimiter(max_failures=5, window=300)
    allowed = []
    barrier = threading.Barrier(20)

    def guess():
        barrier.wait()
        allowed.append(limiter.attempt("ada", "10.0.0.1") == 0)

    threads = [threading.Thread(target=guess) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 5
    limiter.succeeded("ada", "10.0.0.1")
    assert limiter.attempt("ada", "10.0.0.1") == 0


def test_session_cookie_is_httponly_and_samesite_lax(app, config):
    response = log_in(app.test_client(), "ada")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    config.web.cookie_secure = True
    secure_app = create_app(config, secret_key="test-secret-key")
    client = secure_app.test_client()
    csrf = csrf_of(client.get("/login", base_url="https://localhost").get_data(as_text=True))
    response = client.post("/login", base_url="https://localhost", headers={"Referer": "https://localhost/login"},
                           data={"csrf_token": csrf, "username": "ada", "password": PASSWORD})
    assert "Secure" in response.headers["Set-Cookie"]


def test_a_new_password_ends_old_sessions(admin):
    auth.set_user("ada", "another long password", auth.ADMIN)
    assert admin.get("/people").status_code == 302


def test_logout_ends_the_session(admin):
    assert admin.post("/logout", data={"csrf_token": token(admin)}).status_code == 302
    assert admin.get("/").status_code == 302


# ----------------------------------------------------------------- escaping

def test_hostile_door_ids_and_names_are_rendered_escaped(admin, config):
    # Contract-checked doors cannot send this id; a hand-edited database could.
    store.Door.create(door_id=HOSTILE, availability="online", last_seen=now(),
                      status_json='{"camera": "<img src=x onerror=alert(1)>", "fps": 5}')
    store.StoredEvent.create(event_id="e-hostile", door_id=HOSTILE, seq=1, ts=now(), type="granted",
                             person_id="mallory", details_json='{"reason": "</td><script>x()</script>"}',
                             received_at=now())
    registry.enrol("mallory", np.ones((1, 128)) * 0.01, name=HOSTILE, groups=["<b>g</b>"])
    for page in ["/", "/doors", "/events", "/people", "/events?door=" + HOSTILE]:
        html = admin.get(page).get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>g</b>" not in html, page
        assert "</td><script>" not in html, page
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in admin.get("/doors").get_data(as_text=True)
    assert "&lt;script&gt;" in admin.get("/people").get_data(as_text=True)
    assert admin.get("/doors.json").get_json()["doors"][0]["door_id"] == HOSTILE


def test_pages_forbid_inline_script(admin):
    policy = admin.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy


# ------------------------------------------------------------- today/events

def card(html, title):
    return html.split(title, 1)[1].split("</section>", 1)[0]


def test_today_shows_on_site_and_late_arrivals(app, config, site):
    client = client_at(config, dt.datetime.combine(site["day"], dt.time(18, 0)))
    html = client.get("/").get_data(as_text=True)
    late = card(html, "Late arrivals")
    assert "Bob Jones" in late and "Alice Smith" not in late
    on_site = card(html, "On site now")
    assert "Bob Jones" in on_site and "Alice Smith" not in on_site  # alice left at 17:00


def test_today_csv_downloads_the_day_as_the_attendance_report(admin, site):
    response = admin.get(f"/today.csv?date={site['day'].isoformat()}")
    assert response.mimetype == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    lines = response.get_data(as_text=True).splitlines()
    assert lines[0] == ",".join(attendance.CSV_COLUMNS)
    day = site["day"].isoformat()
    assert any(line.startswith(f"{day},alice,Alice Smith,,{day}T08:50:00+00:00,{day}T17:00:00+00:00,490,8h10,")
               for line in lines)
    assert any(line.startswith(f"{day},bob,Bob Jones,staff,{day}T09:40:00+00:00,,0,") for line in lines)


def test_today_csv_defuses_spreadsheet_formulas(admin, config):
    registry.enrol("mallory", np.ones((1, 128)) * 0.01, name="=HYPERLINK(\"http://evil.example\")")
    day = dt.date(2026, 11, 20)
    store.store_events([event("front", 1, "granted", dt.datetime(2026, 11, 20, 9), "mallory", "entry")],
                       config.storage.snapshot_dir)
    text = admin.get(f"/today.csv?date={day.isoformat()}").get_data(as_text=True)
    assert "'=HYPERLINK(" in text and ",=HYPERLINK(" not in text


BERLIN_DAY = dt.date(2026, 11, 21)  # CET, UTC+1


def utc(day, hour, minute=0):
    return dt.datetime.combine(day, dt.time(hour, minute))


@pytest.fixture
def berlin(app, config):
    """A site in Berlin: a night arrival just after local midnight, one person on time and one late."""
    config.site.timezone = "Europe/Berlin"
    rng = np.random.default_rng(5)
    for person, name in [("nina", "Nina Night"), ("emil", "Emil Early"), ("lara", "Lara Late")]:
        registry.enrol(person, rng.normal(size=(1, 128)) * 0.1, name=name)
    before = BERLIN_DAY - dt.timedelta(days=1)
    store.store_events([
        event("front", 1, "granted", utc(before, 23, 30), "nina", "entry"),      # 00:30 local, on the 21st
        event("front", 2, "granted", utc(BERLIN_DAY, 7, 45), "emil", "entry"),   # 08:45 local: on time
        event("front", 3, "granted", utc(BERLIN_DAY, 8, 30), "lara", "entry"),   # 09:30 local: late
        event("front", 4, "granted", utc(BERLIN_DAY, 16, 0), "emil", "exit"),    # 17:00 local
    ], config.storage.snapshot_dir)
    return config


def test_today_counts_a_day_in_the_sites_time_zone(berlin, admin):
    html = admin.get(f"/?date={BERLIN_DAY.isoformat()}").get_data(as_text=True)
    row = html.split("<td>nina</td>", 1)[1].split("</tr>", 1)[0]
    assert "<td>00:30:00</td>" in row
    assert "<title>00:00 1</title>" in html  # arrivals per local hour
    emil = html.split("<td>emil</td>", 1)[1].split("</tr>", 1)[0]
    assert "<td>08:45:00</td><td>17:00:00</td><td>8h15</td>" in emil
    day_before = admin.get(f"/?date={(BERLIN_DAY - dt.timedelta(days=1)).isoformat()}").get_data(as_text=True)
    assert "Nina Night" not in day_before  # 23:30 UTC is not the 20th in Berlin
    assert "Nina Night" in card(html, "No exit recorded")  # a past day: who never left
    csv_text = admin.get(f"/today.csv?date={BERLIN_DAY.isoformat()}").get_data(as_text=True)
    assert f"{BERLIN_DAY},nina,Nina Night,,{BERLIN_DAY}T00:30:00+01:00,," in csv_text


@pytest.mark.parametrize("date", ["2026-02-30", "yesterday", "0001-01-01", "9999-12-31"])
def test_today_refuses_a_date_it_cannot_report(admin, date):
    assert admin.get(f"/?date={date}").status_code == 400
    assert admin.get(f"/today.csv?date={date}").status_code == 400


def test_late_compares_day_start_with_the_sites_local_time(berlin, admin):
    # day_start is 09:00: both arrived before 09:00 UTC, but Lara at 09:30 Berlin time.
    html = admin.get(f"/?date={BERLIN_DAY.isoformat()}").get_data(as_text=True)
    late = card(html, "Late arrivals")
    assert "Lara Late" in late and "at 09:30" in late
    assert "Emil Early" not in late and "Nina Night" not in late
    assert '<tr class="late">\n  <td>lara</td>' in html


def test_on_site_now_keeps_a_night_shift_past_local_midnight(berlin, config):
    # 06:00 in Berlin on the 22nd: Lara (no exit seen) arrived 20h30 ago, longer than a visit lasts,
    # so only a shift begun last night counts as on site.
    night = BERLIN_DAY + dt.timedelta(days=1)
    store.store_events([event("front", 5, "granted", utc(BERLIN_DAY, 21, 0), "nina", "entry")],
                       config.storage.snapshot_dir)
    html = client_at(config, utc(night, 5, 0)).get("/").get_data(as_text=True)
    assert "<h1>Today</h1>" in html and "No one was let in on this day." in html
    on_site = card(html, "On site now")
    assert "Nina Night" in on_site and f"since {BERLIN_DAY.isoformat()} 22:00" in on_site
    assert "Lara Late" not in on_site and "Emil Early" not in on_site


def test_doors_show_door_health_and_go_silent(app, config, site):
    version = registry.current_version()
    store.store_available(contract.Available(door_id="front", state="online", ts=now() - dt.timedelta(hours=2)))
    store.store_status(contract.Status.model_validate({
        "schema": 1, "door_id": "front", "ts": now(), "fps": 0.0, "camera": "lost",
        "cache_version": version - 1, "outbox_depth": 7}))
    store.store_available(contract.Available(door_id="back", state="offline", ts=now() - dt.timedelta(minutes=30)))
    store.store_events([event("lab", 1, "granted", now(), "alice", "entry")], config.storage.snapshot_dir)
    doors = {d["door_id"]: d for d in client_at(config, now()).get("/doors.json").get_json()["doors"]}
    front, back, lab = doors["front"], doors["back"], doors["lab"]
    assert front["state"] == "online" and front["state_for"] in ("1h59", "2h00")
    assert front["camera"] == "lost" and not front["camera_ok"] and front["outbox_depth"] == 7
    assert front["behind"] and front["flags"] == ["camera_lost", "behind"]
    assert front["events_stored"] == 3 and back["events_stored"] == 2
    assert back["state"] == "offline" and back["flags"] == ["offline"]
    assert lab["state"] == "unknown" and lab["state_for"] == "" and lab["events_stored"] == 1  # only events heard
    # An online door not heard from for five minutes is silent.
    later = client_at(config, now() + dt.timedelta(hours=1))
    assert {d["door_id"]: d["state"] for d in later.get("/doors.json").get_json()["doors"]}["front"] == "silent"
    html = later.get("/doors").get_data(as_text=True)
    assert '<span class="tag state-silent">silent</span> <span class="muted">for 3h' in html
    assert '<span class="tag warn">lost</span>' in html


def test_events_filter_by_person_and_type(admin, site):
    html = admin.get("/events?person=alice&type=granted").get_data(as_text=True)
    body = html.split("<tbody>", 1)[1]
    assert body.count("<tr>") == 2 and "bob" not in body


def test_events_page_shows_whom_an_ambiguous_face_was_nearest_to(admin, site):
    ambiguous = contract.Event.build("front", 9, "denied", {"reason": "ambiguous", "nearest": "bob"})
    store.store_events([ambiguous], "unused")
    assert "bob" not in store.StoredEvent.get(store.StoredEvent.event_id == str(ambiguous.event_id)).details_json

    body = admin.get("/events?type=denied").get_data(as_text=True).split("<tbody>", 1)[1]

    assert "<span>nearest=bob</span>" in body


def test_door_activity_counts_events_per_hour(site):
    from central.web import queries

    evening = dt.datetime.combine(site["day"], dt.time(18, 0))
    start, strips = queries.door_activity(hours=24, now=evening)
    assert start == evening - dt.timedelta(hours=23)
    assert [i for i, n in enumerate(strips["front"]) if n] == [13, 14, 15]
    assert strips["back"][15] == 1 and strips["back"][22] == 1 and sum(strips["back"]) == 2


# ---------------------------------------------------------------- snapshots

def test_snapshots_are_served_only_from_the_snapshot_folder(admin, site, tmp_path):
    sighting = Sighting.select().first()
    response = admin.get(f"/snapshots/{sighting.event_id}.jpg")
    assert response.status_code == 200 and response.data == JPEG
    assert "no-store" in response.headers["Cache-Control"]
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(JPEG)
    store.StoredEvent.create(event_id="e-outside", door_id="front", seq=99, ts=now(), type="unidentified",
                             snapshot_path=str(outside), received_at=now())
    store.StoredEvent.create(event_id="e-dotdot", door_id="front", seq=98, ts=now(), type="unidentified",
                             snapshot_path=os.path.join(str(tmp_path / "snapshots"), "..", "secret.jpg"),
                             received_at=now())
    assert admin.get("/snapshots/e-outside.jpg").status_code == 404
    assert admin.get("/snapshots/e-dotdot.jpg").status_code == 404
    assert admin.get("/snapshots/..%2Fsecret.jpg").status_code == 404


def test_forgetting_a_cluster_removes_its_snapshot_files(admin, site, caplog):
    files = [s.snapshot_path for s in Sighting.select()]
    event_ids = [s.event_id for s in Sighting.select()]
    assert files and all(os.path.isfile(f) for f in files)
    cluster_id = site["cluster"].id
    with caplog.at_level("WARNING", logger="central.web.views"):
        response = admin.post(f"/unidentified/{cluster_id}/forget", data={"csrf_token": token(admin)})
    assert response.status_code == 302
    assert not any(os.path.exists(f) for f in files)
    assert StrangerCluster.get_or_none(StrangerCluster.id == cluster_id) is None
    assert Sighting.select().count() == 0
    assert store.Snapshot.select().where(store.Snapshot.event_id.in_(event_ids)).count() == 0
    assert store.StoredEvent.select().where(store.StoredEvent.event_id.in_(event_ids)
                                            & store.StoredEvent.snapshot_path.is_null(False)).count() == 0
    # Alice's own snapshot is not the stranger's and stays.
    assert store.Snapshot.select().count() == 1
    assert any("ada erased unknown visitor" in r.getMessage() for r in caplog.records)
    assert "Erased unknown visitor" in admin.get("/unidentified").get_data(as_text=True)


def test_promoting_a_stranger_deletes_their_crops_once_enrolled(config, app, describer, grace_hopper):
    import cv2

    from central.enrolment import PhotoChecker

    app.extensions["bytelocker"]["checker"] = PhotoChecker(config.enrolment, describer)
    client = app.test_client()
    log_in(client, "ada")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(grace_hopper, cv2.COLOR_RGB2BGR))
    seen = event("front", 1, "unidentified", now(), jpeg=jpeg.tobytes())
    store.store_events([seen], config.storage.snapshot_dir)
    row = store.StoredEvent.get(store.StoredEvent.event_id == str(seen.event_id))
    cluster = StrangerCluster.create(first_seen=row.ts, last_seen=row.ts, sightings=1, doors_json='["front"]')
    Sighting.create(event_id=row.event_id, cluster=cluster, door_id="front", seen_at=row.ts,
                    snapshot_path=row.snapshot_path, vector=np.zeros(128, np.float32).tobytes())
    assert os.path.isfile(row.snapshot_path)

    response = client.post(f"/unidentified/{cluster.id}/promote",
                           data={"csrf_token": token(client, "/unidentified"), "person_id": "grace"})

    assert response.status_code == 200
    assert registry.descriptors_of("grace").shape == (1, 128)
    # Her face now lives in the registry, which forget erases; no crop is left that names no one.
    assert not os.path.exists(row.snapshot_path)
    assert Sighting.select().count() == 0 and store.Snapshot.select().count() == 0
    assert store.StoredEvent.get(store.StoredEvent.event_id == row.event_id).snapshot_path is None


# ------------------------------------------------------------------ people

def test_admin_revokes_and_forgets_through_the_cli_code_paths(admin, site):
    csrf = token(admin)
    assert admin.post("/people/revoke", data={"csrf_token": csrf, "person_id": "bob"}).status_code == 302
    assert not registry.get_person("bob").active
    version = registry.current_version()
    alice_face = store.StoredEvent.get(store.StoredEvent.person_id == "alice",
                                       store.StoredEvent.snapshot_path.is_null(False)).snapshot_path
    assert os.path.isfile(alice_face)
    # Forget needs the id typed again.
    admin.post("/people/forget", data={"csrf_token": csrf, "person_id": "alice", "confirm": "nope"})
    assert registry.Person.get_or_none(registry.Person.person_id == "alice") is not None
    admin.post("/people/forget", data={"csrf_token": csrf, "person_id": "alice", "confirm": "alice"})
    assert registry.Person.get_or_none(registry.Person.person_id == "alice") is None
    assert not os.path.exists(alice_face)
    assert registry.current_version() == version + 1
    assert store.StoredEvent.select().where(store.StoredEvent.person_id == "alice").count() == 0


def test_enrolment_upload_reports_each_photo(config, app, describer, grace_hopper):
    import cv2

    from central.enrolment import PhotoChecker

    app.extensions["bytelocker"]["checker"] = PhotoChecker(config.enrolment, describer)
    client = app.test_client()
    log_in(client, "ada")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(grace_hopper, cv2.COLOR_RGB2BGR))
    response = client.post("/people/enrol", content_type="multipart/form-data", data={
        "csrf_token": token(client), "person_id": "grace", "name": "Grace Hopper", "groups": "navy, staff",
        "photos": [(io.BytesIO(jpeg.tobytes()), "grace.jpg"), (io.BytesIO(b"not an image"), "broken.jpg")]})
    html = response.get_data(as_text=True)
    assert response.status_code == 200, html
    assert "1 photo(s) enrolled, 1 rejected" in html and "02-broken.jpg" in html
    person = registry.get_person("grace")
    assert person.name == "Grace Hopper" and person.groups == ["navy", "staff"]
    assert len(registry.descriptors_of("grace")) == 1


# -------------------------------------------------------------------- CLI

def test_add_user_command_reads_the_password_from_stdin(tmp_path, monkeypatch, capsys):
    from bytelocker.cli import main

    cfg = tmp_path / "central.yaml"
    cfg.write_text(f"version: 1\ndatabase:\n  url: sqlite:///{tmp_path / 'c.db'}\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["central", "add-user", "carol", "--role", "viewer", "--password-stdin", "-c", str(cfg)]) == 0
    assert "Created dashboard user carol (viewer)" in capsys.readouterr().out
    assert auth.authenticate("carol", PASSWORD).role == auth.VIEWER
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["central", "add-user", "dave", "--role", "admin", "--password-stdin", "-c", str(cfg)]) == 1
    assert "too short" in capsys.readouterr().err
    db.database.close()


def test_central_web_serves_on_loopback_until_sigterm(tmp_path):
    import signal
    import subprocess
    import urllib.request

    from tests.brokers import free_port, wait_for_port

    port = free_port()
    cfg = tmp_path / "central.yaml"
    cfg.write_text(f"version: 1\ndatabase:\n  url: sqlite:///{tmp_path / 'c.db'}\n"
                   f"storage:\n  snapshot_dir: {tmp_path / 'snapshots'}\nweb:\n  port: {port}\n")
    env = {**os.environ, "BYTELOCKER_WEB_SECRET_KEY": "x" * 32}
    proc = subprocess.Popen([sys.executable, "-m", "bytelocker", "central", "web", "-c", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for_port("127.0.0.1", port, timeout=30), proc.stdout.read1().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login") as response:
            assert response.status == 200 and b"ByteLocker staff dashboard" in response.read()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert b"has no users yet" in proc.stdout.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("query", ["since=1000000d", "since=0001-01-01T00:00%2B01:00",
                                   "until=9999-12-31T23:59-01:00", "page=99999999999999999999"])
def test_events_page_answers_odd_filters_without_a_server_error(admin, site, query):
    assert admin.get(f"/events?{query}").status_code < 500
