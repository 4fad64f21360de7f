"""etcd client (issue 9): our own client of etcd's v3 JSON gateway on http.client (supervisor/etcd/gateway.py)
against etcd3gw, the maintained library over the same gateway (on requests; no authentication).

Each client runs in a fresh interpreter of its own (``python -m bench.etcd_client CLIENT ...``), so that
imports are measured honestly. The child imports what the publisher worker imports (``import
workers.publisher``): that is the baseline. It then reads VmRSS (/proc/self/status) and Pss
(/proc/self/smaps_rollup) after importing and building the client, and again after 200 puts; then times
puts of a ~1 KB value (a metrics document) on loopback. Ours is timed also as horizon writes metrics:
``V3Record.write``, a transaction of one put bound to the task's lease with a compare on each of the
record's 5 keys, and as a 5-put transaction of the same kind. Runs alternate (ours, etcd3gw, ...);
memory figures are the median of the runs, latencies are pooled over them.

The etcd 3.5 member of scripts/services.sh (127.0.0.1:2479) is used when it answers, else the shared
etcd 3.4 (127.0.0.1:2379, which serves v3 too). Keys live under /horizon-bench-client-RUN_ID, deleted
after (each child also revokes its lease).

etcd3gw comes with the ``bench`` extra (``pip install -e '.[bench]'``); without it, only our client is
measured and the etcd3gw figures read n/a.

This module's top level imports the standard library only: the child must start clean. The parent's
imports (bench.common, tests.support) are made inside ``run``.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple

if TYPE_CHECKING:
    from bench.common import Row

NAME = "etcd_client"
CLIENTS = ("ours", "etcd3gw")
MEMBERS = (("127.0.0.1", 2479), ("127.0.0.1", 2379))  # etcd 3.5 if it answers, else the shared 3.4
RSS_PUTS = 200
TIMEOUT = 2.0
MB = 2**20
LATENCY_SLACK = 1.2  # ours may be this much slower than etcd3gw and still count as "no slower"


def metrics_document() -> str:
    """A ~1 KB /metrics-like JSON document (the size of what the publisher writes for a small task)."""
    processes = [{"pid": 100 + i, "name": "sleep", "cpu_percent": 0.0, "rss": 4096 * (i + 1),
                  "cmdline": "sleep 100000"} for i in range(8)]
    doc = {"seq": 123456, "timestamp": 1764489600.123456, "cpu_percent": 0.41, "memory": {"usage": 3145728,
           "limit": 0}, "network": {"rx_bytes": 0, "tx_bytes": 0}, "process_count": 10, "processes": processes}
    text = json.dumps(doc, separators=(",", ":"), sort_keys=True)
    return text + " " * max(0, 1024 - len(text))


# -- the child: one client in a fresh interpreter --------------------------------------------------

def memory() -> Tuple[int, int]:
    """(VmRSS, Pss) of this process, in bytes."""
    rss = pss = 0
    with open("/proc/self/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    try:
        with open("/proc/self/smaps_rollup", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def timed(call: Callable[[], Any], warmup: int, count: int) -> Dict[str, Any]:
    """Each call's wall time after ``warmup`` untimed calls, and the CPU this process used per call."""
    for _ in range(warmup):
        call()
    times = []
    clock = time.perf_counter
    cpu0 = time.process_time()
    for _ in range(count):
        t0 = clock()
        call()
        times.append(clock() - t0)
    return {"times": times, "cpu": (time.process_time() - cpu0) / count}


