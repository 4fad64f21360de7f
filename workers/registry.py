"""etcd, behind the few operations the publisher needs: the only module that imports python-etcd.

A task's record is a directory with a TTL holding plain keys; an etcd v3 backend maps the directory
TTL to a lease and implements the same ``Registry`` protocol.

python-etcd's own retries make one call to a frozen server last 4 x read_timeout, and its member
failover breaks when the first member is down at start; so each member gets a client of its own with
a urllib3 pool that never retries and bounds every request by ``timeout``, and the backend moves to
the next member itself when one stops answering.
"""

from __future__ import annotations

import logging
import ssl
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, FrozenSet, List, Optional, Protocol, Sequence, Tuple

import etcd
import urllib3

log = logging.getLogger("registry")


class Unavailable(Exception):
    """No member answered (or a request failed): try again later."""


class Refused(Unavailable):
    """A member answered but refused us (bad credentials, no permission): retrying alone will not help."""


class Missing(Exception):
    """The key or directory is not there (deleted, or its TTL lapsed)."""


class Registry(Protocol):
    def put_dir(self, path: str, ttl: int, refresh: bool = False) -> None:
        """Create the directory with a TTL, or set (refresh=False) or extend (refresh=True) its TTL."""

    def put(self, key: str, value: str) -> None:
        """Create or replace the key (etcd v2 silently creates missing parent directories, without a TTL)."""

    def update(self, key: str, value: str) -> None:
        """Replace the key's value; raise Missing if it is not there, and never create anything."""

    def listing(self, path: str) -> Tuple[Optional[int], FrozenSet[str]]:
        """The directory's remaining TTL (None: it has none) and the names of its keys; Missing if absent."""

    def ping(self, path: str) -> None:
        """Raise Unavailable unless a member answers and lets us read ``path`` (which need not exist yet)."""

    def describe(self) -> str: ...

    def close(self) -> None: ...


def is_tls_refusal(exc: BaseException) -> bool:
    """A TLS handshake that failed (bad certificate, unknown CA): python-etcd wraps urllib3's SSLError."""
    cause = getattr(exc, "cause", None) or exc
    return isinstance(cause, (urllib3.exceptions.SSLError, ssl.SSLError))


class EtcdV2Registry:
    def __init__(
        self,
        hosts: Sequence[Tuple[str, int]],
        timeout: float,
        protocol: str = "http",
        ca_cert: Optional[str] = None,
        cert: Optional[str] = None,
        key: Optional[str] = None,
        username: str = "",
        password: str = "",
        request_span: Callable[[float], ContextManager[None]] = lambda bound: nullcontext(),
    ) -> None:
        """Each request to a member runs inside ``request_span(seconds it may take)`` (the heartbeat's)."""
        self._hosts = list(hosts)
        self._bound = 2 * timeout  # connect, then read: each bounded by timeout
        self._request_span = request_span
        self._current = 0
        pool_kw: Dict[str, Any] = {}
        if ca_cert:
            pool_kw.update(ca_certs=ca_cert, cert_reqs=ssl.CERT_REQUIRED)
        if cert:
            pool_kw.update(cert_file=cert, key_file=key)
        self._clients: List[etcd.Client] = []
        for host, port in self._hosts:
            client = etcd.Client(
                host=host, port=port, protocol=protocol, read_timeout=timeout,
                username=username or None, password=password or None,
            )
            client.http = urllib3.PoolManager(
                num_pools=1, maxsize=1, retries=False,
                timeout=urllib3.Timeout(connect=timeout, read=timeout), **pool_kw,
            )
            self._clients.append(client)

    def describe(self) -> str:
        host, port = self._hosts[self._current]
        return f"{host}:{port}"

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one request on the current member, moving on to the next ones while they fail."""
        errors = []
        handshakes_refused = 0
        for _ in range(len(self._clients)):
            client = self._clients[self._current]
            try:
                with self._request_span(self._bound):
                    return getattr(client, method)(*args, **kwargs)
            except etcd.EtcdKeyNotFound as exc:
                raise Missing(str(exc)) from None
            except etcd.EtcdInsufficientPermissions as exc:
                raise Refused(f"{self.describe()}: {exc}") from None
            except (etcd.EtcdConnectionFailed, urllib3.exceptions.HTTPError, OSError) as exc:
                handshakes_refused += is_tls_refusal(exc)
                errors.append(f"{self.describe()}: {exc}")
                self._current = (self._current + 1) % len(self._clients)
            except etcd.EtcdException as exc:
                raise Unavailable(f"{self.describe()}: {exc}") from None
        # Every member answered, but none accepted our TLS settings: a mistake to fix, not an outage.
        raise (Refused if handshakes_refused == len(self._clients) else Unavailable)("; ".join(errors))

    def put_dir(self, path: str, ttl: int, refresh: bool = False) -> None:
        if refresh:
            self._call("write", path, None, dir=True, ttl=ttl, prevExist=True, refresh=True)
            return
        try:
            self._call("write", path, None, dir=True, ttl=ttl, prevExist=True)
        except Missing:
            self._call("write", path, None, dir=True, ttl=ttl, prevExist=False)

    def put(self, key: str, value: str) -> None:
        self._call("write", key, value)

    def update(self, key: str, value: str) -> None:
        self._call("write", key, value, prevExist=True)

    def listing(self, path: str) -> Tuple[Optional[int], FrozenSet[str]]:
        node = self._call("read", path)
        # An empty directory's ``leaves`` yields the directory itself.
        return node.ttl, frozenset(leaf.key.rsplit("/", 1)[1] for leaf in node.leaves if leaf.key != node.key)

    def ping(self, path: str) -> None:
        # /version answers without credentials: a read under our namespace proves they are accepted.
        try:
            self._call("read", path)
        except Missing:
            pass

    def close(self) -> None:
        for client in self._clients:
            client.http.clear()
