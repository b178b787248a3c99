"""Area-wide anti-passback: central relays signed passages between the door units of an area.

Real Mosquitto, real collector and CentralSync (SQLite central), real
DoorSync per unit.  Each unit's anti-passback state is its own
:class:`AccessPolicy` with ``persist=False``: :mod:`edge.cache` binds one
database per process, so the units here share one enrolment cache (which
DoorSync needs to start) but not their passage state, which lives in each
policy's memory exactly as it does on a door before it is written to SQLite.
Persisting a relayed passage is checked on its own, with a real cache.
The grants are published by a raw MQTT client posing as each door, with the
details the policy gave them, as the door's publisher would.
"""

import datetime as dt
import json
import threading

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import central.registry  # noqa: F401 (its tables, created by the collector's open_database)
from bytelocker import contract, signing
from central.collector import Collector
from central.sync import CentralSync
from config.central import CentralConfig
from config.policy import PolicySection
from edge import cache
from edge.policy import ENTRY, EXIT, AccessPolicy, PersonFacts
from edge.sync import DoorSync
from tests.brokers import example_acl_broker
from tests.waiting import eventually

PREFIX = "bltest"
AREA = "hall"
PEOPLE = {"ann": PersonFacts(("staff",)), "bob": PersonFacts(("staff",))}
UTC = dt.timezone.utc


def mqtt_settings(broker):
    return {"host": broker.host, "port": broker.port, "prefix": PREFIX, "reconnect_min_seconds": 0.1,
            "reconnect_max_seconds": 1}


class RawClient:
    """A client with publish rights and no signing key: poses as doors, or as an attacker."""

    def __init__(self, broker, client_id, listen=None):
        self.seen = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.seen.append(m.payload)
        self.subscribed = threading.Event()
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect(broker.host, broker.port)
        if listen:
            self.client.subscribe(listen, qos=1)
        self.client.loop_start()
        if listen:
            assert self.subscribed.wait(10)

    def publish(self, topic, payload):
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        info.wait_for_publish(5)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


class Unit:
    """One door unit of the area: its policy, its DoorSync, and its grants sent as events."""

    def __init__(self, broker, site, door_id, role, public_key_b64):
        self.door_id = door_id
        self.site = site
        self.seq = 0
        self.policy = AccessPolicy(
            PolicySection(role=role, area=AREA, anti_passback="hard", cooldown_seconds=0),
            "UTC", person_lookup=PEOPLE.get, persist=False)
        self.stop = threading.Event()
        self.sync = DoorSync(door_id, site.config.mqtt, public_key_b64, self.stop, on_gallery=lambda g: None,
                             area=AREA, on_passage=self.policy.record_remote)

    def start(self):
        self.sync.start()
        assert self.sync.connected.wait(10), f"{self.door_id}'s sync did not connect"
        return self

    def present(self, person_id):
        """The person shows their face here: the policy's verdict, and the grant event if any."""
        verdict = self.policy.check(person_id)
        if verdict.allowed and not verdict.suppressed:
            self.seq += 1
            event = contract.Event.build(self.door_id, self.seq, "granted",
                                         {"person_id": person_id, **verdict.details})
            self.site.door_link.publish(contract.events_topic(PREFIX, self.door_id), event.to_json())
        return verdict

    def close(self):
        self.stop.set()
        self.sync.join(5)


class Site:
    def __init__(self, broker, tmp_path):
        self.key = Ed25519PrivateKey.generate()
        self.config = CentralConfig.model_validate({
            "mqtt": mqtt_settings(broker),
            "database": {"url": f"sqlite:///{tmp_path / 'central.db'}"},
            "storage": {"snapshot_dir": str(tmp_path / "snapshots")},
            # Central knows its doors and their area; "vault-in" is a door of another area.
            "doors": {"north-in": {"area": AREA}, "south-in": {"area": AREA}, "hall-out": {"area": AREA},
                      "vault-in": {"area": "vault"}},
        })
        self.stop = threading.Event()
        self.central_sync = CentralSync(self.config, self.key, self.stop)
        self.collector = Collector(self.config, self.stop, passages=self.central_sync).start()
        assert self.collector.wait_connected(15)
        self.central_sync.start()
        assert self.central_sync.connected.wait(10)
        cache.open_cache(str(tmp_path / "door" / "cache.db"))
        self.door_link = RawClient(broker, "doors")
        # Records every passage on the wire, so a genuine one can be replayed later.
        self.attacker = RawClient(broker, "attacker", listen=contract.passages_topic(PREFIX, "+"))
        public = signing.public_key_b64(self.key)
        self.north = Unit(broker, self, "north-in", "entry", public).start()
        self.south = Unit(broker, self, "south-in", "entry", public).start()
        self.out = Unit(broker, self, "hall-out", "exit", public).start()

    def close(self):
        for unit in (self.north, self.south, self.out):
            unit.close()
        self.attacker.close()
        self.door_link.close()
        self.central_sync.join(5)
        self.collector.stop()
        cache.close_cache()


