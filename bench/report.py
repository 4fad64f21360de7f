"""The one table, and bench/RESULTS.md: the machine, the table, and what was changed to meet targets."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import psutil

from bench.common import Row
from tests.support import ETCD_HOSTS, ROOT
from tests.support.etcd import etcd_client

CHANGES = Path(__file__).resolve().parent / "CHANGES.md"
SOAKS = Path(__file__).resolve().parent / "CHAOS.md"  # chaos soaks run with --record, one row each
SOAKS_HEADER = ("## Chaos soaks\n\nEach row is one `python -m bench chaos --record` run (bench/chaos.py), appended "
                "by the run itself with its date and commit. A soak is not part of a full `python -m bench` run.\n\n")
COLUMNS = ("benchmark", "what", "figure", "baseline (same run)", "ratio", "target", "met?")


def met_text(met) -> str:
    return "n/a" if met is None else ("yes" if met else "NO")


def cells(name: str, row: Row) -> Tuple[str, ...]:
    return (name, row.what, row.figure, row.baseline, row.ratio, row.target, met_text(row.met))


def table(results: Sequence[Tuple[str, Row]]) -> str:
    """A fixed-width text table for the terminal."""
    rows = [COLUMNS] + [cells(name, row) for name, row in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(rows[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in rows[1:]])


def markdown(results: Sequence[Tuple[str, Row]]) -> str:
    out = ["| " + " | ".join(COLUMNS) + " | notes |", "|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in results:
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in (*cells(name, row), row.note)) + " |")
    return "\n".join(out)


def record_soak(results: Sequence[Tuple[str, Row]], took: float) -> None:
    """Append a soak's row to bench/CHAOS.md, dated and with its commit (the table starts with the file)."""
    commit = _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=10"])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = markdown(results).splitlines()
    if not SOAKS.exists():
        SOAKS.write_text(SOAKS_HEADER + "| when | commit | took | " + rows[0][2:] + "\n|---|---|---|" + rows[1][1:] + "\n",
                         encoding="utf-8")
    with SOAKS.open("a", encoding="utf-8") as out:
        for row in rows[2:]:
            out.write(f"| {stamp} | {commit} | {took / 60:.1f} min {row}\n")


def _first_line(argv: List[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


def etcd_version(api: str) -> str:
    """The version of the shared etcd of ``api`` (scripts/services.sh starts both)."""
    status, body = etcd_client(api).request("/version")
    return body.get("etcdserver", "unknown") if status == 200 and isinstance(body, dict) else "unknown"


def machine() -> Dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    distro = platform.platform()
    if os.path.exists("/etc/os-release"):
        with open("/etc/os-release", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("PRETTY_NAME="):
                    distro = line.split("=", 1)[1].strip().strip('"')
    cgroup = "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1"
    commit = _first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty", "--abbrev=10"])
    return {
        "horizon": f"commit {commit}",
        "CPU": f"{cpu}, {psutil.cpu_count(logical=True)} logical cores",
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS / kernel": f"{distro} / {platform.release()} (cgroup {cgroup})",
        "Docker engine": _first_line(["docker", "version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})"]),
        "etcd": f"{etcd_version('v3')} over the v3 API (every benchmark's supervisors: {ETCD_HOSTS['v3']} and "
                f"private members of the same binary); {etcd_version('v2')} with the v2 API enabled at "
                f"{ETCD_HOSTS['v2']} (etcd_client's fallback, over v3); loopback",
        "Python": platform.python_version(),
        "wrk": _first_line(["sh", "-c", "wrk -v 2>&1"]),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def results_md(results: Sequence[Tuple[str, Row]], about: Dict[str, str], mode: str, took: float,
               names: Sequence[str] = ()) -> str:
    """The results file; ``names``: the benchmarks run, when not every one (then the soaks and the changes,
    which belong to the full results, are left out)."""
    changes = CHANGES.read_text(encoding="utf-8").strip() if CHANGES.exists() and not names else ""
    only = f" {' '.join(names)}" if names else ""
    lines = [
        "# horizon benchmark results",
        "",
        f"Generated by `python -m bench{'' if mode == 'full' else ' --smoke'}{only}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} ({mode} mode, {took / 60:.1f} min). "
        "Every baseline was measured in the same run, on the same machine; the machine is shared, so "
        "figures are noisy and ratios matter more than absolute values. Benchmarks print, they assert nothing.",
        "",
        "## Machine",
        "",
        *[f"- **{key}:** {value}" for key, value in about.items()],
        "",
        "## Results",
        "",
        markdown(results),
        "",
    ]
    if SOAKS.exists() and not names:
        lines += [SOAKS.read_text(encoding="utf-8").strip(), ""]
    if changes:
        lines += [changes, ""]
    return "\n".join(lines)

