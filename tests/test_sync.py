"""Signed enrolment sync from central to doors, through a real Mosquitto broker."""

import json
import logging
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bytelocker import contract, signing
from bytelocker.errors import MessageRejected, ReplayError, SignatureError
from central import registry
from central.db import open_database
from central.sync import CentralSync
from config.central import CentralConfig, EnrolmentSection
from config.mqtt import MqttSection
from edge import cache
from edge.match import MATCH, match
from edge.sync import DoorSync, encode_person
from tests.waiting import eventually

DOOR = "door-1"
PREFIX = "bltest"


@pytest.fixture(scope="module")
def faces(detector, describer, astronaut, grace_hopper):
    """Real descriptors of two different people, computed once for this module."""
    out = {}
    for name, image in (("eileen", astronaut), ("grace", grace_hopper)):
        boxes = detector.detect(image)
        out[name] = describer.describe(image, boxes[:1])[0]
    return out


@pytest.fixture
def door_cache(tmp_path):
    cache.open_cache(str(tmp_path / "door" / "cache.db"))
    yield
    cache.close_cache()


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def mqtt_section(broker):
    return MqttSection(host=broker.host, port=broker.port, prefix=PREFIX, reconnect_min_seconds=0.1,
                       reconnect_max_seconds=1)


class Door:
    """One DoorSync with what it handed the daemon and what it rejected."""

    def __init__(self, broker, public_key_b64, door_id=DOOR):
        self.stop = threading.Event()
        self.gallery = None
        self.gallery_version = None
        self.rejections = []
        self.sync = DoorSync(door_id, mqtt_section(broker), public_key_b64, self.stop,
                             on_gallery=self._on_gallery, on_rejected=lambda t, e: self.rejections.append(e))

    def _on_gallery(self, gallery):
        self.gallery_version = cache.cache_version()
        self.gallery = gallery

    def start(self):
        self.sync.start()
        assert self.sync.connected.wait(10), "the door's sync client did not connect"
        return self

    def close(self):
        self.stop.set()
        self.sync.join(5)

    def grants(self, descriptor):
        result = match([descriptor], self.gallery, threshold=0.45)[0]
        return result.person if result.status == MATCH else None


class Central:
    def __init__(self, broker, key, doors=None):
        self.stop = threading.Event()
        config = CentralConfig(mqtt=mqtt_section(broker), doors=doors or {})
        self.sync = CentralSync(config, key, self.stop)

    def start(self):
        self.sync.start()
        assert self.sync.connected.wait(10), "central's sync client did not connect"
        return self

    def close(self):
        self.stop.set()
        self.sync.join(5)


@pytest.fixture
def system(broker, central_db, door_cache, key):
    """Central and one door, both running, with an empty registry."""
    central = Central(broker, key).start()
    door = Door(broker, signing.public_key_b64(key)).start()
    yield central, door
    door.close()
    central.close()


class Attacker:
    """A client with full publish rights on the broker and no signing key; records what it sees."""

    def __init__(self, broker):
        self.seen = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="attacker")
        self.client.on_message = lambda c, u, m: self.seen.append((m.topic, m.payload))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(f"{PREFIX}/updates/#", qos=1)
        self.client.loop_start()
        time.sleep(0.2)

    def publish(self, topic, payload):
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        info.wait_for_publish(5)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def attacker(broker):
    a = Attacker(broker)
    yield a
    a.close()


def synced(door):
    """True once the door's daemon has the gallery of central's current version."""
    return lambda: door.gallery_version == registry.current_version()


def cache_state():
    return cache.cache_version(), sorted(cache.people())


def forged_change(version, descriptor, target="all", person_id="mallory"):
    return {
        "schema": contract.SCHEMA_VERSION, "kind": "change", "version": version, "target": target,
        "op": "upsert", "person": encode_person(person_id, [descriptor], name="Mallory"),
        "issued_at": "2026-11-25T00:00:00",
    }


# --- enrolment reaches doors ---------------------------------------------------

def test_enrolled_person_is_granted_at_online_door(system, faces):
    central, door = system
    registry.enrol("eileen", [faces["eileen"]], name="Eileen Collins", groups=["crew"])
    assert eventually(lambda: door.gallery is not None and door.grants(faces["eileen"]) == "eileen")
    assert door.grants(faces["grace"]) is None
    assert cache.people()["eileen"].groups == ["crew"]


