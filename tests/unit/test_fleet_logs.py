"""``horizon logs`` against the endpoint's contract, served here by a small HTTP server of the test's own:
``GET /logs?tail=N`` (text/plain, the last N lines) and ``&follow=1`` (a chunked text/plain stream until
the task ends); and, when the endpoint does not answer or the task has ended, the last lines the record
keeps (``status.last_logs``), or a plain word that there are none."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.parse
from typing import Iterator, List

import pytest

from tests.unit.fleet_fake import NS, FakeEtcd, horizon

BASE = ["--namespace", NS]
LINES = [f"line {i}" for i in range(1, 101)]


class Endpoint(http.server.ThreadingHTTPServer):
    """/logs as the task's endpoint serves it; ``follow_lines`` come after the tail, one chunk each;
    ``break_off`` ends a followed stream without its last chunk (the supervisor killed mid-stream)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: List[str] = []
        self.follow_lines = ["later 1", "later 2"]
        self.break_off = False
        self.status = 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Endpoint

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        where = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(where.query)
        if where.path != "/logs" or self.server.status != 200:
            self.send_response(self.server.status if where.path == "/logs" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        tail = int(query["tail"][0])
        body = "".join(f"{line}\n" for line in LINES[len(LINES) - tail:] if tail)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        if "follow" not in query:
            self.send_header("Content-Length", str(len(body.encode())))
            self.end_headers()
            self.wfile.write(body.encode())
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for piece in [body, *(f"{line}\n" for line in self.server.follow_lines)]:
            if piece:
                data = piece.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
        if self.server.break_off:
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(b"0\r\n\r\n")


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    server = Endpoint()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def live(url: str) -> FakeEtcd:
    etcd = FakeEtcd()
    etcd.add("web", "t1", last_logs=[])  # a live task's record keeps no lines
    key = f"{etcd.task_prefix('web', 't1')}/endpoint"
    etcd.set(key, f'{{"host": "127.0.0.1", "port": 1, "url": "{url}"}}')
    return etcd


def test_the_last_lines_come_from_the_endpoint(endpoint, monkeypatch, capsys) -> None:
    code, out, err = horizon(["logs", *BASE, "web/t1", "--tail", "3"], live(endpoint.url), monkeypatch, capsys)
    assert code == 0 and err == "" and out.splitlines() == ["line 98", "line 99", "line 100"]
    assert endpoint.requests == ["/logs?tail=3"]


def test_the_default_tail_is_50(endpoint, monkeypatch, capsys) -> None:
    code, out, _ = horizon(["logs", *BASE, "web/t1"], live(endpoint.url), monkeypatch, capsys)
    assert code == 0 and len(out.splitlines()) == 50 and endpoint.requests == ["/logs?tail=50"]


def test_follow_streams_until_the_endpoint_ends_the_stream(endpoint, monkeypatch, capsys) -> None:
    code, out, err = horizon(["logs", *BASE, "web/t1", "--tail", "1", "-f"], live(endpoint.url), monkeypatch, capsys)
    assert code == 0 and err == "" and out.splitlines() == ["line 100", "later 1", "later 2"]
    assert endpoint.requests == ["/logs?tail=1&follow=1"]


def test_a_stream_that_breaks_off_is_one_line_and_exit_1(endpoint, monkeypatch, capsys) -> None:
    endpoint.break_off = True
    code, out, err = horizon(["logs", *BASE, "web/t1", "--tail", "1", "-f"], live(endpoint.url), monkeypatch, capsys)
    assert code == 1 and out.splitlines() == ["line 100", "later 1", "later 2"]
    assert len(err.splitlines()) == 1 and f"the log stream from {endpoint.url} broke off" in err


def test_an_ended_task_gives_the_lines_its_record_keeps_without_asking_the_endpoint(endpoint, monkeypatch,
                                                                                   capsys) -> None:
    etcd = live(endpoint.url)
    etcd.status("web", "t1", state="stopped", exit_code=0, last_logs=["one", "two", "three"])
    code, out, err = horizon(["logs", *BASE, "web/t1", "--tail", "2", "--follow"], etcd, monkeypatch, capsys)
    assert code == 0 and out.splitlines() == ["two", "three"] and endpoint.requests == []
    assert err == "horizon: web/t1 has ended (stopped (0)); the last 2 lines its record keeps:\n"


def test_an_ended_task_of_an_older_horizon_has_none(endpoint, monkeypatch, capsys) -> None:
    etcd = FakeEtcd()
    etcd.add("web", "t1", state="exited")
    code, out, err = horizon(["logs", *BASE, "web/t1"], etcd, monkeypatch, capsys)
    assert code == 0 and out == ""
    assert err == "horizon: web/t1 has ended (exited (0)); its record keeps no log lines (written by an older horizon)\n"


def test_an_endpoint_that_does_not_answer_falls_back_to_the_record(monkeypatch, capsys) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    etcd = live(url)
    code, out, err = horizon(["logs", *BASE, "web/t1"], etcd, monkeypatch, capsys)
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"horizon: error: {url} does not answer") and "a live task's record keeps no log lines" in err
    etcd.status("web", "t1", last_logs=["kept"])  # a record that keeps some (the supervisor went away late)
    code, out, err = horizon(["logs", *BASE, "web/t1"], etcd, monkeypatch, capsys)
    assert code == 0 and out == "kept\n" and "the last 1 line its record keeps" in err


def test_an_endpoint_without_logs_is_named_with_its_answer(endpoint, monkeypatch, capsys) -> None:
    endpoint.status = 404
    code, _, err = horizon(["logs", *BASE, "web/t1"], live(endpoint.url), monkeypatch, capsys)
    assert code == 1 and err.startswith(f"horizon: error: {endpoint.url}/logs answers HTTP 404;")


def test_an_unknown_task(monkeypatch, capsys) -> None:
    code, _, err = horizon(["logs", *BASE, "web/t9"], FakeEtcd(), monkeypatch, capsys)
    assert code == 1 and err == "horizon: error: web/t9: no such task under /ns (horizon ls lists them)\n"
