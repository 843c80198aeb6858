//! The block: one named shared-memory region holding a whole image dataset, and the only
//! definition of its layout. Both the coordinator and the workers use this module.
//!
//! All of shmpipe's `unsafe` lives here. Everything outside sees safe views that borrow the
//! mapping: `&Header`, `&[ImageRecord]`, and the `&mut [u8]` of a slot held through a [`Claim`].
//!
//! Layout (little-endian, every region 64-byte aligned, offsets from the start of the block):
//!
//! ```text
//! [Header][ImageRecord; image_count][WorkerRecord; worker_count][strings][pixel slots]
//! ```
//!
//! This module must never let a worker unlink a block: only [`OwnedBlock`], which only
//! [`OwnedBlock::create`] returns, removes the name, and it does so on drop.
//!
//! Memory shared with other processes is outside what memmap2 (or Rust) can promise. What we rely
//! on instead: (1) the creator writes the header and tables before publishing
//! `state = Ready` with Release ordering, and attachers read it with Acquire; after that the
//! immutable fields never change, and `attach` copies the ones it needs after validating them;
//! (2) every mutable field shared between processes is an atomic; (3) a slot's pixels and an
//! image's message are written only by the worker whose compare-and-swap moved that image from
//! `Pending` to `Claimed`, and read by others only after it publishes `Done`/`Failed` with Release.

use std::cell::UnsafeCell;
use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapRaw;
use rustix::fs::{FallocateFlags, FlockOperation, Mode, OFlags};
use rustix::shm;

/// First eight bytes of every block.
pub const MAGIC: [u8; 8] = *b"SHMPIPE\0";
/// Bumped whenever the layout changes; `attach` refuses any other.
pub const LAYOUT_VERSION: u32 = 1;
/// Every block name starts with this, so `ls` and `clean` can find ours.
pub const NAME_PREFIX: &str = "shmpipe-";
/// macOS limits POSIX shm names to 31 bytes including the leading slash.
pub const MAX_NAME_LEN: usize = 30;
/// Alignment of every region and every slot.
pub const ALIGN: u64 = 64;
/// Bytes of an image's error message kept in its record.
pub const MESSAGE_LEN: usize = 120;
/// Where a block lives when it is not in the default POSIX shm directory.
pub const DEFAULT_SHM_DIR: &str = "/dev/shm";

/// Lifecycle of a block, in `Header::state`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// Being written by its creator; not to be attached yet.
    Creating = 0,
    /// Header and tables complete; workers may attach.
    Ready = 1,
    /// The coordinator asked every worker to stop after its current image.
    Stopping = 2,
    /// Every image has an outcome.
    Finished = 3,
}

impl BlockState {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Creating,
            1 => Self::Ready,
            2 => Self::Stopping,
            3 => Self::Finished,
            _ => return None,
        })
    }
}

/// Status of one image, in `ImageRecord::status`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageStatus {
    Pending = 0,
    Claimed = 1,
    Done = 2,
    Failed = 3,
}

impl ImageStatus {
    /// Decodes the low 8 bits of a status word.
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::Pending,
            1 => Self::Claimed,
            2 => Self::Done,
            3 => Self::Failed,
            _ => return None,
        })
    }
}

/// A byte string inside the strings region: offset from the region's start, and length.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrRef {
    pub offset: u64,
    pub len: u64,
}

/// The block's first 512 bytes.
#[repr(C, align(64))]
pub struct Header {
    pub magic: [u8; 8],
    pub layout_version: u32,
    pub header_size: u32,
    pub total_size: u64,
    pub owner_pid: u32,
    /// A [`BlockState`].
    pub state: AtomicU32,
    pub image_count: u64,
    pub worker_count: u32,
    /// Channels of every slot: 1, 3 or 4.
    pub channels: u32,
    pub image_table_offset: u64,
    pub image_record_size: u64,
    pub worker_table_offset: u64,
    pub worker_record_size: u64,
    pub strings_offset: u64,
    pub strings_len: u64,
    pub pixels_offset: u64,
    pub pixels_len: u64,
    /// Folder the source paths are relative to.
    pub input_root: StrRef,
    /// Output folder; empty when the run writes nothing.
    pub output_root: StrRef,
    /// The op chain as the user wrote it, for example `grayscale,blur:2`.
    pub op_chain: StrRef,
    /// Output format name (`jpeg`, `png`, ...), empty to keep each input's format.
    pub output_format: StrRef,
    pub quality: u32,
    /// Non-zero when every slot has this shape.
    pub uniform_height: u32,
    pub uniform_width: u32,
    /// [`FLAG_STRICT`] and future flags.
    pub flags: u32,
    /// Next index a worker claims with `fetch_add`.
    pub next_claim: AtomicU64,
    pub images_done: AtomicU64,
    pub images_failed: AtomicU64,
    pub pixels_done: AtomicU64,
    /// `--resize`: a [`crate::codec::Fit`] (then every slot has the uniform shape), 0 for none.
    pub resize_fit: u32,
    /// The pass a multi-pass job (`apply` with a dataset-wide op) is in, from 1; 0 outside one.
    pub pass: AtomicU32,
    /// `normalize`: each channel's mean and standard deviation over the dataset, as f64 bits,
    /// written by the coordinator before it starts pass 2.
    pub norm_mean: [AtomicU64; 4],
    pub norm_std: [AtomicU64; 4],
    /// A raw_sync Event (a process-shared mutex and condition variable): the doorbell workers
    /// wait on between passes. Initialised once by the creator.
    pub pass_event: [u8; PASS_EVENT_BYTES],
    /// The stats region: [`STATS_VALUES`] u64 atomics for dataset-wide ops (`equalize:dataset`
    /// histograms, then lookup tables).
    pub stats_offset: u64,
    /// 1 after `apply --ops normalize:float`: the statistics in `norm_mean` / `norm_std` are the
    /// pixels', and `export` writes `(v - mean) / std` as float32.
    pub export_float: AtomicU64,
}

/// Room for the pass event; raw_sync's unix Event needs 136 bytes (checked at creation).
pub const PASS_EVENT_BYTES: usize = 200;

/// One image's fixed-size record in the image table.
#[repr(C, align(64))]
pub struct ImageRecord {
    /// Slot offset from the start of the pixels region.
    pub slot_offset: u64,
    pub slot_len: u64,
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    /// Source format, as an index into [`crate::codec::FORMATS`].
    pub format: u32,
    /// Source path, relative to `Header::input_root`, as raw bytes.
    pub source: StrRef,
    /// The image's [`ImageStatus`] in the low 8 bits and, while claimed, the holder's worker
    /// id + 1 above them: one word, so a claim and its owner change in a single atomic step and
    /// a worker dying at any instant never leaves an image claimed by nobody.
    pub status: AtomicU32,
    pub _reserved0: u32,
    /// How many workers died while holding this image.
    pub crashes: AtomicU32,
    pub message_len: AtomicU32,
    /// Why the image failed, or a done image's warning; written by the claim holder before it
    /// publishes `Failed` or `Done`.
    message: UnsafeCell<[u8; MESSAGE_LEN]>,
}

