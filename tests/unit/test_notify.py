"""sd_notify without systemd: datagrams to $NOTIFY_SOCKET, the watchdog period, silence outside systemd."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from supervisor.notify import Notifier


def receiver(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2)
    return sock


def test_fields_go_in_one_datagram(tmp_path: Path) -> None:
    path = str(tmp_path / "notify.sock")
    with receiver(path) as sock:
        Notifier({"NOTIFY_SOCKET": path}).send("READY=1", "STATUS=task running")
        assert sock.recv(4096) == b"READY=1\nSTATUS=task running"


def test_an_abstract_socket_address(tmp_path: Path) -> None:
    name = f"horizon-test-{uuid.uuid4().hex}"
    with receiver("\0" + name) as sock:
        Notifier({"NOTIFY_SOCKET": "@" + name}).send("STOPPING=1")
        assert sock.recv(4096) == b"STOPPING=1"


def test_outside_systemd_nothing_is_sent_and_nothing_fails() -> None:
    notifier = Notifier({})
    notifier.send("READY=1")
    assert notifier.watchdog_interval is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).send("READY=1")
    assert "cannot notify systemd" in caplog.text


def test_watchdog_pings_at_half_the_period_and_only_for_its_pid() -> None:
    mine = Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert mine.watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15.0
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None
