//! A worker process's main loop: attach to the block by name, claim images one at a time, decode
//! each straight into its slot, run the op chain in place, encode, publish the outcome.
//!
//! A worker never prints to the terminal (errors go into the block), never unlinks the block
//! (it only has an [`AttachedBlock`]), and writes only inside slots it has claimed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ndarray::ArrayViewMut3;

use crate::codec::{self, Decoded, EncodeOptions, FORMATS};
use crate::hooks::{test_hook, Faults, DELAY_AFTER_DONE_ENV, FAIL_START_ENV, PARK_TIMEOUT_ENV};
use crate::jpeg::Strictness;
use crate::metadata::{self, Metadata};
use crate::ops::{self, Layout, OpChain, OpError, Ran, Scratch};
use crate::resize;
use shmpipe_block::{
    AttachedBlock, Backing, BlockError, BlockState, Claim, ImageStatus, FLAG_ALLOW_TRUNCATED,
    FLAG_BACKGROUND, FLAG_COPY, FLAG_KEPT, FLAG_LOSSLESS, FLAG_NO_FSYNC, FLAG_RGB_OUTPUT,
    FLAG_STRICT, FLAG_STRIP, STEPS_UNKNOWN,
};

/// How a worker's run can fail before or outside any one image.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Block(#[from] BlockError),
    #[error("worker id {id} is out of range: the block has {count} worker slots")]
    BadId { id: u32, count: usize },
    #[error("op chain stored in the block is invalid: {0}")]
    Ops(#[from] OpError),
    #[error("output format stored in the block is unknown: {0:?}")]
    Format(String),
    #[error("parent process {0} is gone")]
    Orphaned(u32),
}

/// What the coordinator tells a worker on its command line.
#[derive(Clone, Debug)]
pub struct WorkerArgs {
    pub block: String,
    pub backing: Backing,
    pub id: u32,
    /// The coordinator's pid; the worker exits if its parent is not this one.
    pub parent: u32,
    pub max_pixels: u64,
    /// `apply` mode (`apply` and `repair`): bring the images of a kept block to the latest step
    /// of its history, pass after pass, rebuilding from its source any image whose pixels are
    /// not known to be a step of it.
    pub apply: bool,
    /// Cores the whole run may use (its -j, at least 1).
    pub cores: u32,
}

/// Ties this process's life to its coordinator: on Linux the kernel kills us when the parent
/// dies; everywhere, we check that the parent is still the one that started us.
fn bind_to_parent(parent: u32) -> Result<(), WorkerError> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let _ =
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    }
    parent_alive(parent)
}

fn parent_alive(parent: u32) -> Result<(), WorkerError> {
    match rustix::process::getppid() {
        Some(p) if p.as_raw_nonzero().get() as u32 == parent => Ok(()),
        _ => Err(WorkerError::Orphaned(parent)),
    }
}

fn path_from_bytes(bytes: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(bytes))
}

