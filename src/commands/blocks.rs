//! `shmpipe ls`, `clean` and `rm`: our blocks by name, live or stale, and removing the stale.
//!
//! A block with a live owner is never touched here (see `shmpipe_block::registry`), and neither
//! is a file with one of our names that is not ours (a symbolic link, not a regular file, another
//! user's): `ls` lists it as foreign, `clean` names it and goes on.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context};
use shmpipe_block::registry::{self, BlockInfo, Liveness};
use shmpipe_block::{Backing, BlockState};

use crate::engine::dataset::{dataset_name, not_ready};
use crate::engine::sweep::{remove_left_temporaries, sweep};
use crate::exit;

fn status(l: Liveness) -> &'static str {
    match l {
        Liveness::Live => "live",
        Liveness::Stale => "stale",
        Liveness::Kept => "kept",
        Liveness::Foreign => "foreign",
    }
}

/// What a block holds, in a word or two: a dataset's state (and whether it was interrupted), or
/// a run's phase.
fn state_word(b: &BlockInfo) -> String {
    use shmpipe_block::DatasetState;
    let live = b.liveness == Liveness::Live;
    match (b.dataset, live) {
        (Some(DatasetState::Ready), _) => "ready".into(),
        (Some(DatasetState::Loading), true) => "loading".into(),
        (Some(DatasetState::Applying), true) => "applying".into(),
        (Some(DatasetState::Repairing), true) => "repairing".into(),
        (Some(DatasetState::PythonWriting), true) => "editing".into(),
        (Some(DatasetState::Loading), false) => "incomplete".into(),
        (
            Some(DatasetState::Applying)
            | Some(DatasetState::Repairing)
            | Some(DatasetState::PythonWriting),
            false,
        ) => "damaged".into(),
        // No header: its creator was stopped before writing one.
        _ if b.owner_pid.is_none() && b.foreign.is_none() && !live => "incomplete".into(),
        // A run's working block: its owner's phase while it lives, stale once it is gone.
        (_, false) => "stale".into(),
        (_, true) => match b.state {
            Some(BlockState::Creating) => "creating",
            Some(BlockState::Ready) => "running",
            Some(BlockState::Stopping) => "stopping",
            Some(BlockState::Finished) => "finishing",
            None => "-",
        }
        .into(),
    }
}

/// An age for people, in its largest whole unit: "42s", "5m", "3h", "2d"; "-" when unknown.
fn human_age(age: Option<std::time::Duration>) -> String {
    let Some(age) = age else {
        return "-".into();
    };
    match age.as_secs() {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn backing(dir: Option<PathBuf>) -> Backing {
    dir.map_or(Backing::Shm, Backing::Dir)
}

fn describe(b: &BlockInfo) -> serde_json::Value {
    serde_json::json!({
        "name": b.name,
        "bytes": b.bytes,
        "held_bytes": b.held_bytes,
        "owner_pid": b.owner_pid,
        "live": b.liveness == Liveness::Live,
        "kept": b.liveness == Liveness::Kept,
        "status": status(b.liveness),
        "state": state_word(b),
        "images": b.images,
        "classes": b.classes,
        "age_s": b.created_age.map(|a| a.as_secs()),
        "foreign": b.foreign,
    })
}

pub fn ls(dir: Option<PathBuf>, json: bool, raw_bytes: bool) -> i32 {
    let size = |bytes: u64| {
        if raw_bytes {
            bytes.to_string()
        } else {
            crate::engine::summary::human_bytes(bytes)
        }
    };
    let backing = backing(dir);
    let entries = match registry::list(&backing) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "shmpipe: error: cannot list {}: {e}",
                backing.dir().display()
            );
            return exit::USAGE;
        }
    };
    let mut code = exit::OK;
    let mut blocks = Vec::new();
    for entry in entries {
        match entry {
            Ok(info) => blocks.push(info),
            Err((name, e)) => {
                eprintln!("shmpipe: cannot inspect {name}: {e}");
                code = exit::SOME_FAILED;
            }
        }
    }
    if json {
        let list: Vec<_> = blocks.iter().map(describe).collect();
        println!("{}", serde_json::Value::Array(list));
        return code;
    }
    let damaged: Vec<&BlockInfo> = blocks
        .iter()
        .filter(|b| matches!(state_word(b).as_str(), "damaged" | "incomplete"))
        .collect();
    if blocks.is_empty() {
        println!("no shmpipe blocks in {}", backing.dir().display());
        return code;
    }
    // 79 columns with a fresh run's name (shmpipe-PID-XXXXXXXX): HELD is the memory the block
    // holds, not its apparent size (--json gives both).
    println!(
        "{:<22} {:>9} {:>7} {:>6} {:<10} {:>6} {:>7} {:>4}",
        "NAME",
        if raw_bytes { "BYTES" } else { "HELD" },
        "OWNER",
        "STATUS",
        "STATE",
        "IMAGES",
        "CLASSES",
        "AGE"
    );
    for b in &blocks {
        if let Some(why) = &b.foreign {
            println!(
                "{:<22} {:>9} {:>7} foreign: {why}",
                b.name,
                size(b.held_bytes),
                "-"
            );
            continue;
        }
        println!(
            "{:<22} {:>9} {:>7} {:>6} {:<10} {:>6} {:>7} {:>4}",
            b.name,
            size(b.held_bytes),
            // The creator's pid only while it owns the block: a kept dataset's loader, or a
            // stale block's killed run, is gone (`--json` keeps the pid the header records).
            b.owner_pid
                .filter(|_| b.liveness == Liveness::Live)
                .map_or("-".into(), |p| p.to_string()),
            status(b.liveness),
            state_word(b),
            b.images.map_or("-".into(), |n| n.to_string()),
            b.classes.map_or("-".into(), |n| n.to_string()),
            human_age(b.created_age)
        );
    }
    for b in damaged {
        println!("{}", not_ready(&b.name, b.dataset));
    }
    code
}

