"""The door's publisher, against a real Mosquitto on a free port."""

import json
import os
import subprocess
import sys
import threading

import paho.mqtt.client as mqtt
import pytest

from bytelocker import contract
from config.mqtt import MqttSection
from edge.outbox import Outbox
from edge.publisher import Publisher
from tests.brokers import Mosquitto, example_acl_broker
from tests.waiting import eventually

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Listener:
    """A plain MQTT subscriber that records every message it gets."""

    def __init__(self, broker, topic="bytelocker/#", username=None, password=None):
        self.messages = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload, m.retain))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def on(self, leaf):
        return [json.loads(p) for t, p, _ in self.messages if t.endswith("/" + leaf)]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def section(broker, **more):
    """The door's mqtt section for ``broker``.

    Receipts are off unless asked for: most tests here are about the broker
    link, with no central to confirm; receipts have their own tests below
    and run end to end in test_events_e2e.py.
    """
    more.setdefault("receipts", False)
    more.setdefault("reconnect_min_seconds", 0.1)
    more.setdefault("reconnect_max_seconds", 1.0)
    return MqttSection(host=broker.host, port=broker.port, **more)


@pytest.fixture
def outbox(tmp_path):
    box = Outbox(tmp_path / "outbox.db", "door-1", max_events=1000, snapshot_max_bytes=8192)
    yield box
    box.close()


@pytest.fixture
def run_publisher():
    started = []

    def start(outbox, mqtt_section, **kwargs):
        stop = threading.Event()
        publisher = Publisher(outbox, mqtt_section, "door-1", stop, **kwargs).start()
        started.append((publisher, stop))
        return publisher, stop

    yield start
    for publisher, stop in started:
        stop.set()
        publisher.join(10)


def test_publisher_sends_events_in_order_and_empties_the_outbox(broker, outbox, run_publisher):
    listener = Listener(broker)
    for i in range(30):
        outbox.record("granted", {"person_id": f"p{i}"})
    publisher, _ = run_publisher(outbox, section(broker))
    assert eventually(lambda: outbox.depth() == 0)
    assert eventually(lambda: len(listener.on("events")) == 30)
    assert [e["seq"] for e in listener.on("events")] == list(range(1, 31))
    assert publisher.connected
    listener.close()


def test_thread_is_named_publisher(broker, outbox, run_publisher):
    run_publisher(outbox, section(broker))
    assert "publisher" in [t.name for t in threading.enumerate()]


def test_events_stay_in_the_outbox_while_nobody_subscribes(broker, outbox, run_publisher):
    for i in range(5):
        outbox.record("granted", {"person_id": "p1"})
    publisher, _ = run_publisher(outbox, section(broker))
    assert eventually(lambda: publisher.connected)
    assert eventually(lambda: publisher.published >= 2, 10)
    # The broker said "no matching subscribers": nothing may be deleted.
    assert outbox.depth() == 5
    listener = Listener(broker, "bytelocker/+/+/events")
    assert eventually(lambda: outbox.depth() == 0)
    assert sorted({e["seq"] for e in listener.on("events")}) == [1, 2, 3, 4, 5]
    listener.close()


def test_events_recorded_while_the_broker_is_down_arrive_after_it_returns(broker, outbox, run_publisher):
    listener = Listener(broker)
    publisher, _ = run_publisher(outbox, section(broker))
    outbox.record("granted", {"person_id": "p1"})
    assert eventually(lambda: outbox.depth() == 0)
    listener.close()
    broker.kill()
    assert eventually(lambda: not publisher.connected)
    for i in range(20):
        outbox.record("denied", {"reason": "unknown"})
    assert outbox.depth() == 20
    broker.start()
    listener = Listener(broker)
    assert eventually(lambda: outbox.depth() == 0, 30)
    assert sorted({e["seq"] for e in listener.on("events")}) == list(range(2, 22))
    listener.close()


