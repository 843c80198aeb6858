//! A job's outputs: where each image's goes, the temporary a killed worker left beside it, the
//! folders made durable once every output is renamed into place, and flags that touch no output.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use image::ImageFormat;
use shmpipe_block::OwnedBlock;
use shmpipe_worker::codec::{self, FORMATS};

use crate::engine::plan::Plan;
use crate::engine::settings::Job;
use crate::engine::summary::Failure;

/// Each output's data was flushed before its rename; this makes the renames durable. Gives the
/// folders that could not be synced, with the reason.
pub fn sync_outputs(job: &Job, written: &[PathBuf]) -> Vec<Failure> {
    let (Some(root), false) = (&job.output, job.no_fsync) else {
        return Vec::new();
    };
    codec::sync_folders(root, written.iter().map(PathBuf::as_path))
        .into_iter()
        .map(|(folder, e)| Failure {
            path: folder.display().to_string(),
            reason: e.to_string(),
        })
        .collect()
}

/// Says once, on stderr, when a flag given has no effect on any output of this run: `--quality`
/// with no JPEG or lossy WebP among the outputs, `--png-compression` with no PNG, `--lossless`
/// with no WebP, `--background` with no image that has alpha.
pub fn warn_unused_settings(job: &Job, planned: &Plan) {
    let outputs = |wanted: ImageFormat| {
        planned.images.iter().any(|i| {
            job.format
                .unwrap_or(FORMATS[i.format as usize % FORMATS.len()])
                == wanted
        })
    };
    let lossy_webp = outputs(ImageFormat::WebP) && !job.lossless;
    if job.quality.is_some() && !outputs(ImageFormat::Jpeg) && !lossy_webp {
        eprintln!("shmpipe: warning: --quality has no effect: no output of this run is a JPEG or a lossy WebP (it sets their quality)");
    }
    if job.lossless && !outputs(ImageFormat::WebP) {
        eprintln!("shmpipe: warning: --lossless has no effect: no output of this run is a WebP");
    }
    // Each image keeps its own channels only in a run's block; a kept one holds RGB unless told.
    let own_channels = job.channels == shmpipe_block::CHANNELS_PER_IMAGE && job.keep.is_none();
    let alpha = job.channels == 4
        || own_channels && planned.images.iter().any(|i| matches!(i.channels, 2 | 4));
    if job.background.is_some() && !alpha {
        eprintln!("shmpipe: warning: --background has no effect: no image of this run has alpha to flatten (a kept dataset holds RGB unless --channels 4)");
    }
    if job.png_compression.is_some() && !outputs(ImageFormat::Png) {
        eprintln!(
            "shmpipe: warning: --png-compression has no effect: no output of this run is a PNG"
        );
    }
}

/// Where image `index`'s output goes, when the job writes outputs.
pub fn output_target(block: &OwnedBlock, index: usize, job: &Job) -> Option<PathBuf> {
    let root = job.output.as_ref()?;
    let slot = block.slot(index);
    let input_format = FORMATS[slot.format as usize % FORMATS.len()];
    let relative = Path::new(std::ffi::OsStr::from_bytes(block.source(index)));
    let output_format = job.format.unwrap_or(input_format);
    let named = block.output_name(index);
    Some(codec::planned_output(root, relative, named, output_format))
}

/// Removes the temporary file a killed worker may have left beside an image's output.
pub fn remove_partial_output(block: &OwnedBlock, index: usize, job: &Job) {
    let Some(target) = output_target(block, index, job) else {
        return;
    };
    let Some(dir) = target.parent() else { return };
    // Only this job's: another run writing the same image into the same folder keeps its own.
    let prefix = codec::temp_prefix(&target, block.name());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
                // The dead worker's lock went with it; a run of the same block name in another
                // --backing folder holds its own.
                let _ = codec::remove_temporary_unless_held(&entry.path());
            }
        }
    }
}