def child(which: str, host: str, port: int, prefix: str, warmup: int, count: int) -> Dict[str, Any]:
    import workers.publisher  # noqa: F401 - the baseline: what the publisher worker has loaded anyway

    result: Dict[str, Any] = {"baseline": memory()}
    if which == "ours":
        from supervisor.etcd.gateway import Gateway, b64
        from supervisor.etcd.store import Settings

        gateway = Gateway(Settings([(host, port)], TIMEOUT))

        def put(key: str, value: str) -> None:
            gateway.call("kv/put", {"key": b64(key), "value": b64(value)})
    else:
        import etcd3gw

        client = etcd3gw.client(host=host, port=port, api_path="/v3/", timeout=TIMEOUT)
        put = client.put  # type: ignore[assignment]
    result["built"] = memory()
    key, value = f"{prefix}/{which}/metrics", metrics_document()
    for _ in range(RSS_PUTS):
        put(key, value)
    result["after_puts"] = memory()
    result["put"] = timed(lambda: put(key, value), warmup, count)
    if which == "ours":
        from supervisor.etcd.layout import RECORD_KEYS
        from supervisor.etcd.v3 import V3Record

        record = V3Record(gateway, f"{prefix}/ours/services/bench/t1")
        record.write_all(dict.fromkeys(RECORD_KEYS, value), ttl=60)
        result["write"] = timed(lambda: record.write({"metrics": value}), warmup, count)
        result["write5"] = timed(lambda: record.write(dict.fromkeys(RECORD_KEYS, value)), warmup, count)
        gateway.call("lease/revoke", {"ID": str(record.lease)})
    return result


# -- the parent -------------------------------------------------------------------------------------

def member() -> Tuple[str, int, str]:
    """(host, port, version) of the first member of MEMBERS that answers."""
    from tests.support.net import http_get

    for host, port in MEMBERS:
        status, body = http_get(f"http://{host}:{port}/version", timeout=2)
        if status == 200 and isinstance(body, dict):
            return host, port, str(body.get("etcdserver", "unknown"))
    raise RuntimeError(f"no etcd answers at {', '.join(f'{h}:{p}' for h, p in MEMBERS)}")


def delete_prefix(host: str, port: int, prefix: str) -> None:
    """Delete every key under ``prefix`` over plain HTTP (not through the client being measured)."""
    import base64

    from tests.support.net import http_request

    raw = prefix.encode()
    body = {"key": base64.b64encode(raw).decode(),
            "range_end": base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()}
    http_request(f"http://{host}:{port}/v3/kv/deleterange", "POST", json.dumps(body).encode(), timeout=5)


