#!/usr/bin/env bash
# Production install of horizon from this checkout, on a Debian host (run as root):
#   /opt/horizon/venv                 a venv made with PY (default python3) holding the package, pip-installed
#                                     from this checkout (not editable) with its runtime dependencies only;
#                                     redone only when the package's sources or the interpreter change
#                                     (stamp: /opt/horizon/venv/.horizon-install)
#   /opt/horizon/README.md, /opt/horizon/conf/task.ini, /opt/horizon/conf/horizon.ini
#                                     the documentation the units point at (the reference examples)
#   /etc/systemd/system/*.service     the units of conf/ (horizon-task@.service: one task per file;
#                                     horizon-host.service: every task file of /etc/horizon/tasks.d/ in one
#                                     tree), then `systemctl daemon-reload` if one changed and systemd runs
#                                     this machine
#   /etc/horizon/example.ini          an example task, from conf/task.ini; an existing file is never touched
#   /etc/horizon/tasks.d/horizon.ini  horizon-host.service's directory, made with its shared settings (from
#                                     conf/horizon.ini) only when the directory does not exist: from then on
#                                     it and every file in it are the operator's
#   /usr/local/bin/horizon            the fleet CLI: a symlink to the venv's bin/horizon
#
#   scripts/install.sh [--root DIR] [--python PY]
#
# --root DIR installs every path under DIR instead (tests, packaging; no root needed, no daemon-reload);
# the units then name DIR's paths, so `systemd-analyze verify` finds what they run.
# Idempotent: a second run changes nothing and prints one "up to date" line. Errors: one line, exit 1
# (2 for a usage mistake).
set -euo pipefail
umask 022

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
me="install.sh"

say() { echo "$me: $*"; }
warn() { echo "$me: warning: $*" >&2; }
die() { echo "$me: error: $*" >&2; exit 1; }
usage() { echo "usage: $me [--root DIR] [--python PY]"; }
usage_error() { echo "$me: error: $* ($(usage))" >&2; exit 2; }

root_dir=""
py="python3"
while [ $# -gt 0 ]; do
    case "$1" in
        --root) [ -n "${2:-}" ] || usage_error "--root needs a directory"; root_dir=$2; shift 2 ;;
        --root=?*) root_dir=${1#--root=}; shift ;;
        --python) [ -n "${2:-}" ] || usage_error "--python needs an interpreter"; py=$2; shift 2 ;;
        --python=?*) py=${1#--python=}; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

# --- prerequisites ----------------------------------------------------------
if [ ! -f "$ROOT/setup.py" ] || [ ! -d "$ROOT/conf" ]; then
    die "$ROOT is not a horizon checkout (no setup.py or conf/)"
fi
if [ -n "$root_dir" ]; then
    mkdir -p -- "$root_dir" 2>/dev/null || die "cannot create --root $root_dir"
    root_dir="$(cd -- "$root_dir" && pwd -P)"
    [ "$root_dir" = / ] && root_dir=""
fi
if [ -n "$root_dir" ]; then
    # the paths go into the units' ExecStart= and into sed: keep them plain
    [[ "$root_dir" =~ ^[A-Za-z0-9/._+-]+$ ]] ||
        die "--root $root_dir: use a path of letters, digits and . _ + - (it goes into the units' ExecStart=)"
elif [ "$(id -u)" != 0 ]; then
    die "run as root (or give --root DIR to install under DIR)"
fi
py_path="$(command -v -- "$py" 2>/dev/null)" ||
    die "no Python interpreter '$py': apt-get install python3 python3-venv (or give --python PY)"
need="$(sed -n 's/.*python_requires *= *">= *\([0-9][0-9.]*\)".*/\1/p' "$ROOT/setup.py" | head -n1)"
need="${need:-3.9}"
# "<real interpreter> <version>": what a venv made with PY runs (a venv's python names its base)
py_id() {
    "$1" -I -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)),
                 sys.version.split()[0])' 2>/dev/null
}
want_py="$(py_id "$py_path")" || die "$py_path does not run as a Python interpreter"
"$py_path" -I -c "import sys; sys.exit(sys.version_info < tuple(int(n) for n in '$need'.split('.')))" ||
    die "$py_path is Python ${want_py##* }; horizon needs $need or later (give --python PY)"
command -v flock >/dev/null 2>&1 || die "flock is missing: apt-get install util-linux"

opt="$root_dir/opt/horizon"
venv="$opt/venv"
etc="$root_dir/etc/horizon"
units="$root_dir/etc/systemd/system"
bindir="$root_dir/usr/local/bin"
stamp="$venv/.horizon-install"

