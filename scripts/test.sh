#!/usr/bin/env bash
# Provision (idempotent, quiet) and run the test suite from the repo root.
# Extra arguments go to pytest, e.g. scripts/test.sh -k etcd -x
# Exits with pytest's status; "no tests collected" (5) is a failure too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

bash scripts/provision.sh

rc=0
.venv/bin/python -m pytest -q tests "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests -- failing" >&2
fi
exit "$rc"
