"""Scale: N supervisors on this machine (N = 1, 10, 50; 1 and 2 in smoke mode), one busy task each.
Per task: CPU of its supervisor and workers, RSS (and PSS) of the four; and whether cadence holds at
1 s, from each /metrics document's own timestamp (every endpoint polled round-robin, a few times a
second: the deviation needs consecutive sequence numbers, not a fast poller). The baseline of each
per-task figure is the same figure at N = 1 in the same run."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Dict, List

from bench.common import (BenchSupervisor, MetricsPoller, Row, cpu_seconds, deviations, log, ms, pct, pss_bytes, ratio,
                          rss_bytes, stop_all)

NAME = "scale"
# ~2% of a core each: a shell loop of arithmetic and a fork every ~50 ms (the sampler sees pids come and go)
BUSY = "sh -c 'while :; do i=0; while [ $i -lt 50 ]; do i=$((i+1)); done; sleep 0.05; done'"
GROWTH_LIMIT = 1.5  # "must not grow with N": within noise of the N = 1 figure
INTERVAL = 1.0
MB = 2**20


def task_cpu(sup: BenchSupervisor) -> float:
    """What the task itself uses, in percent of a core, from its own latest /metrics document."""
    with urllib.request.urlopen(sup.url() + "/metrics", timeout=5) as response:
        return json.load(response)["container"]["cpu_percent"]


def measure(n: int, window: float) -> Dict[str, float]:
    sups = [BenchSupervisor(f"scale{n}-{i}", command=BUSY, interval=INTERVAL) for i in range(n)]
    try:
        for sup in sups:
            sup.launch()
        for sup in sups:
            sup.wait_serving(timeout=120 + 2 * n)
        time.sleep(3.0)  # past start-up
        procs = [p for sup in sups for p in sup.processes()]
        pollers = [MetricsPoller(sup.port, 0) for sup in sups]
        cpu0, t0 = cpu_seconds(procs), time.monotonic()
        while time.monotonic() - t0 < window:
            cycle = time.monotonic()
            for poller in pollers:
                poller.poll_once()
            time.sleep(max(0.0, 0.3 - (time.monotonic() - cycle)))
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(procs) - cpu0
        rss, pss = rss_bytes(procs), pss_bytes(procs)
        busy = sum(task_cpu(sup) for sup in sups) / n
    finally:
        stop_all(sups)
    devs = [d for poller in pollers for d in deviations(poller.samples, INTERVAL)[0]]
    return {"busy": busy, "cpu": 100 * cpu / elapsed / n, "rss": rss / n, "pss": pss / n, "p50": pct(devs, 50),
            "p99": pct(devs, 99), "intervals": len(devs), "errors": sum(p.errors for p in pollers)}


def run(smoke: bool) -> List[Row]:
    counts, window = ((1, 2), 3) if smoke else ((1, 10, 50), 40)
    results = {}
    for n in counts:
        results[n] = measure(n, window)
        log(f"scale N={n}: {results[n]}")
    one = results[counts[0]]
    rows: List[Row] = []
    for n, r in results.items():
        first = n == counts[0]
        rows += [
            Row(f"N={n}: CPU per task", f"{r['cpu']:.2f}% of a core", "—" if first else f"{one['cpu']:.2f}% (N=1)",
                "—" if first else ratio(r["cpu"], one["cpu"]), f"≤ {GROWTH_LIMIT}× N=1",
                None if first else r["cpu"] <= GROWTH_LIMIT * one["cpu"],
                f"over {window} s; the busy tasks used {r['busy']:.1f}% of a core each"),
            Row(f"N={n}: RSS per task", f"{r['rss'] / MB:.1f} MB", "—" if first else f"{one['rss'] / MB:.1f} MB (N=1)",
                "—" if first else ratio(r["rss"], one["rss"]), f"≤ {GROWTH_LIMIT}× N=1",
                None if first else r["rss"] <= GROWTH_LIMIT * one["rss"], f"PSS {r['pss'] / MB:.1f} MB per task"),
            Row(f"N={n}: cadence p99 deviation at 1 s", ms(r["p99"]), "—" if first else f"{ms(one['p99'])} (N=1)",
                "—" if first else ratio(r["p99"], one["p99"]), f"p99 < {ms(0.05 * INTERVAL)}",
                r["p99"] < 0.05 * INTERVAL,
                f"p50 {ms(r['p50'])}; {r['intervals']} intervals; {r['errors']} poll errors"),
        ]
    return rows