def test_online_on_connect_and_stopped_on_clean_stop_are_retained(broker, outbox, run_publisher):
    publisher, stop = run_publisher(outbox, section(broker))
    assert eventually(lambda: publisher.connected)
    stop.set()
    assert publisher.join(10)
    late = Listener(broker, "bytelocker/doors/door-1/available")
    assert eventually(lambda: late.on("available"))
    assert late.on("available")[-1]["state"] == contract.AVAILABLE_STOPPED
    assert late.messages[-1][2]  # delivered as a retained message
    late.close()


def test_broker_announces_offline_when_the_door_process_is_killed(broker, tmp_path):
    listener = Listener(broker, "bytelocker/doors/door-1/available")
    script = (
        "import threading, time\n"
        "from config.mqtt import MqttSection\n"
        "from edge.outbox import Outbox\n"
        "from edge.publisher import Publisher\n"
        f"box = Outbox({str(tmp_path / 'o.db')!r}, 'door-1', max_events=1000, snapshot_max_bytes=8192)\n"
        f"p = Publisher(box, MqttSection(port={broker.port}), 'door-1', threading.Event()).start()\n"
        "threading.Event().wait(60)\n"
    )
    door = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        assert eventually(lambda: [m for m in listener.on("available") if m["state"] == "online"], 30)
        door.kill()
        door.wait(10)
        assert eventually(lambda: listener.on("available")[-1]["state"] == contract.AVAILABLE_OFFLINE, 30)
    finally:
        door.kill()
        listener.close()


def test_status_is_retained_with_outbox_depth_and_republished(broker, outbox, run_publisher):
    listener = Listener(broker, "bytelocker/doors/door-1/status")
    outbox.record("granted", {"person_id": "p1"})
    run_publisher(outbox, section(broker, status_interval_seconds=1),
                  status_provider=lambda: {"fps": 4.0, "camera": "ok", "cache_version": 12})
    assert eventually(lambda: len(listener.on("status")) >= 2, 15)
    status = listener.on("status")[-1]
    assert status["schema"] == 1 and status["door_id"] == "door-1"
    assert status["fps"] == 4.0 and status["cache_version"] == 12 and status["broker"] == "connected"
    assert "outbox_depth" in status
    listener.close()


def test_broken_status_provider_does_not_stop_events(broker, outbox, run_publisher):
    listener = Listener(broker)

    def broken():
        raise RuntimeError("camera driver exploded")

    outbox.record("granted", {"person_id": "p1"})
    run_publisher(outbox, section(broker), status_provider=broken)
    assert eventually(lambda: outbox.depth() == 0)
    assert eventually(lambda: listener.on("status"))
    listener.close()


def test_restart_with_a_full_outbox_delivers_everything_it_kept(broker, tmp_path, run_publisher):
    box = Outbox(tmp_path / "outbox.db", "door-1", max_events=100, snapshot_max_bytes=8192)
    for i in range(180):
        box.record("granted", {"person_id": f"p{i}"})
    box.close()
    box = Outbox(tmp_path / "outbox.db", "door-1", max_events=100, snapshot_max_bytes=8192)
    kept = box.depth()
    listener = Listener(broker)
    run_publisher(box, section(broker))
    assert eventually(lambda: box.depth() == 0, 30)
    # The broker acknowledges the door before it delivers to the listener.
    assert eventually(lambda: len({e["seq"] for e in listener.on("events")}) == kept, 30)
    events = {e["seq"]: e for e in listener.on("events")}
    assert len(events) == kept
    dropped = sum(e["details"].get("dropped_events", 0) for e in events.values())
    assert len(events) + dropped == box.last_seq()
    listener.close()
    box.close()