mkdir -p -- "$opt" || die "cannot create $opt"
exec 9<"$opt"
flock 9 # one install at a time (the lock is on the directory: no file to leave behind)

changed=0
note() { say "$*"; changed=1; }

# --- the package ------------------------------------------------------------
# What pip installs: the build files, the top-level modules and the packages (not tests/, bench/).
sources=()
for f in setup.py setup.cfg pyproject.toml MANIFEST.in; do
    [ -f "$ROOT/$f" ] && sources+=("$f")
done
for f in "$ROOT"/*.py "$ROOT"/*/__init__.py; do
    f="${f#"$ROOT"/}"
    case "$f" in
        setup.py | tests/* | bench/* | '*'*) ;;
        */__init__.py) sources+=("${f%/__init__.py}") ;;
        *) sources+=("$f") ;;
    esac
done
source_files() { # NUL-separated, sorted, relative to $ROOT
    (cd "$ROOT" && find "${sources[@]}" -type f ! -name '*.py[co]' ! -path '*/__pycache__/*' -print0 |
        LC_ALL=C sort -z)
}
sources_hash="$(source_files | (cd "$ROOT" && xargs -0 sha256sum) | sha256sum | cut -d' ' -f1)"
version="$(sed -n 's/^[[:space:]]*version *= *"\([^"]*\)".*/\1/p' "$ROOT/setup.py" | head -n1)"
commit="$(git -C "$ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo "no git")"
if [ "$commit" != "no git" ] && [ -n "$(git -C "$ROOT" status --porcelain -- "${sources[@]}" 2>/dev/null)" ]; then
    commit="$commit+changes"
fi
label="horizon ${version:-?} ($commit)"
want_stamp="sources $sources_hash
python $want_py
$label"

venv_py="$venv/bin/python"
have_py=""
if [ -x "$venv_py" ]; then
    have_py="$(py_id "$venv_py" || true)"
fi
got_stamp="$(cat "$stamp" 2>/dev/null || true)"

installed=0
upgraded=0
if [ "$have_py" != "$want_py" ] ||
    [ "$(head -n2 <<<"$got_stamp")" != "$(head -n2 <<<"$want_stamp")" ] ||
    ! "$venv_py" -I -c 'import importlib.metadata as m, supervisor; m.version("horizon")' >/dev/null 2>&1; then
    if [ -e "$venv" ] && [ "$have_py" != "$want_py" ]; then
        note "recreating $venv: its interpreter is ${have_py:-broken}, not $want_py"
        rm -rf -- "$venv"
    fi
    if [ ! -x "$venv_py" ]; then
        "$py_path" -I -c 'import ensurepip, venv' >/dev/null 2>&1 ||
            die "$py_path cannot make a venv (no ensurepip): apt-get install python3-venv"
        note "creating $venv with $py_path (Python ${want_py##* })"
        out="$("$py_path" -I -m venv "$venv" 2>&1)" || {
            rm -rf -- "$venv"
            die "$py_path -m venv $venv failed: $(tail -n1 <<<"$out")"
        }
    else
        upgraded=1
    fi
    stage="$(mktemp -d)"
    trap 'rm -rf -- "$stage"' EXIT
    # a copy of just the package: pip builds in its source tree, and the checkout stays untouched
    source_files | (cd "$ROOT" && tar --null -T - -cf -) | tar -C "$stage" -xf -
    note "installing $label into $venv (pip output: $opt/install.log)"
    rm -f -- "$stamp"
    if ! "$venv_py" -I -m pip install --disable-pip-version-check --no-input "$stage" >"$opt/install.log" 2>&1; then
        why="$(grep -E '^ERROR: ' "$opt/install.log" | tail -n1 || true)"
        die "pip could not install horizon into $venv: ${why:-see $opt/install.log} (full output: $opt/install.log)"
    fi
    version="$("$venv_py" -I -c 'import importlib.metadata as m; print(m.version("horizon"))')"
    label="horizon $version ($commit)"
    want_stamp="sources $sources_hash
python $want_py
$label"
    printf '%s\n' "$want_stamp" >"$stamp"
    installed=1
elif [ "$got_stamp" != "$want_stamp" ]; then
    printf '%s\n' "$want_stamp" >"$stamp" # same sources under another commit: the label only
fi

# --- files ------------------------------------------------------------------
# put SRC DEST: install SRC as DEST (0644) unless DEST already holds it; true when DEST changed
put() {
    if [ -f "$2" ] && [ ! -L "$2" ] && cmp -s -- "$1" "$2"; then
        return 1
    fi
    local how="installed"
    [ -e "$2" ] && how="updated"
    # (set -e does not reach into a function called as a condition: every step says so itself)
    mkdir -p -- "$(dirname -- "$2")" || die "cannot create $(dirname -- "$2")"
    install -m 0644 -T -- "$1" "$2.new.$$" || die "cannot write $2.new.$$"
    mv -f -- "$2.new.$$" "$2" || die "cannot replace $2"
    note "$how $2"
}

tmp="$(mktemp)"
trap 'rm -rf -- "${stage:-}" "$tmp"' EXIT

put "$ROOT/README.md" "$opt/README.md" || true
put "$ROOT/conf/task.ini" "$opt/conf/task.ini" || true
put "$ROOT/conf/horizon.ini" "$opt/conf/horizon.ini" || true

# The units: under --root, their paths (not their comments) point under DIR.
unit_changed=0
for src in "$ROOT"/conf/*.service; do
    [ -f "$src" ] || continue
    if [ -n "$root_dir" ]; then
        sed -e "/^[[:space:]]*[#;]/!s|/opt/horizon/|$root_dir/opt/horizon/|g" \
            -e "/^[[:space:]]*[#;]/!s|/etc/horizon/|$root_dir/etc/horizon/|g" "$src" >"$tmp"
    else
        cp -- "$src" "$tmp"
    fi
    if put "$tmp" "$units/$(basename -- "$src")"; then
        unit_changed=1
    fi
done

if [ ! -e "$etc/example.ini" ] && [ ! -L "$etc/example.ini" ]; then
    mkdir -p -- "$etc"
    install -m 0644 -T -- "$ROOT/conf/task.ini" "$etc/example.ini.new.$$"
    mv -n -- "$etc/example.ini.new.$$" "$etc/example.ini"
    rm -f -- "$etc/example.ini.new.$$"
    note "installed the example task $etc/example.ini"
fi

# The host tree's directory: made once, with its horizon.ini, and whole (renamed into place), so that an
# interrupted run leaves no half-made directory. No task file goes in it: each *.ini there runs.
tasks_d="$etc/tasks.d"
if [ ! -e "$tasks_d" ] && [ ! -L "$tasks_d" ]; then
    mkdir -p -- "$etc"
    rm -rf -- "$tasks_d.new.$$"
    mkdir -m 0755 -- "$tasks_d.new.$$" || die "cannot create $tasks_d.new.$$"
    install -m 0644 -T -- "$ROOT/conf/horizon.ini" "$tasks_d.new.$$/horizon.ini" ||
        die "cannot write $tasks_d.new.$$/horizon.ini"
    if mv -T -- "$tasks_d.new.$$" "$tasks_d" 2>/dev/null; then
        note "installed the host tree's directory $tasks_d with its settings, horizon.ini"
    else
        rm -rf -- "$tasks_d.new.$$" # made meanwhile by someone else: theirs
    fi
fi

# --- the horizon command ----------------------------------------------------
link="$bindir/horizon"
if [ -x "$venv/bin/horizon" ]; then
    if [ -L "$link" ] && [ "$(readlink -- "$link")" = "$venv/bin/horizon" ]; then
        :
    elif [ -e "$link" ] && [ ! -L "$link" ]; then
        warn "$link exists and is not a symlink: left alone (the CLI is $venv/bin/horizon)"
    else
        mkdir -p -- "$bindir"
        ln -sfn -- "$venv/bin/horizon" "$link"
        note "linked $link -> $venv/bin/horizon"
    fi
else
    if [ -L "$link" ] && [ "$(readlink -- "$link")" = "$venv/bin/horizon" ]; then
        rm -f -- "$link"
        note "removed $link: the package installed has no horizon command"
    elif [ "$installed" = 1 ]; then
        say "skipped $link: this version of the package has no 'horizon' command (no console script in setup.py)"
    fi
fi

# --- systemd ----------------------------------------------------------------
if [ -z "$root_dir" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    if [ "$unit_changed" = 1 ]; then
        systemctl daemon-reload || die "systemctl daemon-reload failed"
        note "systemctl daemon-reload"
    fi
    if [ "$upgraded" = 1 ]; then
        say "running tasks keep the old code until restarted: systemctl try-restart 'horizon-task@*' horizon-host.service"
    fi
elif [ -z "$root_dir" ] && [ "$unit_changed" = 1 ]; then
    say "systemd does not run this machine (PID 1 is $(cat /proc/1/comm 2>/dev/null || echo unknown)): no daemon-reload"
fi

if [ "$changed" = 0 ]; then
    say "up to date: $label in $venv"
fi
