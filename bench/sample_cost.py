"""Cost of one sample: our Sampler's CPU time per sample on a ~10-process container, against the wall
time of the engine's stats (SDK and CLI), and against the floor: only re-reading the same files
(cgroup counters, net/dev, /proc/<pid>/{stat,status,cmdline} of each process) on kept-open descriptors."""

from __future__ import annotations

import time
from typing import Callable, List

import docker

from bench.common import RUN_ID, TEN_PROCESSES, Floor, Row, log, median, ratio, sh, us
from tests.support import IMAGE
from tests.support.waiting import wait_for
from workers.sampler import Sampler

NAME = "sample_cost"


def cpu_per_call(call: Callable[[], object], times: int) -> float:
    for _ in range(10):  # warm: handles made, a previous reading present
        call()
    start = time.process_time()
    for _ in range(times):
        call()
    return (time.process_time() - start) / times


def run(smoke: bool) -> List[Row]:
    samples, calls = (200, 1) if smoke else (3000, 5)
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
            nfiles = len(floor.fds)
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
    return [
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