// SAFETY: `message` is the only non-atomic field written after the block is published; it is
// written only by the worker that holds the image's claim and read only after that worker's
// Release store of `Failed` (or of `Done`, for a warning) is observed with Acquire (invariant (3)
// in the module doc).
unsafe impl Sync for ImageRecord {}

/// One worker's counters, indexed by worker id; a replacement worker reuses its slot.
#[repr(C, align(64))]
pub struct WorkerRecord {
    pub pid: AtomicU32,
    /// 0 not started, 1 running, 2 exited cleanly.
    pub state: AtomicU32,
    pub heartbeat_ms: AtomicU64,
    pub images_done: AtomicU64,
    pub images_failed: AtomicU64,
    pub pixels_done: AtomicU64,
    /// Index of the image in hand, `u64::MAX` for none.
    pub current_image: AtomicU64,
    /// When this worker had attached, validated the block and enlisted: the host's monotonic
    /// clock in nanoseconds (see [`now_ns`]). The coordinator compares it with when it spawned the worker.
    pub ready_ns: AtomicU64,
    pub _reserved: [u64; 1],
    /// Statistics pass of `normalize`: per channel, the sum of values and of squared values
    /// over the images this worker has done.
    pub sums: [AtomicU64; 4],
    pub sums_sq: [AtomicU64; 4],
}

pub const NO_IMAGE: u64 = u64::MAX;

/// The host's monotonic clock in nanoseconds: never steps, and the same clock in every process on
/// the host, so a time taken by the coordinator and one taken by a worker compare.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// `Header::flags`: stop claiming once any image has failed (`--strict`).
pub const FLAG_STRICT: u32 = 1;
/// `Header::flags`: copy mode, the naive approach kept for comparison: the block holds no pixels
/// (every slot is empty) and each worker decodes the whole dataset into its own memory.
pub const FLAG_COPY: u32 = 2;
/// `Header::flags`: encode gray results as RGB too (`--rgb`); by default they are one channel.
pub const FLAG_RGB_OUTPUT: u32 = 4;
/// `Header::flags`: a named dataset that outlives its creator on purpose (`load`, `run --keep`);
/// `clean` never removes it, `rm` does.
pub const FLAG_KEPT: u32 = 8;
/// `Header::flags`: outputs are not flushed to disk before they are renamed into place
/// (`--no-fsync`); by default each is.
pub const FLAG_NO_FSYNC: u32 = 64;
/// `Header::flags`: a truncated or corrupt JPEG is decoded as far as it goes and kept, with a
/// warning in its record, instead of failed (`--allow-truncated`).
pub const FLAG_ALLOW_TRUNCATED: u32 = 128;
/// `Header::flags` bits 4 and 5: a [`crate::codec::PngCompression`] code (`--png-compression`),
/// 0 for fast. Read it with [`png_level`].
pub const PNG_LEVEL_SHIFT: u32 = 4;

/// The `--png-compression` code stored in `flags`.
pub fn png_level(flags: u32) -> u32 {
    (flags >> PNG_LEVEL_SHIFT) & 3
}
/// Values in the stats region: 4 channels x 256 levels.
pub const STATS_VALUES: usize = 4 * 256;

/// The status word of an image claimed by `worker_id`.
pub fn claimed_word(worker_id: u32) -> u32 {
    ImageStatus::Claimed as u32 | (worker_id + 1) << 8
}

impl ImageRecord {
    /// The image's status, without its owner.
    pub fn status(&self) -> Option<ImageStatus> {
        ImageStatus::from_u32(self.status.load(Ordering::Acquire) & 0xff)
    }
}

const _: () = assert!(size_of::<Header>() == 512);
const _: () = assert!(std::mem::offset_of!(Header, pass_event) % 8 == 0);
const _: () = assert!(size_of::<ImageRecord>() == 192);
const _: () = assert!(size_of::<WorkerRecord>() == 128);

/// Errors of creating, opening, attaching or validating a block. Each names the block.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block name {0:?} is invalid: it must start with {NAME_PREFIX:?}, be at most {MAX_NAME_LEN} bytes, and hold only [A-Za-z0-9._-]")]
    BadName(String),
    #[error("not enough shared memory for block {name}: {needed} bytes needed, {free} bytes free in {dir}")]
    NoSpace {
        name: String,
        needed: u64,
        free: u64,
        dir: String,
    },
    #[error("failed to {what} block {name}")]
    Io {
        what: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("block {name} is not valid: {reason}")]
    Invalid { name: String, reason: String },
}

fn io_err<'a>(what: &'static str, name: &'a str) -> impl FnOnce(io::Error) -> BlockError + 'a {
    move |source| BlockError::Io {
        what,
        name: name.to_string(),
        source,
    }
}

/// Checks a block name: our prefix, short enough for macOS, a portable character set.
pub fn validate_name(name: &str) -> Result<(), BlockError> {
    let ok = name.starts_with(NAME_PREFIX)
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(BlockError::BadName(name.to_string()))
    }
}

/// A fresh name: prefix, creator pid, 32 random bits. At most 8 + 10 + 1 + 8 = 27 bytes.
pub fn fresh_name() -> String {
    let mut random = [0u8; 4];
    // getrandom on Linux cannot fail for 4 bytes once the pool is initialised; fall back to the
    // clock rather than abort, uniqueness is still enforced by O_EXCL.
    let bits = match rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty()) {
        Ok(_) => u32::from_le_bytes(random),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    };
    format!("{NAME_PREFIX}{}-{bits:08x}", std::process::id())
}

/// Where a block's name lives: POSIX shared memory, or a regular file in a directory of the
/// user's choice (`--backing DIR`) for hosts whose /dev/shm is small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    Shm,
    Dir(PathBuf),
}

impl Backing {
    /// The directory whose free space bounds the block.
    pub fn dir(&self) -> PathBuf {
        match self {
            Backing::Shm => PathBuf::from(DEFAULT_SHM_DIR),
            Backing::Dir(d) => d.clone(),
        }
    }

