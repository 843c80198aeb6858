//! What every command that names a dataset shares: its block name, attaching to it, what to say
//! when it is not ready, and whose temporaries a process's outputs are.

use std::path::PathBuf;

use anyhow::Context;
use shmpipe_block::{AttachedBlock, Backing, DatasetState, NAME_PREFIX};

/// The block name of a dataset: `faces` is `shmpipe-faces`; a full block name stays as it is.
pub fn dataset_name(name: &str) -> anyhow::Result<String> {
    let full = if name.starts_with(shmpipe_block::NAME_PREFIX) {
        name.to_string()
    } else {
        format!("{}{name}", shmpipe_block::NAME_PREFIX)
    };
    shmpipe_block::validate_name(&full).map_err(|_| {
        anyhow::anyhow!(
            "invalid dataset name {name:?}: use letters, digits, '.', '_' and '-', at most {} characters",
            shmpipe_block::MAX_NAME_LEN - shmpipe_block::NAME_PREFIX.len()
        )
    })?;
    Ok(full)
}

/// Attaches to the dataset `name` (`faces` or `shmpipe-faces`), naming it in any error.
pub fn attach(name: &str, backing: Option<PathBuf>) -> anyhow::Result<AttachedBlock> {
    let name = dataset_name(name)?;
    AttachedBlock::attach(&name, backing.map_or(Backing::Shm, Backing::Dir))
        .with_context(|| format!("cannot attach to {name} (see `shmpipe ls`)"))
}

/// Why a dataset in `state` cannot be read or changed now, and what to do about it. Every
/// command that reads or changes a dataset says the same.
pub fn not_ready(name: &str, state: Option<DatasetState>) -> String {
    let short = name
        .strip_prefix(shmpipe_block::NAME_PREFIX)
        .unwrap_or(name);
    match state {
        Some(DatasetState::Ready) => format!("{name} is ready"),
        Some(DatasetState::None) => {
            format!("{name} is a run's working block, not a kept dataset (see `shmpipe load`)")
        }
        Some(DatasetState::Loading) => format!(
            "{name} is incomplete: its load was interrupted before every image was decoded; run `shmpipe repair {short}` to decode the rest, or `shmpipe rm {short}` and load it again"
        ),
        Some(DatasetState::Applying) => format!(
            "{name} is damaged: an apply was interrupted while it changed the pixels, so some images may be half transformed; run `shmpipe repair {short}` to rebuild them from their sources and finish the apply"
        ),
        Some(DatasetState::Repairing) => format!(
            "{name} is damaged: a repair was interrupted; run `shmpipe repair {short}` again"
        ),
        Some(DatasetState::PythonWriting) => format!(
            "{name} is damaged: a writable Python handle (shmpipe.attach(..., writable=True)) ended without closing (killed, or its interpreter died) while it could write, so its images may be half edited; `shmpipe repair` cannot restore them (Python edits are in no step of the dataset's history: a rebuild from the sources would drop every one of them), so run `shmpipe rm {short}` and load it again, then redo the edits"
        ),
        None => format!("{name} has a dataset state this build does not know"),
    }
}

/// The owner name that this process's temporary outputs carry (see `codec::temp_prefix`): our
/// pid, so that anyone can tell once we are gone that they are left over (`clean OUT`, the next
/// `save` or `export` there). Never the dataset's name: a dataset outlives every save of it, and
/// another save's, or `clean`'s, sweep would take a live save's temporaries.
pub fn temporaries_owner() -> String {
    format!("{NAME_PREFIX}{}-w", std::process::id())
}
