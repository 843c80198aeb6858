//! Named datasets: `load` (decode a folder once into a block that stays), `save` (encode what is
//! in the block) and `export` (the pixels as one `(N, H, W, C)` .npy file). The block is attached
//! by name like any other process would; nothing here can unlink it (`rm` does). No output is
//! written onto or among the dataset's source files, and no two images of a save share one
//! output: both are decided before anything is written.

use std::io::{BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context};
use ndarray_npy::npy::header::{Header, Layout};
use ndarray_npy::WritableElement;
use shmpipe_block::{
    AttachedBlock, Backing, DatasetState, ImageStatus, Reader, HISTORY_FLOAT_STATS, NAME_PREFIX,
};
use shmpipe_worker::codec::{self, EncodeOptions, FORMATS};
use shmpipe_worker::resize::{Fit, Geometry};

use crate::cli::{ExportCli, LoadCli, SaveCli};
use crate::commands::npz::{int64_array_npy, int64_npy, unicode_npy, NpzWriter};
use crate::engine::dataset::{attach, temporaries_owner};
use crate::engine::settings::Job;
use crate::exit;

fn fail(e: anyhow::Error) -> i32 {
    eprintln!("shmpipe: error: {e:#}");
    exit::USAGE
}

/// `load DIR --name NAME`: the job of `run` with no ops and no output, keeping the block as NAME.
pub fn load(args: LoadCli) -> i32 {
    match load_job(args) {
        Ok(job) => crate::commands::run::run_and_report(&job),
        Err(e) => fail(e),
    }
}

/// The job `load` asks for: its flags checked and resolved.
fn load_job(args: LoadCli) -> anyhow::Result<Job> {
    let geometry = match args.resize {
        None => None,
        Some(size) => {
            // Every image keeps its aspect ratio unless told otherwise, as with `run`.
            let name = args.fit.as_deref().unwrap_or("inside");
            let fit = Fit::parse(name).ok_or_else(|| anyhow!("invalid --fit {name}"))?;
            Some(Geometry::of(size, fit, false).map_err(|e| anyhow!("{e}"))?)
        }
    };
    let mut job = args.inputs.job()?.backing(args.backing)?;
    if let Some(workers) = args.workers {
        job.workers = workers;
    }
    Ok(Job {
        geometry,
        channels: args.channels,
        max_pixels: args.limits.max_pixels,
        image_timeout: args.limits.image_timeout(),
        keep: Some(args.name),
        labels: args.labels.clone().unwrap_or_default(),
        ..args.report.onto(job)
    })
}

/// Takes the dataset's lock shared and checks that it is ready: a kept dataset whose every image
/// is done or failed with its reason. Anything else is refused with what to do.
fn read_ready(block: &AttachedBlock) -> anyhow::Result<Reader<'_>> {
    let reader = block.lock_shared()?;
    let state = if reader.is_kept() {
        reader.dataset_state()
    } else {
        Some(DatasetState::None)
    };
    if state != Some(DatasetState::Ready) {
        bail!(
            "{}",
            crate::engine::dataset::not_ready(reader.name(), state)
        );
    }
    Ok(reader)
}

/// The images that failed at load or in an apply, with their reasons.
fn failed_images(block: &AttachedBlock) -> Vec<(usize, String)> {
    (0..block.image_count())
        .filter(|&i| block.images()[i].status() != Some(ImageStatus::Done))
        .map(|i| (i, block.message(i).unwrap_or_else(|| "not done".into())))
        .collect()
}

/// `save NAME -o DIR`: encode every image of the block to DIR under its relative path.
pub fn save(args: SaveCli) -> i32 {
    save_inner(args).unwrap_or_else(fail)
}

/// Removes what killed saves and exports left in `folder`, with a warning for what cannot go.
fn sweep_temporaries(folder: &Path, backing: &Backing) {
    for (path, e) in crate::engine::sweep::remove_left_temporaries(folder, backing) {
        eprintln!("shmpipe: warning: cannot remove left temporary {path}: {e}");
    }
}

