//! `shmpipe ls`, `clean` and `rm`: our blocks by name, live or stale, and removing the stale.
//!
//! A block with a live owner is never touched here (see `shmpipe_worker::registry`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use shmpipe_worker::block::Backing;
use shmpipe_worker::registry::{self, BlockInfo, Liveness};

use crate::exit;

fn status(l: Liveness) -> &'static str {
    match l {
        Liveness::Live => "live",
        Liveness::Stale => "stale",
        Liveness::Kept => "kept",
    }
}

/// The block name of a dataset: `faces` is `shmpipe-faces`; a full block name stays as it is.
pub fn dataset_name(name: &str) -> anyhow::Result<String> {
    let full = if name.starts_with(shmpipe_worker::block::NAME_PREFIX) {
        name.to_string()
    } else {
        format!("{}{name}", shmpipe_worker::block::NAME_PREFIX)
    };
    shmpipe_worker::block::validate_name(&full).map_err(|_| {
        anyhow::anyhow!(
            "invalid dataset name {name:?}: use letters, digits, '.', '_' and '-', at most {} characters",
            shmpipe_worker::block::MAX_NAME_LEN - shmpipe_worker::block::NAME_PREFIX.len()
        )
    })?;
    Ok(full)
}

/// What a block holds, in a word or two: a dataset's state (and whether it was interrupted), or
/// a run's phase.
fn state_word(b: &BlockInfo) -> String {
    use shmpipe_worker::block::DatasetState;
    let live = b.liveness == Liveness::Live;
    match (b.dataset, live) {
        (Some(DatasetState::Ready), _) => "ready".into(),
        (Some(DatasetState::Loading), true) => "loading".into(),
        (Some(DatasetState::Applying), true) => "applying".into(),
        (Some(DatasetState::Repairing), true) => "repairing".into(),
        (Some(DatasetState::Loading), false) => "incomplete".into(),
        (Some(DatasetState::Applying) | Some(DatasetState::Repairing), false) => "damaged".into(),
        _ => b
            .state
            .map_or("-".into(), |s| format!("{s:?}").to_lowercase()),
    }
}

fn backing(dir: Option<PathBuf>) -> Backing {
    dir.map_or(Backing::Shm, Backing::Dir)
}

fn describe(b: &BlockInfo) -> serde_json::Value {
    serde_json::json!({
        "name": b.name,
        "bytes": b.bytes,
        "owner_pid": b.owner_pid,
        "live": b.liveness == Liveness::Live,
        "kept": b.liveness == Liveness::Kept,
        "status": status(b.liveness),
        "state": state_word(b),
        "images": b.images,
        "age_s": b.age.as_secs(),
    })
}

pub fn ls(dir: Option<PathBuf>, json: bool) -> i32 {
    let backing = backing(dir);
    let blocks = match registry::list(&backing) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "shmpipe: error: cannot list {}: {e}",
                backing.dir().display()
            );
            return exit::USAGE;
        }
    };
    if json {
        let list: Vec<_> = blocks.iter().map(describe).collect();
        println!("{}", serde_json::Value::Array(list));
        return exit::OK;
    }
    let damaged: Vec<&BlockInfo> = blocks
        .iter()
        .filter(|b| matches!(state_word(b).as_str(), "damaged" | "incomplete"))
        .collect();
    if blocks.is_empty() {
        println!("no shmpipe blocks in {}", backing.dir().display());
        return exit::OK;
    }
    println!(
        "{:<30} {:>12} {:>8} {:>6} {:<10} {:>7} {:>8}",
        "NAME", "BYTES", "OWNER", "STATUS", "STATE", "IMAGES", "AGE"
    );
    for b in &blocks {
        println!(
            "{:<30} {:>12} {:>8} {:>6} {:<10} {:>7} {:>7}s",
            b.name,
            b.bytes,
            b.owner_pid.map_or("-".into(), |p| p.to_string()),
            status(b.liveness),
            state_word(b),
            b.images.map_or("-".into(), |n| n.to_string()),
            b.age.as_secs()
        );
    }
    for b in damaged {
        println!("{}", crate::apply::not_ready(&b.name, b.dataset));
    }
    exit::OK
}

/// Removes stale blocks; with `quiet`, says nothing (the sweep at the start of `run`).
pub fn sweep(backing: &Backing, quiet: bool) -> anyhow::Result<Vec<BlockInfo>> {
    let removed = registry::clean(backing)
        .with_context(|| format!("cannot clean {}", backing.dir().display()))?;
    if !quiet {
        for b in &removed {
            println!(
                "removed stale block {} ({} bytes, owner pid {})",
                b.name,
                b.bytes,
                b.owner_pid.map_or("unknown".into(), |p| p.to_string())
            );
        }
        if removed.is_empty() {
            println!("no stale blocks in {}", backing.dir().display());
        }
    }
    Ok(removed)
}

pub fn clean(dir: Option<PathBuf>) -> i32 {
    match sweep(&backing(dir), false) {
        Ok(_) => exit::OK,
        Err(e) => {
            eprintln!("shmpipe: error: {e:#}");
            exit::USAGE
        }
    }
}

pub fn rm(name: &str, dir: Option<PathBuf>) -> i32 {
    let run = || -> anyhow::Result<()> {
        let backing = backing(dir);
        let name = &dataset_name(name)?;
        let info = registry::inspect(&backing, name)
            .with_context(|| format!("no block {name} in {}", backing.dir().display()))?;
        if info.liveness == Liveness::Live {
            bail!(
                "block {name} is in use (owner pid {}); stop its run instead",
                info.owner_pid.map_or("unknown".into(), |p| p.to_string())
            );
        }
        if !registry::remove_unheld(&backing, name, true)? {
            bail!("block {name} became live; not removed");
        }
        println!("removed block {name}");
        Ok(())
    };
    match run() {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("shmpipe: error: {e:#}");
            exit::USAGE
        }
    }
}
