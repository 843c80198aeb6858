//! The block's layout, defined once: the `#[repr(C)]` header and records placed in shared
//! memory, their constants, flags and status enums. (The plan from which a block's regions and
//! sizes are computed is `plan`.)
//!
//! This file must never touch a mapping: it describes bytes, it does not read or write them.
//! Changing anything here changes the layout: bump [`LAYOUT_VERSION`] and update
//! `python/shmpipe/_layout.py` with it.

use std::cell::UnsafeCell;
use std::mem::size_of;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// First eight bytes of every block.
pub const MAGIC: [u8; 8] = *b"SHMPIPE\0";
/// Bumped whenever the layout changes; `attach` refuses any other.
pub const LAYOUT_VERSION: u32 = 4;
/// Alignment of every region and every slot.
pub const ALIGN: u64 = 64;
/// Bytes of an image's error message kept in its record.
pub const MESSAGE_LEN: usize = 104;

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

/// What a kept dataset holds, in `Header::dataset_state`: the truth every reader checks first.
/// Written only by the process holding the block's lock exclusively. A state other than `Ready`
/// in a block whose lock nobody holds means its writer died (or was stopped) mid-job.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetState {
    /// Not a dataset: a run's own working block.
    None = 0,
    /// `load` (or `run --keep`) is decoding the images.
    Loading = 1,
    /// Every image is done (at the latest step of the history) or failed with its reason.
    Ready = 2,
    /// `apply` is changing the pixels: images may be at different steps, some half transformed.
    Applying = 3,
    /// `repair` is rebuilding interrupted images and finishing an interrupted apply.
    Repairing = 4,
    /// A writable handle of the Python package (`shmpipe.attach(NAME, writable=True)`) is
    /// attached: set once it holds the lock exclusively, back to `Ready` only when it lets go in
    /// order (closed, or collected, with no view of it left). Found with the lock free, it means
    /// the writer was killed or its interpreter died, maybe in the middle of its edits. Those
    /// edits are in no history step, so `repair` cannot rebuild them: the dataset is damaged for
    /// good. A new value, not a new layout: a build that predates it reads an unknown state and
    /// refuses the dataset, which is what it should do.
    PythonWriting = 5,
}

impl DatasetState {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::None,
            1 => Self::Loading,
            2 => Self::Ready,
            3 => Self::Applying,
            4 => Self::Repairing,
            5 => Self::PythonWriting,
            _ => return None,
        })
    }
}

