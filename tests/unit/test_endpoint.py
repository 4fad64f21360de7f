"""The endpoint under bad requests: never a 5xx, JSON errors, nothing changed by any request, and no
client (stalled, oversized or malformed) keeps it from answering the next one. Real Tornado server on
loopback over a real shared-memory ``TaskSlots``; requests are raw bytes so the wire is what is tested."""

from __future__ import annotations

import json
import socket
import time
from datetime import datetime, timezone
from typing import Dict, List, NamedTuple, Optional, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tornado import gen
from tornado.iostream import IOStream, StreamClosedError
from tornado.testing import AsyncHTTPTestCase, gen_test

from workers import endpoint
from workers.exposition import OPENMETRICS, TEXT
from supervisor.shm import TaskSlots
from tests.unit.memory import TASK, task_slots

ENDPOINT = {"host": "127.0.0.1", "port": 1, "url": "http://127.0.0.1:1"}
PATHS = ["/metrics", "/status", "/info", "/health"]
ERROR_METHODS = ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "PROPFIND", "FOO", "get"]
BAD_REQUESTS = {
    "not-http": b"GARBAGE\r\n\r\n",
    "http-2": b"GET /status HTTP/2.0\r\n\r\n",
    "no-version": b"GET /status\r\n\r\n",
    "header-without-colon": b"GET /status HTTP/1.0\r\nno colon here\r\n\r\n",
    "tls-client-hello": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
    "bad-content-length": b"GET /status HTTP/1.0\r\nContent-Length: -1\r\n\r\n",
    "body-too-large": b"POST /status HTTP/1.0\r\nContent-Length: 99999999\r\n\r\n",
    "bad-chunk": b"POST /status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
}


class Response(NamedTuple):
    status: Optional[int]  # None: the connection was closed without an answer
    headers: Dict[str, str]
    body: bytes

    def document(self) -> dict:
        assert self.headers.get("content-type") == "application/json", self
        return json.loads(self.body)


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


def fill(latest: TaskSlots) -> None:
    now = time.time()
    latest.info.write_frame("info", TASK, {"service": "web", "task": "t1", "image": "busybox", "tags": []})
    latest.status.write_frame("status", TASK, {"state": "running", "exit_code": None, "started_at": iso(now - 5)})
    latest.metrics.write_frame("metrics", TASK, {
        "service": "web", "task": "t1", "seq": 1, "timestamp": now, "interval": 60.0,
        "container": {"cpu_percent": 1.0, "memory_bytes": 1 << 20}, "processes": [{"pid": 1, "name": "sh"}],
    })


def request(method: str, path: str, headers: List[Tuple[str, str]] = ()) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", "Connection: close", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse(raw: bytes) -> Response:
    if not raw:
        return Response(None, {}, b"")
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(status_line.split()[1]), headers, body)


