"""The one way tests and benchmarks wait for something to become true."""

from __future__ import annotations

import time
from typing import Any, Callable


class WaitTimeout(AssertionError):
    """A wait that ran out. An AssertionError, so that pytest reports it as the failed check it is;
    benchmarks catch it like any other exception (an ERROR row)."""


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll until predicate() returns something truthy and return it; fail naming what was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)
