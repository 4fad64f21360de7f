"""What the publisher needs of etcd, whichever API serves it, and ``connect`` to pick that API.

A ``RecordStore`` keeps one task's record: ``write_all`` puts the whole record in place with a TTL
(v2: a directory with a TTL; v3: a lease, in one transaction), ``write`` changes some of its keys and
raises ``Missing`` when the record is not as we left it, and ``keep_alive`` extends the TTL. Each
request is bounded by the configured timeout and runs inside ``request_span(bound)``, the caller's
heartbeat span, so that waiting on a frozen etcd is never taken for a hang.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, List, Mapping, NamedTuple, Optional, Protocol, Sequence, Tuple

from supervisor.config import EtcdSection

RequestSpan = Callable[[float], ContextManager[None]]


def no_span(bound: float) -> ContextManager[None]:
    return nullcontext()


@dataclass(frozen=True)
class Settings:
    """How to reach etcd, whichever API: the members, the bound of one request, TLS and credentials."""

    hosts: Sequence[Tuple[str, int]]
    timeout: float
    protocol: str = "http"
    ca_cert: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None
    username: str = ""
    password: str = field(default="", repr=False)

    @classmethod
    def of(cls, etcd: EtcdSection, password: str) -> "Settings":
        return cls(etcd.hosts, etcd.timeout, etcd.protocol, etcd.ca_cert, etcd.cert, etcd.key, etcd.username, password)


class Entry(NamedTuple):
    """A key as read, or a change as watched: ``value`` None for a key deleted or expired. ``revision``
    is the key's last change (v3 mod revision, v2 modifiedIndex). ``expires`` (as read): False for a key
    that nothing will ever remove by itself (v3: bound to no lease; v2: no TTL on it or a directory above).
    A tuple rather than a frozen dataclass: a read of 1,000 records makes 5,000, at half the cost, and the
    cyclic collector stops tracking them."""

    key: str
    value: Optional[str]
    revision: int
    expires: bool = True


class RecordStore(Protocol):
    def write_all(self, values: Mapping[str, str], ttl: int) -> None:
        """Put the whole record in place, expiring ``ttl`` seconds after its last keep-alive (a new
        ``ttl`` moves it to a new lease on v3); Missing if it changed while being written."""

    def write(self, values: Mapping[str, str]) -> None:
        """Change some keys of the record ``write_all`` wrote; Missing if it is not as we left it.
        Never creates anything."""

    def keep_alive(self) -> None:
        """Extend the record's TTL; Missing if it expired or was deleted."""


class Backend(Protocol):
    together: bool  # ``write_together`` writes many records in one request (v3), or takes none (v2)

    def record(self, prefix: str) -> RecordStore:
        """The store of the record under ``prefix`` (see layout.task_prefix)."""

    def ping(self, namespace: str) -> None:
        """Raise Unavailable (or Refused) unless a member answers and lets us read under ``namespace``."""

    def write_together(self, writes: Sequence[Tuple[RecordStore, Mapping[str, str]]]) -> List[RecordStore]:
        """``write`` of many records in as few requests as the API allows (v3: one transaction for many;
        v2 writes a key a request, so it takes none and returns []). The stores whose writes landed; the
        others are left to their own ``write``. Unavailable when etcd answered none."""

    def tidy(self, namespace: str, dry_run: bool = False) -> List[str]:
        """Remove what expired records leave behind under ``namespace`` (v2: empty service
        directories; v3 leaves nothing), and say what was removed (``dry_run``: what would be, left in
        place). Best effort: never raises, never touches a live record."""

    def read_prefix(self, prefix: str) -> Tuple[List[Entry], int]:
        """Every key under ``prefix`` (which ends with "/") in one request, and the revision (v2: index)
        they are current as of: ``wait(prefix, that)`` sees every later change."""

    def wait(self, prefix: str, after: int, timeout: float) -> Tuple[List[Entry], int]:
        """The changes under ``prefix`` after revision ``after``, waiting up to ``timeout`` seconds for the
        first (v3 watch, v2 wait): ([], after) when none came, else the changes and the revision to wait
        after next. Missing when etcd no longer has the history from ``after`` (read the prefix again)."""

    def put(self, key: str, value: str, ttl: int) -> None:
        """Write ``key``, expiring after ``ttl`` seconds (v3: on a lease of its own)."""

    def delete(self, key: str, revision: int) -> bool:
        """Delete ``key`` if its last change is still ``revision``; False if it changed or is gone."""

    def remove(self, prefix: str, key: str, revision: int) -> bool:
        """Delete the record under ``prefix`` (every key below it; v2: its directory) if ``key``'s last
        change is still ``revision``; False if it changed or is gone. For clients that clean up
        (``horizon prune``): the publisher never removes a record."""

    def describe(self) -> str:
        """The member in use, host:port."""

    def close(self) -> None: ...


def connect(etcd: EtcdSection, password: str, request_span: RequestSpan = no_span, shared_lease: bool = False) -> Backend:
    """The backend ``etcd.api`` names. Builds clients only: nothing is sent until the first call.
    ``shared_lease``: on v3, every live record shares one lease of ``etcd.ttl`` (a host tree's records)."""
    settings = Settings.of(etcd, password)
    if etcd.api == "v2":
        from supervisor.etcd.v2 import EtcdV2Client, V2Backend

        return V2Backend(EtcdV2Client(settings, request_span))
    from supervisor.etcd.gateway import Gateway
    from supervisor.etcd.v3 import SharedLease, V3Backend

    gateway = Gateway(settings, request_span)
    return V3Backend(gateway, SharedLease(gateway, etcd.ttl) if shared_lease else None)
