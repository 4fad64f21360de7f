"""Scale: many tasks on this machine, two ways, in one run. N = 1, 10, 50, 200 (1 and 3 in smoke mode),
each task the same light busy command at 1 s.

- **Host tree** (``python -m supervisor DIR``, issue 12): N task files in one directory, one tree (parent
  + hz-container, hz-publisher, hz-endpoint) for every task. Once /tasks lists all N running and a few
  seconds have passed, over a window with no client (the tree's own cost, not its clients'): the PSS of the tree's four processes (not the containers, nor the
  engine's containerd shims: those are the engine's, the same in both modes; the shim's PSS is given
  beside, as the engine's own cost per task) and their CPU. The issue's targets are per extra task:
  marginal PSS = (PSS(N) − PSS(1)) / (N − 1) ≤ 3 MB and marginal CPU ≤ 0.02% of a core; and cadence: the
  p99 of |Δtimestamp − interval| between each task's consecutive samples < 5% of the interval at the
  largest N. The cadence comes from a second window, polling the host's GET /metrics (JSON, every task's
  latest document in one answer) about three times a second, each task's samples told apart by service/task.
  Beside the marginal CPU, the floor: the least any sampler of those N containers can cost at 1 s (their
  cgroup and /proc files re-read once a second in one burst, following their processes and parsing nothing
  but the pid list, by the bench itself), so the target can be read against what this machine's kernel
  charges for the reads alone.
- **Separate trees** (today's mode, ``python main.py`` once per task): the same N beside it, measured as
  before (per task: CPU and RSS of its tree; cadence from each endpoint, polled round-robin at the same
  rate), as far as the machine allows: an N whose trees would take more than half the available memory
  (PSS of one tree and its shim, as measured at N = 1) or more than half the machine's cores, or more
  than SEPARATE_MAX trees, is skipped, with a row saying why.

Each host-tree figure has as its baseline the same figure for the same N as separate trees (the largest
N measured when that N was skipped); each separate-tree per-task figure the one at N = 1. The host tree's
own log is read after each run: its warnings and errors (there should be none) are printed and noted.
"""

from __future__ import annotations

import json
import time
import traceback
import urllib.request
from typing import Any, Dict, List, Optional

import psutil

from bench.common import (BenchSupervisor, Failed, Floor, HostPoller, HostTree, MetricsPoller, Row, cpu_seconds,
                          deviations, log, memory_bytes, ms, pct, pss_bytes, ratio, rss_bytes, shim_pss, stop_all)

NAME = "scale"
# A light busy task: a short shell loop of arithmetic and a fork (sleep) every second, ~0.2% of a core
# (the sampler sees a pid come and go each second). The earlier ~2% task (a fork every 50 ms) would need
# 4-6 cores at 200 tasks on this 2-core machine; both modes run this one.
BUSY = "sh -c 'while :; do i=0; while [ $i -lt 50 ]; do i=$((i+1)); done; sleep 1; done'"
GROWTH_LIMIT = 1.5  # separate trees, per task: "must not grow with N": within noise of the N = 1 figure
INTERVAL = 1.0
POLL_EVERY = 0.3  # a few times a second: every seq of a 1 s task is seen
MARGINAL_PSS_LIMIT = 3 * 2**20  # issue 12: bytes of PSS per extra task in one tree
MARGINAL_CPU_LIMIT = 0.02  # issue 12: % of a core per extra task in one tree
CADENCE_LIMIT = 0.05  # issue 12: p99 deviation, as a share of the interval, at the largest N
FLOOR_WINDOW = 20.0  # seconds of the floor's once-a-second reads, at each N
SEPARATE_MAX = 50  # separate trees beyond this many are not started (the machine is shared)
SHARE = 0.5  # separate trees may take at most this share of the available memory, and of the cores
MB = 2**20
GB = 2**30


def task_cpu(sup: BenchSupervisor) -> float:
    """What the task itself uses, in percent of a core, from its own latest /metrics document."""
    with urllib.request.urlopen(sup.url() + "/metrics", timeout=5) as response:
        return float(json.load(response)["container"]["cpu_percent"])