/// `ImageRecord::steps` of an image whose pixels are not known to be any step of the history:
/// not decoded yet, or a transform was cut short. Only a rebuild from its source fixes it.
pub const STEPS_UNKNOWN: u32 = u32::MAX;

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
    /// Channels of every slot: 1, 3 or 4; or [`CHANNELS_PER_IMAGE`], each image's own (1 to 4)
    /// in its record (`run` without `--channels`).
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
    /// `--resize`: a [`crate::resize::Fit`] (then every slot has the box's shape, or under
    /// `inside` the image's own fitted shape), 0 for none.
    pub resize_fit: u32,
    /// The doorbell of `apply` and `repair`: a generation number the coordinator bumps to open
    /// each pass, then wakes every worker waiting on it (a futex on this word: no death can wedge
    /// a futex wait or wake, unlike a process-shared mutex or condition variable).
    pub pass: AtomicU32,
    /// When the block was created, in nanoseconds since the Unix epoch (`ls`'s AGE); 0 in a
    /// block made before this field (unknown).
    pub created_unix_ns: u64,
    /// When the run, load, apply or repair that owns the block started, in nanoseconds since the
    /// Unix epoch: the one clock of its progress display and of `watch`'s; 0 until set, and in a
    /// block made before this field.
    pub run_started_unix_ns: AtomicU64,
    /// Writable handles of the Python package (`shmpipe.attach(NAME, writable=True)`) that have
    /// attached to this dataset: each raises it by one once it holds the exclusive lock, before
    /// it can write. Such writes are in no history step; a batch made before one (see the
    /// package's `collate`) is refused after it. 0 in a block made before this field.
    pub python_writers: AtomicU64,
    /// A window block ([`FLAG_WINDOW`]): the bytes of each worker's one slot; worker `w` decodes
    /// every image it claims into `[pixels + w * window_slot_len, + window_slot_len)`. 0 else.
    pub window_slot_len: u64,
    /// Why the coordinator asked its workers to stop ([`Mapping::request_stop`]): the signal's
    /// number, [`STOP_STRICT`] for `--strict`'s first failure, 0 for no stop or none said (and
    /// in a block made before this field). What `watch` tells of a run stopped early.
    ///
    /// [`Mapping::request_stop`]: crate::Mapping::request_stop
    pub stop_reason: AtomicU32,
    pub _reserved_pad2: u32,
    /// Unused since layout 2, and free for new fields: a block made before reads zeros there.
    pub _reserved_stats: [u64; 3],
    /// A [`DatasetState`].
    pub dataset_state: AtomicU32,
    /// Entries of the history region in force (see [`HistoryEntry`]); each is written before
    /// this count is raised past it (Release), and never changed after.
    pub history_count: AtomicU32,
    /// The history region: [`HISTORY_CAPACITY`] entries.
    pub history_offset: u64,
    /// `--max-pixels` of the load, so that a rebuild decodes as the load did.
    pub load_max_pixels: u64,
    /// Entries the history region holds: [`HISTORY_CAPACITY`] in a kept block, else 0.
    pub history_capacity: u32,
    /// How images are labelled: [`LABELS_NONE`], [`LABELS_FOLDER`] (`load --labels folder`) or
    /// [`LABELS_FILE`] (`load --labels FILE`).
    pub label_kind: u32,
    /// Classes named in `class_names`; an image's label indexes them.
    pub class_count: u32,
    pub _reserved_pad: u32,
    /// The class names in class order, each followed by a NUL byte, in the strings region.
    pub class_names: StrRef,
    /// `--background`: the colour an image with alpha is flattened onto before it is written
    /// (red, green, blue, then a zero byte), read only under [`FLAG_BACKGROUND`]. Taken from
    /// the reserved bytes, which older blocks hold as zeros, without that flag.
    pub background: [u8; 4],
    pub _reserved: [u8; 148],
    pub _reserved_tail: u64,
}

/// `Header::stop_reason` of a run stopped at its first failed image (`--strict`).
pub const STOP_STRICT: u32 = 0x100;

/// `Header::label_kind`: no labels; every record's label is -1.
pub const LABELS_NONE: u32 = 0;
/// `Header::label_kind`: an image's label is the index, among the top-level folders of the
/// loaded folder in sorted (byte) order, of the one it lies in: torchvision's ImageFolder rule.
pub const LABELS_FOLDER: u32 = 1;
/// `Header::label_kind`: an image's label is the index, among the sorted class names of a labels
/// file (`load --labels labels.csv`), of the class the file gives it.
pub const LABELS_FILE: u32 = 2;

/// `Header::channels` of a block whose images each keep their own channels, given in their
/// records: 1 gray, 2 gray and alpha, 3 colour, 4 colour and alpha. A kept dataset never has it.
pub const CHANNELS_PER_IMAGE: u32 = 0;

/// Entries a dataset's history can hold; `apply` refuses once it is full.
pub const HISTORY_CAPACITY: usize = 64;
/// Bytes of an op list in a [`HistoryEntry`].
pub const HISTORY_OPS_LEN: usize = 240;

