#!/usr/bin/env bash
# shmpipe against its peers on the same JPEG folder, same job (grayscale + gaussian blur sigma 2,
# JPEG q90 out), 2 workers, alternating, RUNS runs each; prints every wall time and the medians.
#
#   benches/peers.sh PHOTO_DIR [RUNS]
#
# Needs: a release build (cargo build --release; or SHMPIPE=BINARY to time another one); libvips (apt-get install libvips42) and
# pip install pyvips numpy pillow scipy; the peer scripts in ../shared/reference (or PEERS=DIR).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
photos="$(cd "$1" && pwd)"
runs="${2:-3}"
peers="${PEERS:-$here/../shared/reference}"
bin="${SHMPIPE:-$here/target/release/shmpipe}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# Only the JPEGs: the libvips script takes JPEG files.
mkdir -p "$work/in"
find "$photos" -maxdepth 1 -iname '*.jpg' -exec ln -s {} "$work/in/" \;
mp=$(python3 -c "
import sys, glob
from PIL import Image
print(sum(w*h for w,h in (Image.open(f).size for f in glob.glob('$work/in/*'))) / 1e6)")
echo "folder: $(ls "$work/in" | wc -l) JPEGs, $mp MP"

time_of() { # prints wall seconds of "$@"
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    python3 -c "print(round($t1 - $t0, 3))"
}
declare -A times
for r in $(seq 1 "$runs"); do
    rm -rf "$work"/out_*
    times[shmpipe]+="$(time_of "$bin" run "$work/in" -o "$work/out_shmpipe" --ops grayscale,blur:2 -j 2 --quality 90 --quiet) "
    times[libvips]+="$(time_of python3 "$peers/pyvips_gray_blur.py" -j 2 --min-ampl 0.0003 "$work/out_libvips" "$work"/in/*.jpg) "
    times[python]+="$(time_of python3 "$peers/py_shm_pipeline.py" "$work/in" "$work/out_python" -w 2 --ops grayscale,blur --format jpeg) "
done
printf '%-10s %-28s %8s %8s\n' tool "wall s (each run)" median "MP/s"
for tool in shmpipe libvips python; do
    python3 - "$tool" "$mp" ${times[$tool]} <<'PY'
import statistics, sys
tool, mp, ts = sys.argv[1], float(sys.argv[2]), [float(t) for t in sys.argv[3:]]
m = statistics.median(ts)
print(f"{tool:<10} {' '.join(f'{t:.2f}' for t in ts):<28} {m:8.2f} {mp / m:8.1f}")
PY
done
# Same image? PSNR of shmpipe's outputs against the Python reference's (same sigma).
python3 - "$work" <<'PY'
import glob, math, os, sys
import numpy as np
from PIL import Image
work = sys.argv[1]
psnrs = []
for ref in sorted(glob.glob(f"{work}/out_python/*.jpg")):
    ours = os.path.join(work, "out_shmpipe", os.path.basename(ref))
    a = np.asarray(Image.open(ref).convert("L"), dtype=np.float64)
    b = np.asarray(Image.open(ours).convert("L"), dtype=np.float64)
    mse = np.mean((a - b) ** 2)
    psnrs.append(99.0 if mse == 0 else 10 * math.log10(255 ** 2 / mse))
print(f"PSNR shmpipe vs Python reference: min {min(psnrs):.1f} dB, median {sorted(psnrs)[len(psnrs)//2]:.1f} dB over {len(psnrs)} images")
PY
