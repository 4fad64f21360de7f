"""A worker's pulse: inside a bounded wait its own thread keeps the heartbeat until the bound passes, so a
legitimate wait is never taken for a hang, and a wait past its bound is."""

from __future__ import annotations

import time

from supervisor.shm import SharedMemory
from tests.unit.memory import TASK
from workers.process import BEAT_SLACK, Pulse


def pulse(period: float) -> Pulse:
    return Pulse(SharedMemory(roles=["publisher"], tasks=[TASK]).heartbeats["publisher"], period)


def test_a_beat_promises_one_period_and_the_slack() -> None:
    beats = pulse(0.05)
    beats.beat()
    assert 0 < beats.heartbeat.due - time.monotonic() <= 0.05 + BEAT_SLACK


def test_a_wait_within_its_bound_keeps_the_heartbeat() -> None:
    beats = pulse(0.05)
    with beats.busy(1.0):
        time.sleep(0.5)  # far past one period and its slack
        assert beats.heartbeat.due > time.monotonic()


def test_a_wait_past_its_bound_loses_the_heartbeat() -> None:
    beats = pulse(0.05)
    with beats.busy(0.1):
        time.sleep(0.6)
        assert beats.heartbeat.due < time.monotonic()  # the parent will find it hung
    assert beats.heartbeat.due > time.monotonic()  # back in its loop: beating again


def test_extend_renews_the_bound_of_a_wait_made_of_steps() -> None:
    beats = pulse(0.05)
    with beats.busy(0.2):
        for _ in range(4):
            time.sleep(0.15)
            beats.extend(0.2)
        assert beats.heartbeat.due > time.monotonic()
