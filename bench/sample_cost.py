"""Cost of one sample: our Sampler's CPU time per sample on a ~10-process container, against the wall
time of the engine's stats (SDK and CLI) and against the floor: only reading the same files on
kept-open descriptors (cgroup files, net/dev, and /proc/<pid>/{stat,status,cmdline} of each process)."""

from __future__ import annotations

import os
import subprocess
import time
from typing import List

import docker

from bench.common import IMAGE, TEN_PROCESSES, Row, log, median, ratio, sh, us
from workers.sampler import Sampler

NAME = "sample_cost"


def _floor_fds(sampler: Sampler, pids) -> List[int]:
    fds = list(sampler._files._fds.values())  # the very descriptors the sampler keeps open
    if sampler._net._fd is not None:
        fds.append(sampler._net._fd)
    for pid in pids:
        for name in ("stat", "status", "cmdline"):
            fds.append(os.open(f"/proc/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC))
    return fds


def run(smoke: bool) -> List[Row]:
    samples = 200 if smoke else 3000
    calls = 2 if smoke else 5
    client = docker.from_env(timeout=60)
    container = client.containers.run(IMAGE, ["sh", "-c", TEN_PROCESSES.split("'")[1]], detach=True,
                                      network_mode="none", labels={"horizon.service": "bench-sample-cost",
                                                                   "horizon.task": "bench"})
    try:
        container.reload()
        pid = container.attrs["State"]["Pid"]
        time.sleep(1.0)  # let the nine sleeps start
        sampler = Sampler(pid)
        for _ in range(10):  # warm: psutil handles made, previous reading present
            sampler.sample(time.monotonic())
        nproc = len(sampler.sample(time.monotonic())["processes"])

        cpu0, wall0 = time.process_time(), time.perf_counter()
        for _ in range(samples):
            sampler.sample(time.monotonic())
        ours_cpu = (time.process_time() - cpu0) / samples
        ours_wall = (time.perf_counter() - wall0) / samples

        own_fds = [fd for fd in _floor_fds(sampler, sampler._files.read().procs)]
        opened = own_fds[len(sampler._files._fds) + (sampler._net._fd is not None):]
        pread = os.pread
        try:
            for _ in range(10):
                for fd in own_fds:
                    pread(fd, 65536, 0)
            cpu0 = time.process_time()
            for _ in range(samples):
                for fd in own_fds:
                    pread(fd, 65536, 0)
            floor_cpu = (time.process_time() - cpu0) / samples
        finally:
            for fd in opened:
                os.close(fd)
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
        log(f"sample cost: ours {us(ours_cpu)} cpu ({us(ours_wall)} wall), floor {us(floor_cpu)}, "
            f"sdk {sdk_s:.3f}s, cli {cli_s:.3f}s, {nproc} processes")
    finally:
        container.remove(force=True)
        client.close()

    base = f"{nproc} processes, {len(own_fds)} files, {samples} samples"
    return [
        Row("sample cost vs docker SDK stats(stream=False)", f"{us(ours_cpu)} CPU", f"{sdk_s * 1000:.0f} ms wall",
            ratio(sdk_s, ours_cpu, "{:.0f}× cheaper"), "≥ 1000× cheaper", sdk_s / ours_cpu >= 1000,
            f"{base}; median of {calls} calls"),
        Row("sample cost vs `docker stats --no-stream`", f"{us(ours_cpu)} CPU", f"{cli_s * 1000:.0f} ms wall",
            ratio(cli_s, ours_cpu, "{:.0f}× cheaper"), "≥ 1000× cheaper", cli_s / ours_cpu >= 1000,
            f"median of {calls} calls"),
        Row("sample cost vs floor (pread on kept-open fds)", f"{us(ours_cpu)} CPU", f"{us(floor_cpu)} CPU",
            ratio(ours_cpu, floor_cpu), "≤ 3× the floor", ours_cpu <= 3 * floor_cpu,
            f"our wall time {us(ours_wall)}/sample; floor reads the same files without parsing"),
    ]
