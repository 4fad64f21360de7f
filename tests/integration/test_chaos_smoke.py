"""The chaos soak (issue 13) keeps working and keeps finding nothing: ``python -m bench chaos`` with a fixed
seed, a short soak on each etcd API, both at once (two subprocesses, each with its own etcd cluster and
private dockerd), and the plan it draws is the seed's alone.

Three minutes of faults each, as the issue asks: with setup, the settling after the last fault and the end's
checks, each soak takes about 4.5 minutes of wall time, the two side by side (the longer soaks, with several
seeds, are recorded in bench/CHAOS.md, which bench/RESULTS.md includes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.chaos_plan import GAP, KINDS, draw
from tests.support import ROOT
from tests.support.supervisor import interruptible

SEED = 12
MINUTES = 3
APIS = ("v2", "v3")


def test_the_same_seed_draws_the_same_plan() -> None:
    plan = draw(SEED, MINUTES, 3)
    assert plan == draw(SEED, MINUTES, 3) and plan.digest() == draw(SEED, MINUTES, 3).digest()
    assert draw(SEED + 1, MINUTES, 3).faults != plan.faults
    assert set(plan.counts()) == set(KINDS), plan.text()  # this seed draws every kind within the smoke's minutes
    assert {f.action for f in plan.faults if f.kind == "control"} == {"stop", "pause", "resume"}, plan.text()
    assert any(f.burst for f in plan.faults), plan.text()  # a second fault on a task 0.3-2 s after the first
    # Faults are drawn 3-8 s apart; a pause's resume and a burst's second fault come on top.
    drawn = [f.at for f in plan.faults if not (f.burst or (f.kind == "control" and f.action == "resume"))]
    assert all(GAP[0] - 0.01 <= b - a <= GAP[1] + 0.01 for a, b in zip(drawn, drawn[1:])), plan.text()
    assert all(at < MINUTES * 60 for at in drawn)


def summary(output: str) -> str:
    """The soak's summary (everything after its ===== line), or the end of its output."""
    at = output.rfind("=" * 100)
    return output[at:] if at >= 0 else output[-6000:]


@pytest.mark.slow
def test_a_short_chaos_soak_on_each_api_finds_no_violation(services: None, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    chosen = request.config.getoption("etcd_api")
    apis = APIS if chosen == "both" else (chosen,)
    started = time.monotonic()
    runs = {}
    for api in apis:
        log = open(tmp_path / f"chaos-{api}.log", "w")
        argv = [sys.executable, "-m", "bench", "chaos", "--seed", str(SEED), "--minutes", str(MINUTES), "--tasks", "3",
                "--api", api]
        runs[api] = (subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                      env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=interruptible), log)
    try:
        for api, (proc, _) in runs.items():
            proc.wait(timeout=max(1.0, MINUTES * 60 + 420 - (time.monotonic() - started)))
    finally:
        for proc, log in runs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # the soak tears down what it started
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
    outputs = {api: (tmp_path / f"chaos-{api}.log").read_text(errors="replace") for api in runs}
    for api, (proc, _) in runs.items():
        print(f"--- chaos soak, etcd {api}: exit {proc.returncode} ---\n{summary(outputs[api])}")
    failed = {api: proc.returncode for api, (proc, _) in runs.items() if proc.returncode != 0}
    assert not failed, "\n\n".join(f"etcd {api}: exit {code}\n{summary(outputs[api])}" for api, code in failed.items())
    for api in runs:
        assert "violations: 0" in outputs[api] and "result: PASS" in outputs[api]
        assert "| chaos | chaos soak, etcd" in outputs[api]  # the row for bench/RESULTS.md
