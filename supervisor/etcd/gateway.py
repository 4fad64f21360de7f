"""A small client of etcd's v3 JSON gateway (``POST /v3/...``) on urllib3, for the few calls horizon makes.

Why not a library: gRPC clients are unsafe across ``fork()`` and add about 22 MB to a process;
etcd3gw needs requests (+19 MB) and has no authentication; urllib3 is loaded already (python-etcd and
the Docker SDK use it). The README's "etcd v3" section has the measured figures.

What the gateway does that a client must know (checked on etcd 3.4, 3.5 and 3.6's error shape):
keys and values are base64; int64 fields (revisions, lease IDs, TTLs) are decimal strings; fields with
a zero value are omitted (a failed transaction has no ``succeeded``); errors come with an HTTP status
and a body with ``code`` (a gRPC status) and ``message`` (3.4/3.5 add ``error``, 3.6 does not).

Every request is bounded: connect and read each within ``timeout``, never retried by urllib3. A member
that does not answer (or answers that it cannot serve: no leader, a timeout inside etcd) is left for
the next one, each tried once per call. With a user and password, the client authenticates at each
member it uses (``/v3/auth/authenticate``) and sends the token back; a token the member no longer
knows (expired, or the member restarted) is renewed once, in the same call.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import Any, Dict, List, Optional

import urllib3

from supervisor.etcd.errors import Missing, Refused, Unavailable
from supervisor.etcd.store import RequestSpan, Settings, no_span
from supervisor.etcd.tls import is_tls_refusal, tls_pool_options

log = logging.getLogger("horizon-etcd")  # not "etcd": python-etcd's own logger, silenced in logs.py

# gRPC status codes the gateway answers with
INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, PERMISSION_DENIED = 3, 5, 9, 7
UNAUTHENTICATED = 16
NO_V3_FIX = "set [etcd] api = v2 (etcd serves the v3 JSON gateway at /v3 from 3.4 on)"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


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


class Gateway:
    """The JSON gateways of several members, one in use at a time (see the module doc)."""

    def __init__(self, settings: Settings, request_span: RequestSpan = no_span) -> None:
        hosts, timeout = settings.hosts, settings.timeout
        self._urls = [f"{settings.protocol}://{host}:{port}" for host, port in hosts]
        self._names = [f"{host}:{port}" for host, port in hosts]
        self._bound = 2 * timeout  # connect, then read: each bounded by timeout
        self._request_span = request_span
        self._credentials = {"name": settings.username, "password": settings.password} if settings.username else None
        self._tokens: List[Optional[str]] = [None] * len(hosts)
        self._current = 0
        self._http = urllib3.PoolManager(
            num_pools=len(hosts), maxsize=1, retries=False, timeout=urllib3.Timeout(connect=timeout, read=timeout),
            **tls_pool_options(settings.ca_cert, settings.cert, settings.key),
        )

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
        first = self._current
        for _ in range(len(self._urls)):
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
            except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
                handshakes_refused += is_tls_refusal(exc)
                errors.append(f"{self.describe()}: {exc}")
            self._current = (self._current + 1) % len(self._urls)
        # Every member answered, but none accepted our TLS settings: a mistake to fix, not an outage.
        raise (Refused if handshakes_refused == len(self._urls) else Unavailable)("; ".join(errors))

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
        url, data = f"{self._urls[member]}/v3/{path}", json.dumps(body).encode()
        if watch_for is not None:
            timeout = urllib3.Timeout(connect=self._bound / 2, read=watch_for)
            response = self._http.request("POST", url, body=data, headers=headers, timeout=timeout,
                                          preload_content=False)
            if response.status == 200:
                return self._watched(response, watch_for)
            response.read()
        else:
            with self._request_span(self._bound):
                response = self._http.request("POST", url, body=data, headers=headers)
        try:
            answer = json.loads(response.data or b"{}")
        except ValueError:
            answer = None
        if not isinstance(answer, dict):  # a proxy's page, an etcd without the gateway, or not etcd at all
            text = response.data[:120].decode(errors="replace")
            if response.status == 404:
                raise Refused(f"{self._names[member]}: no v3 JSON gateway here (/v3/{path} answers 404)", NO_V3_FIX)
            raise GatewayError(response.status, 0, f"not etcd's v3 JSON gateway at /v3/{path}: {text!r}")
        if response.status != 200:
            message = answer.get("message") or answer.get("error") or f"HTTP {response.status}"
            raise GatewayError(response.status, int(answer.get("code", 0)), str(message))
        return answer

    @staticmethod
    def _watched(response: urllib3.BaseHTTPResponse, watch_for: float) -> Dict[str, Any]:
        """Read a watch's stream (one JSON object per line, each wrapped in "result") for up to
        ``watch_for`` seconds, until a message carries events or cancels the watch."""
        deadline = time.monotonic() + watch_for
        buffer = b""
        try:
            for chunk in response.stream(4096, decode_content=False):
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
        except urllib3.exceptions.ReadTimeoutError:
            pass  # nothing happened within watch_for
        finally:
            response.close()  # a watch never ends by itself: this connection is done
            response.release_conn()
        return {}

    def close(self) -> None:
        self._http.clear()