def test_password_protected_broker_accepts_the_right_password_only(tmp_path, outbox):
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "door-1", "s3cret"], check=True,
                   capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "central", "c3ntral"], check=True,
                   capture_output=True)
    # tests/brokers.py allows anonymous users; a later line turns that off.
    # As root, Mosquitto drops to its own user, which cannot read pytest's tmp_path.
    conf = f"password_file {passwd}\nallow_anonymous false\n" + ("user root\n" if os.geteuid() == 0 else "")
    broker = Mosquitto(tmp_path / "mq", extra_conf=conf)
    broker.start()
    try:
        listener = Listener(broker, username="central", password="c3ntral")
        outbox.record("granted", {"person_id": "p1"})
        stop = threading.Event()
        wrong = Publisher(outbox, section(broker, username="door-1"), "door-1", stop, password="nope").start()
        assert eventually(lambda: wrong.broker_state.startswith("refused"), 15)
        assert outbox.depth() == 1
        stop.set()
        wrong.join(10)
        stop = threading.Event()
        right = Publisher(outbox, section(broker, username="door-1"), "door-1", stop, password="s3cret").start()
        assert eventually(lambda: outbox.depth() == 0)
        assert len(listener.on("events")) == 1
        stop.set()
        right.join(10)
        listener.close()
    finally:
        broker.stop()


def test_example_acl_lets_a_door_write_only_its_own_topics(tmp_path, outbox):
    broker = example_acl_broker(tmp_path)
    try:
        central = Listener(broker, "bytelocker/doors/+/events", username="bytelocker-central", password="c")
        # door-2 tries to write an event in door-1's name: the broker refuses it.
        intruder = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="door-2", protocol=mqtt.MQTTv5)
        intruder.username_pw_set("door-2", "d2")
        refused = []
        intruder.on_publish = lambda c, u, mid, rc, p: refused.append(rc.is_failure)
        intruder.connect(broker.host, broker.port)
        intruder.loop_start()
        forged = contract.Event.build("door-1", 1, "granted", {"person_id": "mallory"}).to_json()
        intruder.publish(contract.events_topic("bytelocker", "door-1"), forged, qos=1)
        assert eventually(lambda: refused, 10) and refused == [True]
        # door-1 itself gets through.
        outbox.record("granted", {"person_id": "p1"})
        stop = threading.Event()
        door = Publisher(outbox, section(broker, username="door-1"), "door-1", stop, password="d1").start()
        assert eventually(lambda: outbox.depth() == 0)
        assert [e["details"]["person_id"] for e in central.on("events")] == ["p1"]
        stop.set()
        door.join(10)
        intruder.disconnect()
        intruder.loop_stop()
        central.close()
    finally:
        broker.stop()


