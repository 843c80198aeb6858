//! Output files: where each goes, the identity and hash of a source, the temporary-file
//! protocol (named by their writer, locked while written, removed only when no one holds them)
//! and making a folder's renames durable.

use std::fs::File;
use std::io::{self};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use image::ImageFormat;

/// The output path of `relative` under `out_root`: the same relative path, whose extension is
/// kept when it names the output's format (`.JPG` and `.jpeg` for JPEG, say) and replaced by the
/// format's own otherwise. So an output's extension always matches its content: PNG data named
/// `x.jpg` (kept as PNG) is written as `x.png`, and `--format png` writes `a.bmp` as `a.png`.
pub fn output_path(out_root: &Path, relative: &Path, output: ImageFormat) -> PathBuf {
    let target = out_root.join(relative);
    let named = target
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| {
            output
                .extensions_str()
                .iter()
                .any(|known| known.eq_ignore_ascii_case(e))
        });
    if named {
        target
    } else {
        target.with_extension(output.extensions_str()[0])
    }
}

/// Where an image's output goes under `out_root`: `named` (the name `run --output-name` planned
/// for it, relative to `out_root`) when there is one, else [`output_path`].
pub fn planned_output(
    out_root: &Path,
    relative: &Path,
    named: &[u8],
    output: ImageFormat,
) -> PathBuf {
    match named.is_empty() {
        true => output_path(out_root, relative, output),
        false => out_root.join(std::ffi::OsStr::from_bytes(named)),
    }
}

/// The XXH3-64 hash of a file's bytes, read in 64 KiB pieces: what a kept dataset records of
/// each source at load, and what a rebuild compares before it decodes the source again.
pub fn source_hash(path: &Path) -> io::Result<u64> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut piece = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut piece) {
            Ok(0) => return Ok(hasher.digest()),
            Ok(n) => hasher.update(&piece[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A source file's size and modification time (ns since the epoch), as planning records them and
/// a rebuild compares them: (0, 0) when they cannot be read.
pub fn source_identity(path: &Path) -> (u64, u64) {
    std::fs::metadata(path).map_or((0, 0), |meta| {
        let mtime = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos() as u64);
        (meta.len(), mtime)
    })
}

/// What every temporary output's name holds, between the output's name and the run's block.
const TEMP_MARK: &[u8] = b".shmpipe-tmp-";

/// The name prefix of `target`'s temporary file in the run of block `run`,
/// `.NAME.shmpipe-tmp-BLOCK.`, built from the name's raw bytes (non-UTF-8 names included). The
/// block's name says whose it is: a run removes only its own, and anyone can tell whether the
/// run that left one is still alive ([`temporary_owner`]).
pub fn temp_prefix(target: &Path, run: &str) -> std::ffi::OsString {
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(target.file_name().unwrap_or_default());
    prefix.push(std::ffi::OsStr::from_bytes(TEMP_MARK));
    prefix.push(run);
    prefix.push(".");
    prefix
}

/// The block name of the run a temporary output belongs to, from the file's name; None when it
/// is not a temporary output of this format.
pub fn temporary_owner(file_name: &std::ffi::OsStr) -> Option<&str> {
    let name = file_name.as_bytes();
    let at = name
        .windows(TEMP_MARK.len())
        .rposition(|w| w == TEMP_MARK)?;
    let rest = std::str::from_utf8(&name[at + TEMP_MARK.len()..]).ok()?;
    let (block, random) = rest.rsplit_once('.')?;
    (shmpipe_block::validate_name(block).is_ok() && !random.is_empty()).then_some(block)
}

/// Creates a temporary output with `create` and takes its writer's lock (`flock`, exclusive),
/// held for as long as the file stays open: through the writing and the rename, until the
/// writer closes it or dies. That lock is what tells a live writer's temporary from a left-over
/// one wherever its run's block lives ([`remove_temporary_unless_held`]); a sweep that took the
/// lock between the creation and ours has removed the file, and another is made.
pub fn held_temporary(
    mut create: impl FnMut() -> io::Result<tempfile::NamedTempFile>,
) -> io::Result<tempfile::NamedTempFile> {
    loop {
        let tmp = create()?;
        rustix::fs::flock(tmp.as_file(), rustix::fs::FlockOperation::LockExclusive)?;
        if rustix::fs::fstat(tmp.as_file())?.st_nlink > 0 {
            return Ok(tmp);
        }
    }
}

/// Removes the temporary output `path` unless its writer still holds it ([`held_temporary`]):
/// its lock is taken first, and the file is removed only while it is still the one at `path`.
/// Gives whether it was removed. What cannot be opened to be locked (not a regular file, say) is
/// removed as it is: no writer of ours holds such a file.
pub fn remove_temporary_unless_held(path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let gone = |e: io::Error| match e.kind() {
        io::ErrorKind::NotFound => Ok(false),
        _ => Err(e),
    };
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path);
    let file = match opened {
        Ok(file) if file.metadata()?.is_file() => file,
        Ok(_) | Err(_) if std::fs::symlink_metadata(path).is_ok() => {
            return std::fs::remove_file(path).map(|()| true).or_else(gone)
        }
        Ok(_) => return Ok(false),
        Err(e) => return gone(e),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // Renamed into place meanwhile (the name is then another file's, or none).
    let (locked, named) = match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(locked), Ok(named)) => (locked, named),
        (Err(e), _) | (_, Err(e)) => return gone(e),
    };
    if (locked.dev(), locked.ino()) != (named.dev(), named.ino()) {
        return Ok(false);
    }
    // Our lock is held across the unlink: no writer can have taken the file meanwhile.
    std::fs::remove_file(path).map(|()| true).or_else(gone)
}

