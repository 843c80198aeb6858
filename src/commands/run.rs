//! `shmpipe run`: its flags made into a [`Job`], the job run by the engine, the summary printed.
//! A shard that ran to its end leaves its manifest in the output folder.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use shmpipe_worker::codec;
use shmpipe_worker::ops::OpChain;
use shmpipe_worker::resize::{Fit, Geometry};

use crate::cli::RunCli;
use crate::engine::job::{run_job, Aborted};
use crate::engine::naming::NameTemplate;
use crate::engine::settings::Job;
use crate::engine::shard::Shard;
use crate::engine::summary::Summary;
use crate::exit;

pub fn run(args: RunCli) -> i32 {
    match job_of(&args) {
        Ok(job) => run_and_report(&job),
        Err(err) => {
            eprintln!("shmpipe: error: {err:#}");
            exit::USAGE
        }
    }
}

/// Runs `job`, prints its summary and gives the exit code (`run` and `load`); under
/// `--dry-run`, says what it would do instead.
pub fn run_and_report(job: &Job) -> i32 {
    if job.dry_run {
        return dry_run(job);
    }
    match execute(job) {
        Ok(code) => code,
        // Images may have been written: 2 says "nothing was created", so this is 1.
        Err(err) if err.downcast_ref::<Aborted>().is_some() => {
            eprintln!("shmpipe: error: {err:#}; the outputs written before are complete");
            exit::SOME_FAILED
        }
        Err(err) => {
            eprintln!("shmpipe: error: {err:#}");
            remove_unused_output_folder(job);
            exit::USAGE
        }
    }
}

/// After a refused job: the output folders it created, when they hold nothing (but the marker
/// it wrote), so that a refusal leaves nothing behind. A folder holding anything else stays.
fn remove_unused_output_folder(job: &Job) {
    let (Some(top), Some(out)) = (&job.output_created, &job.output) else {
        return;
    };
    let only_marker = std::fs::read_dir(out).is_ok_and(|entries| {
        entries
            .flatten()
            .all(|e| e.file_name() == std::ffi::OsStr::new(OUTPUT_MARKER))
    });
    if !only_marker {
        return;
    }
    let _ = std::fs::remove_file(out.join(OUTPUT_MARKER));
    // From the output folder up to the outermost one created; each only if empty.
    for dir in out.ancestors() {
        if std::fs::remove_dir(dir).is_err() || dir == top {
            break;
        }
    }
}

/// `--dry-run`: the plan as text or JSON on stdout; the exit status the job would have, or 2 for
/// a job that would be refused before its block.
fn dry_run(job: &Job) -> i32 {
    match crate::engine::dry_run::dry_run(job) {
        Ok(report) => {
            if job.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("a dry run serialises")
                );
            } else if !job.quiet {
                print!("{}", report.text());
            }
            report.exit_code()
        }
        Err(err) => {
            eprintln!("shmpipe: error: dry run: the job would be refused: {err:#}");
            exit::USAGE
        }
    }
}

/// The job `run` asks for: its flags checked and resolved, its output folder created (only
/// resolved under `--dry-run`).
fn job_of(args: &RunCli) -> anyhow::Result<Job> {
    let chain = OpChain::parse(&args.ops).map_err(|e| anyhow!("invalid --ops: {e}"))?;
    if let (Some(name), Some(op)) = (&args.keep, chain.ops().iter().find(|o| o.changes_shape())) {
        bail!(
            "--keep {name}: {op} changes an image's size, and a kept dataset's images keep their slots' (one array): resize with --resize, or run the op without --keep"
        );
    }
    let geometry = match args.resize {
        None => None,
        Some(sides) => {
            let fit = Fit::parse(&args.fit).ok_or_else(|| anyhow!("invalid --fit {}", args.fit))?;
            Some(Geometry::of(sides, fit, args.no_enlarge).map_err(|e| anyhow!("{e}"))?)
        }
    };
    let format = match &args.format {
        None => None,
        Some(name) => Some(codec::parse_format(name).ok_or_else(|| {
            anyhow!("invalid --format {name:?}: expected png, jpeg, webp, gif, bmp or tiff")
        })?),
    };
    let job = args.inputs.job()?;
    let mut job = job.backing(args.backing.clone())?;
    let env: std::collections::HashMap<String, String> = std::env::vars().collect();
    job.shard = crate::engine::shard::resolve(args.shard.as_deref(), args.shards, &env)?;
    if let Some(template) = &args.output_name {
        let template = NameTemplate::parse(template).map_err(|e| anyhow!("{e}"))?;
        if template.numbers() && job.shard.is_some() {
            bail!("--output-name {template}: {{index}} counts the images of one run, and shards would give the same numbers to different images: name by {{dir}} and {{stem}} instead");
        }
        job.output_name = Some(template);
    }
    if let Some(workers) = args.workers {
        job.workers = workers;
    }
    // Last, so that no refusal of the flags above leaves a folder behind.
    if let Some(out) = &args.out {
        let (output, output_in_input, created) = match args.report.dry_run {
            true => planned_output_folder(out, &job.input).map(|(o, i)| (o, i, None))?,
            false => output_folder(out, &job.input)?,
        };
        job.output = Some(output);
        job.output_as_given = Some(out.clone());
        job.output_in_input = output_in_input;
        job.output_created = created;
    }
    Ok(Job {
        chain,
        format,
        geometry,
        quality: args.quality,
        png_compression: args.png_compression,
        strip: args.strip,
        lossless: args.lossless,
        background: args.background,
        rgb: args.rgb,
        channels: args.channels,
        max_pixels: args.limits.max_pixels,
        image_timeout: args.limits.image_timeout(),
        copy_mode: args.mode == "copy",
        strict: args.strict,
        allow_truncated: args.allow_truncated,
        skip_existing: args.skip_existing,
        no_fsync: args.no_fsync,
        exact_memory: args.exact_memory,
        keep: args.keep.clone(),
        labels: args.labels.clone().unwrap_or_default(),
        ..args.report.onto(job)
    })
}

