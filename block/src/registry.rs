//! Finding our blocks by name, telling live ones from stale ones, and removing the stale.
//!
//! The owner of a block holds an exclusive `flock` on it for its whole life, so a block whose
//! lock can be taken has no live owner; a reused pid cannot fool that test. The one window it
//! does not cover is the instant between a block's creation and its owner taking the lock. The
//! header is written only once the lock is held (a dataset's block is published whole, lock
//! held), so only a block without a whole header can be in that window: such a block counts as
//! live while it is younger than [`CREATION_GRACE`] and the creator's pid in its fresh name
//! (`shmpipe-<pid>-<random>`) exists. A block with a header is judged by its lock alone, whatever
//! its name looks like (a dataset named `1` or `2024-train` names no pid). A block whose lock is
//! held is never touched.
//!
//! Headers are read with plain `pread`, not mapped: nothing here trusts or maps a block. Files
//! are opened only through [`Backing::open`] (no symbolic link followed, a regular file of this
//! user); a file with one of our names that is anything else is listed as [`Liveness::Foreign`]
//! and never touched.

use std::fs::File;
use std::io;
use std::mem::offset_of;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::time::{Duration, SystemTime};

use rustix::fs::FlockOperation;

use crate::{
    Backing, BlockState, DatasetState, Header, NotOurs, FLAG_KEPT, LABELS_NONE, MAGIC, NAME_PREFIX,
};

/// How long an unlocked block whose creator still exists counts as being created.
pub const CREATION_GRACE: Duration = Duration::from_secs(10);

/// Whether anyone owns a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    /// Its owner holds the lock.
    Live,
    /// No owner: left behind by a coordinator that was killed.
    Stale,
    /// No owner on purpose: a named dataset (`load`, `run --keep`), there until `rm`; or one
    /// whose apply or repair was interrupted, kept for `repair`. A dataset whose load was
    /// interrupted is [`Liveness::Stale`]: nothing in it was ever ready.
    Kept,
    /// Not one of our blocks, whatever its name: a symbolic link, not a regular file, or
    /// another user's. Listed, never opened again, locked, read or removed.
    Foreign,
}

/// What `ls` shows of one block.
#[derive(Clone, Debug)]
pub struct BlockInfo {
    pub name: String,
    /// The file's size (apparent: what a reader maps).
    pub bytes: u64,
    /// The memory (or disk) it holds: its allocated blocks, which a sparse or windowed file
    /// keeps below its size.
    pub held_bytes: u64,
    pub owner_pid: Option<u32>,
    pub state: Option<BlockState>,
    /// A kept dataset's state (see [`DatasetState`]).
    pub dataset: Option<DatasetState>,
    pub images: Option<u64>,
    /// A labelled dataset's class count (`load --labels folder`).
    pub classes: Option<u32>,
    pub liveness: Liveness,
    /// Since the file's last status change (it changes on every write): for the creation grace.
    pub age: Duration,
    /// Since the block was created, from the time its header records; None when unknown (no
    /// header, or a block made before the header had that field).
    pub created_age: Option<Duration>,
    /// Why a [`Liveness::Foreign`] file is not ours.
    pub foreign: Option<String>,
    /// The output folder its run writes to (where its temporary files may be), if it has one.
    pub output_root: Option<std::path::PathBuf>,
}

fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// The pid a block's name was made with, if it is a name of our making: a fresh block name
/// (`shmpipe-<pid>-<8 hex digits>`, `block::fresh_name`) or the owner name of a save's or an
/// export's temporaries (`shmpipe-<pid>-w`). A dataset's name holds no pid, whatever it looks
/// like.
fn creator_pid(name: &str) -> Option<u32> {
    let (pid, rest) = name.strip_prefix(NAME_PREFIX)?.split_once('-')?;
    let fresh = rest.len() == 8 && rest.bytes().all(|b| b.is_ascii_hexdigit());
    if !(fresh || rest == "w") || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

fn pid_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        || rustix::process::Pid::from_raw(pid as i32)
            .is_some_and(|p| rustix::process::test_kill_process(p).is_ok())
}

fn age_of(meta: &std::fs::Metadata) -> Duration {
    let created = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.ctime().max(0) as u64);
    SystemTime::now()
        .duration_since(created)
        .unwrap_or_default()
}

/// True while a block without a whole header may still be between its creation and its owner's
/// lock: young, and its creator (when its name says who) exists. Checked before we touch the
/// lock ourselves, so that our probe never makes a creator's `flock` fail.
fn in_creation_window(name: &str, meta: &std::fs::Metadata) -> bool {
    age_of(meta) < CREATION_GRACE && creator_pid(name).is_none_or(pid_exists)
}

