"""The endpoint worker: the task's HTTP face, served by Tornado from shared memory.

It never talks to etcd and never waits on a queue: every document comes from the latest ones in shared
memory, re-encoded to JSON only when their sequence number moved. Its listening sockets were bound by
the parent, so a restarted endpoint serves on the same port. Only GET (and HEAD) exist, and none of
them changes anything.

    GET /metrics  the latest sample                      (503 before the first one); JSON, or with
                  Prometheus' Accept its text format or OpenMetrics (workers.exposition)
    GET /metrics/history  ?since=SEQ the samples kept in shared memory since SEQ, oldest first
    GET /         the live page (workers.page): HTML drawing the history, the state and the processes
    GET /status   {"state","running","exit_code","started_at","uptime_s", ...}
    GET /info     {"info": {...}, "endpoint": {...}}
    GET /health   200 while the task runs and its sample is fresh, else 503 with the reason
    GET /logs     ?tail=N (default 100, at most 10000) the container's last N lines, text/plain;
                  &follow=1 then its new lines, chunked, until it stops or the client goes away

``/logs`` alone asks the Docker engine, over its HTTP API and asynchronously (``workers.engine_api``),
so the event loop never waits on the engine; a client that goes away stops the engine's stream at
once, and at most ``MAX_FOLLOWS`` follow (``MAX_LOG_READERS`` read) at a time: beyond, 503.

Every answer the handlers give is JSON (but the text of /logs), errors as ``{"error", "status"}``: 404
for another path, 405 (with Allow) for another method, 431 for headers over ``MAX_HEADER_BYTES``. Two
cases never reach a handler: a request Tornado cannot parse gets its bare ``400 Bad Request``, and a
header block that runs past ``HARD_HEADER_BYTES`` is dropped with the connection, unread, so no client
can make the worker buffer more than that.

``GET /metrics``, the path scrapers poll, skips routing and the RequestHandler (``FastMetrics``): the
cached JSON is written straight out, with the same headers, which about doubles the requests a second.
"""

from __future__ import annotations

import json
import logging
from http.client import responses
import socket
import time
from datetime import datetime
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple

import tornado.httpserver
import tornado.httputil
import tornado.ioloop
import tornado.web
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from supervisor.frames import Frame, TaskKey
from supervisor.link import WorkerStart
from supervisor.selfstats import read_reports, usage_document
from supervisor.shm import SharedMemory, Slot, TaskSlots
from supervisor.state import Status, TaskState, fresh_within
from workers.engine_api import Call, Engine, EngineError
from workers.exposition import OPENMETRICS, Exposition, Family, join, wanted_format
from workers.loglines import BadQuery, Demux, parse_follow, parse_tail
from workers.page import PAGE
from workers.process import become_worker

log = logging.getLogger("endpoint")

MAX_HEADER_BYTES = 16 * 1024  # larger header blocks are answered 431
HARD_HEADER_BYTES = 64 * 1024  # beyond this, Tornado drops the connection without reading on
SERVER_OPTIONS: Dict[str, Any] = {
    "max_header_size": HARD_HEADER_BYTES, "max_body_size": 64 * 1024,
    "idle_connection_timeout": 60, "body_timeout": 10,  # the idle timeout also bounds a stalled header
}
BEAT_MS = 500  # the event loop's heartbeat, and a look at the parent: the only wake-up while idle
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}  # every answer's, no Server
TEXT_TYPE = "text/plain; charset=utf-8"  # a /logs answer's (the bytes are the container's own)
MAX_FOLLOWS = 4  # GET /logs?follow=1 at once; more are answered 503
MAX_LOG_READERS = 8  # GET /logs at once, follows included
TAIL_TIMEOUT = 60.0  # seconds a /logs answer without follow may take (a client that never reads)


def header_bytes(uri: Optional[str], headers: tornado.httputil.HTTPHeaders) -> int:
    """The size of a request's head, as the 431 limit counts it."""
    return len(uri or "") + sum(len(k) + len(v) + 4 for k, v in headers.get_all())