/// One step of a kept dataset's history: how its pixels were made from the decoded sources. A
/// step maps each image by `luts` (when present) and then runs `ops`. An `apply` is one step, or
/// two around a dataset-wide op (the op's statistics need every image through the first).
/// Replaying the steps on a freshly decoded source gives an image's pixels byte for byte: that
/// is how an image whose transform was cut short is rebuilt.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub struct HistoryEntry {
    pub ops_len: u32,
    pub after_len: u32,
    /// A dataset-wide op that follows this step ([`HISTORY_NORMALIZE`] ...), 0 for none. Its
    /// step is appended once every image has been through this one.
    pub then: u32,
    /// [`HISTORY_HAS_LUTS`], [`HISTORY_FLOAT_STATS`].
    pub flags: u32,
    /// The per-image op list this step runs, as parsed by `OpChain::parse`.
    pub ops: [u8; HISTORY_OPS_LEN],
    /// With `then`: the op list that runs after the dataset-wide op, in its step.
    pub after: [u8; HISTORY_OPS_LEN],
    /// Per colour channel: the mean and standard deviation this step's tables were made from
    /// (normalize), for reports and for `export` of `normalize:float`.
    pub mean: [f64; 4],
    pub std: [f64; 4],
    /// Per channel, a table `v -> luts[c][v]`, applied before `ops` when [`HISTORY_HAS_LUTS`].
    pub luts: [[u8; 256]; 4],
}

pub const HISTORY_NORMALIZE: u32 = 1;
pub const HISTORY_NORMALIZE_FLOAT: u32 = 2;
pub const HISTORY_EQUALIZE: u32 = 3;
pub const HISTORY_HAS_LUTS: u32 = 1;
/// The step changes no pixel; its `mean` and `std` are the dataset's (`normalize:float`).
pub const HISTORY_FLOAT_STATS: u32 = 2;
/// The load's own step: the op chain of `run --keep NAME --ops LIST`, run when each image was
/// decoded (a JPEG under a gray-first chain from its luma plane). A rebuild makes it as the load
/// did, never by replaying it on decoded RGB.
pub const HISTORY_AT_LOAD: u32 = 4;

impl HistoryEntry {
    /// A step that runs `ops`, followed by the dataset-wide op `then` and its `after` list.
    pub fn new(ops: &str, then: u32, after: &str) -> Option<HistoryEntry> {
        if ops.len() > HISTORY_OPS_LEN || after.len() > HISTORY_OPS_LEN {
            return None;
        }
        let mut entry = HistoryEntry {
            ops_len: ops.len() as u32,
            after_len: after.len() as u32,
            then,
            flags: 0,
            ops: [0; HISTORY_OPS_LEN],
            after: [0; HISTORY_OPS_LEN],
            mean: [0.0; 4],
            std: [0.0; 4],
            luts: [[0; 256]; 4],
        };
        entry.ops[..ops.len()].copy_from_slice(ops.as_bytes());
        entry.after[..after.len()].copy_from_slice(after.as_bytes());
        Some(entry)
    }

    pub fn ops(&self) -> String {
        let len = (self.ops_len as usize).min(HISTORY_OPS_LEN);
        String::from_utf8_lossy(&self.ops[..len]).into_owned()
    }

    pub fn after(&self) -> String {
        let len = (self.after_len as usize).min(HISTORY_OPS_LEN);
        String::from_utf8_lossy(&self.after[..len]).into_owned()
    }

