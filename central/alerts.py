"""Central's alerts for building automation: unknown visitors, doors offline, doors forced.

:class:`Alerter` watches what the collector stores and publishes an alert on
``<prefix>/central/alerts`` (QoS 1, not retained; :func:`bytelocker.contract.alerts_topic`):

* ``stranger_at_doors``: one unknown visitor (a :mod:`central.clusters`
  cluster) seen at ``alerts.stranger_min_doors`` doors within
  ``alerts.stranger_window_minutes``;
* ``stranger_repeated``: one unknown visitor seen ``alerts.stranger_repeat_count``
  times within that window;
* ``door_offline``: a door ``offline`` for ``alerts.door_offline_minutes``, and
  ``door_offline_cleared`` when that door is online again;
* ``door_forced``: a ``door_forced`` event.

Each alert is raised once per condition, not per message: every alert row
has a unique key naming its condition (the forced event's id, the offline
episode's start, the sighting that tipped a visitor over a threshold), and a
quiet period per door or visitor (``forced_repeat_seconds``,
``stranger_realert_hours``).  Alerts are stored (table ``alerts``) before
they are published and marked published on the broker's PUBACK, so an alert
raised while the broker is away goes out when it is back, and a restart of
central raises nothing twice.  A subscriber may still see one twice (QoS 1):
drop duplicates by ``alert_id``.

Threads (named, all stopping on the collector's stop event):

* ``alerts-faces`` describes each unidentified snapshot and assigns it to a
  stranger cluster.  That costs tens of milliseconds per face, so it is kept
  off the ingest path: the collector's writer only drops the crop into a
  bounded queue (:meth:`Alerter.feed` never blocks; a full queue skips the
  face for clustering and counts it).  The default ``fast`` engine runs on
  onnxruntime, which releases the GIL, and the worker rests after each face
  as long as the face took, so ingest keeps its pace.
* ``alerts-watch`` raises forced-open alerts, looks for offline doors every
  ``check_interval_seconds`` and publishes what is not yet published.
* ``alerts-mqtt`` runs the MQTT client (client id ``<collector.client_id>-alerts``).
"""

import collections
import datetime as dt
import json
import logging
import queue
import threading
import time
import types
import uuid

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import peewee as pw

from bytelocker import broker_link, contract
from bytelocker.errors import ByteLockerError, StorageError
from central import store
from central.clusters import Sighting, StrangerCluster, StrangerClusters
from central.db import BaseModel, register
from central.registry import write_transaction

logger = logging.getLogger(__name__)

# Snapshot crops are shrunk to this longest side before face detection: a
# door crop is one face, and HOG on a large crop holds the GIL for longer.
MAX_CROP_SIDE = 320
# After each face the worker rests this many times as long as the face took:
# half the time idle caps its share of the GIL, so a burst of strangers does
# not slow ingest (measured in docs/attendance.md).
FACE_REST = 1.0
# An alert sent but not acknowledged by the broker is sent again after this.
RESEND_SECONDS = 30.0
PUBLISH_BATCH = 100
_NUDGE = object()


@register
class Alert(BaseModel):
    """One raised alert.  ``key`` names its condition, so it is raised only once."""

    alert_id = pw.CharField(max_length=36, unique=True)
    key = pw.CharField(max_length=255, unique=True)
    type = pw.CharField(max_length=32)
    # "door:<door_id>" or "visitor:<cluster id>": what the quiet periods are per.
    subject = pw.CharField(max_length=128)
    at = pw.DateTimeField()
    raised_at = pw.DateTimeField()
    message = pw.TextField(default="")
    details_json = pw.TextField(default="{}")
    published_at = pw.DateTimeField(null=True, index=True)

    class Meta:
        table_name = "alerts"
        indexes = ((("type", "subject", "at"), False),)

    @property
    def details(self):
        return json.loads(self.details_json)

    def payload(self):
        """The alert's MQTT payload, compact UTF-8 JSON (docs/attendance.md)."""
        return json.dumps({
            "schema": contract.SCHEMA_VERSION, "alert_id": self.alert_id, "type": self.type,
            "ts": contract.format_timestamp(self.at), "raised_at": contract.format_timestamp(self.raised_at),
            "message": self.message, "details": self.details,
        }, separators=(",", ":")).encode("utf-8")


