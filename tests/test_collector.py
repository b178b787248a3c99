"""The central collector, against a real Mosquitto (and a temp PostgreSQL)."""

import base64
import datetime as dt
import json
import os
import random
import threading
import time
import uuid

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from bytelocker import contract
from central import attendance, reports, retention
from central.collector import Collector
from central.store import Door, Snapshot, StoredEvent, store_events
from config.central import CentralConfig
from tests.postgres import postgres_cluster, postgres_url  # noqa: F401 (fixtures)
from tests.waiting import eventually


def central_config(broker, tmp_path, url=None, **collector):
    return CentralConfig.model_validate({
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_seconds": 0.1},
        "database": {"url": url or f"sqlite:///{tmp_path}/central.db"},
        "storage": {"snapshot_dir": str(tmp_path / "snapshots")},
        "collector": collector,
    })


class Door_:
    """A raw MQTT client posing as doors: publishes exact bytes at QoS 1."""

    def __init__(self, broker):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def send(self, topic, payload, retain=False):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        return info

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def collector_for():
    started = []

    def start(config):
        collector = Collector(config, threading.Event()).start()
        assert collector.wait_connected(15)
        started.append(collector)
        return collector

    yield start
    for collector in started:
        collector.stop()


def jpeg(seed=0, side=48):
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
    return buf.tobytes()


def event(door="door-1", seq=1, kind="granted", details=None, **kwargs):
    return contract.Event.build(door, seq, kind, details if details is not None else {"person_id": "p1"}, **kwargs)


def topic(door="door-1", leaf="events"):
    return contract.door_topic("bytelocker", door, leaf)


def stored_count():
    return StoredEvent.select().count()


def test_collector_stores_events_and_ignores_duplicate_deliveries(broker, tmp_path, collector_for):
    collector = collector_for(central_config(broker, tmp_path))
    door = Door_(broker)
    events = [event(seq=i) for i in range(1, 21)]
    for e in events + events[:10]:
        door.send(topic(), e.to_json())
    assert eventually(lambda: collector.stats["stored"] + collector.stats["duplicates"] == 30)
    assert stored_count() == 20
    assert collector.stats["duplicates"] == 10
    assert sorted(s for (s,) in StoredEvent.select(StoredEvent.seq).tuples()) == list(range(1, 21))
    door.close()


def test_collector_threads_are_named(broker, tmp_path, collector_for):
    collector_for(central_config(broker, tmp_path))
    names = {t.name for t in threading.enumerate()}
    assert {"collector-mqtt", "collector-writer", "retention"} <= names


def test_snapshot_is_saved_to_disk_and_its_path_kept_on_the_event(broker, tmp_path, collector_for):
    collector = collector_for(central_config(broker, tmp_path))
    door = Door_(broker)
    crop = jpeg()
    e = event(kind="unidentified", details={"frames_used": 5}, snapshot_jpeg=crop)
    door.send(topic(), e.to_json())
    assert eventually(lambda: collector.stats["stored"] == 1)
    row = StoredEvent.get(StoredEvent.event_id == str(e.event_id))
    assert row.snapshot_path.startswith(str(tmp_path / "snapshots" / "door-1"))
    with open(row.snapshot_path, "rb") as fh:
        assert fh.read() == crop
    assert Snapshot.get(Snapshot.event_id == str(e.event_id)).size == len(crop)
    door.close()


def test_person_id_is_kept_only_in_its_column(broker, tmp_path, collector_for):
    collector = collector_for(central_config(broker, tmp_path))
    door = Door_(broker)
    door.send(topic(), event(details={"person_id": "alice", "distance": 0.3}).to_json())
    assert eventually(lambda: collector.stats["stored"] == 1)
    row = StoredEvent.get()
    assert row.person_id == "alice"
    assert "alice" not in row.details_json and row.details["distance"] == 0.3
    door.close()


def test_collector_tracks_availability_and_last_status(broker, tmp_path, collector_for):
    collector = collector_for(central_config(broker, tmp_path))
    door = Door_(broker)
    door.send(topic(leaf="status"), contract.status_payload("door-1", fps=5.0, outbox_depth=7), retain=True)
    door.send(topic(leaf="available"), contract.available_payload("door-1", "online"), retain=True)
    assert eventually(lambda: Door.get_or_none(Door.door_id == "door-1") is not None
                      and Door.get(Door.door_id == "door-1").availability == "online"
                      and Door.get(Door.door_id == "door-1").outbox_depth == 7)
    door.send(topic(leaf="available"), contract.available_payload("door-1", "offline", with_time=False))
    assert eventually(lambda: Door.get(Door.door_id == "door-1").availability == "offline")
    assert Door.get(Door.door_id == "door-1").status["fps"] == 5.0
    door.close()