/// Runs one worker to the end of the queue (or until asked to stop). Returns the images done.
pub fn run(args: &WorkerArgs) -> Result<u64, WorkerError> {
    bind_to_parent(args.parent)?;
    // Panics inside a codec become a failed image (caught below); keep them off the terminal.
    std::panic::set_hook(Box::new(|_| {}));
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let _ = signal_hook::flag::register(signal, Arc::clone(&stop));
    }

    let block = AttachedBlock::attach(&args.block, args.backing.clone())?;
    let header = block.header();
    let record = enlist(&block, args.id)?;
    if let Some(after) = test_hook(FAIL_START_ENV).and_then(|n| n.parse::<u64>().ok()) {
        if header.images_done.load(Ordering::Acquire) >= after {
            return Err(WorkerError::Orphaned(args.parent));
        }
    }
    let chain = OpChain::parse(&String::from_utf8_lossy(block.string(header.op_chain)))?;
    let format_name = String::from_utf8_lossy(block.string(header.output_format)).into_owned();
    let output_format = if format_name.is_empty() {
        None
    } else {
        Some(codec::parse_format(&format_name).ok_or(WorkerError::Format(format_name))?)
    };
    let input_root = PathBuf::from(path_from_bytes(block.string(header.input_root)));
    let output_root = block.string(header.output_root);
    let output_root =
        (!output_root.is_empty()).then(|| PathBuf::from(path_from_bytes(output_root)));

    let mut job = Job {
        block: &block,
        chain,
        input_root,
        output_root,
        output_format,
        quality: header.quality.clamp(1, 100) as u8,
        png: codec::PngCompression::from_u32(shmpipe_block::png_level(header.flags)),
        // A rebuild in `apply` or `repair` decodes as the load did.
        max_pixels: if args.apply {
            header.load_max_pixels
        } else {
            args.max_pixels
        },
        faults: Faults::from_env(),
        fit: resize::Fit::from_u32(header.resize_fit),
        rgb_output: header.flags & FLAG_RGB_OUTPUT != 0,
        kept: header.flags & FLAG_KEPT != 0,
        durable: header.flags & FLAG_NO_FSYNC == 0,
        strip: header.flags & FLAG_STRIP != 0,
        lossless: header.flags & FLAG_LOSSLESS != 0,
        background: (header.flags & FLAG_BACKGROUND != 0).then(|| {
            let [r, g, b, _] = header.background;
            [r, g, b]
        }),
        strictness: if header.flags & FLAG_ALLOW_TRUNCATED != 0 {
            Strictness::Lenient
        } else {
            Strictness::Strict
        },
        cores: args.cores.max(1),
        machine_cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    job.chain.limit_pixels(job.max_pixels);
    if args.apply {
        return apply::run_apply(args, &job, record, &stop);
    }
    let mut scratch = Scratch::default();
    // Cores left by workers that found nothing more to claim go to the bands of the image in
    // hand, counted again before each step of its chain.
    let thread_budget = || job.threads_for_bands();
    scratch.set_thread_budget(&thread_budget);
    // Full-size decode buffer for `--resize` (reused across images).
    let mut decoded = Vec::new();
    // Copy mode (the naive approach, for comparison): every worker decodes the whole dataset
    // into its own memory first, then transforms its share.
    let mut private = (header.flags & FLAG_COPY != 0).then(|| job.decode_everything(&mut decoded));
    let mut done = 0u64;
    let order = claim_order(&block);
    loop {
        let strict_stop =
            header.flags & FLAG_STRICT != 0 && header.images_failed.load(Ordering::Acquire) > 0;
        if strict_stop || stopping(&block, &stop) {
            break;
        }
        parent_alive(args.parent)?;
        let Some(claim) = claim_next(&block, args.id, &order) else {
            break;
        };
        record.hold_image(claim.index());
        // The source's pixels, as the summary counts them: under --resize the slot is smaller.
        let pixels = claim.source_pixels();
        match job.process(claim, &mut scratch, &mut decoded, private.as_deref_mut()) {
            true => {
                count_done(&block, record, pixels);
                done += 1;
            }
            false => {
                header.images_failed.fetch_add(1, Ordering::AcqRel);
                record.images_failed.fetch_add(1, Ordering::AcqRel);
            }
        }
        record.clear_image();
    }
    record.state.store(2, Ordering::Release);
    Ok(done)
}

/// Copy mode: one image's pixels in a worker's private copy, and its decode warning.
type PrivateImage = (Vec<u8>, Option<String>);

