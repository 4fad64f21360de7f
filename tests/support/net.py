"""Ports and HTTP requests with JSON answers, as the tests ask a supervisor's endpoint or etcd."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.error
import urllib.request
from typing import Any, Mapping, NamedTuple, Optional, Tuple


def free_port() -> int:
    """A loopback port nobody listens on (now: whoever binds it later may find it taken)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Response(NamedTuple):
    status: Optional[int]  # None: no answer (refused, reset, timed out)
    body: Any  # the JSON body, parsed; None when empty or not JSON
    headers: Mapping[str, str]


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return None


def http_request(url: str, method: str = "GET", data: Optional[bytes] = None, timeout: float = 5.0,
                 context: Optional[ssl.SSLContext] = None, headers: Optional[Mapping[str, str]] = None) -> Response:
    """One request on a fresh connection. Never raises for a server that fails or does not answer:
    tests assert on the status, and cleanup must go on."""
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:
            return Response(response.status, _json(response.read()), response.headers)
    except urllib.error.HTTPError as exc:
        return Response(exc.code, _json(exc.read()), exc.headers)
    except (OSError, http.client.HTTPException):
        return Response(None, None, {})


def http_get(url: str, timeout: float = 5.0) -> Tuple[Optional[int], Any]:
    """(status, parsed JSON body); a server that does not answer gives (None, None)."""
    status, body, _ = http_request(url, timeout=timeout)
    return status, body