/// Takes the exclusive lock without waiting; false when someone holds it.
fn try_lock(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Takes the lock shared without waiting; false when someone holds it exclusively. Owners (a run,
/// load, apply or repair) hold it exclusively; readers (save, export, Python) share it, and so
/// never pass for owners, and a probe never turns a reader away.
fn try_lock_shared(file: &File) -> io::Result<bool> {
    match rustix::fs::flock(file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Inspects one block: its header (if readable) and whether it has a live owner.
pub fn inspect(backing: &Backing, name: &str) -> io::Result<BlockInfo> {
    let file = File::from(backing.open(name, false)?);
    let meta = file.metadata()?;
    let mut header = vec![0u8; std::mem::size_of::<Header>()];
    let whole = file.read_exact_at(&mut header, 0).is_ok() && header[..8] == MAGIC;
    // A whole header was written with the owner's lock held: the lock alone says whether the
    // owner lives. Our probe's lock, if we take it, goes with `file` at the end of this function.
    let live = (!whole && in_creation_window(name, &meta)) || !try_lock_shared(&file)?;
    let dataset = whole
        .then(|| DatasetState::from_u32(read_u32(&header, offset_of!(Header, dataset_state))))
        .flatten();
    let kept = whole
        && read_u32(&header, offset_of!(Header, flags)) & FLAG_KEPT != 0
        && dataset != Some(DatasetState::Loading);
    Ok(BlockInfo {
        name: name.to_string(),
        bytes: meta.len(),
        held_bytes: held(&meta),
        owner_pid: whole.then(|| read_u32(&header, offset_of!(Header, owner_pid))),
        state: whole
            .then(|| BlockState::from_u32(read_u32(&header, offset_of!(Header, state))))
            .flatten(),
        dataset,
        images: whole.then(|| read_u64(&header, offset_of!(Header, image_count))),
        classes: (whole && read_u32(&header, offset_of!(Header, label_kind)) != LABELS_NONE)
            .then(|| read_u32(&header, offset_of!(Header, class_count))),
        liveness: match (live, kept) {
            (true, _) => Liveness::Live,
            (false, true) => Liveness::Kept,
            (false, false) => Liveness::Stale,
        },
        age: age_of(&meta),
        created_age: whole
            .then(|| read_u64(&header, offset_of!(Header, created_unix_ns)))
            .filter(|&ns| ns != 0)
            .map(|ns| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH + Duration::from_nanos(ns))
                    .unwrap_or_default()
            }),
        foreign: None,
        output_root: whole.then(|| output_root(&file, &header)).flatten(),
    })
}

/// The output folder recorded in a block's strings, read with `pread` and bounds-checked.
fn output_root(file: &File, header: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let strings = read_u64(header, offset_of!(Header, strings_offset));
    let at = offset_of!(Header, output_root);
    let (offset, len) = (read_u64(header, at), read_u64(header, at + 8));
    if len == 0 || len > 4096 {
        return None;
    }
    let mut path = vec![0u8; len as usize];
    file.read_exact_at(&mut path, strings.checked_add(offset)?)
        .ok()?;
    Some(std::ffi::OsStr::from_bytes(&path).into())
}

/// Whether the run of block `name` may still be alive: its creator's pid (in a fresh name) exists,
/// or the block, in `backing`, has a live owner. A temporary output of a run for which this is
/// false is left over, and may go.
pub fn owner_may_live(backing: &Backing, name: &str) -> bool {
    creator_pid(name).is_some_and(pid_exists)
        || inspect(backing, name).is_ok_and(|info| info.liveness == Liveness::Live)
}

/// The bytes a file's allocated blocks take (`st_blocks` counts 512-byte units).
fn held(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks().saturating_mul(512)
}

/// What `ls` shows of a file with one of our names that [`Backing::open`] refused as not ours,
/// from `lstat` (which follows nothing).
fn foreign(backing: &Backing, name: &str, why: &NotOurs) -> BlockInfo {
    let meta = std::fs::symlink_metadata(backing.dir().join(name)).ok();
    BlockInfo {
        name: name.to_string(),
        bytes: meta.as_ref().map_or(0, |m| m.len()),
        held_bytes: meta.as_ref().map_or(0, held),
        owner_pid: None,
        state: None,
        dataset: None,
        images: None,
        classes: None,
        liveness: Liveness::Foreign,
        age: meta.as_ref().map(age_of).unwrap_or_default(),
        created_age: None,
        foreign: Some(why.to_string()),
        output_root: None,
    }
}

/// Why a file we could not even open is not ours, from `lstat`: not a regular file (a folder
/// with one of our names: `open` fails on it with EISDIR), or another user's (a block of mode
/// 0600: `open` fails before [`Backing::open`] can look at it). None when it is ours after all.
fn unopened_why(backing: &Backing, name: &str, e: &io::Error) -> Option<NotOurs> {
    let meta = std::fs::symlink_metadata(backing.dir().join(name)).ok()?;
    if !meta.file_type().is_file() {
        return Some(NotOurs::NotRegular);
    }
    let us = rustix::process::geteuid().as_raw();
    (e.kind() == io::ErrorKind::PermissionDenied && meta.uid() != us).then_some(NotOurs::Owner {
        owner: meta.uid(),
        us,
    })
}

/// Every file with one of our names in the backing's directory, sorted by name: our blocks, and
/// [`Liveness::Foreign`] files. A file that vanished meanwhile is left out; one that could not
/// be inspected for another reason is in `Err`, with its name.
pub fn list(backing: &Backing) -> io::Result<Vec<Result<BlockInfo, (String, io::Error)>>> {
    let mut names: Vec<String> = std::fs::read_dir(backing.dir())?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(NAME_PREFIX) && crate::validate_name(n).is_ok())
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .filter_map(|name| match inspect(backing, &name) {
            Ok(info) => Some(Ok(info)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => match NotOurs::of(&e) {
                Some(why) => Some(Ok(foreign(backing, &name, why))),
                None => match unopened_why(backing, &name, &e) {
                    Some(why) => Some(Ok(foreign(backing, &name, &why))),
                    None => Some(Err((name, e))),
                },
            },
        })
        .collect())
}

/// Removes a block only if nobody holds it (and, unless `kept_too`, only if it is not a kept
/// dataset), checked again right before the unlink. Returns whether it was removed.
pub fn remove_if_stale(backing: &Backing, name: &str) -> io::Result<bool> {
    remove_unheld(backing, name, false)
}

/// `remove_if_stale`, and kept datasets too when `kept_too` (what `rm NAME` does).
pub fn remove_unheld(backing: &Backing, name: &str, kept_too: bool) -> io::Result<bool> {
    let info = inspect(backing, name)?;
    let removable = match info.liveness {
        Liveness::Live | Liveness::Foreign => false,
        Liveness::Kept => kept_too,
        Liveness::Stale => true,
    };
    if !removable {
        return Ok(false);
    }
    let file = File::from(backing.open(name, false)?);
    // Holding the lock across the unlink means no owner can appear in between.
    if !try_lock(&file)? {
        return Ok(false);
    }
    backing.unlink(name)?;
    Ok(true)
}

/// `rm --force`: removes a kept dataset that readers still hold (a notebook's handle, a save, an
/// export): they keep what they mapped, the name goes. Never one that a writer holds (an apply,
/// a repair, a writable Python handle): the shared lock taken here, held across the unlink,
/// keeps any writer off it meanwhile. Returns whether it was removed.
pub fn remove_despite_readers(backing: &Backing, name: &str) -> io::Result<bool> {
    if inspect(backing, name)?.liveness != Liveness::Kept {
        return Ok(false);
    }
    let file = File::from(backing.open(name, false)?);
    if !try_lock_shared(&file)? {
        return Ok(false);
    }
    backing.unlink(name)?;
    Ok(true)
}

/// A process holding a block's lock, as the kernel lists it (`/proc/locks`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`): `shmpipe`, `python3`, ...
    pub command: String,
    /// An exclusive lock (a writer: a run, load, apply, or a writable Python handle) or a
    /// shared one (a reader).
    pub exclusive: bool,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let how = if self.exclusive { "writing" } else { "reading" };
        write!(f, "pid {} ({}, {how})", self.pid, self.command)
    }
}

