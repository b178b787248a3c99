"""The door's outbox: durable sequence, size-limit policy, full disk."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import peewee as pw
import pytest

from bytelocker import contract
from bytelocker.errors import StorageError
from edge import outbox as outbox_module
from edge.outbox import Outbox, fit_jpeg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def open_outbox(tmp_path, **limits):
    limits.setdefault("max_events", 1000)
    limits.setdefault("snapshot_max_bytes", 8192)
    return Outbox(tmp_path / "outbox.db", "door-1", **limits)


def noisy_jpeg(side=128, seed=0):
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (side, side, 3), dtype=np.uint8),
                           [cv2.IMWRITE_JPEG_QUALITY, 95])
    return buf.tobytes()


def payloads(box, limit=100000):
    return [json.loads(p.payload) for p in box.pending(limit)]


def test_record_returns_the_event_with_id_seq_and_time(tmp_path):
    box = open_outbox(tmp_path)
    event = box.record("granted", {"person_id": "p1", "distance": 0.3})
    assert event["seq"] == 1 and event["door_id"] == "door-1" and event["ts"].endswith("Z")
    assert payloads(box)[0]["event_id"] == event["event_id"]


def test_pending_is_in_sequence_order_and_acknowledge_removes_one(tmp_path):
    box = open_outbox(tmp_path)
    ids = [box.record("exit_button", {})["event_id"] for _ in range(5)]
    assert [p.seq for p in box.pending(10)] == [1, 2, 3, 4, 5]
    assert box.acknowledge(ids[1])
    assert [p.seq for p in box.pending(10)] == [1, 3, 4, 5]
    assert [p.seq for p in box.pending(2, after_seq=3)] == [4, 5]
    assert box.depth() == 4


def test_sequence_survives_reopening_even_when_the_outbox_was_emptied(tmp_path):
    box = open_outbox(tmp_path)
    for _ in range(3):
        box.acknowledge(box.record("granted", {"person_id": "p1"})["event_id"])
    box.close()
    box = open_outbox(tmp_path)
    assert box.depth() == 0
    assert box.record("granted", {"person_id": "p1"})["seq"] == 4


def test_recorded_event_survives_kill_9_right_after_record(tmp_path):
    path = tmp_path / "outbox.db"
    script = (
        "import os, sys; from edge.outbox import Outbox\n"
        f"box = Outbox({str(path)!r}, 'door-1', max_events=1000, snapshot_max_bytes=8192)\n"
        "for i in range(20): box.record('granted', {'person_id': 'p%d' % i})\n"
        "os.kill(os.getpid(), 9)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=60)
    assert proc.returncode == -9
    box = open_outbox(tmp_path)
    assert [p.seq for p in box.pending(100)] == list(range(1, 21))


def test_pending_payload_carries_the_snapshot_as_base64_jpeg(tmp_path):
    box = open_outbox(tmp_path)
    crop = noisy_jpeg(32)
    box.record("unidentified", {"frames_used": 5}, crop)
    event = contract.parse_event("t", "door-1", box.pending(1)[0].payload)
    assert event.snapshot_jpeg == crop


def test_oversized_snapshot_is_reencoded_to_fit(tmp_path, astronaut):
    ok, buf = cv2.imencode(".jpg", astronaut, [cv2.IMWRITE_JPEG_QUALITY, 100])
    assert buf.size > 8192
    box = open_outbox(tmp_path, snapshot_max_bytes=8192)
    event = box.record("unidentified", {}, buf.tobytes())
    assert 0 < event["snapshot_bytes"] <= 8192
    crop = contract.parse_event("t", "door-1", box.pending(1)[0].payload).snapshot_jpeg
    assert cv2.imdecode(np.frombuffer(crop, np.uint8), cv2.IMREAD_COLOR) is not None


def test_unreadable_snapshot_is_dropped_but_the_event_is_kept(tmp_path):
    box = open_outbox(tmp_path, snapshot_max_bytes=1024)
    box.record("unidentified", {}, b"\xff\xd8" + b"junk" * 1000)
    assert payloads(box)[0]["details"]["snapshot_dropped"] == "unreadable"


def test_fit_jpeg_returns_a_small_crop_unchanged():
    crop = noisy_jpeg(16)
    assert fit_jpeg(crop, 100000) == crop


def test_oldest_snapshots_are_dropped_first_when_crops_fill_the_outbox(tmp_path):
    crops = [noisy_jpeg(48, seed) for seed in range(6)]
    size = max(len(c) for c in crops)
    box = open_outbox(tmp_path, snapshot_max_bytes=size, max_bytes=3 * size)
    for crop in crops:
        box.record("unidentified", {}, crop)
    events = payloads(box)
    assert len(events) == 6
    kept = ["snapshot" in e for e in events]
    assert kept == [False, False, False, True, True, True]
    assert all(e["details"]["snapshot_dropped"] == contract.SNAPSHOT_DROPPED_OUTBOX_FULL for e in events[:3])


def test_full_outbox_drops_oldest_events_and_records_how_many(tmp_path):
    box = open_outbox(tmp_path, max_events=100)
    for i in range(250):
        box.record("granted", {"person_id": f"p{i}"})
    events = payloads(box)
    assert box.depth() <= 100
    markers = [e for e in events if e["details"].get("reason") == contract.REASON_OUTBOX_OVERFLOW]
    assert markers
    # Every sequence number is either still here or counted by exactly one marker
    # (a marker that is dropped itself hands its count on to the next).
    dropped = sum(m["details"]["dropped_events"] for m in markers)
    assert len(events) + dropped == box.last_seq()
    # The newest events are the ones kept.
    assert events[-1]["details"]["person_id"] == "p249"


def test_restart_with_a_full_outbox_keeps_recording(tmp_path):
    box = open_outbox(tmp_path, max_events=100)
    for _ in range(100):
        box.record("granted", {"person_id": "p1"})
    box.close()
    box = open_outbox(tmp_path, max_events=100)
    event = box.record("denied", {"reason": "unknown"})
    assert event["seq"] > 100
    assert payloads(box)[-1]["event_id"] == event["event_id"]
    assert box.depth() <= 100


def test_full_disk_raises_storage_error_and_loses_nothing_stored(tmp_path):
    box = open_outbox(tmp_path)
    pages = outbox_module.database.execute_sql("PRAGMA page_count").fetchone()[0]
    outbox_module.database.execute_sql(f"PRAGMA max_page_count = {pages + 3}")
    stored = []
    with pytest.raises(StorageError, match="full") as info:
        for i in range(10000):
            stored.append(box.record("unidentified", {"frames_used": i}, noisy_jpeg(40, i))["event_id"])
    assert "door-1" in str(info.value) and "outbox.db" in str(info.value)
    assert stored
    box.close()
    box = open_outbox(tmp_path)
    assert [e["event_id"] for e in payloads(box)] == stored
    # With room again the door goes on where it left off.
    assert box.record("granted", {"person_id": "p1"})["seq"] == len(stored) + 1


def test_outbox_uses_its_own_database_not_the_cache(tmp_path):
    from edge import cache

    assert outbox_module.database is not cache.database
    box = open_outbox(tmp_path)
    assert box.path.endswith("outbox.db")
    assert isinstance(outbox_module.database, pw.SqliteDatabase)
    assert outbox_module.database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_event_with_out_of_contract_details_is_kept_without_them(tmp_path):
    box = open_outbox(tmp_path)
    event = box.record("granted", {"person_id": "alice", "distance": float("nan")})
    details = payloads(box)[0]["details"]
    assert event["seq"] == 1
    assert details["person_id"] == "alice" and "details_rejected" in details


def test_unknown_event_type_is_refused(tmp_path):
    from bytelocker.errors import MessageRejected

    box = open_outbox(tmp_path)
    with pytest.raises(MessageRejected, match="door-1"):
        box.record("teleported", {})
    assert box.depth() == 0


def test_numpy_values_in_details_are_sent_as_plain_json(tmp_path):
    box = open_outbox(tmp_path)
    box.record("granted", {"person_id": "alice", "distance": np.float32(0.25), "box": np.array([1, 2, 3, 4])})
    details = payloads(box)[0]["details"]
    assert details["distance"] == pytest.approx(0.25) and details["box"] == [1, 2, 3, 4]


def test_sent_events_leave_pending_but_stay_until_confirmed(tmp_path):
    box = open_outbox(tmp_path)
    ids = [box.record("granted", {"person_id": "p1"})["event_id"] for _ in range(3)]
    box.mark_sent(ids[:2])
    assert [p.seq for p in box.pending(10)] == [3]
    assert box.depth() == 3 and box.unconfirmed() == 2
    box.acknowledge(ids[0])
    assert box.depth() == 2 and box.unconfirmed() == 1


def test_unconfirmed_events_can_be_made_pending_again_all_or_only_old_ones(tmp_path):
    import time

    box = open_outbox(tmp_path)
    ids = [box.record("granted", {"person_id": "p1"})["event_id"] for _ in range(3)]
    box.mark_sent(ids)
    assert box.unsend_all(older_than=time.time() - 3600) == 0
    assert box.unsend_all() == 3
    assert [p.seq for p in box.pending(10)] == [1, 2, 3]
