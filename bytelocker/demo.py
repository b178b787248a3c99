"""``bytelocker demo``: the whole system on one machine, with sample faces.

The single-box default: central starts a Mosquitto it manages on a free
loopback port (Debian's ``mosquitto`` package), and everything else runs in
this process on SQLite files in a work folder:

1. a broker, the central collector and central's signed enrolment sync;
2. central enrols Eileen Collins and Grace Hopper from the sample photos that
   scikit-image and matplotlib ship, through the normal quality checks;
3. a door daemon (simulated relay, camera reading a folder of frames)
   receives the signed update, then sees a door scene: the wall, each
   enrolled person walking up, and a stranger;
4. decisions, relay moves and events are printed as they happen, then
   central's own view: stored events, attendance and door health.

Without Mosquitto the demo says so and runs the recognition loop alone.
"""

import datetime as dt
import json
import os
import shutil
import tempfile
import threading
import time

import cv2

from bytelocker.errors import DemoError

SCENE_FPS = 15.0
# Shorter than a real door's 5 s, so each grant shows as its own pulse.
UNLOCK_SECONDS = 1.5
DOOR_ID = "front-door"
# Written into the work folder: only a folder holding it is ever emptied by a later demo.
DEMO_MARKER = ".bytelocker-demo"


def _say(text=""):
    print(text, flush=True)


