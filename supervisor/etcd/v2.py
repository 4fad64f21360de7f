"""The etcd v2 keys API through python-etcd: the only module that imports it.

A task's record is a directory with a TTL holding plain keys. etcd v2 quietly re-creates a deleted
directory, without a TTL, around any key written into it, so keys are created only by ``write_all``,
right after their directory gets its TTL, and every write is conditional on the key's last change
(``prevIndex``, or ``prevExist=false`` for a new key): a write that fails says the record is gone or
was changed, where a plain write would leave a partial record that never expires, or land late over
newer data.

python-etcd's own retries make one call to a frozen server last 4 x read_timeout, and its member
failover breaks when the first member is down at start; so each member gets a client of its own with
a urllib3 pool that never retries and bounds every request by ``timeout``, and the backend moves to
the next member itself when one stops answering.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import etcd
import urllib3

from supervisor.etcd.errors import Missing, Refused, Unanswered, Unavailable
from supervisor.etcd.layout import RECORD_KEYS, control_prefix, services_prefix
from supervisor.etcd.store import Entry, RecordStore, RequestSpan, Settings, no_span
from supervisor.etcd.tls import is_tls_refusal, tls_pool_options

log = logging.getLogger("horizon-etcd")

NO_V2_FIX = "set [etcd] api = v3 (etcd serves the v2 API only with --enable-v2, and 3.6 not at all)"


class NotThere(Missing):
    """The key is not there; ``index`` is etcd's index as it answered (where to wait from)."""

    def __init__(self, message: str, index: int) -> None:
        super().__init__(message)
        self.index = index


class CompareFailed(Exception):
    """A conditional request whose condition (prevIndex, prevValue) no longer holds."""


