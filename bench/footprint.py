"""Footprint: RSS of the supervisor and its three workers, and the CPU all four use, while sampling a
~10-process container every second, over 10 minutes (a few seconds in smoke mode). RSS is read at
the start and the end of the window (flat = it did not grow); PSS (shared pages split between the
processes that share them) is shown too. Baseline, same run, same container, same window: the floor
process (bench/floor_process.py): four interpreters with the same imports, one re-reading the files.

Then the same under load: sampling every 0.1 s, and a burst of wrk on /metrics (-t2 -c50, 5 s) every
minute. After a warm-up minute (its own burst included) RSS must stay flat for 10 minutes: growth
below 1 MB, with each process's RSS logged per minute to tell a level from a leak."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Dict, List

import psutil

from bench.common import PYTHON, BenchSupervisor, Row, cpu_seconds, log, pss_bytes, ratio, rss_bytes, stop_all, tree, wrk
from tests.support import ROOT
from tests.support.waiting import wait_for

NAME = "footprint"
RSS_LIMIT = 120 * 2**20
GROWTH_LIMIT = 2 * 2**20
LOADED_GROWTH_LIMIT = 1 * 2**20
BURST_SECONDS = 5
CPU_LIMIT = 2.0
MB = 2**20


def rss_by_role(procs: List[psutil.Process]) -> Dict[str, int]:
    return {proc.name(): rss_bytes([proc]) for proc in procs if proc.is_running()}


def under_load(smoke: bool) -> Row:
    """RSS growth of the tree over a loaded window, after a loaded warm-up."""
    minute = 6.0 if smoke else 60.0
    warmup, window = minute, (2 if smoke else 10) * minute
    sup = BenchSupervisor("footprint-load", interval=0.1)
    try:
        url = f"{sup.launch().wait_serving().url()}/metrics"
        ours = sup.processes()
        started = time.monotonic()
        timeline: List[Dict[str, int]] = []
        minutes = 0
        while time.monotonic() - started < warmup + window:
            wrk(url, 1 if smoke else BURST_SECONDS)
            minutes += 1
            time.sleep(max(0.0, started + minutes * minute - time.monotonic()))
            timeline.append(rss_by_role(ours))
            log(f"footprint under load, minute {minutes}: " + ", ".join(
                f"{name} {value / MB:.2f}" for name, value in sorted(timeline[-1].items())) + " MB")
        after_warmup = timeline[int(warmup // minute) - 1]
        end = timeline[-1]
    finally:
        stop_all([sup])
    growth = sum(end.values()) - sum(after_warmup.values())
    each = ", ".join(f"{name.removeprefix('hz-')} {(end[name] - after_warmup[name]) / MB:+.2f}" for name in sorted(end))
    span = f"{window / 60:.0f} min" if window >= 60 else f"{window:.0f} s"
    return Row(f"RSS growth under load over {span} after a warm-up minute",
               f"{growth / MB:+.2f} MB", f"{sum(after_warmup.values()) / MB:.1f} MB after warm-up",
               ratio(sum(end.values()), sum(after_warmup.values())), "flat (< 1 MB)", growth < LOADED_GROWTH_LIMIT,
               f"interval 0.1 s, wrk -t2 -c50 {BURST_SECONDS} s on /metrics every minute; MB by process: {each}")


def run(smoke: bool) -> List[Row]:
    loaded = under_load(smoke)
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
        loaded,
    ]