def cadence(samples_by_task: List[List[Any]]) -> Dict[str, float]:
    devs: List[float] = []
    missed = 0
    for samples in samples_by_task:
        found, lost = deviations(samples, INTERVAL)
        devs += found
        missed += lost
    return {"p50": pct(devs, 50), "p99": pct(devs, 99), "intervals": len(devs), "missed": missed}


def measure_separate(n: int, window: float) -> Dict[str, float]:
    """N supervisors, one task each (today's mode): per task, and in all."""
    sups = [BenchSupervisor(f"scale{n}-{i}", command=BUSY, interval=INTERVAL) for i in range(n)]
    try:
        for sup in sups:
            sup.launch()
        for sup in sups:
            sup.wait_serving(timeout=120 + 2 * n)
        time.sleep(3.0)  # past start-up
        procs = [p for sup in sups for p in sup.processes()]
        cpu0, t0 = cpu_seconds(procs), time.monotonic()
        time.sleep(window)  # no client: the trees' own cost
        elapsed = time.monotonic() - t0
        cpu = cpu_seconds(procs) - cpu0
        rss, pss = rss_bytes(procs), pss_bytes(procs)
        pollers = [MetricsPoller(sup.port or 0, 0) for sup in sups]
        t0 = time.monotonic()
        while time.monotonic() - t0 < window:
            cycle = time.monotonic()
            for poller in pollers:
                poller.poll_once()
            time.sleep(max(0.0, POLL_EVERY - (time.monotonic() - cycle)))
        busy = sum(task_cpu(sup) for sup in sups) / n
    finally:
        stop_all(sups)
    r: Dict[str, float] = {"busy": busy, "cpu": 100 * cpu / elapsed / n, "rss": rss / n, "pss": pss / n,
                           "errors": sum(p.errors for p in pollers)}
    r.update(cadence([poller.samples for poller in pollers]))
    r.update(cpu_total=r["cpu"] * n, pss_total=pss, rss_total=rss)
    return r


def measure_host(n: int, window: float, settle: float) -> Dict[str, Any]:
    """N tasks in one host tree: the tree's memory and CPU over the window, and every task's cadence."""
    tree = HostTree(f"scalehost{n}", n, command=BUSY, interval=INTERVAL)
    r: Dict[str, Any] = {}
    try:
        tree.launch()
        r["startup"] = tree.wait_running(timeout=60 + 1.5 * n)
        log(f"scale host tree N={n}: all running {r['startup']:.1f} s after the start")
        time.sleep(settle)  # past start-up
        procs = tree.processes()
        pss0 = memory_bytes(procs)[1]
        each0 = [cpu_seconds([proc]) for proc in procs]
        t0 = time.monotonic()
        time.sleep(window)  # no client: the tree's own cost
        elapsed = time.monotonic() - t0
        each = [cpu_seconds([proc]) - before for proc, before in zip(procs, each0)]
        cpu = sum(each)
        rss, pss, uss = memory_bytes(procs)
        r.update(floor_cost(tree.container_pids(), min(window, FLOOR_WINDOW)))
        poller = HostPoller(tree.port or 0, 0)
        t0 = time.monotonic()
        while time.monotonic() - t0 < window:  # then the cadence, from every task's documents
            cycle = time.monotonic()
            poller.poll_once()
            time.sleep(max(0.0, POLL_EVERY - (time.monotonic() - cycle)))
        r["roles"] = {role_name(proc): 100 * used / elapsed for proc, used in zip(procs, each)}
        after = {p.pid for p in tree.processes()}
        r.update(cpu=100 * cpu / elapsed, rss=rss, pss=pss, pss0=pss0, uss=uss, processes=len(procs),
                 changed=sorted({p.pid for p in procs} ^ after), errors=poller.errors,
                 polls=len(poller.rtts), body=max(poller.sizes, default=0), rtt99=pct(poller.rtts, 99),
                 seen=len(poller.by_task))
        r["shim"], r["shims"] = shim_pss(tree.container_pids())
        busy = [doc["container"]["cpu_percent"] for doc in poller.latest.values()]
        r["busy"] = sum(busy) / len(busy) if busy else float("nan")
        r.update(cadence(list(poller.by_task.values())))
    finally:
        r["stop"] = tree.stop(timeout=30 + 0.5 * n)
        r["problems"] = tree.problems()
        r["log"] = str(tree.log_path)
        for line in r["problems"][:20]:
            log(f"scale host tree N={n}, its log: {line}")
    return r


