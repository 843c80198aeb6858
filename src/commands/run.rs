//! `shmpipe run`: validate, plan, create the block, spawn and supervise the workers, join, report,
//! unlink. The story of one run, top to bottom.
//!
//! Everything that can be refused is refused before the block exists. Once it exists, the
//! [`OwnedBlock`] unlinks it on every path out of this module (drop), and the [`Pool`] leaves no
//! worker running.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use shmpipe_block::{
    self as block, Backing, BlockError, BlockPlan, BlockState, ImageStatus, OwnedBlock,
};
use shmpipe_worker::codec::{self, FORMATS};
use shmpipe_worker::ops::OpChain;
use shmpipe_worker::resize::{Fit, Geometry};

use crate::cli::RunCli;
use crate::exit;
use crate::memory::Sampler;
use crate::plan;
use crate::progress::Display;
use crate::shard::Shard;
use crate::summary::{Failure, Summary, Timings};
use crate::supervise::{self, Launch, Pool, Rules, Signals};

pub fn run(args: RunCli) -> i32 {
    match execute(args) {
        Ok(code) => code,
        // Images may have been written: 2 says "nothing was created", so this is 1.
        Err(err) if err.downcast_ref::<Aborted>().is_some() => {
            eprintln!("shmpipe: error: {err:#}; the outputs written before are complete");
            exit::SOME_FAILED
        }
        Err(err) => {
            eprintln!("shmpipe: error: {err:#}");
            exit::USAGE
        }
    }
}

/// A run that stopped after its workers had started, for a reason other than a stop signal
/// (its workers keep dying at start, say): some outputs may have been written.
#[derive(Debug, thiserror::Error)]
#[error("run aborted: {0:#}")]
pub struct Aborted(anyhow::Error);

/// Validated settings of a run.
struct Settings {
    input: PathBuf,
    output: Option<PathBuf>,
    chain: OpChain,
    format: Option<image::ImageFormat>,
    workers: u32,
    image_timeout: Option<Duration>,
    strict: bool,
    shard: Option<Shard>,
    /// The output folder is inside the input folder and holds only outputs: the walk skips it.
    output_in_input: bool,
    /// `--resize`, `--fit` and `--no-enlarge`.
    geometry: Option<Geometry>,
}

fn validate(args: &RunCli) -> anyhow::Result<Settings> {
    let chain = OpChain::parse(&args.ops).map_err(|e| anyhow!("invalid --ops: {e}"))?;
    let geometry = match args.resize {
        None => None,
        Some(sides) => {
            let fit = Fit::parse(&args.fit).ok_or_else(|| anyhow!("invalid --fit {}", args.fit))?;
            Some(Geometry::new(sides, fit, args.no_enlarge).map_err(|e| anyhow!("{e}"))?)
        }
    };
    let format = match &args.format {
        None => None,
        Some(name) => Some(codec::parse_format(name).ok_or_else(|| {
            anyhow!("invalid --format {name:?}: expected png, jpeg, webp, gif, bmp or tiff")
        })?),
    };
    let input = &args.input;
    if !input.exists() {
        bail!("input folder {} does not exist", input.display());
    }
    if !input.is_dir() {
        bail!("input {} is not a folder", input.display());
    }
    let input = input
        .canonicalize()
        .with_context(|| format!("cannot resolve input folder {}", input.display()))?;
    let mut output_in_input = false;
    let output = match &args.out {
        None => None,
        Some(out) => {
            let existed = out.exists();
            std::fs::create_dir_all(out)
                .with_context(|| format!("cannot create output folder {}", out.display()))?;
            let out = out
                .canonicalize()
                .with_context(|| format!("cannot resolve output folder {}", out.display()))?;
            if out == input {
                bail!(
                    "output folder {} is the input folder: refusing to overwrite the inputs",
                    out.display()
                );
            }
            tempfile::Builder::new()
                .prefix(".shmpipe-probe-")
                .tempfile_in(&out)
                .with_context(|| format!("output folder {} is not writable", out.display()))?;
            if out.starts_with(&input) {
                output_in_input = output_folder_is_ours(&out, existed)?;
            }
            Some(out)
        }
    };
    if let Some(dir) = &args.backing {
        if !dir.is_dir() {
            bail!("--backing {} is not a folder", dir.display());
        }
    }
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let shard = crate::shard::resolve(args.shard.as_deref(), args.shards, &env)?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    Ok(Settings {
        input,
        output,
        chain,
        format,
        workers,
        image_timeout: (args.image_timeout > 0).then(|| Duration::from_secs(args.image_timeout)),
        strict: args.strict,
        shard,
        output_in_input,
        geometry,
    })
}

