"""Host trees end to end (issue 12): ``python -m supervisor DIR`` runs every task file of a directory in
one process tree, on the real Docker engine and real etcd. Three tasks side by side (one ends, one fails
and restarts under its policy, one runs on untouched); SIGHUP adding, removing and changing files; a bad
file among good ones, at start, on reload and under ``--check``; an empty directory; a file refused at
start (no room left in the tree, or its task run by another tree) taken on at a later reload.

What etcd held meanwhile is read back from etcd's change history (tests.support.etcd.History), so a
state of the untouched task that lasted a millisecond would be seen."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from typing import List

import pytest

from tests.support import ENDS_ON_CUE, IMAGE, POLITE
from tests.support.docker import docker, inspect
from tests.support.etcd import etcdctl_record
from tests.support.host import HostTree, host_tree, metrics_seqs, removals, statuses, text_get  # noqa: F401 (fixture)
from tests.support.leftovers import group_processes
from tests.support.metrics import seq_passes
from tests.support.net import http_get, http_request
from tests.support.waiting import wait_for

ROUTES = ("metrics", "metrics/history", "status", "info", "health", "logs", "")  # "": the task's page
PROMETHEUS = "text/plain;version=0.0.4"
FINAL_TTL = (590, 600)  # keep_finished, as a final record's TTL shows it


def cue(container: str) -> None:
    """Let an ENDS_ON_CUE task end (it leaves with its code once /tmp/end exists)."""
    docker("exec", container, "touch", "/tmp/end")


def container_events(container: str, since: float) -> List[str]:
    """What the engine did to one container since ``since`` (create, start, die, ...)."""
    out = docker("events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}", "--filter",
                 f"container={container}", "--format", "{{.Action}}")
    return [action for action in out.split() if not action.startswith("exec_")]


def prometheus_text(tree: HostTree) -> str:
    status, kind, text = text_get(f"{tree.base()}/metrics", PROMETHEUS)
    assert status == 200 and kind.startswith("text/plain; version=0.0.4"), (status, kind)
    return text


def promtool_accepts(text: str) -> None:
    """promtool's lint passes, and no series is given twice (one scrape of every task: a series twice is
    a sample Prometheus drops)."""
    checked = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if line and not line.startswith("#")]
    assert len(series) == len(set(series)), sorted({s for s in series if series.count(s) > 1})


def series_tasks(text: str) -> set:
    """SERVICE/TASK of every task with a container_cpu_usage_seconds_total series."""
    return {f"{s}/{t}" for s, t in re.findall(r'^container_cpu_usage_seconds_total\{service="([^"]+)",task="([^"]+)"',
                                               text, re.MULTILINE)}


def assert_served(tree: HostTree, name: str, service: str) -> None:
    """Every route of the task answers at its place on the tree's endpoint, about this task."""
    url = tree.url_of(name, service)
    for route in ROUTES:
        status, body, headers = http_request(f"{url}/{route}")
        assert status == 200, (url, route, status, body)
    status, kind, page = text_get(f"{url}/")
    assert status == 200 and kind.startswith("text/html") and 'get("status")' in page  # relative: its own routes
    assert text_get(url)[2] == page  # without the slash: redirected to the page
    assert http_get(f"{url}/metrics")[1]["task"] == name and http_get(f"{url}/metrics")[1]["service"] == service
    assert http_get(f"{url}/status")[1]["state"] == "running"
    info = http_get(f"{url}/info")[1]
    assert info["info"]["task"] == name and info["endpoint"]["url"] == url
    assert http_get(f"{url}/metrics/history")[1]["samples"], "no history"


def assert_gone_from_the_endpoint(tree: HostTree, name: str, service: str) -> None:
    url = tree.url_of(name, service)
    for route in ROUTES:
        status, body = http_get(f"{url}/{route}")
        assert status == 404, (url, route, status, body)
    assert f"{service}/{name}" not in tree.served()


