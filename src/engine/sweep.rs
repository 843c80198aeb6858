//! Removing what killed processes left: stale blocks, and the temporary outputs of runs, saves
//! and exports that are over. A block with a live owner, a file not ours and a temporary whose
//! writer holds its lock are never touched.

use std::path::Path;

use anyhow::Context;
use shmpipe_block::registry;
use shmpipe_block::Backing;
use shmpipe_worker::codec;

/// Removes stale blocks, and the temporary outputs their runs left in their output folders,
/// going on past what it cannot remove; with `quiet`, lists nothing.
pub fn sweep(backing: &Backing, quiet: bool) -> anyhow::Result<registry::Cleaned> {
    let mut cleaned = registry::clean(backing)
        .with_context(|| format!("cannot clean {}", backing.dir().display()))?;
    for block in &cleaned.removed {
        let Some(root) = &block.output_root else {
            continue;
        };
        for (path, owner) in codec::temporaries(root) {
            if owner != block.name {
                continue;
            }
            // A block of that name elsewhere (another --backing folder) may be writing it.
            match codec::remove_temporary_unless_held(&path) {
                Ok(true) if !quiet => println!("removed {}", path.display()),
                Ok(_) => {}
                Err(e) => cleaned.failed.push((path.display().to_string(), e)),
            }
        }
    }
    if !quiet {
        for b in &cleaned.removed {
            println!(
                "removed stale block {} ({} bytes, owner pid {})",
                b.name,
                b.bytes,
                b.owner_pid.map_or("unknown".into(), |p| p.to_string())
            );
        }
        if cleaned.removed.is_empty() {
            println!("no stale blocks in {}", backing.dir().display());
        }
    }
    Ok(cleaned)
}

/// Removes the temporary outputs under `out` of runs that are over: their block is gone or stale
/// (looked for in `backing` and in /dev/shm), their creator's pid is gone, and no writer holds
/// the file's lock (`codec::held_temporary`). The block may live where we do not look (a run
/// with another `--backing` folder, whose dataset's name holds no pid): the writer's lock is
/// what says so then. Gives what it could not remove.
pub fn remove_left_temporaries(out: &Path, backing: &Backing) -> Vec<(String, std::io::Error)> {
    let mut failed = Vec::new();
    for (path, owner) in codec::temporaries(out) {
        if registry::owner_may_live(backing, &owner)
            || registry::owner_may_live(&Backing::Shm, &owner)
        {
            continue;
        }
        if let Err(e) = codec::remove_temporary_unless_held(&path) {
            failed.push((path.display().to_string(), e));
        }
    }
    failed
}

/// The sweep at the start of `run`: removes this user's stale blocks and never fails the run.
/// What it could not remove is a warning (unless `quiet`); files not ours are no concern of it.
pub fn sweep_before_run(backing: &Backing, quiet: bool) {
    match sweep(backing, true) {
        Ok(cleaned) => {
            for (name, e) in cleaned.failed.iter().filter(|_| !quiet) {
                eprintln!("shmpipe: warning: cannot remove stale block {name}: {e}");
            }
        }
        Err(e) if !quiet => eprintln!("shmpipe: warning: {e:#}"),
        Err(_) => {}
    }
}
