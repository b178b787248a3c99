"""Central's alerts on <prefix>/central/alerts, through a real Mosquitto and the real collector."""

import datetime as dt
import json
import threading
import time

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest

from bytelocker import contract
from central import alerts
from central.alerts import Alert, Alerter
from central.collector import Collector
from central.db import open_database
from central.store import store_available
from config.central import CentralConfig
from tests.postgres import postgres_cluster, postgres_url  # noqa: F401 (fixtures)
from tests.waiting import eventually


def central_config(broker, tmp_path, mqtt_settings=None, **alert_settings):
    return CentralConfig.model_validate({
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_seconds": 0.1, **(mqtt_settings or {})},
        "database": {"url": f"sqlite:///{tmp_path}/central.db"},
        "storage": {"snapshot_dir": str(tmp_path / "snapshots")},
        "alerts": {"check_interval_seconds": 1, **alert_settings},
    })


class Client:
    """A raw MQTT 5 client: publishes exact bytes at QoS 1 and records what arrives on one topic."""

    def __init__(self, broker, subscribe=None):
        self.received = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.received.append(json.loads(m.payload))
        self.client.on_subscribe = lambda c, u, mid, codes, p: (
            self._subscribed.set() if not any(rc.is_failure for rc in codes) else None)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if subscribe:
            self.client.subscribe(subscribe, qos=1)
            assert self._subscribed.wait(10), "the broker did not confirm the subscription"

    def send(self, topic, payload, retain=False):
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        info.wait_for_publish(10)

    def of_type(self, alert_type):
        return [a for a in self.received if a["type"] == alert_type]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def central(broker, tmp_path):
    """``start(**alert_settings)`` -> (collector, alerter, alert listener, door client), all stopped after."""
    running = []

    def start(mqtt_settings=None, **settings):
        config = central_config(broker, tmp_path, mqtt_settings, **settings)
        stop = threading.Event()
        alerter = Alerter(config, stop)
        collector = Collector(config, stop, alerter=alerter).start()
        alerter.start()
        assert collector.wait_connected(15) and alerter.wait_connected(15)
        listener = Client(broker, subscribe=contract.alerts_topic(config.mqtt.prefix))
        doors = Client(broker)
        running.append((collector, alerter, listener, doors))
        return collector, alerter, listener, doors

    yield start
    for collector, alerter, listener, doors in running:
        doors.close()
        listener.close()
        collector.stop()
        alerter.stop()