fn save_inner(args: SaveCli) -> anyhow::Result<i32> {
    let block = attach(&args.name, args.backing.clone())?;
    let reader = read_ready(&block)?;
    // A failed image's slot holds no picture: it is listed, never written.
    let failed = failed_images(&block);
    let format = match &args.format {
        Some(f) => Some(codec::parse_format(f).with_context(|| format!("invalid --format {f:?}"))?),
        None => None,
    };
    // Absolute, so that flushing walks every folder up from it (`-o out` names no parent), and
    // with the links above it resolved; nothing is created before the checks below.
    let root = crate::engine::plan::real_folder(&args.out);
    if args.background.is_some() && !matches!(block.header().channels, 2 | 4) {
        eprintln!(
            "shmpipe: warning: --background has no effect: {} has no alpha (it is the colour alpha is flattened onto)",
            block.name()
        );
    }
    let (targets, clashes) = save_targets(&block, &failed, format, &root);
    refuse_to_write_among_sources(&block, &targets)?;
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create output folder {}", args.out.display()))?;
    let backing = args.backing.clone().map_or(Backing::Shm, Backing::Dir);
    sweep_temporaries(&root, &backing);
    // A stop signal ends the save between images: every output is then whole or absent.
    let signals = crate::engine::supervise::Signals::register()?;
    let (written, mut failures) = write_targets(&args, &block, &reader, &targets, &signals);
    failures.splice(0..0, clashes);
    let saved = written.len();
    let mut unsynced = 0;
    if !args.no_fsync {
        for (folder, e) in codec::sync_folders(&root, written.iter().map(PathBuf::as_path)) {
            eprintln!("shmpipe: not flushed to disk: {}: {e}", folder.display());
            unsynced += 1;
        }
    }
    for (i, reason) in &failed {
        eprintln!(
            "shmpipe: not written: {}: {reason}",
            String::from_utf8_lossy(block.source(*i))
        );
    }
    for f in &failures {
        eprintln!("shmpipe: failed: {f}");
    }
    println!(
        "saved {} of {} images of {} to {}",
        saved,
        block.image_count(),
        block.name(),
        args.out.display()
    );
    if let Some((code, signal)) = signals.received() {
        eprintln!(
            "shmpipe: stopped by {signal}: {} images not written; run the same save again to write them all",
            block.image_count() - saved - failures.len() - failed.len()
        );
        return Ok(code);
    }
    Ok(if failures.len() + unsynced + failed.len() == 0 {
        exit::OK
    } else {
        exit::SOME_FAILED
    })
}

/// An image's output path and format, as `save` writes it.
type Target = Option<(PathBuf, image::ImageFormat)>;

/// Each image's output path under `root` and its format (`format`, else its source's); none
/// for a failed image, nor for one whose output an earlier image (in sorted order) already
/// takes, as in `run`: those clashes are given back, each naming the image and why.
fn save_targets(
    block: &AttachedBlock,
    failed: &[(usize, String)],
    format: Option<image::ImageFormat>,
    root: &Path,
) -> (Vec<Target>, Vec<String>) {
    let mut claims = crate::engine::plan::OutputClaims::default();
    let mut clashes = Vec::new();
    let targets = (0..block.image_count())
        .map(|i| {
            if failed.iter().any(|(f, _)| *f == i) {
                return None;
            }
            let relative = Path::new(std::ffi::OsStr::from_bytes(block.source(i)));
            let input_format = FORMATS[block.slot(i).format as usize % FORMATS.len()];
            let output_format = format.unwrap_or(input_format);
            let target = codec::output_path(root, relative, output_format);
            // By where it lands: two names of one folder (a symbolic link in OUT) are one path.
            match claims.claim(&crate::engine::plan::real_location(&target), relative) {
                Ok(()) => Some((target, output_format)),
                Err(reason) => {
                    clashes.push(format!("{}: {reason}", relative.display()));
                    None
                }
            }
        })
        .collect();
    (targets, clashes)
}