struct Job<'a> {
    block: &'a AttachedBlock,
    chain: OpChain,
    input_root: PathBuf,
    output_root: Option<PathBuf>,
    output_format: Option<image::ImageFormat>,
    quality: u8,
    png: codec::PngCompression,
    max_pixels: u64,
    /// The fault tests' hooks (`SHMPIPE_TEST_*`; none outside test builds).
    faults: Faults,
    fit: Option<resize::Fit>,
    rgb_output: bool,
    /// The block outlives the run (`run --keep`): its slots must end in `(H, W, C)`.
    kept: bool,
    /// Outputs are flushed to disk before their rename ([`shmpipe_block::FLAG_NO_FSYNC`]).
    durable: bool,
    /// Outputs carry no metadata of their sources ([`FLAG_STRIP`]).
    strip: bool,
    /// WebP outputs are lossless whatever their input ([`FLAG_LOSSLESS`]).
    lossless: bool,
    /// Images with alpha are flattened onto this colour ([`FLAG_BACKGROUND`]).
    background: Option<[u8; 3]>,
    /// What a damaged JPEG gets ([`FLAG_ALLOW_TRUNCATED`]).
    strictness: Strictness,
    /// [`WorkerArgs::cores`].
    cores: u32,
    /// Cores this process may run on (read once: it can mean reading cgroup files).
    machine_cores: usize,
}

