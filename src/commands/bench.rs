//! `shmpipe bench memory`: the same job twice, shared block against a private copy of the
//! dataset in every worker, with the total Pss of all processes measured side by side.
//!
//! Both modes are the real pipeline (`run --mode shared|copy`); nothing is computed on paper.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context};
use shmpipe_worker::ops::OpChain;
use shmpipe_worker::resize::{Fit, Geometry};

use crate::cli::BenchMemoryCli;
use crate::commands::chart::{self, MemoryBench, ModeResult};
use crate::commands::gen;
use crate::engine::job::run_job;
use crate::engine::settings::Job;
use crate::exit;

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

fn job(input: &Path, args: &BenchMemoryCli, mode: &str, workers: u32) -> anyhow::Result<Job> {
    let chain = OpChain::parse(&args.ops).map_err(|e| anyhow!("invalid --ops: {e}"))?;
    let geometry = match args.resize {
        None => None,
        Some((w, h)) => Some(
            Geometry::new((Some(w), Some(h)), Fit::Stretch, false).map_err(|e| anyhow!("{e}"))?,
        ),
    };
    Ok(Job {
        chain,
        geometry,
        workers,
        copy_mode: mode == "copy",
        channels: 3,
        exact_memory: true,
        quiet: true,
        ..Job::on(input)?
    })
}

fn measure(
    input: &Path,
    args: &BenchMemoryCli,
    mode: &str,
    workers: u32,
) -> anyhow::Result<(ModeResult, u64, u64)> {
    let result = run_job(&job(input, args, mode, workers)?)?;
    if result.signal_code.is_some() {
        bail!("{mode} run was stopped by a signal");
    }
    let s = &result.summary;
    if !result.memory.available {
        bail!("per-process memory cannot be read here (no /proc/PID/smaps_rollup)");
    }
    Ok((
        ModeResult {
            peak_total_pss_bytes: result.memory.peak_pss,
            peak_total_rss_bytes: result.memory.peak_rss,
            peak_shared_pss_bytes: result.memory.peak_pss_shmem,
            peak_pss_over_dataset: result.memory.peak_pss as f64 / s.dataset_bytes.max(1) as f64,
            wall_s: s.wall_s,
            images_ok: s.images_ok,
            images_failed: s.images_failed,
            series: result.memory.series,
            at_exit: result.memory.at_exit,
        },
        s.dataset_bytes,
        s.images_ok + s.images_failed,
    ))
}

pub fn memory(args: BenchMemoryCli) -> i32 {
    match memory_inner(args) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("shmpipe: error: {e:#}");
            // A signal while generating the dataset: its exit code, as `gen`'s.
            e.downcast_ref::<gen::Stopped>()
                .map_or(exit::USAGE, |stopped| stopped.code)
        }
    }
}

fn memory_inner(args: BenchMemoryCli) -> anyhow::Result<()> {
    for path in &args.plot {
        chart::plot_format(path)?;
    }
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let generated;
    let input: PathBuf = match (&args.input, args.generate) {
        (Some(dir), None) => dir.clone(),
        (None, Some(bytes)) => {
            let (w, h) = args.image_size;
            let decoded_per_image = match args.resize {
                Some((rw, rh)) => rw as u64 * rh as u64 * 3,
                None => w as u64 * h as u64 * 3,
            };
            let count = bytes.div_ceil(decoded_per_image).max(1);
            generated = tempfile::Builder::new()
                .prefix("shmpipe-bench-")
                .tempdir()
                .context("cannot create a temporary folder for the generated dataset")?;
            let started = Instant::now();
            eprintln!("generating {count} images of {w}x{h} (JPEG q90) ...");
            gen::generate(generated.path(), count, (w, h), "jpeg", args.seed, 90)?;
            eprintln!("generated in {:.1} s", started.elapsed().as_secs_f64());
            generated.path().to_path_buf()
        }
        _ => bail!("give either an input folder or --generate SIZE"),
    };

    let worker_count = crate::engine::summary::count(workers.into(), "worker");
    eprintln!("shared mode: one block, {worker_count} attached ...");
    let (shared, dataset_bytes, images) = measure(&input, &args, "shared", workers)?;
    eprintln!("copy mode: {worker_count}, each with its own copy ...");
    let (copy, _, _) = measure(&input, &args, "copy", workers)?;
    // The worker's luma path: a grayscale-first chain on a JPEG, not resized at decode.
    let luma_first = args.resize.is_none()
        && shmpipe_worker::ops::OpChain::parse(&args.ops)
            .map(|chain| chain.starts_with_grayscale())
            .unwrap_or(false);
    let bench = MemoryBench {
        dataset_bytes,
        images,
        workers,
        ops: args.ops.clone(),
        decode_shared: if luma_first { "luma of JPEGs" } else { "rgb" },
        decode_copy: "rgb",
        copy_over_shared: copy.peak_total_pss_bytes as f64
            / shared.peak_total_pss_bytes.max(1) as f64,
        shared,
        copy,
        resize: args.resize,
        machine: machine(),
    };
    for path in &args.plot {
        chart::plot(path, &bench)?;
        eprintln!("plot written to {}", path.display());
    }
    if args.json {
        let mut value = serde_json::to_value(&bench)?;
        if !args.series {
            for mode in ["shared", "copy"] {
                value[mode].as_object_mut().map(|m| m.remove("series"));
            }
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        print!("{}", table(&bench));
    }
    Ok(())
}

fn table(b: &MemoryBench) -> String {
    let mut out = format!(
        "dataset: {}, {:.1} MiB decoded; {}; ops {}\n\n",
        crate::engine::summary::count(b.images, "image"),
        mib(b.dataset_bytes),
        crate::engine::summary::count(b.workers.into(), "worker"),
        b.ops
    );
    out.push_str("| mode | ops | decode | peak total Pss | of which shared | peak total Rss | Pss / dataset | wall s |\n|---|---|---|---|---|---|---|---|\n");
    for (name, decode, m) in [
        ("shared", b.decode_shared, &b.shared),
        ("copy", b.decode_copy, &b.copy),
    ] {
        out.push_str(&format!(
            "| {name} | {} | {decode} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {:.2}x | {:.1} |\n",
            b.ops,
            mib(m.peak_total_pss_bytes),
            mib(m.peak_shared_pss_bytes),
            mib(m.peak_total_rss_bytes),
            m.peak_pss_over_dataset,
            m.wall_s
        ));
    }
    out.push_str(&format!(
        "\ncopy mode needs {:.1}x the memory of shared mode\n",
        b.copy_over_shared
    ));
    if b.decode_shared != b.decode_copy {
        out.push_str(
            "not like for like: this chain starts with grayscale, so shared mode decodes only each JPEG's luma plane while copy mode decodes RGB; drop the leading grayscale to compare sharing alone\n",
        );
    }
    out
}

/// The machine, as a reader of the figure needs it: processor, cores, memory and kernel, from
/// /proc (the benchmark needs /proc anyway).
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let field = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let cpu = field(&read("/proc/cpuinfo"), "model name").unwrap_or("unknown processor".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory = field(&read("/proc/meminfo"), "MemTotal")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown memory".into(), |kib| {
            format!("{:.0} GiB of memory", kib as f64 / (1u64 << 20) as f64)
        });
    let kernel = read("/proc/sys/kernel/osrelease");
    format!("{cpu}, {cores} cores, {memory}, Linux {}", kernel.trim())
}