def hostile_payloads(rng):
    """About a thousand bad messages of many kinds, each paired with its topic."""
    good = event(door="door-2", seq=1).to_dict()
    bad = []
    for i in range(1000):
        kind = i % 12
        data = dict(good, event_id=str(uuid.uuid4()))
        door = "door-2"
        if kind == 0:
            payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300)))
        elif kind == 1:
            payload = json.dumps(dict(data, seq=rng.choice(["12", None, -5, 1.5, [1], {"a": 1}, True]))).encode()
        elif kind == 2:
            payload = json.dumps(dict(data, details={"reason": "x" * 50000})).encode()
        elif kind == 3:
            payload = json.dumps(dict(data, snapshot="%%%not base64%%%")).encode()
        elif kind == 4:
            payload = json.dumps(dict(data, schema=rng.choice([0, 2, "1", None, 99]))).encode()
        elif kind == 5:
            # A door trying to write events in another door's name.
            payload = json.dumps(dict(data, door_id="door-3")).encode()
        elif kind == 6:
            payload = json.dumps(dict(data, type=rng.choice(["opened", "", 5, None]))).encode()
        elif kind == 7:
            payload = json.dumps(dict(data, ts=rng.choice(["yesterday", 12345, "2026-13-45T00:00:00Z"]))).encode()
        elif kind == 8:
            payload = json.dumps([data]).encode()
        elif kind == 9:
            payload = json.dumps(dict(data, event_id="not-a-uuid")).encode()
        elif kind == 10:
            payload = json.dumps(dict(data, details={"distance": "near", "frames_used": "many"})).encode()
        else:
            payload = b'{"schema":1,"nested":' + b"[" * 5000 + b"]" * 5000 + b"}"
        bad.append((topic(door), payload))
    bad.append((topic("door-2", "status"), b'{"schema":1,"door_id":"door-2","ts":"now"}'))
    bad.append((topic("door-2", "available"), b'{"schema":1,"door_id":"door-1","state":"online"}'))
    bad.append((topic("door-2", "events"), b"x" * (contract.MAX_PAYLOAD_BYTES + 10)))
    return bad


def test_hostile_payloads_are_counted_and_good_events_keep_flowing(broker, tmp_path, collector_for):
    collector = collector_for(central_config(broker, tmp_path))
    rng = random.Random(7)
    bad = hostile_payloads(rng)
    good = [event(door="door-1", seq=i, details={"person_id": f"p{i % 5}"}) for i in range(1, 201)]
    door = Door_(broker)
    messages = [(topic("door-1"), e.to_json()) for e in good] + bad
    rng.shuffle(messages)
    for t, payload in messages:
        door.send(t, payload)
    assert eventually(lambda: collector.stats["received"] >= len(messages), 60)
    assert eventually(lambda: collector.stats["stored"] == 200, 20)
    assert collector.stats["rejected"] == len(bad)
    assert stored_count() == 200
    assert collector.rejected_by_door["door-2"] == len(bad)
    # Still up and still storing.
    door.send(topic("door-2"), event(door="door-2", seq=5).to_json())
    assert eventually(lambda: collector.stats["stored"] == 201)
    door.close()


def test_events_sent_while_central_is_away_are_kept_by_the_broker(broker, tmp_path, collector_for):
    config = central_config(broker, tmp_path)
    first = Collector(config, threading.Event()).start()
    assert first.wait_connected(15)
    first.stop()
    door = Door_(broker)
    for i in range(1, 51):
        door.send(topic(), event(seq=i).to_json()).wait_for_publish(5)
    collector = collector_for(config)
    assert eventually(lambda: collector.stats["stored"] == 50)
    door.close()