impl Job<'_> {
    /// The crash, SIGSTOP and stall hooks of the fault tests, at image `index`.
    fn test_hooks(&self, index: usize, relative: &Path) {
        let crashes = self.block.images()[index].crashes.load(Ordering::Acquire);
        self.faults.fire(relative, crashes);
    }

    /// Decodes image `index` from its source file into `pixels` (resizing when asked). Gives the
    /// warning of a damaged JPEG kept under `--allow-truncated`.
    fn decode(
        &self,
        index: usize,
        pixels: &mut [u8],
        decoded: &mut Vec<u8>,
    ) -> Result<Option<String>, String> {
        let source = self.source(index);
        let slot = self.block.slot(index);
        let shape = (slot.height as u32, slot.width as u32, slot.channels as u32);
        let (max, strictness) = (self.max_pixels, self.strictness);
        match self.fit {
            Some(fit) => {
                resize::decode_resized(&source, pixels, shape, fit, max, strictness, decoded)
            }
            None => codec::decode_into(&source, pixels, shape, max, strictness),
        }
        .map(|outcome| match outcome {
            Decoded::Clean => None,
            Decoded::Damaged(damage) => Some(damage.to_string()),
        })
        .map_err(|e| e.to_string())
    }

    fn source(&self, index: usize) -> PathBuf {
        self.input_root
            .join(path_from_bytes(self.block.source(index)))
    }

    /// When the chain starts with grayscale and the claimed image is a colour JPEG: its luma
    /// plane, decoded straight into the slot's first H x W bytes (the only bytes reserved), or
    /// under `--resize` decoded (shrunk on load when it can be) and resized into them, for the
    /// rest of the chain to run on. None when the general path must decode it.
    fn luma_plane<'c>(
        &self,
        claim: &'c mut Claim<'_>,
        stored: &mut Vec<u8>,
    ) -> Result<Option<&'c mut [u8]>, String> {
        let slot = claim.slot();
        let (h, w) = (slot.height, slot.width);
        if slot.channels != 3
            || !self.chain.starts_with_grayscale()
            || FORMATS[slot.format as usize % FORMATS.len()] != image::ImageFormat::Jpeg
        {
            return Ok(None);
        }
        let source = self.source(claim.index());
        let plane = claim.reserve(h * w).map_err(|e| e.to_string())?;
        let (h, w) = (h as u32, w as u32);
        let decoded = match self.fit {
            Some(fit) => resize::decode_jpeg_luma_resized(
                &source,
                plane,
                (h, w),
                fit,
                self.max_pixels,
                stored,
            ),
            None => codec::decode_jpeg_luma(&source, plane, h, w, stored),
        };
        Ok(decoded.then_some(plane))
    }

    /// Threads this worker may run an image's op chain on: the run's cores (`-j`) less the
    /// workers still busy with images (a finished worker found nothing left to claim), at least
    /// its own, at most one per core of the machine.
    fn threads_for_bands(&self) -> usize {
        let busy = self
            .block
            .workers()
            .iter()
            .filter(|r| r.state.load(Ordering::Acquire) != 2)
            .count()
            .max(1);
        (self.cores as usize)
            .saturating_sub(busy - 1)
            .clamp(1, self.machine_cores)
    }

    /// Whether finishing an image left in `layout` touches the whole slot (see `write_out`):
    /// a full layout, or a gray plane that `--rgb` or a kept block expands to `(H, W, 3)`.
    fn needs_whole_slot(&self, layout: Layout) -> bool {
        layout == Layout::Full || self.rgb_output || self.kept
    }

    /// After the chain: encodes the result (a gray plane as one channel unless `--rgb`), and
    /// leaves a kept block's slot in `(H, W, C)`. `pixels` is the whole slot when
    /// [`Job::needs_whole_slot`] says so, else at least the gray plane. Gives the image's
    /// warning when a JPEG output dropped its transparency, or metadata of its source was left
    /// out (over its limit or malformed).
    fn write_out(
        &self,
        pixels: &mut [u8],
        mut layout: Layout,
        (h, w, c): (usize, usize, usize),
        index: usize,
        input_format: image::ImageFormat,
    ) -> Result<Option<String>, String> {
        debug_assert!(!self.needs_whole_slot(layout) || pixels.len() == h * w * c);
        let relative = path_from_bytes(self.block.source(index));
        let mut warning = None;
        let expand = |pixels: &mut [u8]| {
            let view = ArrayViewMut3::from_shape((h, w, c), pixels).expect("the whole slot");
            ops::expand_gray_plane(view);
        };
        if layout == Layout::GrayPlane && self.rgb_output {
            expand(pixels);
            layout = Layout::Full;
        }
        if let Some(root) = &self.output_root {
            let format = self.output_format.unwrap_or(input_format);
            let named = self.block.output_name(index);
            let target = codec::planned_output(root, relative, named, format);
            let source = self.input_root.join(relative);
            let opts = EncodeOptions {
                format,
                quality: self.quality,
                png: self.png,
                durable: self.durable,
                // A lossy input stays lossy; a lossless WebP stays lossless.
                webp_lossless: format == image::ImageFormat::WebP
                    && (self.lossless
                        || input_format == image::ImageFormat::WebP
                            && metadata::is_lossless_webp(&source)),
                background: self.background,
            };
            // A gray result is encoded as one channel: smaller, and a third of the work.
            let (data, channels) = match layout {
                Layout::GrayPlane => (&pixels[..h * w], 1),
                Layout::Full => (&pixels[..], c),
            };
            let shape = (h as u32, w as u32, channels as u32);
            // Read from the source now: the block holds pixels only.
            let metadata = if self.strip || !codec::holds_metadata(format) {
                Metadata::default()
            } else {
                metadata::read(&source, input_format)
            };
            if !metadata.dropped.is_empty() {
                let dropped = metadata.dropped.join("; ");
                warning = Some(format!("{}: {dropped}", metadata::LEFT_OUT));
            }
            if codec::drops_transparency(data, channels, &opts) {
                // Said first: what the picture looks like matters more than its metadata. Short:
                // a record holds 104 bytes of message; the summary says what to do.
                let dropped = codec::TRANSPARENCY_DROPPED;
                warning = Some(match warning {
                    Some(left_out) => format!("{dropped}; {left_out}"),
                    None => dropped.to_string(),
                });
            }
            codec::encode_with(data, shape, opts, &metadata, &target, self.block.name())
                .map_err(|e| e.to_string())?;
        }
        if layout == Layout::GrayPlane && self.kept {
            // A kept block ends holding (H, W, C) for whoever reads it next. Any other block is
            // unlinked when the run ends and its pixels are never read again.
            expand(pixels);
        }
        Ok(warning)
    }

    /// Copy mode: this worker's private copy of the whole dataset, as the naive approach keeps
    /// one per worker. An image that cannot be decoded keeps its reason.
    fn decode_everything(&self, decoded: &mut Vec<u8>) -> Vec<Result<PrivateImage, String>> {
        (0..self.block.image_count())
            .map(|i| {
                let mut pixels = vec![0u8; self.block.slot(i).len()];
                std::panic::catch_unwind(AssertUnwindSafe(|| self.decode(i, &mut pixels, decoded)))
                    .unwrap_or_else(|_| Err("decoder panicked".into()))
                    .map(|warning| (pixels, warning))
            })
            .collect()
    }

    /// Steps of a kept dataset's history that the load itself made: its `run --keep` op chain
    /// is step 1 when it has one.
    fn load_steps(&self) -> u32 {
        u32::from(!self.chain.ops().is_empty())
    }

    /// Decodes a claimed image from its source into its slot and runs the run's op chain on it:
    /// a colour JPEG under a chain that starts gray as its luma plane alone (the slot's first
    /// H x W bytes), anything else in full. Returns where the result lies, and the warning of a
    /// damaged JPEG kept under `--allow-truncated`.
    fn decode_and_run(
        &self,
        claim: &mut Claim<'_>,
        scratch: &mut Scratch,
        decoded: &mut Vec<u8>,
    ) -> Result<(Ran, Option<String>), String> {
        let slot = claim.slot();
        let (h, w, c) = (slot.height, slot.width, slot.channels);
        // `decoded` holds a rotated JPEG's upright plane here, or the plane before --resize.
        Ok(match self.luma_plane(claim, decoded)? {
            Some(plane) => {
                let view =
                    ArrayViewMut3::from_shape((h, w, 1), plane).map_err(|e| e.to_string())?;
                (self.chain.run_after_grayscale(view, scratch)?, None)
            }
            None => {
                let index = claim.index();
                let pixels = claim.pixels().map_err(|e| e.to_string())?;
                let warning = self.decode(index, pixels, decoded)?;
                let view = ArrayViewMut3::from_shape((h, w, c), &mut pixels[..])
                    .map_err(|e| e.to_string())?;
                (self.chain.run(view, scratch)?, warning)
            }
        })
    }

    /// Decodes, transforms and encodes one claimed image; publishes its outcome. True on success.
    fn process(
        &self,
        mut claim: Claim<'_>,
        scratch: &mut Scratch,
        decoded: &mut Vec<u8>,
        private: Option<&mut [Result<PrivateImage, String>]>,
    ) -> bool {
        let index = claim.index();
        let slot = claim.slot();
        let relative = path_from_bytes(self.block.source(index)).to_path_buf();
        self.test_hooks(index, &relative);
        let (h, w, c) = (slot.height, slot.width, slot.channels);
        let input_format = FORMATS[slot.format as usize % FORMATS.len()];
        // The warning of a damaged JPEG kept under `--allow-truncated`, or of metadata left out.
        let mut warning = None;
        // A damaged JPEG's warning comes first; metadata left out is said when there is none.
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
            if let Some(copies) = private {
                let (pixels, kept) = copies[index].as_mut().map_err(|reason| reason.clone())?;
                warning = kept.clone();
                let view = ArrayViewMut3::from_shape((h, w, c), &mut pixels[..])
                    .map_err(|e| e.to_string())?;
                let ran = self.chain.run(view, scratch)?;
                let pixels = match ran.frame {
                    Some(k) => scratch.frame(k),
                    None => pixels,
                };
                let shape = (ran.height, ran.width, c);
                let left_out = self.write_out(pixels, ran.layout, shape, index, input_format)?;
                warning = warning.take().or(left_out);
                return Ok(());
            }
            if self.kept {
                // What a rebuild will hold the source to (see `bring_up_to_date`).
                let hash = codec::source_hash(&self.source(index))
                    .map_err(|e| format!("cannot read file: {e}"))?;
                claim.set_source_hash(hash);
            }
            let (ran, damage) = self.decode_and_run(&mut claim, scratch, decoded)?;
            warning = damage;
            // The gray plane is the slot's first H x W bytes, so either way `pixels` starts
            // with the result. Only what will be written is reserved. A crop, rotate or resize
            // left the result in a frame of its own.
            let pixels = match ran.frame {
                Some(k) => scratch.frame(k),
                None if self.needs_whole_slot(ran.layout) => {
                    claim.pixels().map_err(|e| e.to_string())?
                }
                None => claim.reserve(h * w).map_err(|e| e.to_string())?,
            };
            let shape = (ran.height, ran.width, c);
            let left_out = self.write_out(pixels, ran.layout, shape, index, input_format)?;
            warning = warning.take().or(left_out);
            Ok(())
        }));
        match outcome {
            Ok(Ok(())) => {
                if self.kept {
                    // The load's steps of the dataset's history (the run's chain, if any).
                    claim.set_steps(self.load_steps());
                }
                match &warning {
                    Some(warning) => claim.done_with_warning(warning),
                    None => claim.done(),
                }
                true
            }
            Ok(Err(reason)) => {
                claim.fail(&reason);
                false
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                claim.fail(&format!("decoder panicked: {what}"));
                false
            }
        }
    }
}

