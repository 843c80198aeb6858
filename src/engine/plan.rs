//! Planning: walk the input folder in sorted order, keep what is an image by its magic bytes,
//! read only each file's header, and decide each image's slot. Files that cannot be planned are
//! recorded with their reason; they never stop the others.
//!
//! It also records every file the walk met, by path and by (device, inode), so that no output
//! can land on an input nor, once the links above it are resolved, among them
//! ([`check_outputs`]), gives each output path to one image only
//! ([`OutputClaims`], for `save` too), and leaves the output folder out of the walk when it lies
//! inside the input folder.
//!
//! This module reads headers only: it must never decode pixels nor reserve memory for them.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use shmpipe_block::PlannedImage;
use shmpipe_worker::codec::{self, CodecError};
use walkdir::WalkDir;

/// A file that gets no slot, and why.
#[derive(Clone, Debug)]
pub struct Rejected {
    pub path: PathBuf,
    pub reason: String,
}

/// The outcome of planning a folder.
#[derive(Debug, Default)]
pub struct Plan {
    pub images: Vec<PlannedImage>,
    pub rejected: Vec<Rejected>,
    /// Folders the walk could not read (no permission, a symlink loop): not images, but what
    /// they hold was not done.
    pub refused_folders: Vec<Rejected>,
    /// Files without an image name and without image content (a README, say), and the
    /// temporaries of our writers: not counted as images, named in the summary.
    pub skipped: Vec<PathBuf>,
    /// Images whose output already exists, left alone under `--skip-existing`.
    pub existing: usize,
    /// Every file the walk met (in this shard or not, image or not).
    pub inputs: Inputs,
}

/// The files of the input folder, by path (as walked) and by the (device, inode) of what the
/// path leads to, so a second name for an input (a hard link, a symlinked folder) is known too.
#[derive(Debug, Default)]
pub struct Inputs {
    paths: HashSet<PathBuf>,
    ids: HashMap<(u64, u64), PathBuf>,
}

impl Inputs {
    fn insert(&mut self, path: &Path, meta: Option<std::fs::Metadata>) {
        self.paths.insert(path.to_path_buf());
        if let Some(meta) = meta {
            self.ids
                .entry((meta.dev(), meta.ino()))
                .or_insert_with(|| path.to_path_buf());
        }
    }

    /// Records `path` (a kept dataset's source, say) by its path and by what it leads to now.
    pub fn add(&mut self, path: &Path) {
        self.insert(path, std::fs::metadata(path).ok());
    }

    /// Every folder that holds an input file, with the links in it resolved ([`real_folder`]):
    /// where a walk that follows links found files.
    fn real_folders(&self) -> HashSet<PathBuf> {
        let lexical: HashSet<&Path> = self.paths.iter().filter_map(|p| p.parent()).collect();
        lexical.into_iter().map(real_folder).collect()
    }

    /// The input that writing `target` would replace: the same path, or an existing file that
    /// is an input under another name.
    pub fn clash(&self, target: &Path) -> Option<PathBuf> {
        if self.paths.contains(target) {
            return Some(target.to_path_buf());
        }
        let meta = std::fs::metadata(target).ok()?;
        self.ids.get(&(meta.dev(), meta.ino())).cloned()
    }
}

/// An output that would land on an input.
#[derive(Debug, thiserror::Error)]
#[error("output {} would overwrite the input {}: refusing to write over the inputs (choose an -o folder apart from them)", target.display(), input.display())]
pub struct Clash {
    pub target: PathBuf,
    pub input: PathBuf,
}

const IMAGE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "jpe", "webp", "gif", "bmp", "tif", "tiff", "avif", "heic", "heif",
    "jxl", "ico", "tga", "pnm", "ppm", "pgm", "qoi", "exr", "hdr",
];

/// What a file that is neither a folder nor a regular file is, in a word.
fn special_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

fn has_image_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Walks each of `entries` (folders and files under `root`; all of `root` when there are none)
/// and probes every file's header; gives up early when `stop` says so. Paths are relative to
/// `root`; a file met twice is planned once. Only files whose relative path `keep` accepts are
/// considered (a shard's part of the folder, `--include`): the others are not even opened. The
/// folder `output` (the output folder, when it lies inside `root` and holds only outputs) is
/// left out, under any name: a rerun never takes earlier outputs as inputs.
pub fn plan(
    root: &Path,
    entries: &[PathBuf],
    output: Option<&Path>,
    max_pixels: u64,
    keep: &dyn Fn(&[u8]) -> bool,
    stop: &dyn Fn() -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let whole = [root.to_path_buf()];
    let entries = if entries.is_empty() {
        &whole[..]
    } else {
        entries
    };
    // The output folder by what it is, read once: left out of every walk under any name.
    let output_id = output
        .and_then(|o| std::fs::metadata(o).ok())
        .map(|m| (m.dev(), m.ino()));
    for entry in entries {
        walk(&mut plan, root, entry, output_id, max_pixels, keep, stop);
    }
    plan
}

