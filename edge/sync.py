"""The door side of enrolment sync: verify signed updates and apply them to the cache.

:class:`DoorSync` runs its own MQTT client (``<door_id>-sync``) and one named
worker thread.  It subscribes to ``<prefix>/updates/all`` and
``<prefix>/updates/<door_id>``, and on start and on every reconnect publishes
``<prefix>/doors/<door_id>/sync_request`` with the version it holds and a
fresh random nonce.  An update is applied only if

* its Ed25519 signature verifies with a pinned central public key;
* it is addressed to this door (or to all doors);
* it is newer than the cache: a live ``change`` must be exactly the next
  version (a gap makes the door ask for what it missed), and a ``batch`` or
  ``snapshot`` must answer one of this door's own recent requests (its nonce)
  and end at a newer version.

Anything else (unsigned, forged, another key, replayed, garbled, for another
door) is logged, reported to ``on_rejected(topic, error)`` and leaves the
cache as it was.  Each update is applied in one SQLite transaction together
with the new version; then ``on_gallery(gallery)`` hands the daemon the new
in-memory gallery without stopping its frame loop.

With the broker or central unreachable the door keeps enforcing what its
cache holds, and catches up when it reconnects.

Given an ``area``, DoorSync also subscribes to ``<prefix>/areas/<area>/passages``
(area-wide anti-passback, docs/policy.md): each passage must verify with a
pinned key under the passage signing domain, name this area, come from
another door and not be dated in the future; then ``on_passage(person_id,
direction, at)`` (:meth:`edge.policy.AccessPolicy.record_remote`) takes it
in if it is newer than what the door knows.  Anything else is logged and
counted in ``passages_rejected`` and changes nothing.
"""

import base64
import binascii
import collections
import datetime as dt
import json
import logging
import queue
import secrets
import threading
import time

import numpy as np
import paho.mqtt.client as mqtt
import peewee as pw

from bytelocker import contract, signing
from bytelocker.broker_link import connect_async, disconnect, make_client
from bytelocker.errors import ConfigError, MessageRejected, ReplayError, StorageError
from edge import cache

logger = logging.getLogger(__name__)

DESCRIPTOR_BYTES = 128 * 4
# Answers to older requests than this many are no longer accepted.
NONCES_KEPT = 4
# Ask again if central has not answered within this long, seconds.
REQUEST_RETRY_SECONDS = 5.0
GAP_RETRY_SECONDS = 1.0
# A passage dated further ahead of this door's clock than this is refused:
# otherwise one bad clock (or one bad event) could pin a person's state past
# every later pass and past the daily reset.
MAX_PASSAGE_AHEAD_SECONDS = 300.0


# --- The person document, as both sides put it on the wire -------------------

def encode_descriptor(vector):
    """Base64 of a descriptor's 128 little-endian float32 values."""
    return base64.b64encode(np.asarray(vector, dtype="<f4").reshape(128).tobytes()).decode("ascii")


def format_time(value):
    """ISO 8601 text of a naive UTC datetime, or None."""
    return None if value is None else value.replace(microsecond=0).isoformat()


def encode_person(person_id, descriptors, *, name="", groups=(), valid_from=None, valid_until=None):
    """The signed-body form of an enrolled person (no floats, see :mod:`bytelocker.signing`)."""
    return {
        "id": person_id,
        "name": name,
        "groups": sorted(groups),
        "valid_from": format_time(valid_from),
        "valid_until": format_time(valid_until),
        "descriptors": [encode_descriptor(d) for d in np.asarray(descriptors, np.float32).reshape(-1, 128)],
    }


def _person_id(doc):
    pid = doc.get("id") if isinstance(doc, dict) else None
    if not isinstance(pid, str) or not 0 < len(pid) <= contract.MAX_PERSON_ID_CHARS:
        raise MessageRejected("The update names a person without a valid id.")
    return pid


