"""Sends the door's outbox to the broker, and keeps its status and availability there.

One named thread, ``publisher``, owns the MQTT connection (paho-mqtt 2.x,
MQTT 5, client id = door id).  It drains the outbox in sequence order, with
up to ``mqtt.max_inflight`` events awaiting their PUBACK.  An event leaves
the outbox only when the broker acknowledges it with success and then (with
``mqtt.receipts``, the default) central's receipt on
``<prefix>/receipts/<door_id>`` names it; events the broker took but central
never confirmed are sent again after every reconnect, and after
:data:`UNCONFIRMED_RESEND_SECONDS` even without one.  A PUBACK that says
"no matching subscribers" (nobody, not even central's session, took the
event) or any failure leaves the event in the outbox and pauses sending with
a growing delay, so an event is never lost while central is away.

Availability is retained on ``<prefix>/doors/<door_id>/available``:
``online`` on every connect, ``offline`` as the last will (the broker sends
it if the door vanishes, even after ``kill -9``), ``stopped`` on a clean stop.
"""

import logging
import threading
import time

import paho.mqtt.client as mqtt

from bytelocker import broker_link, contract
from bytelocker.errors import ByteLockerError, MessageRejected, StorageError

logger = logging.getLogger(__name__)

# MQTT 5 PUBACK reason 0x10: the broker took the message but no subscriber
# matched, so nobody will ever store it.
NO_MATCHING_SUBSCRIBERS = 0x10
CONNACK_TIMEOUT_SECONDS = 10.0
# Sent events central has not confirmed in this long are sent again even if
# the link never dropped (the broker may have discarded them, e.g. a full
# queue for central).  Long, because central may simply be away.
UNCONFIRMED_RESEND_SECONDS = 600.0
STOP_FLUSH_SECONDS = 3.0


