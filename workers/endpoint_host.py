"""The endpoint of a host tree: every task served under ``/tasks/SERVICE/TASK`` with the routes a task
tree's endpoint has at its root (workers.endpoint: ``/metrics`` and its history, ``/status``, ``/info``,
``/health``, ``/logs``, the page at ``/tasks/SERVICE/TASK/``), and the host's own:

    GET /metrics  every task's latest sample: JSON ``{"tasks": [...]}``, or with Prometheus' Accept every
                  task's series in one exposition, each family declared once (one scrape per host)
    GET /tasks    ``[{"service","task","state","url"}]``: the tasks served now
    GET /health   200 when every task is healthy (or there is none), else 503: ``{"healthy","tasks"}``
    GET /         a page listing the tasks, each linking its own page

Tasks come and go with the parent's ``task`` and ``drop`` frames; a task not served (any more) is a 404.
A task's ``GET .../metrics`` takes the same fast path as a task tree's ``/metrics``.
"""

from __future__ import annotations

import html
import socket
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import tornado.web

from supervisor.config import Config
from supervisor.frames import Frame, TaskKey
from supervisor.link import WorkerStart
from supervisor.shm import SharedMemory
from workers.endpoint import (Documents, FastMetrics, JsonHandler, NotFoundHandler, health_document, make_app,
                              serve, status_document, to_json)
from workers.engine_api import Engine
from workers.exposition import OPENMETRICS, join, wanted_format
from workers.process import raise_fd_limit


class Served(NamedTuple):
    app: tornado.web.Application
    documents: Documents
    endpoint: Dict[str, Any]
    interval: float


class HostSite(FastMetrics):
    """The tasks served now, and where a request goes."""

    def __init__(self, shm: SharedMemory) -> None:
        self.shm = shm
        self.engine = Engine()  # one for every task's /logs
        self.served: Dict[TaskKey, Served] = {}
        self.prefixes: Dict[str, Served] = {}
        super().__init__(host_app(self))

    def route(self, path: str) -> Tuple[tornado.web.Application, Optional[Documents]]:
        parts = path.split("?", 1)[0].split("/", 5)  # "", "tasks", SERVICE, TASK[, what]
        served = self.prefixes.get("/".join(parts[:4])) if len(parts) >= 4 and parts[1] == "tasks" else None
        if served is None:
            return self.app, None
        return served.app, (served.documents if parts[4:] == ["metrics"] else None)

    def on_frame(self, frame: Frame) -> None:
        key, prefix = frame.task, f"/tasks/{frame.task.path}"
        if frame.kind == "task" and key not in self.served:
            config = Config.from_document(frame.body["config"])
            slots = self.shm.attach(key, int(frame.body["slot"]))
            app = make_app(slots, frame.body["endpoint"], config.metrics.interval, self.engine, self.shm.reports, prefix)
            self.served[key] = self.prefixes[prefix] = Served(app, app.settings["documents"], frame.body["endpoint"],
                                                              config.metrics.interval)
        elif frame.kind == "drop":
            self.served.pop(key, None)
            self.prefixes.pop(prefix, None)
            self.shm.detach(key)

    def ordered(self) -> List[Tuple[TaskKey, Served]]:
        return sorted(self.served.items())


class HostHandler(JsonHandler):
    def initialize(self, site: HostSite) -> None:  # type: ignore[override]
        self.site = site


class HostMetricsHandler(HostHandler):
    def get(self) -> None:
        fmt = wanted_format(self.request.headers.get("Accept"))
        served = self.site.ordered()
        if fmt is None:
            bodies = [body for body in (s.documents.get("metrics")[1] for _, s in served) if body is not None]
            body = b'{"tasks":[' + b",".join(bodies) + b"]}"
        else:
            body = join([s.documents.families(fmt) for _, s in served], fmt == OPENMETRICS)
        self.set_header("Content-Type", fmt or "application/json")
        self.send(body)


class TasksHandler(HostHandler):
    def get(self) -> None:
        self.send(to_json(self.tasks()))

    def tasks(self) -> List[Dict[str, Any]]:
        return [{"service": key.service, "task": key.name, "state": status_document(s.documents)["state"],
                 "url": s.endpoint.get("url")} for key, s in self.site.ordered()]


class HostHealthHandler(HostHandler):
    def get(self) -> None:
        tasks = {key.path: health_document(s.documents, s.interval) for key, s in self.site.ordered()}
        healthy = all(health["healthy"] for health in tasks.values())
        self.send(to_json({"healthy": healthy, "tasks": tasks}), 200 if healthy else 503)


class IndexHandler(TasksHandler):
    def get(self) -> None:
        rows = "".join(
            f'<li><a href="{html.escape(str(task["url"]))}/">{html.escape(task["service"])}/{html.escape(task["task"])}</a>'
            f' {html.escape(task["state"])}</li>' for task in self.tasks()
        ) or "<li>no task</li>"
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.send(f'<!doctype html><meta charset="utf-8"><title>horizon</title><h1>horizon: {len(self.site.served)} '
                  f'task{"s" * (len(self.site.served) != 1)}</h1><ul>{rows}</ul>'.encode())


def host_app(site: HostSite) -> tornado.web.Application:
    args = {"site": site}
    routes: List[Any] = [
        (r"/", IndexHandler, args),
        (r"/metrics", HostMetricsHandler, args),
        (r"/tasks/?", TasksHandler, args),
        (r"/health", HostHealthHandler, args),
    ]
    return tornado.web.Application(routes, default_handler_class=NotFoundHandler, compress_response=False,
                                   default_handler_args={"documents": None, "endpoint": {}, "interval": 1.0})


def run(start: WorkerStart, shm: SharedMemory, sockets: List[socket.socket]) -> None:
    """Entry point of a host tree's endpoint worker process."""
    raise_fd_limit()
    serve(start, sockets, lambda: HostSite(shm))
