"""The v3 gateway client reads every answer shape etcd gives (3.4/3.5 bodies with "error", 3.6's
without), tells a refusal from silence, renews an expired token once, and moves to the next member
only when one cannot serve."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

from supervisor.etcd.errors import Missing, Refused, Unavailable
from supervisor.etcd.store import Settings
from supervisor.etcd.gateway import Gateway, range_end

Answer = Tuple[int, Dict[str, Any]]


class FakeHttp:
    """Answers in order, per member; records what was asked."""

    def __init__(self, names: List[str], answers: Dict[str, List[Any]]) -> None:
        self.names = names
        self.answers = answers
        self.asked: List[Tuple[str, Dict[str, Any], Optional[str]]] = []

    def answer(self, member: int, path: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, Any]:
        name = self.names[member]
        self.asked.append((f"{name} {path[len('/v3/'):]}", json.loads(body), headers.get("Authorization")))
        answer = self.answers[name.split(":")[0]].pop(0)
        if isinstance(answer, Exception):
            raise answer
        status, document = answer
        return status, document

    def post(self, member: int, path: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, bytes]:
        status, document = self.answer(member, path, body, headers)
        return status, json.dumps(document).encode()

    @contextmanager
    def stream(self, member: int, path: str, body: bytes, headers: Dict[str, str], read_timeout: float
               ) -> Iterator[Any]:
        status, lines = self.answer(member, path, body, headers)  # a watch's stream: its lines as they come
        response = io.BytesIO(lines)
        response.status = status  # type: ignore[attr-defined]
        yield response

    def clear(self) -> None:
        pass


def gateway(answers: Dict[str, List[Any]], **kw: Any) -> Tuple[Gateway, FakeHttp]:
    hosts = [("10.0.0.1", 2379), ("10.0.0.2", 2379)][: len(answers)]
    gw = Gateway(Settings(hosts, 1.0, **kw))
    fake = FakeHttp([f"{h}:{p}" for h, p in hosts], answers)
    gw._http = fake  # type: ignore[assignment]
    return gw, fake


def test_a_prefix_range_ends_past_the_prefix() -> None:
    import base64

    assert base64.b64decode(range_end("/horizon/")) == b"/horizon0"


@pytest.mark.parametrize("body", [
    {"error": "etcdserver: requested lease not found", "code": 5, "message": "etcdserver: requested lease not found"},
    {"code": 5, "message": "etcdserver: requested lease not found", "details": []},  # etcd 3.6
])
def test_a_missing_lease_is_missing_in_both_error_shapes(body: Dict[str, Any]) -> None:
    gw, _ = gateway({"10.0.0.1": [(404, body)]})
    with pytest.raises(Missing, match="lease not found"):
        gw.call("kv/txn", {})


@pytest.mark.parametrize("body", [
    {"error": "etcdserver: permission denied", "code": 7, "message": "etcdserver: permission denied"},
    {"code": 7, "message": "etcdserver: permission denied"},
])
def test_permission_denied_is_a_refusal_and_no_other_member_is_asked(body: Dict[str, Any]) -> None:
    gw, fake = gateway({"10.0.0.1": [(403, body)], "10.0.0.2": []})
    with pytest.raises(Refused, match="permission denied"):
        gw.call("kv/range", {})
    assert len(fake.asked) == 1


def test_bad_credentials_are_a_refusal_and_the_password_is_never_in_it() -> None:
    denied = {"code": 3, "message": "etcdserver: authentication failed, invalid user ID or password"}
    gw, fake = gateway({"10.0.0.1": [(400, denied)]}, username="horizon", password="s3cret")
    with pytest.raises(Refused, match="authentication failed") as caught:
        gw.call("kv/range", {})
    assert "s3cret" not in str(caught.value)
    assert fake.asked[0][0] == "10.0.0.1:2379 auth/authenticate"


def test_a_token_is_sent_back_and_renewed_once_when_the_member_forgets_it() -> None:
    expired = {"code": 16, "message": "etcdserver: invalid auth token"}
    gw, fake = gateway({"10.0.0.1": [(200, {"token": "t1"}), (200, {"kvs": []}), (401, expired),
                                      (200, {"token": "t2"}), (200, {"count": "1"})]},
                       username="horizon", password="pw")
    gw.call("kv/range", {})
    assert gw.call("kv/range", {}) == {"count": "1"}
    assert [token for _, _, token in fake.asked] == [None, "t1", "t1", None, "t2"]


def test_auth_not_enabled_means_no_token() -> None:
    off = {"code": 9, "message": "etcdserver: authentication is not enabled"}
    gw, fake = gateway({"10.0.0.1": [(400, off), (200, {}), (200, {})]}, username="root", password="pw")
    gw.call("kv/range", {})
    gw.call("kv/range", {})
    assert [what for what, _, _ in fake.asked] == ["10.0.0.1:2379 auth/authenticate", "10.0.0.1:2379 kv/range",
                                                    "10.0.0.1:2379 kv/range"]


def test_a_member_that_cannot_serve_is_left_for_the_next_and_stays_left(caplog) -> None:
    no_leader = {"code": 14, "message": "etcdserver: no leader"}
    gw, fake = gateway({"10.0.0.1": [(503, no_leader)], "10.0.0.2": [(200, {"a": 1}), (200, {"b": 2})]})
    assert gw.call("kv/range", {}) == {"a": 1}
    assert gw.describe() == "10.0.0.2:2379"
    assert gw.call("kv/range", {}) == {"b": 2}
    # the failover is logged once, naming the member left and the one used
    assert [r.getMessage() for r in caplog.records] == ["etcd member 10.0.0.1:2379 does not answer; using 10.0.0.2:2379"]


def test_silence_everywhere_is_unavailable_naming_every_member() -> None:
    gw, _ = gateway({"10.0.0.1": [TimeoutError("timed out")], "10.0.0.2": [ConnectionRefusedError(111, "refused")]})
    with pytest.raises(Unavailable) as caught:
        gw.call("kv/range", {})
    assert not isinstance(caught.value, Refused)
    assert "10.0.0.1:2379" in str(caught.value) and "10.0.0.2:2379" in str(caught.value)


def test_something_that_is_not_etcd_is_unavailable_not_a_crash() -> None:
    gw, _ = gateway({"10.0.0.1": [(200, ["not", "etcd"])]})
    with pytest.raises(Unavailable, match="not etcd's v3 JSON gateway"):
        gw.call("kv/range", {})


def test_an_anonymous_request_to_an_etcd_with_auth_on_is_a_refusal() -> None:
    empty = {"code": 3, "message": "etcdserver: user name is empty"}
    gw, _ = gateway({"10.0.0.1": [(400, empty)]})
    with pytest.raises(Refused, match="user name is empty"):
        gw.call("kv/range", {})


def test_a_watch_returns_the_first_message_with_events_and_a_failed_stream_is_an_error() -> None:
    created = b'{"result":{"header":{"revision":"7"},"created":true}}\n'
    put = b'{"result":{"events":[{"kv":{"key":"YQ==","mod_revision":"8"}}]}}\n'
    failed = b'{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}\n'
    gw, _ = gateway({"10.0.0.1": [(200, created + put)], "10.0.0.2": []})
    assert gw.call("watch", {}, watch_for=1.0)["events"][0]["kv"]["mod_revision"] == "8"
    gw, _ = gateway({"10.0.0.1": [(200, created)]})
    assert gw.call("watch", {}, watch_for=1.0) == {}  # only the creation came
    gw, fake = gateway({"10.0.0.1": [(200, created + failed)], "10.0.0.2": [(200, created + put)]})
    assert gw.call("watch", {}, watch_for=1.0)["events"]  # the failed member is left for the next
    assert gw.describe() == "10.0.0.2:2379" and len(fake.asked) == 2


class Member(http.server.ThreadingHTTPServer):
    """A member on loopback answering every POST with {"n": its count}, on kept-alive connections; with
    ``hang_up``, it closes each connection after answering, without saying so (as a restarted member does)."""

    def __init__(self, hang_up: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), self.Handler)
        self.hang_up, self.answered, self.connections = hang_up, 0, 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server: Member

        def setup(self) -> None:
            super().setup()
            self.server.connections += 1

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.server.answered += 1
            body = json.dumps({"n": self.server.answered}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = self.server.hang_up

        def log_message(self, *args: Any) -> None:
            pass


def real_gateway(port: int, timeout: float = 1.0) -> Gateway:
    return Gateway(Settings([("127.0.0.1", port)], timeout))


def test_one_connection_is_kept_alive_between_calls() -> None:
    member = Member()
    gw = real_gateway(member.server_address[1])
    assert [gw.call("kv/range", {})["n"] for _ in range(3)] == [1, 2, 3]
    assert member.connections == 1
    gw.close()
    member.shutdown()


def test_a_connection_the_member_closed_meanwhile_is_opened_again_without_a_failed_call() -> None:
    member = Member(hang_up=True)
    gw = real_gateway(member.server_address[1])
    assert gw.call("kv/range", {})["n"] == 1
    time.sleep(0.1)  # the member has closed it by now
    assert gw.call("kv/range", {})["n"] == 2
    assert member.connections == 2
    gw.close()
    member.shutdown()


def test_a_member_that_accepts_and_never_answers_is_unavailable_within_the_bound() -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        gw = real_gateway(silent.getsockname()[1], timeout=0.2)
        started = time.monotonic()
        with pytest.raises(Unavailable, match="timed out"):
            gw.call("kv/range", {})
        assert time.monotonic() - started < 1.0