def to_json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def parse_time(value: Optional[str]) -> Optional[float]:
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class Documents:
    """One task's decoded shared-memory documents, cached by their slot's sequence number, and the
    latest sample rendered for Prometheus (once per sample and format, whatever the requests)."""

    def __init__(self, slots: TaskSlots, reports: Optional[Dict[str, Slot]] = None) -> None:
        self.slots = slots
        self.reports = reports or {}  # each horizon process's own figures (supervisor/selfstats.py)
        self._cache: Dict[str, Tuple[int, Optional[Dict[str, Any]], Optional[bytes]]] = {}
        self._exposition = Exposition(self.labels())
        self._labelled_by = -1  # the info slot's seq the labels come from
        self._grouped = -1  # the metrics slot's seq the process groups have taken
        self._rendered: Dict[str, Tuple[int, List[Family], bytes]] = {}

    def supervisor_section(self) -> Dict[str, Any]:
        """horizon's own figures, as of this sample: its processes, frames, etcd requests, restarts."""
        reports = read_reports(self.reports)
        reports["endpoint"] = usage_document()
        parent, publisher = reports.get("supervisor", {}), reports.get("publisher", {})
        return {
            "processes": {name: {key: report.get(key) for key in ("pid", "cpu_seconds", "rss_bytes")}
                          for name, report in reports.items()},
            "frames": {"relayed": parent.get("frames_relayed", 0), "dropped": parent.get("frames_malformed", 0),
                       "coalesced": sum(report.get("frames_coalesced", 0) for report in reports.values())},
            "etcd": {**publisher.get("etcd", {}), **publisher.get("records", {}).get(self.slots.key.path, {})},
            "restarts": parent.get("restarts", {}),
        }

    def labels(self) -> Dict[str, str]:
        info = self.get("info")[0] or {}
        key = self.slots.key
        return {"service": key.service, "task": key.name, "host": str(info.get("host") or ""),
                "image": str(info.get("image") or "")}

    def exposition(self, fmt: str) -> Optional[bytes]:
        """The latest sample in Prometheus' ``fmt`` (TEXT or OPENMETRICS); None before the first one."""
        rendered = self.rendered(fmt)
        return rendered[2] if rendered is not None else None

    def families(self, fmt: str) -> List[Family]:
        """The latest sample's Prometheus families (for a host's exposition of every task); [] before one."""
        rendered = self.rendered(fmt)
        return rendered[1] if rendered is not None else []

    def rendered(self, fmt: str) -> Optional[Tuple[int, List[Family], bytes]]:
        """(seq, families, text) of the latest sample in ``fmt``, rendered once per sample and format."""
        seq = self.slots.metrics.seq
        cached = self._rendered.get(fmt)
        if cached is not None and cached[0] == seq:
            return cached
        document = self.get("metrics")[0]
        if document is None:
            return None
        if self.slots.info.seq != self._labelled_by:
            self._labelled_by = self.slots.info.seq
            self._exposition.relabel(self.labels())
        if self._grouped != seq:
            self._grouped = seq
            self._exposition.update(document)
        families = self._exposition.families(document, fmt == OPENMETRICS)
        self._rendered[fmt] = (seq, families, join([families], fmt == OPENMETRICS))
        return self._rendered[fmt]

    def get(self, name: str) -> Tuple[Optional[Dict[str, Any]], Optional[bytes]]:
        """(document, its JSON) or (None, None) when the slot is empty."""
        slot: Slot = self.slots.slots[name]
        seq = slot.seq
        cached = self._cache.get(name)
        if cached is None or cached[0] != seq:
            frame = slot.read_frame()
            document = frame.body if frame else None
            if document is not None and name == "metrics" and self.reports:
                document = dict(document, supervisor=self.supervisor_section())
            cached = (seq, document, to_json(document) if document is not None else None)
            self._cache[name] = cached
        return cached[1], cached[2]


class JsonHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")

    def initialize(self, documents: Documents, endpoint: Dict[str, Any], interval: float) -> None:
        self.documents = documents
        self.endpoint = endpoint
        self.interval = interval

    def set_default_headers(self) -> None:
        for name, value in JSON_HEADERS.items():
            self.set_header(name, value)
        self.clear_header("Server")

    def prepare(self) -> None:
        if header_bytes(self.request.uri, self.request.headers) > MAX_HEADER_BYTES:
            raise tornado.web.HTTPError(431, reason="Request Header Fields Too Large")

    def compute_etag(self) -> Optional[str]:
        return None  # documents change every sample: a 304 would only be a response without JSON

    def send(self, body: bytes, status: int = 200) -> None:
        self.set_status(status)
        self.finish(body)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", "GET, HEAD")
        self.finish(to_json({"error": self._reason, "status": status_code}))

    def head(self, *args: Any) -> Optional[Awaitable[None]]:
        return self.get(*args)

    def refuse(self, status: int, message: str) -> None:
        """An error answer from a handler that goes on: the JSON ``{"error","status"}`` every error is."""
        self.set_status(status)
        self.finish(to_json({"error": message, "status": status}))


