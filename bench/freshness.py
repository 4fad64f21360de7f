"""Freshness: from a sample being taken (its ``timestamp``) to it being served at /metrics, and to it
being readable in etcd (a private etcd 3.5 member, v3 API). /metrics is polled back to back on a kept-alive
connection; etcd is watched (a v3 watch stream from the current revision, so no write is missed).
Interval 0.1 s and publish_every 1, so that every sample goes to etcd. Baselines, same run: the poller's
own round trip (the endpoint's resolution), and a write of the same document straight to the same etcd
(what etcd itself costs)."""

from __future__ import annotations

import time
from typing import List

from bench.common import (NAMESPACE, BenchSupervisor, MetricsPoller, Row, ThreadedPoll, log, median, ms, pct, ratio,
                          stop_all)
from tests.support.etcd import Etcd
from tests.support.etcd_cluster import Cluster

NAME = "freshness"
ENDPOINT_LIMIT, ETCD_LIMIT = 0.010, 0.050


def direct_writes(etcd: Etcd, value: str, times: int) -> List[float]:
    """What a write of the same document costs etcd by itself (a plain put of the API: v3 /v3/kv/put, v2
    an urlencoded PUT; fresh connection each)."""
    key = f"{NAMESPACE}/freshness-probe"
    took = []
    for _ in range(times):
        t0 = time.perf_counter()
        etcd.put(key, value)
        took.append(time.perf_counter() - t0)
    etcd.delete(key)
    return took


def run(smoke: bool) -> List[Row]:
    seconds = 3 if smoke else 30
    etcd = Cluster(api="v3").start()
    sup = BenchSupervisor("freshness", interval=0.1, etcd=etcd.hosts, extra=["--metrics-publish-every", "1"])
    try:
        sup.launch().wait_serving()
        history = sup.etcd.history(f"{sup.key}/metrics")  # every write to the key, timed as it shows
        with ThreadedPoll(MetricsPoller(sup.port, 0.0), seconds) as poller:
            pass
        history.stop()
        document = sup.etcd.raw(f"{sup.key}/metrics")
        floor = direct_writes(sup.etcd, document or "{}", 50 if smoke else 300)
    finally:
        stop_all([sup], [etcd.hosts])
        etcd.stop()
    served = [received - stamp for _, stamp, received in poller.samples[1:]]
    stored = [received - doc["timestamp"] for doc, received in history.changes("metrics")]
    rtt = median(poller.rtts)
    log(f"freshness: endpoint p50 {ms(pct(served, 50))} p99 {ms(pct(served, 99))}; etcd p50 {ms(pct(stored, 50))} "
        f"p99 {ms(pct(stored, 99))}; poll rtt {ms(rtt)}; direct write {ms(median(floor))}")
    return [
        Row("sample → served at /metrics, p99", ms(pct(served, 99)), ms(rtt) + " (poll round trip)",
            ratio(pct(served, 99), rtt), f"< {ms(ENDPOINT_LIMIT)}", pct(served, 99) < ENDPOINT_LIMIT,
            f"p50 {ms(pct(served, 50))}; {len(served)} samples at 0.1 s; includes the poller's round trip"),
        Row("sample → readable in etcd, p99", ms(pct(stored, 99)), ms(pct(floor, 99)) + " (direct etcd write, p99)",
            ratio(pct(stored, 99), pct(floor, 99)), f"< {ms(ETCD_LIMIT)}", pct(stored, 99) < ETCD_LIMIT,
            f"p50 {ms(pct(stored, 50))} (direct write p50 {ms(median(floor))}); {len(stored)} writes watched"),
    ]
