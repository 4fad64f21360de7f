"""Bad input end to end: the command lines as a user runs them (exit 2, one line, nothing created), a
real supervisor's endpoint under bad requests, and a command that is never given to a shell."""

from __future__ import annotations

import json
import os
import signal
import socket
from typing import List, Optional, Tuple
from urllib.parse import urlsplit

import pytest

from tests.support import IMAGE, NAMESPACE, POLITE
from tests.support.docker import docker
from tests.support.ini import write_ini
from tests.support.net import http_get
from tests.support.supervisor import Supervisor


def assert_refused(run: Supervisor, needles: List[str]) -> str:
    """Exit 2, exactly one line naming the problem, no traceback, no container, no etcd key."""
    assert run.wait(30) == 2, run.output()
    out = run.output()
    assert len(out.splitlines()) == 1 and out.startswith("horizon: error: "), out
    assert "Traceback" not in out
    for needle in needles:
        assert needle in out, out
    assert run.containers() == [] and run.task() is None
    return out


@pytest.mark.parametrize(
    "task, extra, needles",
    [
        ("imgae = x\n", "", ["[task] unknown key 'imgae'", "did you mean 'image'"]),
        ("command = sleep 1\n", "", ["[task] command: given twice (line 5)"]),
        ("name = ../escape\n", "", ["[task] name: '../escape' is not a valid task name"]),
        ("", "hosts = h:99999\n", ["[etcd] hosts", "port from 1 to 65535"]),
        ("", "protocol = https\ncert = /etc/hostname\n", ["[etcd] key: cert and key go together"]),
        ("", "[endpoint]\nport = abc\n", ["[endpoint] port", "from 0 to 65535"]),
    ],
    ids=["unknown-key", "duplicate-key", "task-escapes-namespace", "bad-etcd-port", "cert-without-key", "port-abc"],
)
def test_an_ini_mistake_exits_2_with_one_line(supervised, tmp_path, task, extra, needles):
    run = supervised()
    path = write_ini(tmp_path, run.service, task=task, etcd=extra, api=run.api)
    run.ini(path)
    assert_refused(run, [str(path), *needles])


def test_check_on_a_bad_file_exits_2_and_on_a_good_one_0(supervised, tmp_path):
    run = supervised()
    bad = write_ini(tmp_path, run.service, etcd="ttl = 1\n", api=run.api)
    run.start(["-m", "supervisor", "--check", str(bad)])
    assert_refused(run, [f"{bad}: [etcd] ttl: 1 is out of range"])
    good = supervised(run.service).start(["-m", "supervisor", "--check", str(write_ini(tmp_path, run.service, api=run.api))])
    assert good.wait(30) == 0 and ": ok: service " in good.output()
    assert good.containers() == [] and good.task() is None


def test_a_password_file_that_is_empty_exits_2_and_shows_no_secret(supervised, tmp_path):
    run = supervised()
    empty = tmp_path / "password"
    empty.write_text("\n")
    run.ini(write_ini(tmp_path, run.service, etcd=f"username = root\npassword_file = {empty}\n", api=run.api))
    assert_refused(run, ["[etcd] password_file", "write the password in it"])


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["Not/An Image", "sleep 1"], ["IMAGE: 'Not/An Image' is not an image reference"]),
        ([IMAGE, "'' x"], ["COMMAND: must not be empty"]),
        ([IMAGE, "sleep 1", "--etcd-password", "s3cr3t-pw"], ["--etcd-username: a password needs a username"]),
        ([IMAGE, "sleep 1", "--endpoint-host", "192.0.2.1"], ["[endpoint] host '192.0.2.1' is not an address of this host"]),
    ],
    ids=["image", "empty-command", "password-without-user", "foreign-address"],
)
def test_a_flag_mistake_exits_2_with_one_line(supervised, argv, needles):
    run = supervised()
    run.start(["main.py", *argv, "--service", run.service, "--etcd-namespace", NAMESPACE, "--etcd-api", run.api,
               "--etcd", run.etcd.address])  # the etcd that assert_refused finds nothing in
    out = assert_refused(run, needles)
    assert "s3cr3t-pw" not in out


def test_a_port_in_use_exits_2_before_anything_is_created(supervised, tmp_path):
    run = supervised()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        run.ini(write_ini(tmp_path, run.service, etcd=f"[endpoint]\nport = {port}\n", api=run.api))
        assert_refused(run, [f"[endpoint] port {port} on 127.0.0.1 is in use", "choose another port"])


# -- a real supervisor's endpoint -----------------------------------------------------------------


def raw_http(address: Tuple[str, int], data: bytes, timeout: float = 10) -> Tuple[Optional[int], bytes]:
    """Send raw bytes; (status, body) of the answer, (None, b"") when the server just closed."""
    with socket.create_connection(address, timeout=timeout) as conn:
        conn.sendall(data)
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass
    if not received:
        return None, b""
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_a_real_endpoint_shrugs_off_bad_requests(supervised):
    run = supervised().main(POLITE)
    url = urlsplit(run.url())
    address = (url.hostname, url.port)
    run.wait_state("running", 30)
    stalled = socket.create_connection(address, timeout=10)
    stalled.sendall(b"GET /status HTTP/1.1\r\nHo")  # and never more
    try:
        cases = {
            b"GET /../../etc/passwd HTTP/1.0\r\n\r\n": 404,
            b"DELETE /status HTTP/1.0\r\n\r\n": 405,
            b"GET /metrics HTTP/1.0\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n": 431,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n": 400,
            b"GET /status?x=%ff HTTP/1.0\r\n\r\n": 200,
        }
        for data, expected in cases.items():
            status, body = raw_http(address, data)
            assert status == expected, (data[:40], status, body)
            if expected in (404, 405, 431):
                assert json.loads(body) == {"error": json.loads(body)["error"], "status": expected}
        status, body = http_get(f"{url.scheme}://{url.netloc}/status")
        assert status == 200 and body["state"] == "running"  # still answering, nothing changed
    finally:
        stalled.close()
    assert run.state() == "running" and run.proc.poll() is None
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(30) == 0
    output = run.output()
    assert "Traceback" not in output and " 404 " not in output and " 405 " not in output, output


# -- the command is an argv, never a shell line ---------------------------------------------------


def test_shell_syntax_in_the_command_is_not_interpreted(supervised):
    run = supervised().main("echo a;b $(id) `id` |x >y", "--remove", "false")
    assert run.wait(60) == 0, run.output()
    container = run.containers()[0]
    argv = ["echo", "a;b", "$(id)", "`id`", "|x", ">y"]
    inspect = docker("inspect", "-f", "[{{json .Config.Cmd}},{{json .Config.Entrypoint}}]", container)
    assert json.loads(inspect) == [argv, None]  # no "sh -c" added in front
    assert docker("logs", container).strip() == "a;b $(id) `id` |x >y"
    assert run.record()["info"]["command"] == argv


def test_a_shell_runs_only_when_the_user_writes_sh_c(supervised):
    run = supervised().main("sh -c 'echo $((6 * 7))'", "--remove", "false")
    assert run.wait(60) == 0, run.output()
    assert docker("logs", run.containers()[0]).strip() == "42"
