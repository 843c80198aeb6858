#!/usr/bin/env bash
# Thumbnails: shmpipe against libvips (pyvips `thumbnail`, 2 processes) and ImageMagick
# (`mogrify -thumbnail`, 2 processes), into the same box, JPEG q90 out, on the same folder.
# The tools take turns (the first of each round rotates), RUNS rounds; prints every wall time,
# the medians, the median of the per-round ratios, then each tool's quality: the PSNR of its
# thumbnails against a reference made with Pillow (full decode, EXIF turned, each band resized
# as float with LANCZOS), and how far its sizes are from libvips'.
#
#   benches/thumbnails.sh FOLDER [RUNS] [BOX]        # BOX defaults to 256x256
#
# Needs: a release build (cargo build --release); libvips and ImageMagick (apt-get install
# libvips42 imagemagick); pip install pyvips pillow numpy. The machine may be shared: quote
# medians, never one run.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
input="$(cd "$1" && pwd)"
runs="${2:-5}"
box="${3:-256x256}"
bw="${box%x*}"
bh="${box#*x}"
bin="$here/target/release/shmpipe"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The images of the folder (top level), as the peers take a list of files.
mkdir -p "$work/in"
find "$input" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) \
    -exec ln -s {} "$work/in/" \;
files=("$work"/in/*)
count=${#files[@]}
half=$(((count + 1) / 2))
mp=$(python3 -c "
import glob
from PIL import Image
print(round(sum(w*h for w,h in (Image.open(f).size for f in glob.glob('$work/in/*'))) / 1e6, 1))")
echo "folder: $count images, $mp MP; box $box, JPEG q90, 2 processes each"

cat >"$work/vips.py" <<'PY'
import os, sys
from multiprocessing import Pool
import pyvips
out, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def thumb(path):
    stem = os.path.splitext(os.path.basename(path))[0]
    pyvips.Image.thumbnail(path, w, height=h).write_to_file(f"{out}/{stem}.jpg[Q=90]")
if __name__ == "__main__":
    os.makedirs(out, exist_ok=True)
    with Pool(2) as pool:
        pool.map(thumb, sys.argv[4:], chunksize=1)
PY

run_tool() { # run_tool TOOL OUT
    case "$1" in
    shmpipe)
        "$bin" run "$work/in" -o "$2" --resize "$box" --format jpeg --quality 90 -j 2 --quiet ;;
    libvips)
        python3 "$work/vips.py" "$2" "$bw" "$bh" "${files[@]}" ;;
    imagemagick)
        mkdir -p "$2"
        MAGICK_THREAD_LIMIT=1 mogrify -path "$2" -format jpg -quality 90 -thumbnail "$box" \
            "${files[@]:0:half}" &
        MAGICK_THREAD_LIMIT=1 mogrify -path "$2" -format jpg -quality 90 -thumbnail "$box" \
            "${files[@]:half}"
        wait ;;
    esac
}

time_of() { # prints wall seconds of "$@"
    local t0 t1
    t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
    python3 -c "print(round($t1 - $t0, 3))"
}
tools=(shmpipe libvips imagemagick)
declare -A times
for r in $(seq 0 $((runs - 1))); do
    for k in 0 1 2; do
        tool=${tools[$(((r + k) % 3))]}
        rm -rf "$work/out_$tool"
        times[$tool]+="$(time_of run_tool "$tool" "$work/out_$tool") "
    done
done
python3 - "$mp" "$count" "${times[shmpipe]}" "${times[libvips]}" "${times[imagemagick]}" <<'PY'
import statistics, sys
mp, count = float(sys.argv[1]), int(sys.argv[2])
runs = {t: [float(x) for x in s.split()] for t, s in zip(["shmpipe", "libvips", "imagemagick"], sys.argv[3:])}
print(f"{'tool':<12} {'wall s (each run)':<40} {'median':>7} {'img/s':>7} {'MP/s':>7}")
for tool, ts in runs.items():
    m = statistics.median(ts)
    print(f"{tool:<12} {' '.join(f'{t:.2f}' for t in ts):<40} {m:7.2f} {count / m:7.1f} {mp / m:7.1f}")
for peer in ["libvips", "imagemagick"]:
    ratio = statistics.median(p / s for s, p in zip(runs["shmpipe"], runs[peer]))
    print(f"shmpipe images/s over {peer}: {ratio:.2f}x (median of the per-round ratios)")
PY
python3 - "$work" <<'PY'
import glob, math, os, statistics, sys
import numpy as np
from PIL import Image, ImageOps
work = sys.argv[1]
refs = {}
def reference(src, size):
    key = (src, size)
    if key not in refs:
        im = ImageOps.exif_transpose(Image.open(src)).convert("RGB")
        bands = [b.convert("F").resize(size, Image.LANCZOS) for b in im.split()]
        refs[key] = np.stack([np.asarray(b) for b in bands], axis=-1)
    return refs[key]
rows, off_by = [], {}
for tool in ["shmpipe", "libvips", "imagemagick"]:
    psnrs = []
    for src in sorted(glob.glob(f"{work}/in/*")):
        stem = os.path.splitext(os.path.basename(src))[0]
        ours = Image.open(f"{work}/out_{tool}/{stem}.jpg").convert("RGB")
        vips = Image.open(f"{work}/out_libvips/{stem}.jpg").size
        off_by.setdefault(tool, []).append(max(abs(a - b) for a, b in zip(ours.size, vips)))
        ref = np.clip(reference(src, ours.size), 0, 255)
        mse = np.mean((np.asarray(ours, dtype=np.float64) - ref) ** 2)
        psnrs.append(99.0 if mse == 0 else 10 * math.log10(255 ** 2 / mse))
    rows.append((tool, statistics.median(psnrs), min(psnrs)))
print("PSNR against Pillow LANCZOS (float) of the full decode, each at the tool's own size:")
for tool, med, low in rows:
    print(f"  {tool:<12} median {med:5.2f} dB, min {low:5.2f} dB; size vs libvips: max {max(off_by[tool])} px off")
PY
