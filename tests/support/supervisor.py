"""A supervisor started as a user starts it, for tests and benchmarks alike."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from tests.support import IMAGE, NAMESPACE, ROOT


def interruptible() -> None:
    """A ``preexec_fn``: SIGINT as a terminal's Ctrl-C delivers it, even when the suite runs as a background
    job (a shell starts those with SIGINT ignored, Python keeps it ignored, and the child never hears it)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
from tests.support.docker import docker, service_containers
from tests.support.etcd import Etcd, TaskNode, etcd_client, task_keys
from tests.support.waiting import wait_for

ROLES = ("container", "publisher", "endpoint")  # each worker names itself hz-ROLE


def has_flag(flags: Sequence[str], *names: str) -> bool:
    """One of ``names`` is among ``flags``, as ``NAME VALUE`` or ``NAME=VALUE``."""
    return any(flag == name or flag.startswith(f"{name}=") for flag in flags for name in names)


class Supervisor:
    """One ``python main.py ...`` or ``python -m supervisor x.ini`` run, in its own session (signals to
    it never reach the test run), its output in ``log_path``. It knows its service (and so its keys
    under ``prefix`` and its containers), the port it was given if any, and the etcd ``etcd`` its
    record is read from, whose API is the run's (``api``: the shared etcd of ``api`` unless ``etcd`` is
    given); ``cleanup`` removes the process group, the containers and the keys."""

    def __init__(self, service: str, log_path: Path, namespace: str = NAMESPACE, etcd: Optional[Etcd] = None,
                 port: Optional[int] = None, api: str = "v3") -> None:
        self.service = service
        self.namespace = namespace
        self.prefix = f"{namespace}/services/{service}"
        self.log_path = log_path
        self.etcd = etcd or etcd_client(api)  # fault tests point it at a private member
        self.port = port
        self.proc: Optional[subprocess.Popen] = None

    @property
    def api(self) -> str:
        """The run's etcd API: the one its record is read with, so that a test that points ``etcd`` at
        another member (of another API) starts the supervisor on that API too."""
        return self.etcd.api

    def start(self, argv: List[str], env: Optional[Mapping[str, str]] = None) -> "Supervisor":
        """``python ARGV`` from the repository, with our environment plus ``env``."""
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, *argv], cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
            env=dict(os.environ, **env) if env else None,
        )
        return self

    def main(self, command: str, *flags: str, image: str = IMAGE, env: Optional[Mapping[str, str]] = None
             ) -> "Supervisor":
        """``python main.py IMAGE COMMAND`` in this run's namespace, service and port (if given), on the
        run's API and at the member ``etcd`` reads, unless ``flags`` say otherwise."""
        port = ["--port", str(self.port)] if self.port is not None else []
        api = [] if has_flag(flags, "--etcd-api") else ["--etcd-api", self.api]
        hosts = [] if has_flag(flags, "--etcd", "--etcd-hosts") else ["--etcd", self.etcd.address]
        return self.start(["main.py", image, command, "--service", self.service, "--etcd-namespace", self.namespace,
                           *api, *hosts, *port, *flags], env)

    def ini(self, path: Path, *flags: str) -> "Supervisor":
        """``python -m supervisor PATH``: the task as a file says it (service, namespace, port included)."""
        return self.start(["-m", "supervisor", str(path), *flags])

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.log_path.read_text()

    def task(self) -> Optional[TaskNode]:
        """The service's first task (keys, TTL, leases), or None."""
        tasks = self.etcd.tasks(self.prefix)
        return tasks[0] if tasks else None

    def record(self) -> Dict[str, Any]:
        """The task's keys, JSON-decoded: {'status': {...}, 'running': True, ...} ({} when absent)."""
        return task_keys(self.task())

    def state(self) -> Optional[str]:
        return self.record().get("status", {}).get("state")

    def wait_state(self, state: str, timeout: float, what: str = "") -> None:
        wait_for(lambda: self.state() == state, timeout, what or f"state {state}")

    def url(self, timeout: float = 20) -> str:
        """The endpoint: at the port we gave it, else where etcd says it is (once it says so)."""
        if self.port is not None:
            return f"http://127.0.0.1:{self.port}"
        return wait_for(lambda: self.record().get("endpoint", {}).get("url"), timeout, "the endpoint in etcd")

    def workers(self) -> Dict[str, int]:
        """Worker role -> pid, from the process names the workers give themselves (hz-container, ...)."""
        assert self.proc is not None
        found = {}
        for line in subprocess.run(["ps", "-o", "pid=,ppid=,comm=", "-e"], capture_output=True, text=True).stdout.splitlines():
            pid, ppid, comm = line.split(None, 2)
            if int(ppid) == self.proc.pid and comm.startswith("hz-") and comm[3:] in ROLES:
                found[comm[3:]] = int(pid)
        return found

    def all_workers(self) -> Optional[Dict[str, int]]:
        """The three workers from one look at the process table, or None while one is missing."""
        found = self.workers()
        return found if len(found) == len(ROLES) else None

    def wait_workers(self, timeout: float = 5) -> Dict[str, int]:
        return wait_for(self.all_workers, timeout, "three workers")

    def containers(self) -> List[str]:
        return service_containers(self.service)

    def signal_group(self, signum: int) -> None:
        """Signal the supervisor's whole process group, while the supervisor lives."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signum)
            except ProcessLookupError:
                pass

    def reap(self, grace: float = 0) -> None:
        """The process's end, if it was started: waited for ``grace`` s (for an end already asked for),
        then its whole group SIGKILLed and waited for; its log closed."""
        if self.proc is not None:
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(10)
            self.log.close()

    def cleanup(self, grace: float = 0) -> None:
        """SIGKILL the process group (after ``grace`` s for an end already asked for), remove the
        service's containers and its keys."""
        self.reap(grace)
        for container in self.containers():
            docker("rm", "-f", container)
        self.etcd.delete(self.prefix)
        self.etcd.delete(f"{self.namespace}/control/{self.service}")  # v2 keeps it once its requests go