@pytest.fixture
def site(broker, tmp_path):
    s = Site(broker, tmp_path)
    yield s
    s.close()


def passage(person_id, direction, at, door_id="south-in", area=AREA):
    return {"schema": contract.SCHEMA_VERSION, "kind": contract.PASSAGE_KIND, "person_id": person_id,
            "area": area, "direction": direction, "at": contract.format_timestamp(at), "door_id": door_id,
            "event_id": "0d6f1c9e-3a57-4a8e-9c55-5d0c1f2b7e41"}


# -- through the broker --------------------------------------------------------------------


def test_entry_at_one_unit_is_denied_at_another_until_an_exit_at_the_exit_unit(site):
    assert site.north.present("ann").allowed
    assert eventually(lambda: site.south.sync.passages_applied == 1)

    second = site.south.present("ann")

    assert (second.allowed, second.reason) == (False, "anti_passback")
    assert site.out.present("ann").details["direction"] == EXIT
    assert eventually(lambda: site.south.sync.passages_applied == 2)
    assert site.south.present("ann").allowed
    # North's own grant came back relayed and was not taken as news.
    assert eventually(lambda: site.north.sync.passages_ignored >= 1)
    assert eventually(lambda: site.central_sync.passages_relayed == 3)


def test_relayed_passages_are_signed_with_the_passage_domain(site):
    site.north.present("ann")
    assert eventually(lambda: site.attacker.seen)

    envelope = json.loads(site.attacker.seen[0])
    keys = [site.key.public_key()]

    assert signing.verify(envelope, keys, domain=signing.PASSAGE_DOMAIN)["person_id"] == "ann"
    with pytest.raises(signing.SignatureError):
        signing.verify(envelope, keys)  # never valid as an enrolment update


def test_forged_unsigned_and_garbled_passages_are_rejected_and_change_nothing(site):
    topic = contract.passages_topic(PREFIX, AREA)
    now = dt.datetime.now(UTC)
    body = passage("bob", ENTRY, now)
    forged = signing.sign_bytes(body, Ed25519PrivateKey.generate(), domain=signing.PASSAGE_DOMAIN)
    unsigned = json.dumps({"body": body}).encode()
    bare = json.dumps(body).encode()
    stripped = json.loads(forged)
    stripped["signature"] = ""

    for payload in (forged, unsigned, bare, json.dumps(stripped).encode(), b"{not json"):
        site.attacker.publish(topic, payload)

    assert eventually(lambda: site.south.sync.passages_rejected == 5)
    assert site.south.sync.passages_applied == 0
    assert site.south.policy.last_passage("bob") is None
    assert site.south.present("bob").allowed


def test_genuine_signature_over_the_wrong_thing_is_rejected(site):
    now = dt.datetime.now(UTC)
    enrolment_signed = signing.sign_bytes(passage("bob", ENTRY, now), site.key)  # wrong domain
    other_area = signing.sign_bytes(passage("bob", ENTRY, now, area="lab"), site.key,
                                    domain=signing.PASSAGE_DOMAIN)
    far_future = signing.sign_bytes(passage("bob", ENTRY, now + dt.timedelta(hours=2)), site.key,
                                    domain=signing.PASSAGE_DOMAIN)

    for payload in (enrolment_signed, other_area, far_future):
        site.attacker.publish(contract.passages_topic(PREFIX, AREA), payload)

    assert eventually(lambda: site.south.sync.passages_rejected == 3)
    assert site.south.policy.last_passage("bob") is None


def test_a_grant_claiming_an_area_is_relayed_only_for_a_door_central_lists_in_that_area(site):
    # Any broker account can write an event naming any area: a door of another
    # area, or an account that is no door at all.  Neither may make central
    # sign a passage that locks Ann out of the hall (hard anti-passback).
    def forged_grant(door_id):
        event = contract.Event.build(door_id, 1, "granted",
                                     {"person_id": "ann", "area": AREA, "direction": ENTRY})
        site.door_link.publish(contract.events_topic(PREFIX, door_id), event.to_json())

    rejected = site.collector.stats["rejected"]
    forged_grant("vault-in")
    forged_grant("hvac")
    assert eventually(lambda: site.collector.stats["stored"] == 1)
    assert eventually(lambda: site.collector.stats["rejected"] == rejected + 1)  # hvac: not a listed door

    site.north.present("bob")  # a genuine pass after them, to know the relay has caught up
    assert eventually(lambda: site.south.sync.passages_applied == 1)
    assert site.central_sync.passages_relayed == 1
    assert site.south.policy.last_passage("ann") is None
    assert site.south.present("ann").allowed


