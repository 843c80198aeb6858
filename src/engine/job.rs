//! One job, as every mode that decodes a folder runs it (`run`, `load`, `bench memory`): plan,
//! create the block, spawn and supervise the workers, join, collect the outcomes. The story of
//! one job, top to bottom, each step a function of its own.
//!
//! Everything that can be refused is refused before the block exists. Once it exists, the
//! [`OwnedBlock`] unlinks it on every path out of this module (drop) unless the job keeps it as
//! a dataset, and the [`Pool`] leaves no worker running.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use anyhow::{anyhow, bail, Context};
use shmpipe_block::{
    self as block, Backing, BlockError, BlockPlan, BlockState, ImageStatus, OwnedBlock,
};

use crate::engine::holding::{block_plan, hold, Planned};
use crate::engine::labels;
use crate::engine::memory::{self, Sampler};
use crate::engine::outputs::{
    output_target, remove_partial_output, sync_outputs, warn_unused_settings,
};
use crate::engine::plan::{self, Plan};
use crate::engine::progress::Display;
use crate::engine::settings::{Job, Labels};
use crate::engine::summary::{count, Failure, Summary, Timings};
use crate::engine::supervise::{self, Launch, Outcome, Pool, Rules, Signals};

/// A job that stopped after its workers had started, for a reason other than a stop signal
/// (its workers keep dying at start, say): some outputs may have been written.
#[derive(Debug, thiserror::Error)]
#[error("run aborted: {0:#}")]
pub struct Aborted(anyhow::Error);

/// What one job produced: its summary, its memory record and the signal that stopped it.
pub struct JobResult {
    pub summary: Summary,
    pub memory: memory::Record,
    pub signal_code: Option<i32>,
}

/// When the job started: for its durations, and on the wall clock for `watch` and `ls`.
pub(crate) struct Clock {
    started: Instant,
    wall: SystemTime,
}

