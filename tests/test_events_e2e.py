"""End to end: a door process and central through a real broker, with failures.

The door (Outbox + Publisher) runs in a subprocess that records events at a
steady rate; central's Collector stores them.  Mid-stream the broker is
killed and restarted, and the door process is killed with ``kill -9`` and
restarted.  Every event must be stored exactly once.
"""

import os
import subprocess
import sys
import threading
import time

import pytest

from central.collector import Collector
from central.store import StoredEvent
from config.central import CentralConfig
from tests.waiting import eventually

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOOR = "door-e2e"

DOOR_SCRIPT = r"""
import signal, sys, threading
import cv2, numpy as np
from config.mqtt import MqttSection
from edge.outbox import Outbox
from edge.publisher import Publisher

path, port, total, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
outbox = Outbox(path, "door-e2e", max_events=100000, snapshot_max_bytes=8192)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
mqtt = MqttSection(port=port, reconnect_min_seconds=0.1, reconnect_max_seconds=1.0, status_interval_seconds=2)
publisher = Publisher(outbox, mqtt, "door-e2e", stop, status_provider=lambda: {"fps": 5.0}).start()
crop = cv2.imencode(".jpg", np.tile(np.arange(64, dtype=np.uint8), (64, 1))[:, :, None].repeat(3, 2))[1].tobytes()
n = outbox.last_seq()
while n < total and not stop.wait(1.0 / rate):
    kind = "granted" if n % 10 else "unidentified"
    if kind == "granted":
        n = outbox.record(kind, {"person_id": "p%d" % (n % 7)})["seq"]
    else:
        n = outbox.record(kind, {"frames_used": 5}, crop)["seq"]
while outbox.depth() and not stop.wait(0.1):
    pass
stop.set()
publisher.join(10)
"""


def start_door(outbox_path, port, total, rate):
    return subprocess.Popen([sys.executable, "-c", DOOR_SCRIPT, str(outbox_path), str(port), str(total), str(rate)],
                            cwd=REPO)


@pytest.mark.slow
def test_every_event_arrives_exactly_once_through_broker_and_door_failures(broker, tmp_path):
    total = 600
    config = CentralConfig.model_validate({
        "mqtt": {"host": broker.host, "port": broker.port, "reconnect_min_seconds": 0.1,
                 "reconnect_max_seconds": 1},
        "database": {"url": f"sqlite:///{tmp_path}/central.db"},
        "storage": {"snapshot_dir": str(tmp_path / "snapshots")},
    })
    collector = Collector(config, threading.Event()).start()
    outbox_path = tmp_path / "door" / "outbox.db"
    door = start_door(outbox_path, broker.port, total, rate=60)
    try:
        assert collector.wait_connected(15)
        assert eventually(lambda: collector.stats["stored"] >= 100, 60)

        # The broker dies mid-stream (no clean shutdown) while the door keeps recording.
        broker.kill()
        time.sleep(2.0)
        broker.start()
        assert eventually(lambda: collector.stats["stored"] >= 300, 90)

        # The door process dies at an arbitrary moment and comes back.
        door.kill()
        assert door.wait(10) == -9
        door = start_door(outbox_path, broker.port, total, rate=60)

        assert door.wait(180) == 0
        assert eventually(lambda: collector.stats["stored"] >= total, 30)
    finally:
        door.kill()
        collector.stop()

    seqs = [s for (s,) in StoredEvent.select(StoredEvent.seq).where(StoredEvent.door_id == DOOR).tuples()]
    assert len(seqs) == total
    assert sorted(seqs) == list(range(1, total + 1))
    faces = StoredEvent.select().where(StoredEvent.type == "unidentified")
    assert faces.count() == total // 10
    assert all(os.path.exists(e.snapshot_path) for e in faces)