/// The processes holding the lock of block `name`: from `/proc/locks`, whose `FLOCK` lines name
/// the holder's pid and the file as `MAJOR:MINOR:INODE`. Empty where that is not known (no
/// `/proc`, another system) or nobody holds it. The pid is the process that took the lock, so a
/// child that inherited the descriptor is not named.
pub fn lock_holders(backing: &Backing, name: &str) -> Vec<Holder> {
    let Ok(meta) = std::fs::symlink_metadata(backing.dir().join(name)) else {
        return Vec::new();
    };
    let dev = meta.dev();
    let file = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let mut holders: Vec<Holder> = locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // "1: FLOCK  ADVISORY  WRITE 15423 fe:00:10060277 0 EOF"; blocked waiters add "->".
            if fields.get(1) != Some(&"FLOCK") || fields.get(5) != Some(&file.as_str()) {
                return None;
            }
            let pid: u32 = fields.get(4)?.parse().ok()?;
            let command = std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map_or_else(|_| "?".to_string(), |c| c.trim().to_string());
            Some(Holder {
                pid,
                command,
                exclusive: fields.get(3) == Some(&"WRITE"),
            })
        })
        .collect();
    holders.sort_by_key(|h| h.pid);
    holders.dedup();
    holders
}

/// What [`clean`] did.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub removed: Vec<BlockInfo>,
    /// Files with our names that are not ours: left alone.
    pub foreign: Vec<BlockInfo>,
    /// Blocks that could not be inspected or removed, with the reason.
    pub failed: Vec<(String, io::Error)>,
}

/// Removes every stale block, going on past any file it cannot inspect or remove.
pub fn clean(backing: &Backing) -> io::Result<Cleaned> {
    let mut cleaned = Cleaned::default();
    for entry in list(backing)? {
        match entry {
            Ok(info) if info.liveness == Liveness::Foreign => cleaned.foreign.push(info),
            Ok(info) if info.liveness == Liveness::Stale => {
                match remove_if_stale(backing, &info.name) {
                    Ok(true) => cleaned.removed.push(info),
                    Ok(false) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => cleaned.failed.push((info.name, e)),
                }
            }
            Ok(_) => {}
            Err(failed) => cleaned.failed.push(failed),
        }
    }
    Ok(cleaned)
}