def test_a_forgotten_persons_late_grant_is_not_relayed(site):
    import numpy as np

    from central import registry

    registry.enrol("ann", [np.full(128, 0.05, np.float32)])
    registry.forget("ann")
    # A unit that had not heard of the forget yet grants Ann, then Bob.
    site.north.present("ann")
    site.north.present("bob")
    assert eventually(lambda: site.south.sync.passages_applied == 1)
    assert site.south.policy.last_passage("bob") is not None
    assert not any(b"ann" in payload for payload in site.attacker.seen)


def test_replayed_older_signed_passage_does_not_roll_state_back(site):
    site.north.present("ann")
    assert eventually(lambda: site.south.sync.passages_applied == 1)
    entry_payload = site.attacker.seen[0]
    site.out.present("ann")
    assert eventually(lambda: site.south.sync.passages_applied == 2)
    ignored = site.south.sync.passages_ignored

    site.attacker.publish(contract.passages_topic(PREFIX, AREA), entry_payload)

    assert eventually(lambda: site.south.sync.passages_ignored == ignored + 1)
    assert site.south.policy.last_passage("ann")[0] == EXIT
    assert site.south.present("ann").allowed


# -- the policy's side, without a broker ------------------------------------------------------


def test_record_remote_takes_only_newer_passes():
    policy = AccessPolicy(PolicySection(area=AREA, anti_passback="hard"), "UTC", person_lookup=PEOPLE.get,
                          persist=False)
    t = dt.datetime.now(UTC) - dt.timedelta(minutes=10)

    assert policy.record_remote("ann", ENTRY, t)
    assert not policy.record_remote("ann", EXIT, t - dt.timedelta(seconds=1))
    assert not policy.record_remote("ann", EXIT, t)  # a duplicate is not news either

    assert policy.last_passage("ann") == (ENTRY, t)
    assert policy.check("ann").reason == "anti_passback"


def test_relayed_passage_is_kept_in_the_door_cache_across_restarts(tmp_path):
    cache.open_cache(str(tmp_path / "cache.db"))
    try:
        section = PolicySection(area=AREA, anti_passback="hard")
        t = (dt.datetime.now(UTC) - dt.timedelta(minutes=1)).replace(microsecond=0)
        AccessPolicy(section, "UTC", person_lookup=PEOPLE.get).record_remote("ann", ENTRY, t)

        restarted = AccessPolicy(section, "UTC", person_lookup=PEOPLE.get)

        assert restarted.last_passage("ann") == (ENTRY, t)
        assert restarted.check("ann").reason == "anti_passback"
    finally:
        cache.close_cache()


def test_only_grants_naming_an_area_and_a_direction_become_passages():
    def ev(kind, details):
        return contract.Event.build("north-in", 1, kind, details)

    assert contract.passage_body(ev("granted", {"person_id": "ann", "direction": "entry", "area": AREA}))
    assert contract.passage_body(ev("granted", {"person_id": "ann", "direction": "entry"})) is None
    assert contract.passage_body(ev("granted", {"person_id": "ann", "area": AREA})) is None
    assert contract.passage_body(ev("denied", {"person_id": "ann", "direction": "entry", "area": AREA})) is None
    assert contract.passage_body(ev("granted", {"person_id": "ann", "direction": "entry", "area": "a/#"})) is None


def test_area_that_cannot_be_a_topic_level_is_a_config_error():
    with pytest.raises(ValueError):
        PolicySection(area="hall/+")


def test_example_acl_lets_central_write_passages_and_doors_only_read_them(tmp_path):
    broker = example_acl_broker(tmp_path)
    clients = []
    try:
        def client(user, password):
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user, protocol=mqtt.MQTTv5)
            c.username_pw_set(user, password)
            c.results, c.seen, c.subscribed = [], [], threading.Event()
            c.on_publish = lambda cl, u, mid, rc, p: c.results.append(rc.is_failure)
            c.on_message = lambda cl, u, m: c.seen.append(m.payload)
            c.on_subscribe = lambda *a: c.subscribed.set()
            c.connect(broker.host, broker.port)
            c.loop_start()
            clients.append(c)
            return c

        topic = contract.passages_topic("bytelocker", AREA)
        reader = client("door-1", "d1")
        reader.subscribe(topic, qos=1)
        assert reader.subscribed.wait(10)
        relay, intruder = client("bytelocker-central", "c"), client("door-2", "d2")

        intruder.publish(topic, b"forged", qos=1)
        relay.publish(topic, b"signed", qos=1)

        assert eventually(lambda: len(intruder.results) == 1 and relay.results == [False], 10)
        assert intruder.results == [True]
        assert eventually(lambda: reader.seen == [b"signed"], 10)
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        broker.stop()