def assert_live_record(tree: HostTree, name: str, service: str) -> None:
    """The task's record: whole, running, its endpoint its own place on the tree's endpoint, with a TTL."""
    node = tree.node(name, service)
    assert node is not None and {"info", "endpoint", "running", "status"} <= set(node.keys), node
    record = node.keys
    assert record["running"] is True and record["status"]["state"] == "running"
    path = f"/tasks/{service}/{name}"
    assert record["endpoint"] == {"host": "127.0.0.1", "port": int(tree.base().rsplit(":", 1)[1]),
                                  "url": f"{tree.base()}{path}", "path": path}, record["endpoint"]
    assert record["info"]["service"] == service and record["info"]["task"] == name
    assert node.ttl is not None and 0 < node.ttl <= 15
    if tree.api == "v3":
        assert node.lease is not None and node.leases == {node.lease}, node  # every key on the task's own lease
        assert etcdctl_record(tree.etcd.address, node.key)["endpoint"] == record["endpoint"]  # etcd's own client


def assert_final(tree: HostTree, name: str, service: str, state: str, exit_code: int) -> dict:
    """The task's final record: its end, not running, kept keep_finished seconds (v2 sets the directory's
    TTL in a request of its own, after the status: waited for)."""
    def final():
        node = tree.node(name, service)
        return node if node and node.ttl and node.ttl > FINAL_TTL[0] and not node.keys.get("running", True) else None

    node = wait_for(final, 10, f"the final record of {service}/{name}")
    status = node.keys["status"]
    assert (status["state"], status["exit_code"], node.keys["running"]) == (state, exit_code, False), node.keys
    assert node.ttl is not None and FINAL_TTL[0] < node.ttl <= FINAL_TTL[1], node.ttl
    return status


