"""Footprint: RSS of the supervisor and its three workers, and the CPU all four use, while sampling a
~10-process container every second, over 10 minutes (a few seconds in smoke mode). RSS is read at
the start and the end of the window (flat = it did not grow); PSS (shared pages split between the
processes that share them) is shown too. Baseline, same run, same container, same window: the floor
process (bench/floor_process.py): four interpreters with the same imports, one re-reading the files."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import List

import psutil

from bench.common import PYTHON, BenchSupervisor, Row, cpu_seconds, log, pss_bytes, ratio, rss_bytes, stop_all
from tests.support import ROOT
from tests.support.waiting import wait_for

NAME = "footprint"
RSS_LIMIT = 120 * 2**20
GROWTH_LIMIT = 2 * 2**20
CPU_LIMIT = 2.0
MB = 2**20


def tree(pid: int) -> List[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def run(smoke: bool) -> List[Row]:
    window = 3 if smoke else 600
    sup = BenchSupervisor("footprint", interval=1.0)
    floor = None
    try:
        sup.launch().wait_serving()
        floor = subprocess.Popen([PYTHON, "-m", "bench.floor_process", str(sup.container_pid()), "1.0"], cwd=ROOT,
                                 start_new_session=True)
        wait_for(lambda: len(tree(floor.pid)) == 4, 20, "the floor process and its three children")
        time.sleep(1.0 if smoke else 10.0)  # past start-up: imports done, first samples taken
        ours, base = sup.processes(), tree(floor.pid)
        rss0, pss0, cpu0, bcpu0 = rss_bytes(ours), pss_bytes(ours), cpu_seconds(ours), cpu_seconds(base)
        t0 = time.monotonic()
        peak = rss0
        while time.monotonic() - t0 < window:
            time.sleep(min(10.0, window - (time.monotonic() - t0)))
            peak = max(peak, rss_bytes(ours))
        elapsed = time.monotonic() - t0
        rss1, pss1, brss, bpss = rss_bytes(ours), pss_bytes(ours), rss_bytes(base), pss_bytes(base)
        cpu = 100 * (cpu_seconds(ours) - cpu0) / elapsed
        bcpu = 100 * (cpu_seconds(base) - bcpu0) / elapsed
        count = len(ours)
    finally:
        if floor is not None:
            floor.send_signal(signal.SIGKILL)
            floor.wait(10)
        stop_all([sup])
    log(f"footprint: rss {rss0 / MB:.1f} -> {rss1 / MB:.1f} MB (pss {pss0 / MB:.1f} -> {pss1 / MB:.1f}), "
        f"cpu {cpu:.2f}%; floor rss {brss / MB:.1f} MB pss {bpss / MB:.1f} cpu {bcpu:.2f}%")
    mins = f"{elapsed / 60:.1f} min" if elapsed >= 60 else f"{elapsed:.0f} s"
    return [
        Row(f"RSS, parent + workers, after {mins}", f"{rss1 / MB:.1f} MB", f"{brss / MB:.1f} MB (floor)",
            ratio(rss1, brss), "< 120 MB", rss1 < RSS_LIMIT,
            f"{count} processes; PSS {pss1 / MB:.1f} MB (floor {bpss / MB:.1f} MB)"),
        Row(f"RSS growth over {mins}", f"{(rss1 - rss0) / MB:+.2f} MB", f"{rss0 / MB:.1f} MB at start",
            ratio(rss1, rss0), "flat (< 2 MB)", rss1 - rss0 < GROWTH_LIMIT,
            f"peak {peak / MB:.1f} MB; PSS {pss0 / MB:.1f} → {pss1 / MB:.1f} MB"),
        Row("CPU, parent + workers, sampling at 1 s", f"{cpu:.2f}% of a core", f"{bcpu:.2f}% (floor)",
            ratio(cpu, bcpu) if bcpu > 0 else "n/a", "< 2% of a core", cpu < CPU_LIMIT,
            f"over {mins}; floor = same files re-read each second by one interpreter"),
    ]