def floor_cost(pids: List[int], window: float) -> Dict[str, float]:
    """The least sampling these containers at 1 s can cost: their cgroup and /proc files re-read once a
    second, all in one burst, following their processes (``Floor``), in this process; % of a core per
    container."""
    floors = []
    for pid in pids:
        try:
            floors.append(Floor(pid))
        except OSError:
            pass  # its process ended in between: the others make the figure
    try:
        started = tick = time.monotonic()
        before = time.thread_time()
        while time.monotonic() - started < window:
            for floor in floors:
                floor.read()
            tick += INTERVAL
            time.sleep(max(0.0, tick - time.monotonic()))
        used = time.thread_time() - before
        return {"floor": 100 * used / (time.monotonic() - started) / max(1, len(floors)),
                "floor_files": sum(floor.files for floor in floors) / max(1, len(floors))}
    finally:
        for floor in floors:
            floor.close()


def floor_left(floor: float) -> str:
    """What the marginal CPU target leaves once the floor is paid."""
    if floor >= MARGINAL_CPU_LIMIT:
        return f"the floor alone is {floor / MARGINAL_CPU_LIMIT:.2f}× the target of {MARGINAL_CPU_LIMIT:g}%"
    return f"the target leaves {MARGINAL_CPU_LIMIT - floor:.4f}% a task for everything else"


def role_name(proc: psutil.Process) -> str:
    try:
        name = proc.name()
    except psutil.NoSuchProcess:
        return str(proc.pid)
    return name.removeprefix("hz-") if name.startswith("hz-") else "parent"


def separate_skip(n: int, one: Dict[str, float], shim: float) -> Optional[str]:
    """Why N separate trees are not started (None: they are)."""
    reasons = []
    per_tree = one["pss"] + (shim if shim == shim else 0.0)
    need, available = n * per_tree, psutil.virtual_memory().available
    if need > SHARE * available:
        reasons.append(f"{n} trees would take ~{need / GB:.1f} GB ({per_tree / MB:.0f} MB each: a tree's PSS and "
                       f"its shim's, measured at N=1), over half the {available / GB:.1f} GB available")
    cores = psutil.cpu_count() or 1
    if n * one["cpu"] > SHARE * 100 * cores:
        reasons.append(f"{n} trees would use ~{n * one['cpu']:.0f}% of a core ({one['cpu']:.2f}% each at N=1), "
                       f"over half of the machine's {cores} cores")
    if n > SEPARATE_MAX and not reasons:
        reasons.append(f"more than {SEPARATE_MAX} trees ({4 * n} interpreters) are not started on this shared machine")
    return "; ".join(reasons) or None


def separate_rows(n: int, r: Dict[str, float], one: Dict[str, float], first: bool, window: float) -> List[Row]:
    base = f"separate trees N={n}"
    return [
        Row(f"{base}: CPU per task", f"{r['cpu']:.2f}% of a core", "—" if first else f"{one['cpu']:.2f}% (N=1)",
            "—" if first else ratio(r["cpu"], one["cpu"]), f"≤ {GROWTH_LIMIT}× N=1",
            None if first else r["cpu"] <= GROWTH_LIMIT * one["cpu"],
            f"over {window:g} s; the tasks used {r['busy']:.2f}% of a core each"),
        Row(f"{base}: RSS per task", f"{r['rss'] / MB:.1f} MB", "—" if first else f"{one['rss'] / MB:.1f} MB (N=1)",
            "—" if first else ratio(r["rss"], one["rss"]), f"≤ {GROWTH_LIMIT}× N=1",
            None if first else r["rss"] <= GROWTH_LIMIT * one["rss"], f"PSS {r['pss'] / MB:.1f} MB per task"),
        Row(f"{base}: cadence p99 deviation at 1 s", ms(r["p99"]), "—" if first else f"{ms(one['p99'])} (N=1)",
            "—" if first else ratio(r["p99"], one["p99"]), f"p99 < {ms(CADENCE_LIMIT * INTERVAL)}",
            r["p99"] < CADENCE_LIMIT * INTERVAL,
            f"p50 {ms(r['p50'])}; {r['intervals']} intervals, {r['missed']} missed; {r['errors']} poll errors"),
    ]


