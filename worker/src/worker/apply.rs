//! A worker of `apply` and `repair`: every claimed image brought to the latest step of the
//! dataset's history in place, then parked on the block's pass word until the next pass opens.

use super::*;

/// `apply` and `repair`: bring every claimed image to the latest step of the dataset's history,
/// in place, then park until the coordinator opens the next pass (a futex on the block's pass
/// word: nothing this worker or any other does, dying included, can keep that wait from ending)
/// or asks the workers to stop.
pub(super) fn run_apply(
    args: &WorkerArgs,
    job: &Job<'_>,
    record: &shmpipe_block::WorkerRecord,
    stop: &AtomicBool,
) -> Result<u64, WorkerError> {
    let block = job.block;
    let header = block.header();
    let mut scratch = Scratch::default();
    let mut decoded = Vec::new();
    let mut done = 0u64;
    let order = claim_order(block);
    // How long a parked worker sleeps before it looks at its parent and the stop flag again; a
    // new pass wakes it at once.
    let park_timeout = std::time::Duration::from_millis(
        test_hook(PARK_TIMEOUT_ENV)
            .and_then(|ms| ms.parse().ok())
            .unwrap_or(1000),
    );
    let delay_after_done = test_hook(DELAY_AFTER_DONE_ENV)
        .and_then(|ms| ms.parse().ok())
        .map(std::time::Duration::from_millis);
    loop {
        let generation = header.pass.load(Ordering::Acquire);
        while !stopping(block, stop) {
            parent_alive(args.parent)?;
            let Some(mut claim) = claim_next(block, args.id, &order) else {
                break;
            };
            record.hold_image(claim.index());
            let pixels = (claim.slot().height * claim.slot().width) as u64;
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                job.bring_up_to_date(&mut claim, &mut scratch, &mut decoded)
            }))
            .unwrap_or_else(|_| Err("panicked while transforming it".into()));
            match outcome {
                Ok(()) => {
                    claim.done();
                    count_done(block, record, pixels);
                    done += 1;
                }
                Err(reason) => {
                    claim.fail(&reason);
                    header.images_failed.fetch_add(1, Ordering::AcqRel);
                    record.images_failed.fetch_add(1, Ordering::AcqRel);
                }
            }
            record.clear_image();
            if let Some(delay) = delay_after_done {
                std::thread::sleep(delay);
            }
        }
        // Nothing left to claim in this pass: park until the next one opens.
        record.parked.store(generation, Ordering::Release);
        loop {
            if stopping(block, stop) {
                record.state.store(2, Ordering::Release);
                return Ok(done);
            }
            parent_alive(args.parent)?;
            if header.pass.load(Ordering::Acquire) != generation {
                break;
            }
            block.wait_for_pass_after(generation, park_timeout);
        }
    }
}

impl Job<'_> {
    /// Brings a claimed image of a kept dataset to the latest step of its history: from the
    /// pixels in its slot when they are at a known step, else from its source file decoded as
    /// the load did, then every later step replayed in order. The image's step count says
    /// "unknown" for as long as its pixels are in flux, so a death at any instant leaves it to be
    /// rebuilt, never taken as done.
    fn bring_up_to_date(
        &self,
        claim: &mut Claim<'_>,
        scratch: &mut Scratch,
        decoded: &mut Vec<u8>,
    ) -> Result<(), String> {
        let history = self.block.history();
        let target = history.len() as u32;
        let index = claim.index();
        let slot = claim.slot();
        let relative = path_from_bytes(self.block.source(index)).to_path_buf();
        let mut steps = claim.steps();
        if steps == target {
            return Ok(());
        }
        let (recorded_size, recorded_mtime) = claim.source_identity();
        let recorded_hash = claim.source_hash();
        claim.set_steps(STEPS_UNKNOWN);
        // A fault here leaves the image as one whose transform was cut short.
        self.test_hooks(index, &relative);
        let (h, w, c) = (slot.height, slot.width, slot.channels);
        if steps == STEPS_UNKNOWN || steps > target {
            let source = self.source(index);
            if let Err(e) = std::fs::metadata(&source) {
                return Err(format!(
                    "cannot rebuild it: its source {} is gone ({e})",
                    source.display()
                ));
            }
            // Size and time first (cheap); then the bytes: a source rewritten with its size and
            // time kept (cp -p, rsync -a, touch -r) must not pass for the one loaded. A hash of 0
            // was never recorded: the load died before it reached this image, so this is its
            // first decode, and records the hash as the load would have.
            let hash = codec::source_hash(&source).ok();
            let changed = codec::source_identity(&source) != (recorded_size, recorded_mtime)
                || (recorded_hash != 0 && hash != Some(recorded_hash));
            if changed {
                return Err(format!(
                    "cannot rebuild it: its source {} changed since the load",
                    source.display()
                ));
            }
            if recorded_hash == 0 {
                let hash = hash.ok_or_else(|| format!("cannot read file {}", source.display()))?;
                claim.set_source_hash(hash);
            }
            // As the load made it, its own op chain included (`run --keep`), byte for byte.
            if self.decode_and_run(claim, scratch, decoded)?.0.layout == Layout::GrayPlane {
                let pixels = claim.pixels().map_err(|e| e.to_string())?;
                let view =
                    ArrayViewMut3::from_shape((h, w, c), pixels).map_err(|e| e.to_string())?;
                ops::expand_gray_plane(view);
            }
            steps = self.load_steps();
        }
        let pixels = claim.pixels().map_err(|e| e.to_string())?;
        for entry in &history[steps as usize..] {
            if let Some(luts) = entry.luts() {
                let colour = if c == 4 { 3 } else { c };
                ops::apply_channel_luts(pixels, c, &luts[..colour]);
            }
            let chain = OpChain::parse(&entry.ops()).map_err(|e| e.to_string())?;
            let view =
                ArrayViewMut3::from_shape((h, w, c), &mut *pixels).map_err(|e| e.to_string())?;
            chain.apply(view, scratch);
        }
        claim.set_steps(target);
        Ok(())
    }
}