def status_document(documents: Documents) -> Dict[str, Any]:
    """GET /status: the task's state, how it ended, and for how long it ran."""
    document = documents.get("status")[0]
    status = Status.from_dict(document) if document else Status(TaskState.STARTING, updated_at="")
    started = parse_time(status.started_at)
    ended = parse_time(status.finished_at) or time.time()
    return {
        "state": status.state.value,
        "running": status.running,
        "exit_code": status.exit_code,
        "reason": status.reason,
        "started_at": status.started_at,
        "finished_at": status.finished_at,
        "restarts": status.restarts,
        "uptime_s": round(ended - started, 3) if started else 0.0,
    }


def health_document(documents: Documents, interval: float) -> Dict[str, Any]:
    """GET /health: healthy while the task runs and its latest sample is fresh, else the reason."""
    status = status_document(documents)
    metrics = documents.get("metrics")[0]
    age = time.time() - metrics["timestamp"] if metrics else None
    fresh = age is not None and age <= fresh_within(interval)
    healthy = status["running"] and fresh
    reason = None if healthy else (
        f"the task is {status['state']}" if not status["running"]
        else "no sample yet" if age is None else f"no sample for {age:.1f} s"
    )
    return {"healthy": healthy, "state": status["state"], "reason": reason,
            "sample_age_s": round(age, 3) if age is not None else None}


def metrics_answer(documents: Documents, accept: Optional[str]) -> Tuple[int, bytes, str]:
    """(status, body, content type) of GET /metrics, for the handler and for FastMetrics alike: JSON,
    or the Prometheus format ``accept`` asks for."""
    fmt = wanted_format(accept)
    body = documents.get("metrics")[1] if fmt is None else documents.exposition(fmt)
    if body is None:
        return 503, to_json({"error": "no sample yet", "status": 503}), JSON_HEADERS["Content-Type"]
    return 200, body, fmt or JSON_HEADERS["Content-Type"]


class MetricsHandler(JsonHandler):
    def get(self) -> None:
        status, body, content_type = metrics_answer(self.documents, self.request.headers.get("Accept"))
        self.set_header("Content-Type", content_type)
        self.send(body, status)


class HistoryHandler(JsonHandler):
    """GET /metrics/history?since=SEQ: the samples kept since SEQ (default: all), oldest first."""

    def get(self) -> None:
        raw = self.get_query_argument("since", "0")
        if not raw.isdigit() or len(raw) > 18:
            return self.refuse(400, f"since={raw[:20]!r}: give the seq of the last sample you have, e.g. since=120")
        self.send(to_json({"interval": self.interval, "samples": self.documents.slots.history.since(int(raw))}))


class StatusHandler(JsonHandler):
    def get(self) -> None:
        self.send(to_json(status_document(self.documents)))


class InfoHandler(JsonHandler):
    def get(self) -> None:
        self.send(to_json({"info": self.documents.get("info")[0], "endpoint": self.endpoint}))


class HealthHandler(JsonHandler):
    def get(self) -> None:
        body = health_document(self.documents, self.interval)
        self.send(to_json(body), 200 if body["healthy"] else 503)


class LogReaders:
    """The Docker engine, as the endpoint asks it, and who reads logs from it now."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.follows = 0
        self.readers = 0

    def admit(self, follow: bool) -> Optional[str]:
        """Take a reader's place; the reason when there is none (503)."""
        if follow and self.follows >= MAX_FOLLOWS:
            return f"{MAX_FOLLOWS} clients follow the logs already; try again later"
        if self.readers >= MAX_LOG_READERS:
            return f"{MAX_LOG_READERS} clients read the logs already; try again later"
        self.readers += 1
        self.follows += follow
        return None

    def leave(self, follow: bool) -> None:
        self.readers -= 1
        self.follows -= follow


