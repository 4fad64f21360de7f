"""The etcd v3 API: a lease per task, the whole record written in one transaction, every later write
guarded.

- ``write_all`` grants a lease of ``ttl`` seconds when there is none (or the TTL changes: the final
  record moves to a lease of ``keep_finished`` seconds, and the live one is then revoked), reads the
  record's keys with their revisions, and writes every key bound to the lease in one transaction that
  compares those revisions: no reader sees half a record, and a record changed in between fails the
  transaction instead of being overwritten blindly. A key it does not write (a previous run's metrics,
  kept on that run's final lease) is deleted in the same transaction: the record is one run's, on one lease.
- ``write`` changes keys in a transaction that compares the mod revision of every key of the record
  with the one our last write gave it. A record deleted or expired behind our back (its keys' revisions
  are then 0), or changed by anyone else, fails the compare: ``Missing``, and the caller writes it again
  whole. A request of ours that a frozen member applies late carries an old compare, so it fails
  harmlessly instead of landing over newer data.
- ``keep_alive`` renews the lease (a lease that is gone answers without a TTL) and checks, with an
  empty guarded transaction, that the record is still as we left it, unless a guarded write since the
  last renewal found it so already.

A host tree's records (many tasks, one publisher) share one live lease (``SharedLease``): they live and
die with the tree, and one renewal keeps them all, instead of one per task. A record's final version
moves to a lease of its own (``keep_finished``), and the shared lease is never revoked by a record.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from supervisor.etcd.errors import Missing, Unavailable
from supervisor.etcd.gateway import Gateway, b64, range_end, unb64
from supervisor.etcd.store import Entry, RecordStore

log = logging.getLogger("horizon-etcd")

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default: the compares, and the operations, one transaction may hold


def compare_revision(key: str, revision: int) -> Dict[str, Any]:
    """A compare that holds while ``key``'s last change is ``revision`` (0: the key does not exist)."""
    return {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}


class SharedLease:
    """The live lease of every record of a host tree, renewed once for all of them."""

    def __init__(self, gateway: Gateway, ttl: int) -> None:
        self.gateway = gateway
        self.ttl = ttl
        self.id: Optional[int] = None
        self.renewed_at = float("-inf")

    def get(self) -> int:
        if self.id is None:
            self.id = int(self.gateway.call("lease/grant", {"TTL": str(self.ttl)})["ID"])
            self.renewed_at = time.monotonic()
        return self.id

    def keep_alive(self) -> None:
        """Renew it, unless renewed in the last sixth of its TTL (every record asks, every third of it)."""
        if self.id is None:
            raise Missing("the shared lease is gone")
        if time.monotonic() - self.renewed_at < self.ttl / 6:
            return
        answer = self.gateway.call("lease/keepalive", {"ID": str(self.id)})
        if not answer.get("result", answer).get("TTL"):  # a lease that is gone answers without a TTL
            self.id = None
            raise Missing("the shared lease expired")
        self.renewed_at = time.monotonic()

    def lost(self, lease: Optional[int]) -> None:
        if lease is not None and lease == self.id:
            self.id = None