/// Creates the output folder `out` and resolves it; refuses the input folder itself and one
/// this user cannot write. Says whether it lies inside the input and holds only our outputs,
/// and gives the outermost folder it created (resolved), if any.
fn output_folder(out: &Path, input: &Path) -> anyhow::Result<(PathBuf, bool, Option<PathBuf>)> {
    let existed = out.exists();
    // The outermost missing folder of `out`, to be created with it.
    let absolute = std::path::absolute(out)
        .with_context(|| format!("cannot resolve output folder {}", out.display()))?;
    let outermost = absolute
        .ancestors()
        .take_while(|a| std::fs::symlink_metadata(a).is_err())
        .last()
        .map(Path::to_path_buf);
    std::fs::create_dir_all(out)
        .with_context(|| format!("cannot create output folder {}", out.display()))?;
    let created = outermost.and_then(|o| o.canonicalize().ok());
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
    let ours = out.starts_with(input) && output_folder_is_ours(&out, existed)?;
    Ok((out, ours, created))
}

/// The output folder `out` as [`output_folder`] would make it, for `--dry-run`: resolved through
/// its longest existing ancestor, nothing created or marked; refused where that would refuse it.
fn planned_output_folder(out: &Path, input: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let absolute = std::path::absolute(out)
        .with_context(|| format!("cannot resolve output folder {}", out.display()))?;
    let mut existing = absolute.as_path();
    let mut missing = Vec::new();
    while std::fs::symlink_metadata(existing).is_err() {
        missing.extend(existing.file_name());
        existing = existing.parent().unwrap_or(Path::new("/"));
    }
    let mut resolved = existing
        .canonicalize()
        .with_context(|| format!("cannot resolve output folder {}", out.display()))?;
    if !resolved.is_dir() {
        bail!(
            "cannot create output folder {}: {} is not a folder",
            out.display(),
            resolved.display()
        );
    }
    let writable = rustix::fs::access(&resolved, rustix::fs::Access::WRITE_OK).is_ok();
    resolved.extend(missing.iter().rev());
    if resolved == input {
        bail!(
            "output folder {} is the input folder: refusing to overwrite the inputs",
            resolved.display()
        );
    }
    if !writable {
        bail!("output folder {} is not writable", out.display());
    }
    let ours = resolved.starts_with(input)
        && (resolved.join(OUTPUT_MARKER).exists()
            || std::fs::read_dir(&resolved).map_or(true, |mut e| e.next().is_none()));
    Ok((resolved, ours))
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

/// Test-only: `SHMPIPE_TEST_PAUSE_AFTER_JOB=MS` makes the coordinator wait that many milliseconds
/// between the end of its job and its report, so a test can signal it there. It says on stderr
/// when it starts waiting: the job's signal handlers are gone by then.
pub const PAUSE_AFTER_JOB_ENV: &str = "SHMPIPE_TEST_PAUSE_AFTER_JOB";

fn execute(job: &Job) -> anyhow::Result<i32> {
    let done = run_job(job)?;
    if let Some(ms) =
        shmpipe_worker::hooks::test_hook(PAUSE_AFTER_JOB_ENV).and_then(|s| s.parse().ok())
    {
        eprintln!("shmpipe: test: pausing {ms} ms after the job");
        std::thread::sleep(Duration::from_millis(ms));
    }
    if let (Some(shard), Some(out), None) =
        (&done.summary.shard, &job.output_as_given, done.signal_code)
    {
        write_shard_manifest(out, shard, &done.summary)?;
    }
    report(job, &done.summary, done.signal_code)
}

/// `OUT/.shmpipe-shard-K-of-N.json`: the summary of a shard that ran to its end, so whoever
/// schedules the shards can check that every one finished (and with what failures).
fn write_shard_manifest(out: &Path, shard: &Shard, summary: &Summary) -> anyhow::Result<()> {
    let name = format!(".shmpipe-shard-{}-of-{}.json", shard.index, shard.count);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{name}.tmp-"))
        .permissions(codec::ordinary_mode())
        .tempfile_in(out)
        .with_context(|| format!("cannot write the shard manifest in {}", out.display()))?;
    serde_json::to_writer_pretty(&mut tmp, summary)?;
    tmp.persist(out.join(&name))
        .with_context(|| format!("cannot write {}", out.join(&name).display()))?;
    Ok(())
}

/// Prints the summary and gives the exit code: the signal's, else 1 when anything failed.
fn report(job: &Job, summary: &Summary, signal_code: Option<i32>) -> anyhow::Result<i32> {
    if job.json {
        println!("{}", serde_json::to_string_pretty(summary)?);
    } else if !job.quiet {
        print!(
            "{}",
            crate::engine::summary::fit(
                &summary.text(),
                crate::engine::summary::width_of(&console::Term::stdout())
            )
        );
    }
    Ok(match signal_code {
        Some(code) => code,
        None if summary.images_failed > 0
            || !summary.unsynced_folders.is_empty()
            || !summary.folders_refused.is_empty() =>
        {
            exit::SOME_FAILED
        }
        None => exit::OK,
    })
}