def test_retention_purges_old_snapshots_files_and_references_then_old_events(tmp_path):
    from central.db import open_database

    open_database(f"sqlite:///{tmp_path}/central.db")
    config = CentralConfig.model_validate({"storage": {"snapshot_dir": str(tmp_path / "snaps")}})
    now = dt.datetime(2026, 11, 25, 12, 0)
    old_face = event(kind="unidentified", details={}, snapshot_jpeg=jpeg(1), ts=now - dt.timedelta(days=31))
    new_face = event(seq=2, kind="unidentified", details={}, snapshot_jpeg=jpeg(2), ts=now - dt.timedelta(days=2))
    ancient = event(seq=3, ts=now - dt.timedelta(days=400))
    store_events([old_face, new_face, ancient], config.storage.snapshot_dir)
    old_path = StoredEvent.get(StoredEvent.event_id == str(old_face.event_id)).snapshot_path
    assert os.path.exists(old_path)
    result = retention.purge(config.storage, now=now)
    assert result == {"snapshots": 1, "sightings": 0, "events": 1, "alerts": 0}
    assert not os.path.exists(old_path)
    assert StoredEvent.get(StoredEvent.event_id == str(old_face.event_id)).snapshot_path is None
    assert os.path.exists(StoredEvent.get(StoredEvent.event_id == str(new_face.event_id)).snapshot_path)
    assert StoredEvent.get_or_none(StoredEvent.event_id == str(ancient.event_id)) is None
    assert Snapshot.select().count() == 1


def test_retention_forgets_old_stranger_descriptors_and_old_alerts(tmp_path):
    from central.alerts import Alert, raise_alert
    from central.clusters import Sighting, StrangerCluster, StrangerClusters, clusters as list_clusters
    from central.db import open_database

    open_database(f"sqlite:///{tmp_path}/central.db")
    config = CentralConfig.model_validate({"storage": {"snapshot_dir": str(tmp_path / "snaps")}})
    now = dt.datetime(2026, 11, 25, 12, 0)
    rng = np.random.default_rng(7)
    old_face, kept_face, gone_face = (rng.normal(size=128).astype(np.float32) for _ in range(3))
    old_face, kept_face, gone_face = (v / np.linalg.norm(v) for v in (old_face, kept_face, gone_face))
    strangers = StrangerClusters()
    # One visitor seen 40 days ago at the lab and yesterday at the front; another only 40 days ago.
    twice = strangers.assign(old_face, event_id="e1", door_id="lab", seen_at=now - dt.timedelta(days=40))
    strangers.assign(old_face + 0.01, event_id="e2", door_id="front", seen_at=now - dt.timedelta(days=1))
    once = strangers.assign(gone_face, event_id="e3", door_id="lab", seen_at=now - dt.timedelta(days=40))
    assert StrangerCluster.get_by_id(twice.id).sightings == 2
    raise_alert("door_forced", "old", "door:lab", now - dt.timedelta(days=400), "old", {})
    raise_alert("door_forced", "new", "door:lab", now - dt.timedelta(days=3), "new", {})

    result = retention.purge(config.storage, now=now)

    assert result == {"snapshots": 0, "sightings": 2, "events": 0, "alerts": 1}
    assert sorted(s.event_id for s in Sighting.select()) == ["e2"]
    kept = StrangerCluster.get_by_id(twice.id)
    assert (kept.sightings, kept.doors, kept.first_seen) == (1, ["front"], now - dt.timedelta(days=1))
    emptied = StrangerCluster.get_by_id(once.id)
    assert (emptied.sightings, emptied.doors) == (0, [])
    assert [c.id for c in list_clusters()] == [twice.id]
    assert [a.key for a in Alert.select()] == ["new"]
    # The matcher no longer holds the purged faces: the one seen only 40 days ago is a new
    # visitor with a new number, and his old cluster stays empty.
    again = strangers.assign(gone_face, event_id="e4", door_id="lab", seen_at=now)
    assert again.id not in (once.id, twice.id)
    assert StrangerCluster.get_by_id(once.id).sightings == 0
    assert strangers.assign(kept_face, event_id="e5", door_id="lab", seen_at=now).id not in (once.id, again.id)
    # A year on, the empty cluster goes with the events.
    retention.purge(config.storage, now=now + dt.timedelta(days=400))
    assert StrangerCluster.get_or_none(StrangerCluster.id == once.id) is None