def test_three_tasks_one_ends_one_fails_and_restarts_one_runs_on(host_tree):
    tree: HostTree = host_tree()
    other = f"{tree.service}-b"  # the one that runs on is in a service of its own: routes carry the service
    tree.host_ini()
    tree.task_ini("ends", ENDS_ON_CUE.format(code=0))
    tree.task_ini("fails", ENDS_ON_CUE.format(code=3),
                  task="restart = on-failure\nmax_restarts = 2\nrestart_delay = 0.3\n")
    tree.task_ini("runs", POLITE, service=other)
    ns = tree.namespace
    history = tree.etcd.history(f"{ns}/services/{tree.service}")
    runs_history = tree.etcd.history(f"{ns}/services/{other}")
    tree.run_tree()
    tree.wait_states({"ends": "running", "fails": "running"})
    wait_for(lambda: tree.state_of("runs", other) == "running", 30, "runs running")
    since = time.time()

    # All three: each record points at its own place on the one endpoint, which serves each of them.
    everyone = {(tree.service, "ends"), (tree.service, "fails"), (other, "runs")}
    for service, name in everyone:
        assert_live_record(tree, name, service)
        seq_passes(tree.url_of(name, service), 0, 10, f"a sample of {service}/{name}")
        assert_served(tree, name, service)
    assert tree.served() == sorted(f"{s}/{n}" for s, n in everyone)
    ids = {name: tree.container_of(name, service) for service, name in everyone}
    assert len(set(ids.values())) == 3 and sorted(c[:12] for c in ids.values()) == sorted(tree.containers())
    wait_for(lambda: http_get(f"{tree.base()}/health")[0] == 200, 10, "the host healthy")
    code, host_json = http_get(f"{tree.base()}/metrics")
    assert code == 200 and {f"{m['service']}/{m['task']}" for m in host_json["tasks"]} == \
        {f"{s}/{n}" for s, n in everyone}
    text = prometheus_text(tree)
    promtool_accepts(text)
    assert series_tasks(text) == {f"{s}/{n}" for s, n in everyone}
    assert text.count("# TYPE container_cpu_usage_seconds_total ") == 1  # each family declared once
    status, kind, text = text_get(f"{tree.base()}/metrics", "application/openmetrics-text;version=1.0.0")
    assert status == 200 and kind.startswith("application/openmetrics-text"), kind
    assert text.endswith("\n# EOF\n") and text.count("# EOF") == 1
    assert series_tasks(text) == {f"{s}/{n}" for s, n in everyone}
    status, kind, page = text_get(f"{tree.base()}/")
    assert status == 200 and kind.startswith("text/html")
    assert all(f'href="{tree.url_of(n, s)}/"' in page for s, n in everyone), page

    # "ends" ends by itself (exit 0): its final record, its container removed, gone from the endpoint.
    cue(ids["ends"])
    wait_for(lambda: tree.state_of("ends") == "exited", 20, "ends exited")
    assert_final(tree, "ends", tree.service, "exited", 0)
    wait_for(lambda: f"{tree.service}/ends" not in tree.served(), 10, "ends dropped from /tasks")
    assert_gone_from_the_endpoint(tree, "ends", tree.service)
    wait_for(lambda: not docker("ps", "-aq", "--filter", f"id={ids['ends']}").strip(), 10, "its container removed")

    # "fails" fails (exit 3), is restarted twice (the same container, /tmp/end stays), then given up.
    cue(ids["fails"])
    wait_for(lambda: tree.state_of("fails") == "failed", 30, "fails failed")
    status = assert_final(tree, "fails", tree.service, "failed", 3)
    assert status["reason"] == "gave up after 2 restarts: exited with code 3", status
    wait_for(lambda: f"{tree.service}/fails" not in tree.served(), 10, "fails dropped from /tasks")
    assert_gone_from_the_endpoint(tree, "fails", tree.service)

    # Host-level views now hold "runs" alone, and "runs" never noticed a thing.
    assert tree.served() == [f"{other}/runs"]
    text = prometheus_text(tree)
    promtool_accepts(text)
    assert series_tasks(text) == {f"{other}/runs"}
    assert [f"{m['service']}/{m['task']}" for m in http_get(f"{tree.base()}/metrics")[1]["tasks"]] == [f"{other}/runs"]
    assert http_get(f"{tree.base()}/health")[0] == 200
    url = tree.url_of("runs", other)
    seq = seq_passes(url, tree.seq_of("runs", other), 10, "runs sampling on")
    wait_for(lambda: tree.record_of("runs", other).get("metrics", {}).get("seq", 0) > seq - 10, 5,
             "runs' metrics fresh in etcd")
    assert_live_record(tree, "runs", other)
    assert tree.container_of("runs", other) == ids["runs"]
    assert inspect(ids["runs"], "{{.State.Status}}") == "running"
    assert container_events(ids["runs"], since) == []
    assert tree.proc.poll() is None

    history.stop()
    fails = statuses(history, tree.key("fails"))
    restarting = [s for s in fails if s["state"] == "restarting"]
    assert len(restarting) == 2 and all(s["restart_in_s"] is not None for s in restarting), fails
    assert max(s["restarts"] for s in fails) == 2, fails  # counted in the status
    assert [s["state"] for s in statuses(history, tree.key("ends"))][-1] == "exited"

    # SIGTERM: the one left is stopped cleanly, every final record is there, nothing is left behind.
    assert tree.terminate() == 0
    runs_history.stop()
    runs = statuses(runs_history, tree.key("runs", other))
    states = [state for i, state in enumerate(s["state"] for s in runs) if i == 0 or runs[i - 1]["state"] != state]
    assert states in (["running", "stopping", "stopped"], ["starting", "running", "stopping", "stopped"]), states
    assert all(s["restarts"] == 0 for s in runs), runs
    seqs = metrics_seqs(runs_history, tree.key("runs", other))
    assert seqs == sorted(seqs) and len(seqs) >= 2
    assert removals(runs_history, tree.key("runs", other)) == []  # v3: the keys moved to the final lease first
    assert_final(tree, "runs", other, "stopped", 0)
    assert tree.containers() == []
    assert group_processes(tree.proc.pid) == []
    assert "Traceback" not in tree.output()


