#!/usr/bin/env python3
"""How shmpipe scales: throughput with -j 1 and -j 2 on a folder, and run time against the amount
of data (25%, 50%, 100% of the folder, every 4th / 2nd / every file in sorted order, -j 2).
Same job as benches/peers.sh: grayscale + gaussian blur sigma 2, JPEG q90 out. Medians of RUNS.

    cargo build --release && benches/scaling.py PHOTO_DIR [RUNS]
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
binary = os.path.join(here, "target", "release", "shmpipe")
folder = os.path.abspath(sys.argv[1])
runs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".jpeg", ".png")))


def run(subset, workers):
    """Median wall seconds and the megapixels of a run over `subset` with `workers`."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in")
        os.mkdir(src)
        for f in subset:
            os.symlink(os.path.join(folder, f), os.path.join(src, f))
        walls, mp = [], 0.0
        for _ in range(runs):
            out = os.path.join(tmp, "out")
            subprocess.run(["rm", "-rf", out], check=True)
            done = subprocess.run(
                [binary, "run", src, "-o", out, "--ops", "grayscale,blur:2", "--format", "jpeg",
                 "--quality", "90", "-j", str(workers), "--json"],
                check=True, capture_output=True, text=True)
            summary = json.loads(done.stdout)
            walls.append(summary["wall_s"])
            mp = summary["megapixels"]
        return statistics.median(walls), mp


print(f"folder: {folder}, {len(files)} images, medians of {runs} runs")
print(f"{'part':>6} {'-j':>3} {'images':>6} {'MP':>7} {'wall s':>7} {'MP/s':>7} {'ms/MP':>6}")
results = {}
for part, step, workers in [("100%", 1, 1), ("100%", 1, 2), ("25%", 4, 2), ("50%", 2, 2)]:
    subset = files[::step]
    wall, mp = run(subset, workers)
    results[(part, workers)] = (wall, mp)
    print(f"{part:>6} {workers:>3} {len(subset):>6} {mp:7.1f} {wall:7.3f} {mp / wall:7.1f} "
          f"{1000 * wall / mp:6.2f}")
(w1, mp), (w2, _) = results[("100%", 1)], results[("100%", 2)]
print(f"-j 2 over -j 1 on the whole folder: {w1 / w2:.2f}x")
points = [(results[(p, 2)][1], results[(p, 2)][0]) for p in ("25%", "50%", "100%")]
n = len(points)
mx = sum(x for x, _ in points) / n
my = sum(y for _, y in points) / n
slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
intercept = my - slope * mx
worst = max(abs(y - (intercept + slope * x)) / y for x, y in points)
print(f"-j 2 time against data: {1000 * slope:.2f} ms per MP + {1000 * intercept:.0f} ms fixed; "
      f"largest deviation from the line {100 * worst:.1f}%")
