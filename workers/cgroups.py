"""A container's kernel counters, read straight from its cgroup and /proc files.

The engine's own stats call waits for its next once-a-second collection (1-2 s a call); these files
answer in microseconds. Each file is opened once and re-read with ``os.pread`` on the kept descriptor,
except ``cgroup.procs``: on cgroup v1 a kept descriptor keeps serving the pid list loaded at its first
read for as long as it is re-read within a second (the kernel caches the list per open file and drops
it only after 1 s unused), so new processes would never show; it is opened afresh each time (~10 µs).
Paths come from ``/proc/<pid>/cgroup`` of the container's first process and this host's mount table,
so cgroup v1 (cgroupfs or systemd driver) and v2 both work. Once the container's cgroup is removed,
``read()`` raises ``OSError``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

_CHUNK = 1 << 16
_PAGE = 4096
_LINE = 256  # longer than any line of the files read here: a read stopped at a page ends within this of it
_NO_LIMIT = 1 << 60  # v1 reports 'no limit' as a huge page-aligned number


@dataclass(frozen=True)
class Counters:
    cpu_ns: int
    memory_bytes: int
    memory_limit_bytes: Optional[int]
    pids: Optional[int]
    blkio_read_bytes: Optional[int]
    blkio_write_bytes: Optional[int]
    procs: Tuple[int, ...]


def pread_all(fd: int) -> bytes:
    """The whole file behind a kept descriptor, read from offset 0. A read of these files may stop at a
    page whatever was asked (cgroup v1's cgroup.procs gives 4 KB a read: 5,000 pids were counted as 819):
    a read that ends within a line's length of a page boundary is followed by another, until one ends
    short of it. A file of under a page less a line costs one call."""
    data = os.pread(fd, _CHUNK, 0)
    if not _at_page(len(data)):
        return data
    parts, offset = [data], len(data)
    while True:
        chunk = os.pread(fd, _CHUNK, offset)
        parts.append(chunk)
        offset += len(chunk)
        if not _at_page(len(chunk)):
            return b"".join(parts)


def _at_page(size: int) -> bool:
    """A read of ``size`` bytes may have stopped at a page boundary, with more to come."""
    return size > 0 and (size % _PAGE == 0 or size % _PAGE >= _PAGE - _LINE)


def _stat_value(text: bytes, key: bytes) -> int:
    """The value of ``key`` in a flat-keyed file (memory.stat, cpu.stat); 0 when absent. A find, not a
    loop over lines: memory.stat has ~40 of them and this runs every sample."""
    key += b" "
    if text.startswith(key):
        start = len(key)
    else:
        at = text.find(b"\n" + key)
        if at < 0:
            return 0
        start = at + 1 + len(key)
    end = text.find(b"\n", start)
    return int(text[start:end] if end >= 0 else text[start:])


def _mounts(proc: str) -> Tuple[Dict[str, Tuple[str, str]], Optional[Tuple[str, str]]]:
    """v1 controller -> (mount root, mount point), and the v2 (root, mount point) if mounted."""
    v1: Dict[str, Tuple[str, str]] = {}
    v2 = None
    with open(os.path.join(proc, "self/mountinfo"), encoding="utf-8") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            fields, (fstype, _source, options) = left.split(), right.split()[:3]
            root, point = fields[3], fields[4]
            if fstype == "cgroup2":
                v2 = (root, point)
            elif fstype == "cgroup":
                for controller in options.split(","):
                    v1.setdefault(controller, (root, point))
    return v1, v2


def _join(mount: Tuple[str, str], path: str) -> str:
    root, point = mount
    if root != "/" and path.startswith(root):
        path = path[len(root):]
    return os.path.join(point, path.lstrip("/"))


class CgroupFiles:
    """Kept-open descriptors on one container's counters."""

    def __init__(self, pid: int, proc: str = "/proc") -> None:
        self._fds: Dict[str, int] = {}
        self._last: Optional[Counters] = None
        self.procs_path = ""  # cgroup.procs: read by path, see the module's docstring
        v1_mounts, v2_mount = _mounts(proc)
        v1_paths: Dict[str, str] = {}
        v2_path = None
        with open(os.path.join(proc, str(pid), "cgroup"), encoding="utf-8") as handle:
            for line in handle:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    v2_path = path
                for controller in controllers.split(","):
                    v1_paths[controller] = path
        self.version = 1 if "memory" in v1_paths and "memory" in v1_mounts else 2
        try:
            if self.version == 1:
                self._open_v1(v1_mounts, v1_paths)
            elif v2_mount and v2_path is not None:
                self._open_v2(_join(v2_mount, v2_path))
            else:
                raise OSError(f"no cgroup found for pid {pid}")
        except OSError:
            self.close()
            raise

    def _find_procs(self, path: str) -> None:
        """Check that ``cgroup.procs`` is there (a missing cgroup fails here); it is reopened per read."""
        os.close(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        self.procs_path = path

    def _open(self, name: str, path: str, required: bool = True) -> None:
        try:
            self._fds[name] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            if required:
                raise

    def _open_v1(self, mounts: Dict[str, Tuple[str, str]], paths: Dict[str, str]) -> None:
        def where(controller: str, file: str) -> str:
            return os.path.join(_join(mounts[controller], paths[controller]), file)

        self._open("cpu", where("cpuacct", "cpuacct.usage"))
        self._open("memory", where("memory", "memory.usage_in_bytes"))
        self._open("memory_limit", where("memory", "memory.limit_in_bytes"))
        self._open("memory_stat", where("memory", "memory.stat"))
        self._find_procs(where("cpuacct", "cgroup.procs"))
        if "pids" in mounts and "pids" in paths:
            self._open("pids", where("pids", "pids.current"), required=False)
        if "blkio" in mounts and "blkio" in paths:
            self._open("io", where("blkio", "blkio.throttle.io_service_bytes"), required=False)

    def _open_v2(self, directory: str) -> None:
        self._find_procs(os.path.join(directory, "cgroup.procs"))
        for name, file, required in (
            ("cpu", "cpu.stat", True), ("memory", "memory.current", True), ("memory_limit", "memory.max", True),
            ("memory_stat", "memory.stat", True), ("pids", "pids.current", False), ("io", "io.stat", False),
        ):
            self._open(name, os.path.join(directory, file), required)

    def _optional_int(self, name: str) -> Optional[int]:
        return int(pread_all(self._fds[name])) if name in self._fds else None

    def _io(self) -> Tuple[Optional[int], Optional[int]]:
        if "io" not in self._fds:
            return None, None
        read = written = 0
        for line in pread_all(self._fds["io"]).splitlines():
            if self.version == 1:
                parts = line.split()
                if len(parts) == 3 and parts[1] == b"Read":
                    read += int(parts[2])
                elif len(parts) == 3 and parts[1] == b"Write":
                    written += int(parts[2])
            else:
                for item in line.split()[1:]:
                    key, _, value = item.partition(b"=")
                    if key == b"rbytes":
                        read += int(value)
                    elif key == b"wbytes":
                        written += int(value)
        return read, written

    def read(self, full: bool = True) -> Counters:
        """The counters. ``full`` False re-reads only what moves between close samples (CPU, memory, pids)
        and repeats the rest (memory limit, block I/O, the pid list) from the last full read."""
        stat = pread_all(self._fds["memory_stat"])
        if self.version == 1:
            cpu_ns = int(pread_all(self._fds["cpu"]))
            inactive = _stat_value(stat, b"total_inactive_file")
        else:
            cpu_ns = _stat_value(pread_all(self._fds["cpu"]), b"usage_usec") * 1000
            inactive = _stat_value(stat, b"inactive_file")
        usage = int(pread_all(self._fds["memory"]))
        if full or self._last is None:
            raw_limit = pread_all(self._fds["memory_limit"]).strip()
            limit = None if raw_limit == b"max" or int(raw_limit) >= _NO_LIMIT else int(raw_limit)
            blk_read, blk_write = self._io()
            procs = self._procs()
        else:
            last = self._last
            limit, blk_read, blk_write, procs = last.memory_limit_bytes, last.blkio_read_bytes, last.blkio_write_bytes, last.procs
        self._last = Counters(
            cpu_ns=cpu_ns,
            # what `docker stats` shows: the page cache that could be dropped is not counted
            memory_bytes=max(usage - inactive, 0),
            memory_limit_bytes=limit,
            pids=self._optional_int("pids"),
            blkio_read_bytes=blk_read,
            blkio_write_bytes=blk_write,
            procs=procs,
        )
        return self._last

    def _procs(self) -> Tuple[int, ...]:
        fd = os.open(self.procs_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            return tuple(int(pid) for pid in pread_all(fd).split())
        finally:
            os.close(fd)

    def fds(self) -> Tuple[int, ...]:
        """The kept-open descriptors (for measuring what reading them costs)."""
        return tuple(self._fds.values())

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class NetDev:
    """Byte counters of a container's network namespace, or None when it shares ours (network host)."""

    def __init__(self, pid: int, proc: str = "/proc") -> None:
        own = os.stat(os.path.join(proc, "self/ns/net")).st_ino
        self.shared = os.stat(os.path.join(proc, str(pid), "ns/net")).st_ino == own
        self._fd = None if self.shared else os.open(os.path.join(proc, str(pid), "net/dev"), os.O_RDONLY | os.O_CLOEXEC)

    def read(self) -> Tuple[Optional[int], Optional[int]]:
        if self._fd is None:
            return None, None
        return parse_net_dev(pread_all(self._fd))

    def fds(self) -> Tuple[int, ...]:
        return () if self._fd is None else (self._fd,)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def parse_net_dev(text: bytes) -> Tuple[int, int]:
    """(rx, tx) bytes over every interface but loopback."""
    rx = tx = 0
    for line in text.splitlines()[2:]:
        name, _, counters = line.partition(b":")
        fields: List[bytes] = counters.split()
        if name.strip() != b"lo" and len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx
