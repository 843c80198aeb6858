//! Dataset statistics for the dataset-wide ops: per-channel histograms, means and deviations,
//! the `normalize` and `equalize:dataset` tables built from them, and applying those tables.
//!
//! This file must never decide when statistics are gathered or applied (the passes of `apply`
//! do); it only computes and maps.

/// Per colour channel of one image: the histogram of its values (256 counts), from which the
/// dataset's sums, means, deviations and equalisation tables all follow.
pub fn add_histograms(px: &[u8], channels: usize, hist: &mut [[u64; 256]; 4]) {
    let colour = if channels == 4 { 3 } else { channels };
    for p in px.chunks_exact(channels) {
        for c in 0..colour {
            hist[c][p[c] as usize] += 1;
        }
    }
}

/// Each colour channel's mean and population standard deviation, from its histogram.
pub fn mean_and_deviation(hist: &[u64; 256]) -> (f64, f64) {
    let n: u64 = hist.iter().sum();
    let n = n.max(1) as f64;
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(v, &k)| v as f64 * k as f64)
        .sum();
    let sum_sq: f64 = hist
        .iter()
        .enumerate()
        .map(|(v, &k)| (v * v) as f64 * k as f64)
        .sum();
    let mean = sum / n;
    (mean, (sum_sq / n - mean * mean).max(0.0).sqrt())
}

/// Equalisation tables from the dataset's histograms, one per channel (see [`DatasetOp::Equalize`]).
///
/// [`DatasetOp::Equalize`]: super::DatasetOp::Equalize
pub fn equalize_luts(hist: &[u64], colour: usize) -> Vec<[u8; 256]> {
    (0..colour)
        .map(|c| {
            let h = &hist[c * 256..(c + 1) * 256];
            let total: u64 = h.iter().sum();
            let cdf_min = h.iter().copied().find(|&n| n > 0).unwrap_or(0);
            let mut lut = [0u8; 256];
            let mut cdf = 0u64;
            for (v, out) in lut.iter_mut().enumerate() {
                cdf += h[v];
                *out = if total == cdf_min {
                    v as u8
                } else {
                    (255.0 * cdf.saturating_sub(cdf_min) as f64 / (total - cdf_min) as f64).round()
                        as u8
                };
            }
            lut
        })
        .collect()
}

/// The `normalize` table of one channel (see [`DatasetOp::Normalize`]).
///
/// [`DatasetOp::Normalize`]: super::DatasetOp::Normalize
pub fn normalize_lut(mean: f64, std: f64) -> [u8; 256] {
    let mut lut = [128u8; 256];
    if std > 0.0 {
        for (v, out) in lut.iter_mut().enumerate() {
            *out = (128.0 + 48.0 * (v as f64 - mean) / std)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    lut
}

/// Applies `luts[c]` to channel c of every pixel (channels beyond the tables are left alone).
pub fn apply_channel_luts(px: &mut [u8], channels: usize, luts: &[[u8; 256]]) {
    for p in px.chunks_exact_mut(channels) {
        for (v, lut) in p.iter_mut().zip(luts) {
            *v = lut[*v as usize];
        }
    }
}
