"""A host tree's parts without processes: the directory's files read and judged one by one, the parent's
course of each task (on real sockets, shared memory and locks, with the roles' frames recorded), the
container worker's routing pieces, the control watch handing over a new task's waiting request, the
host endpoint's routes and its one exposition of every task, and ``horizon sd`` per task or per host."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Tuple

import msgpack
import pytest
from tornado.testing import AsyncHTTPTestCase

from supervisor import config as cfg
from supervisor import frames
from supervisor.etcd.store import Entry
from supervisor.fleet import sd
from supervisor.fleet.records import Fleet
from supervisor.frames import TaskKey
from supervisor.hostconfig import load_host, scan
from supervisor.hostflow import Course, HostFlow
from supervisor.shm import SharedMemory
from supervisor.sockets import bind_sockets
from tests.unit.notes import Notes
from tests.unit.fleet_fake import NS, record
from supervisor.channel import Outbox
from workers.container import TaskOutput
from workers.containers import SampleSchedule, TaskInbox, TaskPulse
from workers.seqfile import SeqFile
from workers.control import ControlWatch
from workers.endpoint_host import HostSite
from workers.exposition import TEXT

BUSY = "[task]\nimage = busybox\ncommand = sleep 100\nservice = web\n"


def task_file(directory: Path, name: str, extra: str = "") -> Path:
    path = directory / f"{name}.ini"
    path.write_text(f"{BUSY}name = {name}\n{extra}")
    return path


# -- the directory ------------------------------------------------------------------------------------


def test_a_directory_without_horizon_ini_takes_the_defaults(tmp_path: Path) -> None:
    host = load_host(str(tmp_path))
    assert (host.endpoint.host, host.endpoint.port, host.etcd.api, host.host.capacity) == ("127.0.0.1", 0, "v3", 256)


@pytest.mark.parametrize("text, expected", [
    ("[task]\nimage = x\n", "horizon.ini: unknown section [task]"),
    ("[host]\ncapacity = 0\n", "horizon.ini: [host] capacity: 0 is out of range"),
    ("[endpoint]\nprot = 1\n", "[endpoint] unknown key 'prot'; did you mean 'port'?"),
])
def test_a_mistake_in_horizon_ini_stops_the_start(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "horizon.ini").write_text(text)
    with pytest.raises(cfg.ConfigError, match=expected.replace("[", r"\[").replace("?", r"\?")):
        load_host(str(tmp_path))


def test_not_a_directory_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="not a directory"):
        load_host(str(tmp_path / "missing"))


def test_each_bad_file_is_one_line_and_the_good_ones_are_read(tmp_path: Path) -> None:
    (tmp_path / "horizon.ini").write_text("[etcd]\nhosts = 127.0.0.1:2479\nnamespace = /ns\n[host]\nhistory = 10\n")
    good = task_file(tmp_path, "a", "[etcd]\nnamespace = /ns\nhosts = 127.0.0.1:2479\n")  # the same etcd: fine
    task_file(tmp_path, "b", "[endpoint]\nport = 8080\n")
    task_file(tmp_path, "c", "[etcd]\nnamespace = /other\n")
    task_file(tmp_path, "d", "[metrics]\nhistory = 11\n")
    (tmp_path / "e.ini").write_text(BUSY + "name = a\n")  # a's task again
    (tmp_path / "f.ini").write_text("[task]\ncommand = true\n")
    (tmp_path / "notes.txt").write_text("not a task file")
    files = {Path(file.path).stem: file for file in scan(load_host(str(tmp_path)))}
    assert sorted(files) == ["a", "b", "c", "d", "e", "f"]
    config = files["a"].config
    assert config is not None and config.key == TaskKey("web", "a") and config.source == str(good)
    assert config.etcd.hosts == (("127.0.0.1", 2479),) and config.endpoint.port == 0
    errors = {name: file.error for name, file in files.items() if name != "a"}
    assert all(error and "\n" not in error and error.startswith(str(tmp_path)) for error in errors.values())
    assert "[endpoint]: one endpoint serves every task" in str(errors["b"]) and "horizon.ini" in str(errors["b"])
    assert "[etcd] differs from" in str(errors["c"])
    assert "[metrics] history: 11 is above the host's 10" in str(errors["d"])
    assert "task web/a is" in str(errors["e"]) and "give [task] name a value of its own" in str(errors["e"])
    assert "[task] image: missing" in str(errors["f"])


def test_a_config_crosses_a_frame_unchanged(tmp_path: Path) -> None:
    path = task_file(tmp_path, "a", "tags = x,y\nenvironment = A=1 'B=two words'\n[etcd]\nhosts = h1:1,h2:2\n")
    config = cfg.load(str(path))
    document = msgpack.unpackb(msgpack.packb(config.to_document()))
    assert cfg.Config.from_document(document) == config


# -- shared memory --------------------------------------------------------------------------------------


def test_a_tasks_output_ignores_what_another_task_left_in_its_block(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HORIZON_RUN_DIR", str(tmp_path))
    shm = SharedMemory(roles=["container"], capacity=1)
    shm.attach(A, 0).metrics.write_frame("metrics", A, {"seq": 77})
    shm.tasks[A].status.write_frame("status", A, {"state": "running"})
    config = cfg.build({"task": {"image": "busybox", "command": "true", "service": "web", "name": "b"}},
                       lambda s, k: k, "test", None)
    output = TaskOutput(B, shm.attach(B, 0), Outbox(os.open(os.devnull, os.O_WRONLY)), 5, SeqFile(config))
    assert output.seq == 0 and output.last_status() is None


def test_a_freed_block_reads_as_never_written_for_the_next_task() -> None:
    shm = SharedMemory(roles=["container"], history=3, capacity=2)
    first, second = TaskKey("web", "a"), TaskKey("web", "b")
    slots = shm.attach(first, 1)
    slots.metrics.write_frame("metrics", first, {"seq": 5})
    slots.history.append(5, 1.0, {})
    shm.detach(first)
    shm.clear(1)
    taken = shm.attach(second, 1)
    assert taken.metrics.read() == (0, None) and taken.history.since(0) == [] and first not in shm.tasks


# -- the parent's course of each task --------------------------------------------------------------------


@pytest.fixture
def flow_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("HORIZON_RUN_DIR", str(tmp_path / "run"))
    made: List[Any] = []

    def make(directory: Path, capacity: int = 4) -> Tuple[HostFlow, List[Tuple[str, str, TaskKey, Any]]]:
        (directory / "horizon.ini").write_text(f"[host]\ncapacity = {capacity}\nhistory = 10\n")
        sent: List[Tuple[str, str, TaskKey, Any]] = []
        sockets = bind_sockets("127.0.0.1", 0)
        made.append(sockets)
        flow = HostFlow(load_host(str(directory)), sockets, Notes())  # type: ignore[arg-type]
        for role in flow.roles:
            monkeypatch.setattr(role, "send", lambda kind, key, body, name=role.name: sent.append((name, kind, key, body)))
            monkeypatch.setattr(role, "send_encoded", lambda kind, key, data, name=role.name: sent.append((name, kind, key, data)))
        return flow, sent

    yield make
    for sockets in made:
        for sock in sockets:
            sock.close()


def status(flow: HostFlow, key: TaskKey, state: str) -> None:
    flow.task_document(frames.decode(frames.encode("status", key, {"state": state, "updated_at": ""})))


def kinds(sent: List[Tuple[str, str, TaskKey, Any]], key: TaskKey) -> List[Tuple[str, str]]:
    return [(role, kind) for role, kind, task, _ in sent if task == key]


A, B, C = TaskKey("web", "a"), TaskKey("web", "b"), TaskKey("web", "c")


def test_each_task_runs_its_own_course_and_frees_its_block_and_lock(tmp_path: Path, flow_in) -> None:
    for name in "ab":
        task_file(tmp_path, name)
    flow, sent = flow_in(tmp_path)
    assert set(flow.tasks) == {A, B} and flow.tasks[A].endpoint["url"].endswith("/tasks/web/a")
    sent.clear()
    flow.task_ended(A, 0)  # a's container ended by itself
    assert flow.tasks[A].course is Course.FINISHING and kinds(sent, A) == [("publisher", "finish")]
    index = flow.tasks[A].index
    flow.task_finished(A, True)
    assert A not in flow.tasks and index in flow.free and flow.tasks[B].course is Course.RUNNING
    assert kinds(sent, A)[1:] == [("publisher", "drop"), ("container", "drop"), ("endpoint", "drop")]
    assert not (tmp_path / "run" / "web.a.lock").exists() and (tmp_path / "run" / "web.b.lock").exists()
    assert not flow.over  # the tree runs until SIGTERM
    flow.stop("SIGTERM")
    assert kinds(sent, B)[-1] == ("container", "control") and flow.tasks[B].course is Course.STOPPING
    flow.task_ended(B, 0)
    flow.task_finished(B, True)
    assert flow.over and flow.exit_code() == 0


def test_a_reload_starts_new_files_stops_removed_ones_and_restarts_changed_ones(tmp_path: Path, flow_in, caplog) -> None:
    for name in "ab":
        task_file(tmp_path, name)
    flow, sent = flow_in(tmp_path)
    sent.clear()
    (tmp_path / "a.ini").unlink()
    task_file(tmp_path, "b", "stop_timeout = 3\n")
    task_file(tmp_path, "c")
    (tmp_path / "d.ini").write_text("[task]\nimage = busybox\n")
    flow.reload()
    assert flow.tasks[A].course is Course.STOPPING and flow.tasks[B].course is Course.STOPPING
    assert flow.tasks[C].course is Course.RUNNING and ("container", "task") in kinds(sent, C)
    assert "d.ini: [task] command: missing" in caplog.text
    for key in (A, B):
        flow.task_ended(key, 0)
        flow.task_finished(key, True)
    assert A not in flow.tasks
    assert flow.tasks[B].course is Course.RUNNING and flow.tasks[B].config.task.stop_timeout == 3  # b again, changed
    sent.clear()
    flow.reload()  # nothing changed: nothing touched
    assert sent == []


def test_a_file_removed_and_put_back_while_its_task_stops_starts_it_again(tmp_path: Path, flow_in) -> None:
    task_file(tmp_path, "a")
    flow, _ = flow_in(tmp_path)
    text = (tmp_path / "a.ini").read_text()
    (tmp_path / "a.ini").unlink()
    flow.reload()
    (tmp_path / "a.ini").write_text(text)
    flow.reload()
    assert flow.tasks[A].course is Course.STOPPING
    flow.task_ended(A, 0)
    flow.task_finished(A, True)
    assert flow.tasks[A].course is Course.RUNNING


def test_a_changed_file_gone_bad_leaves_its_task_running(tmp_path: Path, flow_in, caplog) -> None:
    task_file(tmp_path, "a")
    flow, sent = flow_in(tmp_path)
    (tmp_path / "a.ini").write_text("[task]\nimage = busybox\ncommand = 'unclosed\n")
    flow.reload()
    assert flow.tasks[A].course is Course.RUNNING and "task web/a runs on as it was" in caplog.text


def test_a_task_that_ended_runs_again_only_when_its_file_changes(tmp_path: Path, flow_in) -> None:
    task_file(tmp_path, "a")
    flow, _ = flow_in(tmp_path)
    flow.task_ended(A, 0)
    flow.task_finished(A, True)
    flow.reload()
    assert A not in flow.tasks
    task_file(tmp_path, "a", "stop_timeout = 4\n")
    flow.reload()
    assert flow.tasks[A].course is Course.RUNNING


def test_beyond_its_capacity_a_task_is_refused_in_one_line_and_taken_on_once_there_is_room(tmp_path: Path, flow_in,
                                                                                          caplog) -> None:
    for name in "abc":
        task_file(tmp_path, name)
    flow, _ = flow_in(tmp_path, capacity=2)
    assert set(flow.tasks) == {A, B} and "capacity: raise [host] capacity" in caplog.text
    flow.task_ended(A, 0)
    flow.task_finished(A, True)
    flow.reload()
    assert set(flow.tasks) == {B, C}


def test_control_reaches_the_one_task_named(tmp_path: Path, flow_in) -> None:
    for name in "ab":
        task_file(tmp_path, name)
    flow, sent = flow_in(tmp_path)
    sent.clear()
    flow.control(A, {"action": "pause", "id": "r1", "by": "ops"})
    assert kinds(sent, A) == [("container", "control")] and kinds(sent, B) == []
    status(flow, A, "paused")
    assert flow.tasks[A].view.pending is None  # settled
    flow.control(B, {"action": "stop", "id": "r2", "by": "ops"})
    assert flow.tasks[B].course is Course.STOPPING and flow.tasks[A].course is Course.RUNNING


def test_a_restarted_container_worker_is_handed_every_live_task_again(tmp_path: Path, flow_in) -> None:
    for name in "abc":
        task_file(tmp_path, name)
    flow, sent = flow_in(tmp_path)
    flow.task_ended(C, 0)  # its end is recorded: never handed again
    flow.stop_task(flow.tasks[B], "test")
    sent.clear()
    flow.container_role.replay()
    assert kinds(sent, A) == [("container", "task")] and kinds(sent, C) == []
    assert kinds(sent, B) == [("container", "task"), ("container", "control")]


def test_ready_once_every_task_runs_and_is_registered(tmp_path: Path, flow_in) -> None:
    for name in "ab":
        task_file(tmp_path, name)
    flow, _ = flow_in(tmp_path)
    for key in (A, B):
        status(flow, key, "running")
    flow.etcd_report(A, {"connected": True, "state": "running"})
    assert "READY=1" not in flow.notifier.sent
    flow.etcd_report(B, {"connected": True, "state": "running"})
    assert flow.notifier.sent.count("READY=1") == 1 and any(f.startswith("STATUS=2 tasks") for f in flow.notifier.sent)


def test_a_task_just_running_is_not_stale_before_its_first_sample(tmp_path: Path, flow_in) -> None:
    task_file(tmp_path, "a")
    flow, _ = flow_in(tmp_path)
    now = time.monotonic()
    assert flow.problem(now) is None  # not live yet
    status(flow, A, "running")
    assert flow.problem(now + 1) is None  # live for a second, no sample yet: not stale
    assert "web/a: no sample for" in str(flow.problem(now + 30))
    flow.shm.tasks[A].metrics.write_frame("metrics", A, {"seq": 1})
    assert flow.problem(time.monotonic()) is None


def test_an_empty_directory_is_ready_at_once(tmp_path: Path, flow_in, caplog) -> None:
    caplog.set_level(logging.INFO)
    flow, _ = flow_in(tmp_path)
    flow.maybe_ready()
    assert flow.notifier.sent[0] == "READY=1" and "no task files in" in caplog.text


def test_the_publishers_frames_reach_the_task_named_and_a_restarted_one_is_caught_up(tmp_path: Path, flow_in,
                                                                                       caplog) -> None:
    for name in "ab":
        task_file(tmp_path, name)
    flow, sent = flow_in(tmp_path)
    info = frames.decode(frames.encode("info", A, {"image": "busybox"}))
    flow.task_document(info)
    status(flow, A, "running")
    publisher = flow.publisher_role
    publisher.on_frame(frames.decode(frames.encode("etcd", A, {"connected": True, "state": "running"})))
    assert flow.tasks[A].view.etcd["state"] == "running" and flow.tasks[B].view.etcd == {}
    publisher.on_frame(frames.decode(frames.encode("control", A, {"action": "pause", "id": "p1"})))
    assert sent[-1] == ("container", "control", A, {"action": "pause", "id": "p1"})
    flow.task_ended(A, 0)
    sent.clear()
    publisher.replay()  # a restarted publisher: each task, its documents as they came, and a's finish
    assert kinds(sent, A) == [("publisher", "task"), ("publisher", "info"), ("publisher", "status"), ("publisher", "finish")]
    assert sent[1][3] == info.data and kinds(sent, B) == [("publisher", "task")]
    publisher.on_frame(frames.decode(frames.encode("finished", A, {"published": False})))
    assert A not in flow.tasks and not publisher.retired
    assert "task web/a: the final record could not be written to etcd; its TTL will expire it" in caplog.text


# -- the container worker's routing ----------------------------------------------------------------------


def test_a_task_inbox_wakes_its_thread_and_ends() -> None:
    inbox = TaskInbox()
    try:
        frame = frames.decode(frames.encode("control", A, {"action": "stop"}))
        inbox.put(frame)
        inbox.put(frame)
        assert inbox.read() == [frame, frame] and inbox.read() == [] and not inbox.eof
        inbox.end()
        assert inbox.eof
    finally:
        inbox.close()


def test_a_task_pulse_is_overdue_only_past_its_promise_and_its_bound() -> None:
    pulse = TaskPulse(0.5)
    pulse.beat()
    now = time.monotonic()
    assert not pulse.overdue(now) and pulse.overdue(now + 0.7 + 2.1)
    with pulse.busy(30):
        assert not pulse.overdue(time.monotonic() + 20)


def test_every_task_is_sampled_at_its_own_interval_on_a_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.05]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    schedule = SampleSchedule()
    taken: List[Tuple[str, float]] = []
    schedule.add(A, lambda now: taken.append(("a", clock[0])), 1.0)
    schedule.add(B, lambda now: taken.append(("b", clock[0])), 0.25)
    assert schedule.due() == 100.25  # b's first tick; a's is 101.0, the next multiple of its interval
    while clock[0] < 102.0:
        clock[0] = round(clock[0] + 0.05, 2)
        schedule.run_due(clock[0])
    assert [t for name, t in taken if name == "a"] == [101.0, 102.0]
    assert [t for name, t in taken if name == "b"][:4] == [100.25, 100.5, 100.75, 101.0]
    schedule.remove(B)
    clock[0] = 103.0
    taken.clear()
    schedule.run_due(clock[0])
    assert taken == [("a", 103.0)]


def test_every_next_burst_of_tasks_is_a_phase_later(monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.containers import BURST, BURSTS

    monkeypatch.setattr(time, "monotonic", lambda: 50.0)
    schedule = SampleSchedule()
    for index in range(BURST + 1):
        schedule.add(TaskKey("web", f"t{index}"), lambda now: None, 1.0)
    ticks = sorted(tick for tick, _, _ in schedule._heap)
    assert ticks[:BURST] == [50.0] * BURST and ticks[BURST] == pytest.approx(50.0 + 1.0 / BURSTS)


def busy(seconds: float) -> None:
    """A heavy sample: its thread's own CPU (what the schedule measures), not a sleep."""
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_task_whose_samples_are_heavy_moves_to_the_heavy_schedule() -> None:
    heavy = SampleSchedule()
    schedule = SampleSchedule(heavy)
    schedule.add(A, lambda now: busy(0.006), 0.01)
    schedule.add(B, lambda now: None, 0.01)
    for _ in range(5):
        time.sleep(0.011)
        schedule.run_due(time.monotonic())
    assert heavy.due() is not None and schedule.due() is not None
    heavy.remove(B)
    schedule.remove(A)  # removes it from both
    assert heavy.due() is None


# -- control requests waiting for a task taken on later ----------------------------------------------------


def test_a_request_written_before_its_task_was_taken_on_is_handed_over_then() -> None:
    watch = ControlWatch(None, "/ns", [A])  # type: ignore[arg-type]
    body = json.dumps({"action": "pause", "id": "r9", "by": "ops"})
    watch._hand_over([Entry("/ns/control/web/b", body, 7)], whole=True)
    assert watch.take() == []
    watch.watch([A, B])
    taken = watch.take()
    assert [(r.task, r.action, r.id) for r in taken] == [(B, "pause", "r9")]
    watch._hand_over([Entry("/ns/control/web/c", body, 8), Entry("/ns/control/web/c", None, 9)])
    watch.watch([A, B, C])  # c's request was deleted meanwhile: nothing
    assert watch.take() == []


# -- the host endpoint -----------------------------------------------------------------------------------


def task_frame(key: TaskKey, slot: int, directory: str = "/etc/horizon/tasks.d") -> frames.Frame:
    config = cfg.build({"task": {"image": "busybox", "command": "sleep 1", "service": key.service, "name": key.name}},
                       lambda s, k: k, f"{directory}/{key.name}.ini", None)
    body = {"slot": slot, "config": config.to_document(),
            "endpoint": {"host": "127.0.0.1", "port": 1, "url": f"http://127.0.0.1:1/tasks/{key.path}"}}
    return frames.decode(frames.encode("task", key, body))


