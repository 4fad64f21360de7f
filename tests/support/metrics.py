"""The sample number (``seq``) at a supervisor's endpoint: how tests see sampling go on."""

from __future__ import annotations

from typing import Optional

from tests.support.net import http_get
from tests.support.waiting import wait_for


def seq_at(url: str, timeout: float = 2) -> Optional[int]:
    """The seq of the latest sample at ``url``/metrics; None while the endpoint does not answer 200."""
    code, body = http_get(f"{url}/metrics", timeout=timeout)
    return body["seq"] if code == 200 else None


def seq_passes(url: str, seq: Optional[int], timeout: float, what: str) -> int:
    """Wait for a sample numbered above ``seq`` (None: any sample) at the endpoint; return its seq."""
    return wait_for(lambda: (lambda now: now if now and now > (seq or 0) else 0)(seq_at(url)), timeout, what)
