"""A small client of etcd's v3 JSON gateway (``POST /v3/...``) on http.client, for the few calls horizon makes.

Why not a library: gRPC clients are unsafe across ``fork()`` and add about 22 MB to a process;
etcd3gw needs requests (+19 MB) and has no authentication. Why not urllib3: importing it took about
65 ms, which every ``horizon`` command paid before reading anything (bench/cli_ls.py); what it gave
here, a kept-alive connection per member, bounded and never retried, is the few lines of ``Connections``.
The README's "etcd v3" section has the measured figures.

What the gateway does that a client must know (checked on etcd 3.4, 3.5 and 3.6's error shape):
keys and values are base64; int64 fields (revisions, lease IDs, TTLs) are decimal strings; fields with
a zero value are omitted (a failed transaction has no ``succeeded``); errors come with an HTTP status
and a body with ``code`` (a gRPC status) and ``message`` (3.4/3.5 add ``error``, 3.6 does not).

Every request is bounded: connect and read each within ``timeout``, never retried. A member
that does not answer (or answers that it cannot serve: no leader, a timeout inside etcd) is left for
the next one, each tried once per call. With a user and password, the client authenticates at each
member it uses (``/v3/auth/authenticate``) and sends the token back; a token the member no longer
knows (expired, or the member restarted) is renewed once, in the same call.
"""

from __future__ import annotations

import base64
import binascii
import http.client
import json
import logging
import select
import socket
import ssl
import time
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional, Tuple

from supervisor.etcd.errors import Missing, Refused, Unanswered, Unavailable
from supervisor.etcd.store import RequestSpan, Settings, no_span
from supervisor.etcd.tls import is_tls_refusal, tls_context

log = logging.getLogger("horizon-etcd")  # not "etcd": python-etcd's own logger, silenced in logs.py

# gRPC status codes the gateway answers with
INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, PERMISSION_DENIED = 3, 5, 9, 7
UNAUTHENTICATED = 16
NO_V3_FIX = "set [etcd] api = v2 (etcd serves the v3 JSON gateway at /v3 from 3.4 on)"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    """binascii's own decoder, as b64decode calls it (without its per-call checks: a read of 1,000 records
    undoes 10,000 of these)."""
    return binascii.a2b_base64(text).decode()


def range_end(prefix: str) -> str:
    """The end of the range holding every key that starts with ``prefix`` (its last byte + 1)."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def anonymous(exc: "GatewayError") -> bool:
    """etcd with authentication on, asked without a user: "user name is empty" (code 3, HTTP 400)."""
    return exc.code == INVALID_ARGUMENT and "user name is empty" in exc.message


class GatewayError(Exception):
    """A member answered with an error: its gRPC ``code`` and ``message``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, code {code})")
        self.status, self.code, self.message = status, code, message


class NotFound(Missing):
    """The member says a named thing (a lease) does not exist."""


def dropped(sock: socket.socket) -> bool:
    """Whether the member closed an idle kept-alive connection: readable before we asked means EOF (or
    garbage), as urllib3's pool checked before reusing one."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class Connections:
    """One kept-alive HTTP connection per member, opened when first needed and again when the member
    closed it meanwhile; one a request failed on is closed, so the next call starts clean."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._tls: Optional[ssl.SSLContext] = None  # made with the first https connection
        self._connections: List[Optional[http.client.HTTPConnection]] = [None] * len(settings.hosts)

    def _connection(self, member: int) -> http.client.HTTPConnection:
        """The member's connection; a closed one connects again at its next request (http.client's own)."""
        connection = self._connections[member]
        if connection is None:
            (host, port), timeout = self._settings.hosts[member], self._settings.timeout
            if self._settings.protocol == "https":
                if self._tls is None:
                    self._tls = tls_context(self._settings.ca_cert, self._settings.cert, self._settings.key)
                connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._tls)
            else:
                connection = http.client.HTTPConnection(host, port, timeout=timeout)
            self._connections[member] = connection
        elif connection.sock is not None and dropped(connection.sock):
            connection.close()
        return connection

    def post(self, member: int, path: str, body: bytes, headers: Dict[str, str]) -> Tuple[int, bytes]:
        """POST to the member and read the whole answer: its status and body. Connecting and each read
        are bounded by the settings' timeout."""
        connection = self._connection(member)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.read()
        except BaseException:
            connection.close()
            raise

    @contextmanager
    def stream(self, member: int, path: str, body: bytes, headers: Dict[str, str], read_timeout: float
               ) -> Iterator[http.client.HTTPResponse]:
        """POST to the member; the answer to read as it comes, each read bounded by ``read_timeout``.
        The connection is closed after: a stream (a watch) never ends by itself."""
        connection = self._connection(member)
        try:
            connection.request("POST", path, body=body, headers=headers)
            connection.sock.settimeout(read_timeout)
            yield connection.getresponse()
        finally:
            connection.close()

    def clear(self) -> None:
        for connection in self._connections:
            if connection is not None:
                connection.close()


