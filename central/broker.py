"""A Mosquitto broker that ByteLocker starts and stops itself (single-box setups).

``bytelocker demo`` and a one-machine install use this instead of asking
staff to set up a broker: :class:`ManagedMosquitto` writes a config into its
own folder, listens on loopback only (anonymous users are then harmless:
only processes on this machine can connect), keeps its queue on disk so a
restart does not lose central's queued events, and is stopped with the app.
A real site runs a system Mosquitto with ``config/mosquitto.example.conf``
(TLS, per-door users, ACL) instead.
"""

import logging
import os
import shutil
import socket
import subprocess
import threading

from bytelocker.errors import BrokerError

logger = logging.getLogger(__name__)

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto():
    """The ``mosquitto`` binary, or None if it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port(host="127.0.0.1"):
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _listening(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class ManagedMosquitto:
    """One mosquitto process on ``127.0.0.1:port`` with its config and data in ``folder``.

    ``port`` defaults to a free one (never the system broker's 1883).  Use as
    a context manager, or call :meth:`start` and :meth:`stop`.
    """

    def __init__(self, folder, port=None, *, host="127.0.0.1"):
        self.folder = os.fspath(folder)
        self.host = host
        self.port = port or free_port(host)
        self.binary = find_mosquitto()
        self.proc = None
        self._log = None

    @property
    def config_path(self):
        return os.path.join(self.folder, "mosquitto.conf")

    @property
    def log_path(self):
        return os.path.join(self.folder, "mosquitto.log")

    def write_config(self):
        """Write the broker's config file and return its path."""
        os.makedirs(self.folder, exist_ok=True)
        self._let_mosquitto_write()
        with open(self.config_path, "w", encoding="utf-8") as fh:
            fh.write(
                "# Written by ByteLocker (central/broker.py); edits are overwritten.\n"
                f"listener {self.port} {self.host}\n"
                "allow_anonymous true\n"
                "persistence true\n"
                f"persistence_location {self.folder}/\n"
                "autosave_interval 60\n"
                "max_queued_messages 1000000\n"
                "max_inflight_messages 0\n"
                "log_dest stdout\n"
            )
        return self.config_path

    def _let_mosquitto_write(self):
        # Started as root, mosquitto drops to its own user and must still be
        # able to save its queue in our folder.
        if os.geteuid() != 0:
            return
        try:
            import pwd

            user = pwd.getpwnam("mosquitto")
        except KeyError:
            return
        os.chown(self.folder, user.pw_uid, user.pw_gid)

    def start(self, timeout=10.0):
        """Start mosquitto and wait until it accepts connections; raises :class:`BrokerError`."""
        if self.binary is None:
            raise BrokerError("Mosquitto is not installed (apt install mosquitto); "
                              "ByteLocker needs an MQTT broker to carry door events.")
        if _listening(self.host, self.port):
            raise BrokerError(f"Port {self.port} on {self.host} is already in use; cannot start Mosquitto there.")
        self.write_config()
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "-c", self.config_path], stdout=self._log,
                                     stderr=subprocess.STDOUT)
        waited = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if _listening(self.host, self.port):
                logger.info("Started Mosquitto on %s:%s (data in %s).", self.host, self.port, self.folder)
                return self
            if self.proc.poll() is not None:
                break
            waited.wait(0.05)
        self.stop()
        raise BrokerError(f"Mosquitto did not start on {self.host}:{self.port}; see {self.log_path}.")

    def stop(self, timeout=5.0):
        """Stop mosquitto cleanly (it saves its queue), killing it if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
