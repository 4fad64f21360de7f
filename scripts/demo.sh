#!/usr/bin/env bash
# Demo: run a 30-second task under the supervisor (foreground) while a
# background helper waits a few seconds, looks the task's endpoint up in etcd
# (v3 API, read with etcdctl) and prints its /metrics.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

bash scripts/provision.sh

SERVICE=demo
PREFIX="/horizon/services/$SERVICE/"
PY="$ROOT/.venv/bin/python"

# Reads `etcdctl get --prefix -w json` from stdin and prints the url of the
# newest ".../endpoint" key (keys and values are base64; the value is JSON
# {"host","port","url"}).
endpoint_url() {
    "$PY" -c '
import base64, json, sys
try:
    kvs = [kv for kv in json.load(sys.stdin).get("kvs", [])
           if base64.b64decode(kv["key"]).endswith(b"/endpoint")]
    e = json.loads(base64.b64decode(max(kvs, key=lambda kv: kv["mod_revision"])["value"]))
    print(e["url"].rstrip("/"))
except Exception:
    sys.exit(1)
'
}

probe() {
    # Every command runs as a background job + wait, so SIGTERM from the
    # main script interrupts the wait at once and the trap kills the child:
    # nothing of this helper outlives the script.
    trap 'kill $(jobs -p) 2>/dev/null; exit 0' TERM
    local i url
    sleep 5 & wait $!
    for ((i = 0; i < 20; i++)); do
        ETCDCTL_API=3 etcdctl --endpoints 127.0.0.1:2379 --command-timeout 2s \
            get --prefix "$PREFIX" -w json >"$tmp/keys.json" 2>/dev/null & wait $! || true
        if url=$(endpoint_url <"$tmp/keys.json" 2>/dev/null); then
            echo "demo: endpoint from etcd: $url"
            curl -s -m 2 -o "$tmp/metrics" "$url/metrics" & wait $! || true
            echo "demo: GET $url/metrics:"
            cat "$tmp/metrics" 2>/dev/null || true
            echo
            return 0
        fi
        sleep 1 & wait $!
    done
    echo "demo: no endpoint for service '$SERVICE' in etcd after ~25s" >&2
}

tmp=$(mktemp -d)
probe_pid=""
# shellcheck disable=SC2329  # invoked by the EXIT trap
cleanup() {
    if [ -n "$probe_pid" ]; then
        kill -TERM "$probe_pid" 2>/dev/null || true
        wait "$probe_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT

probe &
probe_pid=$!

rc=0
"$PY" main.py horizon-busybox:latest \
    "sh -c 'i=0; while [ \$i -lt 30 ]; do i=\$((i+1)); sleep 1; done'" \
    --service "$SERVICE" || rc=$?
echo "demo: supervisor exited with status $rc" >&2
exit "$rc"
