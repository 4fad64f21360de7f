#!/usr/bin/env bash
# Provision (idempotent, quiet) and run the test suite from the repo root.
# Extra arguments go to pytest, e.g. scripts/test.sh -k etcd -x
#
# Two passes: every test but the chaos soak in two pytest workers (pytest-xdist, a file per worker at a
# time: the files are independent, each test makes its own services, namespaces and ports), then the
# soak alone (it runs one soak per etcd API at once and needs the machine's two cores to itself).
# HORIZON_TEST_WORKERS=1 runs the first pass in one process. Exits with the first failing pass's status;
# "no tests collected" (5) in both passes is a failure too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

bash scripts/provision.sh

SOAK=tests/integration/test_chaos_smoke.py
workers="${HORIZON_TEST_WORKERS:-2}"
parallel=()
[ "$workers" -gt 1 ] && parallel=(-n "$workers" --dist loadfile)

first=0
.venv/bin/python -m pytest -q tests --ignore="$SOAK" "${parallel[@]}" "$@" || first=$?
second=0
.venv/bin/python -m pytest -q "$SOAK" "$@" || second=$?

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
