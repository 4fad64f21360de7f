"""What each horizon process says about itself (its CPU and memory, frames, etcd requests), for the
endpoint's ``"supervisor"`` section and its ``horizon_*`` series.

Each process writes its own small document into its slot of shared memory about once a second (from its
loop: ``SelfReport.maybe``), and the endpoint reads them all when it answers; nothing goes through the
pipes, so reporting costs a /proc read and a slot write a second per process.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Dict, Optional, Tuple

import msgpack

from supervisor.frames import ProtocolError
from supervisor.shm import Slot

PAGE = os.sysconf("SC_PAGE_SIZE")
EVERY = 1.0  # seconds between two reports of one process


def own_usage() -> Tuple[float, int]:
    """This process's CPU seconds (user + system, from the kernel's own count) and resident bytes."""
    times = os.times()
    with open("/proc/self/statm", "rb") as handle:
        resident = int(handle.read().split()[1])
    return times.user + times.system, resident * PAGE


def usage_document(extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    cpu, rss = own_usage()
    return {"pid": os.getpid(), "cpu_seconds": round(cpu, 2), "rss_bytes": rss, **(extra or {})}


class SelfReport:
    """One process's reports into its slot, at most every EVERY seconds."""

    def __init__(self, slot: Slot) -> None:
        self.slot = slot
        self.next_at = 0.0
        self.too_large = False

    def maybe(self, figures: Callable[[], Dict[str, Any]]) -> None:
        now = time.monotonic()
        if now >= self.next_at:
            self.next_at = now + EVERY
            try:
                self.slot.write(msgpack.packb(usage_document(figures())))
            except ProtocolError as exc:  # a bug (the slot is sized for its report): never the worker's end
                if not self.too_large:
                    logging.getLogger("supervisor").error("bug: %s; the report is not updated", exc)
                self.too_large = True


def read_reports(slots: Dict[str, Slot]) -> Dict[str, Dict[str, Any]]:
    """Every process's latest report, by process name (a process that never wrote is left out)."""
    found = {}
    for name, slot in slots.items():
        data = slot.read()[1]
        if data is not None:
            found[name] = msgpack.unpackb(data)
    return found
