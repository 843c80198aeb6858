//! The neighbourhood kernels: the gaussian blur (separable, 16-bit fixed point, a ring of
//! horizontally blurred rows) and the unsharp mask built on it, with their hot loops compiled for
//! AVX2 and SSE4.1 as well and chosen at run time (`multiversion`).
//!
//! This file must never allocate per pixel (buffers come from the [`Scratch`]) nor write outside
//! the band it is given.

use multiversion::multiversion;

use super::Scratch;

/// Gaussian weights for σ, radius ⌈3σ⌉, 16-bit fixed point summing to exactly 65536.
pub fn gaussian_kernel(sigma: f32) -> Vec<u32> {
    let sigma = sigma as f64;
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let raw: Vec<f64> = (-radius..=radius)
        .map(|k| (-((k * k) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    let mut weights: Vec<u32> = raw
        .iter()
        .map(|w| (w / total * 65536.0).round() as u32)
        .collect();
    let sum: i64 = weights.iter().map(|&w| w as i64).sum();
    let centre = radius as usize;
    weights[centre] = (weights[centre] as i64 + 65536 - sum) as u32;
    weights
}

/// The horizontal pass of `kernel` over one row (`channels` bytes a pixel, edge pixels
/// repeated), written to `out`.
fn blur_row(
    row: &[u8],
    out: &mut [u8],
    channels: usize,
    kernel: &[u32],
    padded: &mut Vec<u8>,
    acc: &mut Vec<u32>,
    starts: &mut Vec<usize>,
) {
    let row_len = row.len();
    let pad = kernel.len() / 2 * channels;
    padded.resize(row_len + 2 * pad, 0);
    acc.resize(row_len, 0);
    let (left, rest) = padded.split_at_mut(pad);
    let (middle, right) = rest.split_at_mut(row_len);
    middle.copy_from_slice(row);
    for (i, v) in left.iter_mut().enumerate() {
        *v = row[i % channels];
    }
    let last = &row[row_len - channels..];
    for (i, v) in right.iter_mut().enumerate() {
        *v = last[i % channels];
    }
    starts.clear();
    starts.extend((0..kernel.len()).map(|k| k * channels));
    let acc = &mut acc[..row_len];
    weighted_sum(acc, padded, starts, kernel);
    narrow(out, acc);
}

/// `acc[i] = 32768 + Σₖ kernel[k] · base[starts[k] + i]`: tap k reads the row that starts at
/// `starts[k]`. Both blur passes spend their time here. The sums are built [`BLOCK`] values at a
/// time in registers, the taps of a symmetric kernel in pairs (one multiply for two rows), rather
/// than one sweep of `acc` through memory per tap; the integers are the same, so is every byte.
/// Compiled as well for AVX2 and SSE4.1 and chosen at run time: the x86-64 baseline (SSE2) has
/// no 32-bit vector multiply, and this loop runs 2.4x slower without one, so the binary stays
/// portable without giving that up.
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn weighted_sum(acc: &mut [u32], base: &[u8], starts: &[usize], kernel: &[u32]) {
    let taps = kernel.len();
    let symmetric = (0..taps / 2).all(|k| kernel[k] == kernel[taps - 1 - k]);
    let whole = acc.len() / BLOCK * BLOCK;
    for (b, out) in acc[..whole].chunks_exact_mut(BLOCK).enumerate() {
        let at = b * BLOCK;
        let src = |k: usize| -> &[u8; BLOCK] {
            base[starts[k] + at..][..BLOCK]
                .try_into()
                .expect("a block is BLOCK bytes")
        };
        let mut sums = [32768u32; BLOCK];
        if symmetric {
            for (k, &weight) in kernel[..taps / 2].iter().enumerate() {
                let (a, c) = (src(k), src(taps - 1 - k));
                for ((sum, &x), &y) in sums.iter_mut().zip(a).zip(c) {
                    *sum += weight * (x as u32 + y as u32);
                }
            }
            let (centre, weight) = (src(taps / 2), kernel[taps / 2]);
            for (sum, &x) in sums.iter_mut().zip(centre) {
                *sum += weight * x as u32;
            }
        } else {
            for (k, &weight) in kernel.iter().enumerate() {
                for (sum, &x) in sums.iter_mut().zip(src(k)) {
                    *sum += weight * x as u32;
                }
            }
        }
        out.copy_from_slice(&sums);
    }
    // The last, partial block: one sweep per tap.
    let tail = &mut acc[whole..];
    tail.fill(32768);
    for (k, &weight) in kernel.iter().enumerate() {
        let row = &base[starts[k] + whole..][..tail.len()];
        for (a, &v) in tail.iter_mut().zip(row) {
            *a += weight * v as u32;
        }
    }
}

/// Values of [`weighted_sum`] built at once: 64 sums are eight AVX2 registers.
const BLOCK: usize = 64;

/// `out[i] = acc[i] >> 16`: fixed-point sums back to bytes (chosen at run time as above).
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn narrow(out: &mut [u8], acc: &[u32]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = (a >> 16) as u8;
    }
}

/// A separable gaussian over `px` (`height` rows of `row_len` bytes), in place, holding only a
/// ring of 2r + 1 horizontally blurred rows: row y is written once rows up to y + r have been
/// blurred horizontally, and those rows are still original because only rows above y have been
/// written. `finish` turns each output row's fixed-point sums (and the original row) into bytes.
fn separable(
    px: &mut [u8],
    row_len: usize,
    channels: usize,
    kernel: &[u32],
    (above, below): (&[u8], &[u8]),
    scratch: &mut Scratch,
    mut finish: impl FnMut(&mut [u8], &[u32]),
) {
    // Rows are numbered over `above`, `px` and `below` together; the edge rows of that span are
    // repeated outward. Without halo rows that is the image's own edge.
    let height = px.len() / row_len;
    let top = above.len() / row_len;
    let span = top + height + below.len() / row_len;
    let radius = kernel.len() / 2;
    let ring_rows = 2 * radius + 1;
    let mut ring = std::mem::take(&mut scratch.ring);
    ring.resize(ring_rows * row_len, 0);
    let mut column_acc = std::mem::take(&mut scratch.column_acc);
    column_acc.resize(row_len, 0);
    let mut blurred_rows = 0; // rows [0, blurred_rows) of the span are blurred horizontally
    for y in 0..height {
        let needed = (top + y + radius + 1).min(span);
        while blurred_rows < needed {
            let r = blurred_rows;
            let slot = r % ring_rows;
            let source = if r < top {
                &above[r * row_len..(r + 1) * row_len]
            } else if r < top + height {
                &px[(r - top) * row_len..(r - top + 1) * row_len]
            } else {
                &below[(r - top - height) * row_len..(r - top - height + 1) * row_len]
            };
            blur_row(
                source,
                &mut ring[slot * row_len..(slot + 1) * row_len],
                channels,
                kernel,
                &mut scratch.padded,
                &mut scratch.acc,
                &mut scratch.starts,
            );
            blurred_rows += 1;
        }
        let mut starts = std::mem::take(&mut scratch.starts);
        starts.clear();
        starts.extend((0..kernel.len()).map(|k| {
            let sy = (top + y + k).saturating_sub(radius).min(span - 1);
            sy % ring_rows * row_len
        }));
        weighted_sum(&mut column_acc, &ring, &starts, kernel);
        scratch.starts = starts;
        finish(&mut px[y * row_len..(y + 1) * row_len], &column_acc);
    }
    scratch.ring = ring;
    scratch.column_acc = column_acc;
}

pub(super) fn blur(
    px: &mut [u8],
    row_len: usize,
    channels: usize,
    kernel: &[u32],
    halo: (&[u8], &[u8]),
    scratch: &mut Scratch,
) {
    separable(px, row_len, channels, kernel, halo, scratch, narrow);
}

pub(super) fn sharpen(
    px: &mut [u8],
    row_len: usize,
    channels: usize,
    kernel: &[u32],
    amount_256: i32,
    halo: (&[u8], &[u8]),
    scratch: &mut Scratch,
) {
    separable(px, row_len, channels, kernel, halo, scratch, |row, acc| {
        unsharp_row(row, acc, channels, amount_256)
    });
}

/// One row of the unsharp mask: `row` is the original, `acc` its blur in fixed point; alpha (the
/// 2nd of two channels, the 4th of four) is left alone. Chosen at run time as [`weighted_sum`].
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn unsharp_row(row: &mut [u8], acc: &[u32], channels: usize, amount_256: i32) {
    let sharpen = |p: &mut u8, b: u32| {
        let v = *p as i32;
        let d = v - (b >> 16) as i32;
        *p = (v + ((amount_256 * d + 128) >> 8)).clamp(0, 255) as u8;
    };
    if channels == 2 || channels == 4 {
        for (p, b) in row
            .chunks_exact_mut(channels)
            .zip(acc.chunks_exact(channels))
        {
            for ch in 0..channels - 1 {
                sharpen(&mut p[ch], b[ch]);
            }
        }
    } else {
        // Every byte is a colour value: one flat loop, which the compiler vectorises.
        for (p, &b) in row.iter_mut().zip(acc) {
            sharpen(p, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_support::run;
    use ndarray::Array3;

    #[test]
    fn blur_of_constant_image_is_constant() {
        for sigma in ["0.5", "2", "7.5"] {
            let mut img = Array3::from_elem((23, 17, 3), 173u8);
            run(&format!("blur:{sigma}"), &mut img);
            assert!(img.iter().all(|&v| v == 173), "sigma {sigma}");
        }
    }

    #[test]
    fn blur_matches_float_reference_within_one() {
        // An independent 2-D convolution in f64 with clamped borders.
        let (h, w, c) = (19, 23, 3);
        let img = Array3::from_shape_fn((h, w, c), |(y, x, ch)| {
            ((x * 37 + y * 91 + ch * 53) % 256) as u8
        });
        let sigma = 1.7f64;
        let r = (3.0 * sigma).ceil() as i64;
        let g: Vec<f64> = (-r..=r)
            .map(|k| (-(k * k) as f64 / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f64 = g.iter().sum();
        let mut expected = Array3::<f64>::zeros((h, w, c));
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                for ch in 0..c {
                    let mut s = 0.0;
                    for (i, gy) in g.iter().enumerate() {
                        for (j, gx) in g.iter().enumerate() {
                            let sy = (y + i as i64 - r).clamp(0, h as i64 - 1) as usize;
                            let sx = (x + j as i64 - r).clamp(0, w as i64 - 1) as usize;
                            s += gy * gx * img[[sy, sx, ch]] as f64;
                        }
                    }
                    expected[[y as usize, x as usize, ch]] = s / (total * total);
                }
            }
        }
        let mut got = img.clone();
        run("blur:1.7", &mut got);
        for (a, b) in got.iter().zip(expected.iter()) {
            assert!((*a as f64 - b).abs() <= 1.0, "{a} vs {b}");
        }
    }

    /// The blocked, paired sums are the plain per-tap formula exactly, for symmetric and lopsided
    /// kernels, rows shorter than a block, a block long, and with a partial block after whole
    /// ones, sources at any offset.
    #[test]
    fn weighted_sum_is_the_per_tap_sum_exactly() {
        let base: Vec<u8> = (0..4000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let lopsided = vec![9000, 21000, 1, 35535];
        for kernel in [gaussian_kernel(2.0), gaussian_kernel(0.4), lopsided] {
            for len in [1, 5, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 17] {
                let starts: Vec<usize> = (0..kernel.len()).map(|k| k * 131 + k % 3).collect();
                let mut acc = vec![0u32; len];
                weighted_sum(&mut acc, &base, &starts, &kernel);
                for (i, &got) in acc.iter().enumerate() {
                    let want = 32768
                        + kernel
                            .iter()
                            .zip(&starts)
                            .map(|(&w, &s)| w * base[s + i] as u32)
                            .sum::<u32>();
                    assert_eq!(got, want, "kernel {kernel:?}, len {len}, i {i}");
                }
            }
        }
    }

    #[test]
    fn sharpen_keeps_flat_areas_and_raises_edges() {
        let mut img = Array3::from_shape_fn((9, 9, 1), |(_, x, _)| if x < 4 { 100 } else { 200 });
        run("sharpen:1", &mut img);
        assert_eq!(img[[4, 0, 0]], 100);
        assert_eq!(img[[4, 8, 0]], 200);
        assert!(img[[4, 3, 0]] < 100, "dark side of the edge gets darker");
        assert!(img[[4, 4, 0]] > 200, "bright side gets brighter");
    }

    #[test]
    fn kernel_sums_to_one_in_fixed_point() {
        for sigma in [0.3, 1.0, 2.0, 10.0] {
            let k = gaussian_kernel(sigma);
            assert_eq!(k.iter().sum::<u32>(), 65536);
            assert_eq!(k.len(), 2 * (3.0f32 * sigma).ceil().max(1.0) as usize + 1);
        }
    }
}
