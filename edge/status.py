"""The door's status file, and ``bytelocker door status``.

The running daemon rewrites ``<door.data_dir>/status.json`` every couple of
seconds with its health: last decision (never who), fps, camera, broker,
outbox depth, cache version, the hardware backend and lock state, and any
lock or storage fault.  ``bytelocker door status`` reads it from another process (an
operator's shell, a monitoring check) without touching the daemon, and says
plainly when the file is missing or too old, which means the daemon is not
running or is hung.

The file is replaced atomically (temp file in the same folder, fsync,
``os.replace``), so a reader never sees half a file.  It holds no face
descriptors, snapshots or secrets: only what ``DoorApp.status()`` reports.
"""

import datetime as dt
import json
import os
import tempfile
import time

from bytelocker.errors import StorageError

STATUS_FILE = "status.json"

STALE_AFTER_SECONDS = 15.0
"""A status older than this means the daemon stopped writing it (the daemon writes every 2 s)."""


def status_path(door_config):
    """Where the daemon of ``door_config`` (a DoorConfig, or its ``door`` section) writes its status."""
    section = getattr(door_config, "door", door_config)
    return os.path.join(section.data_dir, STATUS_FILE)


def write_status(path, mapping):
    """Atomically replace the status file at ``path`` with ``mapping`` as JSON.

    Adds ``updated`` (Unix time) and ``pid``.  Raises
    :class:`~bytelocker.errors.StorageError` if the folder cannot be written.
    """
    path = os.fspath(path)
    record = dict(mapping)
    record["updated"] = time.time()
    record["pid"] = os.getpid()
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, temp = tempfile.mkstemp(prefix=".status-", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise StorageError(f"Cannot write the door status in {folder}: {exc.strerror or exc}.") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh, sort_keys=True, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        # Readable by operators (the status holds nothing secret), like the data folder.
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException as exc:
        try:
            os.unlink(temp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise StorageError(f"Cannot write the door status {path}: {exc.strerror or exc}.") from exc
        raise


def read_status(path):
    """Return the status mapping at ``path``, or None if there is no status file.

    Raises :class:`~bytelocker.errors.StorageError` if the file exists but is
    unreadable or not a status file.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"Cannot read the door status {path}: {exc.strerror or exc}.") from exc
    except ValueError as exc:
        raise StorageError(f"The door status {path} is not valid JSON ({exc}); "
                           "the daemon rewrites it within seconds if it is running.") from exc
    if not isinstance(data, dict) or "updated" not in data:
        raise StorageError(f"{path} is not a ByteLocker status file.")
    return data


def _pid_alive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def assess(status, *, now=None, stale_after=STALE_AFTER_SECONDS):
    """Classify a status mapping: ``(state, age_seconds)``.

    ``state`` is ``"running"``, ``"stale"`` (the daemon stopped updating it:
    hung or killed) or ``"not running"`` (no file, or its process is gone).
    """
    if status is None:
        return "not running", None
    now = time.time() if now is None else now
    age = max(0.0, now - float(status.get("updated", 0)))
    if _pid_alive(status.get("pid")) is False:
        return "not running", age
    return ("running" if age <= stale_after else "stale"), age


def _ago(seconds):
    if seconds is None:
        return "never"
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s ago"
    if seconds < 7200:
        return f"{seconds // 60} min ago"
    return f"{seconds // 3600} h ago"


def format_status(status, state, age, *, door_id, path, now=None):
    """The status as lines for a person at a terminal."""
    now = time.time() if now is None else now
    if status is None:
        return [f"door {door_id}: not running (no status file {path}; the door service writes "
                f"it while it runs: see 'systemctl status bytelocker-door')"]
    updated = dt.datetime.fromtimestamp(float(status["updated"]), dt.timezone.utc)
    head = {
        "running": f"door {door_id}: running",
        "stale": f"door {door_id}: NOT RESPONDING (status last written {_ago(age)}; the daemon "
                 f"is hung or was killed: see 'systemctl status bytelocker-door')",
        "not running": f"door {door_id}: not running (last status written {_ago(age)} by process "
                       f"{status.get('pid')}, which has ended)",
    }[state]
    last = status.get("last_decision") or {}
    if last:
        person = f" ({last.get('person')})" if last.get("person") else ""
        at = last.get("at")
        decision = f"{last.get('decision')}{person} {_ago(now - float(at)) if at else ''}".rstrip()
    else:
        decision = "none yet"
    camera = status.get("camera", "unknown")
    if status.get("camera_detail"):
        camera += f" ({status['camera_detail']})"
    fps = status.get("fps")
    backend = status.get("backend") or "unknown"
    lines = [
        head,
        f"  last decision: {decision}",
        f"  fps:           {fps if fps is not None else 'unknown'}",
        f"  camera:        {camera}",
        f"  lock:          {status.get('lock') or 'unknown'} ({backend} backend"
        f"{': no real pin moves' if backend == 'simulated' else ''})",
        f"  broker:        {status.get('broker', 'unknown')}",
        f"  outbox:        {status.get('outbox_depth', 'unknown')} event(s) waiting to be sent",
        f"  cache version: {status.get('cache_version', 'unknown')}",
        f"  updated:       {updated:%Y-%m-%d %H:%M:%S} UTC ({_ago(age)})",
    ]
    if status.get("lock_fault"):
        lines.append(f"  LOCK FAULT:    {status['lock_fault']}")
    if status.get("storage_fault"):
        lines.append(f"  STORAGE FAULT: {status['storage_fault']} "
                     f"({status.get('events_held', 0)} event(s) held in memory)")
    return lines


def cmd_status(args):
    """``bytelocker door status -c door.yaml [--json]``: 0 if the daemon is running and current, else 1."""
    from config.loader import load_door_config

    config = load_door_config(args.config)
    path = status_path(config)
    status = read_status(path)
    state, age = assess(status)
    if getattr(args, "json", False):
        out = dict(status or {})
        out.update({"state": state, "age_s": None if age is None else round(age, 1),
                    "status_file": path, "door_id": (status or {}).get("door_id", config.door.id)})
        print(json.dumps(out, sort_keys=True, default=str))
    else:
        for line in format_status(status, state, age, door_id=config.door.id, path=path):
            print(line)
    return 0 if state == "running" else 1