class Gateway:
    """The JSON gateways of several members, one in use at a time (see the module doc)."""

    def __init__(self, settings: Settings, request_span: RequestSpan = no_span) -> None:
        hosts = settings.hosts
        self._names = [f"{host}:{port}" for host, port in hosts]
        self._bound = 2 * settings.timeout  # connect, then read: each bounded by timeout
        self._request_span = request_span
        self._credentials = {"name": settings.username, "password": settings.password} if settings.username else None
        self._tokens: List[Optional[str]] = [None] * len(hosts)
        self._current = 0
        self._http = Connections(settings)

    def describe(self) -> str:
        return self._names[self._current]

    def call(self, path: str, body: Dict[str, Any], watch_for: Optional[float] = None) -> Dict[str, Any]:
        """POST ``body`` to ``/v3/PATH`` on the member in use, moving on to the next ones while they do not
        answer; the answer's JSON. Refused for a refusal, NotFound for a missing lease, Unavailable else.

        With ``watch_for`` (``path`` is "watch"), the answer is a stream: its messages are read for up to
        that many seconds, until one carries events or cancels the watch, and the last one is returned
        ({} when none but the creation came)."""
        errors = []
        handshakes_refused = 0
        answered = False  # a member answered, with an error
        first = self._current
        for _ in range(len(self._names)):
            try:
                answer = self._on_member(self._current, path, body, watch_for)
                if self._current != first:
                    log.warning("etcd member %s does not answer; using %s", self._names[first], self.describe())
                return answer
            except GatewayError as exc:
                if exc.code in (PERMISSION_DENIED, UNAUTHENTICATED) or exc.status in (401, 403) or anonymous(exc):
                    raise Refused(f"{self.describe()}: {exc.message}") from None
                if exc.code == NOT_FOUND:
                    raise NotFound(f"{self.describe()}: {exc.message}") from None
                errors.append(f"{self.describe()}: {exc}")  # no leader, a timeout within etcd: ask another
                answered = True
            except (http.client.HTTPException, OSError, ValueError) as exc:
                handshakes_refused += is_tls_refusal(exc)
                errors.append(f"{self.describe()}: {exc}")
            self._current = (self._current + 1) % len(self._names)
        # Every member answered, but none accepted our TLS settings: a mistake to fix, not an outage.
        if handshakes_refused == len(self._names):
            raise Refused("; ".join(errors))
        raise (Unavailable if answered else Unanswered)("; ".join(errors))

    def _on_member(self, member: int, path: str, body: Dict[str, Any], watch_for: Optional[float]
                   ) -> Dict[str, Any]:
        if self._credentials and self._tokens[member] is None:
            self._authenticate(member)
        try:
            return self._post(member, path, body, watch_for)
        except GatewayError as exc:
            if exc.code != UNAUTHENTICATED or not self._credentials:
                raise
        log.debug("etcd at %s no longer knows horizon's token; authenticating again", self._names[member])
        self._authenticate(member)  # one renewal, in this call
        return self._post(member, path, body, watch_for)

    def _authenticate(self, member: int) -> None:
        self._tokens[member] = None
        try:
            answer = self._post(member, "auth/authenticate", self._credentials or {})
        except GatewayError as exc:
            if exc.code == FAILED_PRECONDITION:  # "authentication is not enabled": nothing to send back
                self._tokens[member] = ""
                return
            if exc.code == INVALID_ARGUMENT or exc.status in (401, 403):  # bad user or password
                raise Refused(f"{self._names[member]}: {exc.message}") from None
            raise
        self._tokens[member] = answer.get("token", "")

    def _post(self, member: int, path: str, body: Dict[str, Any], watch_for: Optional[float] = None
              ) -> Dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        token = self._tokens[member]
        if token:
            headers["Authorization"] = token
        url, data = f"/v3/{path}", json.dumps(body).encode()
        if watch_for is not None:
            with self._http.stream(member, url, data, headers, read_timeout=watch_for) as response:
                if response.status == 200:
                    return self._watched(response, watch_for)
                status, payload = response.status, response.read()
        else:
            with self._request_span(self._bound):
                status, payload = self._http.post(member, url, data, headers)
        try:
            answer = json.loads(payload or b"{}")
        except ValueError:
            answer = None
        if not isinstance(answer, dict):  # a proxy's page, an etcd without the gateway, or not etcd at all
            text = payload[:120].decode(errors="replace")
            if status == 404:
                raise Refused(f"{self._names[member]}: no v3 JSON gateway here (/v3/{path} answers 404)", NO_V3_FIX)
            raise GatewayError(status, 0, f"not etcd's v3 JSON gateway at /v3/{path}: {text!r}")
        if status != 200:
            message = answer.get("message") or answer.get("error") or f"HTTP {status}"
            raise GatewayError(status, int(answer.get("code", 0)), str(message))
        return answer

    @staticmethod
    def _watched(response: http.client.HTTPResponse, watch_for: float) -> Dict[str, Any]:
        """Read a watch's stream (one JSON object per line, each wrapped in "result") for up to
        ``watch_for`` seconds, until a message carries events or cancels the watch."""
        deadline = time.monotonic() + watch_for
        buffer = b""
        try:
            while chunk := response.read1(4096):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    message = json.loads(line or b"{}")
                    if "result" not in message and "error" in message:  # the stream failed (auth, no leader)
                        error = message["error"]
                        raise GatewayError(200, int(error.get("grpc_code", error.get("code", 0))),
                                           str(error.get("message", "watch failed")))
                    result: Dict[str, Any] = message.get("result", message)
                    if result.get("events") or result.get("canceled"):
                        return result
                if time.monotonic() >= deadline:
                    break
        except TimeoutError:
            pass  # nothing happened within watch_for
        return {}

    def close(self) -> None:
        self._http.clear()
