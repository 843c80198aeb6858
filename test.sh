#!/usr/bin/env bash
# The test command: installs what the tests need, then runs every test of the workspace and the
# scale-out checks of tests/scale-out/.
# Arguments go to `cargo test` (`./test.sh --test integration run::`).
#
# Each need is one `need` line: a name, a check, and how to install it. A need that is missing
# and cannot be installed stops here with its name; no test is left to skip for want of it.
set -euo pipefail
cd "$(dirname "$0")"

# Runs a command as root: directly when we are root, else through sudo when there is one.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "test.sh: need root (or sudo) for: $*" >&2
        return 1
    fi
}

apt_install() {
    command -v apt-get >/dev/null || { echo "test.sh: no apt-get to install $*" >&2; return 1; }
    as_root apt-get update -qq && as_root apt-get install -y -qq "$@" >/dev/null
}

# need NAME CHECK INSTALL: runs CHECK; if it fails, runs INSTALL and CHECK again.
need() {
    local name=$1 check=$2 install=$3
    if bash -c "$check" >/dev/null 2>&1; then
        return 0
    fi
    echo "test.sh: installing $name ($install)" >&2
    if ! (eval "$install") || ! bash -c "$check" >/dev/null 2>&1; then
        echo "test.sh: error: the tests need $name, which is missing and could not be installed" \
            "(tried: $install)" >&2
        exit 1
    fi
}

# The JPEG verdict tests (tests/integration/damaged.rs) hold every decode path to libjpeg-turbo's own djpeg,
# and make their corpus with its cjpeg. (The build itself needs only cargo and a C compiler.)
need "djpeg and cjpeg" "djpeg -version && cjpeg -version" "apt_install libjpeg-turbo-progs"
# The Python interop tests (tests/integration/python.rs) attach to blocks with real NumPy.
need python3 "python3 --version" "apt_install python3 python3-pip"
need "NumPy for python3" "python3 -c 'import numpy'" \
    "python3 -m pip install --quiet numpy || python3 -m pip install --quiet --break-system-packages numpy || apt_install python3-numpy"
# tests/integration/cli.rs runs README's install commands in a fresh HOME, then `man -w shmpipe`.
need "man (man-db)" "command -v man" "apt_install man-db"
# tests/integration/durable.rs watches the binary's fdatasync/fsync/rename calls under strace.
need strace "strace -V" "apt_install strace"
# tests/integration/small_shm.rs and tests/integration/disk_full.rs mount a small tmpfs in a private mount namespace:
# root and unshare, unless SHMPIPE_SKIP_NAMESPACE_TESTS=1 says to skip those two on purpose.
if [ -z "${SHMPIPE_SKIP_NAMESPACE_TESTS:-}" ]; then
    need unshare "unshare --version" "apt_install util-linux"
    if [ "$(id -u)" -ne 0 ]; then
        echo "test.sh: error: tests/integration/small_shm.rs and tests/integration/disk_full.rs need root (unshare -m);" \
            "run as root, or set SHMPIPE_SKIP_NAMESPACE_TESTS=1 to skip those two" >&2
        exit 1
    fi
fi

# tests/scale-out/docs.py parses the Kubernetes manifest of docs/scale-out.md.
need "PyYAML for python3" "python3 -c 'import yaml'" \
    "python3 -m pip install --quiet pyyaml || python3 -m pip install --quiet --break-system-packages pyyaml || apt_install python3-yaml"

# tests/wheel.sh builds the wheel (the program and the package together) with maturin.
need maturin "python3 -m maturin --version" \
    "python3 -m pip install --quiet maturin || python3 -m pip install --quiet --break-system-packages maturin"