class EtcdV2Client:
    """The few v2 operations horizon needs, on several members with failover."""

    def __init__(self, settings: Settings, request_span: RequestSpan = no_span) -> None:
        self._hosts = list(settings.hosts)
        self._bound = 2 * settings.timeout  # connect, then read: each bounded by timeout
        self._request_span = request_span
        self._current = 0
        self._clients: List[etcd.Client] = []
        timeout = settings.timeout
        for host, port in self._hosts:
            client = etcd.Client(
                host=host, port=port, protocol=settings.protocol, read_timeout=timeout,
                username=settings.username or None, password=settings.password or None,
            )
            client.http = urllib3.PoolManager(
                num_pools=1, maxsize=1, retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout),
                **tls_pool_options(settings.ca_cert, settings.cert, settings.key),
            )
            self._clients.append(client)

    def _name(self, member: int) -> str:
        host, port = self._hosts[member]
        return f"{host}:{port}"

    def describe(self) -> str:
        return self._name(self._current)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run one request on the current member, moving on to the next ones while they fail."""
        errors = []
        handshakes_refused = 0
        first = self._current
        for _ in range(len(self._clients)):
            client = self._clients[self._current]
            try:
                with self._request_span(self._bound):
                    answer = getattr(client, method)(*args, **kwargs)
                if self._current != first:
                    log.warning("etcd member %s does not answer; using %s", self._name(first), self.describe())
                return answer
            except etcd.EtcdKeyNotFound as exc:
                raise NotThere(str(exc), int((exc.payload or {}).get("index", 0))) from None
            except etcd.EtcdWatchTimedOut:
                return None  # a wait that saw no change (an answer, not a failure)
            except etcd.EtcdEventIndexCleared as exc:
                raise Missing(f"etcd no longer has that history ({exc}): read again") from None
            except etcd.EtcdInsufficientPermissions as exc:
                raise Refused(f"{self.describe()}: {exc}") from None
            except (etcd.EtcdCompareFailed, etcd.EtcdAlreadyExist) as exc:
                raise CompareFailed(str(exc)) from None
            except (etcd.EtcdConnectionFailed, urllib3.exceptions.HTTPError, OSError) as exc:
                handshakes_refused += is_tls_refusal(exc)
                errors.append(f"{self.describe()}: {exc}")
                self._current = (self._current + 1) % len(self._clients)
            except etcd.EtcdException as exc:
                if "404 page not found" in str(exc):  # python-etcd's words for a non-JSON 404
                    raise Refused(f"{self.describe()}: no v2 API here (/v2/keys answers 404)", NO_V2_FIX) from None
                raise Unavailable(f"{self.describe()}: {exc}") from None
        # Every member answered, but none accepted our TLS settings: a mistake to fix, not an outage.
        raise (Refused if handshakes_refused == len(self._clients) else Unanswered)("; ".join(errors))

    def put_dir(self, path: str, ttl: int, refresh: bool = False) -> None:
        """Create the directory with a TTL, or set (refresh=False) or extend (refresh=True) its TTL."""
        if refresh:
            self._call("write", path, None, dir=True, ttl=ttl, prevExist=True, refresh=True)
            return
        try:
            self._call("write", path, None, dir=True, ttl=ttl, prevExist=True)
        except Missing:
            self._call("write", path, None, dir=True, ttl=ttl, prevExist=False)

    def put_guarded(self, key: str, value: str, index: Optional[int]) -> int:
        """Write the key if its last change is still ``index`` (None: if it does not exist); its new
        index. Missing when it changed or vanished (or appeared), so no write lands over one it did not expect."""
        options: Dict[str, Any] = {"prevIndex": index} if index else {"prevExist": False}
        try:
            return int(self._call("write", key, value, **options).modifiedIndex)
        except CompareFailed as exc:
            raise Missing(f"{key} changed behind horizon's back ({exc})") from None

    def listing(self, path: str) -> Tuple[Optional[int], Dict[str, int]]:
        """The directory's remaining TTL (None: it has none) and its entries' names with their last
        change's index; Missing if absent."""
        node = self._call("read", path)
        # An empty directory's ``leaves`` yields the directory itself.
        return node.ttl, {leaf.key.rsplit("/", 1)[1]: int(leaf.modifiedIndex) for leaf in node.leaves
                          if leaf.key != node.key}

    def remove_empty_dir(self, path: str) -> None:
        """Delete the directory if it is empty (etcd refuses otherwise, atomically: never a live record).
        A plain key at ``path`` it would delete: give it directories only."""
        self._call("delete", path, dir=True)

    def read(self, path: str, **options: Any) -> Any:
        """python-etcd's read (its EtcdResult), bounded and failed over like every call; None when a
        ``wait=True`` read saw no change within its ``timeout``."""
        return self._call("read", path, **options)

    def write(self, key: str, value: str, **options: Any) -> Any:
        return self._call("write", key, value, **options)

    def delete(self, key: str, **options: Any) -> Any:
        return self._call("delete", key, **options)

    def ping(self, path: str) -> None:
        # /version answers without credentials: a read under our namespace proves they are accepted.
        try:
            self._call("read", path)
        except Missing:
            pass

    def close(self) -> None:
        for client in self._clients:
            client.http.clear()


