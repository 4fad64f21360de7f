"""The sampler on a real container: it follows processes that come and go, even when it samples many
times a second (a kept-open cgroup v1 ``cgroup.procs`` would keep showing the first pid list), and it
keeps no descriptor of a process that is gone."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from tests.support import IMAGE
from tests.support.docker import docker
from workers.sampler import Sampler

CHURN = "while :; do sh -c 'sleep 0.02; echo' >/dev/null; done"  # a new pair of processes every ~20 ms


@pytest.fixture
def churning(services: None):
    name = f"horizon-sampler-{uuid.uuid4().hex[:8]}"
    docker("run", "-d", "--name", name, "--network", "none", IMAGE, "sh", "-c", CHURN)
    try:
        yield int(docker("inspect", "-f", "{{.State.Pid}}", name).strip())
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def test_sampling_every_50_ms_sees_new_processes_and_lets_gone_ones_go(churning: int) -> None:
    sampler = Sampler(churning)  # details (the process table) every sample: each one must see the forks
    before = len(os.listdir("/proc/self/fd"))
    seen = set()
    try:
        for _ in range(30):
            seen.update(row["pid"] for row in sampler.sample(time.monotonic())["processes"])
            time.sleep(0.05)
        kept = len(os.listdir("/proc/self/fd")) - before
    finally:
        sampler.close()
    assert len(seen) >= 10, f"only {sorted(seen)}: the pid list went stale"
    assert kept <= 3 * 3  # at most the few live processes' stat, status and cmdline


def test_details_are_read_every_nth_sample_and_repeated_in_between(churning: int) -> None:
    sampler = Sampler(churning, details_every=5)
    tables = []
    try:
        for _ in range(10):
            tables.append(sampler.sample(time.monotonic())["processes"])
            time.sleep(0.03)
    finally:
        sampler.close()
    assert all(table is tables[0] for table in tables[:5]) and all(table is tables[5] for table in tables[5:])
    assert tables[5] is not tables[0] and tables[5]  # read again at the 6th sample: the container forks all along