    /// Opens (or creates) the block file `name`, never through a symbolic link (`O_NOFOLLOW`:
    /// rustix's `shm::open` does not add it, glibc's does), and only if it is a regular file
    /// owned by this user: anything else in the directory is not ours to lock, read or map.
    pub(crate) fn open(&self, name: &str, create: bool) -> io::Result<OwnedFd> {
        let flags = if create {
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW
        } else {
            OFlags::RDWR | OFlags::NOFOLLOW
        };
        let opened = match self {
            Backing::Shm => {
                // shm::OFlags passes bits it does not name (NOFOLLOW) on to open(2).
                let shm_flags = shm::OFlags::from_bits_retain(flags.bits());
                shm::open(format!("/{name}"), shm_flags, Mode::from_raw_mode(0o600))
            }
            Backing::Dir(dir) => rustix::fs::open(
                dir.join(name),
                flags | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ),
        };
        let fd = opened.map_err(|e| match e {
            rustix::io::Errno::LOOP => NotOurs::Symlink.into(),
            e => io::Error::from(e),
        })?;
        check_ours(fd.as_fd())?;
        Ok(fd)
    }

    pub(crate) fn unlink(&self, name: &str) -> io::Result<()> {
        match self {
            Backing::Shm => Ok(shm::unlink(format!("/{name}"))?),
            Backing::Dir(dir) => std::fs::remove_file(dir.join(name)),
        }
    }
}

/// Why a file with a block's name is not one of our blocks.
#[derive(Debug, thiserror::Error)]
pub enum NotOurs {
    #[error("not ours: a symbolic link (not followed)")]
    Symlink,
    #[error("not ours: not a regular file")]
    NotRegular,
    #[error("not ours: owned by uid {owner}, not by uid {us}")]
    Owner { owner: u32, us: u32 },
}

impl From<NotOurs> for io::Error {
    fn from(e: NotOurs) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, e)
    }
}

impl NotOurs {
    /// The reason behind an error from [`Backing::open`], when it refused a file not ours.
    pub fn of(e: &io::Error) -> Option<&NotOurs> {
        e.get_ref()?.downcast_ref()
    }
}

/// `fstat` of an open block file: a regular file owned by the effective user, or [`NotOurs`].
fn check_ours(fd: BorrowedFd<'_>) -> io::Result<()> {
    let stat = rustix::fs::fstat(fd)?;
    let us = rustix::process::geteuid().as_raw();
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(NotOurs::NotRegular.into());
    }
    if stat.st_uid != us {
        return Err(NotOurs::Owner {
            owner: stat.st_uid,
            us,
        }
        .into());
    }
    Ok(())
}

/// Sizes of a block to be created.
#[derive(Clone, Debug)]
pub struct BlockPlan {
    pub worker_count: u32,
    pub channels: u32,
    /// Per image: height, width, source format index, relative source path bytes.
    pub images: Vec<PlannedImage>,
    pub input_root: Vec<u8>,
    pub output_root: Vec<u8>,
    pub op_chain: String,
    pub output_format: String,
    pub quality: u32,
    /// A [`crate::codec::PngCompression`] code.
    pub png_compression: u32,
    /// Workers stop claiming once any image has failed.
    pub strict: bool,
    /// Copy mode ([`FLAG_COPY`]): no pixel slots in the block.
    pub copy_mode: bool,
    /// [`FLAG_RGB_OUTPUT`].
    pub rgb_output: bool,
    /// [`FLAG_KEPT`].
    pub kept: bool,
    /// [`FLAG_NO_FSYNC`].
    pub no_fsync: bool,
    /// [`FLAG_ALLOW_TRUNCATED`].
    pub allow_truncated: bool,
    /// Resize at decode: a [`crate::codec::Fit`] as u32, 0 for none (images' shapes are then the
    /// target shape).
    pub resize_fit: u32,
}

#[derive(Clone, Debug)]
pub struct PlannedImage {
    pub height: u32,
    pub width: u32,
    pub format: u32,
    pub source: Vec<u8>,
}

fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

/// Offsets of each region, computed once from a plan.
struct Regions {
    image_table: u64,
    worker_table: u64,
    stats: u64,
    strings: u64,
    strings_len: u64,
    pixels: u64,
    pixels_len: u64,
    total: u64,
}

impl BlockPlan {
    /// Bytes of an image's decoded pixels.
    fn image_len(&self, img: &PlannedImage) -> u64 {
        img.height as u64 * img.width as u64 * self.channels as u64
    }

    /// Bytes of an image's slot in the block: its pixels, or none in copy mode.
    fn slot_len(&self, img: &PlannedImage) -> u64 {
        if self.copy_mode {
            0
        } else {
            self.image_len(img)
        }
    }

    fn regions(&self) -> Regions {
        let image_table = align_up(size_of::<Header>() as u64);
        let worker_table =
            align_up(image_table + self.images.len() as u64 * size_of::<ImageRecord>() as u64);
        let stats =
            align_up(worker_table + self.worker_count as u64 * size_of::<WorkerRecord>() as u64);
        let strings = align_up(stats + (STATS_VALUES * 8) as u64);
        let strings_len = self.input_root.len()
            + self.output_root.len()
            + self.op_chain.len()
            + self.output_format.len()
            + self.images.iter().map(|i| i.source.len()).sum::<usize>();
        let pixels = align_up(strings + strings_len as u64);
        let pixels_len: u64 = self.images.iter().map(|i| align_up(self.slot_len(i))).sum();
        Regions {
            image_table,
            worker_table,
            stats,
            strings,
            strings_len: strings_len as u64,
            pixels,
            pixels_len,
            total: pixels + pixels_len,
        }
    }

    /// Bytes the block will take.
    pub fn total_size(&self) -> u64 {
        self.regions().total
    }

    /// Bytes of pixels alone: the decoded dataset.
    pub fn pixel_bytes(&self) -> u64 {
        self.images.iter().map(|i| self.image_len(i)).sum()
    }
}

/// The mapping and what `attach` validated of it. Shared by both kinds of handle.
///
/// Every pointer into the block derives from the raw base of a [`MmapRaw`], never from a
/// `&[u8]` over the whole mapping: other processes change the block while we hold it.
pub struct Mapping {
    name: String,
    backing: Backing,
    map: MmapRaw,
    /// Keeps the descriptor, and with it the owner's flock, open.
    file: File,
    /// Validated copies of the header's layout; never re-read from shared memory.
    layout: Layout,
    /// Validated copies of each slot's place and shape; never re-read from shared memory.
    slots: Vec<SlotInfo>,
}

/// The header fields that locate everything else, as validated.
#[derive(Clone, Copy, Debug, Default)]
struct Layout {
    image_table: usize,
    worker_table: usize,
    worker_count: usize,
    stats: usize,
    strings: usize,
    strings_len: usize,
}

/// Where one image's pixels are and their shape, as validated at attach.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotInfo {
    /// Absolute offset in the block.
    pub offset: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub format: u32,
    pub source: StrRef,
    /// False in copy mode: the image has a shape but no bytes in the block.
    pub in_block: bool,
}