class HostEndpointCase(AsyncHTTPTestCase):
    def get_app(self) -> HostSite:
        self.shm = SharedMemory(roles=["container"], capacity=3)
        self.site = HostSite(self.shm)
        for index, key in enumerate((A, B)):
            self.site.on_frame(task_frame(key, index))
            slots = self.shm.tasks[key]
            slots.status.write_frame("status", key, {"state": "running", "started_at": "2026-01-01T00:00:00Z"})
            slots.metrics.write_frame("metrics", key, {"service": "web", "task": key.name, "seq": 3,
                                                       "timestamp": time.time(), "container": {"pids": 2}})
        return self.site

    def get_json(self, path: str) -> Tuple[int, Any]:
        response = self.fetch(path)
        return response.code, json.loads(response.body)

    def test_each_task_is_served_under_its_own_path(self) -> None:
        assert self.get_json("/tasks/web/a/status")[1]["state"] == "running"
        code, metrics = self.get_json("/tasks/web/b/metrics")  # the fast path
        assert code == 200 and (metrics["task"], metrics["seq"]) == ("b", 3) and "supervisor" in metrics
        assert self.get_json("/tasks/web/zz/status")[0] == 404 and self.get_json("/nothing")[0] == 404
        page = self.fetch("/tasks/web/a", follow_redirects=False)
        assert page.code in (301, 302) and page.headers["Location"] == "/tasks/web/a/"
        assert b"<html" in self.fetch("/tasks/web/a/").body.lower()

    def test_the_host_lists_its_tasks_and_their_health(self) -> None:
        code, tasks = self.get_json("/tasks")
        assert code == 200 and [(t["task"], t["state"], t["url"]) for t in tasks] == [
            ("a", "running", "http://127.0.0.1:1/tasks/web/a"), ("b", "running", "http://127.0.0.1:1/tasks/web/b")]
        code, health = self.get_json("/health")
        assert code == 200 and sorted(health["tasks"]) == ["web/a", "web/b"]
        self.shm.tasks[B].status.write_frame("status", B, {"state": "paused"})
        assert self.get_json("/health")[0] == 503

    def test_the_host_metrics_hold_every_task_each_family_declared_once(self) -> None:
        assert [doc["task"] for doc in self.get_json("/metrics")[1]["tasks"]] == ["a", "b"]
        text = self.fetch("/metrics", headers={"Accept": TEXT}).body.decode()
        assert text.count("# TYPE container_pids gauge") == 1
        assert 'container_pids{service="web",task="a"' in text and 'container_pids{service="web",task="b"' in text

    def test_a_dropped_task_is_gone_from_every_path(self) -> None:
        self.site.on_frame(frames.decode(frames.encode("drop", A, {})))
        assert self.get_json("/tasks/web/a/status")[0] == 404
        assert [t["task"] for t in self.get_json("/tasks")[1]] == ["b"] and A not in self.shm.tasks


