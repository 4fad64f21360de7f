"""The Docker engine's HTTP API, asked asynchronously from the endpoint worker's Tornado event loop.

The endpoint reads a container's logs without ever blocking its loop, and without the Docker SDK (which
blocks, and brings requests and its pages into a worker that does not otherwise need them): each call
is one HTTP/1.1 request on a connection of its own, made and read by Tornado's ``HTTP1Connection``, so
a stream is read as it comes (with backpressure: the next piece is read once the previous one is
handed on) and a call is cancelled at once by closing its connection.

The engine is found as the SDK finds it: ``DOCKER_HOST`` (``unix://PATH``, ``tcp://HOST:PORT``, also
``http``/``https``; ``/var/run/docker.sock`` when unset), with TLS when ``DOCKER_TLS_VERIFY`` or
``DOCKER_CERT_PATH`` is set (``ca.pem``, ``cert.pem`` and ``key.pem`` in ``DOCKER_CERT_PATH``, by
default ``~/.docker``). Paths carry no API version: the engine answers in its own.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
from typing import Any, Awaitable, Callable, Dict, Mapping, Optional
from urllib.parse import quote, urlencode, urlsplit

from tornado import gen
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httputil import HTTPHeaders, HTTPMessageDelegate, RequestStartLine, ResponseStartLine
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

DEFAULT_SOCKET = "/var/run/docker.sock"
CONNECT_TIMEOUT = 5.0  # seconds to connect (and shake hands)
HEADER_TIMEOUT = 30.0  # seconds for the engine to start its answer (the SDK's timeout)
MAX_DOCUMENT_BYTES = 4 << 20  # an answer kept whole (inspect, errors); a stream is handed on instead
UNBOUNDED = 1 << 62  # a followed stream's length

Sink = Callable[[bytes], Optional[Awaitable[None]]]


class EngineError(Exception):
    """The engine did not do what was asked: ``status`` is its HTTP status (404: no such container), or
    None when it could not be reached or stopped answering. The message is one line."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


