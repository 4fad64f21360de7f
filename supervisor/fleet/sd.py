"""``horizon sd``: Prometheus service discovery from etcd (Prometheus has none for etcd: it takes file or
HTTP discovery). Every live task is a target, its endpoint's ``host:port``, labelled ``service``, ``task``
and ``tags`` (comma-separated), kept current from an etcd watch (v3) or wait (v2), never by polling. A
task of a host tree (many tasks behind one endpoint) is scraped at its own path, ``__metrics_path__``
``/tasks/SERVICE/TASK/metrics``. With ``--targets host`` every endpoint is one target instead, scraped at
``/metrics``: a host tree's answers with every task's series, so one scrape per host suffices.

- ``--listen HOST:PORT`` serves the http_sd form (``[{"targets": [...], "labels": {...}}]``, JSON) at
  every path, answered from the latest list (a thread of its own, so a slow scrape of it never holds
  the watch back);
- ``--file PATH`` writes the file_sd form (the same JSON) atomically (a temporary file renamed over it),
  whenever the list changes; ``--once`` writes it once and exits (for cron or a unit's ExecStartPre).

The endpoint's exposition carries ``service`` and ``task`` too; the README's scrape config says
``honor_labels: true``, so Prometheus keeps the task's own labels instead of renaming them
``exported_service``/``exported_task`` (both say the same).
"""

from __future__ import annotations

import http.server
import json
import os
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from supervisor.etcd.errors import Refused, Unavailable
from supervisor.fleet.changes import Follower
from supervisor.fleet.records import Fleet

QUIET = 10.0  # seconds one wait may stay open without news


def target(host: str, port: Any) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def groups(fleet: Fleet, per: str = "task") -> List[Dict[str, Any]]:
    """One target group per live task whose record says where its endpoint is (``per="task"``), or per
    endpoint (``per="host"``)."""
    found = []
    hosts: Dict[str, None] = {}
    for task in fleet.sorted():
        if task.state is None or task.final:
            continue
        host, port = task.endpoint.get("host"), task.endpoint.get("port")
        if not host or not port:
            continue
        if per == "host":
            hosts[target(str(host), port)] = None
            continue
        labels = {"service": task.service, "task": task.task, "tags": ",".join(task.tags)}
        path = task.endpoint.get("path")
        if path:
            labels["__metrics_path__"] = f"{path}/metrics"
        found.append({"targets": [target(str(host), port)], "labels": labels})
    found.extend({"targets": [address], "labels": {}} for address in sorted(hosts))
    return found


def encode(found: List[Dict[str, Any]]) -> bytes:
    return (json.dumps(found, indent=1, sort_keys=True) + "\n").encode()


def write_file(path: str, data: bytes) -> None:
    """Replace ``path`` at once: Prometheus never reads a half-written file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class Latest:
    """The latest list, shared by the watching thread (which sets it) and the HTTP thread."""

    def __init__(self) -> None:
        self.data = encode([])
        self.lock = threading.Lock()

    def set(self, data: bytes) -> None:
        with self.lock:
            self.data = data

    def get(self) -> bytes:
        with self.lock:
            return self.data


def http_server(listen: Tuple[str, int], latest: Latest) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            data = latest.get()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            pass  # a scrape every few seconds is not news

    server = http.server.ThreadingHTTPServer(listen, Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="sd-http", daemon=True).start()
    return server


def run(follower: Follower, listen: Optional[Tuple[str, int]], path: Optional[str], once: bool,
        trouble: Callable[[Optional[BaseException]], None], per: str = "task") -> int:
    """Discover until interrupted (or once, with ``once``): ``trouble`` hears of etcd's silences (None when
    it answers again); a refusal ends it."""
    latest = Latest()
    if listen is not None:
        http_server(listen, latest)
    follower.read()
    written: Optional[bytes] = None
    while True:
        data = encode(groups(follower.fleet, per))
        if data != written:
            latest.set(data)
            if path is not None:
                write_file(path, data)
            written = data
        if once:
            return 0
        try:
            follower.step(QUIET)
            trouble(None)
        except Refused:
            raise
        except Unavailable as exc:
            trouble(exc)
            threading.Event().wait(1.0)
