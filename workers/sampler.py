"""One sample of a container: cgroup counters and per-process figures, as the /metrics document has them.

CPU percentages come from the difference between this reading and the previous one (percent of one
core, like ``docker stats``), so taking a sample never waits. The arithmetic is in pure functions;
``Sampler`` only gathers the raw readings: cgroup files for the container, psutil for its processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import psutil

from workers.cgroups import CgroupFiles, Counters, NetDev

MAX_PROCESSES = 512  # beyond this, the busiest are kept: one frame must stay well under its size limit
MAX_CMDLINE_CHARS = 4096


@dataclass(frozen=True)
class Reading:
    """What the next sample needs from this one."""

    at: float  # monotonic seconds
    cpu_ns: int
    proc_cpu: Dict[int, float] = field(default_factory=dict)  # pid -> CPU seconds used so far


def cpu_percent(before: float, after: float, elapsed: float) -> float:
    """CPU used between two readings, in percent of one core; 0 when there is nothing to compare."""
    if elapsed <= 0 or after < before:
        return 0.0
    return round(100.0 * (after - before) / elapsed, 2)


def container_figures(
    counters: Counters, net: Tuple[Optional[int], Optional[int]], previous: Optional[Reading], now: float
) -> Dict[str, Any]:
    cpu = 0.0
    if previous is not None:
        cpu = cpu_percent(previous.cpu_ns / 1e9, counters.cpu_ns / 1e9, now - previous.at)
    return {
        "cpu_percent": cpu,
        "memory_bytes": counters.memory_bytes,
        "memory_limit_bytes": counters.memory_limit_bytes or psutil.virtual_memory().total,
        "pids": counters.pids if counters.pids is not None else len(counters.procs),
        "net_rx_bytes": net[0],
        "net_tx_bytes": net[1],
        "blkio_read_bytes": counters.blkio_read_bytes,
        "blkio_write_bytes": counters.blkio_write_bytes,
    }


def trim_cmdline(argv: List[str]) -> List[str]:
    kept, total = [], 0
    for arg in argv:
        total += len(arg) + 1
        if total > MAX_CMDLINE_CHARS:
            break
        kept.append(arg)
    return kept


def busiest(processes: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    if len(processes) <= MAX_PROCESSES:
        return processes
    kept = sorted(processes, key=lambda p: p["cpu_percent"], reverse=True)[:MAX_PROCESSES]
    return sorted(kept, key=lambda p: p["pid"])


class Sampler:
    """Samples one container, keeping its file descriptors and psutil handles between samples."""

    def __init__(self, pid: int) -> None:
        self._files = CgroupFiles(pid)
        try:
            self._net = NetDev(pid)
        except OSError:
            self._files.close()
            raise
        self._handles: Dict[int, psutil.Process] = {}
        self.previous: Optional[Reading] = None

    def _handle(self, pid: int) -> psutil.Process:
        handle = self._handles.get(pid)
        if handle is None:
            handle = self._handles[pid] = psutil.Process(pid)
        return handle

    def _processes(self, pids: Tuple[int, ...], now: float) -> Tuple[List[Dict[str, Any]], Dict[int, float]]:
        previous = self.previous
        elapsed = now - previous.at if previous else 0.0
        rows, used = [], {}
        for pid in pids:
            try:
                handle = self._handle(pid)
                with handle.oneshot():
                    times = handle.cpu_times()
                    spent = times.user + times.system
                    switches = handle.num_ctx_switches()
                    row = {
                        "pid": pid,
                        "name": handle.name(),
                        "cmdline": trim_cmdline(handle.cmdline()),
                        "rss_bytes": handle.memory_info().rss,
                        "threads": handle.num_threads(),
                        "ctx_switches_voluntary": switches.voluntary,
                        "ctx_switches_involuntary": switches.involuntary,
                    }
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                self._handles.pop(pid, None)
                continue
            before = previous.proc_cpu.get(pid) if previous else None
            row["cpu_percent"] = cpu_percent(before, spent, elapsed) if before is not None else 0.0
            used[pid] = spent
            rows.append(row)
        for gone in set(self._handles) - set(pids):
            del self._handles[gone]
        return busiest(rows), used

    def sample(self, now: float) -> Dict[str, Any]:
        """The ``container`` and ``processes`` parts of a /metrics document. OSError once the cgroup is gone."""
        counters = self._files.read()
        container = container_figures(counters, self._net.read(), self.previous, now)
        processes, used = self._processes(counters.procs, now)
        self.previous = Reading(at=now, cpu_ns=counters.cpu_ns, proc_cpu=used)
        return {"container": container, "processes": processes}

    def close(self) -> None:
        self._files.close()
        self._net.close()
