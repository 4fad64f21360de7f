"""Prometheus exposition: the format a request's Accept asks for, cAdvisor's names, processes grouped by
name with bounded series whose counters never go back, and output that promtool accepts."""

from __future__ import annotations

import subprocess
from typing import Any, Dict, List

import pytest

from workers.exposition import OPENMETRICS, TEXT, Exposition, wanted_format

PROMETHEUS_2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


@pytest.mark.parametrize("accept, wanted", [
    (None, None), ("*/*", None), ("application/json", None), ("text/plain", None), ("text/html,*/*;q=0.8", None),
    ("text/plain;version=0.0.4", TEXT), ("text/plain; version=0.0.4; q=0.5, */*; q=0.1", TEXT),
    ("application/openmetrics-text; version=1.0.0", OPENMETRICS), (PROMETHEUS_2, OPENMETRICS),
    ("application/openmetrics-text;q=0.2,text/plain;version=0.0.4;q=0.9", TEXT),
    ("application/openmetrics-text;q=0", None), ("text/plain;version=0.0.4;q=bad", None),
])
def test_the_format_follows_accept_and_json_stays_the_default(accept, wanted) -> None:
    assert wanted_format(accept) == wanted


def process(pid: int, name: str, cpu: float, vol: int = 0) -> Dict[str, Any]:
    return {"pid": pid, "name": name, "cpu_seconds": cpu, "rss_bytes": 1000, "threads": 1,
            "ctx_switches_voluntary": vol, "ctx_switches_involuntary": 0}


def document(processes: List[Dict[str, Any]], seq: int = 1) -> Dict[str, Any]:
    return {"seq": seq, "container": {"cpu_seconds": 12.5, "memory_bytes": 1 << 20, "memory_limit_bytes": 1 << 30,
                                      "pids": 3, "net_rx_bytes": None, "net_tx_bytes": None,
                                      "blkio_read_bytes": 4096, "blkio_write_bytes": 0},
            "processes": processes, "process_count": len(processes)}


def rendered(exposition: Exposition, doc: Dict[str, Any], openmetrics: bool = False) -> Dict[str, float]:
    exposition.update(doc)
    samples = {}
    for line in exposition.render(doc, openmetrics).decode().splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


LABELS = {"service": "web", "task": "t1", "host": "node-1", "image": 'odd"image\\name'}
BASE = 'service="web",task="t1",host="node-1",image="odd\\"image\\\\name"'


def test_container_series_carry_cadvisor_names_and_the_task_labels() -> None:
    samples = rendered(Exposition(LABELS), document([process(1, "sh", 0.5)]))
    assert samples[f"container_cpu_usage_seconds_total{{{BASE}}}"] == 12.5
    assert samples[f"container_memory_working_set_bytes{{{BASE}}}"] == 1 << 20
    assert samples[f"container_fs_reads_bytes_total{{{BASE}}}"] == 4096
    assert not [s for s in samples if s.startswith("container_network")]  # host network: none to show


def test_process_groups_are_by_name_and_their_counters_survive_their_processes() -> None:
    exposition = Exposition(LABELS)
    rendered(exposition, document([process(1, "worker", 2.0), process(2, "worker", 3.0)]))
    samples = rendered(exposition, document([process(2, "worker", 4.0), process(3, "worker", 0.5)], 2))  # 1 exited
    assert samples[f'horizon_process_cpu_seconds_total{{{BASE},name="worker"}}'] == 2.0 + 4.0 + 0.5
    assert samples[f'horizon_process_num_procs{{{BASE},name="worker"}}'] == 2


def test_beyond_20_names_the_rest_fold_into_other() -> None:
    processes = [process(pid, f"p{pid}", float(pid)) for pid in range(1, 61)]
    samples = rendered(Exposition(LABELS), document(processes))
    names = {s.split('name="')[1].split('"')[0] for s in samples if s.startswith("horizon_process_cpu_seconds_total")}
    assert len(names) == 21 and "other" in names and "p60" in names and "p1" not in names
    assert samples[f'horizon_process_num_procs{{{BASE},name="other"}}'] == 40


def test_promtool_accepts_the_text_format() -> None:
    exposition = Exposition(LABELS)
    exposition.update(document([process(1, "sh", 0.5)]))
    text = exposition.render(document([process(1, "sh", 0.5)]), openmetrics=False)
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr


def test_openmetrics_names_counter_families_without_total_and_ends_with_eof() -> None:
    exposition = Exposition(LABELS)
    exposition.update(document([]))
    text = exposition.render(document([]), openmetrics=True).decode()
    assert "# TYPE container_cpu_usage_seconds counter" in text and text.endswith("# EOF\n")
    assert f"container_cpu_usage_seconds_total{{{BASE}}} 12.5" in text