def raise_alert(alert_type, key, subject, at, message, details, *, quiet=None):
    """Store a new alert unless its condition was raised already; return it, or None.

    ``key`` identifies the condition (raising it again is a no-op); ``quiet``
    (a timedelta) also suppresses it when an alert of the same type and
    subject has ``at`` within that distance.  ``at`` is naive UTC.
    """
    try:
        # Reads, then writes: on SQLite take the write lock first (see write_transaction).
        with write_transaction():
            if quiet is not None and quiet > dt.timedelta(0):
                near = (Alert.select(Alert.id)
                        .where((Alert.type == alert_type) & (Alert.subject == subject)
                               & (Alert.at > at - quiet) & (Alert.at < at + quiet)).exists())
                if near:
                    return None
            alert_id = str(uuid.uuid4())
            (Alert.insert(alert_id=alert_id, key=key[:255], type=alert_type, subject=subject, at=at,
                          raised_at=store.utcnow(), message=message,
                          details_json=json.dumps(details, separators=(",", ":"), default=_json_time))
             .on_conflict_ignore().execute())
    except pw.PeeweeException as exc:
        raise StorageError(f"Central could not store a {alert_type} alert for {subject}: {exc}.") from exc
    # Looked up by the new id: SQLite's INSERT OR IGNORE reports no conflict.
    alert = Alert.get_or_none(Alert.alert_id == alert_id)
    if alert is not None:
        logger.warning("alert %s: %s", alert_type, message)
    return alert


def _json_time(value):
    # Times in details are written like every other time on the wire.
    if isinstance(value, dt.datetime):
        return contract.format_timestamp(value)
    return str(value)


def _parse_time(text):
    return store.naive_utc(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))


def recent_alerts(since, limit=200):
    """Alerts raised since ``since`` (naive UTC), newest first (for reports and the dashboard)."""
    return list(Alert.select().where(Alert.at >= since).order_by(Alert.at.desc(), Alert.id.desc()).limit(limit))


def _utc_text(when):
    return f"{when:%Y-%m-%d %H:%M} UTC"


