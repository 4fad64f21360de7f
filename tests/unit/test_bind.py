"""The parent binds the endpoint's sockets itself (without tornado), before it forks."""

from __future__ import annotations

import errno
import socket

import pytest

from supervisor.sockets import bind_sockets


def test_one_free_port_for_every_address_of_a_name() -> None:
    sockets = bind_sockets("localhost", 0)
    try:
        ports = {sock.getsockname()[1] for sock in sockets}
        assert len(ports) == 1 and ports.pop() > 0
        assert all(not sock.getblocking() for sock in sockets)
        with socket.create_connection(("127.0.0.1", sockets[0].getsockname()[1]), timeout=2):
            pass  # it listens
    finally:
        for sock in sockets:
            sock.close()


def test_a_port_in_use_is_an_os_error_and_nothing_stays_bound() -> None:
    first = bind_sockets("127.0.0.1", 0)
    port = first[0].getsockname()[1]
    try:
        with pytest.raises(OSError) as raised:
            bind_sockets("127.0.0.1", port)
        assert raised.value.errno == errno.EADDRINUSE
    finally:
        first[0].close()
    again = bind_sockets("127.0.0.1", port)  # the failed attempt left nothing behind
    again[0].close()


def test_a_name_that_does_not_resolve_is_an_os_error() -> None:
    with pytest.raises(OSError):
        bind_sockets("no-such-host.invalid", 0)
