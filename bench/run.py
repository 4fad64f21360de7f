"""``python -m bench [--smoke] [--only NAME,...] [--output PATH] [NAME ...]``: run the benchmarks against the
real engine and a loopback etcd, print one table, and (full run) write bench/RESULTS.md. Names given as
arguments (``python -m bench scale``) are a subset, as with --only.

``python -m bench chaos ...`` runs the chaos soak instead (bench/chaos.py, its own options: ``python -m
bench chaos --help``); it is not one of the benchmarks of a full run.

A benchmark is a module with ``NAME`` and ``run(smoke) -> [Row]``. One that fails gives an ERROR row
and a non-zero exit (after the rows it measured, when it raises common.Failed with them); one that misses
its target does not (benchmarks print, they do not assert).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from pathlib import Path
from typing import List, Optional, Tuple

from bench import common, report
from bench.common import Row, log
from tests.support import ETCD_HOSTS
from tests.support.services import services_up

BENCHMARKS = ("sample_cost", "cadence", "endpoint", "freshness", "footprint", "start", "scale", "etcd_client",
              "cli_ls", "control_latency")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SUBCOMMANDS = {"chaos": "bench.chaos"}  # python -m bench NAME ...: a run of its own, with its own options


def parse(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="short windows (about a minute in all): checks that "
                        "every benchmark still runs; its figures mean little")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--output", type=Path, help="where to write the results (default: bench/RESULTS.md "
                        "for a full run of every benchmark; nothing otherwise)")
    parser.add_argument("only_names", nargs="*", metavar="NAME", help="benchmarks to run (as --only)")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] + args.only_names
    args.subset = bool(chosen)
    args.names = list(dict.fromkeys(chosen)) or list(BENCHMARKS)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.exit(2, f"python -m bench: error: unknown benchmark {', '.join(unknown)}: "
                       f"choose from {', '.join(BENCHMARKS)}\n")
    if args.output is None and not args.smoke and not args.subset:
        args.output = RESULTS
    return args


def run_one(name: str, smoke: bool) -> Tuple[List[Tuple[str, Row]], bool]:
    log(f"--- {name} ---")
    started = time.monotonic()
    try:
        rows = importlib.import_module(f"bench.{name}").run(smoke)
        ok = True
    except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others' figures
        traceback.print_exc()
        lines = str(exc).strip().splitlines() or [""]
        summary = lines[0] if len(lines) == 1 else f"{lines[0]} … {lines[-1].strip()}"
        # a benchmark that failed part of the way (common.Failed) keeps the rows it measured
        rows = [*getattr(exc, "rows", []), Row("ERROR", f"{type(exc).__name__}: {summary}"[:300], "", "", "", None)]
        ok = False
    finally:
        common.remove_containers()
        for host in ETCD_HOSTS.values():
            common.etcd_wipe(host)
    log(f"{name} took {time.monotonic() - started:.1f} s")
    return [(name, row) for row in rows], ok


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return int(importlib.import_module(SUBCOMMANDS[argv[0]]).main(argv[1:], as_bench=True))
    args = parse(argv)
    started = time.monotonic()
    services_up(quiet=True)
    about = report.machine()
    results: List[Tuple[str, Row]] = []
    failed = []
    for name in args.names:
        rows, ok = run_one(name, args.smoke)
        results += rows
        if not ok:
            failed.append(name)
    took = time.monotonic() - started
    print(report.table(results))
    met = sum(1 for _, row in results if row.met)
    missed = sum(1 for _, row in results if row.met is False)
    print(f"bench: {len(results)} rows, {met} met, {missed} not met, {len(failed)} failed"
          f"{' (' + ', '.join(failed) + ')' if failed else ''}; {took:.0f} s")
    if args.output is not None:
        args.output.write_text(report.results_md(results, about, "smoke" if args.smoke else "full", took,
                                                 args.names if args.subset else ()), encoding="utf-8")
        print(f"bench: wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