def test_postgres_storage_is_idempotent_and_reports_work(broker, tmp_path, collector_for, postgres_url):
    collector = collector_for(central_config(broker, tmp_path, url=postgres_url))
    door = Door_(broker)
    day = dt.datetime.now(dt.timezone.utc)
    events = [event(seq=i, details={"person_id": f"p{i % 3}"}) for i in range(1, 31)]
    crop = event(seq=31, kind="unidentified", details={}, snapshot_jpeg=jpeg(3))
    for e in events + events[:5] + [crop]:
        door.send(topic(), e.to_json())
    assert eventually(lambda: collector.stats["stored"] + collector.stats["duplicates"] == 36)
    assert collector.stats["stored"] == 31
    assert StoredEvent.select().count() == 31
    rows = attendance.report(day.date(), day.date(), "UTC")
    assert sorted(r.person_id for r in rows) == ["p0", "p1", "p2"]
    assert sum(len(r.passes) for r in rows) == 30
    assert reports.unidentified(day.replace(tzinfo=None) - dt.timedelta(hours=1))[0]["snapshot_path"]
    door.close()


def test_malformed_snapshot_base64_in_a_real_event_is_rejected(broker, tmp_path, collector_for):
    collector = collector_for(central_config(broker, tmp_path))
    door = Door_(broker)
    data = event(kind="unidentified", details={}, snapshot_jpeg=jpeg()).to_dict()
    data["snapshot"] = data["snapshot"][:-5] + "!!!!="
    door.send(topic(), json.dumps(data).encode())
    door.send(topic(), json.dumps(dict(data, snapshot=base64.b64encode(b"\x00" * 10).decode())).encode())
    assert eventually(lambda: collector.stats["rejected"] == 2)
    assert stored_count() == 0
    door.close()


def test_central_run_command_stores_events_and_stops_cleanly_on_sigterm(broker, tmp_path):
    import signal
    import subprocess
    import sys

    from central.db import open_database

    config = tmp_path / "central.yaml"
    config.write_text(
        "version: 1\n"
        f"mqtt:\n  host: {broker.host}\n  port: {broker.port}\n"
        f"database:\n  url: sqlite:///{tmp_path}/central.db\n"
        f"storage:\n  snapshot_dir: {tmp_path}/snapshots\n"
    )
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-m", "bytelocker", "central", "run", "-c", str(config)], cwd=repo)
    try:
        door = Door_(broker)
        sent = event(seq=1)
        assert eventually(lambda: os.path.exists(tmp_path / "central.db"), 20)
        open_database(f"sqlite:///{tmp_path}/central.db")

        def stored():
            # Central may not have subscribed yet: resend until it has stored it.
            door.send(topic(), sent.to_json())
            return StoredEvent.select().count() == 1

        assert eventually(stored, 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        door.close()
    finally:
        proc.kill()


def test_collector_sends_each_door_a_receipt_for_stored_and_duplicate_events(broker, tmp_path, collector_for):
    collector = collector_for(central_config(broker, tmp_path))
    receipts = []
    listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    listener.on_message = lambda c, u, m: receipts.append((m.topic, json.loads(m.payload)))
    listener.connect(broker.host, broker.port)
    listener.subscribe("bytelocker/receipts/+", qos=1)
    listener.loop_start()
    time.sleep(0.3)
    door = Door_(broker)
    mine = [event(door="door-1", seq=i) for i in range(1, 4)]
    theirs = [event(door="door-2", seq=1)]
    for e in mine + theirs + mine[:1]:
        door.send(topic(e.door_id), e.to_json())
    assert eventually(lambda: collector.stats["stored"] + collector.stats["duplicates"] == 5)

    def confirmed(door_id):
        return [i for t, r in receipts if t.endswith("/" + door_id) and r["door_id"] == door_id for i in r["event_ids"]]

    assert eventually(lambda: len(confirmed("door-1")) == 4)
    assert sorted(set(confirmed("door-1"))) == sorted(str(e.event_id) for e in mine)
    assert confirmed("door-2") == [str(theirs[0].event_id)]
    door.close()
    listener.disconnect()
    listener.loop_stop()


def test_collector_reports_a_dead_or_wedged_thread_for_the_watchdog(broker, tmp_path, collector_for):
    collector = collector_for(central_config(broker, tmp_path))
    assert collector.healthy() is None
    # A writer that stopped going round its loop (wedged in a call) ...
    collector._writer_beat -= 1000
    assert "writer has not come round its loop" in collector.healthy()
    collector._writer_beat = time.monotonic()
    # ... or a thread that died.
    dead = threading.Thread(target=lambda: None, name="collector-writer")
    dead.start()
    dead.join()
    collector._threads[0] = dead
    assert collector.healthy() == "the collector-writer thread has stopped"