impl SlotInfo {
    /// Bytes of the slot (validated not to overflow).
    pub fn len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Mapping {
    fn take_over(&self, index: usize, worker_id: u32) -> Option<Claim<'_>> {
        let rec = self.images().get(index)?;
        let held = rec.status.load(Ordering::Acquire) == claimed_word(worker_id);
        // Lazily: a Claim built and dropped unused would put the image back to Pending.
        held.then(|| Claim {
            mapping: self,
            index,
            finished: false,
            reserved: 0,
        })
    }

    /// Opens the pass doorbell the creator initialised.
    pub fn pass_event(&self) -> Result<Box<dyn raw_sync::events::EventImpl>, BlockError> {
        use raw_sync::events::{Event, EventInit};
        let at = std::mem::offset_of!(Header, pass_event);
        // SAFETY: `pass_event` is PASS_EVENT_BYTES inside the header (validated length), 8-byte
        // aligned (a multiple-of-8 offset, asserted at compile time, in a page-aligned mapping), and was initialised with `Event::new`
        // by the creator before it published `Ready` (see `write_tables`); raw_sync only reads
        // and writes inside the size it reported there, which creation checked fits.
        unsafe { Event::from_existing(self.map.as_mut_ptr().add(at)) }
            .map(|(event, _)| event)
            .map_err(|e| BlockError::Invalid {
                name: self.name.clone(),
                reason: format!("cannot open its pass event: {e}"),
            })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least `size_of::<Header>()` bytes (checked at create and
        // attach before any handle exists), page-aligned (so 64-aligned), and every bit pattern
        // is a valid Header (integers, atomics and byte arrays only). After publication other
        // processes change it only through its atomics.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// The image table. Its immutable fields may be read; [`Mapping::slot`] gives the validated
    /// copies, which are what anything that addresses memory uses.
    pub fn images(&self) -> &[ImageRecord] {
        // SAFETY: `layout.image_table` is 64-aligned and the table of `slots.len()` records lies
        // inside the mapping, clear of every other region (validated, then copied). Every bit
        // pattern is a valid ImageRecord; its one non-atomic mutable field is an UnsafeCell.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.layout.image_table) as *const ImageRecord,
                self.slots.len(),
            )
        }
    }

