"""etcd security settings really reach etcd, on both APIs: a private etcd that demands TLS client
certificates, and one with authentication on (v2: root user, guest role stripped; v3: root user, so
anonymous requests are refused), each written by a real supervisor, as root and as a user whose role
covers only the test namespace. Secrets never show: not in the supervisor's output, not in etcd."""

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

from tests.support import NAMESPACE, POLITE
from tests.support.etcd import Etcd, EtcdV2, EtcdV3, b64, etcd_client, range_end
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
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, all signed by it. The
    server's is good for client authentication too: etcd 3.5's gateway dials its own gRPC port with it."""
    where = tmp_path_factory.mktemp("pki")
    (where / "ext.cnf").write_text(
        "[server]\nsubjectAltName = IP:127.0.0.1\nextendedKeyUsage = serverAuth, clientAuth\n"
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

    def __init__(self, name: str, data_dir: str, pki: Dict[str, str], api: str) -> None:
        super().__init__(name, data_dir, api)
        self.pki = pki

    scheme = "https"

    def client_flags(self) -> List[str]:
        return [*super().client_flags(), "--cert-file", self.pki["server.pem"], "--key-file", self.pki["server.key"],
                "--trusted-ca-file", self.pki["ca.pem"], "--client-cert-auth"]

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.pki["ca.pem"])
        context.load_cert_chain(self.pki["client.pem"], self.pki["client.key"])
        return context

    def client(self, **auth: Any) -> Etcd:
        """A client holding the test CA's client certificate."""
        return etcd_client(self.api, self.url, context=self.context(), **auth)


def running(cluster: Cluster) -> Iterator[Member]:
    """The one member of a private cluster, started (and checked to be ours), stopped afterwards."""
    try:
        yield cluster.start().members[0]
    finally:
        cluster.stop()


@pytest.fixture
def tls_etcd(services, pki, etcd_api) -> Iterator[TlsMember]:
    yield from running(Cluster(member=lambda name, data_dir: TlsMember(name, data_dir, pki, etcd_api)))


def enable_v2_auth(member: Member) -> None:
    """Users root (PASSWORD) and horizon (PASSWORD, role horizon: the test namespace only); the guest
    role, which anonymous clients get, may do nothing."""
    anonymous, root = member.client(), member.client(password=PASSWORD)
    assert anonymous.request("/v2/auth/users/root", "PUT",
                             json.dumps({"user": "root", "password": PASSWORD}).encode())[0] == 201
    assert anonymous.request("/v2/auth/enable", "PUT")[0] == 200
    revoke = {"role": "guest", "revoke": {"kv": {"read": ["/*"], "write": ["/*"]}}}
    assert root.request("/v2/auth/roles/guest", "PUT", json.dumps(revoke).encode())[0] == 200
    within = {"read": [f"{NAMESPACE}/*"], "write": [f"{NAMESPACE}/*"]}
    assert root.request("/v2/auth/roles/horizon", "PUT",
                        json.dumps({"role": "horizon", "permissions": {"kv": within}}).encode())[0] == 201
    assert root.request("/v2/auth/users/horizon", "PUT", json.dumps(
        {"user": "horizon", "password": PASSWORD, "roles": ["horizon"]}).encode())[0] in (200, 201)
    assert anonymous.request("/v2/keys/probe", "PUT", b"value=1")[0] == 401  # anonymous: refused


def enable_v3_auth(member: Member) -> None:
    """The same on v3: root (with the root role, which `auth enable` demands) and horizon, whose role
    may read and write the keys under the test namespace (``NAMESPACE/``) and nothing else."""
    anonymous = member.client()
    assert isinstance(anonymous, EtcdV3)
    for path, body in [
        ("/v3/auth/user/add", {"name": "root", "password": PASSWORD}),
        ("/v3/auth/role/add", {"name": "root"}),
        ("/v3/auth/user/grant", {"user": "root", "role": "root"}),
        ("/v3/auth/role/add", {"name": "horizon"}),
        ("/v3/auth/role/grant", {"name": "horizon", "perm": {"permType": "READWRITE", "key": b64(f"{NAMESPACE}/"),
                                                             "range_end": range_end(f"{NAMESPACE}/")}}),
        ("/v3/auth/user/add", {"name": "horizon", "password": PASSWORD}),
        ("/v3/auth/user/grant", {"user": "horizon", "role": "horizon"}),
        ("/v3/auth/enable", {}),
    ]:
        status, answer = anonymous.post(path, body)
        assert status == 200, (path, status, answer)
    status, answer = member.client().post("/v3/kv/put", {"key": b64("/probe"), "value": b64("1")})
    assert status == 400 and "user name is empty" in answer["message"], (status, answer)  # anonymous: refused