def share(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{100 * seconds / INTERVAL:.2f}% of the interval"


def host_rows(n: int, h: Dict[str, Any], one: Dict[str, Any], sep: Optional[Dict[str, float]], sep_n: int,
              sep_one: Optional[Dict[str, float]], window: float, largest: bool) -> List[Row]:
    """A host tree's rows at N; baselines: the separate trees at ``sep_n`` (N, or the largest N measured)."""
    base = f"host tree N={n}"
    same = sep_n == n
    against = f"{sep_n} separate tree{'s' * (sep_n != 1)}" + ("" if same else f"; N={n} skipped")
    troubles = [f"{len(h['problems'])} warnings/errors in its log (first: {h['problems'][0][:160]})"] if h["problems"] else []
    if h["changed"]:
        troubles.append(f"processes came or went during the window: {h['changed']}")
    stop = "did not exit within its limit (killed)" if h["stop"] is None else f"exited {h['stop']:.1f} s after SIGTERM"
    rows = [
        Row(f"{base}: PSS, parent + 3 workers", f"{h['pss'] / MB:.1f} MB",
            f"{sep['pss_total'] / MB:.1f} MB ({against})" if sep else "—",
            ratio(h["pss"] * (sep_n / n if not same else 1), sep["pss_total"]) if sep else "—", "—", None,
            f"{h['pss'] / n / MB:.2f} MB per task; {h['pss0'] / MB:.1f} MB at the window's start; "
            f"RSS {h['rss'] / MB:.1f} MB, USS {h['uss'] / MB:.1f} MB; "
            f"{h['processes']} processes; the engine's shim: {h['shim'] / MB:.1f} MB PSS per container "
            f"({h['shims']} read); all {n} running {h['startup']:.1f} s after the start"
            + ("" if same else f"; ratio per task against {sep_n} trees")),
        Row(f"{base}: CPU, parent + 3 workers", f"{h['cpu']:.2f}% of a core",
            f"{sep['cpu_total']:.2f}% of a core ({against})" if sep else "—",
            ratio(h["cpu"] * (sep_n / n if not same else 1), sep["cpu_total"]) if sep else "—", "—", None,
            f"over {window:g} s, no client (the cadence's polling came after); "
            f"{h['cpu'] / n:.3f}% per task; by process: "
            + ", ".join(f"{role} {used:.2f}%" for role, used in sorted(h["roles"].items()))
            + f"; the tasks used {h['busy']:.2f}% of a core each"
            + ("" if same else f"; ratio per task against {sep_n} trees")),
        Row(f"{base}: cadence p99 deviation at 1 s", f"{share(h['p99'])} ({ms(h['p99'])})",
            f"{ms(sep['p99'])} ({against})" if sep else "—", ratio(h["p99"], sep["p99"]) if sep else "—",
            f"p99 < {100 * CADENCE_LIMIT:g}% of the interval" + (" (the issue's, at this N)" if largest else ""),
            h["p99"] < CADENCE_LIMIT * INTERVAL,
            f"p50 {ms(h['p50'])}; {h['intervals']} intervals of {h['seen']} tasks, {h['missed']} missed; "
            f"{h['polls']} polls of GET /metrics (up to {h['body'] / 1024:.0f} KB, p99 {ms(h['rtt99'])}), "
            f"{h['errors']} errors; the tree {stop}" + (f"; {'; '.join(troubles)}" if troubles else "")),
    ]
    if n == 1:
        return rows
    m_pss = (h["pss"] - one["pss"]) / (n - 1)
    m_uss = (h["uss"] - one["uss"]) / (n - 1)
    m_cpu = (h["cpu"] - one["cpu"]) / (n - 1)
    sm_pss = sm_cpu = float("nan")
    if sep and sep_one and sep_n > 1:
        sm_pss = (sep["pss_total"] - sep_one["pss_total"]) / (sep_n - 1)
        sm_cpu = (sep["cpu_total"] - sep_one["cpu_total"]) / (sep_n - 1)
    per_extra = f"separate trees, per extra tree (N=1→{sep_n})"
    rows += [
        Row(f"{base}: marginal PSS per extra task", f"{m_pss / MB:.2f} MB",
            f"{sm_pss / MB:.1f} MB ({per_extra})" if sm_pss == sm_pss else "—", ratio(m_pss, sm_pss, "{:.3f}×"),
            f"≤ {MARGINAL_PSS_LIMIT / MB:g} MB", m_pss <= MARGINAL_PSS_LIMIT,
            f"(PSS(N) − PSS(1)) / (N − 1) = ({h['pss'] / MB:.1f} − {one['pss'] / MB:.1f} MB) / {n - 1}; "
            f"marginal USS {m_uss / MB:.2f} MB; the engine's shim: {h['shim'] / MB:.1f} MB PSS per container"),
        Row(f"{base}: marginal CPU per extra task", f"{m_cpu:.3f}% of a core",
            f"{sm_cpu:.3f}% ({per_extra})" if sm_cpu == sm_cpu else "—", ratio(m_cpu, sm_cpu),
            f"≤ {MARGINAL_CPU_LIMIT:g}% of a core", m_cpu <= MARGINAL_CPU_LIMIT,
            f"(CPU(N) − CPU(1)) / (N − 1) = ({h['cpu']:.2f} − {one['cpu']:.2f}%) / {n - 1}; sampling at 1 s; "
            f"the floor per task: {h['floor']:.4f}% (next row)"),
        Row(f"{base}: floor per task, its files re-read once a second", f"{h['floor']:.4f}% of a core",
            f"{m_cpu:.3f}% (the tree's marginal CPU)", ratio(h["floor"], m_cpu), "—", None,
            f"the least a sampler of these {n} containers can cost at 1 s: each one's cgroup and /proc files "
            f"({h['floor_files']:.1f} a container) re-read with pread once a second, in one burst, parsing nothing "
            f"but the pid list, a new process's files opened (the task forks a sleep every second), by the bench "
            f"itself over {min(window, FLOOR_WINDOW):g} s while the tree ran; {floor_left(h['floor'])}"),
    ]
    return rows


def run(smoke: bool) -> List[Row]:
    counts, window = ((1, 3), 3.0) if smoke else ((1, 10, 50, 200), 40.0)
    host: Dict[int, Dict[str, Any]] = {}
    separate: Dict[int, Dict[str, float]] = {}
    skipped: Dict[int, str] = {}
    failures: List[str] = []
    failed: Dict[int, Row] = {}
    rows: List[Row] = []
    for n in counts:
        settle = 1.0 if smoke else 5.0 + 0.05 * n
        try:
            host[n] = measure_host(n, window, settle)
            log(f"scale host tree N={n}: " + ", ".join(f"{k} {v}" for k, v in host[n].items() if k != "problems"))
        except Exception as exc:  # noqa: BLE001 - one N's failure is reported in its row; the others still run
            traceback.print_exc()
            failures.append(f"host tree N={n}: {exc}")
            failed[n] = Row(f"host tree N={n}: did not run", "failed", "", "", "", False, str(exc)[:1500])
            if 1 not in host:
                break
        if separate and n > 1:
            reason = separate_skip(n, separate[1], host.get(1, {}).get("shim", float("nan")))
            if reason:
                skipped[n] = reason
                log(f"scale separate trees N={n}: skipped: {reason}")
                continue
        try:
            separate[n] = measure_separate(n, window)
            log(f"scale separate trees N={n}: {separate[n]}")
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            failures.append(f"separate trees N={n}: {exc}")
            skipped[n] = f"failed: {str(exc)[:600]}"
    for n in counts:
        if n in failed:
            rows.append(failed[n])
        elif n in host and 1 in host:
            sep_n = n if n in separate else max(separate, default=0)
            rows += host_rows(n, host[n], host[1], separate.get(sep_n), sep_n, separate.get(1), window, n == counts[-1])
    for n in counts:
        if n in separate:
            rows += separate_rows(n, separate[n], separate[counts[0]], n == counts[0], window)
        elif n in skipped:
            rows.append(Row(f"separate trees N={n}: skipped", "skipped", "—", "—", "—", None, skipped[n]))
    if failures:
        raise Failed("; ".join(failures), rows)
    return rows
