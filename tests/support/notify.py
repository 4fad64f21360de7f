"""A NOTIFY_SOCKET of the test's own: what a supervisor (or a host tree) tells systemd, as systemd would
receive it."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple


class NotifyListener:
    """A NOTIFY_SOCKET of the test's own: every datagram sent to ``path``, with when it came (``messages``:
    (time.monotonic(), text)). ``on_ready``, if given, is called on the listening thread the moment READY=1
    first comes, before the next datagram is read: what it returns (or raises) is kept as ``at_ready``, the
    world as it was when the sender said it was ready."""

    def __init__(self, path: Path, on_ready: Optional[Callable[[], Any]] = None) -> None:
        self.path = str(path)
        self.on_ready = on_ready
        self.at_ready: Any = None
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: List[Tuple[float, str]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._listen, daemon=True)
        self.thread.start()

    def _listen(self) -> None:
        while not self.done.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            at, text = time.monotonic(), data.decode()
            if self.on_ready is not None and "READY=1" in text.split("\n") and self.at_ready is None:
                try:
                    self.at_ready = self.on_ready()
                except Exception as exc:  # the test sees it
                    self.at_ready = exc
            self.messages.append((at, text))

    def fields(self, since: float = 0.0) -> List[Tuple[float, str]]:
        """Every field (``NAME=value``) received since ``since``, with when, in order."""
        return [(at, field) for at, text in list(self.messages) if at >= since for field in text.split("\n")]

    def first(self, field: str, since: float = 0.0) -> Optional[float]:
        """When ``field`` (e.g. ``READY=1``) first came since ``since``; None if it has not."""
        return next((at for at, got in self.fields(since) if got == field), None)

    def statuses(self, since: float = 0.0) -> List[str]:
        """The STATUS= lines since ``since``, their text only, in order."""
        return [got[len("STATUS="):] for _, got in self.fields(since) if got.startswith("STATUS=")]

    def pings(self, since: float = 0.0, until: float = float("inf")) -> List[float]:
        """When each WATCHDOG=1 came, between ``since`` and ``until``."""
        return [at for at, got in self.fields(since) if got == "WATCHDOG=1" and at <= until]

    def close(self) -> None:
        self.done.set()
        self.thread.join(2)
        self.sock.close()
