//! `shmpipe gen`: a deterministic synthetic image folder (gradients, noise and edges, so codecs
//! and kernels do real work), for benchmarks and tests. Same seed, same files, byte for byte.
//!
//! Each image is encoded into a temporary file beside its target (named as `save`'s are, after
//! this process) and renamed into place, so a killed `gen` never leaves half an image under an
//! image's name; the next `gen` into the folder (or `shmpipe clean DIR`) removes what a dead one
//! left. SIGINT, SIGTERM and SIGHUP stop it between images.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};
use image::{Rgb, RgbImage};
use shmpipe_block::Backing;
use shmpipe_worker::codec;

use crate::engine::supervise::Signals;

/// A stop signal ended `gen` between images: those written are whole, the rest not started.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {signal}: {written} of {count} images written, the rest not started")]
pub struct Stopped {
    /// The exit code that names the signal (130, 143, 129).
    pub code: i32,
    pub signal: &'static str,
    pub written: u64,
    pub count: u64,
}

/// xorshift64*: small, fast, reproducible.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Image `index` of the set made with `seed`.
pub fn synth(width: u32, height: u32, seed: u64, index: u64) -> RgbImage {
    let mut rng = Rng::new(seed ^ index.wrapping_mul(0x1000_0000_01b3));
    let tint = [
        rng.below(96) as u32,
        rng.below(96) as u32,
        rng.below(96) as u32,
    ];
    let mut img = RgbImage::from_fn(width, height, |x, y| {
        let gx = x * 160 / width.max(1);
        let gy = y * 160 / height.max(1);
        Rgb([
            (gx + tint[0]) as u8,
            (gy + tint[1]) as u8,
            ((gx + gy) / 2 + tint[2]) as u8,
        ])
    });
    // Hard-edged rectangles and discs: edges for the blur and the codecs.
    for _ in 0..12 {
        let (x0, y0) = (
            rng.below(width as u64) as u32,
            rng.below(height as u64) as u32,
        );
        let (w, h) = (
            1 + rng.below(width as u64 / 3) as u32,
            1 + rng.below(height as u64 / 3) as u32,
        );
        let colour = Rgb([
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        ]);
        let disc = rng.below(2) == 0;
        for y in y0..(y0 + h).min(height) {
            for x in x0..(x0 + w).min(width) {
                let (dx, dy) = (
                    x as i64 - (x0 + w / 2) as i64,
                    y as i64 - (y0 + h / 2) as i64,
                );
                let inside = !disc
                    || dx * dx * (h as i64 * h as i64) + dy * dy * (w as i64 * w as i64)
                        <= (w as i64 * h as i64 / 2).pow(2);
                if inside {
                    img.put_pixel(x, y, colour);
                }
            }
        }
    }
    // Sensor-like noise, +-8.
    for v in img.iter_mut() {
        let n = (rng.next() >> 60) as i16 - 8;
        *v = (*v as i16 + n).clamp(0, 255) as u8;
    }
    img
}

/// Writes `count` images of `width x height` to `dir` as `img000000.FMT`, on every core.
pub fn generate(
    dir: &Path,
    count: u64,
    (width, height): (u32, u32),
    format: &str,
    seed: u64,
    quality: u8,
) -> anyhow::Result<()> {
    let ext = match format {
        "png" => "png",
        "jpeg" | "jpg" => "jpg",
        other => bail!("invalid --format {other:?}: gen writes png or jpeg"),
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (path, e) in crate::engine::sweep::remove_left_temporaries(dir, &Backing::Shm) {
        eprintln!("shmpipe: warning: cannot remove left temporary {path}: {e}");
    }
    let signals = Signals::register()?;
    let owner = crate::engine::dataset::temporaries_owner();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let progress = indicatif::ProgressBar::new(count).with_style(
        indicatif::ProgressStyle::with_template(
            "generating [{elapsed_precise}] {wide_bar} {pos}/{len} images  ETA {eta}",
        )
        .expect("static template"),
    );
    // Counted apart from the bar, whose finish sets its position to the end.
    let written_count = std::sync::atomic::AtomicU64::new(0);
    let (progress, signals, owner, written_count) =
        (&progress, &signals, owner.as_str(), &written_count);
    let written = std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> anyhow::Result<()> {
                    for index in (t..count).step_by(threads as usize) {
                        if signals.received().is_some() {
                            break;
                        }
                        let img = synth(width, height, seed, index);
                        let path = dir.join(format!("img{index:06}.{ext}"));
                        write_through_rename(&path, owner, |file| {
                            if ext == "jpg" {
                                image::codecs::jpeg::JpegEncoder::new_with_quality(file, quality)
                                    .encode_image(&img)
                            } else {
                                img.write_with_encoder(
                                    image::codecs::png::PngEncoder::new_with_quality(
                                        file,
                                        image::codecs::png::CompressionType::Fast,
                                        image::codecs::png::FilterType::Adaptive,
                                    ),
                                )
                            }
                        })?;
                        written_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        progress.inc(1);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        Ok(())
    });
    progress.finish_and_clear();
    written?;
    match signals.received() {
        Some((code, signal)) => Err(Stopped {
            code,
            signal,
            written: written_count.load(std::sync::atomic::Ordering::Relaxed),
            count,
        }
        .into()),
        None => Ok(()),
    }
}

/// Encodes into a temporary file beside `path` and renames it into place: `path` is a whole
/// image or absent. The temporary is removed on an error (and by the next `gen` if we are
/// killed).
fn write_through_rename(
    path: &Path,
    owner: &str,
    encode: impl FnOnce(&mut std::io::BufWriter<&std::fs::File>) -> image::ImageResult<()>,
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = codec::held_temporary(|| {
        tempfile::Builder::new()
            .prefix(&codec::temp_prefix(path, owner))
            .permissions(codec::ordinary_mode())
            .tempfile_in(dir)
    })
    .with_context(|| format!("cannot write {}", path.display()))?;
    let mut file = std::io::BufWriter::new(tmp.as_file());
    encode(&mut file).with_context(|| format!("cannot encode {}", path.display()))?;
    file.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    drop(file);
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_pixels_other_seed_other_pixels() {
        assert_eq!(synth(64, 48, 7, 3), synth(64, 48, 7, 3));
        assert_ne!(synth(64, 48, 7, 3), synth(64, 48, 8, 3));
        assert_ne!(synth(64, 48, 7, 3), synth(64, 48, 7, 4));
    }
}