    pub fn workers(&self) -> &[WorkerRecord] {
        // SAFETY: as for `images`: aligned, in bounds and clear of other regions (validated,
        // copied), any bit pattern valid, mutable fields atomic.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.layout.worker_table) as *const WorkerRecord,
                self.layout.worker_count,
            )
        }
    }

    pub fn image_count(&self) -> usize {
        self.slots.len()
    }

    /// The stats region: [`STATS_VALUES`] counters shared by every process of a job.
    pub fn stats(&self) -> &[AtomicU64] {
        // SAFETY: the region of STATS_VALUES u64s lies inside the mapping, 64-aligned, clear of
        // every other region (validated, then copied); any bit pattern is a valid AtomicU64.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(self.layout.stats) as *const AtomicU64,
                STATS_VALUES,
            )
        }
    }

    pub fn slot(&self, index: usize) -> SlotInfo {
        self.slots[index]
    }

    /// A string from the strings region; empty when out of bounds.
    pub fn string(&self, r: StrRef) -> &[u8] {
        let in_bounds = r
            .offset
            .checked_add(r.len)
            .is_some_and(|end| end <= self.layout.strings_len as u64);
        if !in_bounds {
            return &[];
        }
        // SAFETY: the strings region `[strings, strings + strings_len)` lies inside the mapping
        // (validated, copied) and `r` lies inside it (checked above). Strings are written once,
        // before publication, and never changed by shmpipe; a foreign writer can at worst change
        // which bytes we read, never where.
        unsafe {
            std::slice::from_raw_parts(
                self.map
                    .as_ptr()
                    .add(self.layout.strings + r.offset as usize),
                r.len as usize,
            )
        }
    }

    /// The relative source path of an image, as the raw bytes the planner stored.
    pub fn source(&self, index: usize) -> &[u8] {
        self.string(self.slots[index].source)
    }

    /// An image's error message, or None while it has not failed.
    pub fn message(&self, index: usize) -> Option<String> {
        self.outcome_text(index, ImageStatus::Failed)
    }

    /// The warning a done image was published with ([`Claim::done_with_warning`]), if any.
    pub fn warning(&self, index: usize) -> Option<String> {
        self.outcome_text(index, ImageStatus::Done)
            .filter(|w| !w.is_empty())
    }

    fn outcome_text(&self, index: usize, status: ImageStatus) -> Option<String> {
        let rec = &self.images()[index];
        if rec.status() != Some(status) {
            return None;
        }
        let len = (rec.message_len.load(Ordering::Acquire) as usize).min(MESSAGE_LEN);
        // SAFETY: status is Done or Failed (Acquire), so the claim holder finished writing the
        // message before its Release store; nobody writes it again while it stays so.
        let bytes = unsafe { &(&*rec.message.get())[..len] };
        Some(String::from_utf8_lossy(bytes).into_owned())
    }

    /// Tries to move image `index` from Pending to Claimed by worker `worker_id`, in one step.
    pub fn try_claim(&self, index: usize, worker_id: u32) -> Option<Claim<'_>> {
        let rec = self.images().get(index)?;
        rec.status
            .compare_exchange(
                ImageStatus::Pending as u32,
                claimed_word(worker_id),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .ok()?;
        Some(Claim {
            mapping: self,
            index,
            finished: false,
            reserved: 0,
        })
    }

    fn validate(&mut self, creating: bool) -> Result<(), BlockError> {
        let len = self.map.len() as u64;
        let invalid = |reason: String| BlockError::Invalid {
            name: self.name.clone(),
            reason,
        };
        let header_size = size_of::<Header>() as u64;
        if len < header_size {
            return Err(invalid(format!("{len} bytes is smaller than the header")));
        }
        let h = self.header();
        if h.magic != MAGIC {
            return Err(invalid("wrong magic: not a shmpipe block".into()));
        }
        if h.layout_version != LAYOUT_VERSION {
            return Err(invalid(format!(
                "layout version {} (this build reads {LAYOUT_VERSION})",
                h.layout_version
            )));
        }
        if h.header_size as u64 != header_size {
            return Err(invalid(format!("header size {}", h.header_size)));
        }
        if h.total_size != len {
            return Err(invalid(format!(
                "header says {} bytes but the mapping has {len}",
                h.total_size
            )));
        }
        match BlockState::from_u32(h.state.load(Ordering::Acquire)) {
            Some(BlockState::Creating) if !creating => {
                return Err(invalid("still being created".into()))
            }
            None => return Err(invalid("unknown state".into())),
            Some(_) => {}
        }
        if !matches!(h.channels, 1 | 3 | 4) {
            return Err(invalid(format!("{} channels", h.channels)));
        }
        if h.image_record_size != size_of::<ImageRecord>() as u64
            || h.worker_record_size != size_of::<WorkerRecord>() as u64
        {
            return Err(invalid("record sizes differ from this build's".into()));
        }
        // Regions must be aligned, in this order, and must not overlap: header, image table,
        // worker table, strings, pixels, end of the mapping.
        let mut previous_end = header_size;
        let mut region = |what: &str,
                          offset: u64,
                          count: u64,
                          size: u64|
         -> Result<u64, BlockError> {
            let end = count
                .checked_mul(size)
                .and_then(|bytes| offset.checked_add(bytes))
                .filter(|end| *end <= len && offset.is_multiple_of(ALIGN) && offset >= previous_end)
                .ok_or_else(|| {
                    invalid(format!(
                        "{what} region (offset {offset}, {count} x {size} bytes) is misaligned, overlaps the one before, or runs past the end ({len} bytes)"
                    ))
                })?;
            previous_end = end;
            Ok(end)
        };
        let image_count = h.image_count;
        region(
            "image table",
            h.image_table_offset,
            image_count,
            h.image_record_size,
        )?;
        region(
            "worker table",
            h.worker_table_offset,
            h.worker_count as u64,
            h.worker_record_size,
        )?;
        region("stats", h.stats_offset, STATS_VALUES as u64, 8)?;
        region("strings", h.strings_offset, h.strings_len, 1)?;
        let pixels_end = region("pixels", h.pixels_offset, h.pixels_len, 1)?;
        for (what, r) in [
            ("input root", h.input_root),
            ("output root", h.output_root),
            ("op chain", h.op_chain),
            ("output format", h.output_format),
        ] {
            if r.offset
                .checked_add(r.len)
                .is_none_or(|e| e > h.strings_len)
            {
                return Err(invalid(format!("{what} string is out of bounds")));
            }
        }
        let layout = Layout {
            image_table: h.image_table_offset as usize,
            worker_table: h.worker_table_offset as usize,
            worker_count: h.worker_count as usize,
            stats: h.stats_offset as usize,
            strings: h.strings_offset as usize,
            strings_len: h.strings_len as usize,
        };
        let (channels, pixels_offset) = (h.channels, h.pixels_offset);
        let copy_mode = h.flags & FLAG_COPY != 0;
        let mut slots =
            Vec::with_capacity(image_count.min(len / size_of::<ImageRecord>() as u64) as usize);
        let mut next_free = pixels_offset;
        for i in 0..image_count as usize {
            // SAFETY: the table lies inside the mapping (checked by `region` above) and is
            // 64-aligned; any bit pattern is a valid ImageRecord. We copy the fields out.
            let rec = unsafe {
                &*(self
                    .map
                    .as_ptr()
                    .add(layout.image_table + i * size_of::<ImageRecord>())
                    as *const ImageRecord)
            };
            let (offset, slot_len, height, width, ch, format, source) = (
                rec.slot_offset,
                rec.slot_len,
                rec.height,
                rec.width,
                rec.channels,
                rec.format,
                rec.source,
            );
            let bad = |what: &str| {
                invalid(format!(
                    "image {i}: {what} (slot offset {offset}, {slot_len} bytes, {height}x{width}x{ch})"
                ))
            };
            if ch != channels {
                return Err(bad("channels differ from the block's"));
            }
            let expected = (height as u64)
                .checked_mul(width as u64)
                .and_then(|p| p.checked_mul(ch as u64));
            if expected.is_none() || (!copy_mode && expected != Some(slot_len)) {
                return Err(bad("slot length does not match its shape"));
            }
            if copy_mode && (slot_len != 0 || offset != 0) {
                return Err(bad("a copy-mode block holds no pixels"));
            }
            // Slots must be aligned, in order, and disjoint: each starts at or after the end of
            // the one before, so no two claims can ever cover the same byte.
            let start = pixels_offset.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(slot_len));
            match (start, end) {
                (Some(s), Some(e))
                    if s >= next_free && e <= pixels_end && offset.is_multiple_of(ALIGN) =>
                {
                    next_free = e;
                }
                _ => {
                    return Err(bad(
                        "slot is misaligned, overlaps another, or is out of bounds",
                    ))
                }
            }
            if source
                .offset
                .checked_add(source.len)
                .is_none_or(|e| e > layout.strings_len as u64)
            {
                return Err(bad("source path is out of bounds"));
            }
            slots.push(SlotInfo {
                offset: start.unwrap_or_default() as usize,
                height: height as usize,
                width: width as usize,
                channels: ch as usize,
                format,
                source,
                in_block: !copy_mode,
            });
        }
        self.layout = layout;
        self.slots = slots;
        // Source paths must stay inside the input and output folders: plain relative names.
        for i in 0..self.slots.len() {
            let path = Path::new(std::ffi::OsStr::from_bytes(self.source(i)));
            let plain = !path.as_os_str().is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)));
            if !plain {
                return Err(invalid(format!(
                    "image {i}: source path {path:?} is not a plain relative path"
                )));
            }
        }
        Ok(())
    }
}

/// An image held by one worker between its claim and its outcome. The only way to write a slot.
pub struct Claim<'a> {
    mapping: &'a Mapping,
    index: usize,
    finished: bool,
    /// Leading bytes of the slot this claim has reserved (see [`Claim::reserve`]).
    reserved: usize,
}

impl<'a> Claim<'a> {
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn slot(&self) -> SlotInfo {
        self.mapping.slots[self.index]
    }

    /// The slot's pixels, `height * width * channels` bytes, row-major, reserved first (see
    /// [`Claim::reserve`]).
    pub fn pixels(&mut self) -> Result<&mut [u8], BlockError> {
        let len = self.slot_len();
        self.reserve(len)
    }

    fn slot_len(&self) -> usize {
        let slot = self.slot();
        if slot.in_block {
            slot.len()
        } else {
            0
        }
    }

    /// The slot's first `len` bytes (at most the slot), with their pages reserved in the
    /// filesystem (`fallocate`) before anything touches them: a filesystem filled by someone
    /// else since the block was created fails this image with a clear error instead of killing
    /// the worker with SIGBUS. A kept block was reserved whole at creation; reserving again
    /// allocates nothing.
    pub fn reserve(&mut self, len: usize) -> Result<&mut [u8], BlockError> {
        let len = len.min(self.slot_len());
        if len > self.reserved {
            let offset = (self.slot().offset + self.reserved) as u64;
            let fd = self.mapping.file.as_fd();
            let needed = (len - self.reserved) as u64;
            fallocate_range(fd, offset, needed).map_err(|e| {
                reserve_error(e, &self.mapping.name, &self.mapping.backing.dir(), needed)
            })?;
            self.reserved = len;
        }
        Ok(self.bytes(len))
    }

