"""Per-process figures from kept-open /proc files: parsing on made-up files, and agreement with psutil
on this very process."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from workers.procfs import CLOCK_TICKS, ProcessFiles, ProcessGone, split_cmdline

PID = 4242
STATUS = "Name:\tpython\nState:\tS (sleeping)\nVmRSS:\t    2048 kB\nThreads:\t3\n" \
         "voluntary_ctxt_switches:\t17\nnonvoluntary_ctxt_switches:\t4\n"


def fake_process(tmp_path: Path, comm: str = "sleep", state: str = "S", cmdline: bytes = b"sleep\x001000\x00") -> str:
    directory = tmp_path / str(PID)
    directory.mkdir()
    # utime 150 and stime 50 ticks (fields 14, 15); 3 threads (field 20)
    fields = [state, "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", "150", "50", "0", "0", "20", "0", "3", "0",
              "100", "1000", "99"]
    (directory / "stat").write_text(f"{PID} ({comm}) {' '.join(fields)}\n")
    (directory / "status").write_text(STATUS)
    (directory / "cmdline").write_bytes(cmdline)
    return str(tmp_path)


@pytest.mark.parametrize("raw, argv", [
    (b"sleep\x001000\x00", ["sleep", "1000"]),
    (b"", []),  # a kernel thread
    (b"nginx: worker process\x00", ["nginx:", "worker", "process"]),  # a rewritten title, split like psutil does
    (b"postgres: writer   ", ["postgres:", "writer", "", ""]),  # psutil drops one trailing separator
    (b"caf\xc3\xa9\x00\xff\x00", ["café", "\ufffd"]),  # never raises on bytes that are not UTF-8
])
def test_command_lines_split_like_psutil(raw: bytes, argv: list) -> None:
    assert split_cmdline(raw) == argv


def test_figures_from_stat_status_and_cmdline(tmp_path: Path) -> None:
    files = ProcessFiles(PID, proc=fake_process(tmp_path, comm="my (odd) name"))
    try:
        figures = files.read()
        assert figures.name == "my (odd) name"  # the comm field may hold spaces and parentheses
        assert figures.cmdline == ["sleep", "1000"]
        assert figures.cpu_seconds == pytest.approx(200 / CLOCK_TICKS)
        assert (figures.rss_bytes, figures.threads) == (2048 * 1024, 3)
        assert (figures.ctx_switches_voluntary, figures.ctx_switches_involuntary) == (17, 4)
        (tmp_path / str(PID) / "cmdline").write_bytes(b"sleep\x002000\x00")  # exec'd anew: seen on the same fd
        assert files.read().cmdline == ["sleep", "2000"]
    finally:
        files.close()


def test_a_cut_comm_is_extended_from_argv0(tmp_path: Path) -> None:
    proc = fake_process(tmp_path, comm="a-very-long-pro", cmdline=b"/usr/bin/a-very-long-program\x00-x\x00")
    files = ProcessFiles(PID, proc=proc)
    try:
        assert files.read().name == "a-very-long-program"
    finally:
        files.close()


def test_zombies_and_missing_processes_are_gone(tmp_path: Path) -> None:
    files = ProcessFiles(PID, proc=fake_process(tmp_path, state="Z", cmdline=b""))
    try:
        with pytest.raises(ProcessGone):
            files.read()
    finally:
        files.close()
    with pytest.raises(ProcessGone):
        ProcessFiles(PID + 1, proc=str(tmp_path))


def test_agrees_with_psutil_on_this_process() -> None:
    files = ProcessFiles(psutil.Process().pid)
    try:
        figures = files.read()
    finally:
        files.close()
    me = psutil.Process()
    assert (figures.name, figures.cmdline, figures.threads) == (me.name(), me.cmdline(), me.num_threads())
    assert figures.rss_bytes == pytest.approx(me.memory_info().rss, rel=0.2)
    assert figures.cpu_seconds == pytest.approx(sum(me.cpu_times()[:2]), abs=0.1)
    switches = me.num_ctx_switches()
    assert figures.ctx_switches_voluntary <= switches.voluntary
    assert figures.ctx_switches_involuntary <= switches.involuntary