class Address:
    """Where the engine listens: a unix socket ``path``, or ``host``:``port`` (with ``tls`` or not)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.path: Optional[str] = None
        self.host, self.port = "docker", 0
        self.tls: Optional[ssl.SSLContext] = None
        url = environ.get("DOCKER_HOST") or f"unix://{DEFAULT_SOCKET}"
        cert_path = environ.get("DOCKER_CERT_PATH") or None
        verify = environ.get("DOCKER_TLS_VERIFY", None) not in (None, "")  # the SDK's reading of it
        parts = urlsplit(url if "://" in url else f"tcp://{url}")
        if parts.scheme == "unix":
            self.path = (parts.netloc + parts.path) or DEFAULT_SOCKET
            return
        if parts.scheme not in ("tcp", "http", "https") or not parts.hostname:
            raise EngineError(f"DOCKER_HOST={url} is not an address the endpoint can read logs from "
                              "(unix://PATH or tcp://HOST:PORT)")
        use_tls = parts.scheme == "https" or verify or cert_path is not None
        self.host = parts.hostname
        self.port = parts.port or (2376 if use_tls else 2375)
        if use_tls:
            self.tls = tls_context(cert_path or os.path.join(os.path.expanduser("~"), ".docker"), verify)

    def __str__(self) -> str:
        return f"unix://{self.path}" if self.path else f"{'https' if self.tls else 'tcp'}://{self.host}:{self.port}"


def tls_context(cert_path: str, verify: bool) -> ssl.SSLContext:
    """The SDK's TLS settings: the client certificate when there is one; the CA checked when verifying."""
    context = ssl.create_default_context(cafile=os.path.join(cert_path, "ca.pem") if verify else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    cert, key = os.path.join(cert_path, "cert.pem"), os.path.join(cert_path, "key.pem")
    if os.path.exists(cert) and os.path.exists(key):
        context.load_cert_chain(cert, key)
    return context


class Call(HTTPMessageDelegate):
    """One request to the engine and its answer: a 200's body goes to ``sink`` as it comes (when one
    is given) or is kept whole; any other status's body is kept for its message."""

    def __init__(self, address: Address, path: str, sink: Optional[Sink], body_timeout: Optional[float]) -> None:
        self.address = address
        self.path = path
        self.sink = sink
        self.body_timeout = body_timeout
        self.status: Optional[int] = None
        self.body = bytearray()
        self.complete = False
        self.cancelled = False
        self._stream: Optional[IOStream] = None

    # -- HTTPMessageDelegate: the engine's answer ------------------------------------------------

    def headers_received(self, start_line: Any, headers: HTTPHeaders) -> None:
        assert isinstance(start_line, ResponseStartLine)
        self.status = start_line.code

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        if self.status == 200 and self.sink is not None:
            return self.sink(chunk)  # its awaitable holds the next read back until the piece is handed on
        if len(self.body) + len(chunk) <= MAX_DOCUMENT_BYTES:  # else a refusal's words, cut short
            self.body += chunk
        return None

    def finish(self) -> None:
        self.complete = True

    def on_connection_close(self) -> None:
        pass  # run() tells an answer cut short by what ``complete`` says

    # -- the caller's side -------------------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the call at once (its reader went away): close its connection; run() returns."""
        self.cancelled = True
        if self._stream is not None:
            self._stream.close()

    async def run(self) -> None:
        """Make the request and read the whole answer; EngineError unless it is a complete 200, or the
        call was cancelled."""
        stream = await self._connect()
        if self.cancelled:
            stream.close()
            return
        self._stream = stream
        params = HTTP1ConnectionParameters(no_keep_alive=True, header_timeout=HEADER_TIMEOUT,
                                           max_body_size=UNBOUNDED if self.sink else MAX_DOCUMENT_BYTES,
                                           body_timeout=self.body_timeout)
        connection = HTTP1Connection(stream, True, params)
        try:
            connection.write_headers(RequestStartLine("GET", self.path, "HTTP/1.1"),
                                     HTTPHeaders({"Host": self.address.host, "Connection": "close"}))
            connection.finish()
            await connection.read_response(self)
        except StreamClosedError:
            pass  # told apart below: cancelled, or cut short
        finally:
            stream.close()
        if self.cancelled:
            return
        if self.status is None:
            raise EngineError(f"the Docker engine at {self.address} did not answer")
        if self.status != 200:
            raise EngineError(self.message(), self.status)
        if not self.complete:
            raise EngineError(f"the Docker engine at {self.address} stopped answering")

    def message(self) -> str:
        """The engine's words on a refusal (its JSON ``message``), on one line."""
        try:
            said = json.loads(self.body).get("message")
        except (ValueError, AttributeError):
            said = None
        text = str(said or self.body.decode("utf-8", "replace").strip() or f"HTTP {self.status}")
        return " ".join(text.split())

    async def _connect(self) -> IOStream:
        address = self.address
        try:
            if address.path is not None:
                stream = IOStream(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
                try:
                    await gen.with_timeout(stream.io_loop.time() + CONNECT_TIMEOUT, stream.connect(address.path),
                                           quiet_exceptions=StreamClosedError)
                except BaseException:
                    stream.close()
                    raise
                return stream
            return await TCPClient().connect(address.host, address.port, ssl_options=address.tls,
                                             timeout=CONNECT_TIMEOUT)
        except (StreamClosedError, OSError, TimeoutError, ssl.SSLError) as exc:
            reason = str(getattr(exc, "real_error", None) or exc) or "timed out"
            raise EngineError(f"cannot reach the Docker engine at {address}: {reason}") from None


class Engine:
    """The engine's calls the endpoint makes. Built from the environment in the worker, after the fork;
    a DOCKER_HOST it cannot use fails each call with why, not the worker."""

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        self.address: Optional[Address] = None
        self.problem: Optional[EngineError] = None
        try:
            self.address = Address(os.environ if environ is None else environ)
        except (EngineError, OSError, ssl.SSLError) as exc:
            self.problem = exc if isinstance(exc, EngineError) else EngineError(f"cannot use Docker's TLS files: {exc}")

    def call(self, path: str, sink: Optional[Sink] = None, body_timeout: Optional[float] = HEADER_TIMEOUT) -> Call:
        if self.address is None:
            assert self.problem is not None
            raise self.problem
        return Call(self.address, path, sink, body_timeout)

    async def inspect(self, container: str) -> Dict[str, Any]:
        """``docker inspect`` of a container (EngineError with status 404 when there is none)."""
        call = self.call(f"/containers/{quote(container, safe='')}/json")
        await call.run()
        try:
            document = json.loads(call.body)
        except ValueError:
            raise EngineError("the Docker engine's inspect answer is not JSON") from None
        if not isinstance(document, dict):
            raise EngineError("the Docker engine's inspect answer is not a JSON object")
        return document

    def logs(self, container: str, tail: int, follow: bool, sink: Sink, body_timeout: Optional[float]) -> Call:
        """The call that reads a container's output (stdout and stderr, in order): its last ``tail``
        lines, then, with ``follow``, new ones until it stops. ``await call.run()``; ``call.cancel()``."""
        query = urlencode({"stdout": 1, "stderr": 1, "tail": tail, "follow": int(follow)})
        return self.call(f"/containers/{quote(container, safe='')}/logs?{query}", sink, body_timeout)
