"""Endpoint throughput: ``wrk -t2 -c50`` on /metrics against a bare Tornado handler serving a
pre-encoded body of the same size, in the same run; and again while the supervisor's etcd is frozen.
The bare handler is measured before and after ours, and its mean is the baseline. The Prometheus text
format and OpenMetrics (asked for with Prometheus' Accept headers) are measured against our JSON answer,
between two JSON runs, since each format is rendered once per sample too."""

from __future__ import annotations

import os
import subprocess
import tempfile
import urllib.request
from typing import List

from bench.common import PYTHON, BenchSupervisor, Row, log, ms, ratio, stop_all, wrk
from tests.support import ROOT
from tests.support.etcd_cluster import Cluster
from tests.support.net import free_port
from tests.support.waiting import wait_for

NAME = "endpoint"
P99_LIMIT = 0.015
TEXT = "text/plain;version=0.0.4"
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def body_of(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


def bare_server(body: bytes, port: int) -> subprocess.Popen:
    handle, path = tempfile.mkstemp(prefix="horizon-bench-body-")
    with os.fdopen(handle, "wb") as out:
        out.write(body)
    proc = subprocess.Popen([PYTHON, "-m", "bench.bare_endpoint", str(port), path], cwd=ROOT)
    proc.body_file = path  # type: ignore[attr-defined]
    wait_for(lambda: _answers(f"http://127.0.0.1:{port}/metrics"), 20, "the bare handler")
    return proc


def _answers(url: str) -> bool:
    try:
        return len(body_of(url)) > 0
    except OSError:
        return False


def run(smoke: bool) -> List[Row]:
    seconds = 1 if smoke else 10
    etcd = Cluster(api="v3").start()
    sup = BenchSupervisor("endpoint", etcd=etcd.hosts)
    bare = None
    try:
        sup.launch().wait_serving()
        body = body_of(sup.url() + "/metrics")
        port = free_port()
        bare = bare_server(body, port)
        bare_url = f"http://127.0.0.1:{port}/metrics"
        before = wrk(bare_url, seconds)
        ours = wrk(sup.url() + "/metrics", seconds)
        text = wrk(sup.url() + "/metrics", seconds, accept=TEXT)
        openmetrics = wrk(sup.url() + "/metrics", seconds, accept=OPENMETRICS_ACCEPT)
        json_again = wrk(sup.url() + "/metrics", seconds)
        etcd.members[0].freeze()
        try:
            frozen = wrk(sup.url() + "/metrics", seconds)
        finally:
            etcd.members[0].thaw()
        after = wrk(bare_url, seconds)
    finally:
        if bare is not None:
            bare.kill()
            bare.wait(10)
            os.unlink(bare.body_file)
        stop_all([sup], [etcd.hosts])
        etcd.stop()
    base_rps = (before.rps + after.rps) / 2
    base_p99 = (before.p99 + after.p99) / 2
    log(f"endpoint: ours {ours.rps:.0f} req/s p99 {ms(ours.p99)}; frozen {frozen.rps:.0f} p99 {ms(frozen.p99)}; "
        f"bare {before.rps:.0f}/{after.rps:.0f} req/s")
    note = f"{len(body)}-byte body, {seconds} s per wrk run"
    bare_note = f"bare runs: {before.rps:.0f} and {after.rps:.0f} req/s"

    def errors(result) -> str:
        return f"; errors: {result.errors}" if result.errors else ""

    json_rps = (ours.rps + json_again.rps) / 2
    json_note = f"JSON runs: {ours.rps:.0f} and {json_again.rps:.0f} req/s"
    return [
        *(Row(f"/metrics req/s, {what}", f"{result.rps:.0f} req/s", f"{json_rps:.0f} req/s (JSON, same run)",
              ratio(result.rps, json_rps, "{:.0%}"), "≥ 95% of JSON", result.rps >= 0.95 * json_rps,
              f"{json_note}{errors(result)}")
          for what, result in (("Prometheus text format", text), ("OpenMetrics", openmetrics))),
        Row("/metrics req/s, wrk -t2 -c50", f"{ours.rps:.0f} req/s", f"{base_rps:.0f} req/s (bare handler)",
            ratio(ours.rps, base_rps, "{:.0%}"), "≥ 90% of bare", ours.rps >= 0.9 * base_rps,
            f"{note}; {bare_note}{errors(ours)}"),
        Row("/metrics p99 latency", ms(ours.p99), ms(base_p99) + " (bare handler)", ratio(ours.p99, base_p99),
            f"< {ms(P99_LIMIT)}", ours.p99 < P99_LIMIT, f"p50 {ms(ours.p50)}"),
        Row("/metrics req/s, etcd SIGSTOPped", f"{frozen.rps:.0f} req/s", f"{base_rps:.0f} req/s (bare handler)",
            ratio(frozen.rps, base_rps, "{:.0%}"), "≥ 90% of bare (unchanged)", frozen.rps >= 0.9 * base_rps,
            f"healthy-etcd run: {ours.rps:.0f} req/s{errors(frozen)}"),
        Row("/metrics p99 latency, etcd SIGSTOPped", ms(frozen.p99), ms(ours.p99) + " (healthy etcd)",
            ratio(frozen.p99, ours.p99), f"< {ms(P99_LIMIT)}", frozen.p99 < P99_LIMIT, f"p50 {ms(frozen.p50)}"),
    ]
