"""systemd's notify protocol for a host tree (issue 12: ``python -m supervisor DIR``, as
conf/horizon-host.service runs it), through a NOTIFY_SOCKET of the test's own and WATCHDOG_USEC:

- READY=1 once every task the tree started with runs and is registered: at the moment it comes, etcd
  already says ``running`` for each; then a STATUS= line saying how many tasks run, and WATCHDOG=1 pings
  often enough that systemd's watchdog never fires;
- SIGHUP (ExecReload) after a file is added starts that task alone (the others keep their container and
  their start) and a STATUS= line counts it; READY=1 is not sent again;
- SIGTERM (systemctl stop): STOPPING=1, exit 0, every final record written as ``stopped``, nothing left;
- an empty directory: READY=1 at once (the first word the tree says), a log line saying there are no task
  files, a STATUS= line, and the pings.

Each tree has a namespace of its own under /horizon-test and services of its own; containers, keys,
processes are removed even when a test fails. The tree's workers, restarts and reload cases beyond these
are the host tree's own tests.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

from supervisor.lock import lock_dir
from tests.support import ETCD_HOSTS, NAMESPACE, POLITE
from tests.support.docker import docker
from tests.support.etcd import etcd_client
from tests.support.ini import write_ini
from tests.support.leftovers import assert_nothing_left
from tests.support.notify import NotifyListener
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for

INTERVAL = 0.5  # the tasks' sampling interval
WATCHDOG_USEC = 2_000_000  # systemd's WatchdogSec as the tree sees it: a ping every 1 s while all is well
WATCHDOG_S = WATCHDOG_USEC / 1e6
START = 60  # seconds a tree may take to run its tasks (an image is local: far less)


Listen = Callable[[Callable[[], Any]], NotifyListener]  # notify_env: a listener, given what to read at READY=1


class Tree:
    """A directory of task files and the ``python -m supervisor DIR`` run on it: ``launcher`` starts it and
    reads the first task's service; ``tasks`` (label -> Supervisor) reads and cleans each task's service."""

    def __init__(self, directory: Path, logs: Path, api: str) -> None:
        self.directory = directory
        self.directory.mkdir()
        self.api = api
        self.namespace = f"{NAMESPACE}/host-{uuid.uuid4().hex[:12]}"
        self.launcher = Supervisor(f"h{uuid.uuid4().hex[:10]}", logs / "tree.log", namespace=self.namespace, api=api)
        self.tasks: Dict[str, Supervisor] = {}
        (directory / "horizon.ini").write_text(
            f"[etcd]\napi = {api}\nhosts = {ETCD_HOSTS[api]}\nnamespace = {self.namespace}\n"
            "[endpoint]\nhost = 127.0.0.1\nport = 0\n"
        )

    def add(self, label: str) -> Supervisor:
        """``DIR/SERVICE.ini``: a task that stops at once on SIGTERM, in a service of its own; the first
        one is the launcher's service."""
        service = self.launcher.service if not self.tasks else f"h{uuid.uuid4().hex[:10]}"
        run = self.launcher if not self.tasks else Supervisor(service, self.launcher.log_path, namespace=self.namespace,
                                                          api=self.api)
        write_ini(self.directory, service, POLITE, api=self.api,
                  etcd=f"namespace = {self.namespace}\n[metrics]\ninterval = {INTERVAL}\n")
        self.tasks[label] = run
        return run

    def start(self) -> Supervisor:
        return self.launcher.start(["-m", "supervisor", str(self.directory)])

    def signal(self, signum: int) -> None:
        assert self.launcher.proc is not None
        os.kill(self.launcher.proc.pid, signum)  # the main process only, as systemd's KillMode=mixed and kill -HUP

    def states(self) -> Dict[str, Optional[str]]:
        return {label: run.state() for label, run in self.tasks.items()}

    def cleanup(self) -> None:
        self.launcher.cleanup()  # first: its process group, then the launcher's service
        for run in self.tasks.values():
            if run is not self.launcher:
                run.cleanup()
        self.launcher.etcd.delete(self.namespace)