def test_person_enrolled_from_real_photos_is_granted_at_door(system, shared_data, describer):
    from central.enrolment import PhotoChecker, enrol_photos

    central, door = system
    checker = PhotoChecker(EnrolmentSection(), describer)
    folder = shared_data / "people" / "Kit_Harington"
    enrol_photos("kit", [str(folder / "john1.jpeg"), str(folder / "john2.jpeg")], checker, name="Kit Harington")
    probe = checker.check_file(str(folder / "johnsnow_test1.jpg")).descriptor
    assert eventually(lambda: door.gallery is not None and door.grants(probe) == "kit")


def test_revocation_reaches_online_door_within_2_seconds(system, faces):
    central, door = system
    registry.enrol("eileen", [faces["eileen"]])
    assert eventually(lambda: door.gallery is not None and door.grants(faces["eileen"]) == "eileen")
    started = time.monotonic()
    # No notify(): the same path as `bytelocker revoke` run in another process.
    registry.revoke("eileen")
    eventually(lambda: door.grants(faces["eileen"]) is None, timeout=5)
    elapsed = time.monotonic() - started
    assert door.grants(faces["eileen"]) is None
    assert elapsed < 2.0, f"revocation took {elapsed:.2f} s to reach the door"


def test_forget_erases_person_from_door_cache(system, faces):
    central, door = system
    registry.enrol("eileen", [faces["eileen"]], name="Eileen Collins")
    assert eventually(lambda: "eileen" in cache.people())
    registry.forget("eileen")
    assert eventually(lambda: "eileen" not in cache.people() and door.grants(faces["eileen"]) is None)


def test_person_limited_to_another_door_is_not_granted_here(system, faces):
    central, door = system
    registry.enrol("grace", [faces["grace"]], doors=["door-2"])
    registry.enrol("eileen", [faces["eileen"]])
    assert eventually(synced(door))
    assert door.grants(faces["eileen"]) == "eileen"
    assert door.grants(faces["grace"]) is None


def test_door_that_was_down_converges_to_central_after_restart(broker, central_db, door_cache, key, faces):
    central = Central(broker, key).start()
    door = Door(broker, signing.public_key_b64(key)).start()
    try:
        registry.enrol("eileen", [faces["eileen"]])
        assert eventually(lambda: door.gallery is not None and door.grants(faces["eileen"]) == "eileen")
        door.close()
        registry.enrol("grace", [faces["grace"]])
        registry.revoke("eileen")
        assert eventually(lambda: not registry.unpublished_changes())
        # Offline, the door still enforces what it last knew.
        assert sorted(cache.people()) == ["eileen"]
        door = Door(broker, signing.public_key_b64(key)).start()
        assert eventually(synced(door))
        assert sorted(cache.people()) == ["grace"]
        assert door.grants(faces["grace"]) == "grace"
        assert door.grants(faces["eileen"]) is None
    finally:
        door.close()
        central.close()


def test_door_cut_off_by_a_broker_outage_applies_the_revocation_when_it_reconnects(system, faces, broker):
    central, door = system
    registry.enrol("eileen", [faces["eileen"]])
    assert eventually(synced(door))
    broker.stop()
    assert eventually(lambda: not door.sync.connected.is_set())
    registry.revoke("eileen")
    time.sleep(0.5)
    # Cut off, the door keeps enforcing what it last knew.
    assert door.grants(faces["eileen"]) == "eileen"
    broker.start()
    assert eventually(synced(door), timeout=20)
    assert door.grants(faces["eileen"]) is None


def test_changes_made_while_central_is_down_reach_doors_when_it_starts(broker, central_db, door_cache, key,
                                                                     faces):
    door = Door(broker, signing.public_key_b64(key)).start()
    central = None
    try:
        registry.enrol("eileen", [faces["eileen"]])
        registry.enrol("grace", [faces["grace"]])
        registry.revoke("grace")
        time.sleep(0.3)
        assert cache.cache_version() == 0
        central = Central(broker, key).start()
        assert eventually(synced(door))
        assert sorted(cache.people()) == ["eileen"]
    finally:
        door.close()
        if central:
            central.close()


