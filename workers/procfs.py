"""One process's figures, read from its /proc files on descriptors kept open between samples.

psutil opens, reads and closes /proc/<pid>/stat, status and cmdline on every call (~40 µs a process
here); re-reading kept descriptors with ``os.pread`` and parsing only the fields we publish costs a
fraction of that. A kept descriptor stays bound to the process it was opened for: once that process
is gone, reading it raises ``ProcessLookupError``, even if its pid was reused since.
"""

from __future__ import annotations

import os
from typing import List, NamedTuple

from workers.cgroups import pread_all

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
COMM_CHARS = 15  # the kernel's comm field is cut to this many characters
_RSS = b"\nVmRSS:"  # exact; stat's rss field is the kernel's per-CPU estimate (psutil reads statm, also exact)
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


def _field(status: bytes, key: bytes, after: int = 0) -> int:
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
            for name in ("stat", "status", "cmdline"):
                self._fds.append(os.open(f"{proc}/{pid}/{name}", os.O_RDONLY | os.O_CLOEXEC))
        except FileNotFoundError:
            self.close()
            raise ProcessGone(f"process {pid} is gone") from None
        self._raw_cmdline = b""
        self._cmdline: List[str] = []

    def read(self) -> Figures:
        stat_fd, status_fd, cmdline_fd = self._fds
        try:
            stat = pread_all(stat_fd)
            status = pread_all(status_fd)
            raw = pread_all(cmdline_fd)
        except (ProcessLookupError, FileNotFoundError):
            raise ProcessGone(f"process {self.pid} is gone") from None
        end = stat.rfind(b")")
        comm = stat[stat.find(b"(") + 1:end].decode("utf-8", "replace")
        fields = stat[end + 2:].split()  # fields[0] is field 3 of proc(5), "state"
        if fields[0] == b"Z":
            raise ProcessGone(f"process {self.pid} is a zombie")
        if raw != self._raw_cmdline:
            self._raw_cmdline, self._cmdline = raw, split_cmdline(raw)
        return Figures(
            name=self._name(comm),
            cmdline=self._cmdline,
            cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
            rss_bytes=_field(status, _RSS) * 1024,
            threads=int(fields[17]),
            # the last two lines of the file or near them: search only the end
            ctx_switches_voluntary=_field(status, _VOLUNTARY, max(0, len(status) - 256)),
            ctx_switches_involuntary=_field(status, _INVOLUNTARY, max(0, len(status) - 256)),
        )

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
