"""The door daemon: the one place that wires the door unit together.

``DoorApp.start()`` reads top to bottom: hardware (lock engaged first), the
local stores, the face engine, the camera, the MQTT links, then the frame
loop.  Threads are named and share one ``stop`` event; ``stop()`` joins them
in reverse order with timeouts and engages the lock last.  SIGTERM and SIGINT
set the event; an unhandled exception in any thread engages the lock and
stops the daemon so systemd restarts it.

Faults that do not stop the daemon are reported in :meth:`DoorApp.status`
(``lock_fault``, ``storage_fault``) and on the fault indicator; while the lock
cannot be engaged the systemd watchdog is no longer petted, so systemd
restarts the daemon and ``ExecStopPost=bytelocker door lock`` locks the door.
"""

import collections
import datetime as dt
import logging
import os
import signal
import threading
import time

from bytelocker import systemd_notify
from bytelocker.errors import ByteLockerError, StorageError

logger = logging.getLogger(__name__)

JOIN_TIMEOUT = 5.0
STATUS_INTERVAL = 2.0
# Events that could not be written (full disk) wait in memory, at most this
# many; beyond it the oldest are lost and counted.  A door makes a few events
# a minute, so this covers hours of a full disk.
MAX_HELD_EVENTS = 1000
# Face crops of held events, at most this many bytes in all (the rest are
# held without their crop), so a long outage cannot exhaust a Pi's memory.
MAX_HELD_SNAPSHOT_BYTES = 4 * 1024 * 1024
# ``details.reason`` of the door_status event written once held events are stored.
REASON_STORAGE_RECOVERED = "storage_recovered"
# A camera stuck inside one read for this many times its
# read_timeout_seconds (it shows "stalled" after one) is beyond reopening in
# process: stop petting the watchdog so systemd restarts the daemon.
CAMERA_STUCK_FACTOR = 3


class DoorApp:
    """A door unit: camera -> recognition loop -> decision -> lock, with events.

    What the door does:

    - on start: the lock is engaged before anything else opens;
    - on SIGTERM/SIGINT or :meth:`stop`: threads stop, the lock is engaged last;
    - on an unhandled exception in any thread: the lock is engaged and the
      daemon stops with an error (systemd restarts it);
    - on ``kill -9`` or power loss: nothing in this process can act, so
      systemd's ``ExecStopPost=bytelocker door lock`` re-engages the lock, and
      ``hardware.lock.fail_mode`` decides what an unpowered lock does.

    :param config: a validated :class:`config.door.DoorConfig`.
    :param mqtt_password: the broker password (from the environment or a
        systemd credential, never the YAML).
    :param on_event: called with each event dict after it is stored in the
        outbox (the demo prints them); it runs on the thread that emitted.
    """

    def __init__(self, config, *, mqtt_password=None, on_event=None):
        self.config = config
        self.on_event = on_event
        self.door_id = config.door.id
        self.mqtt_password = mqtt_password
        self.stop_event = threading.Event()
        self.failed = None
        self.started_at = time.monotonic()
        self.hardware = None
        self.controller = None
        self.outbox = None
        self.loop = None
        self.grabber = None
        self.publisher = None
        self.sync = None
        self.policy = None
        self._threads = []
        self._camera_state = ("starting", "")
        self._last_decision = None
        self._engine_note = ""
        self._lock = threading.Lock()
        # Full-disk handling (see emit): events not yet written, oldest first.
        self._emit_lock = threading.RLock()
        self._held = collections.deque()
        self._held_snapshot_bytes = 0
        self._held_since = None
        self._held_delayed = 0
        self._held_lost = 0
        self._storage_fault = None
        self._watchdog_withheld = False

    # -- start-up, in order -------------------------------------------------

    def start(self):
        """Open everything in order and start the frame loop."""
        self._install_excepthook()
        self._open_hardware()
        self._open_stores()
        self._open_engine()
        self._open_camera()
        self._open_links()
        self._start_frame_loop()
        self._start_status_writer()
        systemd_notify.ready()
        logger.info("door=%s started", self.door_id)

    def _open_hardware(self):
        from hardware import open_hardware
        from hardware.door import DoorController

        self.hardware = open_hardware(self.config.hardware, door_id=self.door_id)
        self.controller = DoorController(self.hardware, self.config.hardware, emit=self.emit)

    def _open_stores(self):
        from edge import cache
        from edge.outbox import Outbox

        data_dir = self.config.door.data_dir
        os.makedirs(data_dir, exist_ok=True)
        cache.open_cache(os.path.join(data_dir, "cache.db"))
        self.outbox = Outbox.from_config(os.path.join(data_dir, "outbox.db"), self.door_id,
                                         self.config.outbox)

    def _open_engine(self):
        from edge import cache
        from edge.pipeline import build_loop
        from edge.policy import AccessPolicy

        self.loop = build_loop(self.config, cache.load_gallery(),
                               engine_cache_dir=os.path.join(self.config.door.data_dir, "engine"))
        reason = getattr(self.loop.describer.engine, "fallback_reason", None)
        if reason:
            self._engine_note = f"fast engine refused, using dlib: {reason}"
            logger.warning("door=%s %s", self.door_id, self._engine_note)
        self.policy = AccessPolicy.from_config(self.config)

    def _open_camera(self):
        from hardware.camera import FrameGrabber, check_backend

        # A missing camera library stops the daemon; a missing device is retried.
        check_backend(self.config.camera)
        self.grabber = FrameGrabber(self.config.camera, self.stop_event, on_state=self._on_camera_state)
        self.grabber.start()
        self._threads.append(self.grabber)

    def _open_links(self):
        if not self.config.mqtt.enabled:
            return
        from edge.publisher import Publisher

        self.publisher = Publisher(self.outbox, self.config.mqtt, self.door_id, self.stop_event,
                                   status_provider=self.status, password=self.mqtt_password)
        self.publisher.start()
        self._threads.append(self.publisher)
        key = self.config.door.central_public_key
        if key:
            from edge.sync import DoorSync

            # Learn the area's other doors' passes (central's signed relay) for anti-passback.
            share = self.config.policy.share_anti_passback
            self.sync = DoorSync(self.door_id, self.config.mqtt, key, self.stop_event,
                                 on_gallery=self.loop.set_gallery,
                                 on_rejected=self._on_update_rejected,
                                 password=self.mqtt_password,
                                 area=self.config.policy.area if share else None,
                                 on_passage=self.policy.record_remote if share else None)
            self.sync.start()
            self._threads.append(self.sync)
        else:
            logger.warning("door=%s has no door.central_public_key: enrolment updates are ignored",
                           self.door_id)

    def _start_frame_loop(self):
        thread = threading.Thread(target=self._guarded(self._frame_loop), name="frames", daemon=True)
        thread.start()
        self._threads.append(thread)

    def _start_status_writer(self):
        thread = threading.Thread(target=self._guarded(self._status_loop), name="status", daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- running -------------------------------------------------------------

    def _frame_loop(self):
        while not self.stop_event.is_set():
            self._pet_watchdog()
            frame = self.grabber.latest(timeout=0.5)
            if frame is None:
                continue
            for decision in self.loop.process(frame.rgb, frame.t):
                self.on_decision(decision)

    def _pet_watchdog(self):
        """Tell systemd we are alive, unless the door is unsafe in a way only a restart can fix."""
        fault = self.hardware.lock.fault if self.hardware is not None else None
        if fault is None and self.grabber is not None:
            stuck = self.grabber.stalled_for()
            if stuck > CAMERA_STUCK_FACTOR * self.config.camera.read_timeout_seconds:
                fault = f"the camera has been stuck inside one read for {stuck:.0f} s"
        if fault is None:
            if self._watchdog_withheld:
                logger.warning("door=%s healthy again; petting the systemd watchdog again", self.door_id)
                self._watchdog_withheld = False
                self._show_fault()
            systemd_notify.watchdog()
            return
        if not self._watchdog_withheld:
            # systemd then kills and restarts us, and ExecStopPost engages the lock from a fresh process.
            logger.critical("door=%s %s; no longer petting the systemd watchdog so the service is restarted",
                            self.door_id, fault)
            self._watchdog_withheld = True
            self._show_fault()

    def on_decision(self, decision):
        """Turn one recognition decision into the lock, the indicators and an event."""
        details = {
            "track": decision.track_id,
            "distance": None if decision.distance is None else round(float(decision.distance), 4),
            "frames_used": decision.frames_used,
            "decide_ms": round(float(decision.decide_ms), 1),
        }
        with self._lock:
            # No person id: the status is retained on the broker and kept at
            # central, and would keep naming someone after their erasure.
            self._last_decision = {"decision": decision.decision, "at": time.time()}
        if decision.decision == "granted":
            verdict = self.policy.check(decision.person)
            if not verdict.allowed:
                self.controller.deny(verdict.reason)
                self.emit("denied", dict(details, person_id=decision.person, reason=verdict.reason))
            elif not verdict.suppressed:
                self.controller.grant(decision.person)
                self.emit("granted", dict(details, person_id=decision.person, **verdict.details))
        elif decision.decision == "unknown":
            self.controller.unidentified()
            self.emit("unidentified", details, snapshot=decision.face_crop)
        else:
            self.controller.deny("ambiguous")
            self.emit("denied", dict(details, person_id=None, reason="ambiguous",
                                     nearest=decision.nearest))

    def emit(self, event_type, details, snapshot=None):
        """Record an event in the outbox (durably, before any publish); return it, or None if held.

        A full disk loses nothing: an event the outbox cannot write
        (:class:`~bytelocker.errors.StorageError`) is held in memory with its
        time, ``storage_fault`` is set in the status and the fault indicator
        lights; held events are written first, in order, before each new one
        and on every status tick.  Once they are all stored a ``door_status``
        event (``reason: storage_recovered``) says how many were delayed and,
        if more than :data:`MAX_HELD_EVENTS` piled up, how many were lost.
        """
        from edge.outbox import encode_jpeg

        jpeg = None
        if snapshot is not None and snapshot.size:
            jpeg = encode_jpeg(snapshot, self.config.outbox.snapshot_max_bytes)
        item = (event_type, dict(details or {}), jpeg, dt.datetime.now(dt.timezone.utc))
        with self._emit_lock:
            if self._held or self._storage_fault is not None:
                self._write_held()
            if self._held:
                # Behind older held events: writing this one first would break seq order.
                self._hold(item)
                return None
            return self._write(item)

    def _write(self, item, *, held=False):
        """Write one event; on a storage failure hold it and return None (``_emit_lock`` held)."""
        event_type, details, jpeg, at = item
        try:
            event = self.outbox.record(event_type, details, snapshot_jpeg=jpeg, occurred_at=at if held else None)
        except StorageError as exc:
            self._storage_failed(exc)
            if held:
                raise
            self._hold(item)
            return None
        except ByteLockerError:
            logger.exception("door=%s could not record a %s event", self.door_id, event_type)
            return None
        # The seq finds the event (which holds the person, and is erased by forget); journald is not.
        logger.info("door=%s event=%s seq=%s", self.door_id, event_type, event.get("seq"))
        if self.on_event is not None:
            self.on_event(event)
        return event

    def _hold(self, item):
        event_type, details, jpeg, at = item
        if jpeg is not None and self._held_snapshot_bytes + len(jpeg) > MAX_HELD_SNAPSHOT_BYTES:
            from bytelocker import contract

            details["snapshot_dropped"] = contract.SNAPSHOT_DROPPED_OUTBOX_FULL
            jpeg = None
        if len(self._held) >= MAX_HELD_EVENTS:
            _, _, old_jpeg, _ = self._held.popleft()
            self._held_snapshot_bytes -= len(old_jpeg or b"")
            self._held_lost += 1
        self._held.append((event_type, details, jpeg, at))
        self._held_snapshot_bytes += len(jpeg or b"")
        self._held_since = self._held_since or at
        logger.error("door=%s holds %d event(s) in memory until the outbox can be written (%d lost)",
                     self.door_id, len(self._held), self._held_lost)

    def _storage_failed(self, exc):
        if self._storage_fault is None:
            logger.critical("door=%s cannot write events: %s Holding them in memory (at most %d).",
                            self.door_id, exc, MAX_HELD_EVENTS)
        self._storage_fault = str(exc)
        self._show_fault()

    def _write_held(self):
        """Write held events oldest first; True once none are left (``_emit_lock`` held)."""
        while self._held:
            item = self._held[0]
            try:
                self._write(item, held=True)
            except StorageError:
                return False
            self._held.popleft()
            self._held_snapshot_bytes -= len(item[2] or b"")
            self._held_delayed += 1
        if self._storage_fault is None:
            return True
        delayed, lost, since = self._held_delayed, self._held_lost, self._held_since
        report = {"reason": REASON_STORAGE_RECOVERED, "delayed_events": delayed, "lost_events": lost,
                  "since": since.isoformat() if since else None}
        try:
            self.outbox.record("door_status", report)
        except StorageError as exc:
            self._storage_fault = str(exc)
            return False
        except ByteLockerError:
            logger.exception("door=%s could not record the storage recovery", self.door_id)
        logger.warning("door=%s outbox writable again: %d delayed event(s) stored, %d lost",
                       self.door_id, delayed, lost)
        self._storage_fault, self._held_since = None, None
        self._held_delayed = self._held_lost = 0
        self._show_fault()
        return True

    def _retry_held_events(self):
        """Status tick: write held events even when no new event comes to push them."""
        with self._emit_lock:
            if self._held or self._storage_fault is not None:
                self._write_held()

    def _show_fault(self):
        """The fault indicator: on while the camera is not delivering, events cannot be stored or the lock is faulty."""
        if self.controller is None:
            return
        camera_bad = self._camera_state[0] not in ("ok", "starting")
        self.controller.set_fault(camera_bad or self._storage_fault is not None or self._watchdog_withheld)

    def _on_camera_state(self, state, detail=""):
        self._camera_state = (state, detail)
        self._show_fault()
        logger.info("door=%s camera=%s %s", self.door_id, state, detail)

    def _on_update_rejected(self, reason, *args):
        logger.warning("door=%s rejected an enrolment update: %s", self.door_id, reason)

    def status(self):
        """A snapshot of the door's health, for the retained status topic and the status file."""
        loop_stats = self.loop.stats() if self.loop is not None and hasattr(self.loop, "stats") else {}
        from edge import cache

        lock = self.hardware.lock if self.hardware is not None else None
        return {
            "door_id": self.door_id,
            "uptime_seconds": round(time.monotonic() - self.started_at, 1),
            "backend": self.config.hardware.backend,
            "lock": None if lock is None else ("locked" if lock.is_locked else "unlocked"),
            "lock_fault": None if lock is None else lock.fault,
            "storage_fault": self._storage_fault,
            "events_held": len(self._held),
            "camera": self._camera_state[0],
            "camera_detail": self._camera_state[1],
            "broker": "connected" if self.publisher is not None and self.publisher.connected
            else ("disabled" if self.publisher is None else "disconnected"),
            "cache_version": cache.cache_version(),
            "outbox_depth": self.outbox.depth() if self.outbox is not None else 0,
            "engine": self._engine_note or self.config.recognition.engine,
            "last_decision": self._last_decision,
            **loop_stats,
        }

    def _status_loop(self):
        from edge.status import status_path, write_status

        path = status_path(self.config)
        while not self.stop_event.wait(STATUS_INTERVAL):
            self._retry_held_events()
            if self.grabber is not None:
                # The camera thread cannot see its own hang; look from here.
                self.grabber.check_stall()
            try:
                write_status(path, self.status())
            except OSError as exc:
                # A full disk must not stop the door: the status file is for humans.
                logger.warning("door=%s cannot write its status file %s: %s", self.door_id, path, exc)

    # -- stopping --------------------------------------------------------------

    def _guarded(self, target):
        """Wrap a thread body: an unhandled exception engages the lock and stops the daemon."""

        def run():
            try:
                target()
            except BaseException as exc:  # noqa: BLE001 - any escape must lock the door
                self._fail(exc)

        return run

    def _install_excepthook(self):
        previous = threading.excepthook

        def hook(args):
            self._fail(args.exc_value)
            previous(args)

        threading.excepthook = hook

    def _fail(self, exc):
        logger.critical("door=%s thread %s failed: %r; engaging the lock", self.door_id,
                        threading.current_thread().name, exc, exc_info=exc)
        self.failed = exc
        try:
            if self.hardware is not None:
                self.hardware.lock.lock()
        except Exception:  # noqa: BLE001 - whatever happens, the daemon must still stop
            logger.critical("door=%s could not engage the lock after the failure; stopping anyway "
                            "(the lock keeps retrying, and ExecStopPost locks it)", self.door_id, exc_info=True)
        finally:
            self.stop_event.set()

    def request_stop(self, *_):
        """Signal handler: ask every thread to stop."""
        self.stop_event.set()

    def stop(self):
        """Stop threads in reverse start order, then engage the lock last.

        Each step runs even if an earlier one fails, so ``hardware.close()``
        (which engages the lock) always runs; its own failure is raised.
        """
        self.stop_event.set()
        self._step("tell systemd we are stopping", systemd_notify.stopping)
        for thread in reversed(self._threads):
            self._step(f"join thread {getattr(thread, 'name', thread)}", thread.join, JOIN_TIMEOUT)
            if isinstance(thread, threading.Thread) and thread.is_alive():
                logger.warning("door=%s thread %s did not stop in %.0f s", self.door_id,
                               thread.name, JOIN_TIMEOUT)
        if self._held:
            logger.error("door=%s stopping with %d event(s) that could not be stored", self.door_id,
                         len(self._held))
        if self.controller is not None:
            self._step("close the door controller", self.controller.close)
        if self.outbox is not None:
            self._step("close the outbox", self.outbox.close)
        if self.hardware is not None:
            self.hardware.close()
        logger.info("door=%s stopped; lock engaged", self.door_id)

    def _step(self, what, action, *args):
        try:
            action(*args)
        except Exception:  # noqa: BLE001 - one failed step must not skip the lock
            logger.exception("door=%s could not %s while stopping; carrying on", self.door_id, what)

    def run(self):
        """Run until SIGTERM/SIGINT or a failure; return the process exit code."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        try:
            self.start()
            self.stop_event.wait()
        except BaseException as exc:
            self.failed = self.failed or exc
            if not isinstance(exc, ByteLockerError):
                logger.exception("door=%s failed to start", self.door_id)
        finally:
            self.stop()
        if isinstance(self.failed, ByteLockerError):
            raise self.failed
        return 1 if self.failed else 0


def cmd_run(args):
    """``bytelocker door run -c door.yaml``."""
    from config.hardware import require_backend
    from config.loader import load_door_config
    from config.secrets import read_secret

    config = load_door_config(args.config)
    # Before anything opens: a door.yaml without hardware.backend never runs on the simulator.
    require_backend(config.hardware, source=args.config or "the built-in defaults")
    password = read_secret("mqtt-password", "BYTELOCKER_MQTT_PASSWORD") if config.mqtt.username else None
    return DoorApp(config, mqtt_password=password).run()
