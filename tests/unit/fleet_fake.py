"""A fake etcd for the unit tests of the ``horizon`` command (supervisor/fleet): the Backend calls the
fleet makes (read_prefix, wait, put, delete, remove, tidy), on either API's shape of changes.

Keys carry a revision (one counter for the whole store, as etcd's) and whether they expire. Every change
is kept in a history that ``wait`` serves from; ``compact`` drops it (``wait`` then raises Missing).
On "v2", a record removed whole is one change for its directory (value None), as etcd v2 reports a
directory deleted or expired, and ``touch_dir`` is the change etcd v2 reports when a record's directory
gets a new TTL (also a value of None, for a directory that is still there); ``wait`` gives one change
at a time, as a v2 wait does. ``react`` stands for a task's supervisor: called with each control
request written.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from supervisor.etcd.errors import Missing, Unavailable
from supervisor.etcd.store import Entry

NS = "/ns"
NOW = "2026-01-05T10:00:00.000Z"


def record(service: str, task: str, state: str = "running", host: str = "h1", tags: Tuple[str, ...] = (),
           port: int = 8080, **status: Any) -> Dict[str, Any]:
    """A task's documents as its publisher writes them (supervisor/etcd/layout.py)."""
    final = state in ("exited", "failed", "stopped")
    return {
        "info": {"service": service, "task": task, "image": "busybox:latest", "command": ["sleep", "1000"],
                 "tags": list(tags), "container_id": "c0ffee" * 10, "host": host, "started_at": NOW},
        "endpoint": {"host": "127.0.0.1", "port": port, "url": f"http://127.0.0.1:{port}"},
        "running": state == "running",
        "status": {"state": state, "exit_code": 0 if final else None, "reason": None, "oom_killed": False,
                   "started_at": NOW, "finished_at": NOW if final else None, "updated_at": NOW, "restarts": 0,
                   "restart_in_s": None, **status},
        "metrics": {"service": service, "task": task, "seq": 42, "timestamp": 1767607200.0, "interval": 1.0,
                    "container": {"cpu_percent": 12.5, "memory_bytes": 3 * 2**20, "memory_limit_bytes": 2**30,
                                  "pids": 2, "net_rx_bytes": None, "net_tx_bytes": None,
                                  "blkio_read_bytes": 0, "blkio_write_bytes": 4096},
                    "processes": [{"pid": 7, "name": "sleep", "cmdline": "sleep 1000", "cpu_percent": 12.5,
                                   "rss_bytes": 2**20, "threads": 1}], "process_count": 1},
    }