    fn bytes(&mut self, len: usize) -> &mut [u8] {
        let slot = self.slot();
        debug_assert!(len <= self.slot_len());
        // SAFETY: `[slot.offset, slot.offset + slot.len())` lies inside the pixels region of the
        // mapping and overlaps no other slot and no table (validated at attach, copied, never
        // re-read). No other process writes or reads it while we hold the claim: the CAS in
        // `try_claim` gave it to us alone (invariant (3)), and the coordinator reads pixels only
        // after join. `&mut self` keeps this process to one borrow at a time. The pointer derives
        // from the mapping's raw base, not from a shared reference. `len` is at most the slot's
        // length (callers clamp it).
        unsafe {
            std::slice::from_raw_parts_mut(self.mapping.map.as_mut_ptr().add(slot.offset), len)
        }
    }

    /// Publishes success.
    pub fn done(mut self) {
        self.finish(ImageStatus::Done, "");
    }

    /// Publishes success with a warning (truncated like a failure's reason), for example a
    /// damaged JPEG kept under `--allow-truncated`.
    pub fn done_with_warning(mut self, warning: &str) {
        self.finish(ImageStatus::Done, warning);
    }

    /// Publishes failure with a reason (truncated to [`MESSAGE_LEN`] bytes at a char boundary).
    pub fn fail(mut self, reason: &str) {
        self.finish(ImageStatus::Failed, reason);
    }

    fn finish(&mut self, status: ImageStatus, reason: &str) {
        let rec = &self.mapping.images()[self.index];
        let mut end = reason.len().min(MESSAGE_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        // SAFETY: we hold the claim, so no other process writes the message; readers look only
        // after the Release store of `status` below.
        unsafe { (&mut *rec.message.get())[..end].copy_from_slice(&reason.as_bytes()[..end]) };
        rec.message_len.store(end as u32, Ordering::Release);
        rec.status.store(status as u32, Ordering::Release);
        self.finished = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // A claim dropped without an outcome (a panic unwinding, an early return, a dead worker's
        // claim released by the owner) goes back to the queue, so another worker decodes it again
        // from its source.
        if !self.finished {
            let rec = &self.mapping.images()[self.index];
            rec.status
                .store(ImageStatus::Pending as u32, Ordering::Release);
        }
    }
}

/// The creator's handle: owns the name, holds the owner lock, unlinks on drop.
pub struct OwnedBlock {
    mapping: Mapping,
    keep: bool,
}

impl std::ops::Deref for OwnedBlock {
    type Target = Mapping;
    fn deref(&self) -> &Mapping {
        &self.mapping
    }
}

/// A failed `fallocate` of `needed` bytes as an error: out of space names the bytes and the
/// folder.
fn reserve_error(e: io::Error, name: &str, dir: &Path, needed: u64) -> BlockError {
    match e.raw_os_error() {
        Some(code) if code == rustix::io::Errno::NOSPC.raw_os_error() => BlockError::NoSpace {
            name: name.to_string(),
            needed,
            free: free_bytes(dir).unwrap_or(0),
            dir: dir.display().to_string(),
        },
        _ => io_err("reserve pages for", name)(e),
    }
}

fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

impl OwnedBlock {
    /// Creates a block for `plan` under `name`: exclusive create, mode 0600, sized exactly after a
    /// free-space check, then writes the header and tables and publishes `Ready`. A kept block's
    /// pages are all reserved here; a run's own block reserves its tables here and each slot when
    /// a worker claims it ([`Claim::reserve`]). Either way a full filesystem is an error, never a
    /// SIGBUS.
    pub fn create(
        name: &str,
        backing: Backing,
        plan: &BlockPlan,
    ) -> Result<OwnedBlock, BlockError> {
        validate_name(name)?;
        let regions = plan.regions();
        let dir = backing.dir();
        let free = free_bytes(&dir).map_err(io_err("check free space for", name))?;
        if free < regions.total {
            return Err(BlockError::NoSpace {
                name: name.to_string(),
                needed: regions.total,
                free,
                dir: dir.display().to_string(),
            });
        }
        let fd = backing.open(name, true).map_err(io_err("create", name))?;
        // From here on the name exists: remove it on every error path.
        let fail = |err: BlockError| {
            let _ = backing.unlink(name);
            err
        };
        rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive)
            .map_err(|e| fail(io_err("lock", name)(e.into())))?;
        rustix::fs::ftruncate(&fd, regions.total)
            .map_err(|e| fail(io_err("size", name)(e.into())))?;
        // A kept block is reserved whole now: it outlives the run, and anyone may read any slot.
        // A run's own block reserves the header and tables now and each slot when a worker
        // claims it (`Claim::reserve`): in parallel, and only the bytes the worker writes.
        let reserved = if plan.kept {
            regions.total
        } else {
            regions.pixels
        };
        fallocate_range(fd.as_fd(), 0, reserved)
            .map_err(|e| fail(reserve_error(e, name, &dir, reserved)))?;
        let file = File::from(fd);
        // A raw mapping: memmap2 promises nothing about memory other processes change, so we
        // take only its base pointer and rely on this module's invariants instead.
        let map = MmapRaw::map_raw(&file).map_err(|e| fail(io_err("map", name)(e)))?;
        let mapping = Mapping {
            name: name.to_string(),
            backing,
            map,
            file,
            layout: Layout::default(),
            slots: Vec::new(),
        };
        // From here the handle owns the name: any error below unlinks it on drop.
        let mut owned = OwnedBlock {
            mapping,
            keep: false,
        };
        owned.mapping.write_tables(plan, &regions)?;
        Ok(owned)
    }

    /// Takes over the claim that dead worker `worker_id` held on image `index`. Only the owner
    /// may do this, and only after reaping that worker: dropping the returned claim puts the image
    /// back in the queue; `fail` quarantines it.
    pub fn take_over(&self, index: usize, worker_id: u32) -> Option<Claim<'_>> {
        self.mapping.take_over(index, worker_id)
    }

    /// Keeps the name after drop (for blocks that outlive their creator on purpose).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn set_state(&self, state: BlockState) {
        self.header().state.store(state as u32, Ordering::Release);
    }

    /// The descriptor, for tests that need to see the owner lock.
    pub fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.mapping.file.as_fd()
    }
}

impl Drop for OwnedBlock {
    fn drop(&mut self) {
        if !self.keep {
            let _ = self.mapping.backing.unlink(&self.mapping.name);
        }
    }
}