class Alerter:
    """Raises and publishes central's alerts; see the module docstring.

    :param config: the :class:`config.central.CentralConfig` (``alerts``,
        ``mqtt``, ``collector.client_id``, ``storage.snapshot_dir``).
    :param stop_event: the collector's stop event.
    :param password: the broker password (never logged).
    :param clusters: a :class:`central.clusters.StrangerClusters` to use;
        by default one is built on the ``alerts-faces`` thread with
        ``alerts.stranger_engine`` when the first face arrives.

    ``stats`` counts ``faces``, ``faces_skipped`` (queue full),
    ``faceless``, ``raised``, ``published``, ``refused`` (by the broker) and door ``checks``.
    """

    def __init__(self, config, stop_event, *, password=None, clusters=None):
        self.config = config
        self.settings = config.alerts
        self.stop_event = stop_event
        self.topic = contract.alerts_topic(config.mqtt.prefix)
        self.stats = collections.Counter()
        self._password = password
        self._clusters = clusters
        self._faces_off = False
        self._faces = queue.Queue(maxsize=self.settings.stranger_queue_max)
        self._inbox = queue.Queue()
        self._lock = threading.Lock()
        self._sent = {}      # mid -> (alert_id, monotonic time sent)
        self._early = {}     # mid -> reason code, when the PUBACK beat our bookkeeping
        self._acked = []     # (alert_id, reason code) for the watch thread to record
        self._inflight = {}  # alert_id -> monotonic time sent
        self._connected = threading.Event()
        self._client = None
        self._threads = []

    # ------------------------------------------------------------ lifecycle

    def start(self):
        """Start the MQTT link and the worker threads (the database must be open)."""
        self._client = self._make_client()
        self._threads = [
            threading.Thread(target=self._faces_loop, name="alerts-faces", daemon=True),
            threading.Thread(target=self._watch_loop, name="alerts-watch", daemon=True),
            threading.Thread(target=self._mqtt_loop, name="alerts-mqtt", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout=10.0):
        """Set the stop event, disconnect and join the threads."""
        self.stop_event.set()
        if self._client is not None:
            self._client.disconnect()
        for thread in reversed(self._threads):
            thread.join(timeout)

    def wait_connected(self, timeout):
        """True once connected to the broker (within ``timeout`` seconds)."""
        return self._connected.wait(timeout)

    def feed(self, events):
        """Hand stored events over (called by the collector's writer; never blocks).

        Unidentified events with a face crop go to the clustering queue;
        ``door_forced`` events to the watch thread.  Others are ignored.
        """
        snapshot_dir = self.config.storage.snapshot_dir
        for event in events:
            if event.type == "unidentified" and event.snapshot and not self._faces_off:
                ts = store.naive_utc(event.ts)
                event_id = str(event.event_id)
                path = store.snapshot_path(snapshot_dir, event.door_id, event_id, ts)
                try:
                    self._faces.put_nowait((event_id, event.door_id, ts, event.snapshot_jpeg, path))
                    self.stats["faces"] += 1
                except queue.Full:
                    self.stats["faces_skipped"] += 1
                    if self.stats["faces_skipped"] in (1, 10, 100) or self.stats["faces_skipped"] % 1000 == 0:
                        logger.warning("Unknown-face queue is full; %d faces skipped for clustering so far.",
                                       self.stats["faces_skipped"])
            elif event.type == "door_forced":
                self._inbox.put(event)

    # ---------------------------------------------------------- strangers

    def _stranger_clusters(self):
        if self._clusters is None:
            from edge.describe import FaceDescriber
            from edge.detect import FaceDetector
            from edge.fast_engine import make_engine

            engine = make_engine(types.SimpleNamespace(engine=self.settings.stranger_engine, models_dir=None))
            self._clusters = StrangerClusters(
                threshold=self.settings.stranger_threshold, describer=FaceDescriber(engine=engine),
                detector=FaceDetector(model="hog", scale=1.0, upsample=1, min_face_px=20))
        return self._clusters

    def _faces_loop(self):
        while not self.stop_event.is_set():
            try:
                item = self._faces.get(timeout=0.5)
            except queue.Empty:
                continue
            if self._faces_off:
                continue
            began = None
            try:
                self._stranger_clusters()  # loading the engine once is not a face's cost
                began = time.monotonic()
                self.cluster_face(*item)
            except ByteLockerError as exc:
                if not isinstance(exc, StorageError):
                    # Missing model files: no clustering until fixed; events are still stored.
                    self._faces_off = True
                    logger.error("Unknown-visitor alerts are off: %s", exc)
                else:
                    logger.error("%s", exc)
            except Exception:  # one bad crop must not end clustering
                logger.exception("Central could not cluster the face of event %s.", item[0])
            if began is not None and self.stop_event.wait((time.monotonic() - began) * FACE_REST):
                break
        store.database.close()

    def cluster_face(self, event_id, door_id, ts, jpeg, snapshot_path=None):
        """Describe one unidentified crop, assign it to a visitor and raise stranger alerts.

        Returns the :class:`StrangerCluster`, or None when the crop has no
        face or this event was clustered before (a redelivery).
        """
        if Sighting.get_or_none(Sighting.event_id == event_id) is not None:
            return None
        bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if bgr is None:
            self.stats["faceless"] += 1
            return None
        side = max(bgr.shape[:2])
        if side > MAX_CROP_SIDE:
            f = MAX_CROP_SIDE / side
            bgr = cv2.resize(bgr, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        clusters = self._stranger_clusters()
        descriptor = clusters.describe_snapshot(rgb)
        if descriptor is None:
            self.stats["faceless"] += 1
            return None
        cluster = clusters.assign(descriptor, event_id=event_id, door_id=door_id, seen_at=ts,
                                  snapshot_path=snapshot_path)
        self._check_stranger(cluster.id, ts, event_id)
        return cluster

    def _check_stranger(self, cluster_id, ts, event_id):
        s = self.settings
        window = dt.timedelta(minutes=s.stranger_window_minutes)
        quiet = dt.timedelta(hours=s.stranger_realert_hours)
        seen = list(Sighting.select(Sighting.door_id, Sighting.seen_at)
                    .where((Sighting.cluster == cluster_id) & (Sighting.seen_at > ts - window)
                           & (Sighting.seen_at <= ts)).tuples())
        doors = sorted({d for d, _ in seen})
        cluster = StrangerCluster.get_by_id(cluster_id)
        details = {"visitor": cluster_id, "label": cluster.label, "doors": doors, "sightings": len(seen),
                   "window_minutes": s.stranger_window_minutes, "first_seen": min(t for _, t in seen),
                   "last_seen": ts, "event_id": event_id}
        subject = f"visitor:{cluster_id}"
        raised = False
        if len(doors) >= s.stranger_min_doors:
            raised |= raise_alert(
                contract.ALERT_STRANGER_AT_DOORS, f"{contract.ALERT_STRANGER_AT_DOORS}:{event_id}", subject, ts,
                f"Unknown visitor #{cluster_id} was seen at {len(doors)} doors ({', '.join(doors)}) "
                f"within {s.stranger_window_minutes:g} minutes.", details, quiet=quiet) is not None
        if len(seen) >= s.stranger_repeat_count:
            raised |= raise_alert(
                contract.ALERT_STRANGER_REPEATED, f"{contract.ALERT_STRANGER_REPEATED}:{event_id}", subject, ts,
                f"Unknown visitor #{cluster_id} was seen {len(seen)} times within "
                f"{s.stranger_window_minutes:g} minutes.", details, quiet=quiet) is not None
        if raised:
            self.stats["raised"] += 1
            self._inbox.put(_NUDGE)

    # ------------------------------------------------------------- doors

    def door_forced(self, event):
        """Raise the forced-open alert of a stored ``door_forced`` event (once per event and quiet period)."""
        at = store.naive_utc(event.ts)
        door_id = event.door_id
        alert = raise_alert(
            contract.ALERT_DOOR_FORCED, f"{contract.ALERT_DOOR_FORCED}:{event.event_id}", f"door:{door_id}", at,
            f"Door {door_id} was forced open at {_utc_text(at)}.",
            {"door_id": door_id, "event_id": str(event.event_id), "seq": event.seq},
            quiet=dt.timedelta(seconds=self.settings.forced_repeat_seconds))
        if alert is not None:
            self.stats["raised"] += 1
        return alert

    def check_doors(self, now=None):
        """Raise ``door_offline`` for doors offline too long and ``door_offline_cleared`` when one is back.

        Returns the alerts raised.
        """
        now = now or store.utcnow()
        s = self.settings
        limit = dt.timedelta(minutes=s.door_offline_minutes)
        offline_states = ("offline", "stopped") if s.stopped_is_offline else ("offline",)
        raised = []
        for door in store.Door.select().order_by(store.Door.door_id):
            since = door.availability_at
            subject = f"door:{door.door_id}"
            if door.availability in offline_states and since is not None and now - since >= limit:
                minutes = int((now - since).total_seconds() // 60)
                raised.append(raise_alert(
                    contract.ALERT_DOOR_OFFLINE, f"{contract.ALERT_DOOR_OFFLINE}:{door.door_id}:{since.isoformat()}",
                    subject, since + limit,
                    f"Door {door.door_id} has been {door.availability} since {_utc_text(since)} "
                    f"({minutes} minutes).",
                    {"door_id": door.door_id, "state": door.availability, "since": since,
                     "threshold_minutes": s.door_offline_minutes}))
            elif door.availability == "online" and since is not None:
                last = (Alert.select().where((Alert.type == contract.ALERT_DOOR_OFFLINE) & (Alert.subject == subject))
                        .order_by(Alert.at.desc()).first())
                if last is None:
                    continue
                offline_since = _parse_time(last.details["since"])
                if since <= offline_since:
                    continue
                minutes = int((since - offline_since).total_seconds() // 60)
                raised.append(raise_alert(
                    contract.ALERT_DOOR_OFFLINE_CLEARED,
                    f"{contract.ALERT_DOOR_OFFLINE_CLEARED}:{door.door_id}:{offline_since.isoformat()}",
                    subject, since, f"Door {door.door_id} is online again after {minutes} minutes.",
                    {"door_id": door.door_id, "offline_since": offline_since, "online_since": since}))
        raised = [a for a in raised if a is not None]
        self.stats["raised"] += len(raised)
        self.stats["checks"] += 1
        return raised

    # ------------------------------------------------------------- watch

    def _watch_loop(self):
        next_check = time.monotonic()
        while not self.stop_event.is_set():
            try:
                item = self._inbox.get(timeout=0.5)
            except queue.Empty:
                item = None
            try:
                if item is not None and item is not _NUDGE:
                    self.door_forced(item)
                if time.monotonic() >= next_check:
                    self.check_doors()
                    next_check = time.monotonic() + self.settings.check_interval_seconds
                self._record_acks()
                self._publish_pending()
            except StorageError as exc:
                logger.error("%s", exc)
            except Exception:  # alerts must not stop on one bug; the collector keeps storing regardless
                logger.exception("Central's alert watch failed once; carrying on.")
        store.database.close()

    # -------------------------------------------------------------- MQTT

    def _make_client(self):
        client = broker_link.make_client(self.config.mqtt, f"{self.config.collector.client_id}-alerts",
                                         password=self._password)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _mqtt_loop(self):
        broker_link.run_forever(self._client, self.config.mqtt, self.stop_event, who="Central's alerts")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.error("Broker %s:%s refused central's alerts client: %s.",
                         self.config.mqtt.host, self.config.mqtt.port, reason_code)
            return
        with self._lock:
            # A new session: what was in flight is sent again by _publish_pending.
            self._sent.clear()
            self._inflight.clear()
        self._connected.set()
        self._inbox.put(_NUDGE)

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self._connected.clear()
        if not self.stop_event.is_set():
            logger.warning("Central's alerts lost broker %s:%s (%s); reconnecting.",
                           self.config.mqtt.host, self.config.mqtt.port, reason_code)

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self._lock:
            entry = self._sent.pop(mid, None)
            if entry is None:
                self._early[mid] = reason_code
                return
            self._acked.append((entry[0], reason_code))
        self._inbox.put(_NUDGE)

    def _record_acks(self):
        with self._lock:
            acked, self._acked = self._acked, []
            for alert_id, reason_code in acked:
                if not reason_code.is_failure:
                    self._inflight.pop(alert_id, None)
        for alert_id, reason_code in acked:
            if reason_code.is_failure:
                # Left unpublished and in flight: sent again after RESEND_SECONDS, not at once.
                logger.warning("Broker refused alert %s on %s: %s.", alert_id, self.topic, reason_code)
                self.stats["refused"] += 1
                continue
            Alert.update(published_at=store.utcnow()).where(Alert.alert_id == alert_id).execute()
            self.stats["published"] += 1

    def _publish_pending(self):
        if not self._connected.is_set():
            return
        now = time.monotonic()
        with self._lock:
            inflight = {a for a, sent in self._inflight.items() if now - sent < RESEND_SECONDS}
        pending = (Alert.select().where(Alert.published_at.is_null())
                   .order_by(Alert.at, Alert.id).limit(PUBLISH_BATCH))
        for alert in pending:
            if alert.alert_id in inflight:
                continue
            info = self._client.publish(self.topic, alert.payload(), qos=contract.QOS, retain=False)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                logger.warning("Central could not publish alert %s: %s.", alert.alert_id, mqtt.error_string(info.rc))
                return
            with self._lock:
                self._inflight[alert.alert_id] = now
                early = self._early.pop(info.mid, None)
                if early is None:
                    self._sent[info.mid] = (alert.alert_id, now)
                else:
                    self._acked.append((alert.alert_id, early))
