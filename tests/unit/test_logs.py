"""The container's output: the words of GET /logs (tail, follow), Docker's multiplexed stream taken
apart in pieces of any size, the last lines cut to size for the final record; GET /logs served by the
real endpoint app from a fake Docker engine on a unix socket (tail, follow until the container stops, a
client gone stops the engine's stream at once, the readers' limit, the engine absent); and the container
worker's final status carrying the ended container's last lines, read before the container is removed.
"""

from __future__ import annotations

import asyncio
import json
import struct
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import docker.errors
import pytest
import tornado.httpserver
import tornado.locks
import tornado.netutil
import tornado.web
from tornado import gen
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.testing import AsyncHTTPTestCase, gen_test

from supervisor.state import Ended, Status, TaskState
from tests.unit.memory import TASK, task_slots
from tests.unit.test_container_control import FakeContainer, worker  # noqa: F401 - the fixture
from tests.unit.test_endpoint import ENDPOINT, Response, fill, parse, request
from workers import endpoint
from workers.container import LAST_LOGS_TIMEOUT
from workers.engine_api import Address, Engine, EngineError
from workers.loglines import (DEFAULT_TAIL, LAST_LOG_WIDTH, LAST_LOGS, LAST_LOGS_BUDGET, MAX_TAIL, BadQuery, Demux,
                              last_lines, parse_follow, parse_tail)

CONTAINER = "c0ffee"


# -- the words of the query --------------------------------------------------------------------------

@pytest.mark.parametrize("value, lines", [(None, DEFAULT_TAIL), ("0", 0), ("7", 7), ("007", 7), (str(MAX_TAIL), MAX_TAIL)])
def test_tail_is_a_count_of_lines(value: Optional[str], lines: int) -> None:
    assert parse_tail(value) == lines


@pytest.mark.parametrize("value", ["", "-1", str(MAX_TAIL + 1), "1000000", "abc", "1.5", " 5", "+5", "1e3", "all",
                                   "\uff19", "5\n"])
def test_a_bad_tail_has_a_one_line_reason(value: str) -> None:
    with pytest.raises(BadQuery) as caught:
        parse_tail(value)
    assert str(caught.value) == f"tail must be a whole number of lines from 0 to {MAX_TAIL}"


def test_follow_is_yes_or_no() -> None:
    assert [parse_follow(v) for v in (None, "", "0", "false", "no", "1", "true", "YES")] == [False] * 5 + [True] * 3
    with pytest.raises(BadQuery, match="^follow must be 1 or 0"):
        parse_follow("2")


# -- the last lines, cut to size ---------------------------------------------------------------------

def test_last_lines_split_the_output_into_its_last_lines() -> None:
    assert last_lines(b"") == []
    assert last_lines(b"one\ntwo\n") == ["one", "two"]
    assert last_lines(b"one\r\ntwo") == ["one", "two"]  # CRLF, and a last line without its newline
    assert last_lines(b"\n\nx\n") == ["", "", "x"]  # empty lines are lines
    numbered = b"".join(b"line %d\n" % i for i in range(1, 81))
    assert last_lines(numbered) == [f"line {i}" for i in range(81 - LAST_LOGS, 81)]
    assert last_lines(numbered, count=3) == ["line 78", "line 79", "line 80"]
    assert last_lines(numbered, count=0) == []


def test_last_lines_are_cut_and_never_fail_on_bytes() -> None:
    lines = last_lines(b"x" * 700 + b"\n" + "é".encode() * 600 + b"\n\xff\xfeok\n")
    assert lines == ["x" * LAST_LOG_WIDTH, "é" * LAST_LOG_WIDTH, "\ufffd\ufffdok"]


def test_last_lines_fit_their_budget_whatever_was_printed() -> None:
    wide = ("\U0001f600" * 1000 + "\n").encode() * 60  # 12 bytes of JSON a character
    lines = last_lines(wide)
    assert 0 < len(lines) < LAST_LOGS and all(len(line) == LAST_LOG_WIDTH for line in lines)
    assert len(json.dumps(lines)) <= LAST_LOGS_BUDGET
    ascii_lines = last_lines((b"a" * 600 + b"\n") * 60)  # plain text: all 50 lines fit
    assert len(ascii_lines) == LAST_LOGS and len(json.dumps(ascii_lines)) <= LAST_LOGS_BUDGET


# -- Docker's multiplexed stream ---------------------------------------------------------------------