/// Encodes every image with a target on `--workers` threads, each output whole or absent
/// (written beside it under a temporary name first), until done or a stop signal. Gives the
/// paths written and the images that failed, each with its reason.
fn write_targets(
    args: &SaveCli,
    block: &AttachedBlock,
    reader: &Reader<'_>,
    targets: &[Target],
    signals: &crate::engine::supervise::Signals,
) -> (Vec<PathBuf>, Vec<String>) {
    let owner = temporaries_owner();
    let threads = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
        .max(1) as usize;
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    let written = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= block.image_count() || signals.received().is_some() {
                    break;
                }
                let Some((target, output_format)) = &targets[i] else {
                    continue;
                };
                let (slot, relative) = (block.slot(i), block.source(i));
                let relative = Path::new(std::ffi::OsStr::from_bytes(relative));
                let opts = EncodeOptions {
                    format: *output_format,
                    quality: args.quality,
                    png: args.png_compression,
                    durable: !args.no_fsync,
                    // A dataset's pixels as they are, as before.
                    webp_lossless: true,
                    background: args.background,
                };
                let (h, w, c) = (slot.height as u32, slot.width as u32, slot.channels as u32);
                let pixels = reader.pixels(i);
                if codec::drops_transparency(pixels, c as usize, &opts) {
                    eprintln!(
                        "shmpipe: warning: {}: {}: the colours under its transparent pixels show (--background COLOR flattens it)",
                        relative.display(),
                        codec::TRANSPARENCY_DROPPED
                    );
                }
                match codec::encode_to(pixels, (h, w, c), opts, target, &owner) {
                    Ok(_) => written
                        .lock()
                        .expect("no panic holds it")
                        .push(target.clone()),
                    Err(e) => failures
                        .lock()
                        .expect("no panic holds it")
                        .push(format!("{}: {e}", relative.display())),
                }
            });
        }
    });
    (
        written.into_inner().expect("threads joined"),
        failures.into_inner().expect("threads joined"),
    )
}

/// A dataset's source files, known as `run` knows its inputs (by path and by device and
/// inode), with the folder it was loaded from and every folder that holds a source, resolved.
struct Sources {
    root: PathBuf,
    files: crate::engine::plan::Inputs,
    folders: std::collections::HashSet<PathBuf>,
}

fn sources(block: &AttachedBlock) -> Sources {
    let root = Path::new(std::ffi::OsStr::from_bytes(
        block.string(block.header().input_root),
    ))
    .to_path_buf();
    let mut files = crate::engine::plan::Inputs::default();
    let mut seen = std::collections::HashSet::new();
    let mut folders = std::collections::HashSet::new();
    for i in 0..block.image_count() {
        let source = root.join(std::ffi::OsStr::from_bytes(block.source(i)));
        files.add(&source);
        // A symbolic link inside the input folder may lead elsewhere: where the files are.
        if let Some(folder) = source.parent() {
            if seen.insert(folder.to_path_buf()) {
                folders.insert(crate::engine::plan::real_folder(folder));
            }
        }
    }
    Sources {
        root,
        files,
        folders,
    }
}

/// Refuses, before anything is written, a save with an output that would replace one of the
/// dataset's source files (`plan::Clash`, as `run` refuses) or land among them: inside the
/// folder the dataset was loaded from, or in a folder of sources, by name or through a symbolic
/// link in OUT. A source is what a repair rebuilds from, and the user's own file.
fn refuse_to_write_among_sources(
    block: &AttachedBlock,
    targets: &[Option<(PathBuf, image::ImageFormat)>],
) -> anyhow::Result<()> {
    let sources = sources(block);
    for (target, _) in targets.iter().flatten() {
        let real = crate::engine::plan::real_location(target);
        if let Some(input) = sources.files.clash(&real) {
            return Err(crate::engine::plan::Clash {
                target: target.clone(),
                input,
            }
            .into());
        }
        let through = if real == *target {
            String::new()
        } else {
            format!(" (it is {}, through a symbolic link)", real.display())
        };
        if real.starts_with(&sources.root) {
            bail!(
                "output {}{through} would be written inside the input folder {} of {}: refusing to write among the inputs; save to a folder apart from them",
                target.display(),
                sources.root.display(),
                block.name()
            );
        }
        if let Some(folder) = real.parent().filter(|f| sources.folders.contains(*f)) {
            bail!(
                "output {}{through} would be written into {}, a folder of source files of {}: refusing to write among the inputs; save to a folder apart from them",
                target.display(),
                folder.display(),
                block.name()
            );
        }
    }
    Ok(())
}