# -- horizon sd ------------------------------------------------------------------------------------------


def fleet_of(*records: Tuple[str, str, Dict[str, Any]]) -> Fleet:
    entries = []
    for service, task, documents in records:
        for name, value in documents.items():
            entries.append(Entry(f"{NS}/services/{service}/{task}/{name}", json.dumps(value), 1))
    return Fleet.read(NS, entries)


def test_a_host_trees_task_is_scraped_at_its_path_and_a_host_is_one_target() -> None:
    hosted = [record("web", name, port=9000) for name in ("a", "b")]
    for name, documents in zip("ab", hosted):
        documents["endpoint"] = dict(documents["endpoint"], path=f"/tasks/web/{name}")
    alone = record("db", "x", port=9100)
    fleet = fleet_of(("web", "a", hosted[0]), ("web", "b", hosted[1]), ("db", "x", alone))
    per_task = sd.groups(fleet)
    paths = {group["labels"]["task"]: group["labels"].get("__metrics_path__") for group in per_task}
    assert paths == {"a": "/tasks/web/a/metrics", "b": "/tasks/web/b/metrics", "x": None}
    assert sd.groups(fleet, "host") == [{"targets": ["127.0.0.1:9000"], "labels": {}},
                                        {"targets": ["127.0.0.1:9100"], "labels": {}}]


