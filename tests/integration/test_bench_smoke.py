"""The benchmarks keep working: ``python -m bench --smoke`` runs every one against the real engine and
etcd and prints a row for each figure. Timings are never asserted: a missed target is a finding for
bench/RESULTS.md, not a test failure."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from bench.run import BENCHMARKS, RESULTS
from tests.support import ETCD_HOSTS, ROOT
from tests.support.docker import docker
from tests.support.etcd import EtcdV2, EtcdV3, range_end

# Rows every smoke run prints, by benchmark: (benchmark, the start of the row's "what").
EXPECTED = [
    ("sample_cost", "whole tree (parent + 3 workers) per sample"), ("sample_cost", "sample cost vs SDK"), ("sample_cost", "sample cost vs `docker stats"),
    ("sample_cost", "sample cost vs floor"),
    *[("cadence", f"cadence {i} s, {what}") for i in ("1", "0.1") for what in ("idle", "etcd SIGSTOPped", "wrk")],
    ("endpoint", "/metrics req/s, Prometheus text format"), ("endpoint", "/metrics req/s, OpenMetrics"),
    ("endpoint", "/metrics req/s, wrk"), ("endpoint", "/metrics p99 latency"),
    ("endpoint", "/metrics req/s, etcd SIGSTOPped"), ("endpoint", "/metrics p99 latency, etcd SIGSTOPped"),
    ("freshness", "sample → served at /metrics"), ("freshness", "sample → readable in etcd"),
    ("footprint", "RSS, parent + workers"), ("footprint", "RSS growth over"), ("footprint", "CPU, parent + workers"),
    ("footprint", "RSS growth under load"),
    ("start", "command → running in etcd"),
    *[("scale", f"host tree N={n}: {what}") for n in (1, 3) for what in ("PSS, parent + 3 workers", "CPU, parent + 3 workers",
                                                                        "cadence p99")],
    *[("scale", f"host tree N=3: marginal {what} per extra task") for what in ("PSS", "CPU")],
    ("scale", "host tree N=3: floor per task, its files re-read once a second"),
    *[("scale", f"separate trees N={n}: {what}") for n in (1, 3) for what in ("CPU per task", "RSS per task", "cadence p99")],
    *[("etcd_client", f"RSS over the publisher's imports, {when}") for when in ("client imported and built", "after")],
    *[("etcd_client", f"put of a 1 KB value, {q}") for q in ("median", "p99")],
    ("etcd_client", "ours, metrics write"), ("etcd_client", "ours, 5-key write"),
    *[("cli_ls", f"horizon ls, {n} records") for n in ("200", "1,000")],
    ("control_latency", "control request → effect"),
]


@pytest.mark.slow
def test_smoke_mode_runs_every_benchmark_and_prints_every_row(services: None, tmp_path: Path) -> None:
    output = tmp_path / "RESULTS.md"
    before = RESULTS.read_bytes() if RESULTS.exists() else None
    run = f"smoke{uuid.uuid4().hex[:6]}"  # names everything the run creates, so we can look for leftovers
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--output", str(output)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, HORIZON_BENCH_RUN=run))
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    lines = done.stdout.splitlines()
    table = [line.split(None, 1) for line in lines if line.split(None, 1) and line.split()[0] in BENCHMARKS]
    for name, what in EXPECTED:
        assert any(row[0] == name and row[1].startswith(what) for row in table), f"no row {name}: {what}\n{done.stdout}"
    assert not [row for row in table if row[1].startswith("ERROR")]
    assert f"{len(EXPECTED)} rows" in lines[-2] and "0 failed" in lines[-2]
    written = output.read_text(encoding="utf-8")
    assert "## Machine" in written and all(what in written for _, what in EXPECTED)
    assert (RESULTS.read_bytes() if RESULTS.exists() else None) == before  # the real results are left alone
    # nothing left behind: containers, keys, supervisors
    assert not docker("ps", "-aq", "--filter", f"name={run}").split()
    namespace = f"/horizon-bench-{run}"
    for host in ETCD_HOSTS.values():  # the benchmarks write over v3; each shared etcd, in either API's keys
        assert EtcdV3(f"http://{host}").kvs(f"{namespace}/", range_end(f"{namespace}/")) == []
    assert EtcdV2().get(namespace) is None
    assert not [p for p in psutil.process_iter(["cmdline"]) if run in " ".join(p.info["cmdline"] or ())]
