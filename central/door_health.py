"""Door health for staff: online or offline and for how long, camera, fps, outbox, enrolment version.

Read from what the collector keeps of each door (:class:`central.store.Door`):
the retained ``available`` message (online/offline/stopped and since when)
and the last retained ``status`` (camera state, fps, outbox depth, cache
version).  A door whose ``cache_version`` is below central's enrolment
version (:func:`central.registry.current_version`) is flagged ``behind``: it
may still let in someone revoked, or turn away someone just enrolled.
"""

import datetime as dt
import logging

from central import registry
from central.store import Door, utcnow

logger = logging.getLogger(__name__)

COLUMNS = ("door_id", "state", "for", "last_seen", "camera", "fps", "outbox_depth", "cache_version",
           "central_version", "flags")

# Camera states the door reports (hardware/camera.py); anything else is a problem.
CAMERA_OK = "ok"
DEFAULT_SILENT_AFTER = dt.timedelta(minutes=5)


def door_health(now=None, *, silent_after=DEFAULT_SILENT_AFTER):
    """One dict per door central knows, ordered by door id.

    Keys: ``door_id``; ``state`` (``online``, ``offline``, ``stopped``,
    ``unknown``, or ``silent`` for a door that says online but was not heard
    from for ``silent_after``; doors publish status every 30 s by default);
    ``since`` (naive UTC of the last availability change) and ``for`` (a
    timedelta, now - since); ``last_seen``; ``camera``, ``fps``,
    ``outbox_depth``, ``cache_version`` and ``status_at`` from the door's last
    status (None before any); ``central_version``; ``behind`` (versions
    behind central, 0 when up to date, None when the door sent no version);
    ``flags``, a tuple of ``offline``, ``stopped``, ``silent``,
    ``camera_<state>``, ``behind``, ``lock_fault`` (the lock could not be
    engaged) and ``storage_fault`` (the door holds events it cannot write).
    """
    now = now or utcnow()
    central_version = registry.current_version()
    rows = []
    for door in Door.select().order_by(Door.door_id):
        status = door.status
        state = door.availability
        if state == "online" and door.last_seen is not None and now - door.last_seen > silent_after:
            state = "silent"
        cache_version = status.get("cache_version")
        behind = None if cache_version is None else max(0, central_version - int(cache_version))
        camera = status.get("camera")
        flags = []
        if state in ("offline", "stopped", "silent"):
            flags.append(state)
        if camera is not None and camera != CAMERA_OK:
            flags.append(f"camera_{camera}")
        if behind:
            flags.append("behind")
        # Faults the door reports but survives: someone has to go and look.
        for fault in ("lock_fault", "storage_fault"):
            if status.get(fault):
                flags.append(fault)
        rows.append({
            "door_id": door.door_id, "state": state, "since": door.availability_at,
            "for": now - door.availability_at if door.availability_at else None,
            "last_seen": door.last_seen, "camera": camera, "fps": status.get("fps"),
            "outbox_depth": door.outbox_depth if door.outbox_depth is not None else status.get("outbox_depth"),
            "cache_version": cache_version, "central_version": central_version, "behind": behind,
            "status_at": door.status_at, "flags": tuple(flags),
        })
    return rows


def cmd_doors(args):
    """``bytelocker report doors``: each door's health, one row per door."""
    from central.commands import _open, print_rows

    _open(args)
    rows = [dict(r, flags=",".join(r["flags"])) for r in door_health()]
    print_rows(rows, list(COLUMNS), args.csv)
    return 0