class V3Record:
    """A task's record: keys under a prefix, bound to one lease (see the module doc)."""

    def __init__(self, gateway: Gateway, prefix: str, shared: Optional[SharedLease] = None) -> None:
        self.gateway = gateway
        self.prefix = prefix
        self.shared = shared
        self.lease: Optional[int] = None
        self.lease_ttl = 0
        self.retired: List[int] = []  # leases our keys moved off: revoked once the move is written
        self.revisions: Dict[str, int] = {}  # key -> the mod revision our last write gave it
        self.checked = False  # a guarded write found the record as we left it since the last renewal

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}"

    def write_all(self, values: Mapping[str, str], ttl: int) -> None:
        if self.lease is None or ttl != self.lease_ttl:
            if self.lease is not None and not self.is_shared(self.lease):
                self.retired.append(self.lease)
            self.lease = None
            if self.shared is not None and ttl == self.shared.ttl:
                self.lease = self.shared.get()
            else:
                self.lease = int(self.gateway.call("lease/grant", {"TTL": str(ttl)})["ID"])
            self.lease_ttl = ttl
        found = self.gateway.call("kv/range", {
            "key": b64(self.prefix + "/"), "range_end": range_end(self.prefix + "/"), "keys_only": True,
        })
        current = {unb64(kv["key"]): int(kv.get("mod_revision", 0)) for kv in found.get("kvs", [])}
        self.revisions = {}
        keys = {self.key(name): value for name, value in values.items()}
        stale = [key for key in current if key not in keys]  # a previous run's (its final metrics, on its lease)
        self._transaction(keys, {**current, **{key: current.get(key, 0) for key in keys}},
                          "changed while it was being written", deletes=stale)
        self._revoke_retired()

    def write(self, values: Mapping[str, str]) -> None:
        keys = {self.key(name): value for name, value in values.items()}
        self._transaction(keys, self.revisions, "is not as horizon left it (deleted, expired, or changed)")

    def is_shared(self, lease: Optional[int]) -> bool:
        return self.shared is not None and lease is not None and lease == self.shared.id

    def keep_alive(self) -> None:
        if self.lease is None:
            raise Missing(f"{self.prefix} has no lease")
        if self.is_shared(self.lease) and self.shared is not None:
            try:
                self.shared.keep_alive()
            except Missing:
                self.lease = None
                raise
        else:
            answer = self.gateway.call("lease/keepalive", {"ID": str(self.lease)})
            if not answer.get("result", answer).get("TTL"):  # a lease that is gone answers without a TTL
                self.lease = None
                raise Missing(f"the lease of {self.prefix} expired")
        if not self.checked:
            self._transaction({}, self.revisions, "is not as horizon left it (deleted, or changed)")
        self.checked = False

    def changes(self, values: Mapping[str, str]) -> Tuple[List[Dict[str, Any]], List[Dict[str, Any]]]:
        """The compares and puts of a guarded ``write`` of ``values``, for a transaction of many records
        (``V3Backend.write_together``); Missing without a lease."""
        keys = {self.key(name): value for name, value in values.items()}
        return self._compares(self.revisions), self._operations(keys)

    def landed(self, values: Mapping[str, str], revision: int) -> None:
        """A transaction with ``values``'s puts succeeded at ``revision``."""
        self._landed([self.key(name) for name in values], revision)

    def _landed(self, keys: Iterable[str], revision: int) -> None:
        self.revisions.update(dict.fromkeys(keys, revision))
        self.checked = True

    def _compares(self, expected: Mapping[str, int]) -> List[Dict[str, Any]]:
        if self.lease is None:
            raise Missing(f"{self.prefix} has no lease")
        return [compare_revision(key, revision) for key, revision in expected.items()]

    def _operations(self, puts: Mapping[str, str], deletes: Sequence[str] = ()) -> List[Dict[str, Any]]:
        return ([{"request_put": {"key": b64(key), "value": b64(value), "lease": str(self.lease)}}
                 for key, value in puts.items()]
                + [{"request_delete_range": {"key": b64(key)}} for key in deletes])

    def _transaction(self, puts: Mapping[str, str], expected: Mapping[str, int], why: str,
                     deletes: Sequence[str] = ()) -> None:
        """Put ``puts`` bound to our lease (and delete ``deletes``) if every key in ``expected`` is at its
        revision; Missing if not."""
        body = {"compare": self._compares(expected), "success": self._operations(puts, deletes)}
        try:
            answer = self.gateway.call("kv/txn", body)
        except Missing:  # the lease is gone (NotFound): a new one, with the whole record
            if self.shared is not None:
                self.shared.lost(self.lease)
            self.lease = None
            raise
        if not answer.get("succeeded"):  # omitted when false, like every zero value
            self.revisions = {}
            raise Missing(f"{self.prefix} {why}")
        self._landed(puts, int(answer["header"]["revision"]))

    def _revoke_retired(self) -> None:
        """Revoke the leases our keys left (best effort: a lease not revoked expires by itself)."""
        for lease in list(self.retired):
            try:
                self.gateway.call("lease/revoke", {"ID": str(lease)})
            except Missing:
                pass  # expired already
            except Unavailable as exc:
                log.debug("could not revoke lease %x now (%s); it expires by itself", lease, exc)
                continue
            self.retired.remove(lease)


