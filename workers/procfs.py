"""One process's figures, read from its /proc files on descriptors kept open between samples.

psutil opens, reads and closes /proc/<pid>/stat, status and cmdline on every call (~40 µs a process
here); re-reading kept descriptors with ``os.pread`` and parsing only the fields we publish costs a
fraction of that. A kept descriptor stays bound to the process it was opened for: once that process
is gone, reading it raises ``ProcessLookupError``, even if its pid was reused since.

Every sample reads ``stat`` (CPU, threads, state) and ``statm`` (resident memory): ~8 µs a process.
``status`` (context switches) costs the kernel ~14 µs a read and ``cmdline`` ~4 µs, so they are read
again at most every ``SLOW_REFRESH`` seconds, and at once when ``stat``'s name changes (an exec): at a
0.1 s interval this halves a sample's cost, and those counters are at most a second old.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple

from workers.cgroups import pread_all

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
COMM_CHARS = 15  # the kernel's comm field is cut to this many characters
SLOW_REFRESH = 1.0  # seconds between reads of status and cmdline
_VOLUNTARY = b"\nvoluntary_ctxt_switches:"
_INVOLUNTARY = b"\nnonvoluntary_ctxt_switches:"


class ProcessGone(OSError):
    """The process exited (or is a zombie) since its files were opened."""


class Figures(NamedTuple):
    name: str
    cmdline: List[str]
    cpu_seconds: float  # user + system
    rss_bytes: int
    threads: int
    ctx_switches_voluntary: int
    ctx_switches_involuntary: int


def split_cmdline(raw: bytes) -> List[str]:
    """argv from /proc/<pid>/cmdline, as psutil splits it (a process that rewrote its title into one
    space-separated string is split on spaces)."""
    if not raw:
        return []
    text = raw.decode("utf-8", "replace")
    sep = "\0" if text.endswith("\0") else " "
    if text.endswith(sep):
        text = text[:-1]
    argv = text.split(sep)
    if sep == "\0" and len(argv) == 1 and " " in text:
        argv = text.split(" ")
    return argv


def _field(status: bytes, key: bytes, after: int) -> int:
    """The number after ``key`` in /proc/<pid>/status (``VmRSS:  1580 kB``), searched from ``after``;
    0 when absent."""
    start = status.find(key, after)
    if start < 0:
        return 0
    start += len(key)
    return int(status[start:status.find(b"\n", start)].split()[0])


class ProcessFiles:
    def __init__(self, pid: int, proc: str = "/proc") -> None:
        self.pid = pid
        self._fds: List[int] = []
        try:
            for name in ("stat", "statm", "status", "cmdline"):
                self._fds.append(os.open(f"{proc}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            self.close()
            raise ProcessGone(f"process {pid} is gone") from None
        self._comm = b""
        self._slow_at = 0.0  # when status and cmdline are read again
        self._raw_cmdline = b""
        self._cmdline: List[str] = []
        self._switches = (0, 0)

    def read(self, now: float) -> Figures:
        """The figures at ``now`` (monotonic seconds), which says whether status and cmdline are due."""
        stat_fd, statm_fd, status_fd, cmdline_fd = self._fds
        try:
            stat = pread_all(stat_fd)
            statm = pread_all(statm_fd)
            end = stat.rfind(b")")
            comm = stat[stat.find(b"(") + 1:end]
            if now >= self._slow_at or comm != self._comm:
                self._read_slow(pread_all(status_fd), pread_all(cmdline_fd), now)
                self._comm = comm
        except (ProcessLookupError, FileNotFoundError):
            raise ProcessGone(f"process {self.pid} is gone") from None
        fields = stat[end + 2:].split()  # fields[0] is field 3 of proc(5), "state"
        if fields[0] == b"Z":
            raise ProcessGone(f"process {self.pid} is a zombie")
        return Figures(
            name=self._name(comm.decode("utf-8", "replace")),
            cmdline=self._cmdline,
            cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            rss_bytes=int(statm.split(None, 2)[1]) * PAGE_BYTES,
            threads=int(fields[17]),
            ctx_switches_voluntary=self._switches[0],
            ctx_switches_involuntary=self._switches[1],
        )

    def _read_slow(self, status: bytes, raw_cmdline: bytes, now: float) -> None:
        self._slow_at = now + SLOW_REFRESH
        tail = max(0, len(status) - 256)  # the counters are the file's last lines: search only its end
        self._switches = (_field(status, _VOLUNTARY, tail), _field(status, _INVOLUNTARY, tail))
        if raw_cmdline != self._raw_cmdline:
            self._raw_cmdline, self._cmdline = raw_cmdline, split_cmdline(raw_cmdline)

    def _name(self, comm: str) -> str:
        """The comm field, or (like psutil) argv[0]'s base name when comm was cut and argv[0] extends it."""
        if len(comm) >= COMM_CHARS and self._cmdline:
            extended = os.path.basename(self._cmdline[0])
            if extended.startswith(comm):
                return extended
        return comm

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []
