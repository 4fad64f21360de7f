"""Sampling maths and cgroup parsing, on made-up /proc and cgroup trees (v1 and v2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.cgroups import CgroupFiles, Counters, parse_net_dev
from workers.sampler import MAX_CMDLINE_CHARS, MAX_PROCESSES, Reading, busiest, container_figures, cpu_percent, trim_cmdline

PID = 4242


@pytest.mark.parametrize(
    "before, after, elapsed, expected",
    [
        (10.0, 10.5, 1.0, 50.0),  # half a core
        (0.0, 3.0, 1.5, 200.0),  # two cores, as `docker stats` shows it
        (5.0, 5.0, 1.0, 0.0),
        (5.0, 4.0, 1.0, 0.0),  # a counter that went back (new cgroup): no negative figure
        (1.0, 2.0, 0.0, 0.0),  # no time passed: nothing to compare
    ],
)
def test_cpu_percent_is_per_core_from_deltas(before, after, elapsed, expected) -> None:
    assert cpu_percent(before, after, elapsed) == expected


def counters(cpu_ns: int, **overrides) -> Counters:
    values = dict(cpu_ns=cpu_ns, memory_bytes=1000, memory_limit_bytes=None, pids=None,
                  blkio_read_bytes=None, blkio_write_bytes=None, procs=(1, 2, 3))
    values.update(overrides)
    return Counters(**values)


def test_container_figures_from_two_readings() -> None:
    first = container_figures(counters(2_000_000_000), (None, None), None, 10.0)
    assert first["cpu_percent"] == 0.0  # the first sample has nothing to compare with
    assert first["pids"] == 3  # counted from cgroup.procs when pids.current is absent
    assert first["memory_limit_bytes"] > 0  # no limit: the host's memory
    later = container_figures(counters(2_750_000_000, pids=7, memory_limit_bytes=64 << 20), (10, 20),
                              Reading(at=10.0, cpu_ns=2_000_000_000), 11.0)
    assert later["cpu_percent"] == 75.0
    assert (later["pids"], later["memory_limit_bytes"]) == (7, 64 << 20)
    assert (later["net_rx_bytes"], later["net_tx_bytes"]) == (10, 20)


def test_long_command_lines_are_cut_at_whole_arguments() -> None:
    argv = ["a" * 1000] * 10
    kept = trim_cmdline(argv)
    assert 0 < len(kept) < 10 and all(arg == "a" * 1000 for arg in kept)
    assert sum(len(a) + 1 for a in kept) <= MAX_CMDLINE_CHARS
    assert trim_cmdline(["sh", "-c", "x"]) == ["sh", "-c", "x"]


def test_only_the_busiest_processes_are_kept_in_pid_order() -> None:
    rows = [{"pid": pid, "cpu_percent": float(pid % 7)} for pid in range(MAX_PROCESSES + 50)]
    kept = busiest(rows)
    assert len(kept) == MAX_PROCESSES
    assert [r["pid"] for r in kept] == sorted(r["pid"] for r in kept)
    assert min(r["cpu_percent"] for r in kept) >= max(r["cpu_percent"] for r in rows if r not in kept)
    few = rows[:5]
    assert busiest(few) is few


def test_net_dev_sums_every_interface_but_loopback() -> None:
    text = (
        b"Inter-|   Receive                                                |  Transmit\n"
        b" face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets\n"
        b"    lo:  999 1 0 0 0 0 0 0  999 1 0 0 0 0 0 0\n"
        b"  eth0: 1500 3 0 0 0 0 0 0  700 2 0 0 0 0 0 0\n"
        b"  eth1:  500 1 0 0 0 0 0 0  300 1 0 0 0 0 0 0\n"
    )
    assert parse_net_dev(text) == (2000, 1000)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fake_proc(tmp_path: Path, mountinfo: str, cgroup: str) -> str:
    proc = tmp_path / "proc"
    write(proc / "self/mountinfo", mountinfo)
    write(proc / str(PID) / "cgroup", cgroup)
    return str(proc)


def test_cgroup_v1_counters(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    mountinfo = "".join(
        f"{30 + i} 25 0:{i} / {root}/{name} rw,nosuid - cgroup cgroup rw,{options}\n"
        for i, (name, options) in enumerate(
            [("cpu,cpuacct", "cpu,cpuacct"), ("memory", "memory"), ("pids", "pids"), ("blkio", "blkio")]
        )
    ) + f"40 25 0:9 / {tmp_path}/other rw - ext4 /dev/sda1 rw\n"
    cgroup = "5:blkio:/docker/abc\n4:pids:/docker/abc\n3:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    cpu, mem, pids, blk = (root / "cpu,cpuacct/docker/abc", root / "memory/docker/abc", root / "pids/docker/abc",
                           root / "blkio/docker/abc")
    write(cpu / "cpuacct.usage", "123456789\n")
    write(cpu / "cgroup.procs", "10\n11\n12\n")
    write(mem / "memory.usage_in_bytes", "50000\n")
    write(mem / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    write(mem / "memory.stat", "cache 100\ninactive_file 1\ntotal_inactive_file 20000\n")
    write(pids / "pids.current", "3\n")
    write(blk / "blkio.throttle.io_service_bytes",
          "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n")

    files = CgroupFiles(PID, proc=fake_proc(tmp_path, mountinfo, cgroup))
    try:
        assert files.version == 1
        first = files.read()
        assert first == Counters(cpu_ns=123456789, memory_bytes=30000, memory_limit_bytes=None, pids=3,
                                 blkio_read_bytes=4097, blkio_write_bytes=8192, procs=(10, 11, 12))
        write(cpu / "cpuacct.usage", "223456789\n")  # the kept descriptor sees new content
        write(mem / "memory.limit_in_bytes", "67108864\n")
        light = files.read(full=False)  # CPU and memory now; the limit, block I/O and pids from the last full read
        assert light.cpu_ns == 223456789 and light.memory_limit_bytes is None and light.procs == (10, 11, 12)
        second = files.read()
        assert second.cpu_ns == 223456789 and second.memory_limit_bytes == 64 << 20
    finally:
        files.close()


def test_cgroup_v2_counters_under_a_nested_mount_root(tmp_path: Path) -> None:
    mount = tmp_path / "unified"
    # the mount shows the host's tree from /sys.slice: the container's path is relative to that root
    mountinfo = f"30 25 0:26 /sys.slice {mount} rw,nosuid - cgroup2 cgroup2 rw\n"
    cgroup = "0::/sys.slice/docker-abc.scope\n"
    directory = mount / "docker-abc.scope"
    write(directory / "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    write(directory / "memory.current", "4096\n")
    write(directory / "memory.max", "max\n")
    write(directory / "memory.stat", "anon 1\ninactive_file 1024\n")
    write(directory / "cgroup.procs", "77\n")
    write(directory / "io.stat", "8:0 rbytes=100 wbytes=200 rios=1 wios=2\n8:16 rbytes=1 wbytes=2\n")

    files = CgroupFiles(PID, proc=fake_proc(tmp_path, mountinfo, cgroup))
    try:
        assert files.version == 2
        assert files.read() == Counters(cpu_ns=1_500_000, memory_bytes=3072, memory_limit_bytes=None, pids=None,
                                        blkio_read_bytes=101, blkio_write_bytes=202, procs=(77,))
    finally:
        files.close()


def test_a_process_without_a_cgroup_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        CgroupFiles(PID, proc=fake_proc(tmp_path, "30 25 0:26 / /x rw - ext4 /dev/sda rw\n", "0::/\n"))


def test_a_file_the_kernel_gives_a_page_a_read_is_read_whole(monkeypatch, tmp_path) -> None:
    """cgroup v1's cgroup.procs answers 4 KB a read whatever is asked: 5,000 pids are ~24 KB."""
    import os

    from workers import cgroups

    pids = b"".join(b"%d\n" % pid for pid in range(100000, 105001))
    path = tmp_path / "cgroup.procs"
    path.write_bytes(pids)
    real = os.pread
    reads = []

    def by_page(fd: int, size: int, offset: int) -> bytes:
        reads.append(offset)
        return real(fd, min(size, 4095 - offset % 4095 if offset % 4095 else 4095), offset)

    monkeypatch.setattr(cgroups.os, "pread", by_page)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert cgroups.pread_all(fd) == pids
        reads.clear()
        small = tmp_path / "cpuacct.usage"
        small.write_bytes(b"123456789\n")
        fd2 = os.open(small, os.O_RDONLY)
        assert cgroups.pread_all(fd2) == b"123456789\n" and len(reads) == 1  # one call for a small file
        os.close(fd2)
        monkeypatch.setattr(cgroups.os, "pread", lambda fd, size, offset: real(fd, min(size, 4096), offset))
        assert cgroups.pread_all(fd) == pids  # pages of exactly 4 KB
    finally:
        os.close(fd)
