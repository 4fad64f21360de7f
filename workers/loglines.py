"""The container's output as horizon reads it, for the endpoint (``GET /logs``) and the container worker
(the final record's ``last_logs``): the query's words, Docker's multiplexed stream, and the last lines
cut to size. Plain functions: this module imports neither Docker nor Tornado, so either worker may.
"""

from __future__ import annotations

import json
import re
from typing import List, Optional

DEFAULT_TAIL = 100  # lines, when GET /logs names no tail
MAX_TAIL = 10_000
LAST_LOGS = 50  # lines kept in the final status document
LAST_LOG_WIDTH = 500  # characters a kept line is cut at
LAST_LOGS_BUDGET = 32 * 1024  # bytes of JSON all kept lines may take: the newest lines that fit are kept

_WHOLE_NUMBER = re.compile(r"[0-9]{1,6}")
_YES, _NO = frozenset({"1", "true", "yes"}), frozenset({"", "0", "false", "no"})


class BadQuery(ValueError):
    """A query parameter of GET /logs that means nothing: its one-line reason is the answer."""


def parse_tail(value: Optional[str]) -> int:
    """``tail=N``: how many of the last lines to send (DEFAULT_TAIL when absent)."""
    if value is None:
        return DEFAULT_TAIL
    if not _WHOLE_NUMBER.fullmatch(value) or int(value) > MAX_TAIL:
        raise BadQuery(f"tail must be a whole number of lines from 0 to {MAX_TAIL}")
    return int(value)


def parse_follow(value: Optional[str]) -> bool:
    """``follow=1``: go on sending new lines until the container stops."""
    word = (value or "").lower()
    if word in _YES:
        return True
    if word in _NO:
        return False
    raise BadQuery("follow must be 1 or 0 (true or false)")


def last_lines(output: bytes, count: int = LAST_LOGS, width: int = LAST_LOG_WIDTH,
               budget: int = LAST_LOGS_BUDGET) -> List[str]:
    """The last ``count`` lines of ``output`` (bytes as the container wrote them; not UTF-8 is replaced),
    each cut at ``width`` characters, and no more of them than fit in ``budget`` bytes of JSON (the
    newest are kept), so that the status document stays small whatever the task printed."""
    text = output.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    kept: List[str] = []
    for line in reversed(lines[-count:] if count > 0 else []):
        line = line.removesuffix("\r")[:width]
        budget -= len(json.dumps(line)) + 1  # the line as etcd's JSON holds it, and its comma
        if budget < 0:
            break
        kept.append(line)
    kept.reverse()
    return kept


class Demux:
    """Docker's multiplexed stream (the logs of a container without a TTY), fed in pieces of any size,
    gives back the payloads, in order. Each frame is an 8-byte header (the stream: 1 stdout, 2 stderr;
    three zero bytes; the payload's length, big-endian) and its payload; nothing but a header's bytes
    is held between pieces."""

    HEADER = 8

    def __init__(self) -> None:
        self._header = bytearray()
        self._left = 0  # payload bytes of the current frame still to come

    def feed(self, data: bytes) -> bytes:
        out: List[bytes] = []
        view, at, size = memoryview(data), 0, len(data)
        while at < size:
            if self._left:
                take = min(self._left, size - at)
                out.append(bytes(view[at:at + take]))
                at += take
                self._left -= take
            else:
                take = min(self.HEADER - len(self._header), size - at)
                self._header += view[at:at + take]
                at += take
                if len(self._header) == self.HEADER:
                    self._left = int.from_bytes(self._header[4:], "big")
                    self._header.clear()
        return b"".join(out)