def run(smoke: bool) -> List["Row"]:
    from bench.common import PYTHON, RUN_ID, Row, log, ms, pct, ratio
    from tests.support import ROOT

    rounds, warmup, count = (1, 5, 50) if smoke else (3, 20, 500)
    host, port, version = member()
    where = f"etcd {version} at {host}:{port}"
    prefix = f"/horizon-bench-client-{RUN_ID}/"
    clients = [c for c in CLIENTS if c == "ours" or importlib.util.find_spec(c) is not None]
    missing = "" if "etcd3gw" in clients else "etcd3gw not installed (pip install -e '.[bench]'); "
    log(f"etcd_client: {where}, {rounds} run(s) per client, {count} puts after {warmup} warm-up each"
        + (f"; {missing.rstrip('; ')}" if missing else ""))
    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in CLIENTS}
    try:
        for _ in range(rounds):
            for which in clients:
                done = subprocess.run(
                    [PYTHON, "-m", "bench.etcd_client", which, host, str(port), prefix.rstrip("/"), str(warmup),
                     str(count)], cwd=ROOT, capture_output=True, text=True, timeout=300)
                if done.returncode != 0:
                    raise RuntimeError(f"{which} child exited {done.returncode}: {done.stderr[-2000:]}")
                runs[which].append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        delete_prefix(host, port, prefix)

    def grown(which: str, stage: str, index: int) -> float:
        if not runs[which]:
            return float("nan")
        return float(statistics.median(r[stage][index] - r["baseline"][index] for r in runs[which]))

    def pooled(which: str, what: str) -> List[float]:
        return [t for r in runs[which] for t in r[what]["times"]]

    def cpu(which: str, what: str) -> float:
        return statistics.median(r[what]["cpu"] for r in runs[which]) if runs[which] else float("nan")

    def mb(value: float, who: str) -> str:
        return "n/a" if value != value else f"+{value / MB:.2f} MB ({who})"

    def better(ours: float, theirs: float, slack: float = 1.0) -> Optional[bool]:
        return None if theirs != theirs else ours <= slack * theirs

    baselines = [r["baseline"] for r in runs["ours"] + runs["etcd3gw"]]
    base_rss, base_pss = (statistics.median(b[i] for b in baselines) for i in (0, 1))
    rows = []
    for stage, label in (("built", "client imported and built"), ("after_puts", f"after {RSS_PUTS} puts")):
        ours, theirs = grown("ours", stage, 0), grown("etcd3gw", stage, 0)
        ours_pss, theirs_pss = grown("ours", stage, 1), grown("etcd3gw", stage, 1)
        log(f"etcd_client RSS {label}: {mb(ours, 'ours')}, {mb(theirs, 'etcd3gw')}; "
            f"PSS {mb(ours_pss, 'ours')}, {mb(theirs_pss, 'etcd3gw')}")
        rows.append(Row(f"RSS over the publisher's imports, {label}", mb(ours, "ours"), mb(theirs, "etcd3gw"),
                        ratio(ours, theirs), "< etcd3gw", better(ours, theirs),
                        f"{missing}PSS {mb(ours_pss, 'ours')}, {mb(theirs_pss, 'etcd3gw')}; the publisher's "
                        f"imports alone: RSS {base_rss / MB:.1f} MB, PSS {base_pss / MB:.1f} MB; a fresh "
                        f"interpreter per client and run, median of {rounds}; {where}"))
    ours_put, theirs_put = pooled("ours", "put"), pooled("etcd3gw", "put")
    for q, label in ((50, "median"), (99, "p99")):
        ours, theirs = pct(ours_put, q), pct(theirs_put, q)
        log(f"etcd_client put {label}: ours {ms(ours)}, etcd3gw {ms(theirs)}; client CPU per put: ours "
            f"{ms(cpu('ours', 'put'))}, etcd3gw {ms(cpu('etcd3gw', 'put'))}")
        rows.append(Row(f"put of a 1 KB value, {label}", f"{ms(ours)} (ours)", f"{ms(theirs)} (etcd3gw)",
                        ratio(ours, theirs), f"≤ {LATENCY_SLACK}× etcd3gw", better(ours, theirs, LATENCY_SLACK),
                        f"{missing}client CPU per put: ours {ms(cpu('ours', 'put'))}, etcd3gw "
                        f"{ms(cpu('etcd3gw', 'put'))}; {count} puts after {warmup} warm-up, × {rounds} run(s) "
                        f"per client, one kept-alive connection each; {where}"))
    for what, label in (("write", "metrics write (txn: 1 put bound to the lease, 5 compares)"),
                        ("write5", "5-key write (txn: 5 puts of 1 KB bound to the lease, 5 compares)")):
        times = pooled("ours", what)
        p50, p99, base = pct(times, 50), pct(times, 99), pct(ours_put, 50)
        log(f"etcd_client {what}: median {ms(p50)}, p99 {ms(p99)}, client CPU {ms(cpu('ours', what))}")
        rows.append(Row(f"ours, {label}, median", ms(p50), f"{ms(base)} (ours, plain put)", ratio(p50, base),
                        "—", None, f"p99 {ms(p99)}; client CPU {ms(cpu('ours', what))} a write; "
                        f"V3Record.write as the publisher calls it; {count} writes "
                        f"after {warmup} warm-up × {rounds}; {where}"))
    return rows


if __name__ == "__main__":
    which, host, port, prefix, warmup, count = sys.argv[1:7]
    if which not in CLIENTS:
        sys.exit(f"usage: python -m bench.etcd_client {{{','.join(CLIENTS)}}} HOST PORT PREFIX WARMUP COUNT")
    print(json.dumps(child(which, host, int(port), prefix, int(warmup), int(count))))