class Publisher:
    """The door's MQTT link: events out of ``outbox``, status and availability in.

    ``status_provider`` is called from the publisher thread and returns a dict
    of status fields (``uptime_seconds``, ``fps``, ``camera``,
    ``cache_version``...); the publisher adds ``broker`` and
    ``outbox_depth``.  ``password`` is the broker password (never logged).
    """

    def __init__(self, outbox, mqtt_section, door_id, stop_event, *, status_provider=None, password=None):
        self.outbox = outbox
        self.mqtt = mqtt_section
        self.door_id = door_id
        self.stop_event = stop_event
        self.status_provider = status_provider
        self._password = password
        self._events_topic = contract.events_topic(mqtt_section.prefix, door_id)
        self._status_topic = contract.status_topic(mqtt_section.prefix, door_id)
        self._available_topic = contract.available_topic(mqtt_section.prefix, door_id)
        self._receipts_topic = contract.receipts_topic(mqtt_section.prefix, door_id)
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self._connected = False
        self._refused = None
        self.broker_state = "connecting"
        self.published = 0
        self.acknowledged = 0
        self._acked = []               # event ids delivered for good, deleted after each loop turn
        self._sent = []                # event ids the broker took, awaiting central's receipt
        self._reset_session()

    # ----------------------------------------------------------- public API

    def start(self):
        """Start the ``publisher`` thread; it runs until the stop event is set."""
        self._thread.start()
        return self

    def join(self, timeout=None):
        """Wait for the thread to publish ``stopped`` and disconnect after stop is set."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def connected(self):
        """True while the broker has accepted our connection."""
        return self._connected

    # ------------------------------------------------------------- the loop

    def _reset_session(self):
        self._inflight = {}            # mid -> PendingEvent
        self._sent_after = 0           # highest seq handed to paho this session
        self._paused_until = 0.0
        self._retry_delay = self.mqtt.reconnect_min_seconds
        self._next_status = 0.0
        self._next_resend = time.monotonic() + UNCONFIRMED_RESEND_SECONDS

    def _client(self):
        client = broker_link.make_client(self.mqtt, self.door_id, password=self._password)
        client.will_set(self._available_topic,
                        contract.available_payload(self.door_id, contract.AVAILABLE_OFFLINE, with_time=False),
                        qos=contract.QOS, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _run(self):
        backoff = self.mqtt.reconnect_min_seconds
        client = None
        while not self.stop_event.is_set():
            client = self._client()
            self._reset_session()
            self._refused = None
            try:
                client.connect(self.mqtt.host, self.mqtt.port, self.mqtt.keepalive_seconds,
                               clean_start=True)
            except (OSError, ValueError) as exc:
                self._set_state(f"unreachable: {exc}")
                client = None
            else:
                try:
                    if self._session(client):
                        backoff = self.mqtt.reconnect_min_seconds
                except Exception:  # a dead publisher thread would strand every later event
                    logger.exception("Door %s publisher failed; reconnecting.", self.door_id)
                    self._connected = False
            if self.stop_event.is_set():
                break
            if self.stop_event.wait(backoff):
                break
            backoff = min(backoff * 2, self.mqtt.reconnect_max_seconds)
        if client is not None and self._connected:
            self._stop_cleanly(client)
        self._connected = False
        self.broker_state = "stopped"

    def _session(self, client):
        """Run one connection until it drops or stop is set; True if it was accepted."""
        connack_deadline = time.monotonic() + CONNACK_TIMEOUT_SECONDS
        accepted = False
        while not self.stop_event.is_set():
            rc = client.loop(timeout=0.05)
            if rc != mqtt.MQTT_ERR_SUCCESS or self._refused:
                break
            if not self._connected:
                if accepted or time.monotonic() > connack_deadline:
                    break
                continue
            if not accepted:
                accepted = True
                self._resend_unconfirmed()
            self._flush_acks()
            if time.monotonic() >= self._next_resend:
                self._next_resend = time.monotonic() + UNCONFIRMED_RESEND_SECONDS
                self._resend_unconfirmed(older_than=time.time() - UNCONFIRMED_RESEND_SECONDS)
            try:
                self._drain(client)
                self._maybe_status(client)
            except ByteLockerError as exc:
                logger.error("Door %s publisher: %s", self.door_id, exc)
                self.stop_event.wait(1.0)
        self._flush_acks()
        if not self.stop_event.is_set():
            self._connected = False
            if accepted:
                self._set_state("disconnected")
            try:
                client.disconnect()
            except OSError:
                pass
        return accepted

    def _drain(self, client):
        now = time.monotonic()
        if self._paused_until:
            if now < self._paused_until:
                return
            # Resend from the oldest waiting event; the broker said nobody got some.
            self._paused_until = 0.0
            self._sent_after = 0
        room = self.mqtt.max_inflight - len(self._inflight)
        if room <= 0:
            return
        in_flight = {p.seq for p in self._inflight.values()}
        for item in self.outbox.pending(room, after_seq=self._sent_after):
            if item.seq in in_flight:
                self._sent_after = item.seq
                continue
            info = client.publish(self._events_topic, item.payload, qos=contract.QOS)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                logger.warning("Door %s could not send event seq %d on %s: %s; will retry.",
                               self.door_id, item.seq, self._events_topic, mqtt.error_string(info.rc))
                return
            self._sent_after = item.seq
            self._inflight[info.mid] = item
            self.published += 1

    def _resend_unconfirmed(self, older_than=None):
        # The broker may have lost what it acknowledged but never delivered
        # (a crash); central drops the duplicates.
        if not self.mqtt.receipts:
            return
        try:
            again = self.outbox.unsend_all(older_than)
        except StorageError as exc:
            logger.error("%s", exc)
            return
        if again:
            # Drain reads only seqs after _sent_after; start again from the oldest so the
            # rows just marked unsent go out on this connection, not only after a reconnect.
            self._sent_after = 0
            logger.info("Door %s sends %d unconfirmed events again.", self.door_id, again)

    def _flush_acks(self):
        try:
            if self._sent:
                self.outbox.mark_sent(self._sent)
                self._sent = []
            if self._acked:
                self.acknowledged += self.outbox.acknowledge_many(self._acked)
                self._acked = []
        except StorageError as exc:
            # Kept for the next turn; at worst an event is sent twice.
            logger.error("%s Will retry.", exc)

    def _maybe_status(self, client, force=False):
        now = time.monotonic()
        if not force and now < self._next_status:
            return
        self._next_status = now + self.mqtt.status_interval_seconds
        client.publish(self._status_topic, self._status_payload(), qos=contract.QOS, retain=True)

    def _status_payload(self):
        fields = {}
        if self.status_provider is not None:
            try:
                fields = dict(self.status_provider() or {})
            except Exception:  # the door's status must not stop its events
                logger.exception("Door %s status provider failed; sending a bare status.", self.door_id)
        fields.pop("door_id", None)
        fields.pop("ts", None)
        fields.pop("schema", None)
        fields["broker"] = self.broker_state
        fields["outbox_depth"] = self.outbox.depth()
        try:
            return contract.status_payload(self.door_id, **fields)
        except (ValueError, TypeError) as exc:
            logger.warning("Door %s status is out of contract (%s); sending a bare status.", self.door_id, exc)
            return contract.status_payload(self.door_id, broker=self.broker_state,
                                           outbox_depth=fields["outbox_depth"])

    def _stop_cleanly(self, client):
        self._flush_acks()
        info = client.publish(self._available_topic,
                              contract.available_payload(self.door_id, contract.AVAILABLE_STOPPED),
                              qos=contract.QOS, retain=True)
        deadline = time.monotonic() + STOP_FLUSH_SECONDS
        while not info.is_published() and time.monotonic() < deadline:
            if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                break
        self._flush_acks()
        client.disconnect()
        client.loop(timeout=0.05)
        logger.info("Door %s stopped publishing; %d events still in its outbox.", self.door_id, self.outbox.depth())

    def _set_state(self, state):
        if state != self.broker_state:
            log = logger.info if state == "connected" else logger.warning
            log("Door %s broker %s:%s is %s.", self.door_id, self.mqtt.host, self.mqtt.port, state)
        self.broker_state = state

    # ------------------------------------------------------------ callbacks

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._set_state(f"refused: {reason_code}")
            return
        self._connected = True
        self._set_state("connected")
        client.publish(self._available_topic,
                       contract.available_payload(self.door_id, contract.AVAILABLE_ONLINE),
                       qos=contract.QOS, retain=True)
        if self.mqtt.receipts:
            client.subscribe(self._receipts_topic, qos=contract.QOS)
        self._next_status = 0.0

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected = False

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        item = self._inflight.pop(mid, None)
        code = getattr(reason_code, "value", 0)
        if item is None:
            if code >= 0x80:
                logger.warning("Door %s: the broker refused a status message: %s.", self.door_id, reason_code)
            return
        if code == NO_MATCHING_SUBSCRIBERS or code >= 0x80:
            if not self._paused_until:
                logger.warning("Door %s event seq %d was not taken by central (%s); keeping it and retrying in %.1f s.",
                               self.door_id, item.seq, reason_code, self._retry_delay)
                self._paused_until = time.monotonic() + self._retry_delay
                self._retry_delay = min(self._retry_delay * 2, self.mqtt.reconnect_max_seconds)
            return
        self._retry_delay = self.mqtt.reconnect_min_seconds
        (self._sent if self.mqtt.receipts else self._acked).append(item.event_id)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            logger.error("Door %s may not read its receipts on %s (%s): events stay in the outbox; "
                         "check the broker ACL.", self.door_id, self._receipts_topic, ", ".join(failed))

    def _on_message(self, client, userdata, message):
        if message.topic != self._receipts_topic:
            return
        try:
            receipt = contract.parse_receipt(message.topic, self.door_id, message.payload)
        except MessageRejected as exc:
            logger.warning("Door %s ignored a receipt: %s", self.door_id, exc)
            return
        self._acked.extend(str(e) for e in receipt.event_ids)