@pytest.fixture
def tree(services: None, tmp_path: Path, etcd_api: str, request: pytest.FixtureRequest) -> Iterator[Tree]:
    made = Tree(tmp_path / "tasks.d", tmp_path, etcd_api)
    try:
        yield made
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed and made.launcher.log_path.exists():
            print(f"--- host tree output ({made.directory}) ---\n{made.launcher.log_path.read_text()}")
        made.cleanup()


@pytest.fixture
def notify_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path
               ) -> Iterator[Listen]:
    """A NotifyListener the next supervisor started notifies (with WATCHDOG_USEC, for any pid); closed after."""
    listeners: List[NotifyListener] = []

    def make(on_ready: Callable[[], Any]) -> NotifyListener:
        listener = NotifyListener(tmp_path / f"notify-{len(listeners)}.sock", on_ready)
        listeners.append(listener)
        monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
        monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
        return listener

    yield make
    for listener in listeners:
        listener.close()


def running_containers(run: Supervisor) -> List[str]:
    """The service's containers, running ones only, by full id."""
    return docker("ps", "-q", "--no-trunc", "--filter", f"label=horizon.service={run.service}").split()


def alive(run: Supervisor, what: str) -> Callable[[], Any]:
    """For wait_for: fail at once, with its exit status, when the tree ended while ``what`` was awaited."""
    def check() -> Any:
        assert run.proc is not None
        code = run.proc.poll()
        assert code is None, f"the tree exited with status {code} while waiting for {what}"
        return True
    return check


def ready_of(listener: NotifyListener, run: Supervisor, timeout: float) -> float:
    """When READY=1 came: waited for while the tree lives."""
    running = alive(run, "READY=1")
    return float(wait_for(lambda: listener.first("READY=1") or (running() and None), timeout, "READY=1"))


def assert_gaps_within_watchdog(listener: NotifyListener, since: float, until: float, what: str) -> None:
    """No gap between two pings reached WatchdogSec: systemd would have killed the tree (the tree pings at
    half of it, so one ping withheld is already that much). The STATUS= lines of the time say why."""
    pings = listener.pings(since, until)
    gaps = [round(b - a, 2) for a, b in zip(pings, pings[1:])]
    said = [got for at, got in listener.fields(since) if at <= until and got.startswith("STATUS=")]
    assert gaps and max(gaps) < WATCHDOG_S, f"{what}: a gap between WATCHDOG=1 pings reached WatchdogSec " \
                                            f"({WATCHDOG_S} s), where systemd would have killed the tree: " \
                                            f"gaps {gaps}; meanwhile {said}"


