"""The central collector: takes every door's messages off the broker and keeps them.

Threads (all named, all stopping on one event):

* ``collector-mqtt`` runs the paho-mqtt 2.x client (MQTT 5, a persistent
  session under ``collector.client_id``, so the broker queues events while
  central is away).  Each message is checked against the contract
  (:mod:`bytelocker.contract`) right there; a bad one is logged, counted and
  acknowledged so it is never redelivered, and it cannot hold up other doors.
* ``collector-writer`` is the one database writer.  It takes good messages
  off an in-memory queue in batches (up to ``collector.batch_max``, waiting
  at most ``collector.batch_wait_ms`` for more) and writes each batch in one
  transaction.  Only then are the batch's messages acknowledged (PUBACK) to
  the broker, so an event central has not stored is redelivered after a
  crash, and a redelivered event is ignored by its ``event_id``.  Then each
  door gets a receipt on ``<prefix>/receipts/<door_id>`` naming its stored
  events; only that lets the door delete them from its outbox.
* ``retention`` purges old snapshots and events (:mod:`central.retention`).

An optional ``alerter`` (:class:`central.alerts.Alerter`, started by
``central run``) is handed each stored batch; it only queues the work, so
describing faces and raising alerts never slow ingest.  Likewise an optional
``passages`` relay (:class:`central.sync.CentralSync`, which holds the
signing key) is handed each stored batch and only queues the grants it signs
and relays to the area's doors (area-wide anti-passback, docs/policy.md).
"""

import collections
import logging
import queue
import threading
import time

import paho.mqtt.client as mqtt

from bytelocker import broker_link, contract, systemd_notify
from bytelocker.errors import MessageRejected, StorageError
from central import retention, store
from central.db import open_database

logger = logging.getLogger(__name__)

LEAVES = ("events", "status", "available")
# The writer goes round its loop every 0.2 s when idle; a batch takes well under a second.
WRITER_STUCK_SECONDS = 120.0
# A door that sends junk is logged this many times, then once per LOG_EVERY.
LOG_FIRST = 10
LOG_EVERY = 1000


