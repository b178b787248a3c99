"""Tell systemd how the service is doing (``sd_notify``), without libsystemd.

With ``Type=notify`` systemd waits for :func:`ready` before it calls the
service started, and with ``WatchdogSec=`` it kills and restarts a service
whose :func:`watchdog` pings stop (a hung frame loop, a deadlock).  Outside
systemd (no ``$NOTIFY_SOCKET``) every call does nothing, so the daemon runs
the same from a shell and in tests.

The protocol is one datagram of ``KEY=VALUE`` lines to the ``AF_UNIX`` socket
named in ``$NOTIFY_SOCKET`` (a leading ``@`` means the abstract namespace).
"""

import logging
import os
import socket
import threading
import time

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_socket = None
_last_watchdog = 0.0


def _address():
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return None
    if address.startswith("@"):
        return "\0" + address[1:]
    return address


def notify(*states):
    """Send ``states`` (like ``"READY=1"``, ``"STATUS=..."``) to systemd.

    Returns True if a notify socket was there and the message went out, False
    otherwise (not under systemd, or the socket is gone).  Never raises: a
    notify failure must not stop the door.
    """
    global _socket
    address = _address()
    if address is None or not states:
        return False
    message = "\n".join(states).encode("utf-8")
    with _lock:
        try:
            if _socket is None:
                _socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            _socket.sendto(message, address)
            return True
        except OSError as exc:
            logger.debug("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
            return False


def ready(status_text=None):
    """Say start-up is complete (``READY=1``); systemd then starts units that wait for us."""
    states = ["READY=1"]
    if status_text:
        states.append(f"STATUS={status_text}")
    return notify(*states)


def stopping():
    """Say the service is shutting down (``STOPPING=1``)."""
    return notify("STOPPING=1")


def status(text):
    """Set the one-line status shown by ``systemctl status``."""
    return notify(f"STATUS={text}")


def watchdog_interval():
    """The watchdog timeout in seconds, or None if systemd has no watchdog for this process.

    Read from ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, which must be this
    process if set).  Ping :func:`watchdog` well within it.
    """
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


def watchdog(force=False):
    """Tell systemd the service is alive (``WATCHDOG=1``).

    Cheap enough to call from every pass of the frame loop: pings are sent at
    most every quarter of the watchdog interval (or every second without
    one) unless ``force`` is true.  Returns True if a ping was sent.
    """
    global _last_watchdog
    if _address() is None:
        return False
    interval = watchdog_interval()
    spacing = interval / 4 if interval else 1.0
    now = time.monotonic()
    if not force and now - _last_watchdog < spacing:
        return False
    _last_watchdog = now
    return notify("WATCHDOG=1")