/// Reserves `len` bytes of the block's pages from `offset` (page-granular in the kernel), so that
/// a full tmpfs fails here with ENOSPC instead of at the first touch with SIGBUS.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn fallocate_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
    loop {
        match rustix::fs::fallocate(fd, FallocateFlags::empty(), offset, len) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Elsewhere (macOS) there is no fallocate for shared memory: the free-space check in `create` is
/// the only guard, so a filesystem filled by someone else after that check can still fault later.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn fallocate_range(_fd: BorrowedFd<'_>, _offset: u64, _len: u64) -> io::Result<()> {
    let _ = FallocateFlags::empty();
    Ok(())
}

impl Mapping {
    /// Memory the block holds now: the pages its file has in a tmpfs (`/dev/shm`, or a
    /// `--backing` folder on tmpfs), whether or not any process maps them. One `fstat`, however
    /// big the block. None where that is not memory (a block file on disk) or not known.
    pub fn memory_bytes(&self) -> Option<u64> {
        #[cfg(target_os = "linux")]
        {
            const TMPFS_MAGIC: i64 = 0x0102_1994;
            let fs = rustix::fs::fstatfs(&self.file).ok()?;
            if fs.f_type as i64 != TMPFS_MAGIC {
                return None;
            }
            let st = rustix::fs::fstat(&self.file).ok()?;
            Some(st.st_blocks as u64 * 512)
        }
        #[cfg(not(target_os = "linux"))]
        None
    }

    fn write_tables(&mut self, plan: &BlockPlan, r: &Regions) -> Result<(), BlockError> {
        let base = self.map.as_mut_ptr();
        let mut strings = Vec::with_capacity(r.strings_len as usize);
        let mut push = |bytes: &[u8]| {
            let s = StrRef {
                offset: strings.len() as u64,
                len: bytes.len() as u64,
            };
            strings.extend_from_slice(bytes);
            s
        };
        let input_root = push(&plan.input_root);
        let output_root = push(&plan.output_root);
        let op_chain = push(plan.op_chain.as_bytes());
        let output_format = push(plan.output_format.as_bytes());
        let sources: Vec<StrRef> = plan.images.iter().map(|i| push(&i.source)).collect();
        let uniform = plan
            .images
            .first()
            .filter(|f| {
                plan.images
                    .iter()
                    .all(|i| (i.height, i.width) == (f.height, f.width))
            })
            .map(|f| (f.height, f.width))
            .unwrap_or((0, 0));
        let header = Header {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            header_size: size_of::<Header>() as u32,
            total_size: r.total,
            owner_pid: std::process::id(),
            state: AtomicU32::new(BlockState::Creating as u32),
            image_count: plan.images.len() as u64,
            worker_count: plan.worker_count,
            channels: plan.channels,
            image_table_offset: r.image_table,
            image_record_size: size_of::<ImageRecord>() as u64,
            worker_table_offset: r.worker_table,
            worker_record_size: size_of::<WorkerRecord>() as u64,
            strings_offset: r.strings,
            strings_len: r.strings_len,
            pixels_offset: r.pixels,
            pixels_len: r.pixels_len,
            input_root,
            output_root,
            op_chain,
            output_format,
            quality: plan.quality,
            uniform_height: uniform.0,
            uniform_width: uniform.1,
            flags: [
                (plan.strict, FLAG_STRICT),
                (plan.copy_mode, FLAG_COPY),
                (plan.rgb_output, FLAG_RGB_OUTPUT),
                (plan.kept, FLAG_KEPT),
                (plan.no_fsync, FLAG_NO_FSYNC),
                (plan.allow_truncated, FLAG_ALLOW_TRUNCATED),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .fold(
                (plan.png_compression & 3) << PNG_LEVEL_SHIFT,
                |flags, (_, flag)| flags | flag,
            ),
            next_claim: AtomicU64::new(0),
            images_done: AtomicU64::new(0),
            images_failed: AtomicU64::new(0),
            pixels_done: AtomicU64::new(0),
            resize_fit: plan.resize_fit,
            pass: AtomicU32::new(0),
            norm_mean: Default::default(),
            norm_std: Default::default(),
            pass_event: [0; PASS_EVENT_BYTES],
            stats_offset: r.stats,
            export_float: AtomicU64::new(0),
        };
        // SAFETY: the mapping is `r.total` bytes, exclusively ours (no worker exists yet), and
        // page-aligned; each write below targets a 64-aligned offset computed by `regions` whose
        // record fits before the next region.
        unsafe {
            std::ptr::write(base as *mut Header, header);
            let mut slot_offset = 0u64;
            for (i, img) in plan.images.iter().enumerate() {
                let len = plan.slot_len(img);
                let rec = ImageRecord {
                    slot_offset,
                    slot_len: len,
                    height: img.height,
                    width: img.width,
                    channels: plan.channels,
                    format: img.format,
                    source: sources[i],
                    status: AtomicU32::new(ImageStatus::Pending as u32),
                    _reserved0: 0,
                    crashes: AtomicU32::new(0),
                    message_len: AtomicU32::new(0),
                    message: UnsafeCell::new([0; MESSAGE_LEN]),
                };
                std::ptr::write(
                    base.add((r.image_table + i as u64 * size_of::<ImageRecord>() as u64) as usize)
                        as *mut ImageRecord,
                    rec,
                );
                slot_offset += align_up(len);
            }
            for w in 0..plan.worker_count as u64 {
                std::ptr::write(
                    base.add((r.worker_table + w * size_of::<WorkerRecord>() as u64) as usize)
                        as *mut WorkerRecord,
                    WorkerRecord {
                        pid: AtomicU32::new(0),
                        state: AtomicU32::new(0),
                        heartbeat_ms: AtomicU64::new(0),
                        images_done: AtomicU64::new(0),
                        images_failed: AtomicU64::new(0),
                        pixels_done: AtomicU64::new(0),
                        current_image: AtomicU64::new(NO_IMAGE),
                        ready_ns: AtomicU64::new(0),
                        _reserved: [0; 1],
                        sums: Default::default(),
                        sums_sq: Default::default(),
                    },
                );
            }
            std::ptr::copy_nonoverlapping(
                strings.as_ptr(),
                base.add(r.strings as usize),
                strings.len(),
            );
        }
        self.validate(true)?;
        {
            use raw_sync::events::{Event, EventInit};
            let at = std::mem::offset_of!(Header, pass_event);
            // SAFETY: the mapping is ours alone (no other process can attach before `Ready`),
            // the field is PASS_EVENT_BYTES long and 8-aligned; we check raw_sync's size below
            // before anyone uses the event.
            let made = unsafe { Event::new(self.map.as_mut_ptr().add(at), false) };
            let problem = match made {
                Ok((_, used)) if used <= PASS_EVENT_BYTES => None,
                Ok((_, used)) => Some(format!(
                    "raw_sync's event needs {used} bytes, not {PASS_EVENT_BYTES}"
                )),
                Err(e) => Some(format!("cannot create its pass event: {e}")),
            };
            if let Some(reason) = problem {
                let name = self.name.clone();
                return Err(BlockError::Invalid { name, reason });
            }
        }
        self.header()
            .state
            .store(BlockState::Ready as u32, Ordering::Release);
        Ok(())
    }
}

/// A worker's (or any reader's) handle: maps an existing block by name; never unlinks it.
pub struct AttachedBlock {
    mapping: Mapping,
}

impl std::ops::Deref for AttachedBlock {
    type Target = Mapping;
    fn deref(&self) -> &Mapping {
        &self.mapping
    }
}

impl AttachedBlock {
    /// Takes the block's lock exclusively, without waiting: `apply` holds it while it writes a
    /// kept dataset, so a second `apply`, a `save` or an `export` refuses instead of racing it.
    pub fn lock_exclusive(&self) -> Result<(), BlockError> {
        rustix::fs::flock(&self.mapping.file, FlockOperation::NonBlockingLockExclusive).map_err(
            |e| BlockError::Invalid {
                name: self.mapping.name.clone(),
                reason: if e == rustix::io::Errno::WOULDBLOCK {
                    "busy: another apply, save, export or run is using it".into()
                } else {
                    format!("cannot lock it: {e}")
                },
            },
        )
    }