class Collector:
    """Stores every door's events, status and availability from the broker.

    ``password`` is the broker password and ``database_password`` the
    PostgreSQL one (both from the environment or systemd credentials; never
    logged).  ``stats`` counts ``received``, ``stored``, ``duplicates`` and
    ``rejected`` messages; ``rejected_by_door`` counts rejects per topic door.
    """

    def __init__(self, config, stop_event, *, password=None, database_password=None, alerter=None,
                 passages=None):
        self.config = config
        self.stop_event = stop_event
        # central.alerts.Alerter (or None): told about each stored batch.
        self.alerter = alerter
        # central.sync.CentralSync (or None without a signing key): relays stored grants as passages.
        self.passages = passages
        self._password = password
        self._database_password = database_password
        self.prefix = config.mqtt.prefix
        self.stats = collections.Counter()
        self.rejected_by_door = collections.Counter()
        self._queue = queue.Queue(maxsize=config.collector.queue_max)
        self._generation = 0
        self._connected = threading.Event()
        self._client = None
        self._threads = []
        self._writer_beat = time.monotonic()

    # ------------------------------------------------------------ lifecycle

    def start(self):
        """Open the database, start the writer, the retention job and the MQTT link."""
        open_database(self.config.database.url, self._database_password)
        self._client = self._make_client()
        self._threads = [
            threading.Thread(target=self._write_loop, name="collector-writer", daemon=True),
            threading.Thread(target=self._retention_loop, name="retention", daemon=True),
            threading.Thread(target=self._mqtt_loop, name="collector-mqtt", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout=10.0):
        """Disconnect, let the writer finish what it holds, and join every thread."""
        self.stop_event.set()
        if self._client is not None:
            self._client.disconnect()
        for thread in reversed(self._threads):
            thread.join(timeout)
        logger.info("Central collector stopped: %s.", dict(self.stats))

    def healthy(self):
        """None while every thread runs and the writer goes round its loop; else why not.

        ``central run`` pets systemd's watchdog only while this is None, so a
        dead or wedged writer (events piling up unacknowledged) gets central
        restarted.  A database that is down is not a wedge: the writer keeps
        retrying, and a restart would not help.
        """
        for thread in self._threads:
            if not thread.is_alive() and not self.stop_event.is_set():
                return f"the {thread.name} thread has stopped"
        since = time.monotonic() - self._writer_beat
        if self._threads and since > WRITER_STUCK_SECONDS:
            return f"the writer has not come round its loop for {since:.0f} s"
        return None

    def wait_connected(self, timeout):
        """True once subscribed to every door's topics (within ``timeout`` seconds)."""
        return self._connected.wait(timeout)

    @property
    def connected(self):
        return self._connected.is_set()

    # ----------------------------------------------------------------- MQTT

    def _make_client(self):
        client = broker_link.make_client(self.config.mqtt, self.config.collector.client_id,
                                         password=self._password, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _mqtt_loop(self):
        # A persistent session: the broker queues events while central is away.
        broker_link.run_forever(self._client, self.config.mqtt, self.stop_event, who="Central",
                                session_expiry_seconds=self.config.collector.session_expiry_hours * 3600)

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.error("Broker %s:%s refused central: %s.", self.config.mqtt.host, self.config.mqtt.port, reason_code)
            return
        self._generation += 1
        client.subscribe([(contract.all_doors_filter(self.prefix, leaf), contract.QOS) for leaf in LEAVES])
        logger.info("Central connected to broker %s:%s (session present: %s).",
                    self.config.mqtt.host, self.config.mqtt.port, flags.session_present)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            logger.error("Broker refused central's subscriptions to door topics: %s.", ", ".join(failed))
            return
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        if not self.stop_event.is_set():
            logger.warning("Central lost broker %s:%s (%s); reconnecting.",
                           self.config.mqtt.host, self.config.mqtt.port, reason_code)

    def _on_message(self, client, userdata, message):
        self.stats["received"] += 1
        topic = message.topic
        door_id = contract.door_id_from_topic(self.prefix, topic)
        leaf = topic.rsplit("/", 1)[-1]
        try:
            if door_id is None or leaf not in LEAVES:
                raise MessageRejected(f"Message on {topic} is not on a door topic central reads.")
            if not self.config.serves(door_id):
                # Not stored and no receipt: a real door keeps its events until it is listed.
                raise MessageRejected(f"Door {door_id!r} is not in central.yaml's doors; "
                                      f"its {leaf} message is not stored.")
            if leaf == "events":
                item = contract.parse_event(topic, door_id, message.payload)
            elif leaf == "status":
                item = contract.parse_status(topic, door_id, message.payload)
            else:
                item = contract.parse_available(topic, door_id, message.payload)
        except MessageRejected as exc:
            self._reject(door_id, exc)
            client.ack(message.mid, message.qos)
            return
        except Exception:  # a bug in parsing must not take central down
            logger.exception("Central failed to read a message on %s; dropped it.", topic)
            self._reject(door_id, None)
            client.ack(message.mid, message.qos)
            return
        entry = (leaf, item, message.mid, message.qos, self._generation, bool(message.retain))
        # Back-pressure: while the writer is behind, stop reading from the
        # broker (which holds the rest) instead of growing without bound.
        while not self.stop_event.is_set():
            try:
                self._queue.put(entry, timeout=0.5)
                return
            except queue.Full:
                continue

    def _reject(self, door_id, exc):
        self.stats["rejected"] += 1
        key = door_id or "?"
        self.rejected_by_door[key] += 1
        n = self.rejected_by_door[key]
        if n <= LOG_FIRST or n % LOG_EVERY == 0:
            logger.warning("%s (%d rejected from door %s so far)", exc or "Unreadable message.", n, key)

    # --------------------------------------------------------------- writer

    def _write_loop(self):
        wait = self.config.collector.batch_wait_ms / 1000.0
        batch_max = self.config.collector.batch_max
        while True:
            self._writer_beat = time.monotonic()
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self.stop_event.is_set():
                    break
                continue
            batch = [first]
            deadline = time.monotonic() + wait
            while len(batch) < batch_max:
                remaining = deadline - time.monotonic()
                try:
                    batch.append(self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                self._write(batch)
            except Exception:  # a bug must not stop the one writer; unacked messages come back on reconnect
                logger.exception("Central failed to write a batch of %d messages; they stay unacknowledged.",
                                 len(batch))
        store.database.close()

    def _write(self, batch):
        events = [item for leaf, item, *_ in batch if leaf == "events"]
        while True:
            try:
                new = store.store_events(events, self.config.storage.snapshot_dir) if events else 0
                for leaf, item, _, _, _, retained in batch:
                    # A retained message is the broker repeating an old one on
                    # subscribe (every central restart): not a sign of life.
                    if leaf == "status":
                        store.store_status(item, retained=retained)
                    elif leaf == "available":
                        store.store_available(item, retained=retained)
                break
            except StorageError as exc:
                # Not acknowledged, so the broker still holds the batch if we stop.
                self._writer_beat = time.monotonic()  # waiting for the database is not being stuck
                logger.error("%s Retrying in 1 s.", exc)
                if self.stop_event.wait(1.0):
                    return
        self.stats["stored"] += new
        self.stats["duplicates"] += len(events) - new
        self._send_receipts(events)
        for _, _, mid, qos, generation, _ in batch:
            # A mid belongs to one connection; acking it on a later one would
            # acknowledge a different message.
            if generation == self._generation:
                self._client.ack(mid, qos)
        if self.alerter is not None:
            # Only queues: describing faces and raising alerts run on the alerter's threads.
            self.alerter.feed(events)
        if self.passages is not None:
            # Only queues: signing and publishing run on the sync's worker thread.
            self.passages.feed_passages(events)

    def _send_receipts(self, events):
        """Tell each door which of its events are stored (duplicates too: the door resent them)."""
        by_door = collections.defaultdict(list)
        for event in events:
            by_door[event.door_id].append(event.event_id)
        for door_id, ids in by_door.items():
            topic = contract.receipts_topic(self.prefix, door_id)
            for payload in contract.receipt_payloads(door_id, ids):
                info = self._client.publish(topic, payload, qos=contract.QOS)
                if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    # Harmless: the door sends the events again and gets a new receipt.
                    logger.warning("Central could not send a receipt on %s: %s.", topic, mqtt.error_string(info.rc))
        self.stats["receipts"] += len(events)

    # ------------------------------------------------------------ retention

    def _retention_loop(self):
        interval = self.config.storage.retention_interval_minutes * 60
        while True:
            try:
                retention.purge(self.config.storage)
            except StorageError as exc:
                logger.error("%s", exc)
            if self.stop_event.wait(interval):
                break
        store.database.close()


def cmd_run(args):
    """``bytelocker central run -c central.yaml``: collect events and sync enrolments until SIGTERM/SIGINT.

    The collector starts first (it opens the database); then the enrolment
    sync (:class:`central.sync.CentralSync`) if central's signing key can be
    loaded.  Without a key, events are still collected and the reason is
    logged as an error: doors get no enrolment updates until it is fixed.
    """
    import signal

    from config.loader import load_central_config

    # Registers the people/enrolment models, so open_database creates their
    # tables next to the events' (central run may be the first to open it).
    import central.registry  # noqa: F401
    from central import alerts  # registers the alerts table (and the stranger clusters')

    config = load_central_config(args.config)
    if not config.doors:
        logger.warning("central.yaml lists no doors: central accepts events and answers enrolment requests "
                       "from any door id on the broker, and relays no area passes. List the doors under "
                       "'doors:' (docs/central.md).")
    password, db_password = _secrets()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    alerter = alerts.Alerter(config, stop, password=password) if config.alerts.enabled else None
    # Made before the collector so that grants stored from the broker's backlog
    # are queued for relay too; it starts once the database is open.
    sync = _make_sync(config, stop, password)
    collector = Collector(config, stop, password=password, database_password=db_password,
                          alerter=alerter, passages=sync).start()
    if alerter is not None:
        alerter.start()
    logger.info("Central collector running: broker %s:%s, database %s.",
                config.mqtt.host, config.mqtt.port, store_url(config))
    if sync is not None and not _start_sync(sync):
        collector.passages = sync = None
    systemd_notify.ready()
    last, logged_at = None, time.monotonic()
    withheld = None
    # Wake often enough for systemd's watchdog (WatchdogSec=60); log stats each minute.
    while not stop.wait(5):
        problem = collector.healthy()
        if problem is None:
            systemd_notify.watchdog()
        elif problem != withheld:
            logger.critical("Central collector: %s; no longer petting the systemd watchdog, so the "
                            "service is restarted.", problem)
        withheld = problem
        if time.monotonic() - logged_at >= 60 and dict(collector.stats) != last:
            last, logged_at = dict(collector.stats), time.monotonic()
            logger.info("Central collector: %s.", last)
    systemd_notify.stopping()
    if sync is not None:
        sync.join(10)
    collector.stop()
    if alerter is not None:
        alerter.stop()
    return 0


def _make_sync(config, stop, password):
    """The enrolment sync and passage relay, or None (logged once) without a signing key."""
    from bytelocker import signing
    from bytelocker.errors import SigningKeyError

    try:
        key = signing.load_signing_key()
    except SigningKeyError as exc:
        logger.error("Enrolment sync is off: %s Doors will not receive enrolment changes.", exc)
        logger.warning("Area passages are not relayed without the signing key: anti-passback works "
                       "per door unit only.")
        return None
    from central.sync import CentralSync

    return CentralSync(config, key, stop, password=password)


def _start_sync(sync):
    """Start ``sync``; False (logged) if it cannot start."""
    try:
        sync.start()
    except Exception:  # events must keep flowing even if enrolment sync cannot start
        logger.exception("Enrolment sync failed to start; central keeps collecting events "
                         "(no enrolment changes, no area passages).")
        return False
    return True


def store_url(config):
    from central.db import redact

    return redact(config.database.url)


def _secrets():
    """The broker and database passwords from the environment or systemd credentials."""
    try:
        from config import secrets
    except ImportError:  # pragma: no cover - the secrets module ships with config
        return None, None
    return (secrets.read_secret(secrets.MQTT_PASSWORD.name, secrets.MQTT_PASSWORD.env_var),
            secrets.read_secret(secrets.DATABASE_PASSWORD.name, secrets.DATABASE_PASSWORD.env_var))
