"""sd_notify over a real AF_UNIX datagram socket, as systemd would receive it."""

import os
import socket

import pytest

from bytelocker import systemd_notify


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setattr(systemd_notify, "_last_watchdog", 0.0)
    yield sock
    sock.close()


def test_ready_sends_ready_1(notify_socket):
    assert systemd_notify.ready()

    assert notify_socket.recv(4096) == b"READY=1"


def test_ready_can_carry_a_status_line(notify_socket):
    systemd_notify.ready("watching camera 0")

    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=watching camera 0"


def test_stopping_and_status_send_their_states(notify_socket):
    systemd_notify.status("camera lost")
    systemd_notify.stopping()

    assert notify_socket.recv(4096) == b"STATUS=camera lost"
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_watchdog_pings_then_holds_back_within_a_quarter_interval(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")

    assert systemd_notify.watchdog()
    assert not systemd_notify.watchdog()
    assert systemd_notify.watchdog(force=True)

    assert notify_socket.recv(4096) == b"WATCHDOG=1"
    assert notify_socket.recv(4096) == b"WATCHDOG=1"


def test_abstract_socket_name_is_used(tmp_path, monkeypatch):
    name = f"bytelocker-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        systemd_notify.notify("READY=1")
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_without_systemd_every_call_is_a_quiet_no(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)

    assert systemd_notify.ready() is False
    assert systemd_notify.watchdog() is False
    assert systemd_notify.stopping() is False


def test_vanished_socket_does_not_raise(tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))

    assert systemd_notify.notify("READY=1") is False


def test_watchdog_interval_reads_microseconds(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)

    assert systemd_notify.watchdog_interval() == 30.0


def test_watchdog_interval_is_none_for_another_process(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))

    assert systemd_notify.watchdog_interval() is None


def test_watchdog_interval_is_none_without_a_watchdog(monkeypatch):
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)

    assert systemd_notify.watchdog_interval() is None