def make_tls_files(folder):
    """A throwaway CA and a broker certificate for 127.0.0.1, as PEM files."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("test ca")).issuer_name(name("test ca"))
          .public_key(ca_key.public_key()).serial_number(1)
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2)
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    os.makedirs(folder, exist_ok=True)
    paths = {k: os.path.join(folder, f"{k}.pem") for k in ("ca", "cert", "key")}
    with open(paths["ca"], "wb") as fh:
        fh.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths["cert"], "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths["key"], "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return paths


def test_publisher_delivers_over_tls_and_refuses_an_unknown_ca(tmp_path, outbox):
    tls = make_tls_files(tmp_path / "tls")
    other = make_tls_files(tmp_path / "other")
    conf = (f"cafile {tls['ca']}\ncertfile {tls['cert']}\nkeyfile {tls['key']}\n"
            + ("user root\n" if os.geteuid() == 0 else ""))
    broker = Mosquitto(tmp_path / "mq", extra_conf=conf)
    broker.start()
    try:
        listener = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        got = []
        listener.on_message = lambda c, u, m: got.append(m.payload)
        listener.tls_set(ca_certs=tls["ca"])
        listener.connect(broker.host, broker.port)
        listener.subscribe("bytelocker/doors/+/events", qos=1)
        listener.loop_start()
        outbox.record("granted", {"person_id": "p1"})

        stop = threading.Event()
        wrong = Publisher(outbox, section(broker, tls=True, ca_file=other["ca"]), "door-1", stop).start()
        assert eventually(lambda: "unreachable" in wrong.broker_state and "certificate" in wrong.broker_state, 15)
        assert outbox.depth() == 1
        stop.set()
        wrong.join(10)

        stop = threading.Event()
        right = Publisher(outbox, section(broker, tls=True, ca_file=tls["ca"]), "door-1", stop).start()
        assert eventually(lambda: outbox.depth() == 0)
        assert eventually(lambda: len(got) == 1)
        stop.set()
        right.join(10)
        listener.disconnect()
        listener.loop_stop()
    finally:
        broker.stop()


def test_status_too_big_for_the_contract_is_sent_bare(broker, outbox, run_publisher):
    listener = Listener(broker, "bytelocker/doors/door-1/status")
    run_publisher(outbox, section(broker), status_provider=lambda: {"camera": "ok", "log": "x" * 50000})
    assert eventually(lambda: listener.on("status"))
    status = listener.on("status")[-1]
    assert "log" not in status and status["outbox_depth"] == 0
    listener.close()


def send_receipt(broker, door_id, event_ids, topic_door=None):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect(broker.host, broker.port)
    client.loop_start()
    for payload in contract.receipt_payloads(door_id, event_ids):
        client.publish(contract.receipts_topic("bytelocker", topic_door or door_id), payload, qos=1).wait_for_publish(5)
    client.disconnect()
    client.loop_stop()


def test_with_receipts_events_stay_until_central_confirms_them(broker, outbox, run_publisher):
    listener = Listener(broker, "bytelocker/doors/+/events")
    ids = [outbox.record("granted", {"person_id": "p1"})["event_id"] for _ in range(6)]
    publisher, _ = run_publisher(outbox, section(broker, receipts=True))
    assert eventually(lambda: outbox.unconfirmed() == 6)
    assert outbox.depth() == 6 and outbox.pending(10) == []
    send_receipt(broker, "door-1", ids[:4])
    assert eventually(lambda: outbox.depth() == 2)
    assert outbox.pending(10) == [] and outbox.unconfirmed() == 2
    listener.close()


def test_with_receipts_unconfirmed_events_are_sent_again_after_a_reconnect(broker, outbox, run_publisher):
    listener = Listener(broker, "bytelocker/doors/+/events")
    for _ in range(5):
        outbox.record("granted", {"person_id": "p1"})
    publisher, _ = run_publisher(outbox, section(broker, receipts=True))
    assert eventually(lambda: outbox.unconfirmed() == 5)
    listener.close()
    # The broker dies holding events it acknowledged but never delivered.
    broker.kill()
    assert eventually(lambda: not publisher.connected)
    broker.start()
    listener = Listener(broker, "bytelocker/doors/+/events")
    assert eventually(lambda: sorted({e["seq"] for e in listener.on("events")}) == [1, 2, 3, 4, 5], 30)
    assert outbox.depth() == 5
    listener.close()


def test_receipt_on_another_doors_topic_or_naming_another_door_is_ignored(broker, outbox, run_publisher):
    listener = Listener(broker, "bytelocker/doors/+/events")
    ids = [outbox.record("granted", {"person_id": "p1"})["event_id"] for _ in range(2)]
    run_publisher(outbox, section(broker, receipts=True))
    assert eventually(lambda: outbox.unconfirmed() == 2)
    send_receipt(broker, "door-2", ids)
    send_receipt(broker, "door-2", ids, topic_door="door-1")
    send_receipt(broker, "door-1", ids[:1])
    assert eventually(lambda: outbox.depth() == 1)
    assert outbox.unconfirmed() == 1
    listener.close()


def test_with_receipts_unconfirmed_events_are_sent_again_periodically_on_the_same_connection(
        broker, outbox, run_publisher, monkeypatch):
    import edge.publisher

    monkeypatch.setattr(edge.publisher, "UNCONFIRMED_RESEND_SECONDS", 1.0)
    listener = Listener(broker, "bytelocker/doors/+/events")
    for _ in range(3):
        outbox.record("granted", {"person_id": "p1"})
    publisher, _ = run_publisher(outbox, section(broker, receipts=True))
    assert eventually(lambda: outbox.unconfirmed() == 3)
    # Central never confirms (the broker dropped them on the way): the door sends them again
    # without waiting for a reconnect.
    assert eventually(lambda: all([e["seq"] for e in listener.on("events")].count(seq) >= 2
                                  for seq in (1, 2, 3)), 15)
    assert publisher.connected and outbox.depth() == 3
    listener.close()
