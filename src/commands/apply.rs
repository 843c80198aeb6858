//! `shmpipe apply NAME --ops LIST` and `shmpipe repair NAME`: change a kept dataset in place with
//! N worker processes, and finish or rebuild whatever an interrupted job left behind.
//!
//! The coordinator holds the block's lock exclusively for the whole job, so a second writer, a
//! `save` or an `export` refuses rather than racing it. Every apply is recorded as steps of the
//! dataset's history before any pixel changes (see `HistoryEntry`); each pass brings every image
//! to the latest step. With a dataset-wide op (`normalize`, `equalize:dataset`), the first pass
//! runs the ops before it; once every worker has parked, the coordinator reads the pixels, turns
//! their histograms into per-channel tables, records them as the next step and opens the second
//! pass (a futex on the block's pass word: the doorbell no death can wedge).
//!
//! The dataset's state says `applying` for as long as images may differ in their step. An image
//! whose transform was cut short (its worker died) is rebuilt from its source file, decoded as
//! the load did with every step replayed, exactly as `run` redoes a crashed image. If the
//! coordinator itself is killed or stopped, the state stays `applying` and every reader refuses
//! the dataset until `repair` has finished the job.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use shmpipe_block::{
    AttachedBlock, DatasetState, HistoryEntry, ImageStatus, Writer, HISTORY_CAPACITY,
    HISTORY_EQUALIZE, HISTORY_FLOAT_STATS, HISTORY_HAS_LUTS, HISTORY_NORMALIZE,
    HISTORY_NORMALIZE_FLOAT,
};
use shmpipe_worker::ops::{self, DatasetOp, OpChain};

use crate::cli::{ApplyCli, PassCli, RepairCli};
use crate::engine::dataset::not_ready;
use crate::engine::progress::Display;
use crate::engine::supervise::{self, Launch, Pool, Rules, Signals, STOP_GRACE};
use crate::exit;

pub fn apply(args: ApplyCli) -> i32 {
    apply_inner(args).unwrap_or_else(|e| {
        eprintln!("shmpipe: error: {e:#}");
        exit::USAGE
    })
}

pub fn repair(args: RepairCli) -> i32 {
    repair_inner(args).unwrap_or_else(|e| {
        eprintln!("shmpipe: error: {e:#}");
        exit::USAGE
    })
}

/// Whether every image is done at the history's latest step or failed with its reason.
fn all_at_latest_step(block: &AttachedBlock) -> bool {
    let target = block.history().len() as u32;
    block.images().iter().all(|r| match r.status() {
        Some(ImageStatus::Done) => r.steps.load(Ordering::Acquire) == target,
        Some(ImageStatus::Failed) => true,
        _ => false,
    })
}