def _time(doc, key, pid):
    value = doc.get(key)
    if value is None:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise MessageRejected(f"The update gives {pid!r} an invalid {key}.") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return parsed


def decode_person(doc):
    """Check a person document and return the keyword form :func:`edge.cache.apply_changes` takes."""
    pid = _person_id(doc)
    name = doc.get("name", "")
    groups = doc.get("groups", [])
    descs = doc.get("descriptors")
    if not isinstance(name, str) or len(name) > contract.MAX_PERSON_NAME_CHARS:
        raise MessageRejected(f"The update gives {pid!r} an invalid name.")
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise MessageRejected(f"The update gives {pid!r} invalid groups.")
    if not isinstance(descs, list) or not descs:
        raise MessageRejected(f"The update gives {pid!r} no descriptors.")
    vectors = []
    for text in descs:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise MessageRejected(f"The update holds a descriptor of {pid!r} that is not base64.") from None
        if len(raw) != DESCRIPTOR_BYTES:
            raise MessageRejected(f"The update holds a descriptor of {pid!r} of {len(raw)} bytes, not 512.")
        vectors.append(np.frombuffer(raw, dtype="<f4").astype(np.float32))
    matrix = np.asarray(vectors, dtype=np.float32)
    if not np.all(np.isfinite(matrix)):
        raise MessageRejected(f"The update holds a descriptor of {pid!r} with NaN or infinite values.")
    return {
        "person_id": pid,
        "name": name,
        "groups": groups,
        "valid_from": _time(doc, "valid_from", pid),
        "valid_until": _time(doc, "valid_until", pid),
        "descriptors": matrix,
    }


def decode_change(op, doc):
    """``(op, person)`` for :func:`edge.cache.apply_changes` from a signed change entry."""
    if op == "upsert":
        return op, decode_person(doc)
    if op == "remove":
        return op, {"person_id": _person_id(doc)}
    raise MessageRejected(f"The update has an unknown operation {str(op)[:20]!r}.")


def _int(body, key):
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise MessageRejected(f"The update has no valid '{key}'.")
    return value


# --- MQTT --------------------------------------------------------------------