/// `shmpipe clean`: exit 1 when a file was left that it could not remove or that is not ours,
/// each named on stderr with the reason.
pub fn clean(dir: Option<PathBuf>, outputs: &[PathBuf], older_than: Option<Duration>) -> i32 {
    let backing = backing(dir);
    let mut cleaned = match sweep(&backing, false) {
        Ok(cleaned) => cleaned,
        Err(e) => {
            eprintln!("shmpipe: error: {e:#}");
            return exit::USAGE;
        }
    };
    if let Some(age) = older_than {
        cleaned.failed.extend(remove_old_datasets(&backing, age));
    }
    for out in outputs {
        cleaned
            .failed
            .extend(remove_left_temporaries(out, &backing));
    }
    for b in &cleaned.foreign {
        eprintln!(
            "shmpipe: left {}: {}",
            b.name,
            b.foreign.as_deref().unwrap_or("not ours")
        );
    }
    for (name, e) in &cleaned.failed {
        eprintln!("shmpipe: cannot remove {name}: {e}");
    }
    if cleaned.foreign.is_empty() && cleaned.failed.is_empty() {
        exit::OK
    } else {
        exit::SOME_FAILED
    }
}

/// `clean --older-than AGE`: removes the kept datasets created longer than `age` ago that no
/// process holds (the lock is checked again right before each unlink), saying which; one in use
/// is left and named. Gives what could not be removed.
fn remove_old_datasets(backing: &Backing, age: Duration) -> Vec<(String, std::io::Error)> {
    let mut failed = Vec::new();
    let Ok(listed) = registry::list(backing) else {
        return failed;
    };
    for info in listed.into_iter().flatten() {
        let old = info.created_age.is_some_and(|a| a > age);
        if info.liveness != Liveness::Kept || !old {
            continue;
        }
        match registry::remove_unheld(backing, &info.name, true) {
            Ok(true) => println!(
                "removed dataset {} (created {} ago)",
                info.name,
                human_age(info.created_age)
            ),
            Ok(false) => println!("left dataset {}: in use", info.name),
            Err(e) => failed.push((info.name.clone(), e)),
        }
    }
    failed
}

pub fn rm(name: &str, dir: Option<PathBuf>, force: bool) -> i32 {
    let run = || -> anyhow::Result<()> {
        let backing = backing(dir);
        let name = &dataset_name(name)?;
        let info = registry::inspect(&backing, name)
            .with_context(|| format!("no block {name} in {}", backing.dir().display()))?;
        // Who holds its lock, as the kernel says: the header's owner pid is the creator's,
        // long gone for a dataset that a later apply or a Python handle holds.
        let in_use = || {
            let holders = registry::lock_holders(&backing, name);
            let by = match holders.as_slice() {
                [] => String::new(),
                list => format!(
                    " by {}",
                    list.iter()
                        .map(|h| h.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let readers_only = !holders.is_empty() && holders.iter().all(|h| !h.exclusive);
            let force_hint = match (readers_only, force) {
                (true, false) => format!(", or take the name from its readers with `shmpipe rm --force {name}` (they keep what they mapped)"),
                _ => String::new(),
            };
            anyhow!(
                "block {name} is in use{by}: not removed. Close what holds it (a Python handle's .close(), or end that process){force_hint}, or wait for its job to end"
            )
        };
        let removed = info.liveness != Liveness::Live
            && (registry::remove_unheld(&backing, name, true)?
                || (force && registry::remove_despite_readers(&backing, name)?));
        if !removed {
            return Err(in_use());
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
