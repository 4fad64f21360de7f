"""stop, pause and resume on a fake etcd whose "supervisor" takes requests as the real one does (deletes
the control key, then the record shows the effect): the request document and its TTL, the wait for the
effect through etcd's wait (no polling), every request written before any wait, a task that cannot be
asked (unknown, ended, already there) answered in one line with nothing written, a timeout that says
what it saw and withdraws a request nobody took, a selection with its confirmation, and a refusal."""

from __future__ import annotations

import io
import json
import re
from typing import Any, Dict, List

import pytest

from supervisor.etcd.errors import Refused
from supervisor.fleet import control
from tests.unit.fleet_fake import NS, FakeEtcd, acts, horizon

BASE = ["--namespace", NS]
EFFECT = {"stop": "stopped", "pause": "paused", "resume": "running"}


@pytest.fixture
def etcd() -> FakeEtcd:
    etcd = FakeEtcd()
    etcd.add("web", "t1", tags=("blue",))
    etcd.add("web", "t2", tags=("blue",))
    etcd.add("web", "t3", state="paused", tags=("blue",))
    etcd.add("db", "t1", state="failed", exit_code=137)
    etcd.react = acts(EFFECT)
    return etcd


def state(etcd: FakeEtcd, service: str, task: str) -> str:
    return etcd.value(f"{etcd.task_prefix(service, task)}/status")["state"]


@pytest.mark.parametrize("action, task, effect", [("stop", "t1", "stopped"), ("pause", "t1", "paused"),
                                                  ("resume", "t3", "running")])
def test_a_request_is_written_and_the_effect_awaited(etcd, monkeypatch, capsys, action, task, effect) -> None:
    code, out, err = horizon([action, *BASE, f"web/{task}"], etcd, monkeypatch, capsys)
    assert code == 0 and err == "" and re.fullmatch(rf"web/{task} {effect} \(\d+\.\d\d s\)\n", out), (out, err)
    [(key, value, ttl)] = etcd.puts
    body = json.loads(value)
    assert key == f"{NS}/control/web/{task}" and ttl == 35  # ceil(--timeout 30) + 5
    assert body["action"] == action and re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["requested_at"]) and "@" in body["by"]
    assert state(etcd, "web", task) == effect
    assert etcd.reads == [f"{NS}/services/"]  # one read, then etcd's wait: never a poll


def test_the_ttl_follows_the_timeout(etcd, monkeypatch, capsys) -> None:
    horizon(["pause", *BASE, "web/t1", "--timeout", "7.2"], etcd, monkeypatch, capsys)
    assert etcd.puts[0][2] == 13


@pytest.mark.parametrize("argv, line", [
    (["stop", "web/nope"], "horizon: error: web/nope: no such task in etcd (horizon ls lists them)"),
    (["stop", "db/t1"], "horizon: error: db/t1 has ended (failed (137)): nothing to stop"),
    (["pause", "web/t3"], "horizon: error: web/t3 is already paused"),
    (["resume", "web/t1"], "horizon: error: web/t1 is already running"),
])
def test_a_task_that_cannot_be_asked_gets_one_line_and_nothing_is_written(etcd, monkeypatch, capsys, argv, line) -> None:
    code, out, err = horizon([*argv, *BASE], etcd, monkeypatch, capsys)
    assert code == 1 and out == "" and err.splitlines() == [line]
    assert etcd.puts == []


def test_a_resume_of_a_task_that_is_not_paused_names_its_state(etcd, monkeypatch, capsys) -> None:
    etcd.status("web", "t2", state="restarting")
    code, _, err = horizon(["resume", *BASE, "web/t2"], etcd, monkeypatch, capsys)
    assert code == 1 and err == "horizon: error: web/t2 is restarting: resume applies to a task that is paused\n"


def test_one_bad_name_among_several_writes_nothing(etcd, monkeypatch, capsys) -> None:
    code, out, err = horizon(["pause", *BASE, "web/t1", "web/t3", "web/nope"], etcd, monkeypatch, capsys)
    assert code == 1 and out == "" and etcd.puts == []
    assert err.splitlines() == ["horizon: web/t3 is already paused",
                                "horizon: error: web/nope: no such task in etcd (horizon ls lists them); "
                                "nothing was asked of any task"]


def test_every_request_is_written_before_the_wait(etcd, monkeypatch, capsys) -> None:
    seen: List[int] = []

    def react(etcd_: FakeEtcd, key: str, request: Dict[str, Any]) -> None:
        service, task = key.split("/")[-2:]
        etcd_.idle.append(lambda: (seen.append(len(etcd_.puts)), etcd_.status(service, task, state="paused")))

    etcd.react = react
    code, out, _ = horizon(["pause", *BASE, "web/t1", "web/t2"], etcd, monkeypatch, capsys)
    assert code == 0 and sorted(line.split()[0] for line in out.splitlines()) == ["web/t1", "web/t2"]
    assert seen == [2, 2]


