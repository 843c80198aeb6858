//! `shmpipe watch NAME`: attach read-only to a live block (a run started elsewhere, by hand or by
//! a scheduler) and show its progress from the counters in the block until the run ends.
//! All progress lives in the block, so nothing else is needed; watch never writes it.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use shmpipe_block::registry::{self, Liveness};
use shmpipe_block::{AttachedBlock, Backing, BlockState};

use crate::cli::WatchCli;
use crate::engine::progress::{Display, Figures};
use crate::exit;

pub fn watch(args: WatchCli) -> i32 {
    match watch_inner(args) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("shmpipe: error: {e:#}");
            exit::USAGE
        }
    }
}

fn counts(block: &AttachedBlock) -> (u64, u64, u64) {
    let h = block.header();
    (
        h.images_done.load(Ordering::Acquire),
        h.images_failed.load(Ordering::Acquire),
        h.pixels_done.load(Ordering::Acquire),
    )
}

fn watch_inner(args: WatchCli) -> anyhow::Result<()> {
    let name = crate::engine::dataset::dataset_name(&args.name)?;
    let backing = args.backing.map_or(Backing::Shm, Backing::Dir);
    // A run creating its block right now is refused by attach for an instant: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(2);
    let block = loop {
        match AttachedBlock::attach(&name, backing.clone()) {
            Ok(b) => break b,
            Err(e) if Instant::now() < deadline && backing.dir().join(&name).exists() => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => {
                return Err(e).with_context(|| format!("cannot watch {name} (see `shmpipe ls`)"))
            }
        }
    };
    let total = block.image_count() as u64;
    // The run's own clock, as the block records it (a block from before that field: ours).
    let run_started_ns = block.header().run_started_unix_ns.load(Ordering::Acquire);
    let run_started = match run_started_ns {
        0 => SystemTime::now(),
        ns => UNIX_EPOCH + Duration::from_nanos(ns),
    };
    let record = |state: &str| {
        let f = Figures::read(&block, run_started);
        serde_json::json!({
            "block": name,
            "state": state,
            "images_total": total,
            "images_done": f.images_done,
            "images_failed": f.images_failed,
            "megapixels": f.megapixels,
            "elapsed_s": f.elapsed.as_secs_f64(),
            "megapixels_per_s": f.megapixels_per_s,
            "run_started_unix_ns": run_started_ns,
            // Why a stopped run stopped: `by SIGINT before the end`, say.
            "stopped": (state == "stopped").then(|| {
                stopped_by(block.header().stop_reason.load(Ordering::Acquire))
            }),
        })
    };
    let display = Display::new(
        total,
        block.workers().len(),
        !std::io::stderr().is_terminal(),
        run_started,
    );
    let plain = !std::io::stdout().is_terminal();
    let started = Instant::now();
    let mut last_line = Instant::now() - Duration::from_secs(1);
    // Whether the coordinator asked its workers to stop (a signal, --strict) while we watched.
    let mut stop_seen = false;
    let end = loop {
        display.update(&block);
        let (done, failed, pixels) = counts(&block);
        if args.json && last_line.elapsed() >= Duration::from_millis(500) {
            println!("{}", record("running"));
            last_line = Instant::now();
        } else if plain && !args.json && last_line.elapsed() >= Duration::from_secs(1) {
            println!(
                "{name}: {done} of {total} images done, {failed} failed, {:.1} MP",
                pixels as f64 / 1e6
            );
            last_line = Instant::now();
        }
        let state = BlockState::from_u32(block.header().state.load(Ordering::Acquire));
        stop_seen |= state == Some(BlockState::Stopping);
        if state == Some(BlockState::Finished) {
            let (done, failed, _) = counts(&block);
            let reason = block.header().stop_reason.load(Ordering::Acquire);
            // The reason stays in the block: a stop between two looks is told too.
            break match (done + failed < total, stop_seen || reason != 0) {
                (false, _) => ("finished", "finished".to_string()),
                (true, true) => ("stopped", format!("stopped {}", stopped_by(reason))),
                (true, false) => ("stopped", "stopped before the end".to_string()),
            };
        }
        match registry::inspect(&backing, &name) {
            Err(_) => break ("removed", "ended (its block was removed)".to_string()),
            Ok(info) if info.liveness != Liveness::Live => {
                break (
                    "owner_gone",
                    "ended without finishing (its owner is gone)".to_string(),
                )
            }
            Ok(_) => {}
        }
        std::thread::sleep(Duration::from_millis(66));
    };
    display.finish();
    let (end_state, end) = end;
    if args.json {
        println!("{}", record(end_state));
        return Ok(());
    }
    let (done, failed, pixels) = counts(&block);
    println!(
        "{name}: {end}: {done} of {total} images done, {failed} failed, {:.1} MP, watched {:.1} s",
        pixels as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What stopped a run before its end, from [`shmpipe_block::Header::stop_reason`]: `by SIGINT
/// before the end`, `at its first failed image (--strict)`.
fn stopped_by(reason: u32) -> String {
    let signal = match reason {
        0 => return "before the end (its run was told to stop)".into(),
        shmpipe_block::STOP_STRICT => return "at its first failed image (--strict)".into(),
        1 => "SIGHUP".to_string(),
        2 => "SIGINT".to_string(),
        15 => "SIGTERM".to_string(),
        n => format!("signal {n}"),
    };
    format!("by {signal} before the end")
}
