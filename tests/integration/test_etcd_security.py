"""etcd security settings really reach python-etcd: a private etcd that demands TLS client certificates,
and one with v2 authentication (root user, guest role stripped), each written by a real supervisor.
Secrets never show: not in the supervisor's output, not in the record."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest

from tests.support import POLITE
from tests.support.etcd import EtcdV2
from tests.support.etcd_cluster import Cluster, Member
from tests.support.ini import write_ini
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for

PASSWORD = "pw-" + uuid.uuid4().hex  # unique, so any leak is found by a plain substring search
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args: Any) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it."""
    where = tmp_path_factory.mktemp("pki")
    (where / "ext.cnf").write_text(
        "[server]\nsubjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth\n"
        "[client]\nextendedKeyUsage = clientAuth\n"
    )
    openssl("req", "-x509", *EC_KEY, "-keyout", where / "ca.key", "-out", where / "ca.pem", "-days", "1",
            "-subj", "/CN=horizon test CA")
    for role in ("server", "client"):
        openssl("req", *EC_KEY, "-keyout", where / f"{role}.key", "-out", where / f"{role}.csr", "-subj", f"/CN={role}")
        openssl("x509", "-req", "-in", where / f"{role}.csr", "-CA", where / "ca.pem", "-CAkey", where / "ca.key",
                "-CAcreateserial", "-out", where / f"{role}.pem", "-days", "1",
                "-extfile", where / "ext.cnf", "-extensions", role)
    return {name: str(where / name) for name in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


class TlsMember(Member):
    """A member that serves clients over https only to holders of a certificate signed by the test CA."""

    def __init__(self, name: str, data_dir: str, pki: Dict[str, str]) -> None:
        super().__init__(name, data_dir)
        self.pki = pki

    scheme = "https"

    def client_flags(self) -> List[str]:
        return [*super().client_flags(), "--cert-file", self.pki["server.pem"], "--key-file", self.pki["server.key"],
                "--trusted-ca-file", self.pki["ca.pem"], "--client-cert-auth"]

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.pki["ca.pem"])
        context.load_cert_chain(self.pki["client.pem"], self.pki["client.key"])
        return context

    def client(self, **auth: Any) -> EtcdV2:
        """A client holding the test CA's client certificate."""
        return EtcdV2(self.url, context=self.context(), **auth)


def running(cluster: Cluster) -> Iterator[Member]:
    """The one member of a private cluster, started (and checked to be ours), stopped afterwards."""
    try:
        yield cluster.start().members[0]
    finally:
        cluster.stop()


@pytest.fixture
def tls_etcd(services, pki) -> Iterator[TlsMember]:
    yield from running(Cluster(member=lambda name, data_dir: TlsMember(name, data_dir, pki)))


@pytest.fixture
def auth_etcd(services) -> Iterator[Member]:
    """v2 auth on: user root with PASSWORD, and the guest role (anonymous clients) may do nothing."""
    for member in running(Cluster()):
        anonymous, root = member.client(), member.client(password=PASSWORD)
        assert anonymous.request("/v2/auth/users/root", "PUT",
                                 json.dumps({"user": "root", "password": PASSWORD}).encode())[0] == 201
        assert anonymous.request("/v2/auth/enable", "PUT")[0] == 200
        revoke = {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}}
        assert root.request("/v2/auth/roles/guest", "PUT", json.dumps(revoke).encode())[0] == 200
        assert anonymous.request("/v2/keys/probe", "PUT", b"value=1")[0] == 401  # anonymous: refused
        yield member


def start(run: Supervisor, tmp_path: Path, member: Member, etcd_lines: str, *flags: str, **auth: Any) -> Supervisor:
    """The supervisor on the private member; its record is read back from there, as ``auth`` allows."""
    run.etcd = member.client(**auth)
    return run.ini(write_ini(tmp_path, run.service, POLITE, etcd=f"hosts = {member.address}\n{etcd_lines}"), *flags)


def stop(run: Supervisor) -> None:
    """SIGTERM once the task runs: a clean stop, exit 0."""
    wait_for(lambda: "task running" in run.output(), 30, "the task to run")
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(30) == 0, run.output()


def test_https_with_a_client_certificate_registers_the_task(supervised, tmp_path, tls_etcd, pki):
    tls = f"protocol = https\nca_cert = {pki['ca.pem']}\ncert = {pki['client.pem']}\nkey = {pki['client.key']}\n"
    run = start(supervised(), tmp_path, tls_etcd, tls)
    run.wait_state("running", 30, "the record over https")
    stop(run)
    assert run.state() == "stopped"  # the final write went over TLS too


def test_https_without_a_client_certificate_is_refused_by_etcd(supervised, tmp_path, tls_etcd, pki):
    run = start(supervised(), tmp_path, tls_etcd, f"protocol = https\nca_cert = {pki['ca.pem']}\n")
    wait_for(lambda: "etcd refuses horizon" in run.output(), 30, "the publisher to report the refusal")
    assert "certificate" in run.output().lower()
    assert run.record() == {}
    stop(run)


def test_plain_http_to_a_tls_etcd_is_not_silently_accepted(supervised, tmp_path, tls_etcd):
    run = start(supervised(), tmp_path, tls_etcd, "")
    wait_for(lambda: "etcd does not answer" in run.output(), 30, "the publisher to report the failure")
    assert run.record() == {}
    stop(run)


def test_a_password_file_authenticates_and_the_password_shows_nowhere(supervised, tmp_path, auth_etcd):
    secret = tmp_path / "etcd-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o600)
    run = start(supervised(), tmp_path, auth_etcd, f"username = root\npassword_file = {secret}\n",
                "--log-level", "DEBUG", password=PASSWORD)
    run.wait_state("running", 30, "the record with auth")
    assert set(run.record()) >= {"info", "endpoint", "status", "running"}
    stop(run)
    everything = run.etcd.request("/v2/keys/?recursive=true")[1]
    assert PASSWORD not in json.dumps(everything) and PASSWORD not in run.output()
    assert PASSWORD not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_a_wrong_password_is_reported_without_the_password(supervised, tmp_path, auth_etcd):
    wrong = "wrong-" + PASSWORD
    run = start(supervised(), tmp_path, auth_etcd, f"username = root\npassword = {wrong}\n", "--log-level", "DEBUG",
                password=PASSWORD)
    wait_for(lambda: "etcd refuses horizon" in run.output(), 30, "the publisher to report the refusal")
    assert "authentication" in run.output()  # says why, not just "unreachable"
    assert run.record() == {}
    stop(run)
    assert wrong not in run.output() and PASSWORD not in run.output()


def test_a_required_etcd_that_refuses_the_password_fails_the_start_naming_the_credentials(supervised, tmp_path,
                                                                                           auth_etcd):
    wrong = "wrong-" + PASSWORD
    run = start(supervised(), tmp_path, auth_etcd, f"username = root\npassword = {wrong}\nrequired = true\n")
    assert run.wait(30) == 1, run.output()
    last = run.output().strip().splitlines()[-1]
    assert last.startswith("horizon: error: etcd at") and "refused" in last and "password_file" in last, last
    assert run.containers() == []  # never started: etcd was required and said no
    assert wrong not in run.output() and PASSWORD not in run.output()