def face_crop(rgb, grow=0.3):
    """A door-like JPEG face crop: the detected face with a margin."""
    from edge.detect import FaceDetector

    box = FaceDetector(model="hog", upsample=1, min_face_px=20).detect(rgb)[0]
    mx, my = int(box.width * grow), int(box.height * grow)
    h, w = rgb.shape[:2]
    crop = rgb[max(0, box.top - my):min(h, box.bottom + my), max(0, box.left - mx):min(w, box.right + mx)]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(crop[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return buf.tobytes()


def event(door, seq, kind, details=None, **kwargs):
    return contract.Event.build(door, seq, kind, details or {}, **kwargs)


def test_the_same_stranger_at_two_doors_raises_one_visitor_alert(central, astronaut):
    collector, alerter, listener, doors = central()
    darker = np.clip(astronaut.astype(np.float32) * 0.6, 0, 255).astype(np.uint8)
    now = contract.utc_now()
    first = event("front", 1, "unidentified", {"frames_used": 5}, snapshot_jpeg=face_crop(astronaut),
                  ts=now - dt.timedelta(minutes=3))
    second = event("back", 1, "unidentified", {"frames_used": 5}, snapshot_jpeg=face_crop(darker), ts=now)
    doors.send(contract.events_topic("bytelocker", "front"), first.to_json())
    # A redelivery of the same event is not a second sighting.
    doors.send(contract.events_topic("bytelocker", "front"), first.to_json())
    doors.send(contract.events_topic("bytelocker", "back"), second.to_json())

    assert eventually(lambda: listener.of_type("stranger_at_doors"), timeout=60)
    time.sleep(2)
    [alert] = listener.of_type("stranger_at_doors")
    assert alert["schema"] == 1 and alert["details"]["doors"] == ["back", "front"]
    assert alert["details"]["sightings"] == 2
    assert alert["details"]["label"].endswith(": 2 sightings at 2 doors")
    assert alert["ts"] == contract.format_timestamp(second.ts)
    assert listener.of_type("stranger_repeated") == []   # two sightings are not three
    assert Alert.get(Alert.alert_id == alert["alert_id"]).published_at is not None


def test_a_door_offline_past_the_threshold_raises_one_alert_and_one_clear(central):
    collector, alerter, listener, doors = central(door_offline_minutes=5)
    topic = contract.available_topic("bytelocker", "lab")
    gone = contract.utc_now() - dt.timedelta(minutes=10)
    doors.send(topic, contract.Available(door_id="lab", state="offline", ts=gone).to_json(), retain=True)

    assert eventually(lambda: listener.of_type("door_offline"))
    time.sleep(2.5)  # more than two checks
    [alert] = listener.of_type("door_offline")
    assert alert["details"]["door_id"] == "lab" and alert["details"]["state"] == "offline"
    assert alert["details"]["since"] == contract.format_timestamp(gone)
    assert alert["ts"] == contract.format_timestamp(gone + dt.timedelta(minutes=5))
    assert "Door lab has been offline" in alert["message"]

    doors.send(topic, contract.available_payload("lab", "online"), retain=True)
    assert eventually(lambda: listener.of_type("door_offline_cleared"))
    time.sleep(1.5)
    assert len(listener.of_type("door_offline_cleared")) == 1
    assert len(listener.of_type("door_offline")) == 1


def test_a_door_offline_for_less_than_the_threshold_raises_nothing(central):
    collector, alerter, listener, doors = central(door_offline_minutes=5)
    doors.send(contract.available_topic("bytelocker", "lab"),
               contract.Available(door_id="lab", state="offline", ts=contract.utc_now()).to_json(), retain=True)
    from central.store import Door

    assert eventually(lambda: Door.get_or_none(Door.door_id == "lab") is not None)
    checks = alerter.stats["checks"]
    assert eventually(lambda: alerter.stats["checks"] >= checks + 2, timeout=10)
    time.sleep(0.5)
    assert listener.received == []


def test_a_forced_open_door_raises_one_alert_per_incident(central):
    collector, alerter, listener, doors = central(forced_repeat_seconds=60)
    topic = contract.events_topic("bytelocker", "lab")
    now = contract.utc_now()
    forced = event("lab", 1, "door_forced", {"door": "lab", "lock_engaged": True}, ts=now)
    doors.send(topic, forced.to_json())
    doors.send(topic, forced.to_json())  # delivered twice (QoS 1)
    # Rattled again 10 s later: the same incident.
    doors.send(topic, event("lab", 2, "door_forced", ts=now + dt.timedelta(seconds=10)).to_json())
    assert eventually(lambda: listener.of_type("door_forced"))
    time.sleep(2)
    [alert] = listener.of_type("door_forced")
    assert alert["details"] == {"door_id": "lab", "event_id": str(forced.event_id), "seq": 1}
    # Forced again five minutes later: a new incident.
    doors.send(topic, event("lab", 3, "door_forced", ts=now + dt.timedelta(minutes=5)).to_json())
    assert eventually(lambda: len(listener.of_type("door_forced")) == 2)


def test_an_alert_raised_while_the_broker_is_away_is_published_when_it_returns(central, broker):
    # Central waits at least 2 s before reconnecting, so a fresh listener subscribes first.
    collector, alerter, listener, doors = central(mqtt_settings={"reconnect_min_seconds": 2})
    broker.stop()
    assert eventually(lambda: not alerter.wait_connected(0), timeout=10)
    forced = alerter.door_forced(event("lab", 1, "door_forced", ts=contract.utc_now()))
    time.sleep(1)
    assert Alert.get_by_id(forced.id).published_at is None
    broker.start()
    returned = Client(broker, subscribe=contract.alerts_topic("bytelocker"))
    try:
        assert eventually(lambda: returned.of_type("door_forced"), timeout=60)
        assert returned.of_type("door_forced")[0]["alert_id"] == forced.alert_id
        assert eventually(lambda: Alert.get_by_id(forced.id).published_at is not None)
    finally:
        returned.close()


def test_an_alert_the_broker_refuses_stays_unpublished_and_is_not_hammered(tmp_path):
    import os

    from tests.brokers import Mosquitto

    acl = tmp_path / "acl"
    acl.write_text("topic read bytelocker/#\ntopic write bytelocker/doors/#\n")
    # As root, mosquitto drops to its own user, which cannot read pytest's tmp_path.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    broker = Mosquitto(tmp_path / "acl-broker", extra_conf=f"acl_file {acl}\n{run_as}")
    broker.start()
    config = central_config(broker, tmp_path)
    open_database(config.database.url)
    alerter = Alerter(config, threading.Event()).start()
    try:
        assert alerter.wait_connected(15)
        forced = alerter.door_forced(event("lab", 1, "door_forced", ts=contract.utc_now()))
        assert eventually(lambda: alerter.stats["refused"] == 1, timeout=10)
        time.sleep(2)  # four watch passes
        assert alerter.stats["refused"] == 1 and alerter.stats["published"] == 0
        assert Alert.get_by_id(forced.id).published_at is None
    finally:
        alerter.stop()
        broker.stop()


# ------------------------------------------------------------ no broker needed

@pytest.fixture
def alerter(tmp_path):
    config = CentralConfig.model_validate({
        "database": {"url": f"sqlite:///{tmp_path}/central.db"},
        "storage": {"snapshot_dir": str(tmp_path / "snapshots")},
        "alerts": {"stranger_queue_max": 10},
    })
    open_database(config.database.url)
    return Alerter(config, threading.Event())


def test_feeding_faces_never_blocks_ingest_when_the_queue_is_full(alerter):
    ok, buf = cv2.imencode(".jpg", np.full((60, 60, 3), 120, np.uint8))
    events = [event("front", i + 1, "unidentified", snapshot_jpeg=buf.tobytes()) for i in range(50)]
    started = time.perf_counter()
    alerter.feed(events)
    assert time.perf_counter() - started < 0.5
    assert alerter.stats["faces"] == 10 and alerter.stats["faces_skipped"] == 40


def test_offline_alerts_are_not_raised_again_after_a_restart(alerter):
    since = contract.utc_now() - dt.timedelta(hours=1)
    store_available(contract.Available(door_id="lab", state="offline", ts=since))
    assert len(alerter.check_doors()) == 1
    assert alerter.check_doors() == []
    restarted = Alerter(alerter.config, threading.Event())
    assert restarted.check_doors() == []
    assert Alert.select().count() == 1


def test_a_stopped_door_alerts_only_when_configured(alerter):
    store_available(contract.Available(door_id="lab", state="stopped",
                                       ts=contract.utc_now() - dt.timedelta(hours=1)))
    assert alerter.check_doors() == []
    alerter.settings = alerter.settings.model_copy(update={"stopped_is_offline": True})
    [alert] = alerter.check_doors()
    assert alert.type == "door_offline" and alert.details["state"] == "stopped"


def test_alert_payload_carries_schema_id_type_time_and_details(alerter):
    at = dt.datetime(2026, 11, 25, 8, 0)
    alert = alerts.raise_alert("door_forced", "door_forced:x", "door:lab", at, "Door lab was forced open.",
                               {"door_id": "lab"})
    data = json.loads(alert.payload())
    assert set(data) == {"schema", "alert_id", "type", "ts", "raised_at", "message", "details"}
    assert data["schema"] == 1 and data["ts"] == "2026-11-25T08:00:00.000000Z"
    assert alerts.raise_alert("door_forced", "door_forced:x", "door:lab", at, "again", {}) is None


def test_alerts_are_raised_once_on_postgresql(tmp_path, postgres_url):
    config = CentralConfig.model_validate({"database": {"url": postgres_url},
                                           "storage": {"snapshot_dir": str(tmp_path / "snapshots")}})
    open_database(postgres_url)
    alerter = Alerter(config, threading.Event())
    store_available(contract.Available(door_id="lab", state="offline",
                                       ts=contract.utc_now() - dt.timedelta(hours=1)))
    assert len(alerter.check_doors()) == 1 and alerter.check_doors() == []
    forced = event("lab", 1, "door_forced", ts=contract.utc_now())
    assert alerter.door_forced(forced) is not None
    assert alerter.door_forced(forced) is None
    assert Alert.select().count() == 2


def test_the_brokers_repeated_last_will_neither_restarts_an_outage_nor_alerts_twice(alerter):
    from central.door_health import door_health

    t0 = contract.utc_now().replace(tzinfo=None) - dt.timedelta(hours=5)
    store_available(contract.Available(door_id="lab", state="online", ts=t0 - dt.timedelta(hours=1)),
                    received_at=t0 - dt.timedelta(hours=1))
    # The door dies at t0; its will (no time of its own) is retained by the broker ...
    store_available(contract.Available(door_id="lab", state="offline"), received_at=t0)
    assert len(alerter.check_doors(now=t0 + dt.timedelta(minutes=30))) == 1
    # ... and handed to central again when it restarts four hours later.
    store_available(contract.Available(door_id="lab", state="offline"), received_at=t0 + dt.timedelta(hours=4),
                    retained=True)
    [row] = door_health(now=t0 + dt.timedelta(hours=4, minutes=1))
    assert row["since"] == t0 and row["for"] == dt.timedelta(hours=4, minutes=1)
    assert alerter.check_doors(now=t0 + dt.timedelta(hours=4, minutes=30)) == []
    assert Alert.select().where(Alert.type == "door_offline").count() == 1


def test_a_door_back_with_a_wrong_clock_still_clears_its_offline_alert(alerter):
    t0 = contract.utc_now().replace(tzinfo=None) - dt.timedelta(hours=2)
    store_available(contract.Available(door_id="lab", state="offline"), received_at=t0)
    assert len(alerter.check_doors(now=t0 + dt.timedelta(minutes=30))) == 1
    # Back at t0 + 90 min, its clock not yet set: it says 07:58 of the day before.
    store_available(contract.Available(door_id="lab", state="online", ts=t0 - dt.timedelta(days=1)),
                    received_at=t0 + dt.timedelta(minutes=90))
    [cleared] = alerter.check_doors(now=t0 + dt.timedelta(minutes=91))
    assert cleared.type == "door_offline_cleared"


def test_retained_messages_are_no_sign_of_life(alerter):
    from central.door_health import door_health
    from central.store import store_status

    t0 = contract.utc_now().replace(tzinfo=None) - dt.timedelta(hours=1)
    store_available(contract.Available(door_id="lab", state="online", ts=t0), received_at=t0)
    status = contract.Status.model_validate({"schema": 1, "door_id": "lab", "ts": t0, "camera": "ok"})
    store_status(status, received_at=t0)
    # The door hangs; central restarts 10 minutes later and gets both retained messages again.
    later = t0 + dt.timedelta(minutes=10)
    store_status(status, received_at=later, retained=True)
    store_available(contract.Available(door_id="lab", state="online", ts=t0), received_at=later, retained=True)
    [row] = door_health(now=later + dt.timedelta(minutes=1))
    assert row["state"] == "silent" and row["last_seen"] == t0
