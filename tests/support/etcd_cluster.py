"""Private etcd members on free loopback ports, for tests and benchmarks that freeze, kill or delay etcd
without disturbing anyone else's (the shared etcd serves every other test and supervisor)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from typing import Any, Callable, Dict, List, Optional

from tests.support.etcd import EtcdV2
from tests.support.net import free_port
from tests.support.waiting import wait_for


class Member:
    """One etcd process, in its own session (a terminal's or a test run's signals are not its own)."""

    scheme = "http"

    def __init__(self, name: str, data_dir: str) -> None:
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = os.path.join(data_dir, name)
        self.proc: Optional[subprocess.Popen] = None
        self.frozen = False

    @property
    def address(self) -> str:
        """HOST:PORT, as a supervisor's ``hosts`` / ``--etcd`` take it."""
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}"

    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def client_flags(self) -> List[str]:
        """How clients reach the member; a TLS member (test_etcd_security.py) adds certificates."""
        return ["--listen-client-urls", self.url, "--advertise-client-urls", self.url]

    def client(self, **auth: Any) -> EtcdV2:
        """A client of this member alone (``password=`` for an authenticated one)."""
        return EtcdV2(self.url, **auth)

    def start(self, initial_cluster: str, token: str) -> None:
        self.log = open(f"{self.data_dir}.log", "w")
        self.proc = subprocess.Popen(
            [
                "etcd", "--name", self.name, "--data-dir", self.data_dir, "--enable-v2", *self.client_flags(),
                "--listen-peer-urls", self.peer_url(), "--initial-advertise-peer-urls", self.peer_url(),
                "--initial-cluster", initial_cluster, "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def healthy(self) -> bool:
        return self.client().request("/health", timeout=1)[0] == 200

    def stats(self) -> Dict[str, Any]:
        """/v2/stats/self: the member's name and raft state ({} when it does not answer)."""
        return self.client().request("/v2/stats/self", timeout=1)[1] or {}

    def exited(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def freeze(self) -> None:
        """SIGSTOP: the member holds its connections and answers nothing (a stalled etcd)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        """SIGCONT after a freeze; nothing otherwise, so that cleanup may always call it."""
        if self.proc is not None and self.frozen and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.frozen = False

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a frozen member would not die before it is thawed
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()  # also when the member died by itself


class Cluster:
    """``size`` etcd members; ``start()`` can be deferred (etcd down at the supervisor's start).
    ``member`` makes each one from its name and data directory (a TLS member in test_etcd_security.py)."""

    def __init__(self, size: int = 1, member: Callable[[str, str], Member] = Member) -> None:
        self.dir = tempfile.mkdtemp(prefix="horizon-etcd-")
        self.token = uuid.uuid4().hex[:8]
        # Names unique to this cluster: start() checks each port is answered by its own member.
        self.members: List[Member] = [member(f"m{i}-{self.token}", self.dir) for i in range(size)]

    @property
    def hosts(self) -> str:
        """Every member, as a supervisor's ``hosts`` / ``--etcd`` take them."""
        return ",".join(m.address for m in self.members)

    def start(self, timeout: float = 30) -> "Cluster":
        initial = ",".join(f"{m.name}={m.peer_url()}" for m in self.members)
        for member in self.members:
            member.start(initial, self.token)
        wait_for(self.up, timeout, "the private etcd to be healthy", every=0.1)
        return self

    def up(self) -> bool:
        """Every member answers, and is ours: ports are picked before etcd binds them, so another test's
        etcd may have taken one in between; then our member exits, and this says so instead of letting
        the test talk to someone else's etcd."""
        for member in self.members:
            if member.exited():
                with open(f"{member.data_dir}.log", errors="replace") as log:
                    raise AssertionError(f"private etcd {member.name} exited at start: {log.read()[-600:]}")
            if not member.healthy() or member.stats().get("name") != member.name:
                return False
        return True

    def client(self, member: int = 0) -> EtcdV2:
        return self.members[member].client()

    def leader(self, timeout: float = 10) -> Member:
        """The member that leads the cluster now (after an election, once one is won)."""

        def find() -> Optional[Member]:
            for member in self.members:
                if member.proc is not None and not member.exited() and member.stats().get("state") == "StateLeader":
                    return member
            return None

        return wait_for(find, timeout, "an etcd leader", every=0.1)

    def stop(self) -> None:
        for member in self.members:
            member.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
