"""The fleet as ``horizon ls`` and ``show`` see it: records grouped from one read, the filters, a row as
text and as JSON, units and durations, the show page; keys that are not horizon's are left out."""

from __future__ import annotations

import json

from supervisor.etcd.store import Entry
from supervisor.fleet import render
from supervisor.fleet.records import Fleet, Selection
from supervisor.fleet.render import parse_time
from tests.unit.fleet_fake import NOW, NS, FakeEtcd

LATER = parse_time(NOW) + 187  # 3m07s after the tasks started


def fleet_of(etcd: FakeEtcd) -> Fleet:
    entries, _ = etcd.read_prefix(f"{NS}/services/")
    return Fleet.read(NS, entries)


def sample() -> FakeEtcd:
    etcd = FakeEtcd()
    etcd.add("web", "t2", tags=("blue", "canary"), host="h2", port=8082)
    etcd.add("web", "t1", tags=("blue",), port=8081)
    etcd.add("db", "t1", state="failed", exit_code=137, reason="oom-killed: out of memory")
    etcd.add("api", "t9", state="paused", restarts=2)
    return etcd


def test_records_are_grouped_by_task_and_sorted_by_service_then_task() -> None:
    tasks = fleet_of(sample()).sorted()
    assert [task.name for task in tasks] == ["api/t9", "db/t1", "web/t1", "web/t2"]
    assert tasks[2].state == "running" and tasks[2].url == "http://127.0.0.1:8081" and tasks[2].tags == ["blue"]
    assert tasks[1].final and not tasks[0].final


def test_keys_that_are_not_a_record_key_are_ignored_and_bad_json_is_kept_raw() -> None:
    entries = [Entry(f"{NS}/services/web", "x", 1), Entry(f"{NS}/services/web/t1/status/deeper", "x", 2),
               Entry(f"{NS}/control/web/t1", "{}", 3), Entry(f"{NS}/services/web/t1\0history-fence-1", "", 4),
               Entry(f"{NS}/services/web/t1/status", "not json", 5)]
    fleet = Fleet.read(NS, entries)
    [task] = fleet.sorted()
    assert task.keys == {"status": "not json"} and task.state is None and task.status == {}


def test_a_record_with_one_key_that_never_expires_is_said_not_to_expire() -> None:
    entries = [Entry(f"{NS}/services/web/t1/status", "{}", 1), Entry(f"{NS}/services/web/t1/info", "{}", 2, False),
               Entry(f"{NS}/services/web/t2/status", "{}", 3)]
    fleet = Fleet.read(NS, entries)
    assert [task.expires for task in fleet.sorted()] == [False, True]


def test_each_filter_must_hold_and_every_tag_given() -> None:
    fleet = fleet_of(sample())

    def names(**kw) -> list:
        return [task.name for task in Selection(**kw).pick(fleet)]

    assert names() == ["api/t9", "db/t1", "web/t1", "web/t2"]
    assert names(service="web") == ["web/t1", "web/t2"]
    assert names(tags=("blue",)) == ["web/t1", "web/t2"]
    assert names(tags=("blue", "canary")) == ["web/t2"]
    assert names(state="failed") == ["db/t1"]
    assert names(host="h2") == ["web/t2"]
    assert names(host="127.0.0.1") == ["api/t9", "db/t1", "web/t1", "web/t2"]  # the endpoint's address counts
    assert names(service="web", state="paused") == []
    assert Selection().empty and not Selection(tags=("x",)).empty


def test_a_row_as_text_shows_units_and_a_finished_record_its_exit_code() -> None:
    rows = {task.name: render.cells(task, LATER) for task in fleet_of(sample()).sorted()}
    assert rows["web/t1"] == ["web", "t1", "h1", "running", "12.5", "3.0M", "3m07s", "0", "http://127.0.0.1:8081", "blue"]
    assert rows["db/t1"][3:8] == ["failed (137)", "-", "-", "-", "0"]  # a finished task: no CPU, memory, uptime
    assert rows["api/t9"][3] == "paused" and rows["api/t9"][7] == "2"


def test_the_table_has_a_header_and_aligned_columns() -> None:
    text = render.ls_table(fleet_of(sample()).sorted(), LATER)
    lines = text.splitlines()
    assert lines[0].split() == list(render.COLUMNS)
    assert len(lines) == 5
    start = lines[0].index("STATE")
    assert [line[start:].split()[0] for line in lines[1:]] == ["paused", "failed", "running", "running"]