impl Clock {
    pub(crate) fn now() -> Clock {
        Clock {
            started: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// Runs one job to the end without printing its summary (`run` prints it; `bench` compares).
pub fn run_job(job: &Job) -> anyhow::Result<JobResult> {
    let signals = Signals::register()?;
    let clock = Clock::now();
    let mut planned = plan_job(job, &signals, &clock)?;
    if planned.plan.images.is_empty() {
        return nothing_to_do(job, planned, &clock);
    }
    let workers = job.workers.min(planned.plan.images.len().max(1) as u32);
    let mut block_plan = block_plan(job, &mut planned, workers);
    let backing = job.backing_dir();
    clear_leftovers(job, &backing);
    let window_refused = hold(job, &mut block_plan, &mut planned, &backing);
    let name = match &job.keep {
        Some(dataset) => crate::engine::dataset::dataset_name(dataset)?,
        None => block::fresh_name(),
    };
    let creating = Instant::now();
    let mut block = create_block(&name, backing, &block_plan)?;
    block.set_run_started(clock.wall);
    if !job.quiet && !job.json {
        announce(
            job,
            &block,
            &block_plan,
            planned.plan.rejected.len() + window_refused,
        );
    }
    planned.timings.create_s = creating.elapsed().as_secs_f64();
    let (outcome, memory) = work(job, &block, workers, &signals, &clock, &mut planned.timings)?;
    let summary = collect(job, &block, &block_plan, planned, &outcome, &memory, &clock);
    if summary.kept {
        // Every image has its outcome: the dataset is ready. It stays for other processes to
        // attach by name, until `shmpipe rm`.
        block.set_dataset_ready();
        block.keep();
    }
    // Unlink before reporting: whatever happens to stdout, the block is gone (unless kept).
    drop(block);
    Ok(JobResult {
        summary,
        memory,
        signal_code: outcome.signal.map(|(code, _)| code),
    })
}

/// Walks and probes the folder, assigns and checks the outputs, gives each image its slot's
/// shape and its label; refuses a dataset of no images. A stop signal or `--strict`'s first
/// refusal leaves no image to do.
pub(crate) fn plan_job(job: &Job, signals: &Signals, clock: &Clock) -> anyhow::Result<Planned> {
    let stop_requested = || signals.received().is_some();
    let keep = |relative: &[u8]| {
        job.filters.accept(relative) && job.shard.as_ref().is_none_or(|s| s.contains(relative))
    };
    let skip_output = job.output.as_deref().filter(|_| job.output_in_input);
    let mut plan = plan::plan(
        &job.input,
        &job.entries,
        skip_output,
        job.max_pixels,
        &keep,
        &stop_requested,
    );
    if !job.quiet {
        for pattern in job.filters.unmatched() {
            eprintln!("shmpipe: warning: {pattern} matched no file");
        }
    }
    let timings = Timings {
        plan_s: clock.started.elapsed().as_secs_f64(),
        ..Timings::default()
    };
    let shard_files = job
        .shard
        .as_ref()
        .map(|_| (plan.images.len() + plan.rejected.len() + plan.skipped.len()) as u64);
    if let Some(out) = &job.output {
        plan_outputs(job, &mut plan, out)?;
    }
    let source_pixels = plan
        .images
        .iter()
        .map(|i| u64::from(i.width) * u64::from(i.height))
        .collect();
    if let Some(geometry) = &job.geometry {
        // Each slot takes the image's resized shape (the box's, but under --fit inside); the
        // decoder resizes straight into it.
        for image in &mut plan.images {
            (image.width, image.height) = geometry.slot_shape(image.width, image.height);
        }
    }
    let classes = match &job.labels {
        Labels::Folder => Some(labels::label_by_folder(&job.input, &mut plan.images)?),
        Labels::File(file) => Some(labels::label_by_file(&job.input, file, &mut plan.images)?),
        Labels::None => None,
    };
    let mut failures = failures_of(&plan.rejected);
    let images_planned = (plan.images.len() + plan.rejected.len()) as u64;
    let signal = signals.received();
    if signal.is_some() {
        plan.images.clear();
    }
    if job.strict && !failures.is_empty() {
        // --strict: the first bad file stops the run before any block exists.
        failures.truncate(1);
        plan.images.clear();
    }
    if let (true, Some(dataset), None, []) = (
        plan.images.is_empty(),
        &job.keep,
        signal,
        failures.as_slice(),
    ) {
        bail!("{}", no_dataset(job, dataset, &plan));
    }
    Ok(Planned {
        plan,
        source_pixels,
        classes,
        failures,
        images_planned,
        shard_files,
        timings,
        signal,
    })
}

/// Gives each planned image its output under `out` (named by `--output-name`, else by its
/// relative path), leaves out those `--skip-existing` finds written, and refuses outputs that
/// clash with each other or with an input; warns of flags no output uses.
fn plan_outputs(job: &Job, plan: &mut Plan, out: &Path) -> anyhow::Result<()> {
    if let Some(template) = &job.output_name {
        crate::engine::naming::name_outputs(&mut plan.images, template, job.format)?;
    }
    plan::assign_outputs(plan, &job.input, out, job.format, job.skip_existing);
    plan::check_outputs(plan, &job.input, out, job.format)?;
    if !job.quiet {
        warn_unused_settings(job, plan);
    }
    Ok(())
}

/// Why a dataset of no images is not created: it would be nothing anyone could use, and `save`,
/// `apply` or Python would only say later that the name does not exist.
fn no_dataset(job: &Job, dataset: &str, plan: &Plan) -> String {
    format!(
        "no images in {} ({}): dataset {dataset} not created",
        job.input.display(),
        match plan.skipped.len() {
            0 => "it holds no files".to_string(),
            n => format!("{} without image content skipped", count(n as u64, "file")),
        }
    )
}

/// The summary of a job with no image to decode: nothing found, everything refused, or stopped
/// before its block.
fn nothing_to_do(job: &Job, planned: Planned, clock: &Clock) -> anyhow::Result<JobResult> {
    let Planned {
        plan,
        failures,
        images_planned,
        shard_files,
        timings,
        signal,
        ..
    } = planned;
    // The text summary says so itself.
    if job.json && failures.is_empty() && plan.existing == 0 && signal.is_none() {
        eprintln!("shmpipe: no images found in {}", job.input.display());
    }
    let images_failed = failures.len() as u64;
    let summary = Summary {
        block: None,
        images_planned,
        images_ok: 0,
        images_not_started: images_planned - images_failed,
        images_failed,
        failures,
        folders_refused: failures_of(&plan.refused_folders),
        warnings: Vec::new(),
        unsynced_folders: Vec::new(),
        files_skipped: plan.skipped.len() as u64,
        skipped: names(&plan.skipped),
        list_skipped: job.verbose,
        files_existing: plan.existing as u64,
        images_retried: 0,
        worker_restarts: 0,
        megapixels: 0.0,
        source_megapixels: 0.0,
        wall_s: clock.started.elapsed().as_secs_f64(),
        megapixels_per_s: 0.0,
        workers: 0,
        block_bytes: 0,
        window_slot_bytes: None,
        dataset_bytes: 0,
        memory_measured: false,
        peak_total_pss_bytes: None,
        peak_total_rss_bytes: None,
        stopped_by_signal: signal.map(|(_, name)| name.to_string()),
        stopped_by_strict: job.strict && !plan.rejected.is_empty(),
        shard: job.shard.clone(),
        shard_files,
        kept: false,
        dataset: job.keep.clone(),
        output_dir: None,
        timings,
    };
    Ok(JobResult {
        summary,
        memory: memory::Record::default(),
        signal_code: signal.map(|(code, _)| code),
    })
}

/// Blocks left by killed runs hold memory until removed: sweeps them first (never a live one),
/// and the temporary outputs of killed runs into this job's output folder (never a live run's).
fn clear_leftovers(job: &Job, backing: &Backing) {
    crate::engine::sweep::sweep_before_run(backing, job.quiet);
    if let Some(out) = &job.output {
        for (path, e) in crate::engine::sweep::remove_left_temporaries(out, backing) {
            if !job.quiet {
                eprintln!("shmpipe: warning: cannot remove left-over {path}: {e}");
            }
        }
    }
}

/// Creates the block, saying what to do when its name is taken or its filesystem is too small.
fn create_block(name: &str, backing: Backing, plan: &BlockPlan) -> anyhow::Result<OwnedBlock> {
    match OwnedBlock::create(name, backing, plan) {
        Ok(b) => Ok(b),
        Err(BlockError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("a block named {name} exists already: remove it with `shmpipe rm {name}`, or choose another name")
        }
        Err(e @ BlockError::NoSpace { .. }) => Err(anyhow!(
            "{e}. Give it more room (docker run --shm-size=..., a Kubernetes emptyDir with medium: Memory and a sizeLimit), or put the block in a regular file with --backing DIR"
        )),
        Err(e) => Err(e.into()),
    }
}

/// The line on stderr that says what the block holds. Files refused while planning have no
/// slot: said here so that this line and the summary ("2 of 3 images done, 1 failed") count the
/// same files.
fn announce(job: &Job, block: &OwnedBlock, plan: &BlockPlan, refused: usize) {
    let refused = match refused {
        0 => String::new(),
        n => format!(
            " ({} refused, named at the end)",
            count(n as u64, "more file")
        ),
    };
    let held = match plan.window_slot {
        Some(slot) => format!(
            "a window of {} of {:.1} MiB",
            count(plan.worker_count.into(), "slot"),
            slot as f64 / (1 << 20) as f64
        ),
        None => "the whole dataset".to_string(),
    };
    let line = format!(
        "shmpipe: block {}: {}{refused}, {:.1} MiB ({held}), {}{}",
        block.name(),
        count(block.image_count() as u64, "image"),
        block.len() as f64 / (1 << 20) as f64,
        count(plan.worker_count.into(), "worker"),
        job.geometry.map_or(String::new(), |g| format!(", {g}"))
    );
    let width = crate::engine::summary::width_of(&console::Term::stderr());
    eprintln!("{}", crate::engine::summary::fit(&line, width));
}

/// Spawns the workers and supervises them until every image has its outcome or a signal stops
/// the job; samples the memory meanwhile. The block is marked finished on the way out.
fn work(
    job: &Job,
    block: &OwnedBlock,
    workers: u32,
    signals: &Signals,
    clock: &Clock,
    timings: &mut Timings,
) -> anyhow::Result<(Outcome, memory::Record)> {
    let pids = Arc::new(Mutex::new(Vec::new()));
    let sampler = Sampler::start(Arc::clone(&pids), 20, !job.exact_memory);
    let launch = Launch {
        exe: std::env::current_exe().context("cannot find this program's path to start workers")?,
        block: block.name().to_string(),
        backing: job.backing.clone(),
        max_pixels: job.max_pixels,
        apply: false,
        cores: job.workers,
    };
    let mut pool = Pool::new(launch, workers, pids);
    let display = Display::new(
        block.image_count() as u64,
        workers as usize,
        job.quiet || job.json,
        clock.wall,
    );
    let working = Instant::now();
    let rules = Rules {
        image_timeout: job.image_timeout,
        strict: job.strict,
    };
    let outcome = supervise::supervise(
        block,
        &mut pool,
        &display,
        signals,
        &rules,
        &|_| false,
        &|index| remove_partial_output(block, index, job),
    );
    timings.work_s = working.elapsed().as_secs_f64();
    timings.worker_start = pool.start_cost(block);
    display.update(block);
    display.finish();
    drop(pool);
    let memory = sampler.finish(block.memory_bytes());
    block.set_state(BlockState::Finished);
    let outcome = outcome.map_err(|e| anyhow::Error::new(Aborted(e)))?;
    Ok((outcome, memory))
}

/// The job's summary, once the join is complete and every outcome in the block is final; makes
/// the outputs' renames durable on the way.
fn collect(
    job: &Job,
    block: &OwnedBlock,
    plan: &BlockPlan,
    planned: Planned,
    outcome: &Outcome,
    memory: &memory::Record,
    clock: &Clock,
) -> Summary {
    let Planned {
        plan: files,
        source_pixels,
        mut failures,
        images_planned,
        shard_files,
        timings,
        ..
    } = planned;
    let done = outcomes(job, block, &source_pixels, outcome, &mut failures);
    let unsynced_folders = sync_outputs(job, &done.written);
    let wall_s = clock.started.elapsed().as_secs_f64();
    let source_megapixels = done.source_pixels as f64 / 1e6;
    let images_failed = failures.len() as u64;
    Summary {
        block: Some(block.name().to_string()),
        images_planned,
        images_ok: done.images,
        images_not_started: images_planned.saturating_sub(done.images + images_failed),
        images_failed,
        failures,
        folders_refused: failures_of(&files.refused_folders),
        warnings: done.warnings,
        unsynced_folders,
        files_skipped: files.skipped.len() as u64,
        skipped: names(&files.skipped),
        list_skipped: job.verbose,
        files_existing: files.existing as u64,
        images_retried: outcome.retried,
        worker_restarts: outcome.restarts,
        megapixels: done.pixels as f64 / 1e6,
        source_megapixels,
        wall_s,
        megapixels_per_s: source_megapixels / wall_s.max(1e-9),
        workers: plan.worker_count,
        block_bytes: block.len(),
        window_slot_bytes: plan.window_slot,
        dataset_bytes: plan.pixel_bytes(),
        memory_measured: memory.available,
        peak_total_pss_bytes: memory.available.then_some(memory.peak_pss),
        peak_total_rss_bytes: memory.available.then_some(memory.peak_rss),
        stopped_by_signal: outcome.signal.map(|(_, name)| name.to_string()),
        stopped_by_strict: outcome.strict_stop,
        shard: job.shard.clone(),
        shard_files,
        kept: job.keep.is_some() && outcome.signal.is_none() && !outcome.strict_stop,
        dataset: job.keep.clone(),
        output_dir: job
            .output_as_given
            .as_ref()
            .map(|o| o.display().to_string()),
        timings,
    }
}

/// Each image's outcome in the block, once the join is complete: the done ones counted in
/// [`Done`], the failed ones (and those no worker could take) added to `failures`.
fn outcomes(
    job: &Job,
    block: &OwnedBlock,
    source_pixels: &[u64],
    outcome: &Outcome,
    failures: &mut Vec<Failure>,
) -> Done {
    let mut done = Done::default();
    // The block's images are the planned ones, in order.
    debug_assert_eq!(source_pixels.len(), block.image_count());
    for (i, &source) in source_pixels.iter().enumerate() {
        let path = || {
            job.input
                .join(Path::new(std::ffi::OsStr::from_bytes(block.source(i))))
                .display()
                .to_string()
        };
        match block.images()[i].status() {
            Some(ImageStatus::Done) => done.add(block, i, source, path, job),
            Some(ImageStatus::Failed) => failures.push(Failure {
                path: path(),
                reason: block.message(i).unwrap_or_default(),
            }),
            // Not reached because the run was stopped: neither done nor failed.
            _ if outcome.signal.is_some() || outcome.strict_stop => {}
            _ => failures.push(Failure {
                path: path(),
                reason: "not processed: no worker could take it".into(),
            }),
        }
    }
    done
}

/// The images that were done: their count, pixels, warnings and the outputs written.
#[derive(Default)]
struct Done {
    images: u64,
    pixels: u64,
    source_pixels: u64,
    warnings: Vec<Failure>,
    written: Vec<PathBuf>,
}

impl Done {
    fn add(
        &mut self,
        block: &OwnedBlock,
        i: usize,
        source: u64,
        path: impl Fn() -> String,
        job: &Job,
    ) {
        self.images += 1;
        if let Some(reason) = block.warning(i) {
            self.warnings.push(Failure {
                path: path(),
                reason,
            });
        }
        let slot = block.slot(i);
        self.pixels += (slot.height * slot.width) as u64;
        self.source_pixels += source;
        self.written.extend(output_target(block, i, job));
    }
}

/// Paths as the summary shows them.
pub(crate) fn names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

/// Files or folders the walk refused, as the summary lists them: each path with its reason.
pub(crate) fn failures_of(rejected: &[plan::Rejected]) -> Vec<Failure> {
    rejected
        .iter()
        .map(|r| Failure {
            path: r.path.display().to_string(),
            reason: r.reason.clone(),
        })
        .collect()
}