/// Every temporary output under `root` (symbolic links not followed), with the block name of
/// the run it belongs to.
pub fn temporaries(root: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                folders.push(entry.path());
            } else if let Some(block) = temporary_owner(&entry.file_name()) {
                found.push((entry.path(), block.to_string()));
            }
        }
    }
    found.sort();
    found
}

/// Flushes to disk the folders that hold `targets` (files under `root`), every folder between
/// them and `root`, and `root`: after a crash of the machine the renames that put the outputs in
/// place, and the folders created for them, are there. Gives the folders that could not be
/// flushed, with the reason. The folders above `root` (which `-o a/b/c` may have created, and
/// whose last gained `root`'s entry) are flushed too, as far as they may be opened.
pub fn sync_folders<'p>(
    root: &Path,
    targets: impl IntoIterator<Item = &'p Path>,
) -> Vec<(PathBuf, io::Error)> {
    let mut folders = std::collections::BTreeSet::new();
    for target in targets {
        for folder in target.ancestors().skip(1) {
            if !folder.starts_with(root) || folder == root || !folders.insert(folder.to_path_buf())
            {
                break;
            }
        }
    }
    folders.insert(root.to_path_buf());
    let failed = folders
        .into_iter()
        .filter_map(|folder| sync_folder(&folder).err().map(|e| (folder, e)))
        .collect();
    for folder in root.ancestors().skip(1) {
        // Best effort: a folder above the output root may not be ours to open.
        let _ = sync_folder(folder);
    }
    failed
}

/// `fsync` of one folder ("" is the current one). A filesystem that cannot flush a folder
/// (EINVAL or ENOTSUP: CIFS, some FUSE) has nothing to flush: that is not an error.
fn sync_folder(folder: &Path) -> io::Result<()> {
    let folder = if folder.as_os_str().is_empty() {
        Path::new(".")
    } else {
        folder
    };
    match File::open(folder).and_then(|f| f.sync_all()) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Ok(())
        }
        done => done,
    }
}

/// The OS's reason alone: tempfile's errors wrap it with the temporary file's path, which would
/// crowd the output's own path out of a failure's 120 bytes.
pub(crate) fn os_reason(e: io::Error) -> io::Error {
    if let Some(code) = e.raw_os_error() {
        return io::Error::from_raw_os_error(code);
    }
    // tempfile's own wrapper hides the code: keep its message up to the path it appends.
    let message = e.to_string();
    match message.split_once(" at path ") {
        Some((reason, _)) => io::Error::new(e.kind(), reason.to_string()),
        None => e,
    }
}

/// The mode of a file we create for the user (an output, an export, a plot, a manifest): an
/// ordinary file's 0666 less the umask (0644 under the usual umask), where a temporary file
/// would otherwise keep tempfile's 0600 once renamed into place. Blocks stay 0600.
pub fn ordinary_mode() -> std::fs::Permissions {
    std::os::unix::fs::PermissionsExt::from_mode(0o666)
}
