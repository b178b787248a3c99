"""``bytelocker door lock``: engage the lock now, for systemd's ExecStopPost.

The subcommand itself is declared in :mod:`edge.commands` with the other
``door`` actions; this module owns what it does.
"""

import logging
import sys

logger = logging.getLogger(__name__)


def register(subparsers):
    """This package's commands are declared in :mod:`edge.commands` (``door lock``)."""


def cmd_lock(args):
    """Drive the configured lock line to its locked level, leave it there, and exit 0.

    Runs after the daemon has gone (systemd ``ExecStopPost=``), including
    after ``kill -9`` left the line driven unlocked.  A backend that cannot
    load is an error (exit 1) with what to install or fix; it never falls
    back to the simulator.
    """
    from config.hardware import require_backend
    from config.loader import load_door_config
    from hardware import engage_lock

    config = load_door_config(args.config)
    require_backend(config.hardware, source=args.config or "the built-in defaults")
    section, door_id = config.hardware, config.door.id
    level = engage_lock(section, door_id=door_id)
    lock = section.lock
    print(f"door {door_id}: lock engaged on GPIO {lock.pin} ({section.backend} backend, "
          f"line {'high' if level else 'low'}, fail-{lock.fail_mode}, "
          f"relay {'on' if lock.fail_mode == 'safe' else 'off'})")
    if section.backend == "jetson":
        # JetPack 6 returns a released line to its default when this process exits.
        logger.warning("door=%s on a Jetson the lock line returns to its default level when this command "
                       "exits; only wiring that makes that level 'locked' keeps the door locked", door_id)
    recorded = _door_that_ran_here(config)
    if recorded is not None and recorded != door_id:
        # Engaged anyway (never refuse to lock), but this box ran another door:
        # the lock it drives may be on another pin. Say so and fail.
        print(f"bytelocker: warning: this box last ran door {recorded!r} (its status file in "
              f"{config.door.data_dir}), but this config is for door {door_id!r}: GPIO {lock.pin} may not be "
              f"{recorded!r}'s lock. Use that door's door.yaml.", file=sys.stderr)
        return 1
    return 0


def _door_that_ran_here(config):
    """The door id in this box's status file, or None (none, or unreadable: never a reason not to lock)."""
    from bytelocker.errors import StorageError
    from edge.status import read_status, status_path

    try:
        status = read_status(status_path(config))
    except StorageError:
        return None
    return (status or {}).get("door_id")