def frame(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxI", stream, len(payload)) + payload


def test_the_demux_takes_frames_apart_in_pieces_of_any_size() -> None:
    frames = frame(1, b"line 1\n") + frame(2, b"err 1\n") + frame(1, b"") + frame(1, b"a\nb\n" * 1000)
    expected = b"line 1\nerr 1\n" + b"a\nb\n" * 1000
    for size in (1, 3, 7, 8, 9, 64, len(frames)):
        demux = Demux()
        out = b"".join(demux.feed(frames[at:at + size]) for at in range(0, len(frames), size))
        assert out == expected, size


# -- where the engine is -----------------------------------------------------------------------------

def test_the_engine_is_found_as_the_sdk_finds_it(tmp_path: Path) -> None:
    assert str(Address({})) == "unix:///var/run/docker.sock"
    assert str(Address({"DOCKER_HOST": "unix:///run/x.sock"})) == "unix:///run/x.sock"
    assert str(Address({"DOCKER_HOST": "tcp://10.0.0.1:2375"})) == "tcp://10.0.0.1:2375"
    assert str(Address({"DOCKER_HOST": "tcp://h", "DOCKER_CERT_PATH": str(tmp_path)})) == "https://h:2376"
    assert Address({"DOCKER_HOST": "tcp://h:1", "DOCKER_CERT_PATH": str(tmp_path)}).tls is not None
    engine = Engine({"DOCKER_HOST": "ssh://me@far"})
    with pytest.raises(EngineError, match="DOCKER_HOST=ssh://me@far is not an address"):
        engine.call("/_ping")


# -- GET /logs from a fake engine --------------------------------------------------------------------

class FakeEngine:
    """A container's output as the engine keeps it, and who reads it."""

    def __init__(self) -> None:
        self.lines: List[Tuple[int, bytes]] = [(1 + i % 2, b"%s %d\n" % (b"err" if i % 2 else b"line", i))
                                               for i in range(1, 301)]
        self.stopped = False
        self.changed = tornado.locks.Condition()
        self.readers = 0  # log streams open now
        self.queries: List[Dict[str, str]] = []

    def emit(self, text: bytes) -> None:
        self.lines.append((1, text))
        self.changed.notify_all()

    def stop(self) -> None:
        self.stopped = True
        self.changed.notify_all()


class FakeInspect(tornado.web.RequestHandler):
    def initialize(self, engine: FakeEngine) -> None:
        self.engine = engine

    def get(self, container: str) -> None:
        if container != CONTAINER:
            self.set_status(404)
            return self.finish({"message": f"No such container: {container}"})
        self.finish({"Id": CONTAINER, "Config": {"Tty": False}})


class FakeLogs(FakeInspect):
    gone = False

    async def get(self, container: str) -> None:
        if container != CONTAINER:
            return super().get(container)
        query = {name: self.get_argument(name) for name in ("stdout", "stderr", "tail", "follow")}
        self.engine.queries.append(query)
        tail, follow = int(query["tail"]), query["follow"] == "1"
        self.engine.readers += 1
        try:
            at = max(0, len(self.engine.lines) - tail)
            while not self.gone:
                for stream, text in self.engine.lines[at:]:
                    self.write(frame(stream, text))
                at = len(self.engine.lines)
                await self.flush()
                if not follow or self.engine.stopped:
                    break
                await self.engine.changed.wait()
        except StreamClosedError:
            pass
        finally:
            self.engine.readers -= 1
        if not self.gone:
            self.finish()

    def on_connection_close(self) -> None:
        self.gone = True
        self.engine.changed.notify_all()


class LogsCase(AsyncHTTPTestCase):
    """The endpoint's app, its engine the fake one on a unix socket, served on the same event loop."""

    def setUp(self) -> None:
        self.folder = tempfile.TemporaryDirectory()
        self.engine = Engine({"DOCKER_HOST": f"unix://{self.folder.name}/engine.sock"})
        super().setUp()
        self.fake = FakeEngine()
        routes = [(r"/containers/([^/]+)/json", FakeInspect, {"engine": self.fake}),
                  (r"/containers/([^/]+)/logs", FakeLogs, {"engine": self.fake})]
        self.engine_server = tornado.httpserver.HTTPServer(tornado.web.Application(routes))
        self.engine_server.add_socket(tornado.netutil.bind_unix_socket(f"{self.folder.name}/engine.sock"))

    def tearDown(self) -> None:
        self.engine_server.stop()
        super().tearDown()
        self.folder.cleanup()

    def get_app(self) -> Any:
        self.latest = task_slots()
        fill(self.latest)
        self.set_container(CONTAINER)
        return endpoint.FastMetrics(endpoint.make_app(self.latest, ENDPOINT, 60.0, self.engine))

    def set_container(self, container: Optional[str]) -> None:
        body: Dict[str, Any] = {"service": "web", "task": "t1", "image": "busybox", "tags": []}
        if container:
            body["container_id"] = container
        self.latest.info.write_frame("info", TASK, body)

    async def open(self, path: str, method: str = "GET", version: str = "HTTP/1.0") -> IOStream:
        """A client of its own, its request sent (HTTP/1.0: the body comes as it is, without chunks)."""
        stream = await TCPClient().connect("127.0.0.1", self.get_http_port())
        await stream.write(request(method, path).replace(b"HTTP/1.1", version.encode()))
        return stream

    async def get_async(self, path: str, method: str = "GET", version: str = "HTTP/1.0") -> Response:
        stream = await self.open(path, method, version)
        try:
            return parse(await gen.with_timeout(self.io_loop.time() + 5, stream.read_until_close()))
        finally:
            stream.close()

    def get(self, path: str, method: str = "GET", version: str = "HTTP/1.0") -> Response:
        return self.io_loop.run_sync(lambda: self.get_async(path, method, version))

    async def wait_for(self, condition: Any, what: str, timeout: float = 2.0) -> None:
        deadline = self.io_loop.time() + timeout
        while not condition():
            assert self.io_loop.time() < deadline, what
            await asyncio.sleep(0.01)

    def test_tail_is_the_last_lines_in_order(self) -> None:
        response = self.get("/logs?tail=5")
        assert response.status == 200 and response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.body == b"line 296\nerr 297\nline 298\nerr 299\nline 300\n"  # stdout and stderr, in order
        assert self.fake.queries[-1] == {"stdout": "1", "stderr": "1", "tail": "5", "follow": "0"}
        assert self.get("/logs").body == b"".join(text for _, text in self.fake.lines[-DEFAULT_TAIL:])
        chunked = self.get("/logs?tail=1", version="HTTP/1.1")
        assert chunked.headers["transfer-encoding"] == "chunked" and chunked.body.endswith(b"\r\n0\r\n\r\n")
        assert self.get("/logs?tail=0").body == b"" and self.fake.readers == 0

    def test_bad_words_and_missing_containers_are_one_line_json_errors(self) -> None:
        for path, status, error in [
            ("/logs?tail=-1", 400, f"tail must be a whole number of lines from 0 to {MAX_TAIL}"),
            ("/logs?tail=10001", 400, f"tail must be a whole number of lines from 0 to {MAX_TAIL}"),
            ("/logs?follow=often", 400, "follow must be 1 or 0 (true or false)"),
        ]:
            response = self.get(path)
            assert (response.status, json.loads(response.body)) == (status, {"error": error, "status": status}), path
        self.set_container(None)
        response = self.get("/logs")
        assert (response.status, json.loads(response.body)["error"]) == (404, "the task has no container yet")
        self.set_container("deadbeef")
        response = self.get("/logs?follow=1")
        assert (response.status, json.loads(response.body)["error"]) == (404, "the task's container deadbeef is gone")
        assert response.headers["content-type"] == "application/json" and self.fake.queries == []

    def test_an_engine_away_is_503_with_why(self) -> None:
        assert self.engine.address is not None
        self.engine.address.path = f"{self.folder.name}/nothing.sock"
        response = self.get("/logs")
        assert response.status == 503
        assert json.loads(response.body)["error"].startswith("cannot reach the Docker engine at unix://")

    def test_head_answers_without_reading_the_logs(self) -> None:
        response = self.get("/logs", method="HEAD")
        assert response.status == 200 and response.body == b"" and self.fake.queries == []
        assert response.headers["content-type"] == "text/plain; charset=utf-8"

    @gen_test(timeout=10)
    async def test_follow_streams_new_lines_until_the_container_stops(self) -> None:
        stream = await self.open("/logs?tail=2&follow=1")
        try:
            head = await stream.read_until(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"text/plain" in head
            assert await stream.read_until(b"line 300\n") == b"err 299\nline 300\n"
            self.fake.emit(b"line 301\n")
            assert await stream.read_until(b"\n") == b"line 301\n"
            await asyncio.sleep(0.2)
            self.fake.emit(b"line 302\n")
            assert await stream.read_until(b"\n") == b"line 302\n"
            self.fake.stop()  # the engine ends the stream: so does the answer
            rest = await gen.with_timeout(self.io_loop.time() + 2, stream.read_until_close())
            assert rest == b""
        finally:
            stream.close()
        await self.wait_for(lambda: self.fake.readers == 0, "the engine's stream closed")

    @gen_test(timeout=10)
    async def test_a_client_gone_stops_the_engines_stream_at_once(self) -> None:
        stream = await self.open("/logs?tail=1&follow=1")
        await stream.read_until(b"line 300\n")
        assert self.fake.readers == 1
        stream.close()
        await self.wait_for(lambda: self.fake.readers == 0, "the engine's stream closed", timeout=1.0)
        assert (await self.get_async("/logs?tail=1")).status == 200  # and the reader's place is free again

    @gen_test(timeout=10)
    async def test_the_readers_are_few_and_the_rest_get_503(self) -> None:
        follows = [await self.open("/logs?tail=1&follow=1") for _ in range(endpoint.MAX_FOLLOWS)]
        try:
            for follow in follows:
                await follow.read_until(b"line 300\n")
            refused = await self.get_async("/logs?tail=1&follow=1")
            assert refused.status == 503 and refused.headers["retry-after"] == "1"
            assert json.loads(refused.body)["error"] == f"{endpoint.MAX_FOLLOWS} clients follow the logs already; try again later"
            assert (await self.get_async("/logs?tail=1")).status == 200  # a tail still has a place
            metrics = await self.get_async("/metrics")
            assert metrics.status == 200 and json.loads(metrics.body)["seq"] == 1
        finally:
            for follow in follows:
                follow.close()
        await self.wait_for(lambda: self.fake.readers == 0, "every engine stream closed")
        assert (await self.get_async("/logs?tail=1&follow=0")).status == 200


# -- the final record's last lines -------------------------------------------------------------------

class EndedContainer(FakeContainer):
    def __init__(self, output: Any) -> None:
        super().__init__("exited")
        self.output = output
        self.client = SimpleNamespace(api=SimpleNamespace(timeout=30))
        self.timeouts: List[float] = []

    def logs(self, **options: Any) -> bytes:
        self.calls.append("logs")
        self.timeouts.append(self.client.api.timeout)
        assert options == {"stdout": True, "stderr": True, "tail": LAST_LOGS}
        if isinstance(self.output, Exception):
            raise self.output
        return bytes(self.output)

    def remove(self, force: bool) -> None:
        self.calls.append("remove")


def finished(container_worker: Any, output: Any, monkeypatch: pytest.MonkeyPatch) -> Tuple[EndedContainer, Status]:
    monkeypatch.setattr("workers.container.drain", lambda *args: None)
    container_worker.output.seq_file = SimpleNamespace(remove=lambda: None)
    container = EndedContainer(output)
    ended = Ended(TaskState.FAILED, 3, "exited with code 3")
    container_worker.finish(container, ended)
    return container, container_worker.output.statuses[-1]


def test_the_final_status_holds_the_last_lines_read_before_the_container_goes(worker, monkeypatch) -> None:
    container_worker, _, _ = worker
    container, status = finished(container_worker, b"".join(b"line %d\n" % i for i in range(1, 81)), monkeypatch)
    assert status.state is TaskState.FAILED and status.last_logs == [f"line {i}" for i in range(31, 81)]
    assert container.calls == ["logs", "remove"]  # read, then removed (remove = true)
    assert container.timeouts == [LAST_LOGS_TIMEOUT] and container.client.api.timeout == 30  # and put back


def test_an_engine_that_cannot_tell_the_lines_leaves_them_empty(worker, monkeypatch) -> None:
    container_worker, _, _ = worker
    container, status = finished(container_worker, docker.errors.APIError("no"), monkeypatch)
    assert status.state is TaskState.FAILED and status.last_logs == [] and container.client.api.timeout == 30


def test_a_vanished_container_is_not_asked_for_its_lines(worker, monkeypatch) -> None:
    container_worker, _, _ = worker
    container_worker.vanished("the container was removed behind the supervisor's back")
    container, status = finished(container_worker, b"line\n", monkeypatch)
    assert status.last_logs == [] and "logs" not in container.calls