/// The canonical text of an op chain, as a history step records it.
fn chain_text(chain: &OpChain) -> String {
    chain
        .ops()
        .iter()
        .map(|o| o.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn apply_inner(args: ApplyCli) -> anyhow::Result<i32> {
    let stages = ops::parse_apply(&args.ops).map_err(|e| anyhow!("invalid --ops: {e}"))?;
    let block = crate::engine::dataset::attach(&args.name, args.pass.backing.clone())?;
    let mut writer = block.lock_exclusive()?;
    let name = writer.name().to_string();
    if !writer.is_kept() {
        bail!("{}", not_ready(&name, Some(DatasetState::None)));
    }
    let state = writer.dataset_state();
    if state != Some(DatasetState::Ready) {
        bail!("{}", not_ready(&name, state));
    }
    if writer.image_count() == 0 {
        println!("{name} holds no images");
        return Ok(exit::OK);
    }
    let then = match stages.dataset {
        None => 0,
        Some(DatasetOp::Normalize) => HISTORY_NORMALIZE,
        Some(DatasetOp::NormalizeFloat) => HISTORY_NORMALIZE_FLOAT,
        Some(DatasetOp::Equalize) => HISTORY_EQUALIZE,
    };
    let entry = HistoryEntry::new(
        &chain_text(&stages.before),
        then,
        &chain_text(&stages.after),
    )
    .ok_or_else(|| anyhow!("--ops {:?} is too long to record", args.ops))?;
    let steps_needed = 1 + usize::from(then != 0);
    if writer.history().len() + steps_needed > HISTORY_CAPACITY {
        bail!(
            "{name} has had {} steps applied, as many as its history holds: save or export it and load the result again",
            writer.history().len()
        );
    }
    // From here until the job ends the images may differ in their step: say so first.
    writer.set_dataset_state(DatasetState::Applying);
    writer
        .append_history(&entry)
        .ok_or_else(|| anyhow!("{name}: its history is full"))?;
    let job = Job {
        writer: &mut writer,
        pass: args.pass,
    };
    job.drive(&format!("applied {:?} to", args.ops))
}

fn repair_inner(args: RepairCli) -> anyhow::Result<i32> {
    let block = crate::engine::dataset::attach(&args.name, args.pass.backing.clone())?;
    let mut writer = block.lock_exclusive()?;
    let name = writer.name().to_string();
    if !writer.is_kept() {
        bail!("{}", not_ready(&name, Some(DatasetState::None)));
    }
    if writer.dataset_state() == Some(DatasetState::PythonWriting) {
        bail!("{}", not_ready(&name, writer.dataset_state()));
    }
    let follow_up_due = writer.history().last().is_some_and(|e| e.then != 0);
    if writer.dataset_state() == Some(DatasetState::Ready)
        && all_at_latest_step(&writer)
        && !follow_up_due
    {
        println!("{name} is ready: nothing to repair");
        return Ok(exit::OK);
    }
    writer.set_dataset_state(DatasetState::Repairing);
    let job = Job {
        writer: &mut writer,
        pass: args.pass,
    };
    job.drive("repaired")
}

struct Job<'a, 'b> {
    writer: &'a mut Writer<'b>,
    /// The workers, `--image-timeout` (seconds, 0 for none), `--backing` and `--quiet`.
    pass: PassCli,
}

impl Job<'_, '_> {
    /// Runs passes until every image is at the latest step of the history (appending the step
    /// of a dataset-wide op once its statistics are known), then marks the dataset ready.
    fn drive(self, verb: &str) -> anyhow::Result<i32> {
        let writer = self.writer;
        let name = writer.name().to_string();
        let failed_before = failed_images(writer);
        let signals = Signals::register()?;
        let started = Instant::now();
        let (mut pool, display, workers) = start(writer, &self.pass)?;
        let rules = Rules {
            image_timeout: (self.pass.image_timeout > 0)
                .then(|| Duration::from_secs(self.pass.image_timeout)),
            strict: false,
        };
        let mut tally = Tally::default();
        loop {
            // SAFETY: before the first pass no worker exists (the pool starts them in
            // `supervise`); after one, `supervise` returned without a signal, so every live
            // worker has parked at the pass that ended (`pass_settled`) or ended and was reaped.
            #[allow(unsafe_code)]
            let generation = unsafe { writer.begin_pass() };
            tally.passes += 1;
            let settled = |pool: &Pool| pass_settled(writer, pool, generation);
            let outcome = supervise::supervise(
                writer,
                &mut pool,
                &display,
                &signals,
                &rules,
                &settled,
                &|_| {},
            )?;
            tally.retried += outcome.retried;
            if let Some((code, signal)) = outcome.signal {
                display.finish();
                eprintln!(
                    "shmpipe: stopped by {signal}; {}",
                    not_ready(&name, writer.dataset_state())
                );
                return Ok(code);
            }
            let history = writer.history();
            let Some(last) = history.last().filter(|e| e.then != 0) else {
                break;
            };
            // Every live worker has parked after this pass and the dead ones are reaped: nobody
            // writes a slot until the next pass opens.
            // SAFETY: `supervise` returned without a signal, so either every worker ended and
            // was reaped, or `pass_settled` saw every live worker parked at `generation` with no
            // image pending or claimed; parked workers claim nothing before `begin_pass`.
            #[allow(unsafe_code)]
            let (step, stats) = unsafe { statistics_step(writer, last, workers) }?;
            tally.stats = stats;
            writer
                .append_history(&step)
                .ok_or_else(|| anyhow!("{name}: its history is full"))?;
        }
        writer.request_stop(0);
        pool.stop(STOP_GRACE);
        display.update(writer);
        display.finish();
        drop(signals);
        if !all_at_latest_step(writer) {
            bail!(
                "{name}: some images did not reach the latest step; {}",
                not_ready(&name, writer.dataset_state())
            );
        }
        writer.set_dataset_state(DatasetState::Ready);
        let failed = failed_images(writer);
        if !self.pass.quiet {
            report(writer, verb, &tally, started, &failed, &failed_before);
        }
        Ok(if failed.iter().all(|i| failed_before.contains(i)) {
            exit::OK
        } else {
            exit::SOME_FAILED
        })
    }
}

/// What the passes of one job came to, for its report.
#[derive(Default)]
struct Tally {
    passes: u32,
    /// Images rebuilt from their sources after their worker died.
    retried: u64,
    /// Per colour channel, the mean and deviation of the last dataset-wide step.
    stats: Vec<(f64, f64)>,
}

/// The job's worker pool (not yet started: `supervise` starts it), its display, and how many
/// workers it runs. Marks the job's start in the header, for a `watch` of it.
fn start(writer: &Writer<'_>, pass: &PassCli) -> anyhow::Result<(Pool, Display, u32)> {
    let workers = pass
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
        .min(writer.workers().len() as u32)
        .max(1);
    let launch = Launch {
        exe: std::env::current_exe().context("cannot find this program's path to start workers")?,
        block: writer.name().to_string(),
        backing: pass.backing.clone(),
        max_pixels: writer.header().load_max_pixels,
        apply: true,
        cores: workers,
    };
    let pool = Pool::new(launch, workers, Arc::new(Mutex::new(Vec::new())));
    // This job's start, for its display and a `watch` of it: one clock.
    let started_wall = std::time::SystemTime::now();
    writer
        .header()
        .run_started_unix_ns
        .store(shmpipe_block::unix_ns(started_wall), Ordering::Release);
    let display = Display::new(
        writer.image_count() as u64,
        workers as usize,
        pass.quiet,
        started_wall,
    );
    Ok((pool, display, workers))
}

/// The step a dataset-wide op (`last`, whose `then` names it) adds once a pass has brought every
/// image to the steps before it: the per-channel statistics of the pixels, read on `threads`
/// threads, and the tables of `normalize` or `equalize:dataset` (float statistics for
/// `normalize:float`). Gives the step and the statistics.
///
/// # Safety
///
/// As [`histograms`]: no worker may be writing any slot.
#[allow(unsafe_code)]
unsafe fn statistics_step(
    writer: &Writer<'_>,
    last: &HistoryEntry,
    threads: u32,
) -> anyhow::Result<(HistoryEntry, Vec<(f64, f64)>)> {
    // SAFETY: this function's precondition.
    let hist = unsafe { histograms(writer, threads as usize) };
    let colour = (writer.header().channels as usize).min(3);
    let mut step = HistoryEntry::new(&last.after(), 0, "")
        .ok_or_else(|| anyhow!("the recorded op list is too long"))?;
    let stats: Vec<(f64, f64)> = hist[..colour].iter().map(ops::mean_and_deviation).collect();
    for (c, (mean, std)) in stats.iter().enumerate() {
        step.mean[c] = *mean;
        step.std[c] = *std;
    }
    match last.then {
        HISTORY_NORMALIZE => {
            for (c, (mean, std)) in stats.iter().enumerate() {
                step.luts[c] = ops::normalize_lut(*mean, *std);
            }
            step.flags = HISTORY_HAS_LUTS;
        }
        HISTORY_EQUALIZE => {
            let flat: Vec<u64> = hist.iter().flatten().copied().collect();
            for (c, lut) in ops::equalize_luts(&flat, colour).into_iter().enumerate() {
                step.luts[c] = lut;
            }
            step.flags = HISTORY_HAS_LUTS;
        }
        _ => step.flags = HISTORY_FLOAT_STATS,
    }
    Ok((step, stats))
}

/// The job's closing lines: how many images are ok, the passes, the rebuilt images, the
/// statistics of a dataset-wide step, and each failed image with its reason (those that had
/// failed before this job said so).
fn report(
    writer: &Writer<'_>,
    verb: &str,
    tally: &Tally,
    started: Instant,
    failed: &[usize],
    failed_before: &[usize],
) {
    let count = writer.image_count();
    println!(
        "{verb} {}: {} of {count} images ok in {:.2} s ({} pass{}{})",
        writer.name(),
        count - failed.len(),
        started.elapsed().as_secs_f64(),
        tally.passes,
        if tally.passes > 1 { "es" } else { "" },
        if tally.retried > 0 {
            format!(
                ", {} rebuilt from their sources after a worker died",
                tally.retried
            )
        } else {
            String::new()
        }
    );
    for (c, (mean, std)) in tally.stats.iter().enumerate() {
        println!("  channel {c}: mean {mean:.3}, std {std:.3}");
    }
    for &i in failed {
        let when = if failed_before.contains(&i) {
            "failed earlier"
        } else {
            "failed"
        };
        println!(
            "  {when}: {}: {}",
            String::from_utf8_lossy(writer.source(i)),
            writer.message(i).unwrap_or_default()
        );
    }
}

fn failed_images(block: &AttachedBlock) -> Vec<usize> {
    (0..block.image_count())
        .filter(|&i| block.images()[i].status() == Some(ImageStatus::Failed))
        .collect()
}

/// A pass is over when no image waits or is in hand, and every live worker has parked after it.
fn pass_settled(block: &AttachedBlock, pool: &Pool, generation: u32) -> bool {
    let images_settled = block.images().iter().all(|r| {
        matches!(
            r.status(),
            Some(ImageStatus::Done) | Some(ImageStatus::Failed)
        )
    });
    images_settled
        && pool
            .live_ids()
            .all(|id| block.workers()[id as usize].parked.load(Ordering::Acquire) == generation)
}

/// Per colour channel, the histogram of every done image's values, read on `threads` threads.
///
/// # Safety
///
/// As [`Writer::pixels_between_passes`]: no worker may be writing any slot.
#[allow(unsafe_code)]
unsafe fn histograms(writer: &Writer<'_>, threads: usize) -> [[u64; 256]; 4] {
    let channels = writer.header().channels as usize;
    let done: Vec<usize> = (0..writer.image_count())
        .filter(|&i| writer.images()[i].status() == Some(ImageStatus::Done))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let total = Mutex::new([[0u64; 256]; 4]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let mut hist = [[0u64; 256]; 4];
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&i) = done.get(k) else { break };
                    // SAFETY: this function's precondition: no worker writes any slot now.
                    let pixels = unsafe { writer.pixels_between_passes(i) };
                    ops::add_histograms(pixels, channels, &mut hist);
                }
                let mut total = total.lock().expect("no panic holds it");
                for (t, h) in total.iter_mut().zip(&hist) {
                    for (a, b) in t.iter_mut().zip(h) {
                        *a += b;
                    }
                }
            });
        }
    });
    total.into_inner().expect("threads joined")
}
