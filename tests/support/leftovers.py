"""What a supervisor may leave behind once it has ended by itself: none of it may be left."""

from __future__ import annotations

import glob
import os
from typing import Callable, List

from supervisor.lock import lock_dir
from tests.support.supervisor import Supervisor


def group_processes(pgid: int) -> List[int]:
    """Live processes in a process group (the supervisor's, since it leads its own session)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(entry))
    return found


def assert_nothing_left(run: Supervisor, containers: Callable[[], List[str]]) -> None:
    """No container (as ``containers`` lists them: a private engine has its own), no process, no lock
    or seq file, no traceback."""
    assert containers() == []
    assert run.proc is not None and group_processes(run.proc.pid) == []
    assert glob.glob(os.path.join(lock_dir(), f"{run.service}.*")) == []
    assert "Traceback" not in run.output()
