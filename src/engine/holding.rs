//! What the block will hold, before it exists: the planned job ([`Planned`]), its settings and
//! images as the block's plan, and for a plain run the window (one slot per worker, reused image
//! after image) sized to the free shared memory. `run` and `--dry-run` both plan it here, so a
//! dry run's figures are the run's.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use shmpipe_block::{self as block, Backing, BlockPlan};
use shmpipe_worker::codec::PngCompression;

use crate::engine::plan::Plan;
use crate::engine::settings::{Job, Labels, DEFAULT_QUALITY};
use crate::engine::summary::{Failure, Timings};

/// The plan of a job, before its block: the images and their slots, what was refused, and the
/// counts the summary reports.
pub(crate) struct Planned {
    pub(crate) plan: Plan,
    /// The pixels each image's source decodes to, before any --resize: the work.
    pub(crate) source_pixels: Vec<u64>,
    pub(crate) classes: Option<Vec<Vec<u8>>>,
    pub(crate) failures: Vec<Failure>,
    pub(crate) images_planned: u64,
    pub(crate) shard_files: Option<u64>,
    pub(crate) timings: Timings,
    pub(crate) signal: Option<(i32, &'static str)>,
}

/// The block's plan: the planned images (moved out of `planned`) and every setting a worker
/// reads from the block.
pub(crate) fn block_plan(job: &Job, planned: &mut Planned, workers: u32) -> BlockPlan {
    BlockPlan {
        worker_count: workers,
        // A kept dataset holds one layout (one (N, H, W, C) array): RGB unless told.
        channels: match (job.channels, &job.keep) {
            (block::CHANNELS_PER_IMAGE, Some(_)) => 3,
            (channels, _) => channels,
        },
        images: std::mem::take(&mut planned.plan.images),
        input_root: job.input.as_os_str().as_bytes().to_vec(),
        output_root: job
            .output
            .as_ref()
            .map(|o| o.as_os_str().as_bytes().to_vec())
            .unwrap_or_default(),
        op_chain: job
            .chain
            .ops()
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(","),
        output_format: job
            .format
            .map(|f| f.extensions_str()[0].to_string())
            .unwrap_or_default(),
        quality: job.quality.unwrap_or(DEFAULT_QUALITY) as u32,
        png_compression: job.png_compression.unwrap_or(PngCompression::Fast) as u32,
        strict: job.strict,
        copy_mode: job.copy_mode,
        rgb_output: job.rgb,
        kept: job.keep.is_some(),
        no_fsync: job.no_fsync,
        max_pixels: job.max_pixels,
        allow_truncated: job.allow_truncated,
        strip: job.strip,
        lossless: job.lossless,
        background: job.background,
        resize_fit: job.geometry.map_or(0, |g| g.fit as u32),
        classes: planned.classes.take(),
        label_kind: match job.labels {
            Labels::File(_) => block::LABELS_FILE,
            _ => block::LABELS_FOLDER,
        },
        window_slot: None,
    }
}

/// What the block holds: a plain run a window of the folder (the images too large for a
/// worker's share of the free memory are refused), a kept dataset all of it. Gives the count of
/// images refused.
pub(crate) fn hold(
    job: &Job,
    block_plan: &mut BlockPlan,
    planned: &mut Planned,
    backing: &Backing,
) -> usize {
    if job.keep.is_some() || job.copy_mode {
        return 0;
    }
    let free = block::free_bytes(&backing.dir()).unwrap_or(u64::MAX);
    let before = planned.failures.len();
    plan_window(block_plan, planned, free, &job.input);
    planned.failures.len() - before
}

/// Sizes a plain run's window ([`block::FLAG_WINDOW`]): one slot per worker, reused image after
/// image, each as large as the largest planned image, unless the `free` bytes of the block's
/// filesystem hold less. Then each slot is one worker's share of them, and every image larger
/// fails alone, with its reason, before the block exists: a few files declaring huge sizes
/// never refuse the whole run.
fn plan_window(plan: &mut BlockPlan, planned: &mut Planned, free: u64, input: &Path) {
    let workers = u64::from(plan.worker_count.max(1));
    let tables = plan.tables_size().unwrap_or(u64::MAX);
    let share = free.saturating_sub(tables) / workers / block::ALIGN * block::ALIGN;
    let slot = plan
        .images
        .iter()
        .filter_map(|img| plan.image_bytes(img))
        .filter(|&b| b <= share)
        .max()
        .unwrap_or(0);
    let images = std::mem::take(&mut plan.images);
    let mut pixels = Vec::with_capacity(images.len());
    for (img, source) in images.into_iter().zip(planned.source_pixels.drain(..)) {
        match plan.image_bytes(&img) {
            Some(b) if b <= slot => {
                plan.images.push(img);
                pixels.push(source);
            }
            b => planned.failures.push(Failure {
                path: input
                    .join(Path::new(std::ffi::OsStr::from_bytes(&img.source)))
                    .display()
                    .to_string(),
                reason: format!(
                    "its {:.1} MiB of pixels do not fit one worker's share ({:.1} MiB) of the free shared memory: use fewer workers (-j), give it more room, or --backing DIR",
                    b.unwrap_or(u64::MAX) as f64 / (1 << 20) as f64,
                    share as f64 / (1 << 20) as f64
                ),
            }),
        }
    }
    planned.source_pixels = pixels;
    plan.window_slot = Some(slot);
}