    /// The tables to apply before the ops, if this step has them.
    pub fn luts(&self) -> Option<&[[u8; 256]; 4]> {
        (self.flags & HISTORY_HAS_LUTS != 0).then_some(&self.luts)
    }
}

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
    /// A kept dataset's image: how many steps of the history its pixels have been through, or
    /// [`STEPS_UNKNOWN`] while they are being decoded or transformed. Written by the claim holder.
    pub steps: AtomicU32,
    /// How many workers died while holding this image.
    pub crashes: AtomicU32,
    pub message_len: AtomicU32,
    /// The source file's size and modification time (ns since the epoch) when it was planned: a
    /// rebuild refuses a source that has changed since.
    pub source_size: u64,
    pub source_mtime_ns: u64,
    /// Why the image failed, or a done image's warning; written by the claim holder before it
    /// publishes `Failed` or `Done`.
    pub(super) message: UnsafeCell<[u8; MESSAGE_LEN]>,
    /// The source's width and height as decoded, EXIF orientation applied, before any resize.
    pub original_width: u32,
    pub original_height: u32,
    /// The image's class (see [`Header::label_kind`]), -1 for none.
    pub label: i64,
    /// A kept dataset's image: the XXH3-64 of its source file's bytes, recorded by the worker
    /// that loaded it; a rebuild refuses a source whose bytes hash otherwise. 0 until loaded.
    pub source_hash: AtomicU64,
    /// Where its output goes, relative to `Header::output_root`, as raw bytes: the name
    /// `run --output-name` planned for it. Empty: the source's relative path, with the output
    /// format's extension. Empty in a block made before this field.
    pub output: StrRef,
    pub _reserved: [u8; 32],
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
    /// When the image in hand was taken, or the worker last held none ([`now_ms`]).
    pub heartbeat_ms: AtomicU64,
    pub images_done: AtomicU64,
    pub images_failed: AtomicU64,
    pub pixels_done: AtomicU64,
    /// Index of the image in hand, `u64::MAX` for none.
    pub current_image: AtomicU64,
    /// When this worker had attached, validated the block and enlisted: the host's monotonic
    /// clock in nanoseconds (see [`now_ns`]). The coordinator compares it with when it spawned the worker.
    pub ready_ns: AtomicU64,
    /// `apply`: the pass generation ([`Header::pass`]) this worker has finished and now waits
    /// after; the coordinator opens the next pass only once every live worker has parked.
    pub parked: AtomicU32,
    pub _reserved: [u32; 17],
}

pub const NO_IMAGE: u64 = u64::MAX;

impl WorkerRecord {
    /// Marks this worker id as holding no image, as of now: on enlisting, and when the
    /// coordinator releases what a dead worker held, so that a replacement is never judged by its
    /// predecessor's image and heartbeat.
    pub fn clear_image(&self) {
        self.current_image.store(NO_IMAGE, Ordering::Release);
        self.heartbeat_ms.store(now_ms(), Ordering::Release);
    }

    /// Records that this worker took image `index` now.
    pub fn hold_image(&self, index: usize) {
        self.heartbeat_ms.store(now_ms(), Ordering::Release);
        self.current_image.store(index as u64, Ordering::Release);
    }
}

/// The host's monotonic clock in nanoseconds: never steps, and the same clock in every process on
/// the host, so a time taken by the coordinator and one taken by a worker compare.
pub fn now_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// The host's monotonic clock in milliseconds (see [`now_ns`]): heartbeats and image timeouts.
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
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
/// `Header::flags`: outputs carry no ICC profile, EXIF or comments of their sources (`--strip`).
pub const FLAG_STRIP: u32 = 256;
/// `Header::flags`: WebP outputs are lossless whatever their input (`--lossless`).
pub const FLAG_LOSSLESS: u32 = 512;
/// `Header::flags`: a window block (a plain `run`): the pixels region is one slot per worker,
/// [`Header::window_slot_len`] bytes each, reused image after image, instead of one slot per
/// image. Its memory grows with the workers, not with the folder. No image's pixels outlive
/// its claim: nothing reads a window block's pixels but the worker holding the claim.
pub const FLAG_WINDOW: u32 = 1024;
/// `Header::flags`: images with alpha are flattened onto [`Header::background`] before they
/// are written (`--background`).
pub const FLAG_BACKGROUND: u32 = 2048;
/// `Header::flags` bits 4 and 5: a [`crate::codec::PngCompression`] code (`--png-compression`),
/// 0 for fast. Read it with [`png_level`].
pub const PNG_LEVEL_SHIFT: u32 = 4;

/// The `--png-compression` code stored in `flags`.
pub fn png_level(flags: u32) -> u32 {
    (flags >> PNG_LEVEL_SHIFT) & 3
}

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
const _: () = assert!(size_of::<HistoryEntry>().is_multiple_of(64));
const _: () = assert!(size_of::<ImageRecord>() == 256);
const _: () = assert!(size_of::<WorkerRecord>() == 128);