def test_the_run_dir_is_the_tests_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(guards the fixtures above: locks go to HORIZON_RUN_DIR, never to the host's /run/horizon)"""
    monkeypatch.setenv("HORIZON_RUN_DIR", str(tmp_path))
    from supervisor.lock import lock_dir
    assert lock_dir() == str(tmp_path) and os.path.isdir(tmp_path)


def test_the_publishers_report_of_a_full_tree_of_long_names_fits_its_slot() -> None:
    from supervisor.selfstats import SelfReport, read_reports

    shm = SharedMemory(roles=["publisher"], capacity=256)
    records = {f"{'s' * 63}/{index:03d}{'t' * 60}": {"last_publish_age_s": 123.456, "ttl_left_s": 14.999}
               for index in range(256)}
    SelfReport(shm.reports["publisher"]).maybe(lambda: {"etcd": {"requests": 10**9}, "records": records})
    assert len(read_reports(shm.reports)["publisher"]["records"]) == 256


class Counted:
    """A record that counts the publishes it is asked for, due again only when ``due_at`` says."""

    def __init__(self) -> None:
        self.published = 0
        self.retry_at = 0.0
        self.due_at = float("inf")
        self.done = False
        self.status = None
        self.unanswered = False

    def clock(self) -> float:
        return time.monotonic()

    def take(self, kind: str, body: Dict[str, Any]) -> None:
        pass

    def publish(self, now: float) -> None:
        self.published += 1

    def changed_report(self) -> None:
        return None

    def writes_together(self, now: float) -> bool:
        return False

    def due(self, now: float, idle: float) -> float:
        return self.due_at

    def given_up(self, now: float) -> bool:
        return False


def run_host_publisher(monkeypatch, records: Dict[TaskKey, Counted], turns: int, frame_in: List[frames.Frame]) -> None:
    """A host tree's publisher loop over ``records`` for ``turns`` turns, ``frame_in`` read at the second."""
    from types import SimpleNamespace

    from workers.publisher import PublisherWorker

    frames_in: List[List[frames.Frame]] = [[], frame_in]
    inbox = SimpleNamespace(read=lambda: frames_in.pop(0) if frames_in else [], eof=False, fd=0)
    worker = SimpleNamespace(inbox=inbox, outbox=SimpleNamespace(pending=False, fd=1), watch=SimpleNamespace(gone=lambda: False),
                             pulse=SimpleNamespace(beat=lambda: None))
    publisher = PublisherWorker(records, worker, SimpleNamespace(together=False), host_tree=True)  # type: ignore[arg-type]
    done = [0]

    def wait() -> None:
        done[0] += 1
        if done[0] == turns:
            raise StopIteration

    monkeypatch.setattr(publisher, "wait", wait)
    with pytest.raises(StopIteration):
        publisher.run()


def test_a_host_publisher_looks_at_the_records_a_frame_touched_and_at_all_only_at_first(monkeypatch) -> None:
    records = {TaskKey("web", f"t{i}"): Counted() for i in range(50)}
    one = next(iter(records))
    run_host_publisher(monkeypatch, records, 3, [frames.decode(frames.encode("metrics", one, {"seq": 1}))])
    counts = [record.published for record in records.values()]
    assert counts[0] == 2 and counts[1:] == [1] * 49  # every record once (the first look), then the touched one


def test_a_host_publisher_looks_only_at_the_records_due(monkeypatch) -> None:
    """One record due (a held sample, a refresh) is not a look at every record: at 200 records those looks
    were most of the publisher's CPU."""
    records = {TaskKey("web", f"t{i}"): Counted() for i in range(50)}
    due = records[TaskKey("web", "t7")]
    due.due_at = 0.0  # due again at once, turn after turn
    run_host_publisher(monkeypatch, records, 4, [])
    assert due.published == 4
    assert [record.published for record in records.values() if record is not due] == [1] * 49


def test_a_task_whose_process_table_alone_is_heavy_moves_though_its_samples_between_are_light() -> None:
    """At 0.2 s the process table is read one sample in five: heavy samples are never in a row."""
    heavy = SampleSchedule()
    schedule = SampleSchedule(heavy)
    calls = {A: 0, B: 0}

    def sampler(key: TaskKey, every: int):
        def sample(now: float) -> None:
            calls[key] += 1
            if calls[key] % every == 0:
                busy(0.006)
        return sample

    schedule.add(A, sampler(A, 5), 0.002)
    schedule.add(B, sampler(B, 1000), 0.002)  # one heavy sample in a while: stays
    waiting = TaskKey("web", "waiting")
    schedule.add(waiting, lambda now: time.sleep(0.006), 0.002)  # slow, but kept waiting, not working: stays
    for _ in range(20):
        time.sleep(0.003)
        schedule.run_due(time.monotonic())
    assert A not in schedule._entries and A in heavy._entries
    for key in (B, waiting):
        assert key in schedule._entries and key not in heavy._entries


def test_a_heavy_task_sampled_every_5_s_moves_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three samples of a slow interval span more than HEAVY_WINDOW: the window grows with the interval."""
    clock = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    heavy = SampleSchedule()
    schedule = SampleSchedule(heavy)
    schedule.add(A, lambda now: busy(0.006), 5.0)
    for _ in range(4):
        schedule.run_due(clock[0])
        clock[0] += 5.0
    assert A in heavy._entries and A not in schedule._entries