/// Refuses an export onto one of the dataset's source files, by path or by device and inode (a
/// hard link, a symbolic link to it), before anything is written.
fn refuse_to_replace_a_source(block: &AttachedBlock, file: &Path) -> anyhow::Result<()> {
    let real = crate::engine::plan::real_location(file);
    if let Some(input) = sources(block).files.clash(&real) {
        let named = if input == real {
            String::new()
        } else {
            format!(" under another name ({})", input.display())
        };
        bail!(
            "{} is a source file of {}{named}: refusing to overwrite an input; export to another file",
            file.display(),
            block.name()
        );
    }
    Ok(())
}

/// Refuses an export onto a block (this dataset's or another's, in /dev/shm or the --backing
/// folder): renamed over it, the .npy would take the place of a dataset, which then neither
/// attaches nor can be removed with `rm`.
fn refuse_to_replace_a_block(file: &Path, backing: &Backing) -> anyhow::Result<()> {
    let real = crate::engine::plan::real_location(file);
    let blocks = crate::engine::plan::real_folder(&backing.dir());
    let named_as_block = real
        .file_name()
        .is_some_and(|n| n.as_bytes().starts_with(NAME_PREFIX.as_bytes()));
    if named_as_block && real.parent() == Some(blocks.as_path()) {
        bail!(
            "{} is where shmpipe keeps the block {}: refusing to replace a dataset; export to another folder",
            file.display(),
            real.file_name().unwrap_or_default().to_string_lossy()
        );
    }
    Ok(())
}

/// `export NAME FILE.npy`: the pixels of a uniform block as one `(N, H, W, C)` u8 array.
pub fn export(args: ExportCli) -> i32 {
    export_inner(args).map_or_else(fail, |()| exit::OK)
}

/// The .npy header of a C-order array of `T` with `shape`, from ndarray-npy (format 1.0, or 2.0
/// once the header outgrows 64 KiB).
fn npy_header<T: WritableElement>(shape: &[usize]) -> anyhow::Result<Vec<u8>> {
    Header {
        type_descriptor: T::type_descriptor(),
        layout: Layout::Standard,
        shape: shape.to_vec(),
    }
    .to_bytes()
    .context("cannot format the .npy header")
}

/// Removes what killed exports to `file` left beside it (only the temporaries of `file`: the
/// folder may be large and is not ours to walk).
fn remove_left_exports(file: &Path, dir: &Path, backing: &Backing) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(owner) = codec::temporary_owner(&name) else {
            continue;
        };
        let ours = codec::temp_prefix(file, owner);
        if !name.as_bytes().starts_with(ours.as_bytes())
            || shmpipe_block::registry::owner_may_live(backing, owner)
        {
            continue;
        }
        if let Err(e) = codec::remove_temporary_unless_held(&entry.path()) {
            eprintln!(
                "shmpipe: warning: cannot remove left temporary {}: {e}",
                entry.path().display()
            );
        }
    }
}

fn export_inner(args: ExportCli) -> anyhow::Result<()> {
    let block = attach(&args.name, args.backing.clone())?;
    let reader = read_ready(&block)?;
    refuse_to_replace_a_source(&block, &args.file)?;
    let backing = args.backing.clone().map_or(Backing::Shm, Backing::Dir);
    refuse_to_replace_a_block(&args.file, &backing)?;
    let npz = args
        .file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npz"));
    let (images, uniform) = exported_images(&block, args.partial, npz)?;
    let count = images.len();
    let first = block.slot(images[0]);
    let dir = args
        .file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    remove_left_exports(&args.file, dir, &backing);
    let tmp = codec::held_temporary(|| {
        tempfile::Builder::new()
            .prefix(&codec::temp_prefix(&args.file, &temporaries_owner()))
            .permissions(codec::ordinary_mode())
            .tempfile_in(dir)
    })
    .with_context(|| format!("cannot write in {}", dir.display()))?;
    let out = BufWriter::with_capacity(1 << 20, tmp);
    let shape = [count, first.height, first.width, first.channels];
    // The last step of the history is `normalize:float`'s statistics when no apply came after.
    let float_stats = block
        .history()
        .last()
        .filter(|step| step.flags & HISTORY_FLOAT_STATS != 0)
        .copied();
    let float = float_stats.is_some();
    let out = match npz {
        false => {
            let mut out = out;
            write_images(&mut out, &reader, &images, &shape, shape[3], float_stats)?;
            out
        }
        true => write_npz(out, &block, &reader, &images, uniform, float_stats)?,
    };
    let tmp = out.into_inner().map_err(|e| e.into_error())?;
    tmp.persist(&args.file)
        .with_context(|| format!("cannot write {}", args.file.display()))?;
    let layout = match uniform {
        true => format!(
            "({count}, {}, {}, {})",
            first.height, first.width, first.channels
        ),
        false => format!(
            "{count} images of their own shapes (pixels, offsets, shapes), {} channels,",
            first.channels
        ),
    };
    println!(
        "exported {} as {layout} {}{} to {}",
        block.name(),
        if float {
            "float32, normalized"
        } else {
            "uint8"
        },
        match (npz, class_names(&block).is_some()) {
            (true, true) => ", with labels, paths and classes",
            (true, false) => ", with paths (no labels: -1 each)",
            (false, _) => "",
        },
        args.file.display()
    );
    Ok(())
}

