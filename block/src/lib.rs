//! The block: one named shared-memory region holding a whole image dataset, and the only
//! definition of its layout (its Python mirror is `python/shmpipe/_layout.py`, held to it by
//! `tests/integration/python.rs`). Both the coordinator and the workers use this crate.
//!
//! Every `unsafe` line of the project that touches shared memory is in this crate, each block
//! with its `// SAFETY:` comment (clippy's `undocumented_unsafe_blocks` holds it to that). Its
//! three `unsafe fn`s have preconditions only the coordinator that spawned the workers can know
//! (a worker reaped, every worker parked between passes); each says so in its `# Safety`
//! section, and the coordinator's calls (`apply`, `supervise`) are the project's named
//! exceptions to `deny(unsafe_code)`. Everything outside sees safe views that borrow the mapping:
//! `&Header`, `&[ImageRecord]`, and the `&mut [u8]` of a slot held through a [`Claim`].
//!
//! Layout (little-endian, every region 64-byte aligned, offsets from the start of the block):
//!
//! ```text
//! [Header][ImageRecord; image_count][WorkerRecord; worker_count][strings][pixel slots]
//! ```
//!
//! This crate must never let a worker unlink a block: only [`OwnedBlock`], which only
//! [`OwnedBlock::create`] returns, removes the name, and it does so on drop.
//!
//! Memory shared with other processes is outside what memmap2 (or Rust) can promise. What we rely
//! on instead: (1) the creator writes the header and tables before publishing
//! `state = Ready` with Release ordering, and attachers read it with Acquire; after that the
//! immutable fields never change, and `attach` copies the ones it needs after validating them;
//! (2) every mutable field shared between processes is an atomic; (3) a slot's pixels and an
//! image's message are written only by the worker whose compare-and-swap moved that image from
//! `Pending` to `Claimed`, and read by others only after it publishes `Done`/`Failed` with Release.
//!
//! The files, one concern each:
//!
//! - `layout`: the `#[repr(C)]` header and records, constants, flags, status enums. No mapping.
//! - `plan`: [`BlockPlan`] and the region computation. No mapping.
//! - `error`: [`BlockError`].
//! - `backing`: [`Backing`] (shm or a folder), block names ([`validate_name`], [`fresh_name`]).
//! - `mapping`: [`Mapping`] and its read accessors (header, tables, history, strings, slots,
//!   messages).
//! - `doorbell`: the futex on the pass word, [`Mapping::request_stop`].
//! - `validate`: the checks `attach` (and `create`) make before anything reads the block.
//! - `claim`: [`Claim`], [`Mapping::try_claim`], [`Mapping::take_over`].
//! - `owned`: [`OwnedBlock`]: create, free space, `fallocate`, the tables, unlink on drop.
//! - `attached`: [`AttachedBlock`] and its lock guards [`Reader`] and [`Writer`].
//! - [`registry`]: every block in a backing: what `ls` shows, what `clean` may remove, who holds
//!   a block's lock.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod attached;
mod backing;
mod claim;
mod doorbell;
mod error;
mod layout;
#[cfg(test)]
mod layout_tests;
mod mapping;
mod owned;
mod plan;
pub mod registry;
mod validate;

pub use attached::{AttachedBlock, Reader, Writer};
pub use backing::{
    fresh_name, validate_name, Backing, NotOurs, DEFAULT_SHM_DIR, MAX_NAME_LEN, NAME_PREFIX,
};
pub use claim::Claim;
pub use error::{BlockError, Bytes};
pub use layout::{
    claimed_word, now_ms, now_ns, png_level, BlockState, DatasetState, Header, HistoryEntry,
    ImageRecord, ImageStatus, StrRef, WorkerRecord, ALIGN, CHANNELS_PER_IMAGE,
    FLAG_ALLOW_TRUNCATED, FLAG_BACKGROUND, FLAG_COPY, FLAG_KEPT, FLAG_LOSSLESS, FLAG_NO_FSYNC,
    FLAG_RGB_OUTPUT, FLAG_STRICT, FLAG_STRIP, FLAG_WINDOW, HISTORY_AT_LOAD, HISTORY_CAPACITY,
    HISTORY_EQUALIZE, HISTORY_FLOAT_STATS, HISTORY_HAS_LUTS, HISTORY_NORMALIZE,
    HISTORY_NORMALIZE_FLOAT, HISTORY_OPS_LEN, LABELS_FILE, LABELS_FOLDER, LABELS_NONE,
    LAYOUT_VERSION, MAGIC, MESSAGE_LEN, NO_IMAGE, PNG_LEVEL_SHIFT, STEPS_UNKNOWN, STOP_STRICT,
};
pub use mapping::{Mapping, SlotInfo};
pub use owned::{free_bytes, unix_ns, OwnedBlock};
pub use plan::{BlockPlan, PlannedImage};