class EndpointCase(AsyncHTTPTestCase):
    def setUp(self) -> None:
        self.latest = task_slots()
        fill(self.latest)
        super().setUp()

    def get_app(self):
        return endpoint.FastMetrics(endpoint.make_app(self.latest, ENDPOINT, 60.0))  # what the worker serves

    def get_httpserver_options(self):
        return endpoint.SERVER_OPTIONS  # the worker's own limits

    def snapshot(self) -> Dict[str, Tuple[int, Optional[bytes]]]:
        return {name: slot.read() for name, slot in self.latest.slots.items()}

    async def connect(self) -> IOStream:
        stream = IOStream(socket.socket())
        await stream.connect(("127.0.0.1", self.get_http_port()))
        return stream

    async def exchange_async(self, data: bytes) -> Response:
        stream = await self.connect()
        try:
            await stream.write(data)
            raw = await gen.with_timeout(self.io_loop.time() + 5, stream.read_until_close())
        except StreamClosedError:
            raw = b""  # reset by the server
        finally:
            stream.close()
        return parse(raw)

    def exchange(self, data: bytes) -> Response:
        return self.io_loop.run_sync(lambda: self.exchange_async(data))

    def assert_answers(self) -> None:
        """The server still answers a plain request."""
        response = self.exchange(request("GET", "/info"))
        assert response.status == 200 and response.document()["endpoint"] == ENDPOINT

    def assert_json_error(self, response: Response, status: int, head: bool = False) -> None:
        assert response.status == status, response
        assert response.headers["content-type"] == "application/json"
        if head:
            assert response.body == b"" and int(response.headers["content-length"]) > 0
        else:
            assert response.document() == {"error": response.document()["error"], "status": status}

    # -- the documents -----------------------------------------------------------------------

    def test_every_path_answers_json(self) -> None:
        before = self.snapshot()
        documents = {path: self.exchange(request("GET", path)) for path in PATHS}
        assert all(r.status == 200 and r.headers["cache-control"] == "no-store" for r in documents.values())
        assert documents["/metrics"].document()["container"]["memory_bytes"] == 1 << 20
        assert documents["/status"].document()["state"] == "running"
        assert documents["/status"].document()["uptime_s"] >= 5
        assert documents["/info"].document() == {"info": self.latest.info.read_frame().body, "endpoint": ENDPOINT}
        assert documents["/health"].document()["healthy"] is True
        assert "server" not in documents["/info"].headers and "etag" not in documents["/info"].headers
        assert self.snapshot() == before  # no GET changes anything

    def test_head_is_get_without_a_body(self) -> None:
        for path in PATHS + ["/nowhere"]:
            get, head = self.exchange(request("GET", path)), self.exchange(request("HEAD", path))
            assert head.status == get.status and head.body == b""
            assert head.headers["content-type"] == "application/json"
            if path in ("/metrics", "/info", "/nowhere"):  # the others hold times that move
                assert int(head.headers["content-length"]) == len(get.body)

    def test_query_strings_are_ignored(self) -> None:
        plain = self.exchange(request("GET", "/info")).body
        for query in ("?x=1", "?%zz=%ff&&a", "?", "?" + "q" * 4000, "?a=1#frag"):
            response = self.exchange(request("GET", "/info" + query))
            assert (response.status, response.body) == (200, plain), query

    # -- bad requests ------------------------------------------------------------------------

    def test_unknown_paths_are_404_json(self) -> None:
        before = self.snapshot()
        for path in ["/metrics/", "//metrics", "/METRICS", "/metrics/../status", "/%zz", "/%00", "/\xff\xfe",
                     "/" + "a" * 8000, "*", "http://other/metrics", "/info;x"]:
            self.assert_json_error(self.exchange(request("GET", path)), 404)
        self.assert_json_error(self.exchange(request("HEAD", "/nope")), 404, head=True)
        assert self.snapshot() == before

    def test_other_methods_are_405_with_allow(self) -> None:
        before = self.snapshot()
        for method in ERROR_METHODS:
            for path in ("/metrics", "/status"):
                response = self.exchange(request(method, path))
                self.assert_json_error(response, 405)
                assert response.headers["allow"] == "GET, HEAD"
        body = b"x" * 1000
        response = self.exchange(request("POST", "/status", [("Content-Length", str(len(body)))])[:-2] + b"\r\n" + body)
        self.assert_json_error(response, 405)
        assert self.snapshot() == before

    def test_oversized_headers_are_431_and_the_next_request_is_served(self) -> None:
        cases = [[("X-Big", "a" * (endpoint.MAX_HEADER_BYTES + 1))], [(f"X-{i}", "v" * 30) for i in range(600)]]
        for headers in cases:
            self.assert_json_error(self.exchange(request("GET", "/metrics", headers)), 431)
            self.assert_json_error(self.exchange(request("HEAD", "/metrics", headers)), 431, head=True)
            self.assert_answers()
        self.assert_json_error(self.exchange(request("GET", "/" + "p" * endpoint.MAX_HEADER_BYTES)), 431)

    def test_a_header_past_the_hard_limit_is_dropped_unread(self) -> None:
        response = self.exchange(request("GET", "/metrics", [("X-Huge", "a" * (4 * endpoint.HARD_HEADER_BYTES))]))
        assert response.status in (None, 400, 431), response
        self.assert_answers()

    def test_malformed_requests_are_400_and_the_next_request_is_served(self) -> None:
        for name, data in BAD_REQUESTS.items():
            response = self.exchange(data)
            assert response.status == 400, (name, response)
            self.assert_answers()

    @gen_test(timeout=20)
    async def test_stalled_clients_do_not_block_others(self) -> None:
        stalled = []
        for n in range(50):
            stream = await self.connect()
            await stream.write(b"GET /status HTTP/1.1\r\nHo" if n % 2 else b"GE")  # half a request, then silence
            stalled.append(stream)
        try:
            for path in PATHS:  # answered, not held up until the stalled ones time out (60 s)
                assert (await self.exchange_async(request("GET", path))).status == 200
            await stalled[1].write(b"st: x\r\nConnection: close\r\n\r\n")  # a stalled client may still finish
            late = parse(await gen.with_timeout(self.io_loop.time() + 5, stalled[1].read_until_close()))
            assert late.status == 200 and late.document()["state"] == "running"
        finally:
            for stream in stalled:
                stream.close()

    @gen_test(timeout=20)
    async def test_a_client_that_never_reads_does_not_block_others(self) -> None:
        greedy = await self.connect()
        try:
            await greedy.write(request("GET", "/metrics").replace(b"close", b"keep-alive") * 2000)
            for path in PATHS:
                assert (await self.exchange_async(request("GET", path))).status == 200
        finally:
            greedy.close()

    # -- fuzzing -----------------------------------------------------------------------------

    TOKEN = st.text(alphabet="!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
                    min_size=1, max_size=12)
    VISIBLE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=60)
    FRAMING = {"connection", "content-length", "transfer-encoding", "expect", "keep-alive", "host"}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        method=st.sampled_from(["GET", "HEAD", *ERROR_METHODS]) | TOKEN,
        path=st.sampled_from(PATHS) | st.builds(lambda p: "/" + p, VISIBLE),
        query=st.none() | VISIBLE,
        headers=st.lists(st.tuples(TOKEN.filter(lambda n: n.lower() not in EndpointCase.FRAMING), VISIBLE), max_size=6),
    )
    def test_fuzzed_requests_never_get_a_5xx(self, method, path, query, headers) -> None:
        before = self.snapshot()
        target = path if query is None else f"{path}?{query}"
        response = self.exchange(request(method, target, headers))
        assert response.status is not None and response.status < 500, response
        if response.headers and response.status >= 400:  # every error past Tornado's own parser is JSON
            assert response.headers["content-type"] == "application/json"
        elif response.headers:  # JSON, but the page and what Prometheus' Accept asks for
            assert response.headers["content-type"] in {"application/json", "text/html; charset=utf-8", TEXT, OPENMETRICS}
        if response.status >= 400 and response.headers and method != "HEAD":
            assert set(response.document()) == {"error", "status"}
            assert response.document()["status"] == response.status
        if response.status == 405:
            assert response.headers["allow"] == "GET, HEAD"
        assert self.snapshot() == before

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.binary(max_size=300))
    def test_arbitrary_bytes_never_get_a_5xx(self, data: bytes) -> None:
        response = self.exchange(data + b"\r\n\r\n")
        assert response.status is None or response.status < 500, response
        self.assert_answers()


class EmptyEndpointCase(AsyncHTTPTestCase):
    """Before the first sample: 503 where there is nothing to show yet, JSON all the same."""

    def get_app(self):
        return endpoint.FastMetrics(endpoint.make_app(task_slots(), ENDPOINT, 1.0))

    def test_metrics_and_health_are_503_before_the_first_sample(self) -> None:
        metrics = self.fetch("/metrics")
        assert metrics.code == 503 and json.loads(metrics.body) == {"error": "no sample yet", "status": 503}
        health = self.fetch("/health")
        assert health.code == 503 and json.loads(health.body)["healthy"] is False
        assert json.loads(health.body)["reason"] == "the task is starting"
        status = self.fetch("/status")
        assert status.code == 200 and json.loads(status.body)["state"] == "starting"
        assert all(r.headers["Content-Type"] == "application/json" for r in (metrics, health, status))
