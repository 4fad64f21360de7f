"""Control from request to effect (issue 10): ``horizon pause`` / ``horizon resume`` on a live task, over
etcd v3 on loopback, the time each command reports between writing its request and seeing the task's
state show the effect in etcd (the supervisor watches the control key, the container worker acts, the
publisher writes the state). Baseline, same run: one direct etcd put's round trip."""

from __future__ import annotations

import re
import subprocess
import time
from typing import List

from bench.common import NAMESPACE, BenchSupervisor, Row, log, ms, pct, ratio, stop_all
from tests.support import ETCD_HOSTS, ROOT

NAME = "control_latency"
LIMIT = 0.5
HORIZON = str(ROOT / ".venv" / "bin" / "horizon")


def effect_seconds(sup: BenchSupervisor, action: str) -> float:
    done = subprocess.run([HORIZON, action, f"{sup.service}/{sup.task_name}", "--api", "v3", "--etcd", ETCD_HOSTS["v3"],
                           "--namespace", NAMESPACE, "--timeout", "10"], capture_output=True, text=True, timeout=60)
    found = re.search(r"\(([\d.]+) s\)", done.stdout)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"horizon {action}: {done.stdout}{done.stderr}")
    return float(found.group(1))


def run(smoke: bool) -> List[Row]:
    cycles = 3 if smoke else 30
    sup = BenchSupervisor("control", interval=0.5)
    try:
        sup.launch().wait_serving()
        sup.wait_state("running", 30)
        took = []
        for _ in range(cycles):
            took.append(effect_seconds(sup, "pause"))
            took.append(effect_seconds(sup, "resume"))
        puts = []
        for i in range(50 if not smoke else 5):
            started = time.perf_counter()
            sup.etcd.put(f"{NAMESPACE}/control-latency-probe", str(i))
            puts.append(time.perf_counter() - started)
    finally:
        stop_all([sup])
    p99, floor = pct(took, 99), pct(puts, 99)
    log(f"control_latency: request → effect p50 {ms(pct(took, 50))} p99 {ms(p99)} over {len(took)}; put p99 {ms(floor)}")
    return [Row("control request → effect (pause/resume), p99", ms(p99), ms(floor) + " (one etcd put, p99)",
                ratio(p99, floor), f"< {ms(LIMIT)}", p99 < LIMIT,
                f"p50 {ms(pct(took, 50))}; {len(took)} requests, as horizon reports them; etcd v3 on loopback")]
