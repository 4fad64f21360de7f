"""systemd's watchdog (issue 8, item 4), through a NOTIFY_SOCKET of the test's own: the pings stop while
a worker is hung (SIGSTOPped), a STATUS= line says which, and they come back after its restart.
(The hung workers' restart itself is tested in test_worker_faults.py.)"""

from __future__ import annotations

import os
import signal
import time

from tests.support import POLITE
from tests.support.notify import NotifyListener
from tests.support.waiting import wait_for

INTERVAL = 0.5
LIMIT = 3 * INTERVAL + 2  # the bound: killed and a new worker running


def test_watchdog_pings_stop_while_the_container_worker_is_hung_and_come_back(supervised, tmp_path, monkeypatch):
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", listener.path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s while all is well
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        run = supervised().main(POLITE, "--interval", str(INTERVAL))
        wait_for(lambda: any("READY=1" in text for _, text in listener.messages), 20, "READY=1")
        wait_for(lambda: len(listener.pings()) >= 5, 10, "watchdog pings while all is well")
        before = run.wait_workers()
        stopped = time.monotonic()
        os.kill(before["container"], signal.SIGSTOP)
        wait_for(lambda: before["container"] != run.workers().get("container", before["container"]), LIMIT + 3,
                 "a new container worker")
        restarted = time.monotonic()
        wait_for(lambda: any(at > restarted for at in listener.pings()), 10, "watchdog pings after the restart")

        pings = listener.pings()
        gaps = [b - a for a, b in zip(pings, pings[1:]) if b > stopped and a < restarted]
        assert gaps and max(gaps) >= 1.0, f"the pings never stopped while the worker was hung: gaps {gaps}"
        problems = [text for at, text in listener.messages if at > stopped and text.startswith("STATUS=")]
        assert any("container worker" in text for text in problems), problems  # says what is wrong
        assert len(pings) > len([at for at in pings if at <= restarted])  # and they come back
        os.kill(run.proc.pid, signal.SIGTERM)
        assert run.wait(20) == 0
    finally:
        listener.close()