def test_ready_status_watchdog_then_reload_and_stop(tree: Tree, notify_env: Listen) -> None:
    first = [tree.add("a"), tree.add("b")]
    listener = notify_env(lambda: tree.states())
    started = time.monotonic()
    tree.start()

    # READY=1 once both tasks run and etcd says so
    ready = ready_of(listener, tree.launcher, START)
    assert listener.at_ready == {"a": "running", "b": "running"}, \
        f"READY=1 came {ready - started:.1f} s after the start, while etcd said {listener.at_ready}"
    for run in first:
        assert len(running_containers(run)) == 1, f"{run.service}: not one running container at READY=1"
    wait_for(lambda: any(re.match(r"2 tasks running\b", s) for s in listener.statuses(ready)), 5,
             "a STATUS= line saying 2 tasks run, after READY=1")

    # WATCHDOG=1 while all is well, often enough
    running = alive(tree.launcher, "WATCHDOG=1 pings")
    wait_for(lambda: running() and len(listener.pings(ready)) >= 4, 6 * WATCHDOG_S, "WATCHDOG=1 pings after READY=1")
    assert_gaps_within_watchdog(listener, ready, time.monotonic(), "two tasks running")
    before = {run.service: (run.record()["status"]["started_at"], running_containers(run)) for run in first}

    # SIGHUP after a third file: that task starts, the others are not touched
    third = tree.add("c")
    reloaded = time.monotonic()
    tree.signal(signal.SIGHUP)
    third.wait_state("running", START, "the added file's task running after SIGHUP")
    wait_for(lambda: any(re.match(r"3 tasks running\b", s) for s in listener.statuses(reloaded)), 5,
             "a STATUS= line saying 3 tasks run, after SIGHUP")
    assert {run.service: (run.record()["status"]["started_at"], running_containers(run)) for run in first} == before, \
        "a task whose file did not change was restarted by the reload"
    assert len(running_containers(third)) == 1
    now = time.monotonic()
    running = alive(tree.launcher, "WATCHDOG=1 pings with three tasks")
    wait_for(lambda: running() and len(listener.pings(now)) >= 3, 5 * WATCHDOG_S, "WATCHDOG=1 pings with three tasks")

    # SIGTERM: STOPPING=1, exit 0, every final record written
    stopped = time.monotonic()
    assert_gaps_within_watchdog(listener, ready, stopped, "from READY=1 through the reload")
    tree.signal(signal.SIGTERM)
    code = tree.launcher.wait(60)
    assert code == 0, f"the tree exited {code} on SIGTERM"
    assert listener.first("STOPPING=1", stopped) is not None, f"no STOPPING=1: {listener.fields(stopped)}"
    for label, run in tree.tasks.items():
        record = run.record()
        assert record.get("status", {}).get("state") == "stopped" and record.get("running") is False, \
            f"task {label}: final record {record}"
    assert [text for _, text in listener.messages].count("READY=1") == 1, "READY=1 sent more than once"
    assert_nothing_left(tree.launcher, lambda: [c for run in tree.tasks.values() for c in run.containers()])
    for run in tree.tasks.values():
        assert glob.glob(os.path.join(lock_dir(), f"{run.service}.*")) == [], f"{run.service}: lock or seq file left"


@pytest.mark.parametrize("settings", [False, True], ids=["empty", "horizon.ini only"])
def test_an_empty_directory_is_ready_at_once_and_says_so(services: None, tmp_path: Path, notify_env: Listen,
                                                         settings: bool) -> None:
    directory = tmp_path / "tasks.d"
    directory.mkdir()
    namespace = f"{NAMESPACE}/host-{uuid.uuid4().hex[:12]}"
    if settings:  # on the v3 etcd, in a namespace of its own (no task: nothing is written)
        (directory / "horizon.ini").write_text(
            f"[etcd]\napi = v3\nhosts = {ETCD_HOSTS['v3']}\nnamespace = {namespace}\n[endpoint]\nport = 0\n")
    run = Supervisor(f"h{uuid.uuid4().hex[:10]}", tmp_path / "tree.log", namespace=namespace, api="v3")
    listener = notify_env(lambda: None)
    try:
        run.start(["-m", "supervisor", str(directory)])
        ready = ready_of(listener, run, 30)  # an interpreter's start, on a loaded machine
        # at once: before the tree's first turn (which pings, or says what it still waits for)
        assert listener.messages[0][1].split("\n")[0] == "READY=1", f"READY=1 was not the first word: " \
                                                                    f"{listener.messages}"
        said = [line for line in run.output().splitlines() if "no task files" in line]
        assert len(said) == 1 and str(directory) in said[0], run.output()
        wait_for(lambda: any(re.match(r"0 tasks running\b", s) for s in listener.statuses()), 5,
                 "a STATUS= line saying no task runs")
        wait_for(lambda: len(listener.pings(ready)) >= 3, 5 * WATCHDOG_S, "WATCHDOG=1 pings")
        assert_gaps_within_watchdog(listener, ready, time.monotonic(), "an empty tree")
        stopped = time.monotonic()
        assert run.proc is not None
        os.kill(run.proc.pid, signal.SIGTERM)
        assert run.wait(20) == 0
        assert listener.first("STOPPING=1", stopped) is not None, listener.fields(stopped)
        assert_nothing_left(run, run.containers)
        if settings:
            assert etcd_client("v3").tasks(f"{namespace}/services") == [], "a record of no task"
    except BaseException:
        print(f"--- host tree output ({directory}) ---\n{run.output() if run.log_path.exists() else ''}")
        raise
    finally:
        run.cleanup()
        if settings:
            run.etcd.delete(namespace)