/// The images `export` writes, in order: every one, or with `partial` those that loaded (the
/// others each named on stderr). Refuses a dataset with failed images without `partial`, one
/// with none that loaded, and, unless `ragged` (an `.npz`, which holds them), one whose images
/// differ in shape. Gives the images and whether they all have one shape.
fn exported_images(
    block: &AttachedBlock,
    partial: bool,
    ragged: bool,
) -> anyhow::Result<(Vec<usize>, bool)> {
    let failed = failed_images(block);
    if let Some((i, reason)) = failed.first().filter(|_| !partial) {
        bail!(
            "{} holds {} image(s) that failed (the first: {}: {reason}); export --partial writes the others",
            block.name(),
            failed.len(),
            String::from_utf8_lossy(block.source(*i))
        );
    }
    let images: Vec<usize> = (0..block.image_count())
        .filter(|i| !failed.iter().any(|(f, _)| f == i))
        .collect();
    for (i, reason) in &failed {
        eprintln!(
            "shmpipe: left out: {}: {reason}",
            String::from_utf8_lossy(block.source(*i))
        );
    }
    if images.is_empty() {
        bail!("{} holds no images that loaded", block.name());
    }
    let first = block.slot(images[0]);
    let other_shape = images.iter().copied().find(|&i| {
        let s = block.slot(i);
        (s.height, s.width) != (first.height, first.width)
    });
    if let Some(i) = other_shape.filter(|_| !ragged) {
        bail!(
            "{} is ragged (image {} is {}x{}, image {i} is {}x{}): a .npy holds one shape: export to a .npz (it keeps each image's shape), or load it again with --resize WxH --fit cover (or stretch, or contain)",
            block.name(),
            images[0],
            first.width,
            first.height,
            block.slot(i).width,
            block.slot(i).height
        );
    }
    Ok((images, other_shape.is_none()))
}

/// An `.npz` of the images (as `write_images` writes them) with their labels, their paths and,
/// for a labelled dataset, the class names. Images of one shape are `images.npy`, `(N, H, W,
/// C)`; images of their own shapes (`uniform` false) are `pixels.npy`, every image's values one
/// after the other, with `offsets.npy` (`N + 1` values: image `i` is `pixels[offsets[i] :
/// offsets[i + 1]]`) and `shapes.npy` (`(N, 3)`: each one's `H, W, C`). Then `labels.npy`,
/// `paths.npy` and `classes.npy`. Gives back the writer it wrote through.
fn write_npz<W: Write>(
    out: W,
    block: &AttachedBlock,
    reader: &Reader<'_>,
    images: &[usize],
    uniform: bool,
    float_stats: Option<shmpipe_block::HistoryEntry>,
) -> anyhow::Result<W> {
    let mut zip = NpzWriter::new(out);
    let first = block.slot(images[0]);
    if uniform {
        let shape = [images.len(), first.height, first.width, first.channels];
        zip.member("images.npy")?;
        write_images(
            &mut zip,
            reader,
            images,
            &shape,
            first.channels,
            float_stats,
        )?;
    } else {
        let mut offsets = vec![0i64];
        let mut shapes = Vec::with_capacity(3 * images.len());
        for &i in images {
            let s = block.slot(i);
            let values = (s.height * s.width * s.channels) as i64;
            offsets.push(offsets.last().copied().unwrap_or(0) + values);
            shapes.extend([s.height as i64, s.width as i64, s.channels as i64]);
        }
        let total = offsets.last().copied().unwrap_or(0) as usize;
        zip.member("pixels.npy")?;
        write_images(
            &mut zip,
            reader,
            images,
            &[total],
            first.channels,
            float_stats,
        )?;
        zip.member("offsets.npy")?;
        zip.write_all(&int64_npy(&offsets))?;
        zip.member("shapes.npy")?;
        zip.write_all(&int64_array_npy(&shapes, &[images.len(), 3]))?;
    }
    let labels: Vec<i64> = images.iter().map(|&i| block.images()[i].label).collect();
    zip.member("labels.npy")?;
    zip.write_all(&int64_npy(&labels))?;
    let paths: Vec<String> = images
        .iter()
        .map(|&i| String::from_utf8_lossy(block.source(i)).into_owned())
        .collect();
    zip.member("paths.npy")?;
    zip.write_all(&unicode_npy(&paths))?;
    if let Some(classes) = class_names(block) {
        zip.member("classes.npy")?;
        zip.write_all(&unicode_npy(&classes))?;
    }
    Ok(zip.finish()?)
}