/// Marks an output folder that only shmpipe writes to (see [`output_folder_is_ours`]).
const OUTPUT_MARKER: &str = ".shmpipe-output";

/// Whether an output folder inside the input folder holds nothing but shmpipe's outputs, so the
/// plan may leave it out of the walk: one this run created, an empty one, or one an earlier run
/// marked so. Those are marked ([`OUTPUT_MARKER`]). Any other is walked as part of the input, and
/// its files are inputs that no output may replace (`plan::check_outputs`).
fn output_folder_is_ours(out: &Path, existed: bool) -> anyhow::Result<bool> {
    let marker = out.join(OUTPUT_MARKER);
    if marker.exists() {
        return Ok(true);
    }
    let empty = || {
        std::fs::read_dir(out)
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false)
    };
    if existed && !empty() {
        return Ok(false);
    }
    std::fs::write(
        &marker,
        "Outputs of shmpipe. This folder is inside the input folder and is left out of its walk.\n",
    )
    .with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(true)
}

/// What one run produced: its summary, its memory record and the signal that stopped it.
pub struct JobResult {
    pub summary: Summary,
    pub memory: crate::memory::Record,
    pub signal_code: Option<i32>,
}

/// Test-only: `SHMPIPE_TEST_PAUSE_AFTER_JOB=SECONDS` makes the coordinator wait that long
/// between the end of its job and its report, so a test can signal it there. It says on stderr
/// when it starts waiting: the job's signal handlers are gone by then.
pub const PAUSE_AFTER_JOB_ENV: &str = "SHMPIPE_TEST_PAUSE_AFTER_JOB";

fn execute(args: RunCli) -> anyhow::Result<i32> {
    let job = run_job(&args)?;
    if let Some(secs) =
        shmpipe_worker::worker::test_hook(PAUSE_AFTER_JOB_ENV).and_then(|s| s.parse().ok())
    {
        eprintln!("shmpipe: test: pausing {secs} s after the job");
        std::thread::sleep(Duration::from_secs(secs));
    }
    if let (Some(shard), Some(out), None) = (&job.summary.shard, &args.out, job.signal_code) {
        write_shard_manifest(out, shard, &job.summary)?;
    }
    report(&args, &job.summary, job.signal_code)
}

/// `OUT/.shmpipe-shard-K-of-N.json`: the summary of a shard that ran to its end, so whoever
/// schedules the shards can check that every one finished (and with what failures).
fn write_shard_manifest(out: &Path, shard: &Shard, summary: &Summary) -> anyhow::Result<()> {
    let name = format!(".shmpipe-shard-{}-of-{}.json", shard.index, shard.count);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{name}.tmp-"))
        .tempfile_in(out)
        .with_context(|| format!("cannot write the shard manifest in {}", out.display()))?;
    serde_json::to_writer_pretty(&mut tmp, summary)?;
    tmp.persist(out.join(&name))
        .with_context(|| format!("cannot write {}", out.join(&name).display()))?;
    Ok(())
}

