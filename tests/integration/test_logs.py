"""The task's logs, for real (issue 10's server side): GET /logs at the endpoint reads the container's
output from the Docker engine (the last N lines in order; with follow, new lines until the task stops),
without holding up /metrics or sampling; and the final record in etcd keeps the last lines, also when
the task ended while no supervisor watched it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import List, Optional, Tuple

from tests.integration.test_supervisor_faults import ended_unwatched, fast_ini
from tests.support.leftovers import assert_nothing_left
from tests.support.metrics import seq_at, seq_passes
from tests.support.net import http_get
from tests.support.supervisor import Supervisor
from tests.support.waiting import wait_for

# Numbered lines, 20 or so a second, until SIGTERM (then it exits 0 at once).
COUNTING = "sh -c 'trap \"exit 0\" TERM; i=0; while true; do i=$((i+1)); echo line $i; sleep 0.05; done'"


def get_text(url: str, timeout: float = 5) -> Tuple[int, str, str]:
    """(status, content type, body) of one GET."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    try:
        connection.request("GET", f"{parts.path}?{parts.query}")
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read().decode()
    finally:
        connection.close()


def numbers(lines: List[str]) -> List[int]:
    assert all(line.startswith("line ") for line in lines), lines
    return [int(line.split()[1]) for line in lines]


def consecutive(values: List[int]) -> bool:
    return values == list(range(values[0], values[0] + len(values))) if values else True


def last_line_number(url: str) -> int:
    status, _, text = get_text(f"{url}/logs?tail=1")
    return numbers(text.splitlines())[0] if status == 200 and text else 0


class Follow:
    """GET /logs?follow=1, read a line at a time (chunked: http.client takes the chunks apart)."""

    def __init__(self, url: str, tail: int, timeout: float = 10) -> None:
        parts = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
        self.connection.request("GET", f"/logs?tail={tail}&follow=1")
        self.response = self.connection.getresponse()

    def line(self) -> Optional[str]:
        """The next line; None once the answer ended."""
        raw = self.response.readline()
        return raw.decode().rstrip("\n") if raw else None

    def read_into(self, lines: List[str]) -> None:
        """Every line, until the answer ends or the follow is closed (a thread's loop)."""
        try:
            while (line := self.line()) is not None:
                lines.append(line)
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # closed under it

    def close(self) -> None:
        """Go away: the socket shut first, so that a thread reading it sees the end, not a closed file."""
        if self.connection.sock is not None:
            try:
                self.connection.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.connection.close()


def stop(run: Supervisor) -> None:
    assert run.proc is not None
    os.kill(run.proc.pid, signal.SIGTERM)
    assert run.wait(30) == 0


def test_tail_returns_the_last_lines_in_order(supervised):
    run = supervised().main(COUNTING)
    url = run.url()
    wait_for(lambda: last_line_number(url) >= 120, 20, "120 lines printed")
    status, kind, text = get_text(f"{url}/logs?tail=10")
    lines = numbers(text.splitlines())
    assert status == 200 and kind.startswith("text/plain") and len(lines) == 10 and consecutive(lines), text
    assert lines[-1] >= 120
    status, _, text = get_text(f"{url}/logs")  # 100 lines unless told
    assert status == 200 and len(text.splitlines()) == 100 and consecutive(numbers(text.splitlines()))
    status, kind, text = get_text(f"{url}/logs?tail=lots")
    assert (status, kind) == (400, "application/json")
    assert json.loads(text) == {"error": "tail must be a whole number of lines from 0 to 10000", "status": 400}
    stop(run)
    assert_nothing_left(run, run.containers)


def test_follow_streams_new_lines_and_ends_when_the_task_stops(supervised):
    run = supervised().main(COUNTING)
    url = run.url()
    wait_for(lambda: last_line_number(url) >= 5, 15, "a few lines printed")
    follow = Follow(url, tail=3)
    try:
        assert follow.response.status == 200 and follow.response.getheader("Transfer-Encoding") == "chunked"
        seen = numbers([follow.line() or "" for _ in range(3 + 30)])  # the tail, then 1.5 s of new lines
        assert consecutive(seen), seen
        assert run.proc is not None
        stopped_at = time.monotonic()
        os.kill(run.proc.pid, signal.SIGTERM)
        rest = []
        while (line := follow.line()) is not None:  # the answer ends with the container
            rest.append(line)
        assert time.monotonic() - stopped_at < 10
        followed = seen + numbers(rest)
        assert consecutive(followed), rest
    finally:
        follow.close()
    assert run.wait(30) == 0
    status = run.record()["status"]
    assert status["state"] == "stopped"
    kept = numbers(status["last_logs"])  # the stopped task's last lines, in its final record
    assert consecutive(kept) and len(kept) == min(50, kept[-1]), kept
    assert kept[-1] == followed[-1]  # the follow had every line up to the end
    assert_nothing_left(run, run.containers)


def test_metrics_stay_fast_and_sampling_goes_on_during_a_follow(supervised):
    run = supervised().main(COUNTING, "--interval", "0.1")
    url = run.url()
    seq_passes(url, 2, 10, "a few samples")
    follow = Follow(url, tail=10)
    followed: List[str] = []
    reader = threading.Thread(target=follow.read_into, args=(followed,), daemon=True)
    reader.start()
    try:
        wait_for(lambda: len(followed) >= 20, 10, "the follow under way")
        first = seq_at(url)
        assert first is not None

        def timed(_: int) -> Tuple[Optional[int], float]:
            began = time.monotonic()
            code, _ = http_get(f"{url}/metrics", timeout=5)
            return code, time.monotonic() - began

        with ThreadPoolExecutor(20) as pool:
            for _ in range(3):
                answers = list(pool.map(timed, range(20)))
                assert all(code == 200 for code, _ in answers), answers
                assert max(took for _, took in answers) < 0.5, answers
        seq_passes(url, first + 5, 5, "sampling to go on")
        count = len(followed)
        wait_for(lambda: len(followed) > count + 5, 5, "the follow to go on")
        assert consecutive(numbers(followed[:count + 5]))
    finally:
        follow.close()
    reader.join(5)
    stop(run)
    assert_nothing_left(run, run.containers)


def test_the_final_record_keeps_the_last_lines(supervised):
    # stderr after a pause: the engine copies stdout and stderr apart, so lines written at once may swap
    printing = ("sh -c 'i=0; while [ $i -lt 80 ]; do i=$((i+1)); echo line $i; done; "
                "head -c 700 /dev/zero | tr \"\\0\" x; echo; sleep 0.2; echo oops >&2; exit 3'")
    run = supervised().main(printing)
    assert run.wait(30) == 3
    status = run.record()["status"]
    assert (status["state"], status["exit_code"]) == ("failed", 3)
    assert status["last_logs"] == [f"line {i}" for i in range(33, 81)] + ["x" * 500, "oops"]
    assert_nothing_left(run, run.containers)


def test_a_task_that_ended_unwatched_keeps_its_last_lines(supervised, tmp_path):
    command = "sh -c 'trap \"exit 143\" TERM; echo before; while [ ! -e /tmp/end ]; do sleep 0.1; done; echo after; exit 3'"
    run = supervised()
    ini = fast_ini(run, tmp_path, command)
    run.ini(ini)
    ended_unwatched(run)  # the supervisor killed, then the task ended
    again = supervised(run.service).ini(ini)
    assert again.wait(30) == 3
    status = again.record()["status"]
    assert (status["state"], status["last_logs"]) == ("failed", ["before", "after"])
    assert_nothing_left(again, again.containers)