class V3Backend:
    together = True

    def __init__(self, gateway: Gateway, shared: Optional[SharedLease] = None) -> None:
        """``shared``: the live lease every record shares (a host tree's), or None: one per record."""
        self.gateway = gateway
        self.shared = shared

    def record(self, prefix: str) -> V3Record:
        return V3Record(self.gateway, prefix, self.shared)

    def write_together(self, writes: Sequence[Tuple[RecordStore, Mapping[str, str]]]) -> List[RecordStore]:
        """Guarded writes of many records (a host tree's metrics) in one transaction per ``MAX_TXN_OPS``
        compares, instead of one request each: each record's compares are all in it, so the transaction
        lands only where every record is as its writer left it. A transaction that fails (a record changed,
        a lease gone) writes nothing and is left to each record's own ``write``, which tells whose it was.
        The records that landed; Unavailable when etcd answered none."""
        chunks: List[Tuple[List[Tuple[V3Record, Mapping[str, str]]], Dict[str, List[Dict[str, Any]]]]] = []
        for store, values in writes:
            assert isinstance(store, V3Record)
            try:
                compares, puts = store.changes(values)
            except Missing:
                continue  # no lease: its own write grants one
            if not chunks or max(len(chunks[-1][1]["compare"]) + len(compares),
                                 len(chunks[-1][1]["success"]) + len(puts)) > MAX_TXN_OPS:
                chunks.append(([], {"compare": [], "success": []}))
            members, body = chunks[-1]
            members.append((store, values))
            body["compare"] += compares
            body["success"] += puts
        landed: List[RecordStore] = []
        for members, body in chunks:
            try:
                answer = self.gateway.call("kv/txn", body)
            except Missing:  # a lease gone (NotFound): the records' own writes find whose
                continue
            except Unavailable:
                if landed:
                    break  # etcd went away midway: the rest are written on their own, once it answers
                raise
            if answer.get("succeeded"):
                revision = int(answer["header"]["revision"])
                for store, values in members:
                    store.landed(values, revision)
                landed += [store for store, _ in members]
        return landed

    def ping(self, namespace: str) -> None:
        # A range under the namespace, not the namespace key itself: a role granted the prefix
        # "/horizon/" may not read the key "/horizon".
        prefix = namespace + "/"
        self.gateway.call("kv/range", {"key": b64(prefix), "range_end": range_end(prefix), "limit": "1",
                                       "keys_only": True})

    def tidy(self, namespace: str, dry_run: bool = False) -> List[str]:
        """Nothing to tidy: a v3 record leaves no directory behind."""
        return []

    def read_prefix(self, prefix: str) -> Tuple[List[Entry], int]:
        answer = self.gateway.call("kv/range", {"key": b64(prefix), "range_end": range_end(prefix)})
        entries = [Entry(unb64(kv["key"]), unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)), "lease" in kv)
                   for kv in answer.get("kvs", [])]
        return entries, int(answer["header"]["revision"])

    def wait(self, prefix: str, after: int, timeout: float) -> Tuple[List[Entry], int]:
        request = {"create_request": {"key": b64(prefix), "range_end": range_end(prefix),
                                      "start_revision": str(after + 1)}}
        answer = self.gateway.call("watch", request, watch_for=timeout)
        if answer.get("canceled"):
            compacted = int(answer.get("compact_revision", 0))
            raise Missing(f"etcd compacted its history past revision {after} (to {compacted}): read again")
        changes = [Entry(unb64(event["kv"]["key"]),
                         None if event.get("type") == "DELETE" else unb64(event["kv"].get("value", "")),
                         int(event["kv"].get("mod_revision", 0)))
                   for event in answer.get("events", [])]
        return changes, max([after, *(change.revision for change in changes)])

    def put(self, key: str, value: str, ttl: int) -> None:
        lease = self.gateway.call("lease/grant", {"TTL": str(ttl)})["ID"]
        self.gateway.call("kv/put", {"key": b64(key), "value": b64(value), "lease": lease})

    def delete(self, key: str, revision: int) -> bool:
        return self._delete_if(key, revision, {"key": b64(key)})

    def remove(self, prefix: str, key: str, revision: int) -> bool:
        return self._delete_if(key, revision, {"key": b64(prefix + "/"), "range_end": range_end(prefix + "/")})

    def _delete_if(self, key: str, revision: int, what: Dict[str, Any]) -> bool:
        """Delete the range ``what`` if ``key``'s last change is still ``revision``, in one transaction."""
        answer = self.gateway.call("kv/txn", {"compare": [compare_revision(key, revision)],
                                              "success": [{"request_delete_range": what}]})
        return bool(answer.get("succeeded"))

    def describe(self) -> str:
        return self.gateway.describe()

    def close(self) -> None:
        self.gateway.close()
