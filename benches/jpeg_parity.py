#!/usr/bin/env python3
"""shmpipe's JPEG output against libjpeg-turbo's own `cjpeg` at the same quality: file size and
PSNR against the pixels encoded, per image and in total, gray and RGB. Run by hand, not a test.

    cargo build --release
    python3 benches/jpeg_parity.py ../shared/corpus/photos [--quality 90]

For each chain (`grayscale,blur:2`, the standard job, and `blur:2`, RGB) shmpipe writes the
exact pixels as PNG, then the same job as JPEG (both `--strip`: cjpeg writes no metadata); `cjpeg -quality Q` (with `-sample 1x1` at Q >= 90, 4:4:4 as shmpipe writes colour there)
encodes the PNG's pixels, with the forward DCT shmpipe uses (`-dct float`; `--dct int` for
cjpeg's default). Both JPEGs are decoded with Pillow and compared with the PNG.
Needs cjpeg (Debian: libjpeg-turbo-progs), NumPy and Pillow.
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHMPIPE = os.path.join(ROOT, "target", "release", "shmpipe")


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def shmpipe(src, ops, out, fmt, quality):
    subprocess.run(
        [SHMPIPE, "run", src, "--ops", ops, "-o", out, "--format", fmt,
         "--quality", str(quality), "--strip", "-j", "2", "-q"],
        check=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder")
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--dct", default="float", choices=["float", "int", "fast"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for ops in ("grayscale,blur:2", "blur:2"):
            png, ours, ref = (os.path.join(tmp, f"{ops}-{k}") for k in ("png", "jpeg", "cjpeg"))
            shmpipe(args.folder, ops, png, "png", args.quality)
            shmpipe(args.folder, ops, ours, "jpeg", args.quality)
            os.makedirs(ref)
            sizes, psnrs, worst, identical = [0, 0], [[], []], 0.0, 0
            for name in sorted(os.listdir(png)):
                stem = os.path.splitext(name)[0]
                # Gray outputs stay gray (a gray source under `blur:2`); JPEG drops alpha.
                exact = Image.open(os.path.join(png, name))
                kind = "L" if exact.mode in ("L", "LA", "I;16") else "RGB"
                source = np.asarray(exact.convert(kind))
                pnm = os.path.join(tmp, "in.pnm")
                Image.fromarray(source).save(pnm)
                theirs = os.path.join(ref, stem + ".jpg")
                with open(theirs, "wb") as f:
                    sample = ["-sample", "1x1"] if args.quality >= 90 else []
                    subprocess.run(["cjpeg", "-quality", str(args.quality), *sample,
                                    "-dct", args.dct, pnm],
                                   stdout=f, check=True)
                mine = os.path.join(ours, stem + ".jpg")
                for i, path in enumerate((mine, theirs)):
                    sizes[i] += os.path.getsize(path)
                    psnrs[i].append(psnr(source, np.asarray(Image.open(path).convert(kind))))
                with open(mine, "rb") as a, open(theirs, "rb") as b:
                    identical += a.read() == b.read()
                apart = abs(os.path.getsize(mine) / os.path.getsize(theirs) - 1)
                if apart > 0.01:
                    print(f"  {name}: {os.path.getsize(mine)} against {os.path.getsize(theirs)} bytes")
                worst = max(worst, apart)
            n = len(psnrs[0])
            print(f"{ops} (q{args.quality}, {n} images): "
                  f"bytes shmpipe {sizes[0]} cjpeg {sizes[1]} "
                  f"(ratio {sizes[0] / sizes[1]:.4f}, worst image {worst * 100:.2f}% apart, "
                  f"{identical} byte-identical); "
                  f"median PSNR shmpipe {np.median(psnrs[0]):.3f} dB "
                  f"cjpeg {np.median(psnrs[1]):.3f} dB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
