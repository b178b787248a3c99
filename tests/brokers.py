"""A real Mosquitto broker for tests, on a free loopback port in a temp dir.

Never mock the broker: the tests talk MQTT over a real socket.  ``stop()`` and
``start()`` can be called mid-test to simulate an outage; the port is kept.
"""

import os
import shutil
import socket
import subprocess
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Mosquitto:
    """One mosquitto process with its own config, listening on 127.0.0.1."""

    def __init__(self, folder, port=None, extra_conf=""):
        self.folder = os.fspath(folder)
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc = None
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    def start(self):
        os.makedirs(self.folder, exist_ok=True)
        conf = os.path.join(self.folder, "mosquitto.conf")
        with open(conf, "w") as fh:
            fh.write(
                f"listener {self.port} {self.host}\n"
                "allow_anonymous true\n"
                "persistence false\n"
                "max_inflight_messages 0\n"
                "max_queued_messages 100000\n"
                f"{self.extra_conf}\n"
            )
        log = open(os.path.join(self.folder, "mosquitto.log"), "ab")
        self.proc = subprocess.Popen([self.binary, "-c", conf], stdout=log, stderr=log)
        if not wait_for_port(self.host, self.port):
            self.stop()
            raise RuntimeError(f"mosquitto did not start on port {self.port}; see {self.folder}/mosquitto.log")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


EXAMPLE_ACL = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "config", "mosquitto.example.acl")
EXAMPLE_USERS = (("door-1", "d1"), ("door-2", "d2"), ("bytelocker-central", "c"))


def example_acl_broker(folder):
    """A started broker with config/mosquitto.example.acl, no anonymous users and :data:`EXAMPLE_USERS`."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    passwd = os.path.join(folder, "passwd")
    for i, (user, password) in enumerate(EXAMPLE_USERS):
        subprocess.run(["mosquitto_passwd", "-b"] + (["-c"] if i == 0 else []) + [passwd, user, password],
                       check=True, capture_output=True)
    # As root, mosquitto drops to its own user, which cannot read a test's temp folder.
    conf = (f"password_file {passwd}\nacl_file {EXAMPLE_ACL}\nallow_anonymous false\n"
            + ("user root\n" if os.geteuid() == 0 else ""))
    broker = Mosquitto(os.path.join(folder, "mq"), extra_conf=conf)
    broker.start()
    return broker