# tests/integration/torch.rs runs the package with torch (tensors, pinning, a DataLoader, torchrun).
# PyPI's torch carries CUDA: about 3.5 GB to fetch and 5.4 GB installed (2.6 minutes on a fresh
# 2-core machine), so it goes into a venv of its own under target/, fetched while the workspace
# builds, and kept for the next run. SHMPIPE_TORCH_PYTHON names another interpreter with torch. If
# torch cannot be had (no network, a full disk), those tests check nothing and this script says so
# at its end, with the reason.
torch_venv=$PWD/target/torch-venv
torch_log=$PWD/target/torch-venv.log
torch_pid=
if [ -z "${SHMPIPE_TORCH_PYTHON:-}" ]; then
    export SHMPIPE_TORCH_PYTHON=$torch_venv/bin/python
    if ! "$SHMPIPE_TORCH_PYTHON" -c 'import torch, torchvision' >/dev/null 2>&1; then
        mkdir -p target
        echo "test.sh: installing torch and torchvision into $torch_venv, in the background" >&2
        (rm -rf "$torch_venv" && python3 -m venv "$torch_venv" &&
            "$torch_venv/bin/pip" install --quiet --no-cache-dir torch torchvision) >"$torch_log" 2>&1 &
        torch_pid=$!
    fi
fi
torch_ready() {
    [ -n "$torch_pid" ] || return 0
    cargo test --workspace --no-run --quiet
    wait "$torch_pid" || true
    torch_pid=
    if ! "$SHMPIPE_TORCH_PYTHON" -c 'import torch, torchvision' >/dev/null 2>&1; then
        torch_missing="torch could not be installed ($(tail -n 3 "$torch_log" | tr '\n' ' '))"
    fi
}
torch_missing=

# The Python package, installed as the README says (pip install ./python), into python3. Its
# tests also run under every other pyenv Python 3.11+ found here (their resource trackers differ),
# all named in SHMPIPE_PYTHONS. The tests import the package from this checkout: another
# interpreter needs only the package's dependency, NumPy, installed with the package when missing.
python3 -m pip install --quiet ./python 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages ./python \
    || { echo "test.sh: error: pip install ./python failed for python3" >&2; exit 1; }
SHMPIPE_PYTHONS=${SHMPIPE_PYTHONS:-python3}
# One interpreter is tested once, whatever its names (python3 may be pyenv's 3.11 itself).
real_python() { "$1" -c 'import os, sys; print(os.path.realpath(sys.executable))' 2>/dev/null; }
seen=" "
for py in $SHMPIPE_PYTHONS; do seen="$seen$(real_python "$py") "; done
for py in "$HOME"/.pyenv/versions/3.1[1-9].*/bin/python; do
    [ -x "$py" ] || continue
    case "$seen" in *" $(real_python "$py") "*) continue ;; esac
    if "$py" -c 'import numpy' 2>/dev/null || "$py" -m pip install --quiet ./python; then
        seen="$seen$(real_python "$py") "
        SHMPIPE_PYTHONS="$SHMPIPE_PYTHONS $py"
    else
        echo "test.sh: note: not testing under $py: no NumPy, and pip install ./python failed there" >&2
    fi
done
export SHMPIPE_PYTHONS

# Most tests wait on processes they started: four at a time keep two cores busy.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
# With arguments, only what they select (`./test.sh --test integration run::`).
torch_ready
[ $# -gt 0 ] && exec cargo test --workspace "$@"
cargo test --workspace
# docs/scale-out.md against what runs, with the debug binary just built: its Kubernetes manifest,
# and its Slurm script under a real single-node Slurm (root; it installs Slurm if missing, and
# fails if Slurm cannot run here, unless SHMPIPE_SKIP_SLURM_TEST=1 skips it on purpose).
python3 tests/scale-out/docs.py
if [ -z "${SHMPIPE_SKIP_SLURM_TEST:-}" ]; then
    tests/scale-out/slurm.sh
else
    echo "test.sh: tests/scale-out/slurm.sh skipped (SHMPIPE_SKIP_SLURM_TEST=1)" >&2
fi
# The wheel, built and installed as a user installs it: a fresh venv, no cargo on PATH. Last:
# its build (without the test hooks) replaces target/debug/shmpipe, which the scale-out checks
# above run with their hooks.
tests/wheel.sh
if [ -n "$torch_missing" ]; then
    echo "test.sh: WARNING: tests/integration/torch.rs checked nothing: $torch_missing" >&2
fi