/// The class names a dataset records, in label order; None without labels.
fn class_names(block: &AttachedBlock) -> Option<Vec<String>> {
    let header = block.header();
    if header.label_kind == shmpipe_block::LABELS_NONE {
        return None;
    }
    let names = block.string(header.class_names);
    Some(
        names
            .split(|&b| b == 0)
            .take(header.class_count as usize)
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .collect(),
    )
}

/// The images' `.npy` (header and data) into `out`: uint8, or float32 under `normalize:float`'s
/// statistics.
fn write_images(
    out: &mut impl Write,
    reader: &Reader,
    images: &[usize],
    shape: &[usize],
    channels: usize,
    float_stats: Option<shmpipe_block::HistoryEntry>,
) -> anyhow::Result<()> {
    if let Some(stats) = float_stats {
        // normalize:float: (v - mean_c) / std_c for colour channels, v / 255 for alpha.
        let c = channels;
        let colour = if c == 4 { 3 } else { c };
        let mut scale = [(0.0f64, 1.0 / 255.0); 4];
        for (ch, s) in scale.iter_mut().enumerate().take(colour) {
            let (mean, std) = (stats.mean[ch], stats.std[ch]);
            *s = (mean, if std > 0.0 { 1.0 / std } else { 0.0 });
        }
        out.write_all(&npy_header::<f32>(shape)?)?;
        let mut values: Vec<f32> = Vec::new();
        for &i in images {
            let pixels = reader.pixels(i);
            values.resize(pixels.len(), 0.0);
            for (to, from) in values.chunks_exact_mut(c).zip(pixels.chunks_exact(c)) {
                for ((to, &v), &(mean, inv)) in to.iter_mut().zip(from).zip(&scale) {
                    *to = ((v as f64 - mean) * inv) as f32;
                }
            }
            f32::write_slice(&values, &mut *out)?;
        }
    } else {
        out.write_all(&npy_header::<u8>(shape)?)?;
        for &i in images {
            u8::write_slice(reader.pixels(i), &mut *out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned_and_names_the_shape() {
        let h = npy_header::<u8>(&[3, 224, 224, 3]).unwrap();
        assert_eq!(h.len() % 64, 0);
        assert_eq!(&h[..8], b"\x93NUMPY\x01\x00");
        assert_eq!(u16::from_le_bytes([h[8], h[9]]) as usize, h.len() - 10);
        let text = std::str::from_utf8(&h[10..]).unwrap();
        assert!(text.contains("'descr': '|u1'"), "{text}");
        assert!(text.contains("'fortran_order': False"), "{text}");
        assert!(text.contains("'shape': (3, 224, 224, 3)"), "{text}");
        assert!(text.ends_with('\n'));
        let f = npy_header::<f32>(&[1, 2, 3, 4]).unwrap();
        assert!(std::str::from_utf8(&f[10..])
            .unwrap()
            .contains("'descr': '<f4'"));
    }
}
