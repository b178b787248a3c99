"""The MQTT contract: topics, the Event builder and payload validation."""

import base64
import json
import uuid

import cv2
import numpy as np
import pytest

from bytelocker import contract
from bytelocker.errors import MessageRejected

TOPIC = "bytelocker/doors/door-1/events"


def jpeg(size=32):
    ok, buf = cv2.imencode(".jpg", np.full((size, size, 3), 128, np.uint8))
    return buf.tobytes()


def good_event(**changes):
    data = contract.Event.build("door-1", 7, "granted", {"person_id": "p1", "distance": 0.31}).to_dict()
    data.update(changes)
    return json.dumps(data).encode()


def rejected(payload, door="door-1"):
    with pytest.raises(MessageRejected) as info:
        contract.parse_event(TOPIC, door, payload)
    return str(info.value)


def test_event_round_trips_through_json_with_its_snapshot():
    event = contract.Event.build("door-1", 3, "unidentified", {"frames_used": 5, "decide_ms": 120.5},
                                 snapshot_jpeg=jpeg())
    parsed = contract.parse_event(TOPIC, "door-1", event.to_json())
    assert parsed == event
    assert parsed.snapshot_jpeg == jpeg()
    assert parsed.details.frames_used == 5


def test_event_payload_carries_schema_uuid_utc_time_and_seq():
    data = json.loads(contract.Event.build("door-1", 1, "exit_button").to_json())
    assert data["schema"] == contract.SCHEMA_VERSION
    uuid.UUID(data["event_id"])
    assert data["ts"].endswith("Z")
    assert data["seq"] == 1 and data["door_id"] == "door-1"


def test_builder_refuses_an_unknown_event_type():
    with pytest.raises(MessageRejected, match="door-1"):
        contract.Event.build("door-1", 1, "teleported")


def test_builder_keeps_extra_detail_keys():
    event = contract.Event.build("door-1", 1, "denied", {"reason": "expired", "group": "staff"})
    assert json.loads(event.to_json())["details"] == {"reason": "expired", "group": "staff"}


def test_payload_over_the_size_limit_is_rejected():
    assert "bytes" in rejected(b"{" + b" " * contract.MAX_PAYLOAD_BYTES + b"}")


def test_binary_junk_is_rejected():
    assert "JSON" in rejected(bytes(range(256)))


def test_other_schema_version_is_rejected():
    assert "schema" in rejected(good_event(schema=2))


def test_seq_as_a_string_is_rejected():
    assert "seq" in rejected(good_event(seq="7"))


def test_distance_of_the_wrong_type_is_rejected():
    data = json.loads(good_event())
    data["details"]["distance"] = "close"
    assert "distance" in rejected(json.dumps(data).encode())


def test_timestamp_without_timezone_is_rejected():
    assert "ts" in rejected(good_event(ts="2026-11-25T10:00:00"))


def test_bad_base64_snapshot_is_rejected():
    assert "base64" in rejected(good_event(snapshot="not*base64!"))


def test_snapshot_that_is_not_a_jpeg_is_rejected():
    assert "JPEG" in rejected(good_event(snapshot=base64.b64encode(b"GIF89a....").decode()))


def test_huge_details_are_rejected():
    assert "details" in rejected(good_event(details={"reason": "x" * 100, "note": "y" * 20000}))


def test_unknown_top_level_key_is_rejected():
    assert "frame" in rejected(good_event(frame="..."))


def test_door_id_that_does_not_match_the_topic_is_rejected():
    message = rejected(good_event(door_id="door-2"))
    assert "door-2" in message and "door-1" in message


def test_status_accepts_extra_door_fields_and_types_known_ones():
    payload = contract.status_payload("door-1", fps=4.5, outbox_depth=3, temperature_c=51.0)
    status = contract.parse_status("bytelocker/doors/door-1/status", "door-1", payload)
    assert status.outbox_depth == 3
    with pytest.raises(MessageRejected):
        bad = json.loads(payload)
        bad["outbox_depth"] = "many"
        contract.parse_status("bytelocker/doors/door-1/status", "door-1", json.dumps(bad).encode())


def test_available_accepts_only_the_three_states():
    topic = "bytelocker/doors/door-1/available"
    for state in contract.AVAILABLE_STATES:
        assert contract.parse_available(topic, "door-1", contract.available_payload("door-1", state)).state == state
    with pytest.raises(MessageRejected):
        contract.parse_available(topic, "door-1", b'{"schema":1,"door_id":"door-1","state":"maybe"}')


def test_door_id_is_read_from_a_topic_under_a_nested_prefix():
    assert contract.door_id_from_topic("site/a", "site/a/doors/lab-2/events") == "lab-2"
    assert contract.door_id_from_topic("site/a", "site/b/doors/lab-2/events") is None
    assert contract.door_id_from_topic("site/a", "site/a/doors/lab-2/events/x") is None


def test_receipts_are_split_to_the_size_limit_and_checked_against_the_door():
    ids = [uuid.uuid4() for _ in range(contract.RECEIPT_MAX_IDS + 3)]
    payloads = contract.receipt_payloads("door-1", ids)
    assert len(payloads) == 2
    parsed = [contract.parse_receipt("bytelocker/receipts/door-1", "door-1", p) for p in payloads]
    assert [i for r in parsed for i in r.event_ids] == ids
    with pytest.raises(MessageRejected, match="door-2"):
        contract.parse_receipt("bytelocker/receipts/door-1", "door-1", contract.receipt_payloads("door-2", ids[:1])[0])
    with pytest.raises(MessageRejected):
        contract.parse_receipt("t", "door-1", b'{"schema":1,"door_id":"door-1","event_ids":["nope"]}')
