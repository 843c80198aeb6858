//! `shmpipe apply NAME --ops LIST`: transform a kept dataset in place with N worker processes.
//!
//! The coordinator holds the block's lock exclusively for the whole job, so a second `apply` (or a
//! `save`, `export` or `run`) refuses rather than racing it. With `normalize`, the job has two
//! passes: workers sum each channel in pass 1; the coordinator turns the sums into means and
//! deviations, writes them into the header, opens pass 2 and rings the block's raw_sync event
//! that the waiting workers sleep on. A worker that dies mid-image leaves that image's pixels
//! half transformed, with no source to decode again: the image is reported failed, never redone.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use raw_sync::events::EventState;
use shmpipe_worker::block::{AttachedBlock, Backing, BlockState, ImageStatus};
use shmpipe_worker::ops;

use crate::cli::ApplyCli;
use crate::exit;
use crate::progress::Display;
use crate::supervise::{Launch, Pool};

pub fn apply(args: ApplyCli) -> i32 {
    match apply_inner(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shmpipe: error: {e:#}");
            exit::USAGE
        }
    }
}

fn pass_finished(block: &AttachedBlock) -> bool {
    block.images().iter().all(|r| {
        matches!(
            r.status(),
            Some(ImageStatus::Done) | Some(ImageStatus::Failed)
        )
    })
}

/// Per-channel mean and population standard deviation from every worker's sums.
fn statistics(block: &AttachedBlock) -> Vec<(f64, f64)> {
    let channels = block.header().channels as usize;
    let colour = if channels == 4 { 3 } else { channels };
    let values: u64 = (0..block.image_count())
        .filter(|&i| block.images()[i].status() == Some(ImageStatus::Done))
        .map(|i| (block.slot(i).height * block.slot(i).width) as u64)
        .sum();
    (0..colour)
        .map(|c| {
            let sum: u64 = block
                .workers()
                .iter()
                .map(|w| w.sums[c].load(Ordering::Acquire))
                .sum();
            let sum_sq: u64 = block
                .workers()
                .iter()
                .map(|w| w.sums_sq[c].load(Ordering::Acquire))
                .sum();
            let n = values.max(1) as f64;
            let mean = sum as f64 / n;
            (mean, (sum_sq as f64 / n - mean * mean).max(0.0).sqrt())
        })
        .collect()
}

fn apply_inner(args: ApplyCli) -> anyhow::Result<i32> {
    let stages = ops::parse_apply(&args.ops).map_err(|e| anyhow::anyhow!("invalid --ops: {e}"))?;
    let name = crate::blocks::dataset_name(&args.name)?;
    let backing = args.backing.clone().map_or(Backing::Shm, Backing::Dir);
    let block = AttachedBlock::attach(&name, backing)
        .with_context(|| format!("cannot attach to {name} (see `shmpipe ls`)"))?;
    block.lock_exclusive()?;
    if block.image_count() == 0 {
        println!("{name} holds no images");
        return Ok(exit::OK);
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
        .min(block.workers().len() as u32)
        .max(1);
    let passes = stages.passes();
    for v in block.stats() {
        v.store(0, Ordering::Release);
    }
    // Statistics from an earlier normalize:float no longer describe pixels this job changes.
    block.header().export_float.store(0, Ordering::Release);
    let event = block.pass_event()?;
    event
        .set(EventState::Clear)
        .map_err(|e| anyhow::anyhow!("cannot reset the pass event: {e}"))?;
    for w in block.workers() {
        for c in 0..4 {
            w.sums[c].store(0, Ordering::Release);
            w.sums_sq[c].store(0, Ordering::Release);
        }
    }
    block.begin_pass(1);

    let started = Instant::now();
    let pids = Arc::new(Mutex::new(Vec::new()));
    let launch = Launch {
        exe: std::env::current_exe().context("cannot find this program's path to start workers")?,
        block: name.clone(),
        backing: args.backing.clone(),
        max_pixels: shmpipe_worker::codec::DEFAULT_MAX_PIXELS,
        apply: Some(args.ops.clone()),
        cores: workers,
    };
    let mut pool = Pool::new(launch, workers, pids);
    let display = Display::new(block.image_count() as u64, workers as usize, args.quiet);
    for id in 0..workers {
        pool.spawn(id).context("failed to start a worker process")?;
    }
    let mut pass = 1;
    let mut stats = Vec::new();
    let mut died = 0;
    loop {
        for (id, end) in pool.reap() {
            if !end.is_abnormal() {
                continue;
            }
            died += 1;
            for index in 0..block.image_count() {
                if let Some(claim) = block.take_over(index, id) {
                    claim.fail("a worker died while applying ops to it: its pixels are half transformed; load the dataset again");
                }
            }
            if died > 3 * workers as usize + 3 {
                anyhow::bail!("workers keep dying (last: {end:?}); giving up");
            }
        }
        if pass_finished(&block) {
            if pass == 1 {
                match stages.dataset {
                    Some(ops::DatasetOp::Normalize) | Some(ops::DatasetOp::NormalizeFloat) => {
                        stats = statistics(&block);
                        let h = block.header();
                        for (c, (mean, std)) in stats.iter().enumerate() {
                            h.norm_mean[c].store(mean.to_bits(), Ordering::Release);
                            h.norm_std[c].store(std.to_bits(), Ordering::Release);
                        }
                        let float = stages.dataset == Some(ops::DatasetOp::NormalizeFloat);
                        h.export_float.store(float as u64, Ordering::Release);
                    }
                    Some(ops::DatasetOp::Equalize) => {
                        let hist: Vec<u64> = block
                            .stats()
                            .iter()
                            .map(|v| v.load(Ordering::Acquire))
                            .collect();
                        let colour = (block.header().channels as usize).min(3);
                        for (c, lut) in ops::equalize_luts(&hist, colour).iter().enumerate() {
                            for (v, &out) in lut.iter().enumerate() {
                                block.stats()[c * 256 + v].store(out as u64, Ordering::Release);
                            }
                        }
                    }
                    None => {}
                }
            }
            if pass == passes {
                break;
            }
            pass += 1;
            block.begin_pass(pass);
            event
                .set(EventState::Signaled)
                .map_err(|e| anyhow::anyhow!("cannot ring the pass event: {e}"))?;
        }
        if pool.live() == 0 && !pass_finished(&block) {
            // Replacements join the pass in progress.
            for id in 0..workers {
                pool.spawn(id)
                    .context("failed to restart a worker process")?;
            }
        }
        display.update(&block);
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.stop(Duration::from_secs(3));
    display.finish();
    block.set_state(BlockState::Finished);
    let _ = event.set(EventState::Clear);
    let failed = (0..block.image_count())
        .filter(|&i| block.images()[i].status() == Some(ImageStatus::Failed))
        .collect::<Vec<_>>();
    if !args.quiet {
        println!(
            "applied {:?} to {name}: {} of {} images ok in {:.2} s ({passes} pass{})",
            args.ops,
            block.image_count() - failed.len(),
            block.image_count(),
            started.elapsed().as_secs_f64(),
            if passes > 1 { "es" } else { "" }
        );
        for (c, (mean, std)) in stats.iter().enumerate() {
            println!("  channel {c}: mean {mean:.3}, std {std:.3}");
        }
        for i in &failed {
            println!(
                "  failed: {}: {}",
                String::from_utf8_lossy(block.source(*i)),
                block.message(*i).unwrap_or_default()
            );
        }
    }
    Ok(if failed.is_empty() {
        exit::OK
    } else {
        exit::SOME_FAILED
    })
}
