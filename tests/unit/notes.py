"""systemd's notify protocol as the unit tests hear it: every field a flow sends, in order."""

from __future__ import annotations

from typing import List


class Notes:
    def __init__(self) -> None:
        self.sent: List[str] = []

    def send(self, *fields: str) -> None:
        self.sent.extend(fields)