def test_a_selection_skips_what_is_already_there_and_asks_on_a_terminal(etcd, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", Terminal("n\n"))
    code, out, err = horizon(["pause", *BASE, "--service", "web"], etcd, monkeypatch, capsys)
    assert code == 1 and etcd.puts == []
    assert "horizon: skipped: web/t3 is already paused" in err
    assert "pause 2 tasks: web/t1, web/t2? [y/N] " in err and err.endswith("horizon: error: nothing was asked\n")
    monkeypatch.setattr("sys.stdin", Terminal("y\n"))
    code, out, err = horizon(["pause", *BASE, "--service", "web", "--tag", "blue"], etcd, monkeypatch, capsys)
    assert code == 0 and len(etcd.puts) == 2 and len(out.splitlines()) == 2


def test_yes_or_no_terminal_asks_nothing(etcd, monkeypatch, capsys) -> None:
    monkeypatch.setattr("sys.stdin", Terminal(""))
    code, _, err = horizon(["stop", *BASE, "--tag", "blue", "--yes"], etcd, monkeypatch, capsys)
    assert code == 0 and "[y/N]" not in err and len(etcd.puts) == 3  # web/t1, t2 and the paused t3
    etcd2 = FakeEtcd()
    etcd2.add("web", "t1")
    etcd2.react = acts(EFFECT)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    code, _, err = horizon(["stop", *BASE, "--service", "web"], etcd2, monkeypatch, capsys)
    assert code == 0 and "[y/N]" not in err


def test_a_selection_with_nothing_to_do_is_one_line(etcd, monkeypatch, capsys) -> None:
    code, _, err = horizon(["resume", *BASE, "--service", "db"], etcd, monkeypatch, capsys)
    assert code == 1 and err == "horizon: error: no task to resume: none selected lives under /ns\n"
    code, _, err = horizon(["pause", *BASE, "--service", "web", "--tag", "x"], etcd, monkeypatch, capsys)
    assert code == 1 and etcd.puts == []


def test_a_request_nobody_takes_times_out_saying_what_it_saw_and_is_withdrawn(etcd, monkeypatch, capsys) -> None:
    etcd.react = None
    code, out, err = horizon(["pause", *BASE, "web/t1", "--timeout", "0.2"], etcd, monkeypatch, capsys)
    assert code == 1 and out == ""
    assert err == ("horizon: error: web/t1: no paused state within 0.2 s: it is still running; the request is "
                   "withdrawn: is its supervisor running, and a version that watches control keys?\n")
    assert f"{NS}/control/web/t1" not in etcd.keys


def test_a_request_taken_without_the_effect_says_so(etcd, monkeypatch, capsys) -> None:
    etcd.react = lambda etcd_, key, request: etcd_.delete(key, etcd_.keys[key][1])
    code, _, err = horizon(["pause", *BASE, "web/t1", "--timeout", "0.2"], etcd, monkeypatch, capsys)
    assert code == 1 and err.endswith("it is still running; its supervisor took the request\n")


def test_a_stop_that_ends_otherwise_says_how(etcd, monkeypatch, capsys) -> None:
    etcd.react = lambda etcd_, key, request: etcd_.idle.append(
        lambda: etcd_.status("web", "t1", state="failed", exit_code=143))
    code, _, err = horizon(["stop", *BASE, "web/t1"], etcd, monkeypatch, capsys)
    assert code == 1 and err == "horizon: error: web/t1: it ended failed (143) instead of stopped\n"


def test_a_record_gone_while_waiting_is_awaited_back(etcd, monkeypatch, capsys) -> None:
    """etcd 3.5 may revoke a lease when its frozen leader resumes (etcd-io/etcd#15247): the supervisor
    writes the record again, with the effect, and the wait sees it."""
    def gone_then_back(etcd_: FakeEtcd, key: str, request: Dict[str, Any]) -> None:
        etcd_.idle.append(lambda: etcd_.drop(etcd_.task_prefix("web", "t1")))
        etcd_.idle.append(lambda: etcd_.add("web", "t1", state="paused"))
        etcd_.idle.append(lambda: etcd_.delete(key, etcd_.keys[key][1]))

    etcd.react = gone_then_back
    code, out, err = horizon(["pause", *BASE, "web/t1"], etcd, monkeypatch, capsys)
    assert code == 0 and err == "" and out.startswith("web/t1 paused (")


def test_a_record_that_stays_gone_times_out_saying_so(etcd, monkeypatch, capsys) -> None:
    etcd.react = lambda etcd_, key, request: etcd_.idle.append(lambda: etcd_.drop(etcd_.task_prefix("web", "t1")))
    code, _, err = horizon(["stop", *BASE, "web/t1", "--timeout", "0.2"], etcd, monkeypatch, capsys)
    assert code == 1 and err.startswith("horizon: error: web/t1: no stopped state within 0.2 s: its record is gone;")


def test_a_request_the_supervisor_refuses_ends_the_wait_with_its_reason(etcd, monkeypatch, capsys) -> None:
    def refuse(etcd_: FakeEtcd, key: str, request: Dict[str, Any]) -> None:
        refused = {"id": request["id"], "action": "pause", "reason": "the Docker engine failed to pause the container"}
        etcd_.idle.append(lambda: etcd_.status("web", "t1", refused=refused))

    etcd.react = refuse
    code, _, err = horizon(["pause", *BASE, "web/t1"], etcd, monkeypatch, capsys)
    assert code == 1 and err == ("horizon: error: web/t1: its supervisor could not pause it: "
                                 "the Docker engine failed to pause the container\n")


def test_a_user_who_may_not_write_is_told_so(etcd, monkeypatch, capsys) -> None:
    def refuse(key: str, value: str, ttl: int) -> None:
        raise Refused("127.0.0.1:2379: etcdserver: permission denied")

    monkeypatch.setattr(etcd, "put", refuse)
    code, out, err = horizon(["stop", *BASE, "web/t1"], etcd, monkeypatch, capsys)
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert "refused the stop request (127.0.0.1:2379: etcdserver: permission denied): only a user who may write " \
           f"{NS}/control/ can control tasks" in err
    assert state(etcd, "web", "t1") == "running"


def test_the_wait_follows_the_narrowest_prefix() -> None:
    assert control.common_prefix(["/ns/services/web/t1"]) == "/ns/services/web/t1/"
    assert control.common_prefix(["/ns/services/web/t1", "/ns/services/web/t2"]) == "/ns/services/web/"
    assert control.common_prefix(["/ns/services/web/t1", "/ns/services/db/t1"]) == "/ns/services/"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True
