"""What ``horizon watch`` reports: a task that appeared (once it has a state), whose state changed, or
that is gone; followed through the changes etcd's wait brings after one read, on both APIs' shapes
(v2: a directory deleted or given a new TTL stands for every key under it), read again after a
compaction, and never moved back by a change older than what a read gave."""

from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest

from supervisor.etcd.store import Entry
from supervisor.fleet.changes import Follower, differences, selected, states
from supervisor.fleet.records import Fleet, Selection
from tests.unit.fleet_fake import NS, FakeEtcd


class Watch:
    """What a watch on ``etcd`` would print as JSON lines, step by step."""

    def __init__(self, etcd: FakeEtcd, selection: Selection = Selection()) -> None:
        self.follower = Follower(etcd, NS)
        self.follower.read()
        self.selection = selection
        self.before: Dict[str, str] = {}

    def events(self, steps: int = 0) -> List[Dict[str, Any]]:
        for _ in range(steps):
            self.follower.step(0.01)
        current = selected(self.follower.fleet, self.selection)
        found = differences(self.before, current, 0.0)
        self.before = states(current)
        return [{k: e[k] for k in ("event", "service", "task", "state") if k in e}
                | ({"previous_state": e["previous_state"]} if "previous_state" in e else {}) for e in found]

    def drain(self) -> List[Dict[str, Any]]:
        """Every change made so far, one wait after another (v2 gives one at a time)."""
        found: List[Dict[str, Any]] = []
        while self.follower.step(0.01):
            found += self.events()
        return found + self.events()


@pytest.mark.parametrize("api", ["v2", "v3"])
def test_appeared_changed_and_gone(api: str) -> None:
    etcd = FakeEtcd(api)
    etcd.add("web", "t1")
    watch = Watch(etcd)
    assert watch.events() == [{"event": "appeared", "service": "web", "task": "t1", "state": "running"}]
    etcd.add("web", "t2", state="starting")
    etcd.status("web", "t1", state="paused")
    assert sorted(watch.drain(), key=lambda e: e["task"]) == [  # v3: one batch; v2: one change at a time
        {"event": "changed", "service": "web", "task": "t1", "state": "paused", "previous_state": "running"},
        {"event": "appeared", "service": "web", "task": "t2", "state": "starting"},
    ]
    etcd.drop(etcd.task_prefix("web", "t1"))
    assert watch.drain() == [{"event": "gone", "service": "web", "task": "t1", "state": "paused"}]
    assert watch.drain() == []


def test_a_task_appears_once_its_record_has_a_state() -> None:
    etcd = FakeEtcd("v2")
    watch = Watch(etcd)
    prefix = etcd.task_prefix("web", "t1")
    etcd.set(f"{prefix}/info", json.dumps({"host": "h"}))
    assert watch.drain() == []
    etcd.set(f"{prefix}/status", json.dumps({"state": "running"}))
    assert watch.drain() == [{"event": "appeared", "service": "web", "task": "t1", "state": "running"}]


def test_v2_a_directory_given_a_new_ttl_is_read_again_not_taken_for_gone() -> None:
    etcd = FakeEtcd("v2")
    etcd.add("web", "t1")
    watch = Watch(etcd)
    watch.events()
    etcd.touch_dir(etcd.task_prefix("web", "t1"))  # the final record's write_all: a new TTL on the directory
    etcd.status("web", "t1", state="stopped")
    assert watch.drain() == [{"event": "changed", "service": "web", "task": "t1", "state": "stopped",
                              "previous_state": "running"}]
    assert f"{etcd.task_prefix('web', 't1')}/" in etcd.reads


def test_v2_a_service_directory_removed_takes_every_task_under_it() -> None:
    etcd = FakeEtcd("v2")
    etcd.add("web", "t1")
    etcd.add("web", "t2")
    etcd.add("db", "t1")
    watch = Watch(etcd)
    watch.events()
    etcd.drop(f"{NS}/services/web")
    gone = watch.drain()
    assert sorted((e["event"], e["service"], e["task"]) for e in gone) == [("gone", "web", "t1"), ("gone", "web", "t2")]


def test_a_compacted_history_is_read_again() -> None:
    etcd = FakeEtcd()
    etcd.add("web", "t1")
    watch = Watch(etcd)
    watch.events()
    etcd.status("web", "t1", state="stopping")
    etcd.add("web", "t2")
    etcd.compact()
    assert watch.follower.step(0.01) is True
    assert watch.events() == [
        {"event": "changed", "service": "web", "task": "t1", "state": "stopping", "previous_state": "running"},
        {"event": "appeared", "service": "web", "task": "t2", "state": "running"},
    ]


def test_a_change_older_than_what_is_held_is_ignored() -> None:
    fleet = Fleet.read(NS, [Entry(f"{NS}/services/web/t1/status", json.dumps({"state": "stopped"}), 50)])
    fleet.apply([Entry(f"{NS}/services/web/t1/status", json.dumps({"state": "running"}), 40)])
    fleet.remove(f"{NS}/services/web/t1", 45)  # a deletion from before the key was last written
    task = fleet.get("web", "t1")
    assert task is not None and task.state == "stopped"
    fleet.remove(f"{NS}/services/web/t1/status", 51)
    assert fleet.get("web", "t1") is None


def test_filters_make_a_task_leaving_the_selection_gone() -> None:
    etcd = FakeEtcd()
    etcd.add("web", "t1")
    etcd.add("db", "t1")
    watch = Watch(etcd, Selection(state="running"))
    assert [e["service"] for e in watch.events()] == ["db", "web"]
    etcd.status("web", "t1", state="paused")
    assert watch.drain() == [{"event": "gone", "service": "web", "task": "t1", "state": "running"}]


def test_each_event_carries_the_row_and_the_time() -> None:
    etcd = FakeEtcd()
    etcd.add("web", "t1", tags=("a",))
    follower = Follower(etcd, NS)
    follower.read()
    [event] = differences({}, selected(follower.fleet, Selection()), 0.0)
    assert event["event"] == "appeared" and event["at"].endswith("Z")
    assert event["tags"] == ["a"] and event["endpoint"] == "http://127.0.0.1:8080" and event["cpu_percent"] == 12.5
    json.dumps(event)