def test_sighup_adds_removes_and_changes_files_and_leaves_the_others_alone(host_tree):
    tree: HostTree = host_tree()
    tree.host_ini()
    keep = tree.task_ini("keep")
    gone = tree.task_ini("gone")
    change = tree.task_ini("change", task="tags = before\n")
    tree.run_tree()
    tree.wait_states({"keep": "running", "gone": "running", "change": "running"})
    ids = {name: tree.container_of(name) for name in ("keep", "gone", "change")}
    seq = seq_passes(tree.url_of("keep"), 0, 10, "keep sampling")
    history = tree.etcd.history(tree.prefix)
    since = time.time()

    keep.write_text(keep.read_text())  # the same bytes written again: not a change
    gone.unlink()
    tree.task_ini("new")
    change.write_text(change.read_text().replace("tags = before", "tags = after"))
    tree.reload()

    wait_for(lambda: tree.state_of("gone") == "stopped", 20, "gone stopped")
    assert_final(tree, "gone", tree.service, "stopped", 0)
    wait_for(lambda: tree.state_of("new") == "running", 30, "new running")
    wait_for(lambda: tree.record_of("change").get("info", {}).get("tags") == ["after"]
             and tree.state_of("change") == "running", 30, "change running again, as its file now says")
    wait_for(lambda: tree.served() == sorted(f"{tree.service}/{n}" for n in ("change", "keep", "new")), 10,
             "the endpoint serving keep, change and new")
    assert_gone_from_the_endpoint(tree, "gone", tree.service)
    for name in ("keep", "change", "new"):
        assert_live_record(tree, name, tree.service)
        seq_passes(tree.url_of(name), 0, 10, f"a sample of {name}")  # /metrics is 503 until the first
        assert_served(tree, name, tree.service)
    assert tree.container_of("change") not in (None, ids["change"])  # restarted: a new container
    wait_for(lambda: not docker("ps", "-aq", "--filter", f"id={ids['gone']}").strip(), 10, "gone's container removed")
    wait_for(lambda: not docker("ps", "-aq", "--filter", f"id={ids['change']}").strip(), 10,
             "change's old container removed")
    after = seq_passes(tree.url_of("keep"), seq + 10, 15, "keep sampling on, its seq going on")
    assert after > seq

    history.stop()
    keep_key = tree.key("keep")
    assert {s["state"] for s in statuses(history, keep_key)} <= {"running"}, statuses(history, keep_key)
    assert removals(history, keep_key) == []
    seqs = metrics_seqs(history, keep_key)
    assert seqs and seqs == sorted(seqs) and seqs[0] > 0
    assert tree.container_of("keep") == ids["keep"] and container_events(ids["keep"], since) == []
    changed = [s["state"] for s in statuses(history, tree.key("change"))]
    assert "stopped" in changed and changed[-1] == "running", changed  # stopped cleanly, then started anew
    assert tree.log_lines("SIGHUP")
    assert tree.log_lines("keep") and not tree.log_lines("task", "keep", "stopping it")

    assert tree.terminate() == 0
    for name in ("keep", "change", "new"):
        assert_final(tree, name, tree.service, "stopped", 0)
    assert tree.containers() == []
    assert "Traceback" not in tree.output()


