//! `--dry-run`: a job planned to the point where its block would be created, and said instead
//! of done. It reads headers only; it creates no block, starts no worker and writes nothing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::bail;
use serde::Serialize;
use shmpipe_block as block;
use shmpipe_worker::codec;

use crate::engine::holding::{block_plan, hold};
use crate::engine::job::{failures_of, names, plan_job, Clock};
use crate::engine::settings::Job;
use crate::engine::summary::{count, human_bytes, push_skipped, Failure};
use crate::engine::supervise::Signals;

/// What a job would do, as `--dry-run` reports it.
#[derive(Debug, Serialize)]
pub struct DryRun {
    /// Always true: tells this report from a summary.
    pub dry_run: bool,
    pub input: String,
    /// Images that would be decoded.
    pub images: u64,
    /// Files that would be refused, with the reason.
    pub refused: Vec<Failure>,
    /// Folders that cannot be read, with the reason.
    pub folders_refused: Vec<Failure>,
    /// Files that are not images, skipped.
    pub skipped: Vec<String>,
    /// Images left alone because their output exists (`--skip-existing`).
    pub existing: u64,
    pub workers: u32,
    /// The block: its name for a kept dataset, null for a run's (a fresh name).
    pub dataset: Option<String>,
    /// Bytes of shared memory the block would take.
    pub block_bytes: u64,
    /// A plain run's window: the bytes of each worker's slot; null when the block would hold
    /// the whole dataset.
    pub window_slot_bytes: Option<u64>,
    /// Bytes of the decoded dataset (every image, as stored).
    pub dataset_bytes: u64,
    /// Where the block would be, and the bytes free there now.
    pub block_folder: String,
    pub free_bytes: Option<u64>,
    /// The output folder, as it would be resolved (it need not exist yet); null: nothing would
    /// be written.
    pub output_dir: Option<String>,
    /// Every output the job would write, with its input.
    pub outputs: Vec<Output>,
    /// The text report names each skipped file (`--verbose`).
    #[serde(skip)]
    list_skipped: bool,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub input: String,
    pub output: String,
}

/// Plans `job` as a run would, up to its block, and says what it would do. Refuses as the run
/// would refuse before its block: an output on an input, a dataset name taken, a dataset larger
/// than the free memory.
pub fn dry_run(job: &Job) -> anyhow::Result<DryRun> {
    let signals = Signals::register()?;
    let mut planned = plan_job(job, &signals, &Clock::now())?;
    let existing = planned.plan.existing as u64;
    let skipped = names(&planned.plan.skipped);
    let folders_refused = failures_of(&planned.plan.refused_folders);
    let workers = job.workers.min(planned.plan.images.len().max(1) as u32);
    let backing = job.backing_dir();
    let free_bytes = block::free_bytes(&backing.dir()).ok();
    let mut block_plan = block_plan(job, &mut planned, workers);
    hold(job, &mut block_plan, &mut planned, &backing);
    let block_bytes = block_plan.total_size().unwrap_or(u64::MAX);
    if let Some(dataset) = &job.keep {
        let name = crate::engine::dataset::dataset_name(dataset)?;
        if std::fs::symlink_metadata(backing.dir().join(&name)).is_ok() {
            bail!("a block named {name} exists already: remove it with `shmpipe rm {name}`, or choose another name");
        }
        if free_bytes.is_some_and(|free| free < block_bytes) && !block_plan.images.is_empty() {
            bail!(
                "dataset {dataset} would take {} and {} has {} free: give it more room, or put it in a regular file with --backing DIR",
                human_bytes(block_bytes),
                backing.dir().display(),
                human_bytes(free_bytes.unwrap_or(0))
            );
        }
    }
    let outputs = match &job.output {
        None => Vec::new(),
        Some(out) => block_plan
            .images
            .iter()
            .map(|img| {
                let relative = Path::new(OsStr::from_bytes(&img.source));
                let format = job.format.unwrap_or(codec::FORMATS[img.format as usize]);
                Output {
                    input: job.input.join(relative).display().to_string(),
                    output: codec::planned_output(out, relative, &img.output, format)
                        .display()
                        .to_string(),
                }
            })
            .collect(),
    };
    let images = block_plan.images.len() as u64;
    Ok(DryRun {
        dry_run: true,
        input: job.input.display().to_string(),
        images,
        refused: planned.failures,
        folders_refused,
        skipped,
        existing,
        workers: if images == 0 { 0 } else { workers },
        dataset: job.keep.clone(),
        block_bytes: if images == 0 { 0 } else { block_bytes },
        window_slot_bytes: block_plan.window_slot,
        dataset_bytes: block_plan.pixel_bytes(),
        block_folder: backing.dir().display().to_string(),
        free_bytes,
        output_dir: job.output.as_ref().map(|o| o.display().to_string()),
        outputs,
        list_skipped: job.verbose,
    })
}

impl DryRun {
    /// The exit status the job itself would end with, all going well: 1 when a file would be
    /// refused, else 0.
    pub fn exit_code(&self) -> i32 {
        match self.refused.is_empty() && self.folders_refused.is_empty() {
            true => crate::exit::OK,
            false => crate::exit::SOME_FAILED,
        }
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = String::from("dry run: nothing decoded, no block created, nothing written\n");
        out.push_str(&format!(
            "would do {} of {} with {}\n",
            count(self.images, "image"),
            self.input,
            count(self.workers.into(), "worker")
        ));
        if self.images > 0 {
            let held = match self.window_slot_bytes {
                Some(slot) => format!(
                    "a window of {} of {} each",
                    count(self.workers.into(), "slot"),
                    human_bytes(slot)
                ),
                None => "the whole dataset".to_string(),
            };
            let free = self.free_bytes.map_or(String::new(), |f| {
                format!(", {} free there", human_bytes(f))
            });
            out.push_str(&format!(
                "memory: a block of {} in {} ({held}; the decoded dataset is {}){free}\n",
                human_bytes(self.block_bytes),
                self.block_folder,
                human_bytes(self.dataset_bytes)
            ));
        }
        if !self.refused.is_empty() {
            out.push_str(&format!(
                "{} would be refused:\n",
                count(self.refused.len() as u64, "file")
            ));
            for f in &self.refused {
                out.push_str(&format!("  refused: {}: {}\n", f.path, f.reason));
            }
        }
        for f in &self.folders_refused {
            out.push_str(&format!("  refused folder: {}: {}\n", f.path, f.reason));
        }
        push_skipped(&mut out, &self.skipped, self.list_skipped);
        if self.existing > 0 {
            out.push_str(&format!(
                "{} left alone: their output exists (--skip-existing)\n",
                count(self.existing, "image")
            ));
        }
        match (&self.output_dir, &self.dataset) {
            (None, Some(dataset)) => out.push_str(&format!(
                "the block would stay as dataset {dataset}; no image file would be written\n"
            )),
            (None, None) => out.push_str("no -o: no output would be written\n"),
            (Some(dir), _) => {
                out.push_str(&format!(
                    "{} would be written under {dir}:\n",
                    count(self.outputs.len() as u64, "output")
                ));
                for o in &self.outputs {
                    out.push_str(&format!("  {}\n", o.output));
                }
            }
        }
        out
    }
}
