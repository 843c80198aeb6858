//! The mapping both kinds of handle share, and its read accessors: the header, the image and
//! worker tables, the history, the strings, each slot's validated place and shape, an image's
//! message.
//!
//! Every pointer into the block derives from the mapping's raw base and uses only the validated
//! copies in [`Layout`] and `slots`; this file must never re-read an offset from shared memory
//! nor hand out a writable view of pixels (only a [`Claim`](super::Claim) does).

use std::fs::File;
use std::mem::size_of;
use std::sync::atomic::Ordering;

use memmap2::MmapRaw;

use super::{
    Backing, DatasetState, Header, HistoryEntry, ImageRecord, ImageStatus, StrRef, WorkerRecord,
    FLAG_KEPT, MESSAGE_LEN,
};

/// The mapping and what `attach` validated of it. Shared by both kinds of handle.
///
/// Every pointer into the block derives from the raw base of a [`MmapRaw`], never from a
/// `&[u8]` over the whole mapping: other processes change the block while we hold it.
pub struct Mapping {
    pub(super) name: String,
    pub(super) backing: Backing,
    pub(super) map: MmapRaw,
    /// Keeps the descriptor, and with it the owner's flock, open.
    pub(super) file: File,
    /// Validated copies of the header's layout; never re-read from shared memory.
    pub(super) layout: Layout,
    /// Validated copies of each slot's place and shape; never re-read from shared memory.
    pub(super) slots: Vec<SlotInfo>,
}

/// The header fields that locate everything else, as validated.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Layout {
    pub(super) image_table: usize,
    pub(super) worker_table: usize,
    pub(super) worker_count: usize,
    pub(super) history: usize,
    pub(super) history_capacity: usize,
    pub(super) strings: usize,
    pub(super) strings_len: usize,
    /// A window block's pixels offset and per-worker slot length (see [`super::FLAG_WINDOW`]).
    pub(super) window: Option<(usize, usize)>,
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
    /// Its output's planned name (`ImageRecord::output`), empty for none.
    pub output: StrRef,
    /// False in copy mode (the image has a shape but no bytes in the block), and in a window
    /// block outside a claim (the image's bytes are its claimer's slot: see `Claim::slot`).
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

    /// The dataset's state (see [`DatasetState`]); None for a value this build does not know.
    pub fn dataset_state(&self) -> Option<DatasetState> {
        DatasetState::from_u32(self.header().dataset_state.load(Ordering::Acquire))
    }

    /// Whether this block is a kept dataset (`load`, `run --keep`).
    pub fn is_kept(&self) -> bool {
        self.header().flags & FLAG_KEPT != 0
    }

    /// The history in force: copies of its entries, oldest first.
    pub fn history(&self) -> Vec<HistoryEntry> {
        let count = (self.header().history_count.load(Ordering::Acquire) as usize)
            .min(self.layout.history_capacity);
        (0..count)
            .map(|k| {
                // SAFETY: entry k < history_capacity lies inside the history region (validated,
                // copied), 64-aligned; any bit pattern is a valid HistoryEntry (integers, floats,
                // bytes). Entries below `history_count` were written before the count was raised
                // (Release, read above with Acquire) and are never written again.
                unsafe {
                    std::ptr::read(
                        self.map
                            .as_ptr()
                            .add(self.layout.history + k * size_of::<HistoryEntry>())
                            as *const HistoryEntry,
                    )
                }
            })
            .collect()
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

    /// Image `index`'s output name relative to the output folder, as `run --output-name`
    /// planned it (a plain relative path, checked when the block was validated); empty when
    /// its output takes the source's relative path.
    pub fn output_name(&self, index: usize) -> &[u8] {
        self.string(self.slots[index].output)
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
}
