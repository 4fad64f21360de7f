"""The ``horizon`` command line, on a fake etcd: ls (text, JSON, filters) from one read, show, the etcd
options from flags, a task file, or the environment (one EtcdSection, checked by supervisor/config.py),
and every mistake as one line: exit 2 for usage, exit 1 when etcd does not answer or refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from supervisor.etcd.errors import Refused
from supervisor.fleet import cli
from tests.unit.fleet_fake import NS, FakeEtcd, horizon, unavailable

BASE = ["--namespace", NS]


@pytest.fixture
def etcd() -> FakeEtcd:
    etcd = FakeEtcd()
    etcd.add("web", "t2", tags=("blue", "canary"), host="h2", port=8082)
    etcd.add("web", "t1", tags=("blue",), port=8081)
    etcd.add("db", "t1", state="failed", exit_code=137, reason="oom-killed")
    return etcd


def test_ls_prints_a_table_from_one_read(etcd, monkeypatch, capsys) -> None:
    code, out, err = horizon(["ls", *BASE], etcd, monkeypatch, capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["SERVICE", "TASK", "HOST", "STATE", "CPU%", "MEM", "UPTIME", "RESTARTS", "ENDPOINT", "TAGS"]
    assert [line.split()[:4] for line in lines[1:]] == [["db", "t1", "h1", "failed"], ["web", "t1", "h1", "running"],
                                                        ["web", "t2", "h2", "running"]]
    assert "failed (137)" in lines[1]
    assert etcd.reads == [f"{NS}/services/"]  # one range read, never a request per task


def test_ls_json_is_one_array_and_filters_apply(etcd, monkeypatch, capsys) -> None:
    code, out, _ = horizon(["ls", *BASE, "--json", "--service", "web", "--tag", "canary"], etcd, monkeypatch, capsys)
    rows = json.loads(out)
    assert code == 0 and [(r["service"], r["task"], r["tags"]) for r in rows] == [("web", "t2", ["blue", "canary"])]
    code, out, _ = horizon(["ls", *BASE, "--json", "--state", "failed"], etcd, monkeypatch, capsys)
    assert [(r["task"], r["exit_code"]) for r in json.loads(out)] == [("t1", 137)]
    code, out, _ = horizon(["ls", *BASE, "--json", "--host", "h2"], etcd, monkeypatch, capsys)
    assert [r["task"] for r in json.loads(out)] == ["t2"]


def test_ls_with_nothing_selected_says_so_on_stderr(etcd, monkeypatch, capsys) -> None:
    code, out, err = horizon(["ls", *BASE, "--service", "nothere"], etcd, monkeypatch, capsys)
    assert code == 0 and out == "" and err.startswith("horizon: no tasks selected under /ns")
    code, out, err = horizon(["ls", *BASE, "--json", "--service", "nothere"], etcd, monkeypatch, capsys)
    assert code == 0 and json.loads(out) == []


def test_etcd_options_go_before_or_after_the_command(etcd, monkeypatch, capsys) -> None:
    sections: list = []
    horizon(["--api", "v2", "--namespace", "/a", "ls"], etcd, monkeypatch, capsys, sections)
    horizon(["--namespace", "/a", "ls", "--namespace", "/b", "--etcd", "h1:1,h2:2"], etcd, monkeypatch, capsys, sections)
    assert (sections[0].api, sections[0].namespace) == ("v2", "/a")
    assert (sections[1].api, sections[1].namespace, sections[1].hosts) == ("v3", "/b", (("h1", 1), ("h2", 2)))


def test_show_prints_the_page_or_the_record_as_json(etcd, monkeypatch, capsys) -> None:
    code, out, _ = horizon(["show", *BASE, "web/t1"], etcd, monkeypatch, capsys)
    assert code == 0 and out.splitlines()[0] == "web/t1" and "endpoint   http://127.0.0.1:8081" in out
    assert etcd.reads[-1] == f"{NS}/services/web/t1/"
    code, out, _ = horizon(["show", *BASE, "web/t1", "--json"], etcd, monkeypatch, capsys)
    record = json.loads(out)
    assert code == 0 and record["service"] == "web" and record["status"]["state"] == "running"
    assert set(record) == {"service", "task", "info", "endpoint", "running", "status", "metrics"}


def test_show_of_an_unknown_task_is_one_line_and_exit_1(etcd, monkeypatch, capsys) -> None:
    code, out, err = horizon(["show", *BASE, "web/nope"], etcd, monkeypatch, capsys)
    assert code == 1 and out == "" and err == "horizon: error: web/nope: no such task under /ns (horizon ls lists them)\n"


USAGE = [
    (["ls", "--servce", "web"], "unrecognized arguments: --servce; did you mean --service?"),
    (["ls", "--state", "sleeping"], "argument --state: invalid choice: 'sleeping'"),
    (["ls", "--service", "Web!"], "argument --service: 'Web!' is not a valid service name"),
    (["show", "web"], "argument SERVICE/TASK: 'web' is not SERVICE/TASK"),
    (["show", "web/t 1"], "argument SERVICE/TASK: 't 1' is not a valid task name"),
    (["logs", "web/t1", "--tail", "-1"], "argument --tail: -1 is out of range"),
    (["prune", "--older-than", "soon"], "argument --older-than: 'soon' is not a number"),
    (["ls", "--api", "v4"], "--api: 'v4' is not allowed: use one of v3, v2"),
    (["ls", "--etcd", "nohost:99999"], "--etcd: 'nohost:99999' has no valid port"),
    (["ls", "--namespace", "relative"], "--namespace: 'relative' is not a namespace"),
    (["ls", "--timeout", "0"], "--timeout: 0 is out of range"),
    (["ls", "--username", "root"], "--username: needs password_file (or password) as well"),
    (["ls", "--cert", "/etc/hostname"], "--key: cert and key go together"),
    (["ls", "--ca-cert", "/nonexistent/ca.pem"], "--ca-cert: cannot read the file '/nonexistent/ca.pem'"),
    (["stop"], "name the tasks (SERVICE/TASK ...) or select them with --service/--tag"),
    (["stop", "web/t1", "--service", "web"], "name the tasks (SERVICE/TASK ...) or select them with --service/--tag"),
    (["pause", "web/t1", "--timeout", "-3"], "--timeout: -3 is out of range"),
    ([], "the following arguments are required: COMMAND"),
    (["frobnicate"], "argument COMMAND: invalid choice: 'frobnicate'"),
]


@pytest.mark.parametrize("argv, message", USAGE, ids=[" ".join(a) or "nothing" for a, _ in USAGE])
def test_a_usage_mistake_is_one_line_and_exit_2(etcd, monkeypatch, capsys, argv, message) -> None:
    code, out, err = horizon(argv, etcd, monkeypatch, capsys)
    assert code == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith("horizon: error: ") and message in err, err
    assert etcd.puts == []


def test_help_has_examples(monkeypatch, capsys) -> None:
    code, out, _ = horizon(["--help"], None, monkeypatch, capsys)
    assert code == 0 and "examples:" in out and "horizon stop --service web" in out
    code, out, _ = horizon(["stop", "--help"], None, monkeypatch, capsys)
    assert code == 0 and "example:" in out and "--yes" in out and "--timeout" in out


def test_etcd_unreachable_is_one_line_and_exit_1(etcd, monkeypatch, capsys) -> None:
    etcd.failure = unavailable()
    for argv in (["ls"], ["show", "web/t1"], ["watch"], ["stop", "web/t1"], ["logs", "web/t1"], ["prune"]):
        code, out, err = horizon([*argv, *BASE], etcd, monkeypatch, capsys)
        assert code == 1 and out == "" and err == "horizon: error: etcd does not answer: 127.0.0.1:2379: connection refused\n"


def test_a_refusal_says_which_flags_to_check(etcd, monkeypatch, capsys) -> None:
    etcd.failure = Refused("127.0.0.1:2379: The request requires user authentication")
    code, _, err = horizon(["ls", *BASE], etcd, monkeypatch, capsys)
    assert code == 1 and len(err.splitlines()) == 1
    assert "etcd refused horizon: 127.0.0.1:2379: The request requires user authentication; check --username and " \
           "--password-file" in err
    etcd.failure = Refused("127.0.0.1:2479: no v2 API here", "set [etcd] api = v3 (etcd serves the v2 API only with --enable-v2)")
    code, _, err = horizon(["ls", *BASE], etcd, monkeypatch, capsys)
    assert code == 1 and "; use --api v3 (etcd serves" in err


# -- where the settings come from ---------------------------------------------------------------------

def test_the_environment_names_hosts_and_password_and_flags_win(etcd, monkeypatch, capsys, tmp_path: Path) -> None:
    sections: list = []
    monkeypatch.setenv("HORIZON_ETCD", "10.0.0.1:2379,10.0.0.2:2379")
    monkeypatch.setenv("HORIZON_ETCD_PASSWORD", "s3cr3t")
    horizon(["ls", "--username", "ops"], etcd, monkeypatch, capsys, sections)
    assert sections[-1].hosts == (("10.0.0.1", 2379), ("10.0.0.2", 2379)) and sections[-1].password == "s3cr3t"
    assert "s3cr3t" not in repr(sections[-1])
    secret = tmp_path / "pw"
    secret.write_text("from-file\n")
    horizon(["ls", "--etcd", "h:1", "--username", "ops", "--password-file", str(secret)], etcd, monkeypatch, capsys, sections)
    assert sections[-1].hosts == (("h", 1),) and sections[-1].password == "" and sections[-1].password_file == str(secret)
    from supervisor.fleet.connection import password
    assert password(sections[-1]) == "from-file"


def test_a_task_file_gives_the_etcd_section_and_flags_win_over_it(etcd, monkeypatch, capsys, tmp_path) -> None:
    ini = tmp_path / "web.ini"
    ini.write_text("[task]\nimage = busybox\ncommand = sleep 1\n[etcd]\napi = v2\nhosts = 10.1.1.1:2379\n"
                   "namespace = /prod\ntimeout = 0.5\n")
    sections: list = []
    monkeypatch.setenv("HORIZON_ETCD", "10.9.9.9:2379")
    horizon(["--config", str(ini), "ls"], etcd, monkeypatch, capsys, sections)
    assert (sections[0].api, sections[0].hosts, sections[0].namespace, sections[0].timeout) == \
        ("v2", (("10.1.1.1", 2379),), "/prod", 0.5)
    horizon(["--config", str(ini), "ls", "--namespace", "/staging", "--timeout", "3"], etcd, monkeypatch, capsys, sections)
    assert (sections[1].namespace, sections[1].timeout) == ("/staging", 3.0)


def test_a_mistake_in_the_task_file_names_the_file_and_key(etcd, monkeypatch, capsys, tmp_path) -> None:
    ini = tmp_path / "web.ini"
    ini.write_text("[etcd]\nhosts = nowhere:0\n")
    code, out, err = horizon(["--config", str(ini), "ls"], etcd, monkeypatch, capsys)
    assert code == 2 and err == f"horizon: error: {ini}: [etcd] hosts: 'nowhere:0' has no valid port: use host:port " \
                                "with a port from 1 to 65535\n"
    ini.write_text("[etcd]\nhostz = a:1\n")
    code, _, err = horizon(["--config", str(ini), "ls"], etcd, monkeypatch, capsys)
    assert code == 2 and "unknown key 'hostz'; did you mean 'hosts'?" in err
    code, _, err = horizon(["--config", str(tmp_path / "missing.ini"), "ls"], etcd, monkeypatch, capsys)
    assert code == 2 and "missing.ini: no such file" in err


def test_a_bad_hosts_variable_is_named(etcd, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HORIZON_ETCD", "a:b:c")
    code, _, err = horizon(["ls"], etcd, monkeypatch, capsys)
    assert code == 2 and err.startswith("horizon: error: HORIZON_ETCD: 'a:b:c' is not host:port")


def test_certificates_mean_https(etcd, monkeypatch, capsys, tmp_path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate")
    code, _, err = horizon(["ls", "--ca-cert", str(ca)], etcd, monkeypatch, capsys)
    assert code == 2 and "--ca-cert: not a PEM certificate" in err  # checked as https, as a task file's is


def test_the_control_timeout_bounds_etcd_requests_too(etcd, monkeypatch, capsys) -> None:
    sections: list = []
    horizon(["pause", *BASE, "web/t1", "--timeout", "0.3"], etcd, monkeypatch, capsys, sections)
    assert sections[0].timeout == 0.3
    horizon(["resume", *BASE, "web/t1", "--timeout", "60"], etcd, monkeypatch, capsys, sections)  # not paused
    assert sections[1].timeout == 2.0  # [etcd] timeout's default: each request stays short


def test_a_reader_that_goes_away_is_not_an_error(etcd, monkeypatch, capsys) -> None:
    def broken(*args, **kw):
        raise BrokenPipeError()

    monkeypatch.setattr(cli.render, "ls_table", broken)
    code, _, err = horizon(["ls", *BASE], etcd, monkeypatch, capsys)
    assert code == 0 and err == ""



@pytest.mark.parametrize("args, words", [
    (["--etcd", "127.0.0.1:1"], "say where the targets go"),
    (["--listen", "127.0.0.1"], "give the port too"),
    (["--listen", "127.0.0.1:9", "--once"], "--once writes --file once"),
    (["--file", "/no/such/dir/t.json"], "its directory does not exist"),
])
def test_sd_needs_somewhere_to_put_the_targets_and_a_port_to_listen_on(etcd, monkeypatch, capsys, args, words) -> None:
    code, out, err = horizon(["sd", *args], etcd, monkeypatch, capsys)
    assert code == 2 and out == "" and words in err and len(err.splitlines()) == 1, err
