"""Cadence: how far apart consecutive samples are, against the interval, at 1 s and 0.1 s, while
(a) idle, (b) the supervisor's etcd is SIGSTOPped, (c) wrk hammers /metrics.

Sample times are the documents' own ``timestamp`` (taken by the container worker), read by polling
/metrics much faster than the interval; deviation = |Δtimestamp − interval| between consecutive seqs.
The idle baseline is a bare Python loop in its own process that keeps the same fixed schedule
(tick k at start + k·interval, select() until then) in the same window: the host's own timer jitter.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from typing import List, Sequence, Tuple

from bench.common import (PYTHON, BenchSupervisor, MetricsPoller, Row, WrkBackground, deviations, log, ms, pct,
                          stop_all)
from tests.support.etcd_cluster import Cluster

NAME = "cadence"

_BARE_LOOP = textwrap.dedent("""
    import json, select, sys, time
    interval, ticks = float(sys.argv[1]), int(sys.argv[2])
    out, nxt = [], time.monotonic()
    for k in range(ticks):
        while True:
            left = nxt - time.monotonic()
            if left <= 0:
                break
            select.select([], [], [], left)
        out.append((k + 1, time.time(), 0.0))
        nxt += interval
    print(json.dumps(out))
""")


def bare_schedule(interval: float, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([PYTHON, "-c", _BARE_LOOP, str(interval), str(int(seconds / interval))],
                            stdout=subprocess.PIPE, text=True)


def summary(samples: Sequence[Tuple[int, float, float]], interval: float) -> Tuple[float, float, int, int]:
    """p50 and p99 of the deviations, intervals missed, intervals measured."""
    devs, missed = deviations(samples, interval)
    return pct(devs, 50), pct(devs, 99), missed, len(devs)


def run(smoke: bool) -> List[Row]:
    idle_s, freeze_s, wrk_s = (2, 2, 2) if smoke else (30, 30, 20)
    rows: List[Row] = []
    etcd = Cluster(api="v3").start()
    member = etcd.members[0]
    sups: List[BenchSupervisor] = []
    try:
        for interval in (1.0, 0.1):
            sup = BenchSupervisor(f"cadence-{int(interval * 1000)}ms", interval=interval, etcd=etcd.hosts)
            sups.append(sup)
            sup.launch().wait_serving()
            poll_every = interval / 20
            limit = 0.05 * interval

            bare = bare_schedule(interval, idle_s)
            idle = MetricsPoller(sup.port, poll_every).run(idle_s)
            bare_samples = [tuple(x) for x in json.loads(bare.communicate(timeout=idle_s + 30)[0])]
            b50, b99, _, _ = summary(bare_samples, interval)
            i50, i99, imiss, n = summary(idle.samples, interval)
            rows.append(Row(f"cadence {interval:g} s, idle: p99 deviation", ms(i99), ms(b99) + " (bare loop)",
                            f"{i99 / b99:.1f}×" if b99 else "n/a", f"p99 < {ms(limit)}", i99 < limit,
                            f"p50 {ms(i50)} (bare {ms(b50)}); {n} intervals, {imiss} missed"))

            member.freeze()
            try:
                frozen = MetricsPoller(sup.port, poll_every).run(freeze_s)
            finally:
                member.thaw()
            f50, f99, fmiss, n = summary(frozen.samples, interval)
            rows.append(Row(f"cadence {interval:g} s, etcd SIGSTOPped {freeze_s} s", ms(f99), ms(i99) + " (idle)",
                            f"{f99 / i99:.1f}×" if i99 else "n/a", f"p99 < {ms(limit)}", f99 < limit,
                            f"p50 {ms(f50)}; {n} intervals, {fmiss} missed; {frozen.errors} poll errors"))

            with WrkBackground(sup.url() + "/metrics", wrk_s) as load:
                hammered = MetricsPoller(sup.port, poll_every).run(wrk_s - 1)
            w50, w99, wmiss, n = summary(hammered.samples, interval)
            rps = f"{load.result.rps:.0f} req/s" if load.result else "wrk failed"
            rows.append(Row(f"cadence {interval:g} s, wrk on /metrics", ms(w99), ms(i99) + " (idle)",
                            f"{w99 / i99:.1f}×" if i99 else "n/a", f"p99 < {ms(limit)}", w99 < limit,
                            f"p50 {ms(w50)}; {n} intervals, {wmiss} missed; wrk -t2 -c50 at {rps}"))
            log(f"cadence {interval}: idle p99 {ms(i99)}, frozen {ms(f99)}, wrk {ms(w99)}")
            stop_all([sup], [etcd.hosts])
    finally:
        member.thaw()
        stop_all(sups, [etcd.hosts])
        etcd.stop()
    return rows