class FakeEtcd:
    def __init__(self, api: str = "v3", namespace: str = NS) -> None:
        self.api = api
        self.namespace = namespace
        self.keys: Dict[str, Tuple[str, int, bool]] = {}  # key -> (value, revision, expires)
        self.revision = 100
        self.history: List[Entry] = []
        self.compacted = 0
        self.empty_dirs: Set[str] = set()  # v2: service directories left empty
        self.puts: List[Tuple[str, str, int]] = []  # (key, value, ttl) of every put
        self.reads: List[str] = []  # the prefix of every read_prefix
        self.failure: Optional[Exception] = None  # raised by every call
        self.react: Optional[Callable[["FakeEtcd", str, Dict[str, Any]], None]] = None
        self.idle: List[Callable[[], None]] = []  # changes to make, one per wait that found none
        self.closed = False

    # -- the test's side --------------------------------------------------------------------------

    def task_prefix(self, service: str, task: str) -> str:
        return f"{self.namespace}/services/{service}/{task}"

    def set(self, key: str, value: str, expires: bool = True) -> int:
        self.revision += 1
        self.keys[key] = (value, self.revision, expires)
        self.history.append(Entry(key, value, self.revision))
        return self.revision

    def add(self, service: str, task: str, state: str = "running", expires: bool = True, **kw: Any) -> None:
        for name, document in record(service, task, state, **kw).items():
            self.set(f"{self.task_prefix(service, task)}/{name}", json.dumps(document), expires)

    def status(self, service: str, task: str, **changes: Any) -> None:
        key = f"{self.task_prefix(service, task)}/status"
        document = dict(json.loads(self.keys[key][0]), **changes)
        self.set(key, json.dumps(document), self.keys[key][2])

    def drop(self, prefix: str) -> None:
        """Every key under ``prefix`` goes (a record expired or deleted)."""
        gone = sorted(key for key in self.keys if key.startswith(prefix + "/"))
        self.revision += 1
        for key in gone:
            del self.keys[key]
            if self.api == "v3":
                self.history.append(Entry(key, None, self.revision))
        if self.api == "v2":
            self.history.append(Entry(prefix, None, self.revision))

    def touch_dir(self, prefix: str) -> None:
        """v2: a record's directory given a new TTL: etcd reports the directory, with no value."""
        self.revision += 1
        self.history.append(Entry(prefix, None, self.revision))

    def compact(self) -> None:
        self.compacted = self.revision

    def value(self, key: str) -> Optional[Any]:
        found = self.keys.get(key)
        return json.loads(found[0]) if found else None

    # -- the Backend -------------------------------------------------------------------------------

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def read_prefix(self, prefix: str) -> Tuple[List[Entry], int]:
        self._check()
        self.reads.append(prefix)
        return [Entry(key, value, revision, expires) for key, (value, revision, expires) in sorted(self.keys.items())
                if key.startswith(prefix)], self.revision

    def wait(self, prefix: str, after: int, timeout: float) -> Tuple[List[Entry], int]:
        self._check()
        if after < self.compacted:
            raise Missing("compacted")
        found = [e for e in self.history if e.revision > after
                 and (e.key.startswith(prefix) or prefix.startswith(e.key + "/"))]
        if not found:
            if self.idle:
                self.idle.pop(0)()
                return self.wait(prefix, after, timeout)
            time.sleep(min(timeout, 0.01))
            return [], after
        if self.api == "v2":
            found = found[:1]
        return found, max(e.revision for e in found)

    def put(self, key: str, value: str, ttl: int) -> None:
        self._check()
        self.puts.append((key, value, ttl))
        self.set(key, value)
        if self.react is not None:
            self.react(self, key, json.loads(value))

    def delete(self, key: str, revision: int) -> bool:
        self._check()
        found = self.keys.get(key)
        if found is None or found[1] != revision:
            return False
        del self.keys[key]
        self.revision += 1
        self.history.append(Entry(key, None, self.revision))
        return True

    def remove(self, prefix: str, key: str, revision: int) -> bool:
        self._check()
        found = self.keys.get(key)
        if found is None or found[1] != revision:
            return False
        self.drop(prefix)
        return True

    def tidy(self, namespace: str, dry_run: bool = False) -> List[str]:
        found = sorted(self.empty_dirs)
        if not dry_run:
            self.empty_dirs.clear()
        return found

    def describe(self) -> str:
        return "127.0.0.1:2379"

    def close(self) -> None:
        self.closed = True


def acts(effect: Dict[str, str]) -> Callable[[FakeEtcd, str, Dict[str, Any]], None]:
    """A supervisor that takes each request at once: deletes it and moves the task to the action's state."""

    def react(etcd: FakeEtcd, key: str, request: Dict[str, Any]) -> None:
        service, task = key.split("/")[-2:]
        etcd.delete(key, etcd.keys[key][1])
        state = effect[request["action"]]
        etcd.idle.append(lambda: etcd.status(service, task, state=state))

    return react


def unavailable() -> Unavailable:
    return Unavailable("127.0.0.1:2379: connection refused")


def horizon(argv: List[str], etcd: Optional[FakeEtcd], monkeypatch: Any, capsys: Any,
            sections: Optional[List[Any]] = None) -> Tuple[int, str, str]:
    """``horizon ARGV`` on ``etcd``: (exit status, stdout, stderr). ``sections`` collects the EtcdSection
    each backend was opened with."""
    from supervisor.fleet import cli, connection

    def opened(section: Any) -> Any:
        if sections is not None:
            sections.append(section)
        assert etcd is not None, "no etcd expected"
        return etcd

    monkeypatch.setattr(connection, "open_backend", opened)
    try:
        cli.main(argv)
    except SystemExit as exited:
        code = exited.code
    else:
        raise AssertionError("horizon did not exit")
    out, err = capsys.readouterr()
    return int(code or 0), out, err
