"""The central side of enrolment sync: sign and publish changes, answer doors' catch-up requests.

:class:`CentralSync` runs one MQTT client and one named worker thread.  The
worker publishes every change of the registry's log that is not yet
published (``enroll``/``revoke``/``forget`` from the command line write to the
log even when central is not running; this thread notices them within
``poll_seconds``), and answers ``<prefix>/doors/+/sync_request`` with a signed
``batch`` of what the door misses, or a signed full ``snapshot`` when the
door's version is 0 (empty or rebuilt cache), older than the log, or ahead of
central.  Answers carry the door's nonce so they cannot be replayed later.

Bodies are built from the registry at the time of sending, so a person
forgotten since a change was logged is never sent again.

The same worker relays area passages (area-wide anti-passback, see
docs/policy.md): the collector hands it each stored batch of events through
:meth:`CentralSync.feed_passages`, which only queues the grants that name an
area and a direction; the worker signs each one (under
:data:`bytelocker.signing.PASSAGE_DOMAIN`) and publishes it on
``<prefix>/areas/<area>/passages``, so signing never slows ingest.
"""

import json
import logging
import queue
import threading
import time

import paho.mqtt.client as mqtt
import peewee as pw

from bytelocker import contract, signing
from bytelocker.broker_link import connect_async, disconnect, make_client
from central import registry
from edge.sync import encode_person

logger = logging.getLogger(__name__)

DEFAULT_CLIENT_ID = "bytelocker-central-sync"
# A door (or anyone on the broker posing as one) is answered at most this often, seconds.
MIN_ANSWER_INTERVAL = 0.5
PUBLISH_TIMEOUT = 10.0
PRUNE_INTERVAL = 600.0
PUBLISH_RETRY_SECONDS = 2.0
# Passages waiting for the broker; beyond this (central cut off from the
# broker for long) new ones are dropped: doors fall back to their own knowledge.
MAX_PENDING_PASSAGES = 10_000
PASSAGE_ATTEMPTS = 3
# Versions a door may claim: a door ahead of central moves central's counter,
# which must stay far from the 64-bit limit of the database column.
MAX_VERSION = 2**53
# Distinct refused doors logged (a flood of made-up door ids must not grow memory).
MAX_REFUSALS_LOGGED = 1000


def _now_text():
    return registry.utcnow().isoformat()


def person_document(person):
    """The wire form of a registry :class:`~central.registry.Person` with their descriptors."""
    return encode_person(person.person_id, registry.descriptors_of(person.person_id), name=person.name,
                         groups=person.groups, valid_from=person.valid_from, valid_until=person.valid_until)


def change_body(change):
    """The signed-body form of one logged change, or None if a later change supersedes it."""
    if change.op == registry.REMOVE:
        person = {"id": change.person_id}
    else:
        current = registry.Person.get_or_none(registry.Person.person_id == change.person_id)
        if current is None or not current.active or current.doors != change.target:
            return None
        person = person_document(current)
    return {
        "schema": contract.SCHEMA_VERSION,
        "kind": "change",
        "version": change.version,
        "target": contract.UPDATES_ALL if change.target is None else change.target,
        "op": change.op,
        "person": person,
        "issued_at": _now_text(),
    }