/// [`plan`] of one entry: a folder walked in sorted order, or one file.
fn walk(
    plan: &mut Plan,
    root: &Path,
    entry: &Path,
    output_id: Option<(u64, u64)>,
    max_pixels: u64,
    keep: &dyn Fn(&[u8]) -> bool,
    stop: &dyn Fn() -> bool,
) {
    let walk = WalkDir::new(entry)
        .follow_links(true)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()))
        .into_iter()
        .filter_entry(|e| {
            !(e.file_type().is_dir()
                && output_id.is_some()
                && e.metadata().ok().map(|m| (m.dev(), m.ino())) == output_id)
        });
    for entry in walk {
        if stop() {
            break;
        }
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                if let Some((refused, folder)) = unreadable(&e, root, keep) {
                    match folder {
                        true => plan.refused_folders.push(refused),
                        false => plan.rejected.push(refused),
                    }
                }
                continue;
            }
        };
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            special_file(entry.path(), &kind, root, keep, plan);
            continue;
        }
        let path = entry.path();
        if plan.inputs.paths.contains(path) {
            // Given twice (a file inside a folder also given, say): planned once.
            continue;
        }
        plan.inputs.insert(path, entry.metadata().ok());
        let relative = path.strip_prefix(root).unwrap_or(path);
        if !keep(relative.as_os_str().as_bytes()) {
            continue;
        }
        // The temporary file of a save, export, run or gen, alive or killed: at most part of
        // an image, never an input. Counted as skipped, as a non-image file.
        if codec::temporary_owner(entry.file_name()).is_some() {
            plan.skipped.push(path.to_path_buf());
            continue;
        }
        probe_file(path, relative, max_pixels, plan);
    }
}

/// What the walk could not read (a folder it may not list, a symlink loop, a link to nothing), as
/// a refused path, and whether it is a folder; None when it lies outside the shard (`keep`).
fn unreadable(
    e: &walkdir::Error,
    root: &Path,
    keep: &dyn Fn(&[u8]) -> bool,
) -> Option<(Rejected, bool)> {
    let path = e
        .path()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| root.to_path_buf());
    let relative = path.strip_prefix(root).unwrap_or(&path);
    if !keep(relative.as_os_str().as_bytes()) {
        return None;
    }
    let reason = if e.loop_ancestor().is_some() {
        "symlink loop".to_string()
    } else {
        e.io_error()
            .map_or_else(|| e.to_string(), |io| format!("cannot read: {io}"))
    };
    let folder = e.loop_ancestor().is_some() || std::fs::metadata(&path).is_ok_and(|m| m.is_dir());
    Some((Rejected { path, reason }, folder))
}

/// A FIFO, socket or device: reading it could block or never end. One with an image's name is
/// listed with the reason; any other is counted as skipped.
fn special_file(
    path: &Path,
    kind: &std::fs::FileType,
    root: &Path,
    keep: &dyn Fn(&[u8]) -> bool,
    plan: &mut Plan,
) {
    let relative = path.strip_prefix(root).unwrap_or(path);
    if !keep(relative.as_os_str().as_bytes()) {
        return;
    }
    if has_image_name(path) {
        plan.rejected.push(Rejected {
            path: path.to_path_buf(),
            reason: format!("not a regular file ({}): not read", special_kind(kind)),
        });
    } else {
        plan.skipped.push(path.to_path_buf());
    }
}

