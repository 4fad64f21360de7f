"""``horizon prune`` on a fake etcd: finished records that would never expire or finished longer ago than
--older-than go, each removed whole and only if its status is still the one read; live records, recent
ones and records without a state stay; v2's empty service directories go; --dry-run removes nothing."""

from __future__ import annotations

import json
import time

import pytest

from supervisor.fleet import prune
from supervisor.fleet.records import Fleet
from supervisor.state import utc_now
from tests.unit.fleet_fake import NS, FakeEtcd, horizon

BASE = ["--namespace", NS]
LONG_AGO = "2026-01-05T10:00:00.000Z"


@pytest.fixture
def etcd() -> FakeEtcd:
    etcd = FakeEtcd("v2")
    etcd.add("web", "live", state="running", expires=False)  # no TTL, but live: never ours
    etcd.add("web", "bare", state="stopped", expires=False)  # finished, would never expire
    etcd.add("web", "old", state="exited", finished_at=LONG_AGO)  # finished long ago (with a TTL)
    etcd.add("web", "recent", state="failed", exit_code=1, finished_at=utc_now())  # kept keep_finished
    etcd.set(f"{etcd.task_prefix('web', 'half')}/info", json.dumps({"host": "h"}), expires=False)  # no state
    etcd.empty_dirs = {f"{NS}/services/gone"}
    return etcd


def names(removals) -> list:
    return [removal.task.name for removal in removals]


def test_the_plan_takes_finished_records_that_never_expire_or_are_old(etcd) -> None:
    fleet = Fleet.read(NS, etcd.read_prefix(f"{NS}/services/")[0])
    plan = prune.plan(fleet, time.time(), 600)
    assert names(plan) == ["web/bare", "web/old"]
    assert plan[0].why == "stopped (0), and it would never expire (no TTL or lease)"
    assert plan[1].why.startswith("exited (0), finished ") and plan[1].why.endswith(" ago")
    assert names(prune.plan(fleet, time.time(), 0)) == ["web/bare", "web/old", "web/recent"]


def test_dry_run_says_what_would_go_and_removes_nothing(etcd, monkeypatch, capsys) -> None:
    before = dict(etcd.keys)
    code, out, err = horizon(["prune", *BASE, "--dry-run"], etcd, monkeypatch, capsys)
    assert code == 0 and etcd.keys == before and etcd.empty_dirs == {f"{NS}/services/gone"}
    lines = out.splitlines()
    assert lines[0] == "would remove web/bare: stopped (0), and it would never expire (no TTL or lease)"
    assert lines[1].startswith("would remove web/old: exited (0), finished ")
    assert lines[2] == f"would remove the empty directory {NS}/services/gone"
    assert err == f"horizon: would remove 2 records and 1 empty directory under {NS}\n"


def test_prune_removes_them_and_nothing_live(etcd, monkeypatch, capsys) -> None:
    code, out, err = horizon(["prune", *BASE], etcd, monkeypatch, capsys)
    assert code == 0 and err == f"horizon: removed 2 records and 1 empty directory under {NS}\n"
    left = {key.split("/")[4] for key in etcd.keys}
    assert left == {"live", "recent", "half"} and etcd.empty_dirs == set()
    code, out, err = horizon(["prune", *BASE], etcd, monkeypatch, capsys)
    assert out == "" and err == f"horizon: removed 0 records and 0 empty directories under {NS}\n"


def test_older_than_chooses_the_age(etcd, monkeypatch, capsys) -> None:
    code, out, _ = horizon(["prune", *BASE, "--older-than", "0", "-n"], etcd, monkeypatch, capsys)
    assert [line.split()[2].rstrip(":") for line in out.splitlines()[:3]] == ["web/bare", "web/old", "web/recent"]


def test_a_record_that_changed_since_it_was_read_is_kept(etcd, monkeypatch, capsys) -> None:
    real = etcd.remove

    def changed_first(prefix: str, key: str, revision: int) -> bool:
        etcd.status("web", "bare", state="running")  # the task was started again under the same name
        return real(prefix, key, revision)

    monkeypatch.setattr(etcd, "remove", changed_first)
    code, out, err = horizon(["prune", *BASE], etcd, monkeypatch, capsys)
    assert code == 0 and "horizon: kept web/bare: it changed since it was read" in err
    assert etcd.value(f"{etcd.task_prefix('web', 'bare')}/status")["state"] == "running"