def answer_body(door_id, since, nonce):
    """The signed-body answer to door ``door_id`` holding version ``since``: a batch or a snapshot.

    A door ahead of central means central's registry was restored from a
    backup: the door would refuse anything numbered at or below what it holds
    (as a replay), revocations included.  So central's counter first moves
    past the door's version, and the door gets a snapshot it accepts.
    """
    current = registry.current_version()
    if since > current:
        behind, current = current, registry.advance_version(since + 1)
        logger.warning("central: door %s holds enrolment version %d, ahead of this registry's %d: was the "
                       "central database restored from a backup? Versions now continue at %d; every door "
                       "gets a full snapshot.", door_id, since, behind, current)
    if since == 0 or since < registry.log_start() or since > current:
        return {
            "schema": contract.SCHEMA_VERSION,
            "kind": "snapshot",
            "door": door_id,
            "nonce": nonce,
            "version": current,
            "people": [person_document(p) for p in registry.active_people() if p.serves(door_id)],
            "issued_at": _now_text(),
        }
    affected = []
    for change in registry.changes_after(since):
        if change.version > current:
            break
        if change.concerns(door_id) and change.person_id not in affected:
            affected.append(change.person_id)
    entries = []
    for person_id in affected:
        person = registry.Person.get_or_none(registry.Person.person_id == person_id)
        if person is not None and person.serves(door_id):
            entries.append({"op": registry.UPSERT, "person": person_document(person)})
        else:
            entries.append({"op": registry.REMOVE, "person": {"id": person_id}})
    return {
        "schema": contract.SCHEMA_VERSION,
        "kind": "batch",
        "door": door_id,
        "nonce": nonce,
        "from_version": since,
        "to_version": current,
        "changes": entries,
        "issued_at": _now_text(),
    }


def parse_sync_request(prefix, topic, payload):
    """``(door_id, version, nonce)`` from a sync_request, or None if it is malformed (logged)."""
    door_id = contract.door_id_from_topic(prefix, topic)
    if (door_id is None or not contract.is_door_id(door_id) or door_id == contract.UPDATES_ALL
            or len(payload) > contract.MAX_SYNC_REQUEST_BYTES):
        logger.warning("ignoring a malformed sync request on %r", topic[:200])
        return None
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        logger.warning("ignoring a sync request on %s that is not JSON", topic)
        return None
    if not isinstance(data, dict):
        logger.warning("ignoring a sync request on %s that is not a JSON object", topic)
        return None
    version, nonce = data.get("version"), data.get("nonce")
    if (data.get("door") != door_id or not isinstance(version, int) or isinstance(version, bool)
            or not 0 <= version < MAX_VERSION or not isinstance(nonce, str) or not 8 <= len(nonce) <= 64):
        logger.warning("ignoring a malformed sync request on %s", topic)
        return None
    return door_id, version, nonce