def error_lines(tree: HostTree, path) -> List[str]:
    """The log's ERROR (or WARNING) lines naming the file; a task it starts is named in INFO lines too."""
    return [line for line in tree.output().splitlines() if str(path) in line and re.search(" (ERROR|WARNING) ", line)]


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)  # a file's mistakes never reach etcd
def test_a_bad_file_among_good_ones_is_one_line_and_skipped_at_start_and_on_reload(host_tree):
    tree: HostTree = host_tree()
    tree.host_ini()
    good = tree.task_ini("good")
    bad = tree.task_ini("bad", metrics="intervall = 0.5\n")
    endpoint = tree.task_ini("ep")
    endpoint.write_text(endpoint.read_text() + "[endpoint]\nport = 8080\n")

    checked = tree.check()
    assert checked.returncode == 2, checked
    lines = checked.stdout.splitlines()
    assert len(lines) == 3, lines
    assert lines[0].startswith(f"{bad}: ") and "intervall" in lines[0] and "interval" in lines[0].replace("intervall", "")
    assert lines[1].startswith(f"{endpoint}: ") and "[endpoint]" in lines[1] and "horizon.ini" in lines[1]
    assert lines[2] == f"{good}: ok: service {tree.service}, task good, image {IMAGE}"

    tree.run_tree()
    tree.wait_states({"good": "running"})
    good_id = tree.container_of("good")
    for path, words in ((bad, ("intervall",)), (endpoint, ("[endpoint]",))):
        found = error_lines(tree, path)
        assert len(found) == 1 and " ERROR " in found[0] and all(w in found[0] for w in words), found
    assert tree.record_of("bad") == {} and tree.record_of("ep") == {}
    assert tree.served() == [f"{tree.service}/good"]
    assert len(tree.containers()) == 1

    # On reload: the good file goes bad (the task runs on as it was), the bad one is mended (it starts),
    # and a new bad one is one line too.
    good.write_text(good.read_text().replace("[metrics]", "restart = sometimes\n[metrics]"))
    tree.task_ini("bad")  # mended
    worse = tree.task_ini("worse", command="sh -c 'unbalanced")
    host = tree.host_ini(ttl=20)  # the tree's own settings: read at its start only
    tree.reload()
    wait_for(lambda: tree.state_of("bad") == "running", 30, "the mended file's task running")
    found = error_lines(tree, good)
    assert len(found) == 1 and " ERROR " in found[0] and "restart" in found[0] and "runs on" in found[0], found
    assert len(error_lines(tree, worse)) == 1 and " ERROR " in error_lines(tree, worse)[0]
    assert "command" in error_lines(tree, worse)[0]
    assert len(error_lines(tree, endpoint)) == 2  # one line at each reading of the directory
    assert tree.state_of("good") == "running" and tree.container_of("good") == good_id
    assert tree.served() == sorted(f"{tree.service}/{n}" for n in ("bad", "good"))
    assert tree.record_of("worse") == {}
    found = [line for line in error_lines(tree, host) if "[endpoint]" not in line]  # not ep.ini's, which names it
    assert len(found) == 1 and "next start" in found[0], found
    assert tree.node("good").ttl <= 15  # the ttl the tree started with

    checked = tree.check()
    assert checked.returncode == 2
    assert sum(str(good) in line and "restart" in line for line in checked.stdout.splitlines()) == 1
    assert f"{bad}: ok: " in checked.stdout

    assert tree.terminate() == 0
    assert tree.state_of("good") == "stopped" and tree.state_of("bad") == "stopped"
    assert "Traceback" not in tree.output()


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)
def test_a_mistake_in_horizon_ini_is_one_line_and_exit_2_with_nothing_started(host_tree):
    tree: HostTree = host_tree()
    host = tree.host_ini(host="capacity = 0\n")
    tree.task_ini("never")
    checked = tree.check()
    assert checked.returncode == 2 and checked.stdout == "", checked
    [line] = checked.stderr.splitlines()
    assert line.startswith(f"horizon: error: {host}: [host] capacity") and "Traceback" not in checked.stderr, line
    assert tree.run_tree().wait(20) == 2
    [line] = tree.output().splitlines()
    assert line.startswith(f"horizon: error: {host}: [host] capacity"), line
    assert tree.containers() == [] and tree.record_of("never") == {}


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)
def test_an_empty_directory_runs_nothing_says_so_and_takes_a_task_on_reload(host_tree):
    tree: HostTree = host_tree()
    tree.host_ini()
    checked = tree.check()
    assert checked.returncode == 0 and checked.stdout == f"{tree.directory}: no task files (*.ini besides horizon.ini)\n"
    tree.run_tree()
    wait_for(lambda: tree.log_lines("no task files"), 15, "the tree to say it has nothing to run")
    base = tree.base()
    assert http_get(f"{base}/tasks") == (200, [])
    assert http_get(f"{base}/metrics") == (200, {"tasks": []})
    assert http_get(f"{base}/health")[0] == 200
    assert tree.proc.poll() is None

    workers = tree.wait_workers()
    tree.task_ini("late")
    tree.signal_group(signal.SIGHUP)  # to the whole group, as `pkill -HUP -f` or a terminal's hangup sends it
    tree.wait_states({"late": "running"})
    assert tree.workers() == workers and len(tree.log_lines("SIGHUP: reading")) == 1  # the parent's alone
    assert_live_record(tree, "late", tree.service)
    assert tree.served() == [f"{tree.service}/late"]
    assert tree.terminate() == 0
    assert_final(tree, "late", tree.service, "stopped", 0)


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)
def test_a_file_refused_for_want_of_room_runs_at_a_reload_once_there_is_room(host_tree):
    """[host] capacity = 2 and three files: the third is refused in one line naming horizon.ini's
    [host] capacity; once a task's file is removed (its block of shared memory freed), a reload starts it."""
    tree: HostTree = host_tree()
    tree.host_ini(host="capacity = 2\n")
    tree.task_ini("a")
    second = tree.task_ini("b")
    third = tree.task_ini("c")
    tree.run_tree()
    tree.wait_states({"a": "running", "b": "running"})
    found = error_lines(tree, third)
    assert len(found) == 1 and "capacity" in found[0] and str(tree.directory / "horizon.ini") in found[0], found
    assert tree.record_of("c") == {} and tree.served() == [f"{tree.service}/a", f"{tree.service}/b"]

    second.unlink()
    tree.reload()
    wait_for(lambda: tree.state_of("b") == "stopped", 20, "b stopped, its block free")
    wait_for(lambda: f"{tree.service}/b" not in tree.served(), 10, "b dropped")
    tree.reload()  # room now: the file refused for want of it is taken on
    wait_for(lambda: tree.state_of("c") == "running", 15,
             "c running after a reload with room for it (or a line saying why not)")
    assert tree.served() == [f"{tree.service}/a", f"{tree.service}/c"]
    assert tree.terminate() == 0


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)
def test_a_task_another_tree_runs_is_refused_then_taken_on_at_a_reload_once_free(host_tree):
    """The same task file in two directories (a task moved from one tree to another): the second tree
    refuses it in one line (another supervisor runs it) and runs its own; once the first tree has ended,
    a reload of the second takes the task on."""
    first: HostTree = host_tree()
    first.host_ini()
    first.task_ini("moved")
    first.run_tree()
    first.wait_states({"moved": "running"})

    second: HostTree = host_tree()
    second.host_ini()
    second.task_ini("own")
    moved = second.task_ini("moved", service=first.service)
    second.run_tree()
    second.wait_states({"own": "running"})
    found = error_lines(second, moved)
    assert len(found) == 1 and "another supervisor" in found[0], found
    assert second.served() == [f"{second.service}/own"]

    assert first.terminate() == 0
    assert first.state_of("moved") == "stopped"
    second.reload()
    wait_for(lambda: first.state_of("moved") == "running", 15,
             "the moved task running under the second tree after a reload (or a line saying why not)")
    assert f"{first.service}/moved" in second.served()
    assert second.terminate() == 0
