"""The task flow's readiness and its required-etcd rule, on real sockets and shared memory, with a
notifier of the test's own: READY=1 once the task is live and etcd holds that same state."""

from __future__ import annotations

from typing import Any, Iterator, List

import pytest

from supervisor import frames
from supervisor.config import build
from supervisor.ending import Phase
from supervisor.sockets import bind_sockets
from tests.unit.notes import Notes
from supervisor.taskflow import TaskFlow

TASK = {"image": "busybox", "command": "sleep 1", "service": "web", "name": "task-1"}


@pytest.fixture
def flow_for() -> Iterator[Any]:
    made: List[Any] = []

    def make(**etcd: str) -> TaskFlow:
        config = build({"task": TASK, "etcd": etcd}, lambda section, key: f"[{section}] {key}", "test", None)
        sockets = bind_sockets("127.0.0.1", 0)
        made.extend(sockets)
        return TaskFlow(config, sockets, Notes())  # type: ignore[arg-type]

    yield make
    for sock in made:
        sock.close()


def status(flow: TaskFlow, state: str) -> None:
    data = frames.encode("status", flow.config.key, {"state": state, "updated_at": ""})
    flow.task_document(frames.decode(data))


def etcd(flow: TaskFlow, **report: Any) -> None:
    flow.etcd_report(flow.config.key, {"connected": True, "refused": None, **report})


def ready(flow: TaskFlow) -> List[str]:
    return [field for field in flow.notifier.sent if field == "READY=1"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("state", ["running", "paused"])
def test_ready_once_the_live_task_is_what_etcd_holds(flow_for, state: str) -> None:
    flow = flow_for()
    status(flow, state)
    etcd(flow, state=None)  # connected, but the record is not written yet
    assert ready(flow) == []
    etcd(flow, state=state)
    status(flow, state)
    assert ready(flow) == ["READY=1"]  # once


def test_not_ready_while_etcd_still_holds_another_state(flow_for) -> None:
    flow = flow_for()
    status(flow, "paused")
    etcd(flow, state="running")  # the pause is not in etcd yet
    assert ready(flow) == []


def test_ready_without_etcd_unless_it_is_required(flow_for) -> None:
    flow = flow_for()
    status(flow, "running")
    flow.etcd_report(flow.config.key, {"connected": False, "state": None, "refused": None})
    assert ready(flow) == ["READY=1"]


def test_a_required_etcd_that_does_not_answer_fails_the_start(flow_for) -> None:
    flow = flow_for(required="true")
    assert flow.container_role.wanted is False  # the container waits for etcd
    flow.etcd_report(flow.config.key, {"connected": False, "state": None, "refused": None})
    assert "does not answer and [etcd] required = true" in (flow.ending.failure or "")
    assert flow.ending.phase is Phase.FINISHING and ready(flow) == []


def test_a_required_etcd_that_answers_lets_the_container_start(flow_for) -> None:
    flow = flow_for(required="true")
    etcd(flow, state=None)
    assert flow.container_role.wanted is True and flow.ending.failure is None


def test_a_pause_is_replayed_to_a_restarted_container_worker_until_a_status_settles_it(flow_for, monkeypatch) -> None:
    """The container worker may die between the request and its act: the next one is asked again."""
    flow = flow_for()
    sent: List[Any] = []
    monkeypatch.setattr(flow.container_role, "send", lambda kind, key, body: sent.append((kind, body)))
    status(flow, "running")
    flow.control(flow.config.key, {"action": "pause", "id": "p1", "by": "ops@h"})
    assert sent == [("control", {"action": "pause", "id": "p1"})]
    flow.container_role.replay()  # a restarted worker
    assert sent[-1] == ("control", {"action": "pause", "id": "p1"}) and len(sent) == 2
    status(flow, "paused")
    flow.container_role.replay()
    assert len(sent) == 2  # settled: nothing more to replay


def test_a_refused_request_is_settled_and_a_stop_replaces_a_pending_pause(flow_for, monkeypatch) -> None:
    flow = flow_for()
    sent: List[Any] = []
    monkeypatch.setattr(flow.container_role, "send", lambda kind, key, body: sent.append((kind, body)))
    status(flow, "running")
    flow.control(flow.config.key, {"action": "pause", "id": "p1"})
    data = frames.encode("status", flow.config.key, {"state": "running", "updated_at": "",
                                                      "refused": {"id": "p1", "action": "pause", "reason": "no"}})
    flow.task_document(frames.decode(data))
    flow.container_role.replay()
    assert len(sent) == 1
    flow.control(flow.config.key, {"action": "pause", "id": "p2"})
    flow.stop("SIGTERM")
    sent.clear()
    flow.container_role.replay()
    assert sent == [("control", {"action": "stop"})]


def test_the_publishers_frames_reach_the_flow_and_a_restarted_one_gets_the_latest_documents(flow_for, monkeypatch,
                                                                                            caplog) -> None:
    flow = flow_for()
    key = flow.config.key
    relayed: List[Any] = []
    monkeypatch.setattr(flow.publisher_role, "send_encoded", lambda kind, task, data: relayed.append((kind, data)))
    monkeypatch.setattr(flow.publisher_role, "send", lambda kind, task, body: relayed.append((kind, body)))
    monkeypatch.setattr(flow.container_role, "send", lambda kind, task, body: relayed.append(("to container", body)))
    for kind, body in (("info", {"image": "busybox"}), ("metrics", {"seq": 1}), ("status", {"state": "running", "updated_at": ""})):
        flow.task_document(frames.decode(frames.encode(kind, key, body)))
    assert [kind for kind, _ in relayed] == ["info", "metrics", "status"] and flow.relayed == 3
    assert flow.ending.status is not None and flow.ending.status.running
    flow.publisher_role.on_frame(frames.decode(frames.encode("etcd", key, {"connected": True, "state": "running"})))
    assert flow.views[key].etcd["state"] == "running" and ready(flow) == ["READY=1"]
    flow.publisher_role.on_frame(frames.decode(frames.encode("control", key, {"action": "pause", "id": "p1"})))
    assert relayed[-1] == ("to container", {"action": "pause", "id": "p1"}) and flow.views[key].pending is not None
    relayed.clear()
    flow.publisher_role.replay()  # a restarted publisher: the documents again, as they came, in order
    documents = flow.views[key].documents
    assert relayed == [("info", documents["info"]), ("status", documents["status"]), ("metrics", documents["metrics"])]
    flow.finish()
    relayed.clear()
    flow.publisher_role.replay()
    assert relayed[-1] == ("finish", {})
    flow.publisher_role.on_frame(frames.decode(frames.encode("finished", key, {"published": False})))
    assert flow.publisher_role.retired
    assert "the final record could not be written to etcd; its TTL will expire it" in caplog.text
    assert "task web/task-1:" not in caplog.text  # a task tree's lines do not name its one task