class CentralSync:
    """Publish signed enrolment changes and answer doors' catch-up requests.

    :param config: the :class:`~config.central.CentralConfig`; its database must
        already be open (:func:`central.db.open_database`).
    :param signing_key: central's Ed25519 private key (:func:`bytelocker.signing.load_signing_key`).
    :param stop_event: the shared stop event.
    :param password: the broker password, if the broker wants one.
    :param poll_seconds: how often the change log is checked for changes made
        by other processes (the command line).  Well under the 2 s revocation
        budget.
    """

    def __init__(self, config, signing_key, stop_event, *, password=None, poll_seconds=0.2, client_id=None):
        self.config = config
        self.mqtt = config.mqtt
        self.prefix = config.mqtt.prefix
        self.signing_key = signing_key
        self.stop_event = stop_event
        self.password = password
        self.poll_seconds = poll_seconds
        collector = getattr(config, "collector", None)
        base = getattr(collector, "client_id", None) or "bytelocker-central"
        self.client_id = client_id or f"{base}-sync"
        self.session_expiry_seconds = int(getattr(collector, "session_expiry_hours", 168) * 3600) or 3600
        self._acks = {}
        self._wake = threading.Event()
        self._requests = queue.Queue()
        self._last_answer = {}
        self._next_prune = 0.0
        self._publish_retry_at = 0.0
        self.connected = threading.Event()
        self._client = None
        self._thread = None
        self.published = 0
        self.answered = 0
        self._passages = queue.Queue(maxsize=MAX_PENDING_PASSAGES)
        self._passage_held = None
        self._passages_dropped = 0
        self._passage_attempts = 0
        self._passage_retry_at = 0.0
        self.passages_relayed = 0
        self._refused = set()

    def start(self):
        """Connect (persistent session, so requests queue while central is away) and start the worker."""
        self._client = make_client(self.mqtt, self.client_id, password=self.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        connect_async(self._client, self.mqtt, session_expiry_seconds=self.session_expiry_seconds)
        self._thread = threading.Thread(target=self._run, name="central-sync", daemon=True)
        self._thread.start()

    def notify(self):
        """Publish pending changes now instead of at the next poll (same-process callers)."""
        self._wake.set()

    def feed_passages(self, events):
        """Queue the passages among stored ``events`` (:class:`~bytelocker.contract.Event`) for relay.

        Called by the collector's writer after each stored batch; it only
        queues, the sync worker signs and publishes.  Redelivered events are
        relayed again, which is harmless: doors keep only newer passages.
        """
        queued = 0
        bodies = [(event, contract.passage_body(event)) for event in events]
        bodies = [(event, body) for event, body in bodies if body is not None]
        # A door offline during a forget sends the person's grants later: central
        # stores them anonymous and must not put the id back on the wire.
        forgotten = registry.forgotten_among({body["person_id"] for _, body in bodies}) if bodies else set()
        for event, body in bodies:
            if body["person_id"] in forgotten:
                continue
            area = self.config.area_of(event.door_id)
            if area != body["area"]:
                # The area comes from central.yaml, never from the event: any
                # broker account can write an event naming any area.
                self._refuse(event.door_id, f"its pass in area {body['area']!r} is not relayed: "
                             + ("the door is not in central.yaml's doors" if area is None
                                else f"central.yaml lists it in area {area!r}"))
                continue
            try:
                self._passages.put_nowait(body)
                queued += 1
            except queue.Full:
                self._passages_dropped += 1
                if self._passages_dropped == 1 or self._passages_dropped % 1000 == 0:
                    logger.warning("central: %d area passages dropped; the broker has not taken the "
                                   "queued ones (doors fall back to their own anti-passback state)",
                                   self._passages_dropped)
        if queued:
            self._wake.set()

    def _refuse(self, door_id, what):
        # Logged once per door and reason: a misconfigured door sends this all day.
        key = (door_id, what)
        if key not in self._refused and len(self._refused) < MAX_REFUSALS_LOGGED:
            self._refused.add(key)
            logger.warning("central: door %r: %s.", door_id, what)

    def join(self, timeout=None):
        """Wait for the worker to end (after the stop event is set), then disconnect."""
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._client is not None:
            disconnect(self._client)
            self._client = None

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.error("central: the broker refused the sync connection: %s", reason_code)
            return
        client.subscribe(contract.all_doors_filter(self.prefix, "sync_request"), qos=contract.QOS)
        self.connected.set()
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self.stop_event.is_set():
            logger.warning("central: sync link lost (%s); changes wait in the log", reason_code)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        for rc in reason_codes:
            if rc.is_failure:
                logger.error("central: the broker refused the sync_request subscription: %s", rc)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self._acks[mid] = reason_code

    def _on_message(self, client, userdata, message):
        try:
            request = parse_sync_request(self.prefix, message.topic, message.payload)
        except Exception:  # anyone may publish here: one message must not end the link
            logger.exception("central: dropped a sync request on %r that could not be read", message.topic[:200])
            return
        if request is not None:
            self._requests.put(request)
            self._wake.set()

    def _run(self):
        while not self.stop_event.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self.stop_event.is_set() or not self.connected.is_set():
                continue
            try:
                self._publish_pending()
                self._relay_passages()
                self._answer_requests()
                self._prune()
            except pw.PeeweeException as exc:
                logger.error("central: enrolment sync cannot read the registry: %s", exc)
            except Exception:  # the worker must survive one bad row or request
                logger.exception("central: unexpected error in enrolment sync")

    def _publish(self, topic, body, *, domain=signing.DOMAIN):
        payload = signing.sign_bytes(body, self.signing_key, domain=domain)
        info = self._client.publish(topic, payload, qos=contract.QOS)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            logger.warning("central: could not publish to %s: %s", topic, mqtt.error_string(info.rc))
            return False
        try:
            info.wait_for_publish(PUBLISH_TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            logger.warning("central: publishing to %s failed: %s", topic, exc)
            return False
        reason = self._acks.pop(info.mid, None)
        if not info.is_published():
            logger.warning("central: the broker did not acknowledge an update on %s in time", topic)
            return False
        # 0x10 "no matching subscribers" is success: no door is listening right
        # now, and doors catch up when they connect.
        if reason is not None and reason.is_failure:
            logger.error("central: the broker refused an update on %s: %s", topic, reason)
            return False
        return True

    def _publish_pending(self):
        if time.monotonic() < self._publish_retry_at:
            return
        for change in registry.unpublished_changes():
            if self.stop_event.is_set():
                return
            body = change_body(change)
            if body is not None:
                doors = change.target
                topics = ([contract.updates_topic(self.prefix)] if doors is None
                          else [contract.updates_topic(self.prefix, d) for d in doors])
                if not all(self._publish(topic, body) for topic in topics):
                    # Retried in order, after a pause so a refusing broker is not hammered.
                    self._publish_retry_at = time.monotonic() + PUBLISH_RETRY_SECONDS
                    return
                self.published += 1
                logger.info("central: published enrolment change %d (%s)", change.version, change.op)
            registry.mark_published(change.version)

    def _relay_passages(self):
        if time.monotonic() < self._passage_retry_at:
            return
        while not self.stop_event.is_set():
            body = self._passage_held
            if body is None:
                try:
                    body = self._passages.get_nowait()
                except queue.Empty:
                    return
            topic = contract.passages_topic(self.prefix, body["area"])
            relayed = self._publish(topic, body, domain=signing.PASSAGE_DOMAIN)
            if not relayed:
                self._passage_attempts += 1
                if self._passage_attempts < PASSAGE_ATTEMPTS:
                    # Kept, in order, for a later round, after a pause so a refusing broker is not hammered.
                    self._passage_held = body
                    self._passage_retry_at = time.monotonic() + PUBLISH_RETRY_SECONDS
                    return
                # Most likely the ACL refuses central this area's topic: one
                # passage must not hold up every later one.
                logger.error("central: gave up relaying a passage on %s after %d attempts", topic,
                             self._passage_attempts)
            self._passage_held = None
            self._passage_attempts = 0
            if relayed:
                self.passages_relayed += 1
                logger.debug("central: relayed a %s in area %s", body["direction"], body["area"])

    def _prune(self):
        now = time.monotonic()
        if now < self._next_prune:
            return
        self._next_prune = now + PRUNE_INTERVAL
        keep = self.config.enrolment.log_keep_changes
        pruned = registry.prune_log(keep)
        if pruned:
            logger.info("central: pruned %d old enrolment changes (doors further behind get a snapshot)", pruned)

    def _answer_requests(self):
        latest = {}
        while True:
            try:
                door_id, version, nonce = self._requests.get_nowait()
            except queue.Empty:
                break
            latest[door_id] = (version, nonce)
        now = time.monotonic()
        for door_id, (version, nonce) in latest.items():
            if not self.config.serves(door_id):
                self._refuse(door_id, "not in central.yaml's doors, so its enrolment request is not answered")
                continue
            wait = self._last_answer.get(door_id, 0) + MIN_ANSWER_INTERVAL - now
            if wait > 0:
                # Too soon for this door: keep only its newest request; the
                # next poll (every poll_seconds) comes back to it.
                self._requests.put((door_id, version, nonce))
                continue
            body = answer_body(door_id, version, nonce)
            if self._publish(contract.updates_topic(self.prefix, door_id), body):
                self._last_answer[door_id] = time.monotonic()
                self.answered += 1
                logger.info("central: answered door %s (at version %d) with a %s to version %d", door_id,
                            version, body["kind"], body.get("version", body.get("to_version")))