class DemoSite:
    """A broker, central and one door in a work folder; use as a context manager."""

    def __init__(self, workdir):
        self.workdir = os.path.abspath(workdir)
        self.stop = threading.Event()
        self.broker = None
        self.collector = None
        self.sync = None
        self.door = None
        self.central_config = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop the door (lock engaged last), then central, then the broker."""
        if self.door is not None:
            self.door.stop()
            self.door = None
        self.stop.set()
        if self.sync is not None:
            self.sync.join(5)
        if self.collector is not None:
            self.collector.stop(timeout=5)
        if self.broker is not None:
            self.broker.stop()

    # -- central -------------------------------------------------------------

    def start_central(self):
        """Start the managed broker, the collector and the signed sync; return the public key."""
        import central.alerts  # noqa: F401 - registers tables created by open_database
        import central.registry  # noqa: F401
        from bytelocker import signing
        from central.broker import ManagedMosquitto
        from central.collector import Collector
        from central.sync import CentralSync
        from config.central import CentralConfig

        self.broker = ManagedMosquitto(os.path.join(self.workdir, "broker"))
        self.broker.start()
        _say(f"Broker: mosquitto on {self.broker.host}:{self.broker.port} (managed by the demo).")
        self.central_config = CentralConfig.model_validate({
            "mqtt": {"host": self.broker.host, "port": self.broker.port},
            "database": {"url": f"sqlite:///{os.path.join(self.workdir, 'central.db')}"},
            "storage": {"snapshot_dir": os.path.join(self.workdir, "snapshots")},
            # Central serves only the doors it lists, as a real site's central.yaml does.
            "doors": {DOOR_ID: {"area": "site"}},
        })
        key_path = os.path.join(self.workdir, "keys", "signing-key")
        public_key = signing.init_signing_key(key_path)
        self.collector = Collector(self.central_config, self.stop).start()
        if not self.collector.wait_connected(15):
            raise RuntimeError("the central collector could not reach the demo broker")
        self.sync = CentralSync(self.central_config, signing.load_signing_key(key_path), self.stop)
        self.sync.start()
        # As in `central run`: stored grants are relayed to the area's doors (anti-passback).
        self.collector.passages = self.sync
        _say(f"Central: collector and signed enrolment sync running; database {self.workdir}/central.db.")
        return public_key

    def enrol(self, people):
        """Enrol the sample people at central through the normal photo checks."""
        from central import registry
        from central.enrolment import PhotoChecker, enrol_photos
        from edge.describe import FaceDescriber

        checker = PhotoChecker(self.central_config.enrolment, FaceDescriber())
        for sample in people:
            if sample.person_id is None:
                continue
            result = enrol_photos(sample.person_id, [(sample.label, sample.photo)], checker,
                                  name=sample.label.split(" (")[0], groups=["staff"])
            _say(f"Enrolled {sample.person_id}: {result.added} photo passed the checks "
                 f"(change version {result.version}, signed).")
        return registry.current_version()

    # -- the door ------------------------------------------------------------

    def start_door(self, public_key, scene_dir, on_event):
        """Start a door daemon whose camera reads ``scene_dir`` (created later)."""
        from config.door import DoorConfig
        from edge.app import DoorApp

        door_dir = os.path.join(self.workdir, "door")
        config = DoorConfig.model_validate({
            "door": {"id": DOOR_ID, "name": "Front door (demo)", "data_dir": door_dir,
                     "central_public_key": public_key},
            "camera": {"source": scene_dir, "kind": "folder", "folder_fps": SCENE_FPS,
                       "realtime": True, "retry_initial_seconds": 0.2, "retry_max_seconds": 1},
            "mqtt": {"host": self.broker.host, "port": self.broker.port, "status_interval_seconds": 2},
            "hardware": {"backend": "simulated", "simulated_log": os.path.join(door_dir, "pins.jsonl"),
                         "lock": {"unlock_seconds": UNLOCK_SECONDS}},
        })
        self.door = DoorApp(config, on_event=on_event)
        self.door.start()
        return config


def _write_scene(people, folder):
    """Write the demo's door scene as numbered JPEG frames; return (frames, seconds)."""
    from edge.demo import demo_scene, enrolment_detector

    tmp = folder + ".part"
    os.makedirs(tmp, exist_ok=True)
    count, last_t = 0, 0.0
    for frame, t in demo_scene(people, enrolment_detector(), fps=SCENE_FPS):
        cv2.imwrite(os.path.join(tmp, f"{count:05d}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        count, last_t = count + 1, t
    # Appear all at once, so the camera never plays half a scene.
    os.rename(tmp, folder)
    return count, last_t


class RelayWatcher:
    """Print the simulated relay's moves from its JSON-lines log as they happen."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.unlocks = 0

    def poll(self, started):
        if not os.path.exists(self.path):
            return
        with open(self.path, encoding="utf-8") as fh:
            fh.seek(self.offset)
            for line in fh:
                entry = json.loads(line)
                if entry.get("role") == "lock" and "locked" in entry:
                    state = "LOCKED" if entry["locked"] else "UNLOCKED"
                    self.unlocks += 0 if entry["locked"] else 1
                    _say(f"  [{entry['t'] - started:6.2f} s] relay: lock {state} (GPIO {entry['pin']})")
            self.offset = fh.tell()


def _event_line(started):
    def show(event):
        d = event.get("details", {})
        who = d.get("person_id") or "-"
        extra = ""
        if event["type"] in ("granted", "unidentified", "denied"):
            distance = d.get("distance")
            extra = (f" distance={distance:.3f}" if isinstance(distance, (int, float)) else "") + \
                f" frames={d.get('frames_used')} decided_in={d.get('decide_ms')} ms"
        if d.get("reason"):
            extra += f" reason={d['reason']}"
        _say(f"  [{time.time() - started:6.2f} s] event #{event['seq']} {event['type']}: "
             f"person={who}{extra}")
    return show


def run_site_demo(workdir):
    """Run the single-box demo in ``workdir``; return 0 when both people were let in."""
    from central import reports
    from central.attendance import report as attendance_report
    from central.door_health import door_health
    from edge import cache
    from edge.demo import sample_people, scene_plan

    people = sample_people()
    scene_dir = os.path.join(workdir, "scene")
    started = time.time()
    with DemoSite(workdir) as site:
        public_key = site.start_central()
        version = site.enrol(people)
        site.start_door(public_key, scene_dir, _event_line(started))
        deadline = time.monotonic() + 30
        while cache.cache_version() < version and time.monotonic() < deadline:
            time.sleep(0.1)
        _say(f"Door {DOOR_ID}: verified and applied central's signed update "
             f"(cache version {cache.cache_version()}, {len(site.door.loop.gallery)} people).")
        frames, seconds = _write_scene(people, scene_dir)
        _say(f"Camera: playing a {seconds:.1f} s door scene ({frames} frames at {SCENE_FPS:.0f} fps):")
        for segment in scene_plan(people):
            who = segment.sample.label if segment.sample is not None else "the bare wall"
            _say(f"  {segment.start:4.1f} - {segment.end:4.1f} s  {who}")
        relay = RelayWatcher(os.path.join(workdir, "door", "pins.jsonl"))
        deadline = time.monotonic() + seconds + 60
        while time.monotonic() < deadline:
            relay.poll(started)
            if site.door.grabber.finished and site.door.outbox.depth() == 0:
                break
            time.sleep(0.2)
        time.sleep(UNLOCK_SECONDS + 0.5)  # the last unlock pulse ends
        relay.poll(started)
        stored = reports.events(door=DOOR_ID)
        today = dt.datetime.now(dt.timezone.utc).date()
        attendance = attendance_report(today, today, "UTC")
        health = door_health()
    _say()
    _say(f"Central stored {len(stored)} events from {DOOR_ID}:")
    for row in stored:
        _say(f"  {row['ts']:%H:%M:%S} #{row['seq']:<3} {row['type']:<13} person={row['person_id'] or '-'}"
             + (f" snapshot={row['snapshot_path']}" if row["snapshot_path"] else ""))
    today = dt.datetime.now(dt.timezone.utc).date()
    _say("Attendance today (UTC), as `bytelocker report attendance` shows it:")
    present = set()
    for record in attendance:
        present.add(record.person_id)
        _say(f"  {record.person_id:<16} first in {record.first_in:%H:%M:%S}  doors {', '.join(record.doors)}"
             f"  {' '.join(record.flags)}")
    for row in health:
        _say(f"Door {row['door_id']}: {row['state']}, camera {row['camera']}, outbox {row['outbox_depth']}, "
             f"cache version {row['cache_version']} of {row['central_version']}")
    _say(f"The relay gave {relay.unlocks} unlock pulses; the lock is engaged. Work folder: {workdir}")
    expected = {p.person_id for p in people if p.person_id is not None}
    if present != expected:
        _say(f"Expected {', '.join(sorted(expected))} to be let in, got {', '.join(sorted(present)) or 'no one'}.")
        return 1
    return 0


def cmd_demo(args):
    """``bytelocker demo``: the whole chain on one machine, or the loop alone without Mosquitto."""
    from central.broker import find_mosquitto
    from edge import demo as loop_demo

    if args.loop_only:
        return loop_demo.cmd_demo(args)
    if find_mosquitto() is None:
        _say("Mosquitto is not installed, so the full demo cannot run; install Debian's 'mosquitto' "
             "package. Running the recognition loop alone.")
        return loop_demo.cmd_demo(args)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bytelocker-demo-")
    prepare_workdir(workdir)
    _say(f"ByteLocker demo in {workdir}")
    return run_site_demo(workdir)


def prepare_workdir(workdir):
    """Make ``workdir`` ready for a fresh demo, deleting only what an earlier demo left there.

    A folder someone names may be anything (``--workdir /var/lib/bytelocker``
    is a real site's data), so it must be empty or carry the demo's own
    marker file; anything else is refused with :class:`DemoError`.
    """
    marker = os.path.join(workdir, DEMO_MARKER)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise DemoError(f"--workdir {workdir} is a file, not a folder.")
    if os.path.isdir(workdir) and os.listdir(workdir):
        if not os.path.isfile(marker):
            raise DemoError(f"--workdir {workdir} is not empty and was not made by 'bytelocker demo'; "
                            "give an empty or new folder (the demo deletes its work folder's contents "
                            "when it starts again).")
        for name in os.listdir(workdir):
            path = os.path.join(workdir, name)
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
    os.makedirs(workdir, exist_ok=True)
    with open(marker, "w", encoding="utf-8") as fh:
        fh.write("Made by 'bytelocker demo'; the next demo run in this folder deletes everything here.\n")