class DoorSync:
    """Keep the door's cache in step with central's signed enrolment updates.

    :param door_id: this door's id (``door.id``).
    :param mqtt: the door's :class:`~config.mqtt.MqttSection`.
    :param public_key_b64: central's public key(s) pinned in ``door.central_public_key``;
        several keys separated by commas or spaces are all accepted (rotation).
    :param stop_event: the daemon's shared stop event.
    :param on_gallery: called with a fresh :class:`~edge.match.Gallery` once at
        start and after every applied update, from the sync thread.
    :param on_rejected: called as ``on_rejected(topic, error)`` for every
        rejected update (``error`` is a :class:`MessageRejected`; subclasses
        :class:`SignatureError` and :class:`ReplayError` say why).
    :param password: the broker password (from the environment or credentials).
    :param area: this door's ``policy.area``, to learn the signed passages of
        the area's other doors; None to not listen (``policy.share_anti_passback`` off).
    :param on_passage: called as ``on_passage(person_id, direction, at)`` from
        the sync thread for every valid passage of another door; returns True
        if it changed the door's state (:meth:`edge.policy.AccessPolicy.record_remote`).

    The cache must already be open (:func:`edge.cache.open_cache`).
    """

    def __init__(self, door_id, mqtt, public_key_b64, stop_event, *, on_gallery, on_rejected=None,
                 password=None, area=None, on_passage=None):
        if door_id == contract.UPDATES_ALL:
            raise ConfigError(f"A door cannot be called {door_id!r}: that name means every door in update topics.")
        self.door_id = door_id
        self.mqtt = mqtt
        self.public_keys = signing.parse_public_keys(public_key_b64)
        self.stop_event = stop_event
        self.on_gallery = on_gallery
        self.on_rejected = on_rejected
        self.password = password
        prefix = mqtt.prefix
        self.topics = (contract.updates_topic(prefix), contract.updates_topic(prefix, door_id))
        if area is not None and not contract.is_area_name(area):
            raise ConfigError(f"Door {door_id}: area {area!r} cannot be part of an MQTT topic.")
        self.area = area if on_passage is not None else None
        self.on_passage = on_passage
        self.passages_topic = contract.passages_topic(prefix, area) if self.area is not None else None
        self.passages_applied = 0
        self.passages_ignored = 0
        self.passages_rejected = 0
        self.request_topic = contract.sync_request_topic(prefix, door_id)
        self._inbox = queue.Queue()
        self._nonces = collections.deque(maxlen=NONCES_KEPT)
        self._requested_at = None
        self._wanted = 0
        self.connected = threading.Event()
        self.rejected = 0
        self.applied = 0
        self._client = None
        self._thread = None

    # -- lifecycle --

    def start(self):
        """Check the cache, hand the daemon its gallery, connect, start the sync thread."""
        try:
            cache.check_cache()
        except StorageError as exc:
            logger.error("door %s: %s Emptying it and asking central for a full snapshot.", self.door_id, exc)
            try:
                cache.reset_cache()
            except pw.PeeweeException as reset_exc:
                raise StorageError(f"Door {self.door_id} cannot rebuild its damaged cache: {reset_exc}.") from exc
        self._emit_gallery()
        self._client = make_client(self.mqtt, f"{self.door_id}-sync", password=self.password)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        connect_async(self._client, self.mqtt)
        self._thread = threading.Thread(target=self._run, name=f"{self.door_id}-sync", daemon=True)
        self._thread.start()

    def join(self, timeout=None):
        """Wait for the sync thread to end (after the stop event is set) and disconnect."""
        if self._thread is not None:
            self._thread.join(timeout)
        if self._client is not None:
            disconnect(self._client)
            self._client = None

    # -- MQTT callbacks (network thread): hand everything to the sync thread --

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.error("door %s: the broker refused the sync connection: %s", self.door_id, reason_code)
            return
        for topic in self.topics:
            client.subscribe(topic, qos=contract.QOS)
        if self.passages_topic is not None:
            client.subscribe(self.passages_topic, qos=contract.QOS)
        self.connected.set()
        self._inbox.put(("connected", None, None))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        if not self.stop_event.is_set():
            logger.warning("door %s: sync link lost (%s); enforcing the cached enrolment until it is back",
                           self.door_id, reason_code)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        for rc in reason_codes:
            if rc.is_failure:
                logger.error("door %s: the broker refused a sync subscription: %s", self.door_id, rc)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        if reason_code.is_failure:
            logger.error("door %s: the broker refused the sync request: %s", self.door_id, reason_code)

    def _on_message(self, client, userdata, message):
        kind = "passage" if message.topic == self.passages_topic else "update"
        self._inbox.put((kind, message.topic, message.payload))

    # -- the sync thread --

    def _run(self):
        while not self.stop_event.is_set():
            try:
                kind, topic, payload = self._inbox.get(timeout=0.5)
            except queue.Empty:
                self._retry_request()
                continue
            try:
                if kind == "connected":
                    self._request()
                elif kind == "passage":
                    self._handle_passage(topic, payload)
                else:
                    self._handle(topic, payload)
            except (StorageError, pw.PeeweeException) as exc:
                logger.error("door %s: cannot write the enrolment cache: %s; asking central again shortly",
                             self.door_id, exc)
                self._ask_again_soon()
            except Exception:  # the sync thread must outlive one bad update
                logger.exception("door %s: unexpected error handling an enrolment update", self.door_id)
                self._ask_again_soon()

    def _ask_again_soon(self):
        # The update was lost, not rejected: treat it like a gap, so the idle
        # loop asks for a catch-up within GAP_RETRY_SECONDS.
        try:
            self._wanted = max(self._wanted, cache.cache_version() + 1)
        except pw.PeeweeException:
            self._wanted = max(self._wanted, 1)
        if self._requested_at is None:
            self._requested_at = time.monotonic()

    def _request(self):
        """Publish a sync_request with this door's version and a fresh nonce."""
        if self._client is None or not self.connected.is_set():
            return
        nonce = secrets.token_hex(16)
        self._nonces.append(nonce)
        version = cache.cache_version()
        payload = json.dumps({"schema": contract.SCHEMA_VERSION, "door": self.door_id,
                              "version": version, "nonce": nonce})
        info = self._client.publish(self.request_topic, payload, qos=contract.QOS)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            logger.warning("door %s: could not send a sync request: %s", self.door_id, mqtt.error_string(info.rc))
            return
        self._requested_at = time.monotonic()
        logger.info("door %s: asked central for enrolment changes after version %d", self.door_id, version)

    def _retry_request(self):
        if self._requested_at is None or not self.connected.is_set():
            return
        # Known to be behind (a gap was seen): central is up, so ask again sooner.
        behind = self._wanted > cache.cache_version()
        if time.monotonic() - self._requested_at >= (GAP_RETRY_SECONDS if behind else REQUEST_RETRY_SECONDS):
            self._request()

    def _handle(self, topic, payload):
        try:
            applied = self._apply(topic, payload)
        except MessageRejected as exc:
            self.rejected += 1
            logger.warning("door %s rejected an enrolment update on %s: %s", self.door_id, topic, exc)
            if self.on_rejected is not None:
                self.on_rejected(topic, exc)
            return
        if applied:
            self.applied += 1
            self._emit_gallery()
        if self._wanted > cache.cache_version() and self._requested_at is None:
            self._request()

    def _apply(self, topic, payload):
        """Verify and apply one update; return True if the cache changed."""
        if len(payload) > contract.MAX_UPDATE_BYTES:
            raise MessageRejected(f"The update is {len(payload)} bytes, over the {contract.MAX_UPDATE_BYTES} limit.")
        body = signing.verify_bytes(payload, self.public_keys)
        if body.get("schema") != contract.SCHEMA_VERSION:
            raise MessageRejected(f"The update has schema {str(body.get('schema'))[:20]!r}, "
                                  f"not {contract.SCHEMA_VERSION}.")
        kind = body.get("kind")
        if kind == "change":
            return self._apply_change(body)
        if kind in ("batch", "snapshot"):
            return self._apply_answer(kind, body)
        raise MessageRejected(f"The update is of unknown kind {str(kind)[:20]!r}.")

    def _apply_change(self, body):
        target = body.get("target")
        if target != contract.UPDATES_ALL:
            if not isinstance(target, list) or self.door_id not in target:
                raise MessageRejected(f"The change is addressed to {str(target)[:80]}, not to door {self.door_id}.")
        version = _int(body, "version")
        change = decode_change(body.get("op"), body.get("person"))
        current = cache.cache_version()
        if version == current:
            # QoS 1 may deliver the change just applied a second time.
            logger.info("door %s: change %d arrived again; already applied", self.door_id, version)
            return False
        if version < current:
            raise ReplayError(f"The change has version {version}, but door {self.door_id} already holds "
                              f"version {current} (a replay of an old change).")
        if current == 0:
            # An empty cache takes nothing but a snapshot answering its own
            # request: otherwise a recording of old changes 1, 2, ... replayed
            # in order would enrol people revoked since.
            logger.info("door %s: change %d arrived before the first snapshot; asking for one", self.door_id,
                        version)
            self._wanted = max(self._wanted, version)
            if self._requested_at is None or time.monotonic() - self._requested_at >= GAP_RETRY_SECONDS:
                self._request()
            return False
        if version > current + 1:
            logger.info("door %s: change %d arrived while holding %d; asking for the missing ones",
                        self.door_id, version, current)
            self._wanted = max(self._wanted, version)
            # A change from central shows it is up, so an older unanswered
            # request was probably lost while it was away: ask again now.
            if self._requested_at is None or time.monotonic() - self._requested_at >= GAP_RETRY_SECONDS:
                self._request()
            return False
        cache.apply_changes([change], version)
        logger.info("door %s: applied enrolment change %d (%s)", self.door_id, version, change[0])
        return True

    def _apply_answer(self, kind, body):
        if body.get("door") != self.door_id:
            raise MessageRejected(f"The {kind} is for door {str(body.get('door'))[:64]!r}, not {self.door_id}.")
        nonce = body.get("nonce")
        if nonce not in self._nonces:
            raise ReplayError(f"The {kind} does not answer a recent request of door {self.door_id} "
                              "(a replay or a stale answer).")
        current = cache.cache_version()
        if kind == "snapshot":
            version = _int(body, "version")
            persons = body.get("people")
            if not isinstance(persons, list):
                raise MessageRejected("The snapshot has no list of people.")
            decoded = [decode_person(doc) for doc in persons]
        else:
            version = _int(body, "to_version")
            start = _int(body, "from_version")
            entries = body.get("changes")
            if not isinstance(entries, list) or start > current:
                raise MessageRejected(f"The batch starts at version {start}, after the door's {current}.")
            decoded = [decode_change(e.get("op") if isinstance(e, dict) else None,
                                     e.get("person") if isinstance(e, dict) else None) for e in entries]
        self._nonces.remove(nonce)
        self._requested_at = None
        if self._wanted <= version:
            self._wanted = 0
        if version < current:
            raise ReplayError(f"Central answered with version {version}, older than door {self.door_id}'s "
                              f"{current}; was central restored from a backup?")
        if version == current:
            logger.info("door %s: enrolment is up to date at version %d", self.door_id, current)
            return False
        if kind == "snapshot":
            cache.replace_all(decoded, version)
        else:
            cache.apply_changes(decoded, version)
        logger.info("door %s: applied enrolment %s up to version %d (%d people changed)",
                    self.door_id, kind, version, len(decoded))
        return True

    # -- area passages --

    def _handle_passage(self, topic, payload):
        try:
            person_id, direction, at, door_id = self._read_passage(payload)
        except MessageRejected as exc:
            self.passages_rejected += 1
            logger.warning("door %s rejected a passage on %s: %s", self.door_id, topic, exc)
            return
        if door_id == self.door_id:
            # Our own grant, relayed back: already in the policy's state.
            self.passages_ignored += 1
            return
        try:
            changed = self.on_passage(person_id, direction, at)
        except (StorageError, pw.PeeweeException) as exc:
            # Not fatal: the door still enforces what it knows itself.
            logger.error("door %s: cannot record a passage in area %s: %s", self.door_id, self.area, exc)
            return
        if changed:
            self.passages_applied += 1
        else:
            # A duplicate, a late arrival or a replay: the door already knows something newer.
            self.passages_ignored += 1
            logger.info("door %s: ignored a passage from door %s older than what it knows",
                        self.door_id, door_id)

    def _read_passage(self, payload):
        """Verify one passage; return ``(person_id, direction, at, door_id)`` or raise MessageRejected."""
        if len(payload) > contract.MAX_PASSAGE_BYTES:
            raise MessageRejected(f"The passage is {len(payload)} bytes, over the "
                                  f"{contract.MAX_PASSAGE_BYTES} limit.")
        body = signing.verify_bytes(payload, self.public_keys, domain=signing.PASSAGE_DOMAIN)
        person_id, direction, at, door_id = contract.read_passage(body, self.area)
        ahead = (at - dt.datetime.now(dt.timezone.utc)).total_seconds()
        if ahead > MAX_PASSAGE_AHEAD_SECONDS:
            raise MessageRejected(f"The passage is dated {ahead:.0f} s ahead of door {self.door_id}'s clock.")
        return person_id, direction, at, door_id

    def _emit_gallery(self):
        gallery = cache.load_gallery()
        self.on_gallery(gallery)
