"""One sample of a container: cgroup counters and per-process figures, as the /metrics document has them.

CPU percentages come from the difference between this reading and the previous one (percent of one
core, like ``docker stats``), so taking a sample never waits. The arithmetic is in pure functions;
``Sampler`` only gathers the raw readings: cgroup files for the container, /proc files for each of its
processes, all on descriptors kept open between samples (bench/sample_cost.py measures the cost).

The container's CPU, memory and pid count are read every sample; the details (the process table,
network and block I/O counters, the memory limit) every ``details_every`` samples, which the container
worker sets to about once a second (``DETAIL_PERIOD``), and the samples in between repeat the latest
details. A process's CPU time is counted in clock ticks (10 ms), so at a 0.1 s interval its CPU
percentage would move in steps of 10 %: noise, read at ten times the cost of the container's own
figures (whose CPU time is in nanoseconds). A sample runs after a sleep, with cold caches, where every
file read costs several times what it costs in a tight loop: every file not read counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Optional, Tuple

import psutil

from workers.cgroups import CgroupFiles, Counters, NetDev
from workers.procfs import Figures, ProcessFiles, ProcessGone

MAX_PROCESSES = 512  # beyond this, the busiest are kept: one frame must stay well under its size limit
MAX_CMDLINE_CHARS = 4096
KEPT_PROCESSES = 200  # processes whose /proc files stay open (3 descriptors each); others are opened per read
DETAIL_PERIOD = 1.0  # seconds between reads of the process table and the slow-moving counters (about)


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


@lru_cache(maxsize=1)
def host_memory() -> int:
    """The limit shown for a container without one; read once (it was a /proc/meminfo read per sample)."""
    return psutil.virtual_memory().total


def container_figures(
    counters: Counters, net: Tuple[Optional[int], Optional[int]], previous: Optional[Reading], now: float
) -> Dict[str, Any]:
    cpu = 0.0
    if previous is not None:
        cpu = cpu_percent(previous.cpu_ns / 1e9, counters.cpu_ns / 1e9, now - previous.at)
    return {
        "cpu_percent": cpu,
        "cpu_seconds": round(counters.cpu_ns / 1e9, 6),  # cumulative: Prometheus' counter
        "memory_bytes": counters.memory_bytes,
        "memory_limit_bytes": counters.memory_limit_bytes or host_memory(),
        "pids": counters.pids if counters.pids is not None else len(counters.procs),
        "net_rx_bytes": net[0],
        "net_tx_bytes": net[1],
        "blkio_read_bytes": counters.blkio_read_bytes,
        "blkio_write_bytes": counters.blkio_write_bytes,
    }


def trim_cmdline(argv: List[str]) -> List[str]:
    if sum(map(len, argv)) + len(argv) <= MAX_CMDLINE_CHARS:  # the usual case, once per process per sample
        return argv
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
    """Samples one container, keeping the descriptors of its cgroup and /proc files between samples."""

    def __init__(self, pid: int, details_every: int = 1) -> None:
        self.details_every = details_every
        self.samples = 0
        self._files = CgroupFiles(pid)
        try:
            self._net_dev = NetDev(pid)
        except OSError:
            self._files.close()
            raise
        self._kept: Dict[int, ProcessFiles] = {}
        self.previous: Optional[Reading] = None  # the last sample: the container's CPU
        self.previous_table: Optional[Reading] = None  # the last process table: each process's CPU
        self._table: List[Dict[str, Any]] = []
        self._count = 0  # processes in the container at the last table (the table keeps the busiest)
        self._net: Tuple[Optional[int], Optional[int]] = (None, None)

    @staticmethod
    def _try(files: ProcessFiles) -> Optional[Figures]:
        try:
            return files.read()
        except ProcessGone:
            files.close()
            return None

    def _read(self, pid: int) -> Optional[Figures]:
        """The figures of one process, or None once it is gone."""
        kept = self._kept.pop(pid, None)
        figures = self._try(kept) if kept is not None else None
        if kept is None or figures is None:  # a new process, or a kept one whose pid now belongs to another
            try:
                kept = ProcessFiles(pid)
            except ProcessGone:
                return None
            figures = self._try(kept)
            if figures is None:
                return None
        if len(self._kept) < KEPT_PROCESSES:
            self._kept[pid] = kept
        else:
            kept.close()
        return figures

    def _processes(self, pids: Tuple[int, ...], now: float) -> Tuple[List[Dict[str, Any]], Dict[int, float]]:
        previous = self.previous_table
        elapsed = now - previous.at if previous else 0.0
        rows, used = [], {}
        for gone in set(self._kept).difference(pids):
            self._kept.pop(gone).close()
        for pid in pids:
            figures = self._read(pid)
            if figures is None:
                continue
            before = previous.proc_cpu.get(pid) if previous else None
            rows.append({
                "pid": pid,
                "name": figures.name,
                "cmdline": trim_cmdline(figures.cmdline),
                "rss_bytes": figures.rss_bytes,
                "threads": figures.threads,
                "ctx_switches_voluntary": figures.ctx_switches_voluntary,
                "ctx_switches_involuntary": figures.ctx_switches_involuntary,
                "cpu_percent": cpu_percent(before, figures.cpu_seconds, elapsed) if before is not None else 0.0,
                "cpu_seconds": round(figures.cpu_seconds, 3),
            })
            used[pid] = figures.cpu_seconds
        return busiest(rows), used

    def sample(self, now: float) -> Dict[str, Any]:
        """The ``container``, ``processes`` and ``process_count`` parts of a /metrics document. OSError once the cgroup is gone."""
        details_due = self.samples % self.details_every == 0
        self.samples += 1
        counters = self._files.read(full=details_due)
        if details_due:
            self._table, used = self._processes(counters.procs, now)
            self._count = len(counters.procs)
            self._net = self._net_dev.read()
            self.previous_table = Reading(at=now, cpu_ns=counters.cpu_ns, proc_cpu=used)
        container = container_figures(counters, self._net, self.previous, now)
        self.previous = Reading(at=now, cpu_ns=counters.cpu_ns)
        return {"container": container, "processes": self._table, "process_count": self._count}

    def close(self) -> None:
        self._files.close()
        self._net_dev.close()
        for files in self._kept.values():
            files.close()
        self._kept.clear()