    /// For the process holding [`AttachedBlock::lock_exclusive`], as for the owner.
    pub fn take_over(&self, index: usize, worker_id: u32) -> Option<Claim<'_>> {
        self.mapping.take_over(index, worker_id)
    }

    /// Starts pass `pass` of a job on a block this process holds exclusively: every image back to
    /// Pending, the claim counter and the progress counters to zero.
    pub fn begin_pass(&self, pass: u32) {
        let h = self.header();
        for rec in self.images() {
            rec.status
                .store(ImageStatus::Pending as u32, Ordering::Release);
        }
        for w in self.workers() {
            w.current_image.store(NO_IMAGE, Ordering::Release);
            w.images_done.store(0, Ordering::Release);
            w.images_failed.store(0, Ordering::Release);
            w.pixels_done.store(0, Ordering::Release);
        }
        h.next_claim.store(0, Ordering::Release);
        h.images_done.store(0, Ordering::Release);
        h.images_failed.store(0, Ordering::Release);
        h.pixels_done.store(0, Ordering::Release);
        h.state.store(BlockState::Ready as u32, Ordering::Release);
        h.pass.store(pass, Ordering::Release);
    }

    pub fn set_state(&self, state: BlockState) {
        self.header().state.store(state as u32, Ordering::Release);
    }

    /// Takes the block's lock shared, without waiting: readers (`save`, `export`) may share it;
    /// a run or load writing the block holds it exclusively, so this fails while one does.
    pub fn lock_shared(&self) -> Result<(), BlockError> {
        rustix::fs::flock(&self.mapping.file, FlockOperation::NonBlockingLockShared).map_err(|e| {
            BlockError::Invalid {
                name: self.mapping.name.clone(),
                reason: if e == rustix::io::Errno::WOULDBLOCK {
                    "busy: a run is writing it".into()
                } else {
                    format!("cannot lock it: {e}")
                },
            }
        })
    }

    /// Image `index`'s pixels, for reading. Sound only while nobody writes the block: callers
    /// hold [`AttachedBlock::lock_shared`], which every shmpipe writer's exclusive lock excludes.
    pub fn pixels(&self, index: usize) -> &[u8] {
        let slot = self.mapping.slots[index];
        let len = if slot.in_block { slot.len() } else { 0 };
        // SAFETY: the range lies inside the pixels region (validated at attach, copied); it is
        // read while no shmpipe process writes the block (shared lock, see above). A foreign
        // writer (a NumPy script) could still change the bytes under us; that can make what we
        // read inconsistent, never out of bounds.
        unsafe { std::slice::from_raw_parts(self.mapping.map.as_ptr().add(slot.offset), len) }
    }

    /// Maps the block `name` and validates magic, version, sizes and every offset against the
    /// mapping's length before anything else reads it.
    pub fn attach(name: &str, backing: Backing) -> Result<AttachedBlock, BlockError> {
        validate_name(name)?;
        let fd = backing.open(name, false).map_err(io_err("open", name))?;
        let file = File::from(fd);
        // Raw, as in `OwnedBlock::create`; `validate` checks the layout before any typed access.
        let map = MmapRaw::map_raw(&file).map_err(io_err("map", name))?;
        let mut mapping = Mapping {
            name: name.to_string(),
            backing,
            map,
            file,
            layout: Layout::default(),
            slots: Vec::new(),
        };
        mapping.validate(false)?;
        Ok(AttachedBlock { mapping })
    }
}

#[cfg(test)]
mod layout_tests {
    use super::*;
    use std::mem::offset_of;

    /// worker/python/shmpipe_block.py reads these offsets: change them together.
    #[test]
    fn offsets_the_python_module_relies_on() {
        assert_eq!(offset_of!(Header, layout_version), 8);
        assert_eq!(offset_of!(Header, header_size), 12);
        assert_eq!(offset_of!(Header, total_size), 16);
        assert_eq!(offset_of!(Header, state), 28);
        assert_eq!(offset_of!(Header, image_count), 32);
        assert_eq!(offset_of!(Header, channels), 44);
        assert_eq!(offset_of!(Header, image_table_offset), 48);
        assert_eq!(offset_of!(Header, image_record_size), 56);
        assert_eq!(offset_of!(Header, strings_offset), 80);
        assert_eq!(offset_of!(Header, strings_len), 88);
        assert_eq!(offset_of!(Header, pixels_offset), 96);
        assert_eq!(offset_of!(Header, pixels_len), 104);
        assert_eq!(offset_of!(Header, flags), 188);
        assert_eq!(offset_of!(ImageRecord, slot_offset), 0);
        assert_eq!(offset_of!(ImageRecord, slot_len), 8);
        assert_eq!(offset_of!(ImageRecord, height), 16);
        assert_eq!(offset_of!(ImageRecord, width), 20);
        assert_eq!(offset_of!(ImageRecord, channels), 24);
        assert_eq!(offset_of!(ImageRecord, format), 28);
        assert_eq!(offset_of!(ImageRecord, source), 32);
        assert_eq!(FLAG_COPY, 2);
        assert_eq!(FLAG_KEPT, 8);
    }
}