/// Whether this worker was asked to stop: by a signal, or by the coordinator through the block.
fn stopping(block: &AttachedBlock, stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed)
        || block.header().state.load(Ordering::Acquire) == BlockState::Stopping as u32
}

/// Counts one finished image in the block's and this worker's progress counters.
fn count_done(block: &AttachedBlock, record: &shmpipe_block::WorkerRecord, pixels: u64) {
    let header = block.header();
    header.images_done.fetch_add(1, Ordering::AcqRel);
    header.pixels_done.fetch_add(pixels, Ordering::AcqRel);
    record.images_done.fetch_add(1, Ordering::AcqRel);
    record.pixels_done.fetch_add(pixels, Ordering::AcqRel);
}

/// This worker's record in the block, marked as running under this pid.
fn enlist(block: &AttachedBlock, id: u32) -> Result<&shmpipe_block::WorkerRecord, WorkerError> {
    let record = block.workers().get(id as usize).ok_or(WorkerError::BadId {
        id,
        count: block.workers().len(),
    })?;
    record.clear_image();
    // Not parked after any pass yet: a predecessor's value must not vouch for this process.
    record.parked.store(0, Ordering::Release);
    record.pid.store(std::process::id(), Ordering::Release);
    record.state.store(1, Ordering::Release);
    record
        .ready_ns
        .store(shmpipe_block::now_ns(), Ordering::Release);
    Ok(record)
}

/// Claims the next pending image: the shared counter first, then a scan for images put back
/// after a worker died.
fn claim_next<'a>(block: &'a AttachedBlock, id: u32, order: &[u32]) -> Option<Claim<'a>> {
    let count = block.image_count();
    loop {
        let next = block.header().next_claim.fetch_add(1, Ordering::AcqRel) as usize;
        if next < count {
            if let Some(claim) = block.try_claim(order[next] as usize, id) {
                return Some(claim);
            }
            continue;
        }
        return order.iter().map(|&i| i as usize).find_map(|i| {
            (block.images()[i].status() == Some(ImageStatus::Pending))
                .then(|| block.try_claim(i, id))
                .flatten()
        });
    }
}

/// The order images are claimed in: largest first, ties by index. Every worker computes the same
/// order from the slot table, so the shared counter indexes it. Taking the big images first keeps
/// one large image from being the last thing a single worker does while the others sit idle.
fn claim_order(block: &AttachedBlock) -> Vec<u32> {
    let mut order: Vec<u32> = (0..block.image_count() as u32).collect();
    order.sort_by_key(|&i| {
        let slot = block.slot(i as usize);
        (std::cmp::Reverse(slot.height * slot.width), i)
    });
    order
}

mod apply;
