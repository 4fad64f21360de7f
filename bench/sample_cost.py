"""Cost of one sample: our Sampler's CPU time per sample on a ~10-process container, against the wall
time of the engine's stats (SDK and CLI), and against the floor: only re-reading the same files
(cgroup counters, net/dev, /proc/<pid>/{stat,status,cmdline} of each process) on kept-open descriptors.

And the honest cost: the CPU of the whole tree (the parent and its three workers) per sample, for a
real supervisor sampling the same kind of container every 0.1 s, beside the sampler alone. A sample in
the tree runs after a sleep, with cold caches, and wakes the other processes now and then (a metrics
frame every ``publish_every`` samples, an etcd write, heartbeats): that is what a host pays."""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Callable, Dict, List, Tuple

import docker

from bench.common import (PYTHON, RUN_ID, TEN_PROCESSES, BenchSupervisor, Floor, Row, log, median, ratio, run_seconds,
                          sh, stop_all, tree, us)
from tests.support import IMAGE, ROOT
from tests.support.metrics import seq_at
from tests.support.waiting import wait_for
from workers.sampler import Sampler

NAME = "sample_cost"
TREE_INTERVAL = 0.1
TREE_TARGET = 0.5e-3  # seconds of CPU, all four processes, per sample


def cpu_per_call(call: Callable[[], object], times: int) -> float:
    for _ in range(10):  # warm: handles made, a previous reading present
        call()
    start = time.process_time()
    for _ in range(times):
        call()
    return (time.process_time() - start) / times


def tree_cost(window: float) -> Tuple[float, Dict[str, float], int, float]:
    """(CPU seconds per sample of the whole tree, per process name, samples, CPU seconds per tick of the
    floor) for a supervisor sampling a ten-process container every 0.1 s with the default publish_every,
    and beside it, over the same window on the same container, the floor process (bench/floor_process.py:
    the same imports, three idle children, one loop re-reading the same files every 0.1 s)."""
    sup = BenchSupervisor("tree-cost", interval=TREE_INTERVAL)
    floor = None
    try:
        sup.launch().wait_serving()
        wait_for(lambda: len(sup.processes()) == 4, 20, "the supervisor's three workers")
        floor = subprocess.Popen([PYTHON, "-m", "bench.floor_process", str(sup.container_pid()), str(TREE_INTERVAL)],
                                 cwd=ROOT, start_new_session=True)
        wait_for(lambda: len(tree(floor.pid)) == 4, 20, "the floor process and its three children")
        time.sleep(3.0)  # past start-up: imports done, first table read, first etcd writes
        processes = {proc.pid: proc.name() for proc in sup.processes()}
        floors = [proc.pid for proc in tree(floor.pid)]
        url = sup.url()
        seq0, cpu0, floor0 = seq_at(url), {pid: run_seconds(pid) for pid in processes}, sum(map(run_seconds, floors))
        started = time.monotonic()
        time.sleep(window)
        seq1, cpu1, floor1 = seq_at(url), {pid: run_seconds(pid) for pid in processes}, sum(map(run_seconds, floors))
        ticks = (time.monotonic() - started) / TREE_INTERVAL
        if seq0 is None or seq1 is None or seq1 <= seq0:
            raise RuntimeError(f"no samples counted at {url}: seq {seq0} -> {seq1}")
        samples = seq1 - seq0
        each = {processes[pid]: (cpu1[pid] - cpu0[pid]) / samples for pid in processes}
        return sum(each.values()), each, samples, (floor1 - floor0) / ticks
    finally:
        if floor is not None:
            floor.send_signal(signal.SIGKILL)
            floor.wait(10)
        stop_all([sup])


def run(smoke: bool) -> List[Row]:
    samples, calls = (200, 1) if smoke else (3000, 5)
    tree_cpu, each, tree_samples, tree_floor = tree_cost(5.0 if smoke else 60.0)
    log("whole tree per sample: " + ", ".join(f"{name} {us(cost)}" for name, cost in sorted(each.items())))
    client = docker.from_env(timeout=60)
    container = client.containers.run(IMAGE, ["sh", "-c", TEN_PROCESSES.split("'")[1]], detach=True,
                                      network_mode="none", name=f"bench-sample-cost-{RUN_ID}")
    try:
        container.reload()
        pid = container.attrs["State"]["Pid"]
        sampler = Sampler(pid)
        count = lambda: len(sampler.sample(time.monotonic())["processes"])  # noqa: E731
        wait_for(lambda: count() >= 10, 20, "the container's ten processes")
        nproc = count()
        floor = Floor(pid)
        try:
            ours = cpu_per_call(lambda: sampler.sample(time.monotonic()), samples)
            bare = cpu_per_call(floor.read, samples)
            nfiles = floor.files
        finally:
            floor.close()
            sampler.close()

        sdk, cli = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            container.stats(stream=False)
            sdk.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sh("docker", "stats", "--no-stream", container.id, timeout=60)
            cli.append(time.perf_counter() - t0)
        sdk_s, cli_s = median(sdk), median(cli)
        log(f"sample cost: ours {us(ours)}, floor {us(bare)}, sdk {sdk_s:.3f} s, cli {cli_s:.3f} s, {nproc} processes")
    finally:
        container.remove(force=True)
        client.close()

    note = f"{nproc} processes, {nfiles} files, {samples} samples"
    parts = ", ".join(f"{name.removeprefix('hz-')} {cost * 1e3:.3f}" for name, cost in sorted(each.items()))
    return [
        Row(f"whole tree (parent + 3 workers) per sample at {TREE_INTERVAL} s", f"{tree_cpu * 1e3:.3f} ms CPU",
            f"{tree_floor * 1e3:.3f} ms CPU (floor process, per tick)", ratio(tree_cpu, tree_floor),
            f"≤ {TREE_TARGET * 1e3:.1f} ms", tree_cpu <= TREE_TARGET,
            f"ms per sample: {parts}; sampler alone, hot: {us(ours)}; {tree_samples} samples; CPU from schedstat"),
        Row("sample cost vs SDK stats(stream=False)", f"{us(ours)} CPU", f"{sdk_s * 1000:.0f} ms wall",
            ratio(sdk_s, ours, "{:.0f}× cheaper"), "≥ 1000× cheaper", sdk_s / ours >= 1000,
            f"{note}; median of {calls} SDK calls"),
        Row("sample cost vs `docker stats --no-stream`", f"{us(ours)} CPU", f"{cli_s * 1000:.0f} ms wall",
            ratio(cli_s, ours, "{:.0f}× cheaper"), "≥ 1000× cheaper", cli_s / ours >= 1000,
            f"median of {calls} CLI calls"),
        Row("sample cost vs floor (pread, kept-open fds)", f"{us(ours)} CPU", f"{us(bare)} CPU",
            ratio(ours, bare), "≤ 3× the floor", ours <= 3 * bare,
            "the floor re-reads the same files and parses nothing"),
    ]
