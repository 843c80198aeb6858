#!/usr/bin/env python3
"""How long `shmpipe.attach` takes on a dataset: median of 21 attach-and-close, and the first view.

    shmpipe gen /tmp/k100 --count 100000 --size 16x16 --format png
    shmpipe load /tmp/k100 --name k100
    python3 benches/attach.py k100
"""
import statistics
import sys
import time

import shmpipe

name = sys.argv[1]
times = []
for _ in range(21):
    start = time.perf_counter()
    ds = shmpipe.attach(name)
    count = len(ds)
    ds.close()
    times.append((time.perf_counter() - start) * 1000)
print(f"{count} images: attach and close, median {statistics.median(times):.1f} ms "
      f"(min {min(times):.1f}, max {max(times):.1f}, 21 runs)")
start = time.perf_counter()
ds = shmpipe.attach(name)
last = ds.images[-1]
print(f"attach and the last image's view: {(time.perf_counter() - start) * 1000:.1f} ms, {last.shape}")
