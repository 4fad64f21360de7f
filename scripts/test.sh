#!/usr/bin/env bash
# Provision (idempotent, quiet) and run the test suite from the repo root.
# Extra arguments go to pytest, e.g. scripts/test.sh -k etcd -x
#
# Two passes: every test but the machine-wide ones in two pytest workers (pytest-xdist, a file per worker
# at a time: the files are independent, each test makes its own services, namespaces and ports), then the
# machine-wide ones alone: the chaos soak (one soak per etcd API at once, the machine's two cores to
# itself) and a host tree's isolation (5,000 processes forked and a flood of output: beside them, another
# file's timing tests would measure the fork storm, not horizon).
# HORIZON_TEST_WORKERS=1 runs the first pass in one process. Exits with the first failing pass's status;
# "no tests collected" (5) in both passes is a failure too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

bash scripts/provision.sh

ALONE=(tests/integration/test_chaos_smoke.py tests/integration/test_host_tree_isolation.py)
workers="${HORIZON_TEST_WORKERS:-2}"
parallel=()
[ "$workers" -gt 1 ] && parallel=(-n "$workers" --dist loadfile)

first=0
ignored=()
for file in "${ALONE[@]}"; do ignored+=(--ignore="$file"); done
.venv/bin/python -m pytest -q tests "${ignored[@]}" "${parallel[@]}" "$@" || first=$?
second=0
.venv/bin/python -m pytest -q "${ALONE[@]}" "$@" || second=$?

if [ "$first" -eq 5 ] && [ "$second" -eq 5 ]; then
    echo "test.sh: pytest collected no tests -- failing" >&2
    exit 5
fi
for rc in "$first" "$second"; do
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
        exit "$rc"
    fi
done
exit 0
