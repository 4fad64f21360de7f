"""Freshness: from a sample being taken (its ``timestamp``) to it being served at /metrics, and to it
being readable in etcd. /metrics is polled back to back on a kept-alive connection; etcd is watched
(v2 ``wait=true``, every index, so no write is missed). Interval 0.1 s and publish_every 1, so that
every sample goes to etcd. Baselines, same run: the poller's own round trip (the endpoint's
resolution), and a write of the same document straight to the same etcd (what etcd itself costs)."""

from __future__ import annotations

import http.client
import json
import threading
import time
import urllib.parse
from typing import List

from bench.common import (NAMESPACE, MetricsPoller, PrivateEtcd, Row, Supervisor, ThreadedPoll, etcd_request, log, median, ms,
                          pct, ratio, stop_all)

NAME = "freshness"
ENDPOINT_LIMIT, ETCD_LIMIT = 0.010, 0.050


class Watcher:
    """Receives every write to one etcd key; records (seq, sample timestamp, received wall time)."""

    def __init__(self, host: str, key: str) -> None:
        self.host, self.key = host, key
        self.samples: List[tuple] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        address, port = self.host.split(":")
        conn = http.client.HTTPConnection(address, int(port), timeout=2)
        index = None
        while not self.stopping:
            query = "wait=true" + (f"&waitIndex={index}" if index else "")
            try:
                conn.request("GET", f"/v2/keys{self.key}?{query}")
                response = conn.getresponse()
                body = json.loads(response.read())
            except (OSError, http.client.HTTPException, ValueError):
                conn.close()
                continue  # a long poll that timed out: ask again from the same index
            received = time.time()
            node = body.get("node") or {}
            if "modifiedIndex" in node:
                index = node["modifiedIndex"] + 1
            if body.get("action") in ("set", "create", "update") and "value" in node:
                doc = json.loads(node["value"])
                self.samples.append((doc["seq"], doc["timestamp"], received))
        conn.close()

    def __enter__(self) -> "Watcher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping = True
        self.thread.join(5)


def direct_writes(host: str, value: str, times: int) -> List[float]:
    """What a write of the same document costs etcd by itself (urlencoded PUT, fresh connection each)."""
    data = urllib.parse.urlencode({"value": value}).encode()
    key = f"/v2/keys{NAMESPACE}/freshness-probe"
    took = []
    for _ in range(times):
        t0 = time.perf_counter()
        etcd_request(host, key, method="PUT", data=data)
        took.append(time.perf_counter() - t0)
    etcd_request(host, key, method="DELETE")
    return took


def run(smoke: bool) -> List[Row]:
    seconds = 3 if smoke else 30
    etcd = PrivateEtcd().start()
    sup = Supervisor("freshness", interval=0.1, etcd=etcd.host, extra=["--metrics-publish-every", "1"])
    try:
        sup.start().wait_serving()
        with Watcher(etcd.host, f"{sup.prefix}/metrics") as watcher, \
                ThreadedPoll(MetricsPoller(sup.port, 0.0), seconds) as poller:
            pass
        status, body, _ = etcd_request(etcd.host, f"/v2/keys{sup.prefix}/metrics")
        document = body["node"]["value"] if status == 200 else "{}"
        floor = direct_writes(etcd.host, document, 50 if smoke else 300)
    finally:
        stop_all([sup], [etcd.host])
        etcd.stop()
    served = [received - stamp for _, stamp, received in poller.samples[1:]]
    stored = [received - stamp for _, stamp, received in watcher.samples]
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