@pytest.fixture
def auth_etcd(services, etcd_api) -> Iterator[Member]:
    """Authentication on (see enable_v2_auth / enable_v3_auth)."""
    for member in running(Cluster(api=etcd_api)):
        (enable_v2_auth if etcd_api == "v2" else enable_v3_auth)(member)
        yield member


def every_value(etcd: Etcd) -> str:
    """Everything the member holds, as one string to search."""
    if isinstance(etcd, EtcdV2):
        return json.dumps(etcd.request("/v2/keys/?recursive=true")[1])
    assert isinstance(etcd, EtcdV3)
    return json.dumps([(kv.key, kv.value) for kv in etcd.kvs("\0", "AA==")])


def start(run: Supervisor, tmp_path: Path, member: Member, etcd_lines: str, *flags: str, **auth: Any) -> Supervisor:
    """The supervisor on the private member; its record is read back from there, as ``auth`` allows."""
    run.etcd = member.client(**auth)
    ini = write_ini(tmp_path, run.service, POLITE, etcd=f"hosts = {member.address}\n{etcd_lines}", api=member.api)
    return run.ini(ini, *flags)


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
    assert run.state() == "stopped"
    assert PASSWORD not in every_value(run.etcd) and PASSWORD not in run.output()
    assert PASSWORD not in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout


def test_a_user_whose_role_covers_only_the_namespace_registers_the_task(supervised, tmp_path, auth_etcd):
    secret = tmp_path / "etcd-password"
    secret.write_text(PASSWORD)
    run = start(supervised(), tmp_path, auth_etcd, f"username = horizon\npassword_file = {secret}\nrequired = true\n",
                password=PASSWORD)
    run.wait_state("running", 30, "the record written by a user limited to the namespace")
    assert "refuses" not in run.output()
    stop(run)
    assert run.state() == "stopped"


def test_a_user_without_permission_there_is_refused_and_told_why(supervised, tmp_path, auth_etcd):
    secret = tmp_path / "etcd-password"
    secret.write_text(PASSWORD)
    run = start(supervised(), tmp_path, auth_etcd,
                f"username = horizon\npassword_file = {secret}\nnamespace = /elsewhere\nrequired = true\n",
                password=PASSWORD)
    assert run.wait(30) == 1, run.output()
    last = run.output().strip().splitlines()[-1]
    assert "refused horizon" in last and "ermission" in last or "nsufficient" in last, last
    assert run.containers() == [] and PASSWORD not in run.output()


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


class ShortTokenMember(Member):
    """A member whose auth tokens expire after 2 s (etcd's default is 300 s)."""

    def client_flags(self) -> List[str]:
        return [*super().client_flags(), "--auth-token-ttl", "2"]


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)
def test_v3_an_expired_token_is_renewed_and_publishing_goes_on(supervised, tmp_path, services):
    for member in running(Cluster(member=lambda name, data_dir: ShortTokenMember(name, data_dir, "v3"), api="v3")):
        enable_v3_auth(member)
        secret = tmp_path / "etcd-password"
        secret.write_text(PASSWORD)
        run = start(supervised(), tmp_path, member, f"username = horizon\npassword_file = {secret}\n",
                    "--log-level", "DEBUG", password=PASSWORD)
        run.wait_state("running", 30, "the record")
        seq = wait_for(lambda: run.record().get("metrics", {}).get("seq"), 10, "metrics in etcd")
        # publish_every 5 at 1 s: a write every 5 s, each with a token older than its 2 s life
        wait_for(lambda: run.record().get("metrics", {}).get("seq", 0) >= seq + 10, 30,
                 "metrics to keep being written with renewed tokens")
        assert "refuses" not in run.output() and "does not answer" not in run.output()
        assert "no longer knows horizon's token" in run.output()
        stop(run)
        assert run.state() == "stopped" and PASSWORD not in run.output()