class V2Record:
    """A task's record as a directory with a TTL (see the module doc). Every key write is conditional
    on the key's last change being the one horizon made (``prevIndex``), so a write that a frozen member
    applies late fails harmlessly instead of landing over newer data, and a record changed behind our
    back is noticed and written again whole."""

    def __init__(self, client: EtcdV2Client, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = 0  # the TTL the last write_all gave the directory, which keep_alive extends
        self.indexes: Dict[str, int] = {}  # key name -> the index our last write gave it

    def write_all(self, values: Mapping[str, str], ttl: int) -> None:
        """The directory with its TTL first, then every key (guarded by the index it has now), then a
        look that the directory still holds them all with a TTL (it may have been deleted in between,
        and re-created bare by a write)."""
        self.ttl = ttl
        self.indexes = {}
        self.client.put_dir(self.prefix, ttl)
        _, current = self.client.listing(self.prefix)
        for name in sorted(values, key=RECORD_KEYS.index):
            self.indexes[name] = self.client.put_guarded(f"{self.prefix}/{name}", values[name], current.get(name))
        remaining, names = self.client.listing(self.prefix)
        if remaining is None or not set(values) <= set(names):
            raise Missing(f"{self.prefix} was deleted while it was being written")

    def write(self, values: Mapping[str, str]) -> None:
        for name in sorted(values, key=RECORD_KEYS.index):
            if name not in self.indexes:
                raise Missing(f"{self.prefix}/{name} was never written whole")
            self.indexes[name] = self.client.put_guarded(f"{self.prefix}/{name}", values[name], self.indexes[name])

    def keep_alive(self) -> None:
        # A refresh extends the TTL without waking watchers of the directory's keys.
        self.client.put_dir(self.prefix, self.ttl, refresh=True)


class V2Backend:
    together = False

    def __init__(self, client: EtcdV2Client) -> None:
        self.client = client

    def record(self, prefix: str) -> V2Record:
        return V2Record(self.client, prefix)

    def write_together(self, writes: Sequence[Tuple[RecordStore, Mapping[str, str]]]) -> List[RecordStore]:
        return []  # v2 has no transaction of many keys: every record writes on its own

    def ping(self, namespace: str) -> None:
        # Under the namespace, not the namespace itself: a role granted "/horizon/*" cannot read "/horizon".
        self.client.ping(services_prefix(namespace))

    def tidy(self, namespace: str, dry_run: bool = False) -> List[str]:
        """Remove the service directories etcd v2 keeps once their last child is gone: under services/
        (records that expired) and under control/ (requests taken and deleted, or expired); the ones
        removed (``dry_run``: the empty ones, left in place). Best effort: etcd deletes only an empty one,
        atomically."""
        return sorted(path for parent in (services_prefix(namespace), control_prefix(namespace))
                      for path in self._tidy_under(parent, dry_run))

    def _tidy_under(self, parent: str, dry_run: bool) -> List[str]:
        """``tidy`` for the directories right under ``parent``. Directories only: etcd's ``dir=true``
        delete refuses a non-empty directory but deletes a plain key."""
        try:
            # The whole tree for a dry run (an empty directory is a leaf of it, with no value), else one level.
            tree = self.client.read(parent, recursive=dry_run)
        except (Missing, Unavailable):
            return []
        found = [node.key for node in tree.leaves if node.dir and node.key.rsplit("/", 1)[0] == parent]
        if dry_run:
            return found
        removed = []
        for path in found:
            try:
                self.client.remove_empty_dir(path)
            except (Missing, Unavailable):
                pass  # not empty (or gone, or etcd away): nothing to tidy there now
            else:
                log.info("removed the empty directory %s", path)
                removed.append(path)
        return removed

    def read_prefix(self, prefix: str) -> Tuple[List[Entry], int]:
        try:
            node = self.client.read(prefix.rstrip("/"), recursive=True)
        except NotThere as exc:  # nothing there yet: changes from etcd's index on (no read outside the prefix)
            return [], exc.index
        nodes = list(node.get_subtree())
        with_ttl = {n.key for n in nodes if n.ttl is not None}

        def expires(key: str) -> bool:  # the key, or a directory above it within the read, has a TTL
            while key not in with_ttl and key != node.key and "/" in key:
                key = key.rsplit("/", 1)[0]
            return key in with_ttl

        entries = [Entry(n.key, n.value, n.modifiedIndex, expires(n.key)) for n in nodes if not n.dir]
        return entries, node.etcd_index

    def wait(self, prefix: str, after: int, timeout: float) -> Tuple[List[Entry], int]:
        node = self.client.read(prefix.rstrip("/"), wait=True, waitIndex=after + 1, recursive=True, timeout=timeout)
        if node is None:
            return [], after
        # A deleted or expired directory (a task's record) stands for every key under it; a directory
        # created or given a new TTL changes no key.
        removed = node.action in ("delete", "expire", "compareAndDelete")
        if node.dir and not removed:
            return [], node.modifiedIndex
        return [Entry(node.key, None if removed else node.value, node.modifiedIndex)], node.modifiedIndex

    def put(self, key: str, value: str, ttl: int) -> None:
        self.client.write(key, value, ttl=ttl)

    def delete(self, key: str, revision: int) -> bool:
        try:
            self.client.delete(key, prevIndex=revision)
        except (Missing, CompareFailed):
            return False
        return True

    def remove(self, prefix: str, key: str, revision: int) -> bool:
        # The guard first (a compare-and-delete of ``key``), then the directory: v2 cannot do both at once.
        if not self.delete(key, revision):
            return False
        try:
            self.client.delete(prefix, recursive=True, dir=True)
        except Missing:
            pass  # gone meanwhile (expired)
        return True

    def describe(self) -> str:
        return self.client.describe()

    def close(self) -> None:
        self.client.close()
