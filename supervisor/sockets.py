"""The endpoint's listening sockets, bound by the parent before it forks: a port in use is reported at
once (one line, exit 2), and a restarted endpoint worker serves on the same port."""

from __future__ import annotations

import errno
import socket
from typing import List

from supervisor.config import EndpointSection
from supervisor.ending import StartupError


def bind_sockets(host: str, port: int, backlog: int = 128) -> List[socket.socket]:
    """Listening sockets on every address of host (as tornado.netutil.bind_sockets, without importing
    tornado and asyncio into the parent: every forked worker would carry their pages in its RSS)."""
    sockets: List[socket.socket] = []
    # a name can resolve to the same address twice (/etc/hosts): bind each once, IPv4 first
    addresses = sorted(set(socket.getaddrinfo(host or None, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                              socket.AI_PASSIVE)), key=lambda found: found[0])
    try:
        for family, kind, proto, _, address in addresses:
            try:
                sock = socket.socket(family, kind, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:  # e.g. ::1 for localhost on a host without IPv6
                    continue
                raise
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:  # one port for every address
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.setblocking(False)
            sock.bind(address)
            sock.listen(backlog)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def bind(endpoint: EndpointSection, source: str) -> List[socket.socket]:
    """The endpoint's sockets; StartupError names ``source`` (the file that set them) and the fix."""
    host, port = endpoint.host, endpoint.port
    try:
        return bind_sockets(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"{source}: [endpoint] port {port} on {host} is in use: choose another port, or 0 for any free port"
            ) from None
        if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, socket.gaierror):
            raise StartupError(
                f"{source}: [endpoint] host {host!r} is not an address of this host: use 127.0.0.1 or 0.0.0.0"
            ) from None
        if exc.errno == errno.EACCES:
            raise StartupError(f"{source}: [endpoint] port {port} needs privileges: use a port above 1023") from None
        raise StartupError(f"{source}: [endpoint] cannot listen on {host}:{port}: {exc}") from None
