"""The live page in a real browser (headless Chromium): the DOM shows the task's current values, the
charts are drawn, and after the task ends the page shows its final state."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Tuple

import pytest

from tests.support.etcd_cluster import Cluster
from tests.support.metrics import seq_passes
from tests.support.net import http_get
from tests.support.waiting import wait_for

TASK = "sh -c 'trap \"exit 0\" TERM; while [ ! -e /tmp/end ]; do i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; sleep 0.05; done; exit 3'"


def browse(url: str, where: Path) -> Tuple[str, bytes]:
    """(the DOM once the page's scripts have run for 4 s of virtual time, a PNG screenshot)."""
    flags = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", f"--user-data-dir={where / 'profile'}",
             "--virtual-time-budget=4000", "--window-size=1200,900"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=60).stdout
    shot = where / "page.png"
    subprocess.run([*flags, f"--screenshot={shot}", url], capture_output=True, timeout=60)
    return dom, shot.read_bytes() if shot.exists() else b""


def text_of(dom: str, element: str) -> str:
    found = re.search(rf'id="{element}"[^>]*>([^<]*)<', dom)
    return found.group(1) if found else ""


@pytest.mark.parametrize("etcd_api", ["v3"], indirect=True)  # the page reads the endpoint only
def test_the_page_shows_the_live_task_then_its_end(supervised, tmp_path, services):
    etcd = Cluster(api="v3").start()
    try:
        page_of_a_task(supervised, tmp_path, etcd)
    finally:
        etcd.stop()


def page_of_a_task(supervised, tmp_path: Path, etcd: Cluster) -> None:
    run = supervised()
    run.etcd = etcd.client()
    run.main(TASK, "--interval", "0.2", "--etcd", etcd.hosts)
    url = run.url()
    seq = seq_passes(url, 5, 20, "a few samples")
    dom, png = browse(f"{url}/", tmp_path)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000, "a screenshot with something drawn"
    assert text_of(dom, "state") == "running" and text_of(dom, "image") == "horizon-busybox:latest"
    assert text_of(dom, "title") == f"{run.service}/{run.record()['info']['task']}"
    assert int(text_of(dom, "seq")) >= seq  # the current sample, not the one the page was built with
    assert re.search(r"<td>sh</td>", dom), "the process table"
    assert text_of(dom, "error") == ""

    # With etcd frozen, the supervisor waits (bounded) to write the final record: the endpoint stays up
    etcd.members[0].freeze()
    subprocess.run(["docker", "exec", run.containers()[0], "touch", "/tmp/end"], check=True, timeout=30)
    wait_for(lambda: (http_get(f"{url}/status")[1] or {}).get("state") == "failed", 20, "the end at the endpoint")
    dom, _ = browse(f"{url}/", tmp_path)
    assert text_of(dom, "state") == "failed" and text_of(dom, "exit_code") == "3"
    etcd.members[0].thaw()