def test_door_too_far_behind_the_log_gets_a_full_snapshot(broker, central_db, door_cache, key, faces):
    central = Central(broker, key).start()
    door = Door(broker, signing.public_key_b64(key)).start()
    try:
        registry.enrol("eileen", [faces["eileen"]])
        assert eventually(synced(door))
        door.close()
        for _ in range(3):
            registry.enrol("grace", [faces["grace"]])
        registry.revoke("eileen")
        registry.prune_log(keep=1)
        door = Door(broker, signing.public_key_b64(key)).start()
        assert eventually(synced(door))
        assert sorted(cache.people()) == ["grace"]
        assert len(door.gallery.matrix) == 3
    finally:
        door.close()
        central.close()


def test_damaged_cache_is_rebuilt_from_a_snapshot(broker, central_db, door_cache, key, faces):
    central = Central(broker, key).start()
    try:
        registry.enrol("eileen", [faces["eileen"]])
        cache.upsert_person("stale", [faces["grace"]], version=1)
        cache.Descriptor.update(vector=b"garbage").execute()
        cache.set_cache_version(1)
        door = Door(broker, signing.public_key_b64(key)).start()
        try:
            assert eventually(synced(door))
            assert sorted(cache.people()) == ["eileen"]
        finally:
            door.close()
    finally:
        central.close()


# --- attacks: the cache never changes, and the door says why ------------------------------

def assert_rejected(door, caplog, before, error_type):
    assert eventually(lambda: door.rejections, timeout=5), "the door did not report the rejection"
    assert isinstance(door.rejections[-1], error_type)
    assert cache_state() == before
    assert "rejected an enrolment update" in caplog.text


def settled(system, faces):
    central, door = system
    registry.enrol("eileen", [faces["eileen"]])
    assert eventually(synced(door))
    return central, door


def test_unsigned_person_injected_by_broker_user_is_rejected(system, faces, attacker, caplog):
    caplog.set_level(logging.WARNING)
    central, door = settled(system, faces)
    before = cache_state()
    envelope = {"body": forged_change(cache.cache_version() + 1, faces["grace"])}
    attacker.publish(contract.updates_topic(PREFIX), json.dumps(envelope))
    assert_rejected(door, caplog, before, SignatureError)
    assert door.grants(faces["grace"]) is None


def test_body_altered_after_signing_is_rejected(system, faces, attacker, caplog, key):
    caplog.set_level(logging.WARNING)
    central, door = settled(system, faces)
    before = cache_state()
    envelope = signing.sign(forged_change(cache.cache_version() + 1, faces["eileen"], person_id="eileen"), key)
    envelope["body"]["person"] = encode_person("mallory", [faces["grace"]])
    attacker.publish(contract.updates_topic(PREFIX), json.dumps(envelope))
    assert_rejected(door, caplog, before, SignatureError)


def test_replayed_old_signed_change_is_rejected(system, faces, attacker, caplog):
    caplog.set_level(logging.WARNING)
    central, door = settled(system, faces)
    all_topic = contract.updates_topic(PREFIX)
    assert eventually(lambda: [p for t, p in attacker.seen if t == all_topic])
    old_enrolment = [p for t, p in attacker.seen if t == all_topic][0]
    registry.revoke("eileen")
    assert eventually(synced(door))
    before = cache_state()
    attacker.publish(all_topic, old_enrolment)
    assert_rejected(door, caplog, before, ReplayError)
    assert door.grants(faces["eileen"]) is None


def test_second_delivery_of_the_latest_change_is_ignored_quietly(system, faces, attacker, caplog):
    caplog.set_level(logging.INFO)
    central, door = settled(system, faces)
    all_topic = contract.updates_topic(PREFIX)
    assert eventually(lambda: [p for t, p in attacker.seen if t == all_topic])
    latest = [p for t, p in attacker.seen if t == all_topic][-1]
    before = cache_state()
    attacker.publish(all_topic, latest)
    assert eventually(lambda: "arrived again; already applied" in caplog.text, timeout=5)
    assert door.rejections == []
    assert cache_state() == before


def test_change_signed_with_another_key_is_rejected(system, faces, attacker, caplog):
    caplog.set_level(logging.WARNING)
    central, door = settled(system, faces)
    before = cache_state()
    payload = signing.sign_bytes(forged_change(cache.cache_version() + 1, faces["grace"]),
                                 Ed25519PrivateKey.generate())
    attacker.publish(contract.updates_topic(PREFIX), payload)
    assert_rejected(door, caplog, before, SignatureError)
    assert door.grants(faces["grace"]) is None


