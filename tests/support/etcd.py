"""etcd as tests and benchmarks see it: read, written and cleaned over plain HTTP, never through horizon's
own client (workers/registry.py), so that a bug there cannot hide itself in what a test reads back.

``EtcdV2`` speaks the v2 keys API. A v3 variant (``EtcdV3``, later) goes beside it with the same
methods, so that a test or benchmark picks its API by the class it builds and reads the same way."""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

from tests.support import ETCD
from tests.support.net import Response, http_request
from tests.support.waiting import wait_for


class EtcdV2:
    """One etcd member's v2 API at ``base`` (``http://HOST:PORT``, or https with ``context``), as an
    anonymous client or as ``user`` with ``password`` (basic auth)."""

    def __init__(self, base: str = f"http://{ETCD}", context: Optional[ssl.SSLContext] = None,
                 user: str = "root", password: Optional[str] = None, timeout: float = 5.0) -> None:
        self.base = base
        self.context = context
        self.timeout = timeout
        token = base64.b64encode(f"{user}:{password}".encode()).decode() if password else None
        self.headers = {"Authorization": f"Basic {token}"} if token else {}

    def send(self, path: str, method: str = "GET", data: Optional[bytes] = None,
             timeout: Optional[float] = None) -> Response:
        """Any request to the member (keys, auth, health, stats): status None when it does not answer."""
        return http_request(f"{self.base}{path}", method, data, timeout or self.timeout, self.context, self.headers)

    def request(self, path: str, method: str = "GET", data: Optional[bytes] = None,
                timeout: Optional[float] = None) -> Tuple[Optional[int], Any]:
        """(status, JSON body) of ``send``."""
        status, body, _ = self.send(path, method, data, timeout)
        return status, body

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        """The node at ``key`` with everything below it, or None (missing, or no answer)."""
        status, body = self.request(f"/v2/keys{key}?recursive=true")
        return body["node"] if status == 200 else None

    def value(self, key: str) -> Any:
        """The JSON-decoded value at ``key`` (every value horizon writes is JSON), or None."""
        node = self.get(key)
        try:
            return json.loads(node["value"]) if node else None
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, key: str, value: str) -> Optional[int]:
        """Write ``value`` at ``key``; the status (None when the member does not answer)."""
        return self.request(f"/v2/keys{key}", "PUT", urllib.parse.urlencode({"value": value}).encode())[0]

    def delete(self, key: str) -> None:
        """Remove ``key`` and everything below it. Never fails: what is not there, or a member that is
        stopped or mid-election, leaves nothing to clean."""
        self.request(f"/v2/keys{key}?recursive=true&dir=true", "DELETE")

    def index(self) -> int:
        """etcd's current index: the changes a watch from ``index() + 1`` will see are those from now on."""
        status, body, headers = self.send("/v2/keys/")
        assert status == 200, f"etcd at {self.base} answers {status}: {body}"
        return int(headers["X-Etcd-Index"])

    def history(self, prefix: str) -> "EtcdHistory":
        return EtcdHistory(self, prefix)


def task_keys(task: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The keys of a task directory node, JSON-decoded: {'status': {...}, 'running': True, ...}; {} for None."""
    if not task:
        return {}
    return {node["key"].rsplit("/", 1)[1]: json.loads(node["value"]) for node in task.get("nodes", [])}


class EtcdHistory:
    """Every change etcd makes under ``prefix`` from now on, each with the wall time it was received: a
    long-polling v2 watch on its own thread and its own kept-alive connection, so that a state that lasted
    a millisecond is seen as surely as one that lasted a minute, and a write is timed when it shows."""

    POLL = 0.5  # a long poll that long without a change means etcd had none past our index

    def __init__(self, etcd: EtcdV2, prefix: str) -> None:
        assert etcd.context is None and not etcd.headers, "the history watches a plain, anonymous member"
        self.prefix = prefix
        self.events: List[Dict[str, Any]] = []  # etcd's own events, each with "received" (time.time()) added
        self.error: Optional[str] = None
        self._etcd = etcd
        self._index = etcd.index() + 1
        self._quiet_since = 0.0  # start of the latest poll that found nothing new: all was read by then
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        where = urllib.parse.urlsplit(self._etcd.base)
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=self.POLL)
        while not self._done.is_set():
            asked = time.monotonic()
            try:
                conn.request("GET", f"/v2/keys{self.prefix}?wait=true&recursive=true&waitIndex={self._index}")
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
            event["received"] = time.time()
            self.events.append(event)
            self._index = event["node"]["modifiedIndex"] + 1
        conn.close()

    def stop(self) -> "EtcdHistory":
        """Catch up to etcd's present, then stop watching. Caught up: a poll begun since then found
        nothing new, or the change at etcd's index at this call (or a later one) has been read."""
        now, present = time.monotonic(), self._etcd.index()
        wait_for(lambda: self.error or self._quiet_since > now or self._index > present, 10,
                 "etcd's history to be read up to now")
        self._done.set()
        self._thread.join(5)
        assert self.error is None, f"lost etcd's history: {self.error}"
        return self

    def changes(self, name: str) -> List[Tuple[Any, float]]:
        """(value, received) of every write to the key ``name`` under the prefix, in order."""
        return [(json.loads(e["node"]["value"]), e["received"]) for e in self.events
                if e["node"]["key"].endswith(f"/{name}") and "value" in e["node"]]

    def values(self, name: str) -> List[Any]:
        """The values written to the record's key ``name``, in order."""
        return [value for value, _ in self.changes(name)]

    def removals(self) -> List[str]:
        return [f"{e['action']} {e['node']['key']}" for e in self.events if e["action"] in ("delete", "expire")]