class LogsHandler(JsonHandler):
    """GET /logs: the container's output as Docker keeps it, passed on as it comes from the engine."""

    def initialize(self, documents: Documents, endpoint: Dict[str, Any], interval: float,  # type: ignore[override]
                   logs: LogReaders) -> None:
        super().initialize(documents, endpoint, interval)
        self.logs = logs
        self.call: Optional[Call] = None
        self.demux: Optional[Demux] = None
        self.sent = False  # a piece of the answer went out
        self.gone = False  # the client went away

    async def get(self) -> None:
        try:
            tail = parse_tail(self.get_query_argument("tail", None))
            follow = parse_follow(self.get_query_argument("follow", None))
        except BadQuery as exc:
            return self.refuse(400, str(exc))
        refusal = self.logs.admit(follow)
        if refusal is not None:
            self.set_header("Retry-After", "1")
            return self.refuse(503, refusal)
        try:
            await self.send_logs(tail, follow)
        finally:
            self.logs.leave(follow)

    async def send_logs(self, tail: int, follow: bool) -> None:
        info = self.documents.get("info")[0]
        container = str(info.get("container_id") or "") if info else ""
        if not container:
            return self.refuse(404, "the task has no container yet")
        try:
            attrs = await self.logs.engine.inspect(container)
            if self.gone:
                return
            if not attrs.get("Config", {}).get("Tty"):
                self.demux = Demux()  # a container without a TTY: Docker multiplexes stdout and stderr
            if self.request.method == "HEAD":
                self.set_header("Content-Type", TEXT_TYPE)
                self.finish()
                return
            self.call = self.logs.engine.logs(container, tail, follow, self.forward, None if follow else TAIL_TIMEOUT)
            await self.call.run()
        except EngineError as exc:
            return self.engine_refused(container, exc)
        if not self.gone:
            self.set_header("Content-Type", TEXT_TYPE)
            self.finish()

    def engine_refused(self, container: str, exc: EngineError) -> None:
        if self.gone:
            return
        if self.sent:  # the answer is under way: cut it short, so the client sees it incomplete
            log.warning("reading the container's logs failed midway: %s", exc)
            connection = self.request.connection
            if isinstance(connection, HTTP1Connection):
                connection.close()
            return
        if exc.status == 404:
            self.refuse(404, f"the task's container {container[:12]} is gone")
        else:
            self.refuse(503 if exc.status is None else 502, str(exc))

    def forward(self, data: bytes) -> Optional[Awaitable[None]]:
        """A piece of the engine's stream, passed on to the client; the engine is read on once it is."""
        if self.demux is not None:
            data = self.demux.feed(data)
        if not data or self.gone:
            return None
        if not self.sent:
            self.set_header("Content-Type", TEXT_TYPE)
            self.sent = True
        self.write(data)
        return self.flushed()

    async def flushed(self) -> None:
        try:
            await self.flush()
        except StreamClosedError:
            self.on_connection_close()

    def on_connection_close(self) -> None:
        self.gone = True
        if self.call is not None:
            self.call.cancel()  # stop reading the engine at once


class PageHandler(JsonHandler):
    """GET /: the live page (workers.page)."""

    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.send(PAGE)


class NotFoundHandler(JsonHandler):
    def prepare(self) -> None:
        super().prepare()
        raise tornado.web.HTTPError(404)


def make_app(slots: TaskSlots, endpoint: Dict[str, Any], interval: float,
             engine: Optional[Engine] = None, reports: Optional[Dict[str, Slot]] = None,
             prefix: str = "") -> tornado.web.Application:
    """The endpoint's routes; ``engine`` (for /logs) is the one DOCKER_HOST names unless given;
    ``reports`` are the processes' own (the "supervisor" section of /metrics). On a host tree's endpoint
    a task's routes are under its ``prefix``, ``/tasks/SERVICE/TASK`` (its page at ``prefix/``)."""
    shared = {"documents": Documents(slots, reports), "endpoint": endpoint, "interval": interval}
    routes: List[Any] = [
        (rf"{prefix}/", PageHandler, shared),
        (rf"{prefix}/metrics", MetricsHandler, shared),
        (rf"{prefix}/metrics/history", HistoryHandler, shared),
        (rf"{prefix}/status", StatusHandler, shared),
        (rf"{prefix}/info", InfoHandler, shared),
        (rf"{prefix}/health", HealthHandler, shared),
        (rf"{prefix}/logs", LogsHandler, dict(shared, logs=LogReaders(engine or Engine()))),
    ]
    if prefix:  # the page's links are relative: it must be served at prefix/
        routes.append((prefix, tornado.web.RedirectHandler, {"url": f"{prefix}/"}))
    return tornado.web.Application(
        routes, default_handler_class=NotFoundHandler, default_handler_args=shared, compress_response=False,
        documents=shared["documents"],
    )


