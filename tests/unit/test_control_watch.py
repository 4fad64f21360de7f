"""The control watch hands over each request for one of its tasks once it shows in etcd, ignores what is
not a request of ours, reads again after etcd compacted its history, and keeps watching through an outage;
the publisher passes each request on once and deletes it only once the task's status settles it."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace
from typing import List, Tuple

from supervisor.etcd.errors import Missing, Unavailable
from supervisor.etcd.store import Entry
from supervisor.frames import Frame, TaskKey
from supervisor.state import Status
from tests.support.waiting import wait_for
from workers import control
from workers.control import ControlWatch, parse
from workers.publisher import PublisherWorker

WEB = TaskKey("web", "t1")
KEY = "/ns/control/web/t1"


def request(action: str, rid: str = "r1", key: str = KEY, revision: int = 7) -> Entry:
    return Entry(key, json.dumps({"action": action, "id": rid, "by": "ops@host"}), revision)


def test_a_request_for_one_of_our_tasks_is_parsed_with_who_asked() -> None:
    found = parse(request("pause"), {KEY: WEB})
    assert found is not None and (found.task, found.action, found.id, found.by, found.revision) == (WEB, "pause", "r1", "ops@host", 7)


def test_other_tasks_deletions_garbage_and_unknown_actions_are_not_requests(caplog) -> None:
    tasks = {KEY: WEB}
    assert parse(request("pause", key="/ns/control/web/t2"), tasks) is None
    assert parse(Entry(KEY, None, 8), tasks) is None  # our own delete, seen by the watch
    assert parse(Entry(KEY, "not json", 9), tasks) is None
    assert parse(request("reboot"), tasks) is None
    assert "unknown action 'reboot'" in caplog.text


class FakeBackend:
    """read_prefix and wait answer from a script; the test's thread and the watch's meet on a lock."""

    def __init__(self, script: List[object]) -> None:
        self.script = script
        self.reads = 0
        self.lock = threading.Lock()

    def read_prefix(self, prefix: str) -> Tuple[List[Entry], int]:
        self.reads += 1
        return ([request("stop", "pending", revision=3)] if self.reads == 1 else []), 5

    def wait(self, prefix: str, after: int, timeout: float) -> Tuple[List[Entry], int]:
        with self.lock:
            step = self.script.pop(0) if self.script else None
        if step is None:
            threading.Event().wait(timeout)
            return [], after
        if isinstance(step, Exception):
            raise step
        assert isinstance(step, Entry)
        return [step], step.revision


def test_pending_requests_then_new_ones_through_compaction_and_an_outage(monkeypatch) -> None:
    monkeypatch.setattr(control, "RETRY", 0.01)
    backend = FakeBackend([request("pause", "a", revision=6), Missing("compacted"), Unavailable("away"),
                           request("resume", "b", revision=9)])
    watch = ControlWatch(backend, "/ns", [WEB]).start()  # type: ignore[arg-type]
    taken: List[str] = []
    wait_for(lambda: taken.extend(r.action for r in watch.take()) or len(taken) >= 3, 5, "three requests")
    assert taken == ["stop", "pause", "resume"] and backend.reads == 2


class Taking:
    """A record as the publisher worker sees it: the latest status it took."""

    def __init__(self) -> None:
        self.status = None

    def take(self, kind: str, body: dict) -> None:
        self.status = Status.from_dict(body)


def test_the_publisher_keeps_a_request_in_etcd_until_the_tasks_status_settles_it() -> None:
    """A supervisor killed after taking a request but before acting leaves the key to the next one."""
    deleted: List[Tuple[str, int]] = []
    sent: List[Tuple[str, dict]] = []
    backend = SimpleNamespace(delete=lambda key, revision: deleted.append((key, revision)) or True)
    worker = SimpleNamespace(inbox=None, outbox=None, watch=None, pulse=None)
    publisher = PublisherWorker({WEB: Taking()}, worker, backend)  # type: ignore[arg-type, dict-item]
    publisher.send = lambda kind, key, body: sent.append((kind, body))  # type: ignore[method-assign]
    publisher.receive(Frame("status", WEB, {"state": "running", "updated_at": ""}))
    [pause] = [parse(request("pause", "p1"), {KEY: WEB})]
    publisher.pass_on(pause)
    publisher.pass_on(pause)  # the watch handing it over again (a re-read after compaction)
    assert sent == [("control", {"action": "pause", "id": "p1", "by": "ops@host"})] and deleted == []
    publisher.receive(Frame("status", WEB, {"state": "running", "updated_at": ""}))
    assert deleted == []
    publisher.receive(Frame("status", WEB, {"state": "paused", "updated_at": ""}))
    assert deleted == [(KEY, 7)]
    publisher.pass_on(parse(request("resume", "r2", revision=9), {KEY: WEB}))  # type: ignore[arg-type]
    publisher.receive(Frame("status", WEB, {"state": "paused", "updated_at": "",
                                            "refused": {"id": "r2", "action": "resume", "reason": "engine"}}))
    assert deleted[-1] == (KEY, 9)
