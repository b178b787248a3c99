"""The managed Mosquitto used by single-box installs and the demo."""

import threading

import pytest

from bytelocker import contract
from bytelocker.errors import BrokerError
from central.broker import ManagedMosquitto, find_mosquitto
from config.mqtt import MqttSection
from edge.outbox import Outbox
from edge.publisher import Publisher

pytestmark = pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed")


def test_managed_mosquitto_carries_messages_and_stops(tmp_path):
    import paho.mqtt.client as mqtt

    with ManagedMosquitto(tmp_path / "broker") as broker:
        assert broker.running and broker.port != 1883
        got = threading.Event()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        sub.on_message = lambda c, u, m: got.set()
        sub.connect(broker.host, broker.port)
        sub.subscribe(contract.all_doors_filter("bytelocker", "events"), qos=1)
        sub.loop_start()
        box = Outbox(tmp_path / "o.db", "door-1", max_events=100, snapshot_max_bytes=4096)
        box.record("granted", {"person_id": "p1"})
        stop = threading.Event()
        publisher = Publisher(box, MqttSection(port=broker.port), "door-1", stop).start()
        assert got.wait(15)
        stop.set()
        publisher.join(10)
        sub.disconnect()
        sub.loop_stop()
    assert not broker.running


def test_managed_mosquitto_refuses_a_port_already_in_use(tmp_path):
    with ManagedMosquitto(tmp_path / "a") as first:
        with pytest.raises(BrokerError, match=str(first.port)):
            ManagedMosquitto(tmp_path / "b", port=first.port).start()


def test_example_broker_config_starts_and_serves_a_door_over_tls(tmp_path):
    """config/mosquitto.example.conf, with its paths pointed at temp files, is a working config."""
    import os
    import subprocess

    from tests.brokers import free_port, wait_for_port
    from tests.test_publisher import make_tls_files

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tls = make_tls_files(tmp_path / "tls")
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "door-1", "pw1"], check=True, capture_output=True)
    subprocess.run(["mosquitto_passwd", "-b", str(passwd), "bytelocker-central", "pwc"], check=True,
                   capture_output=True)
    tls_port, plain_port = free_port(), free_port()
    with open(os.path.join(repo, "config", "mosquitto.example.conf")) as fh:
        conf = fh.read()
    for old, new in [
        ("/etc/mosquitto/bytelocker.passwd", str(passwd)),
        ("/etc/mosquitto/bytelocker.acl", os.path.join(repo, "config", "mosquitto.example.acl")),
        ("/etc/mosquitto/certs/ca.crt", tls["ca"]),
        ("/etc/mosquitto/certs/broker.crt", tls["cert"]),
        ("/etc/mosquitto/certs/broker.key", tls["key"]),
        ("/var/lib/mosquitto/", f"{tmp_path}/"),
        ("listener 8883", f"listener {tls_port} 127.0.0.1"),
        ("listener 1883 127.0.0.1", f"listener {plain_port} 127.0.0.1"),
    ]:
        assert old in conf
        conf = conf.replace(old, new)
    if os.geteuid() == 0:
        conf += "user root\n"
    (tmp_path / "mosquitto.conf").write_text(conf)
    with open(tmp_path / "mosquitto.log", "wb") as log:
        proc = subprocess.Popen([find_mosquitto(), "-c", str(tmp_path / "mosquitto.conf")], stdout=log, stderr=log)
    try:
        assert wait_for_port("127.0.0.1", tls_port), (tmp_path / "mosquitto.log").read_text()
        box = Outbox(tmp_path / "o.db", "door-1", max_events=100, snapshot_max_bytes=4096)
        box.record("granted", {"person_id": "p1"})
        import paho.mqtt.client as mqtt

        got = threading.Event()
        central = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bytelocker-central",
                              protocol=mqtt.MQTTv5)
        central.username_pw_set("bytelocker-central", "pwc")
        central.tls_set(ca_certs=tls["ca"])
        central.on_message = lambda c, u, m: got.set()
        central.connect("127.0.0.1", tls_port)
        central.subscribe(contract.all_doors_filter("bytelocker", "events"), qos=1)
        central.loop_start()
        stop = threading.Event()
        section = MqttSection(port=tls_port, tls=True, ca_file=tls["ca"], username="door-1")
        publisher = Publisher(box, section, "door-1", stop, password="pw1").start()
        assert got.wait(15)
        stop.set()
        publisher.join(10)
        central.disconnect()
        central.loop_stop()
    finally:
        proc.terminate()
        proc.wait(10)