class FastMetrics(tornado.httputil.HTTPServerConnectionDelegate):
    """``GET /metrics`` without a RequestHandler: the hot path, polled by scrapers, is answered straight
    from the cached JSON (about twice the bare handler's requests/s); anything else goes to the app."""

    def __init__(self, app: tornado.web.Application) -> None:
        self.app = app
        self.documents: Optional[Documents] = app.settings.get("documents")  # the handlers' own cache

    def route(self, path: str) -> Tuple[tornado.web.Application, Optional[Documents]]:
        """The application a request for ``path`` goes to, and the documents when it is a fast /metrics."""
        return self.app, (self.documents if path == "/metrics" else None)

    def on_frame(self, frame: Frame) -> None:
        """A frame from the parent: a task tree's endpoint is told nothing."""

    def start_request(self, server_conn: object, request_conn: Any) -> tornado.httputil.HTTPMessageDelegate:
        return _Dispatch(self, server_conn, request_conn)


class _Dispatch(tornado.httputil.HTTPMessageDelegate):
    def __init__(self, fast: FastMetrics, server_conn: object, request_conn: Any) -> None:
        self.fast, self.server_conn, self.conn = fast, server_conn, request_conn
        self.inner: Optional[tornado.httputil.HTTPMessageDelegate] = None
        self.head = False
        self.accept: Optional[str] = None
        self.documents: Optional[Documents] = None

    def headers_received(self, start_line: Any, headers: tornado.httputil.HTTPHeaders) -> Any:
        app, documents = self.fast.route(start_line.path)
        fast = documents is not None and start_line.method in ("GET", "HEAD")
        if fast and header_bytes(start_line.path, headers) <= MAX_HEADER_BYTES:
            self.head = start_line.method == "HEAD"
            self.accept = headers.get("Accept")
            self.documents = documents
            return None
        self.inner = app.start_request(self.server_conn, self.conn)
        return self.inner.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Any:
        return self.inner.data_received(chunk) if self.inner is not None else None

    def finish(self) -> None:
        if self.inner is not None:
            self.inner.finish()
            return
        assert self.documents is not None  # set by headers_received whenever no inner delegate is
        status, body, content_type = metrics_answer(self.documents, self.accept)
        headers = tornado.httputil.HTTPHeaders(JSON_HEADERS, **{"Content-Type": content_type})
        headers["Content-Length"] = str(len(body))
        headers["Date"] = tornado.httputil.format_timestamp(time.time())  # as RequestHandler sends it
        start = tornado.httputil.ResponseStartLine("HTTP/1.1", status, responses[status])
        self.conn.write_headers(start, headers, b"" if self.head else body)
        self.conn.finish()

    def on_connection_close(self) -> None:
        if self.inner is not None:
            self.inner.on_connection_close()


def run(start: WorkerStart, shm: SharedMemory, key: TaskKey, sockets: List[socket.socket],
        endpoint: Dict[str, Any], interval: float) -> None:
    """Entry point of a task tree's endpoint worker process."""
    serve(start, sockets, lambda: FastMetrics(make_app(shm.tasks[key], endpoint, interval, reports=shm.reports)))


def serve(start: WorkerStart, sockets: List[socket.socket], make: Callable[[], "FastMetrics"]) -> None:
    """Serve what ``make`` makes (once the worker is set up) on the parent's sockets; the IOLoop is made
    here, after the fork. The parent's frames go to its ``on_frame``; EOF on the inbox means the parent
    closed it (time to go) or died."""
    worker = become_worker(start, period=BEAT_MS / 1000)
    worker.outbox.close()  # the endpoint says nothing to the parent
    # No line per request: a client's bad request is its own business, 503 is an answer, and a handler
    # that fails is logged with its traceback by tornado.application.
    logging.getLogger("tornado.access").setLevel(logging.CRITICAL)
    logging.getLogger("tornado.general").setLevel(max(start.log_level, logging.WARNING))
    delegate = make()
    server = tornado.httpserver.HTTPServer(delegate, **SERVER_OPTIONS)
    server.add_sockets(sockets)
    loop = tornado.ioloop.IOLoop.current()

    def check_parent(*_: Any) -> None:
        for frame in worker.inbox.read():
            delegate.on_frame(frame)
        if worker.inbox.eof or worker.watch.gone():
            loop.stop()

    def beat() -> None:
        worker.pulse.beat()  # runs only when the event loop turns: a stuck loop misses it
        check_parent()

    loop.add_handler(worker.inbox.fd, check_parent, tornado.ioloop.IOLoop.READ)
    tornado.ioloop.PeriodicCallback(beat, BEAT_MS).start()
    loop.start()