@pytest.mark.parametrize("damage", ["truncated", "garbled", "empty", "not-an-envelope"])
def test_truncated_or_garbled_payload_is_rejected(system, faces, attacker, caplog, key, damage):
    caplog.set_level(logging.WARNING)
    central, door = settled(system, faces)
    before = cache_state()
    good = signing.sign_bytes(forged_change(cache.cache_version() + 1, faces["grace"]), key)
    payload = {
        "truncated": good[: len(good) // 2],
        "garbled": bytes(b ^ 0x5A for b in good),
        "empty": b"",
        "not-an-envelope": b"[1, 2, 3]",
    }[damage]
    attacker.publish(contract.updates_topic(PREFIX), payload)
    assert_rejected(door, caplog, before, MessageRejected)
    assert door.grants(faces["grace"]) is None


def test_signed_change_addressed_to_another_door_is_rejected(system, faces, attacker, caplog, key):
    caplog.set_level(logging.WARNING)
    central, door = settled(system, faces)
    before = cache_state()
    payload = signing.sign_bytes(forged_change(cache.cache_version() + 1, faces["grace"], target=["door-2"]), key)
    attacker.publish(contract.updates_topic(PREFIX, DOOR), payload)
    assert_rejected(door, caplog, before, MessageRejected)
    assert door.grants(faces["grace"]) is None


def test_replayed_catch_up_answer_is_rejected(system, faces, attacker, caplog):
    caplog.set_level(logging.WARNING)
    central, door = settled(system, faces)
    # A change for another door leaves a gap at this one, so it asks central
    # for what it missed and gets a signed answer on its own topic.
    registry.enrol("grace", [faces["grace"]], doors=["door-2"])
    registry.enrol("eileen", [faces["eileen"]])
    assert eventually(synced(door))
    own_topic = contract.updates_topic(PREFIX, DOOR)
    answers = [p for t, p in attacker.seen if t == own_topic]
    assert answers, "the door's catch-up answer was not seen on the broker"
    before = cache_state()
    attacker.publish(own_topic, answers[0])
    assert_rejected(door, caplog, before, ReplayError)


def test_cache_applies_an_update_and_its_version_all_or_nothing(door_cache, faces):
    cache.apply_changes([("upsert", {"person_id": "eileen", "descriptors": [faces["eileen"]]})], 1)
    before = cache_state()
    with pytest.raises(ValueError):
        cache.apply_changes([("upsert", {"person_id": "grace", "descriptors": [faces["grace"]]}),
                             ("explode", {"person_id": "eileen"})], 2)
    assert cache_state() == before == (1, ["eileen"])


def test_update_refused_by_the_broker_acl_stays_in_the_log(tmp_path, central_db, key, faces, caplog):
    from tests.brokers import Mosquitto

    acl = tmp_path / "acl"
    acl.write_text(f"topic read {PREFIX}/#\ntopic write {PREFIX}/doors/#\n")
    # As root, mosquitto drops to its own user, which cannot read pytest's tmp_path.
    run_as = "user root\n" if os.geteuid() == 0 else ""
    broker = Mosquitto(tmp_path / "acl-broker", extra_conf=f"acl_file {acl}\n{run_as}")
    broker.start()
    central = Central(broker, key).start()
    try:
        registry.enrol("eileen", [faces["eileen"]])
        assert eventually(lambda: "refused an update" in caplog.text, timeout=5)
        assert [c.version for c in registry.unpublished_changes()] == [1]
    finally:
        central.close()
        broker.stop()


# --- hostile or odd sync requests, doors central does not list, restored backups --------------


def sync_request(door_id, version=0):
    return json.dumps({"door": door_id, "version": version, "nonce": os.urandom(8).hex()})


def answers_on(attacker, door_id):
    topic = contract.updates_topic(PREFIX, door_id)
    return [p for t, p in attacker.seen if t == topic]


def test_malformed_sync_requests_never_stop_central_answering(system, faces, attacker, caplog):
    caplog.set_level(logging.WARNING)
    central, door = settled(system, faces)
    topic = contract.sync_request_topic(PREFIX, "door-2")
    # Valid JSON that is no object, nesting deep enough for a RecursionError
    # within the size limit, and an empty door level in the topic.
    for payload in (b"[]", b"1", b"null", b'"x"', b"[" * 1000, b'{"door":' * 200):
        attacker.publish(topic, payload)
    attacker.publish(f"{PREFIX}/doors//sync_request", sync_request(""))
    attacker.publish(topic, sync_request("door-2"))

    # Central still answers, so its MQTT link survived every one of them ...
    assert eventually(lambda: answers_on(attacker, "door-2"))
    # ... and still publishes live changes.
    registry.enrol("grace", [faces["grace"]])
    assert eventually(synced(door))
    assert door.grants(faces["grace"]) == "grace"
    # The empty door id was not taken for "all doors".
    snapshots = [p for t, p in attacker.seen if t == contract.updates_topic(PREFIX)
                 and json.loads(p)["body"]["kind"] == "snapshot"]
    assert snapshots == []
    assert "not a JSON object" in caplog.text


def test_central_answers_only_the_doors_it_lists(broker, central_db, door_cache, key, faces, attacker):
    central = Central(broker, key, doors={DOOR: None}).start()
    door = Door(broker, signing.public_key_b64(key)).start()
    try:
        registry.enrol("eileen", [faces["eileen"]])
        assert eventually(synced(door))
        # Any broker account can ask as "hvac"; a listed door asking is the control.
        attacker.publish(contract.sync_request_topic(PREFIX, "hvac"), sync_request("hvac"))
        attacker.publish(contract.sync_request_topic(PREFIX, DOOR), sync_request(DOOR))
        assert eventually(lambda: len(answers_on(attacker, DOOR)) >= 2)
        time.sleep(0.5)
        assert answers_on(attacker, "hvac") == []
    finally:
        door.close()
        central.close()


def test_doors_recover_after_central_is_restored_from_an_older_backup(broker, tmp_path, door_cache, key, faces):
    import shutil

    live, backup = tmp_path / "central.db", tmp_path / "restored.db"
    db = open_database(f"sqlite:///{live}")
    central = Central(broker, key).start()
    door = Door(broker, signing.public_key_b64(key)).start()
    try:
        registry.enrol("eileen", [faces["eileen"]])
        assert eventually(synced(door))
        db.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        shutil.copy(live, backup)
        registry.enrol("grace", [faces["grace"]])
        assert eventually(synced(door))
        assert sorted(cache.people()) == ["eileen", "grace"]
        door_version = cache.cache_version()
        central.close()
        door.close()
        db.close()

        # The central database is restored from the backup (version 1, no Grace),
        # while the door holds version 2 with Grace: the restored registry cannot
        # even revoke her, so only its snapshot can take her off the door.
        db = open_database(f"sqlite:///{backup}")
        assert registry.current_version() == 1 < door_version
        central = Central(broker, key).start()
        door = Door(broker, signing.public_key_b64(key)).start()
        assert eventually(lambda: registry.current_version() > door_version)
        assert eventually(synced(door))
        assert sorted(cache.people()) == ["eileen"]   # what the restored registry holds
        assert door.grants(faces["grace"]) is None
        # Later changes are numbered past the door's version, so they are not replays.
        registry.revoke("eileen")
        assert eventually(synced(door))
        assert door.grants(faces["eileen"]) is None
    finally:
        door.close()
        central.close()
        db.close()


def test_an_empty_door_cache_takes_no_replayed_live_changes(broker, central_db, door_cache, key, faces, attacker):
    central = Central(broker, key).start()
    try:
        registry.enrol("grace", [faces["grace"]])
        all_topic = contract.updates_topic(PREFIX)
        assert eventually(lambda: [p for t, p in attacker.seen if t == all_topic])
        recorded = [p for t, p in attacker.seen if t == all_topic][0]
        registry.revoke("grace")
        assert eventually(lambda: not registry.unpublished_changes())
        central.close()

        # A new door comes up while central is down; someone replays change 1.
        door = Door(broker, signing.public_key_b64(key)).start()
        attacker.publish(all_topic, recorded)
        time.sleep(1.0)
        assert cache.cache_version() == 0 and cache.people() == {}
        central = Central(broker, key).start()
        assert eventually(synced(door))
        assert "grace" not in cache.people()
        door.close()
    finally:
        central.close()