/// Reads a regular file's header: an image is planned with its shape, a file without image
/// content and without an image's name is skipped, anything else refused with the reason.
fn probe_file(path: &Path, relative: &Path, max_pixels: u64, plan: &mut Plan) {
    match codec::probe(path, max_pixels) {
        Ok(probe) => {
            let (source_size, source_mtime_ns) = codec::source_identity(path);
            plan.images.push(PlannedImage {
                height: probe.height,
                width: probe.width,
                format: probe.format,
                channels: probe.channels(),
                source: relative.as_os_str().as_bytes().to_vec(),
                source_size,
                source_mtime_ns,
                original_width: probe.width,
                original_height: probe.height,
                label: -1,
                output: Vec::new(),
            })
        }
        Err(CodecError::NotAnImage) if !has_image_name(path) => {
            plan.skipped.push(path.to_path_buf())
        }
        Err(e) => plan.rejected.push(Rejected {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

/// The output paths given out so far. The first image (in sorted order) to claim a path keeps
/// it; a later one is refused with the reason, never written over the first's output. `run`
/// claims at planning ([`assign_outputs`]), `save` before it writes anything.
#[derive(Debug, Default)]
pub struct OutputClaims {
    taken: HashMap<PathBuf, PathBuf>,
}

impl OutputClaims {
    /// Claims `target` for the image whose source is `relative`; when an earlier image holds
    /// it, the reason this one gets no output.
    pub fn claim(&mut self, target: &Path, relative: &Path) -> Result<(), String> {
        match self.taken.get(target) {
            Some(first) => Err(format!(
                "output {} would overwrite the output of {}",
                target.display(),
                first.display()
            )),
            None => {
                self.taken
                    .insert(target.to_path_buf(), relative.to_path_buf());
                Ok(())
            }
        }
    }
}

/// Where the folder `folder` lies once every symbolic link in it is resolved: the longest part
/// that exists, canonicalized, then the rest as named (`..` taken lexically: what is missing
/// will be created as plain folders).
pub fn real_folder(folder: &Path) -> PathBuf {
    use std::path::Component;
    let parts: Vec<Component> = folder.components().collect();
    for existing in (0..=parts.len()).rev() {
        let prefix: PathBuf = parts[..existing].iter().collect();
        let prefix = if prefix.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            prefix
        };
        let Ok(mut real) = prefix.canonicalize() else {
            continue;
        };
        for part in &parts[existing..] {
            match part {
                Component::ParentDir => {
                    real.pop();
                }
                Component::CurDir => {}
                other => real.push(other),
            }
        }
        return real;
    }
    folder.to_path_buf()
}

/// Where writing the file `path` lands: its folder resolved ([`real_folder`]), its own name
/// kept, as an output replaces a symbolic link by a rename rather than writing through it.
pub fn real_location(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(folder), Some(name)) => real_folder(folder).join(name),
        _ => path.to_path_buf(),
    }
}

/// Decides each image's output path. Two inputs whose outputs would land on the same path
/// (`a.bmp` and `a.tiff` with `--format png`): the first in sorted order keeps it, the others are
/// rejected, never silently overwritten. With `skip_existing`, images whose output already exists
/// are left out (a scheduler's retry finishes only what is missing).
pub fn assign_outputs(
    plan: &mut Plan,
    input: &Path,
    out: &Path,
    format: Option<image::ImageFormat>,
    skip_existing: bool,
) {
    let mut claims = OutputClaims::default();
    let images = std::mem::take(&mut plan.images);
    for image in images {
        let relative = Path::new(OsStr::from_bytes(&image.source));
        let input_format = codec::FORMATS[image.format as usize];
        let output_format = format.unwrap_or(input_format);
        let target = codec::planned_output(out, relative, &image.output, output_format);
        if let Err(reason) = claims.claim(&target, relative) {
            plan.rejected.push(Rejected {
                path: input.join(relative),
                reason,
            });
        } else if skip_existing && target.exists() {
            plan.existing += 1;
        } else {
            plan.images.push(image);
        }
    }
}

/// Why an output of a run is refused before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// It would replace an input file.
    #[error(transparent)]
    Clash(#[from] Clash),
    /// Once the links above it are resolved, it lands among the inputs without replacing one:
    /// inside the input folder, or in a folder that holds input files (reached through a link).
    #[error("output {}{} would be written {where_}: refusing to write among the inputs (choose an -o folder apart from them)", target.display(), through(target, real))]
    AmongInputs {
        target: PathBuf,
        real: PathBuf,
        where_: String,
    },
}

/// ` (it is REAL, through a symbolic link)` when `real` is not `target`.
fn through(target: &Path, real: &Path) -> String {
    if real == target {
        String::new()
    } else {
        format!(" (it is {}, through a symbolic link)", real.display())
    }
}

/// The first planned image (in sorted order) whose output would replace an input file, by path
/// or by (device, inode), or whose real location (every link above it resolved,
/// [`real_location`]) lies inside `input` or in a folder holding input files. Run before any
/// block exists; nothing is written when it finds one. `input` and `out` are canonical; an `out`
/// inside `input` is the one place there where outputs may go (it is either left out of the walk
/// or its files are inputs that the clash check protects).
pub fn check_outputs(
    plan: &Plan,
    input: &Path,
    out: &Path,
    format: Option<image::ImageFormat>,
) -> Result<(), Refusal> {
    let inside_out = |real: &Path| out.starts_with(input) && real.starts_with(out);
    let input_folders = plan.inputs.real_folders();
    // Resolved once per folder: a hundred thousand images lie in far fewer folders.
    let mut resolved: HashMap<PathBuf, PathBuf> = HashMap::new();
    for image in &plan.images {
        let relative = Path::new(OsStr::from_bytes(&image.source));
        let input_format = codec::FORMATS[image.format as usize];
        let output_format = format.unwrap_or(input_format);
        let target = codec::planned_output(out, relative, &image.output, output_format);
        if let Some(input) = plan.inputs.clash(&target) {
            return Err(Clash { target, input }.into());
        }
        let (Some(folder), Some(name)) = (target.parent(), target.file_name()) else {
            continue;
        };
        let real_folder = resolved
            .entry(folder.to_path_buf())
            .or_insert_with(|| real_folder(folder));
        let real = real_folder.join(name);
        if inside_out(&real) {
            continue;
        }
        let where_ = if real.starts_with(input) {
            format!("inside the input folder {}", input.display())
        } else if input_folders.contains(real_folder.as_path()) {
            format!("into {}, a folder of input files", real_folder.display())
        } else {
            continue;
        };
        return Err(Refusal::AmongInputs {
            target,
            real,
            where_,
        });
    }
    Ok(())
}
