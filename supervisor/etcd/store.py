"""What the publisher needs of etcd, whichever API serves it, and ``connect`` to pick that API.

A ``RecordStore`` keeps one task's record: ``write_all`` puts the whole record in place with a TTL
(v2: a directory with a TTL; v3: a lease, in one transaction), ``write`` changes some of its keys and
raises ``Missing`` when the record is not as we left it, and ``keep_alive`` extends the TTL. Each
request is bounded by the configured timeout and runs inside ``request_span(bound)``, the caller's
heartbeat span, so that waiting on a frozen etcd is never taken for a hang.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, ContextManager, Mapping, Protocol

from supervisor.config import EtcdSection

RequestSpan = Callable[[float], ContextManager[None]]


def no_span(bound: float) -> ContextManager[None]:
    return nullcontext()


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
    def record(self, prefix: str) -> RecordStore:
        """The store of the record under ``prefix`` (see layout.task_prefix)."""

    def ping(self, namespace: str) -> None:
        """Raise Unavailable (or Refused) unless a member answers and lets us read under ``namespace``."""

    def tidy(self, namespace: str) -> None:
        """Remove what expired records leave behind under ``namespace`` (v2: empty service
        directories; v3 leaves nothing). Best effort: never raises, never touches a live record."""

    def describe(self) -> str:
        """The member in use, host:port."""

    def close(self) -> None: ...


def connect(etcd: EtcdSection, password: str, request_span: RequestSpan = no_span) -> Backend:
    """The backend ``etcd.api`` names. Builds clients only: nothing is sent until the first call."""
    if etcd.api == "v2":
        from supervisor.etcd.v2 import V2Backend

        return V2Backend.connect(etcd, password, request_span)
    from supervisor.etcd.v3 import V3Backend

    return V3Backend.connect(etcd, password, request_span)