def test_a_row_as_json_keeps_numbers_and_nulls() -> None:
    task = fleet_of(sample()).get("db", "t1")
    assert task is not None
    row = json.loads(json.dumps(render.row(task, LATER)))
    assert row == {"service": "db", "task": "t1", "host": "h1", "state": "failed", "exit_code": 137,
                   "reason": "oom-killed: out of memory", "cpu_percent": 12.5, "memory_bytes": 3 * 2**20,
                   "uptime_s": None, "restarts": 0, "endpoint": "http://127.0.0.1:8080", "tags": [],
                   "started_at": NOW, "finished_at": NOW}
    live = fleet_of(sample()).get("web", "t1")
    assert live is not None and render.row(live, LATER)["uptime_s"] == 187.0


def test_units_and_durations() -> None:
    assert [render.size(v) for v in (None, 0, 512, 2048, 150 * 1024, 3.5 * 2**30)] == ["-", "0B", "512B", "2.0K", "150K", "3.5G"]
    assert [render.duration(v) for v in (None, 0, 59.9, 61, 3600 * 2 + 300, 86400 * 4 + 3 * 3600)] == \
        ["-", "0s", "59s", "1m01s", "2h05m", "4d03h"]
    assert parse_time("2026-01-05T10:00:00.000Z") == parse_time("2026-01-05T10:00:00+00:00")
    assert parse_time("yesterday") is None and parse_time(None) is None


def test_a_record_without_status_or_metrics_still_makes_a_row() -> None:
    fleet = Fleet.read(NS, [Entry(f"{NS}/services/web/t1/info", json.dumps({"host": "h"}), 1)])
    [task] = fleet.sorted()
    assert render.cells(task, LATER) == ["web", "t1", "h", "unknown", "-", "-", "-", "-", "-", "-"]


def test_show_names_status_endpoint_gap_and_the_process_table() -> None:
    etcd = sample()
    etcd.status("web", "t1", last_gap={"samples": 12, "from": 1.0, "to": 13.0}, reason="because")
    task = fleet_of(etcd).get("web", "t1")
    assert task is not None
    page = render.show(task, LATER)
    assert page.splitlines()[0] == "web/t1"
    for expected in ("state      running", "reason     because", "12 samples not written to etcd",
                     "endpoint   http://127.0.0.1:8081", "command    sleep 1000", "started    2026-01-05T10:00:00.000Z (3m07s ago)",
                     "metrics (sample 42", "cpu          12.5% of one core", "memory       3.0M (limit 1.0G)",
                     "processes (1 of 1, busiest first)", "PID  CPU%  RSS   THREADS  NAME   COMMAND"):
        assert expected in page, (expected, page)
    assert page.splitlines()[-1].split() == ["7", "12.5", "1.0M", "1", "sleep", "sleep", "1000"]


def test_show_of_a_command_line_given_as_a_list() -> None:
    etcd = FakeEtcd()
    etcd.add("web", "t1")
    key = f"{etcd.task_prefix('web', 't1')}/metrics"
    metrics = etcd.value(key)
    metrics["processes"][0]["cmdline"] = ["sh", "-c", "sleep 1"]
    etcd.set(key, json.dumps(metrics))
    task = fleet_of(etcd).get("web", "t1")
    assert task is not None and render.show(task, LATER).splitlines()[-1].endswith("sh -c sleep 1")


def test_a_row_decodes_only_the_container_part_of_a_publishers_metrics() -> None:
    metrics = {"container": {"cpu_percent": 7.5, "memory_bytes": 2048}, "processes": [{"pid": 1}] * 50, "seq": 3}
    written = json.dumps(metrics, separators=(",", ":"), sort_keys=True)  # as the publisher writes it
    fleet = Fleet.read(NS, [Entry(f"{NS}/services/web/t1/metrics", written, 1),
                            Entry(f"{NS}/services/web/t2/metrics", json.dumps(metrics, indent=1), 2)])
    fast, slow = fleet.sorted()
    assert fast.container == slow.container == {"cpu_percent": 7.5, "memory_bytes": 2048}
    assert "metrics" not in fast.decoded and "metrics" in slow.decoded
    assert render.row(fast, LATER)["cpu_percent"] == 7.5 and fast.metrics["seq"] == 3
    broken = Fleet.read(NS, [Entry(f"{NS}/services/web/t1/metrics", '{"container":{"cpu', 1)]).sorted()[0]
    assert broken.container == {}
