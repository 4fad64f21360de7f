"""The restart state machine shared by dead workers and restarted tasks: backoff, give-up, reset."""

from __future__ import annotations

import pytest

from supervisor.restarts import Policy, Restarts, State

POLICY = Policy(max_tries=3, first_delay=0.1, max_delay=0.3, stable_after=10.0)


def test_delays_double_up_to_the_cap_then_fatal() -> None:
    restarts = Restarts(POLICY)
    restarts.started(0.0)
    delays = []
    for _ in range(3):
        assert restarts.died(1.0) is State.BACKOFF
        delays.append(round(restarts.restart_at - 1.0, 6))
    assert delays == [0.1, 0.2, 0.3]
    assert restarts.died(1.0) is State.FATAL
    assert restarts.restart_at is None and not restarts.due(100.0)


def test_due_only_once_the_delay_has_passed() -> None:
    restarts = Restarts(POLICY)
    restarts.started(0.0)
    restarts.died(5.0)
    assert not restarts.due(5.05)
    assert restarts.due(5.1)
    restarts.started(5.1)
    assert restarts.state is State.RUNNING and not restarts.due(6.0)


def test_a_stable_run_starts_a_fresh_series() -> None:
    restarts = Restarts(POLICY)
    restarts.started(0.0)
    for _ in range(3):
        restarts.died(0.5)
        restarts.started(0.5)
    # up for stable_after seconds: the earlier deaths are forgiven
    assert restarts.died(0.5 + 10.0) is State.BACKOFF
    assert restarts.tries == 1
    assert restarts.restart_at == pytest.approx(10.5 + 0.1)


def test_deaths_in_quick_succession_are_not_forgiven() -> None:
    restarts = Restarts(POLICY)
    now = 0.0
    for _ in range(3):
        restarts.started(now)
        now += 9.0  # just under stable_after
        assert restarts.died(now) is State.BACKOFF
    restarts.started(now)
    assert restarts.died(now + 1.0) is State.FATAL


def test_zero_tries_gives_up_on_the_first_death() -> None:
    restarts = Restarts(Policy(max_tries=0))
    restarts.started(0.0)
    assert restarts.died(0.0) is State.FATAL


def test_deaths_without_a_start_in_between_are_never_forgiven() -> None:
    """A task whose start is refused never runs: its deaths add up, however far apart in time."""
    restarts = Restarts(POLICY)
    states = [restarts.died(now) for now in (100.0, 200.0, 300.0, 400.0)]
    assert states == [State.BACKOFF] * 3 + [State.FATAL]
