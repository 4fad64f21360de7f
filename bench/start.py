"""Start: from the command to ``running: true`` in etcd, against a plain ``docker run -d`` of the same
image and command (which returns once the container runs). Runs alternate; medians are compared."""

from __future__ import annotations

import time
from typing import List

from bench.common import RUN_ID, BenchSupervisor, Row, log, median, ratio, sh, stop_all
from tests.support import IMAGE
from tests.support.waiting import wait_for

NAME = "start"
OVERHEAD_LIMIT = 0.5


def docker_run(index: int) -> float:
    name = f"bench-start-plain-{RUN_ID}-{index}"
    t0 = time.perf_counter()
    sh("docker", "run", "-d", "--name", name, "--network", "none", IMAGE, "sleep", "100000")
    took = time.perf_counter() - t0
    sh("docker", "rm", "-f", name, check=False)
    return took


def supervised(index: int) -> float:
    sup = BenchSupervisor(f"start-{index}", command="sleep 100000")
    try:
        t0 = time.perf_counter()
        sup.launch()
        wait_for(lambda: sup.etcd.value(f"{sup.key}/running") is True or sup.proc.poll() is not None, 60,
                 "running in etcd", every=0.005)
        took = time.perf_counter() - t0
        if sup.proc.poll() is not None:
            raise RuntimeError(f"supervisor exited {sup.proc.returncode}: {sup.output()[-1000:]}")
        return took
    finally:
        stop_all([sup])


def run(smoke: bool) -> List[Row]:
    runs = 1 if smoke else 7
    ours, plain = [], []
    for i in range(runs):
        plain.append(docker_run(i))
        ours.append(supervised(i))
    ours_s, plain_s = median(ours), median(plain)
    overhead = ours_s - plain_s
    log(f"start: ours {ours_s:.3f} s, docker run -d {plain_s:.3f} s, overhead {overhead:.3f} s")
    return [
        Row("command → running in etcd", f"{ours_s:.3f} s", f"{plain_s:.3f} s (docker run -d)",
            ratio(ours_s, plain_s), f"overhead < {OVERHEAD_LIMIT} s", overhead < OVERHEAD_LIMIT,
            f"overhead {overhead:.3f} s; median of {runs}; ours {min(ours):.3f}–{max(ours):.3f} s, "
            f"docker run {min(plain):.3f}–{max(plain):.3f} s"),
    ]