/// Runs one job to the end without printing its summary (`run` prints it; `bench` compares).
pub fn run_job(args: &RunCli) -> anyhow::Result<JobResult> {
    let settings = validate(args)?;
    let signals = Signals::register()?;
    let started = Instant::now();
    // The same moment on the wall clock, recorded in the block for `watch` and `ls`.
    let started_wall = std::time::SystemTime::now();

    let stop_requested = || signals.received().is_some();
    let shard = settings.shard.clone();
    let keep = |relative: &[u8]| shard.as_ref().is_none_or(|s| s.contains(relative));
    let mut planned = plan::plan(
        &settings.input,
        settings
            .output
            .as_deref()
            .filter(|_| settings.output_in_input),
        args.max_pixels,
        &keep,
        &stop_requested,
    );
    let mut timings = Timings {
        plan_s: started.elapsed().as_secs_f64(),
        ..Timings::default()
    };
    let shard_files = shard
        .as_ref()
        .map(|_| (planned.images.len() + planned.rejected.len() + planned.skipped) as u64);
    if let Some(out) = &settings.output {
        plan::assign_outputs(
            &mut planned,
            &settings.input,
            out,
            settings.format,
            args.skip_existing,
        );
        plan::check_outputs(&planned, &settings.input, out, settings.format)?;
        if !args.quiet {
            warn_unused_settings(args, &planned, settings.format);
        }
    }
    // The pixels each planned image's source decodes to, before any --resize: the work.
    let mut source_pixels: Vec<u64> = planned
        .images
        .iter()
        .map(|i| u64::from(i.width) * u64::from(i.height))
        .collect();
    if let Some(geometry) = &settings.geometry {
        // Each slot takes the image's resized shape (the box's, but under --fit inside); the
        // decoder resizes straight into it.
        for image in &mut planned.images {
            (image.width, image.height) = geometry.slot_shape(image.width, image.height);
        }
    }
    let classes = match &args.labels {
        Some(_) => Some(plan::label_by_folder(&settings.input, &mut planned.images)?),
        None => None,
    };
    let mut failures: Vec<Failure> = planned
        .rejected
        .iter()
        .map(|r| Failure {
            path: r.path.display().to_string(),
            reason: r.reason.clone(),
        })
        .collect();
    let images_planned = (planned.images.len() + planned.rejected.len()) as u64;
    let signal = signals.received();
    if signal.is_some() {
        planned.images.clear();
    }
    if args.strict && !failures.is_empty() {
        // --strict: the first bad file stops the run before any block exists.
        failures.truncate(1);
        planned.images.clear();
    }
    if let (true, Some(dataset), None, []) = (
        planned.images.is_empty(),
        &args.keep,
        signal,
        failures.as_slice(),
    ) {
        // A dataset of no images would be nothing anyone could use; none is created, and
        // `save`, `apply` or Python would only say later that the name does not exist.
        bail!(
            "no images in {} ({}): dataset {dataset} not created",
            settings.input.display(),
            match planned.skipped {
                0 => "it holds no files".to_string(),
                n => format!(
                    "{} without image content skipped",
                    crate::summary::count(n as u64, "file")
                ),
            }
        );
    }
    if planned.images.is_empty() {
        // The text summary says so itself.
        if args.json && failures.is_empty() && planned.existing == 0 && signal.is_none() {
            eprintln!("shmpipe: no images found in {}", settings.input.display());
        }
        let images_failed = failures.len() as u64;
        let summary = Summary {
            block: None,
            images_planned,
            images_ok: 0,
            images_not_started: images_planned - images_failed,
            images_failed,
            failures,
            warnings: Vec::new(),
            unsynced_folders: Vec::new(),
            files_skipped: planned.skipped as u64,
            files_existing: planned.existing as u64,
            images_retried: 0,
            worker_restarts: 0,
            megapixels: 0.0,
            source_megapixels: 0.0,
            wall_s: started.elapsed().as_secs_f64(),
            megapixels_per_s: 0.0,
            workers: 0,
            block_bytes: 0,
            window_slot_bytes: None,
            dataset_bytes: 0,
            memory_measured: false,
            peak_total_pss_bytes: None,
            peak_total_rss_bytes: None,
            stopped_by_signal: signal.map(|(_, name)| name.to_string()),
            stopped_by_strict: args.strict && !planned.rejected.is_empty(),
            shard: settings.shard.clone(),
            shard_files,
            kept: false,
            output_dir: None,
            timings,
        };
        return Ok(JobResult {
            summary,
            memory: crate::memory::Record::default(),
            signal_code: signal.map(|(code, _)| code),
        });
    }
    let workers = settings.workers.min(planned.images.len().max(1) as u32);
    let mut block_plan = BlockPlan {
        worker_count: workers,
        // A kept dataset holds one layout (one (N, H, W, C) array): RGB unless told.
        channels: match (args.channels, &args.keep) {
            (block::CHANNELS_PER_IMAGE, Some(_)) => 3,
            (channels, _) => channels,
        },
        images: planned.images,
        input_root: settings.input.as_os_str().as_bytes().to_vec(),
        output_root: settings
            .output
            .as_ref()
            .map(|o| o.as_os_str().as_bytes().to_vec())
            .unwrap_or_default(),
        op_chain: settings
            .chain
            .ops()
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(","),
        output_format: settings
            .format
            .map(|f| f.extensions_str()[0].to_string())
            .unwrap_or_default(),
        quality: args.quality.unwrap_or(DEFAULT_QUALITY) as u32,
        png_compression: args.png_compression.unwrap_or(codec::PngCompression::Fast) as u32,
        strict: args.strict,
        copy_mode: args.mode == "copy",
        rgb_output: args.rgb,
        kept: args.keep.is_some(),
        no_fsync: args.no_fsync,
        max_pixels: args.max_pixels,
        allow_truncated: args.allow_truncated,
        strip: args.strip,
        lossless: args.lossless,
        resize_fit: settings.geometry.map_or(0, |g| g.fit as u32),
        classes,
        window_slot: None,
    };
    let backing = args.backing.clone().map_or(Backing::Shm, Backing::Dir);
    // Blocks left by killed runs hold memory until removed: sweep them first (never a live one).
    crate::blocks::sweep_before_run(&backing, args.quiet);
    if let Some(out) = &settings.output {
        // Temporary outputs of runs into this folder that were killed: never a live run's.
        for (path, e) in crate::blocks::remove_left_temporaries(out, &backing) {
            if !args.quiet {
                eprintln!("shmpipe: warning: cannot remove left-over {path}: {e}");
            }
        }
    }
    // A plain run holds a window of the folder, a kept dataset all of it.
    let mut window_refused = 0;
    if args.keep.is_none() && !block_plan.copy_mode {
        let free = block::free_bytes(&backing.dir()).unwrap_or(u64::MAX);
        let before = failures.len();
        plan_window(
            &mut block_plan,
            &mut source_pixels,
            free,
            &settings.input,
            &mut failures,
        );
        window_refused = failures.len() - before;
    }
    let name = match &args.keep {
        Some(dataset) => crate::blocks::dataset_name(dataset)?,
        None => block::fresh_name(),
    };
    let creating = Instant::now();
    let mut block = match OwnedBlock::create(&name, backing, &block_plan) {
        Ok(b) => b,
        Err(BlockError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            bail!("a block named {name} exists already: remove it with `shmpipe rm {name}`, or choose another name")
        }
        Err(e @ BlockError::NoSpace { .. }) => {
            return Err(anyhow!(
                "{e}. Give it more room (docker run --shm-size=..., a Kubernetes emptyDir with medium: Memory and a sizeLimit), or put the block in a regular file with --backing DIR"
            ))
        }
        Err(e) => return Err(e.into()),
    };
    block.set_run_started(started_wall);
    if !args.quiet && !args.json {
        // Files refused while planning have no slot: said here so that this line and the
        // summary ("2 of 3 images done, 1 failed") count the same files.
        let refused = match planned.rejected.len() + window_refused {
            0 => String::new(),
            n => format!(
                " ({} refused, named at the end)",
                crate::summary::count(n as u64, "more file")
            ),
        };
        let held = match block_plan.window_slot {
            Some(slot) => format!(
                "a window of {} of {:.1} MiB",
                crate::summary::count(workers.into(), "slot"),
                slot as f64 / (1 << 20) as f64
            ),
            None => "the whole dataset".to_string(),
        };
        let line = format!(
            "shmpipe: block {name}: {}{refused}, {:.1} MiB ({held}), {}{}",
            crate::summary::count(block.image_count() as u64, "image"),
            block.len() as f64 / (1 << 20) as f64,
            crate::summary::count(workers.into(), "worker"),
            settings
                .geometry
                .map_or(String::new(), |g| format!(", {g}"))
        );
        let width = crate::summary::width_of(&console::Term::stderr());
        eprintln!("{}", crate::summary::fit(&line, width));
    }

    timings.create_s = creating.elapsed().as_secs_f64();

    let pids = Arc::new(Mutex::new(Vec::new()));
    let sampler = Sampler::start(Arc::clone(&pids), 20, !args.exact_memory);
    let launch = Launch {
        exe: std::env::current_exe().context("cannot find this program's path to start workers")?,
        block: name.clone(),
        backing: args.backing.clone(),
        max_pixels: args.max_pixels,
        apply: false,
        cores: settings.workers,
    };
    let mut pool = Pool::new(launch, workers, pids);
    let display = Display::new(
        block.image_count() as u64,
        workers as usize,
        args.quiet || args.json,
        started_wall,
    );
    let working = Instant::now();
    let rules = Rules {
        image_timeout: settings.image_timeout,
        strict: settings.strict,
    };
    let outcome = supervise::supervise(
        &block,
        &mut pool,
        &display,
        &signals,
        &rules,
        &|_| false,
        &|index| remove_partial_output(&block, index, &settings),
    );
    timings.work_s = working.elapsed().as_secs_f64();
    timings.worker_start = pool.start_cost(&block);
    display.update(&block);
    display.finish();
    drop(pool);
    let memory = sampler.finish(block.memory_bytes());
    block.set_state(BlockState::Finished);
    let outcome = outcome.map_err(|e| anyhow::Error::new(Aborted(e)))?;

    // Join is complete: every outcome in the block is final.
    let mut images_ok = 0;
    let mut pixels_ok = 0u64;
    let mut source_pixels_ok = 0u64;
    let mut warnings = Vec::new();
    let mut written = Vec::new();
    // The block's images are the planned ones, in order.
    debug_assert_eq!(source_pixels.len(), block.image_count());
    for (i, &source) in source_pixels.iter().enumerate() {
        let path = || {
            settings
                .input
                .join(Path::new(std::ffi::OsStr::from_bytes(block.source(i))))
                .display()
                .to_string()
        };
        match block.images()[i].status() {
            Some(ImageStatus::Done) => {
                images_ok += 1;
                if let Some(reason) = block.warning(i) {
                    warnings.push(Failure {
                        path: path(),
                        reason,
                    });
                }
                let slot = block.slot(i);
                pixels_ok += (slot.height * slot.width) as u64;
                source_pixels_ok += source;
                written.extend(output_target(&block, i, &settings));
            }
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
    let mut unsynced_folders = Vec::new();
    if let (Some(root), false) = (&settings.output, args.no_fsync) {
        // Each output's data was flushed before its rename; this makes the renames durable.
        for (folder, e) in codec::sync_folders(root, written.iter().map(PathBuf::as_path)) {
            unsynced_folders.push(Failure {
                path: folder.display().to_string(),
                reason: e.to_string(),
            });
        }
    }
    let wall_s = started.elapsed().as_secs_f64();
    let megapixels = pixels_ok as f64 / 1e6;
    let source_megapixels = source_pixels_ok as f64 / 1e6;
    let images_failed = failures.len() as u64;
    let summary = Summary {
        block: Some(name),
        images_planned,
        images_ok,
        images_not_started: images_planned.saturating_sub(images_ok + images_failed),
        images_failed,
        failures,
        warnings,
        unsynced_folders,
        files_skipped: planned.skipped as u64,
        files_existing: planned.existing as u64,
        images_retried: outcome.retried,
        worker_restarts: outcome.restarts,
        megapixels,
        source_megapixels,
        wall_s,
        megapixels_per_s: source_megapixels / wall_s.max(1e-9),
        workers,
        block_bytes: block.len(),
        window_slot_bytes: block_plan.window_slot,
        dataset_bytes: block_plan.pixel_bytes(),
        memory_measured: memory.available,
        peak_total_pss_bytes: memory.available.then_some(memory.peak_pss),
        peak_total_rss_bytes: memory.available.then_some(memory.peak_rss),
        stopped_by_signal: outcome.signal.map(|(_, name)| name.to_string()),
        stopped_by_strict: outcome.strict_stop,
        shard: settings.shard.clone(),
        shard_files,
        kept: args.keep.is_some() && outcome.signal.is_none() && !outcome.strict_stop,
        output_dir: args.out.as_ref().map(|o| o.display().to_string()),
        timings,
    };
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

/// Prints the summary and gives the exit code: the signal's, else 1 when anything failed.
fn report(args: &RunCli, summary: &Summary, signal_code: Option<i32>) -> anyhow::Result<i32> {
    if args.json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else if !args.quiet {
        print!(
            "{}",
            crate::summary::fit(
                &summary.text(),
                crate::summary::width_of(&console::Term::stdout())
            )
        );
    }
    Ok(match signal_code {
        Some(code) => code,
        None if summary.images_failed > 0 || !summary.unsynced_folders.is_empty() => {
            exit::SOME_FAILED
        }
        None => exit::OK,
    })
}

/// JPEG and lossy WebP quality when `--quality` is not given.
const DEFAULT_QUALITY: u8 = 90;

/// Says once, on stderr, when a flag given has no effect on any output of this run: `--quality`
/// with no JPEG or lossy WebP among the outputs, `--png-compression` with no PNG, `--lossless`
/// with no WebP.
fn warn_unused_settings(args: &RunCli, planned: &plan::Plan, format: Option<image::ImageFormat>) {
    let outputs = |wanted: image::ImageFormat| {
        planned
            .images
            .iter()
            .any(|i| format.unwrap_or(FORMATS[i.format as usize % FORMATS.len()]) == wanted)
    };
    let lossy_webp = outputs(image::ImageFormat::WebP) && !args.lossless;
    if args.quality.is_some() && !outputs(image::ImageFormat::Jpeg) && !lossy_webp {
        eprintln!("shmpipe: warning: --quality has no effect: no output of this run is a JPEG or a lossy WebP (it sets their quality)");
    }
    if args.lossless && !outputs(image::ImageFormat::WebP) {
        eprintln!("shmpipe: warning: --lossless has no effect: no output of this run is a WebP");
    }
    if args.png_compression.is_some() && !outputs(image::ImageFormat::Png) {
        eprintln!(
            "shmpipe: warning: --png-compression has no effect: no output of this run is a PNG"
        );
    }
}

/// Sizes a plain run's window ([`block::FLAG_WINDOW`]): one slot per worker, reused image after
/// image, each as large as the largest planned image, unless the `free` bytes of the block's
/// filesystem hold less. Then each slot is one worker's share of them, and every image larger
/// fails alone, with its reason, before the block exists: a few files declaring huge sizes
/// never refuse the whole run.
fn plan_window(
    plan: &mut BlockPlan,
    source_pixels: &mut Vec<u64>,
    free: u64,
    input: &Path,
    failures: &mut Vec<Failure>,
) {
    let workers = u64::from(plan.worker_count.max(1));
    let tables = plan.tables_size().unwrap_or(u64::MAX);
    let share = free.saturating_sub(tables) / workers / block::ALIGN * block::ALIGN;
    let slot = plan
        .images
        .iter()
        .filter_map(|img| plan.image_bytes(img))
        .filter(|&b| b <= share)
        .max()
        .unwrap_or(0);
    let images = std::mem::take(&mut plan.images);
    let mut pixels = Vec::with_capacity(images.len());
    for (img, source) in images.into_iter().zip(source_pixels.drain(..)) {
        match plan.image_bytes(&img) {
            Some(b) if b <= slot => {
                plan.images.push(img);
                pixels.push(source);
            }
            b => failures.push(Failure {
                path: input
                    .join(Path::new(std::ffi::OsStr::from_bytes(&img.source)))
                    .display()
                    .to_string(),
                reason: format!(
                    "its {:.1} MiB of pixels do not fit one worker's share ({:.1} MiB) of the free shared memory: use fewer workers (-j), give it more room, or --backing DIR",
                    b.unwrap_or(u64::MAX) as f64 / (1 << 20) as f64,
                    share as f64 / (1 << 20) as f64
                ),
            }),
        }
    }
    *source_pixels = pixels;
    plan.window_slot = Some(slot);
}

/// Where image `index`'s output goes, when the run writes outputs.
fn output_target(block: &OwnedBlock, index: usize, settings: &Settings) -> Option<PathBuf> {
    let root = settings.output.as_ref()?;
    let slot = block.slot(index);
    let input_format = FORMATS[slot.format as usize % FORMATS.len()];
    let relative = Path::new(std::ffi::OsStr::from_bytes(block.source(index)));
    let output_format = settings.format.unwrap_or(input_format);
    Some(codec::output_path(root, relative, output_format))
}

/// Removes the temporary file a killed worker may have left beside an image's output.
fn remove_partial_output(block: &OwnedBlock, index: usize, settings: &Settings) {
    let Some(target) = output_target(block, index, settings) else {
        return;
    };
    let Some(dir) = target.parent() else { return };
    // Only this run's: another run writing the same image into the same folder keeps its own.
    let prefix = codec::temp_prefix(&target, block.name());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().as_bytes().starts_with(prefix.as_bytes()) {
                // The dead worker's lock went with it; a run of the same block name in another
                // --backing folder holds its own.
                let _ = codec::remove_temporary_unless_held(&entry.path());
            }
        }
    }
}
