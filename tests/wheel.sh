#!/usr/bin/env bash
# The wheel as an ML user installs it (issue 23): built by maturin from pyproject.toml, installed
# into a fresh venv (none of the system's packages: no NumPy until pip brings it) with a PATH that
# holds no cargo, then the program on PATH, the package, `shmpipe.load` and the examples.
# Run by ./test.sh after the cargo tests. Needs maturin for python3 (./test.sh installs it with pip).
set -euo pipefail
cd "$(dirname "$0")/.."
here=$(pwd)
work=$(mktemp -d)
name="wheel-$$"
cleanup() {
    "$work/venv/bin/shmpipe" rm "$name" >/dev/null 2>&1 || true
    "$work/venv/bin/shmpipe" rm "$name-train" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "tests/wheel.sh: FAIL: $*" >&2; exit 1; }

# The dev profile: the same package as a release wheel (the same files, metadata and entry
# points), built from the dependencies `cargo test` compiled already, in seconds instead of the
# minutes of a release build.
# The compiled augmentation's library goes into the package (pyproject.toml's `include`), as
# README's wheel commands put it there; it is removed again whatever happens.
cargo build -p shmpipe-augment --quiet || fail "cargo build -p shmpipe-augment"
cp target/debug/libshmpipe_augment.so python/shmpipe/
trap 'rm -f "$here/python/shmpipe/libshmpipe_augment.so"; cleanup' EXIT
python3 -m maturin build --profile dev --quiet --out "$work/dist" >/dev/null 2>"$work/build.log" ||
    { cat "$work/build.log" >&2; fail "maturin build"; }
rm -f python/shmpipe/libshmpipe_augment.so
wheel=$(ls "$work"/dist/shmpipe-*.whl)
python3 -m venv "$work/venv"
# A user's shell: the venv, then the system's folders; no cargo, no ~/.cargo/bin, a fresh HOME.
# The machine's ways to reach the package registry (a proxy, its certificates, an index or a
# local wheel folder) are kept: pip fetches NumPy.
mkdir -p "$work/home"
keep=()
for var in PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CERT PIP_DEFAULT_TIMEOUT \
    SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE HTTP_PROXY HTTPS_PROXY NO_PROXY \
    http_proxy https_proxy no_proxy; do
    [ -n "${!var:-}" ] && keep+=("$var=${!var}")
done
user() {
    env -i "${keep[@]}" HOME="$work/home" PIP_DISABLE_PIP_VERSION_CHECK=1 \
        PATH="$work/venv/bin:/usr/local/bin:/usr/bin:/bin" "$@"
}
user sh -c 'command -v cargo' >/dev/null && fail "cargo is on the test PATH"
user python -c 'import numpy' 2>/dev/null && fail "the fresh venv already has NumPy"
user pip install --quiet "$wheel" || fail "pip install $wheel"

# One version for the program and the package.
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
[ "$(user shmpipe --version)" = "shmpipe $version" ] || fail "shmpipe --version: $(user shmpipe --version)"
[ "$(user python -c 'import shmpipe; print(shmpipe.__version__)')" = "$version" ] ||
    fail "shmpipe.__version__ is not $version"
user python -c 'import importlib.metadata as m; print(m.version("shmpipe"))' | grep -qx "$version" ||
    fail "the wheel's metadata is not version $version"

# The program from PATH runs the main job; the package finds the same program.
user shmpipe run "$here/assets" -o "$work/out" --ops grayscale,blur:2 -j 2 --quiet ||
    fail "shmpipe run assets"
[ "$(find "$work/out" -type f | wc -l)" -ge 10 ] || fail "outputs of shmpipe run"
# The wheel has no fault hooks (only the tests build the worker with them): the variable that
# crashes a test build's worker is ignored.
user env SHMPIPE_TEST_CRASH=rocket.jpg:9 shmpipe run "$here/assets" --json -j 2 >"$work/hooked.json" ||
    fail "a run of the wheel under SHMPIPE_TEST_CRASH"
user python -c 'import json, sys; s = json.load(open(sys.argv[1])); assert s["worker_restarts"] == 0 and s["images_failed"] == 0, s' \
    "$work/hooked.json" || fail "SHMPIPE_TEST_CRASH reached the wheel's worker"
[ "$(user python -c 'import shmpipe; print(shmpipe.program())')" = "$work/venv/bin/shmpipe" ] ||
    fail "shmpipe.program() is not the wheel's program"

# shmpipe.load makes a dataset from Python and attaches it.
user python - "$here/assets" "$name" <<'PY' || fail "shmpipe.load"
import sys
import shmpipe
folder, name = sys.argv[1], sys.argv[2]
ds = shmpipe.load(folder, name=name, resize="64x48", fit="cover")
assert ds.shape[1:] == (48, 64, 3), ds.shape
assert len(ds) >= 10, len(ds)
assert int(ds.array.sum()) > 0
ds.close()
try:
    shmpipe.load(folder + "/no-such-folder", name=name + "-x")
except shmpipe.BlockError as e:
    assert "no-such-folder" in str(e), e
else:
    raise AssertionError("a missing folder loaded")
PY
user python "$here/examples/numpy_view.py" "$name" | grep -q "$name: " || fail "examples/numpy_view.py"

# The training example on a labelled dataset, with the package's own loader path (no torch).
mkdir -p "$work/classes/a" "$work/classes/b"
cp "$here/assets/rocket.jpg" "$here/assets/coffee.png" "$work/classes/a/"
cp "$here/assets/astronaut.png" "$here/assets/seeding.jpg" "$work/classes/b/"
user shmpipe load "$work/classes" --name "$name-train" --labels folder --resize 32x32 --fit cover --quiet ||
    fail "load --labels folder"
user python "$here/examples/train.py" "$name-train" --loader pool --workers 2 --epochs 1 |
    grep -q "epoch 1: 4 images" || fail "examples/train.py"
# The compiled augmentation from the wheel's own library (no checkout, no SHMPIPE_AUGMENT_LIB).
user python "$here/examples/augment.py" "$name-train" --epochs 1 --batch 2 |
    grep -q "epoch 0: 4 images" || fail "examples/augment.py with the wheel's library"
user shmpipe rm "$name" >/dev/null
user shmpipe rm "$name-train" >/dev/null
echo "tests/wheel.sh: ok ($(basename "$wheel"))"
