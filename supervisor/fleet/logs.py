"""A task's output: from its endpoint while it runs, else the last lines its final record keeps.

The endpoint's contract (its URL is the record's ``endpoint.url``):

- ``GET {url}/logs?tail=N``: ``text/plain``, the last N lines;
- ``GET {url}/logs?tail=N&follow=1``: a chunked ``text/plain`` stream, the last N lines and then each new
  one, until the task ends (the stream ends) or the client goes.

When the endpoint does not answer (or has no ``/logs``), or the task has ended, the lines come from the
record's ``status.last_logs`` (a list of strings, written with the final state; absent on records of
an older horizon).
"""

from __future__ import annotations

import http.client
import urllib.parse
from typing import BinaryIO, List, Optional

from supervisor.fleet.records import Task


class Unreachable(Exception):
    """The endpoint gave no log lines: it does not answer, or answers something else than the contract."""


class BrokenOff(Exception):
    """A followed stream that ended without its end (the supervisor went away mid-stream)."""


def kept_lines(task: Task) -> Optional[List[str]]:
    """The last lines the record keeps (None: it keeps none, an older record)."""
    lines = task.status.get("last_logs")
    return [str(line) for line in lines] if isinstance(lines, list) else None


def stream(url: str, tail: int, follow: bool, out: BinaryIO, timeout: float) -> None:
    """Copy the endpoint's ``/logs`` to ``out`` as it comes. Unreachable when no line can come from it;
    BrokenOff when a followed stream broke off."""
    where = urllib.parse.urlsplit(url)
    if where.scheme != "http" or not where.hostname:
        raise Unreachable(f"{url!r} is not an http:// endpoint")
    query = urllib.parse.urlencode({"tail": tail, **({"follow": 1} if follow else {})})
    connection = http.client.HTTPConnection(where.hostname, where.port or 80, timeout=timeout)
    try:
        try:
            connection.request("GET", f"{where.path.rstrip('/')}/logs?{query}")
            response = connection.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise Unreachable(f"{url} does not answer ({exc or type(exc).__name__})") from None
        if response.status != 200:
            raise Unreachable(f"{url}/logs answers HTTP {response.status}")
        if follow and connection.sock is not None:
            connection.sock.settimeout(None)  # lines come when the task writes them
        try:
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    break
                out.write(chunk)
                out.flush()
        except (OSError, http.client.HTTPException) as exc:
            raise BrokenOff(f"the log stream from {url} broke off ({exc or type(exc).__name__})") from None
    finally:
        connection.close()
