"""The endpoint as Prometheus and a page see it, on a real task: the text format passes promtool, the
CPU counter grows between scrapes, OpenMetrics ends as the spec says, JSON stays curl's answer, and the
history survives the endpoint worker's restart."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from typing import Tuple

import pytest

from tests.support.metrics import seq_passes
from tests.support.net import http_get
from tests.support.waiting import wait_for

BUSY = "sh -c 'trap \"exit 0\" TERM; while true; do i=0; while [ $i -lt 3000 ]; do i=$((i+1)); done; sleep 0.05; done'"
PROMETHEUS_2 = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
                "text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def scrape(url: str, accept: str) -> Tuple[str, str]:
    request = urllib.request.Request(f"{url}/metrics", headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def cpu_counter(text: str) -> float:
    line = next(line for line in text.splitlines() if line.startswith("container_cpu_usage_seconds_total{"))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)  # what is tested here never reaches etcd
def test_prometheus_formats_json_default_and_history_across_an_endpoint_restart(supervised):
    run = supervised().main(BUSY, "--interval", "0.2")
    url = run.url()
    seq_passes(url, 3, 20, "a few samples")

    kind, text = scrape(url, "text/plain;version=0.0.4")
    assert kind.startswith("text/plain; version=0.0.4")
    checked = subprocess.run(["promtool", "check", "metrics"], input=text.encode(), capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert f'service="{run.service}"' in text and 'image="horizon-busybox:latest"' in text
    first = cpu_counter(text)
    time.sleep(1.0)
    assert cpu_counter(scrape(url, "text/plain;version=0.0.4")[1]) > first  # a counter, and it grows

    kind, text = scrape(url, PROMETHEUS_2)
    assert kind.startswith("application/openmetrics-text") and text.endswith("# EOF\n")
    assert "# TYPE container_cpu_usage_seconds counter" in text
    assert http_get(f"{url}/metrics")[1]["service"] == run.service  # curl: JSON

    seq = seq_passes(url, None, 5, "a sample")
    before = http_get(f"{url}/metrics/history?since=0")[1]["samples"]
    assert before and before[-1]["seq"] <= seq and [s["seq"] for s in before] == sorted(s["seq"] for s in before)
    os.kill(run.wait_workers()["endpoint"], signal.SIGKILL)
    wait_for(lambda: http_get(f"{url}/metrics/history?since=0")[0] == 200, 10, "the restarted endpoint")
    after = http_get(f"{url}/metrics/history?since=0")[1]["samples"]
    assert after[0]["seq"] <= before[-1]["seq"]  # what was kept before the restart is still there
    assert http_get(f"{url}/metrics/history?since=x")[0] == 400

    # horizon's own figures: in JSON and as horizon_* series, the endpoint's restart counted
    def restarted() -> bool:
        section = http_get(f"{url}/metrics")[1].get("supervisor", {})
        return section.get("restarts", {}).get("endpoint") == 1
    wait_for(restarted, 10, "the endpoint's restart in the supervisor section")
    section = http_get(f"{url}/metrics")[1]["supervisor"]
    assert set(section["processes"]) == {"supervisor", "container", "publisher", "endpoint"}
    assert all(p["rss_bytes"] > 1 << 20 for p in section["processes"].values())
    assert section["etcd"]["requests"] > 0 and section["etcd"]["errors"] == 0 and section["frames"]["relayed"] > 0
    assert 0 < section["etcd"]["ttl_left_s"] <= 15
    text = scrape(url, "text/plain;version=0.0.4")[1]
    assert re.search(r'^horizon_worker_restarts_total\{.*role="endpoint"\} 1$', text, re.MULTILINE)
    assert re.search(r'^horizon_self_resident_memory_bytes\{.*process="publisher"\} \d+', text, re.MULTILINE)
