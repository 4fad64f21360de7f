"""The task itself fails, for real (issue 4, item 8): a command missing from the image, and restart
policies that restart, give up, or are cut short by a stop. The restarts are read back from etcd's own
change history, so none is missed however short."""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.docker import container_actions
from tests.support.leftovers import assert_nothing_left
from tests.support.net import http_get
from tests.support.waiting import wait_for


def test_a_command_missing_from_the_image_fails_with_the_engines_reason(supervised):
    run = supervised().main("no-such-binary")
    code = run.wait(30)
    record = run.record()
    status = record["status"]
    assert status["state"] == "failed" and code == status["exit_code"] == 127, status
    assert status["reason"].startswith("cannot start:") and "no-such-binary" in status["reason"]
    assert record["running"] is False
    assert_nothing_left(run, run.containers)


def test_a_missing_command_shows_restarting_at_the_endpoint_then_gives_up(supervised):
    run = supervised().main("no-such-binary", "--restart", "on-failure", "--max-restarts", "2", "--restart-delay", "0.5")
    url = run.url()
    seen = wait_for(lambda: (lambda b: b if b and b["state"] == "restarting" else None)(http_get(f"{url}/status")[1]),
                    10, "state restarting at /status")
    assert seen["running"] is False and seen["exit_code"] == 127 and "no-such-binary" in seen["reason"]
    assert run.wait(30) == 127
    status = run.record()["status"]
    assert status["state"] == "failed" and status["reason"].startswith("gave up after 2 restarts: cannot start:")
    assert_nothing_left(run, run.containers)


@pytest.mark.parametrize("policy, command, final", [
    ("on-failure", "sh -c 'exit 1'", "exited with code 1"),
    ("always", "true", "exited"),  # even a task that succeeds is started again, until the limit
])
def test_restart_policy_restarts_then_gives_up_as_failed(supervised, policy, command, final):
    run = supervised()
    history = run.etcd.history(run.prefix)
    since = time.time()
    run.main(command, "--restart", policy, "--max-restarts", "2", "--restart-delay", "0.2")
    code = run.wait(30)
    history.stop()
    statuses = history.values("status")
    restarting = [s for s in statuses if s["state"] == "restarting"]
    assert [s["restarts"] for s in restarting] == [0, 1], statuses
    assert all(s["reason"] == final for s in restarting)
    last = statuses[-1]
    assert last["state"] == "failed" and last["reason"] == f"gave up after 2 restarts: {final}" and last["restarts"] == 2
    assert code != 0 and run.record()["running"] is False
    actions = container_actions(run.service, since, time.time())
    assert actions.count("create") == 1 and actions.count("start") == 3  # one container, started three times
    assert_nothing_left(run, run.containers)


def test_a_stop_while_restarting_is_a_clean_stop(supervised):
    run = supervised()
    history = run.etcd.history(run.prefix)
    run.main("true", "--restart", "always", "--max-restarts", "100", "--restart-delay", "0.1")
    wait_for(lambda: len([s for s in history.values("status") if s["state"] == "restarting"]) >= 3, 20,
             "three restarts")
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(20) == 0
    history.stop()
    assert history.values("status")[-1]["state"] == "stopped" and run.state() == "stopped"
    assert_nothing_left(run, run.containers)
