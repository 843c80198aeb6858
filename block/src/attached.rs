//! A reader's or worker's handle, [`AttachedBlock`]: maps an existing block by name and validates
//! it; and the lock guards through which its pixels are reached: [`Reader`] (shared lock) and
//! [`Writer`] (exclusive lock; pixels between passes only).
//!
//! An attached handle must never unlink its block, and this file must never hand out pixels
//! without a guard.

use std::fs::File;
use std::mem::size_of;
use std::sync::atomic::Ordering;

use memmap2::MmapRaw;
use rustix::fs::FlockOperation;

use super::error::io_err;
use super::mapping::Layout;
use super::{
    validate_name, Backing, BlockError, BlockState, DatasetState, HistoryEntry, ImageStatus,
    Mapping,
};

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
    /// Takes the block's lock exclusively, without waiting: `apply` and `repair` hold it while
    /// they write a kept dataset, so a second writer, a `save` or an `export` refuses instead of
    /// racing it. The lock goes with the descriptor: it is held until this handle drops, also when
    /// the guard is gone, and no longer than the process lives.
    pub fn lock_exclusive(&self) -> Result<Writer<'_>, BlockError> {
        self.lock(FlockOperation::NonBlockingLockExclusive)?;
        Ok(Writer { block: self })
    }

    /// Takes the block's lock shared, without waiting: readers (`save`, `export`) may share it;
    /// a run, load, apply or repair writing the block holds it exclusively, so this fails while
    /// one does.
    pub fn lock_shared(&self) -> Result<Reader<'_>, BlockError> {
        self.lock(FlockOperation::NonBlockingLockShared)?;
        Ok(Reader { block: self })
    }

    fn lock(&self, how: FlockOperation) -> Result<(), BlockError> {
        // `ls`, `clean` and the sweep at the start of a run probe a block's lock for a moment
        // to tell live from stale: a lock refused for that long is not "busy". Try again for a
        // short while before saying so.
        let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
        let mut outcome = rustix::fs::flock(&self.mapping.file, how);
        while outcome == Err(rustix::io::Errno::WOULDBLOCK) && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
            outcome = rustix::fs::flock(&self.mapping.file, how);
        }
        outcome.map_err(|e| BlockError::Invalid {
            name: self.mapping.name.clone(),
            reason: if e == rustix::io::Errno::WOULDBLOCK {
                busy_reason(&self.mapping.file)
            } else {
                format!("cannot lock it: {e}")
            },
        })
    }

    /// Image `index`'s pixels. Callers prove that no process writes them (see the guards).
    fn slot_bytes(&self, index: usize) -> &[u8] {
        let slot = self.mapping.slots[index];
        let len = if slot.in_block { slot.len() } else { 0 };
        // SAFETY: the range lies inside the pixels region (validated at attach, copied). Both
        // callers hold a lock that excludes every shmpipe writer, or stand between passes with
        // every worker parked (see `Writer::pixels_between_passes`). A foreign writer (a NumPy
        // script) could still change the bytes under us; that can make what we read
        // inconsistent, never out of bounds.
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

/// Why a lock on the block was refused, naming the holders that `/proc/locks` shows: a writer
/// (a run, load, apply or repair, or a writable Python handle) or how many readers.
fn busy_reason(file: &File) -> String {
    let holders = lock_holders(file);
    let writer = holders.iter().find(|(exclusive, _)| *exclusive);
    // Distinct pids: one process may hold several handles.
    let readers: std::collections::BTreeSet<u32> = holders
        .iter()
        .filter(|(exclusive, _)| !exclusive)
        .map(|(_, pid)| *pid)
        .collect();
    match (writer, readers.len()) {
        (Some((_, pid)), _) => format!(
            "busy: a writer holds it (pid {pid}: a shmpipe run, load, apply or repair, or a writable Python handle)"
        ),
        (None, 0) => {
            "busy: a run, load, apply or repair is writing it, or a save, an export or a Python handle reading it"
                .into()
        }
        (None, n) => {
            let pids: Vec<String> = readers.iter().take(8).map(u32::to_string).collect();
            format!(
                "busy: {n} process(es) attached to read it (pids {}{}: a save, an export or Python handles); close them first",
                pids.join(", "),
                if n > 8 { ", ..." } else { "" }
            )
        }
    }
}

/// The flocks held on `file`, from `/proc/locks`: (exclusive, pid) each; a lock inherited across
/// fork counts once. Empty where `/proc/locks` cannot be read.
fn lock_holders(file: &File) -> Vec<(bool, u32)> {
    let Ok(st) = rustix::fs::fstat(file) else {
        return Vec::new();
    };
    let dev = st.st_dev;
    let key = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        st.st_ino
    );
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    // "1: FLOCK  ADVISORY  WRITE 4242 00:19:1234 0 EOF"; a waiter's line has "->" after the id.
    locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [_, "FLOCK", _, kind, pid, id, ..] if *id == key => {
                    Some((*kind == "WRITE", pid.parse().ok()?))
                }
                _ => None,
            }
        })
        .collect()
}

/// Proof of the block's shared lock: no shmpipe process writes the block while it lives.
pub struct Reader<'a> {
    block: &'a AttachedBlock,
}

impl std::ops::Deref for Reader<'_> {
    type Target = AttachedBlock;
    fn deref(&self) -> &AttachedBlock {
        self.block
    }
}

impl<'a> Reader<'a> {
    /// Image `index`'s pixels, for reading.
    pub fn pixels(&self, index: usize) -> &'a [u8] {
        self.block.slot_bytes(index)
    }
}

/// Proof of the block's exclusive lock: this process is the dataset's only writer.
pub struct Writer<'a> {
    block: &'a AttachedBlock,
}

impl std::ops::Deref for Writer<'_> {
    type Target = AttachedBlock;
    fn deref(&self) -> &AttachedBlock {
        self.block
    }
}

impl<'a> Writer<'a> {
    pub fn set_state(&self, state: BlockState) {
        self.header().state.store(state as u32, Ordering::Release);
    }

    pub fn set_dataset_state(&self, state: DatasetState) {
        self.header()
            .dataset_state
            .store(state as u32, Ordering::Release);
    }

    /// Appends a step to the history; returns the new count, or None when the history is full.
    /// `&mut self`: two appends at once would write one entry twice.
    pub fn append_history(&mut self, entry: &HistoryEntry) -> Option<u32> {
        let h = self.header();
        let count = h.history_count.load(Ordering::Acquire) as usize;
        if count >= self.mapping.layout.history_capacity {
            return None;
        }
        // SAFETY: entry `count` lies inside the history region (count < capacity, validated,
        // copied) and is 64-aligned. Nobody reads entries at or past `history_count`, which we
        // raise only after the write (Release); we are the only writer (exclusive lock).
        unsafe {
            std::ptr::write(
                self.mapping
                    .map
                    .as_mut_ptr()
                    .add(self.mapping.layout.history + count * size_of::<HistoryEntry>())
                    as *mut HistoryEntry,
                *entry,
            );
        }
        h.history_count.store(count as u32 + 1, Ordering::Release);
        Some(count as u32 + 1)
    }

    /// Opens a pass that brings every image to the latest step of the history: images done at
    /// an older step, and claims left by a writer that died, go back to Pending; failed ones stay
    /// failed. Counters restart; every waiting worker is woken. Returns the pass's generation.
    /// `&mut self`: no slice from [`Writer::pixels_between_passes`] outlives the pass it was
    /// read in.
    ///
    /// # Safety
    ///
    /// No worker may be working on a claim: every worker this process started has parked after
    /// the previous pass (or not yet claimed anything) or has ended and been reaped. A claim
    /// reset to Pending under a live worker would let a second worker write the same slot.
    pub unsafe fn begin_pass(&mut self) -> u32 {
        let h = self.header();
        let target = h.history_count.load(Ordering::Acquire);
        for rec in self.images() {
            let word = rec.status.load(Ordering::Acquire);
            let reset = match ImageStatus::from_u32(word & 0xff) {
                Some(ImageStatus::Done) => rec.steps.load(Ordering::Acquire) != target,
                Some(ImageStatus::Failed) | Some(ImageStatus::Pending) => false,
                Some(ImageStatus::Claimed) | None => true,
            };
            if reset {
                rec.status
                    .store(ImageStatus::Pending as u32, Ordering::Release);
            }
        }
        for w in self.workers() {
            w.clear_image();
            w.images_done.store(0, Ordering::Release);
            w.images_failed.store(0, Ordering::Release);
            w.pixels_done.store(0, Ordering::Release);
        }
        h.next_claim.store(0, Ordering::Release);
        h.images_done.store(0, Ordering::Release);
        h.images_failed.store(0, Ordering::Release);
        h.pixels_done.store(0, Ordering::Release);
        h.state.store(BlockState::Ready as u32, Ordering::Release);
        // Generations count in the low 31 bits: the top one is the stop request's.
        let last = h.pass.load(Ordering::Acquire) & !super::doorbell::STOP_BIT;
        let generation = (last + 1) & !super::doorbell::STOP_BIT;
        let generation = generation.max(1);
        self.mapping.open_pass(generation);
        generation
    }

    /// Image `index`'s pixels, between two passes of a job.
    ///
    /// # Safety
    ///
    /// No worker may be writing any slot: every worker this process started has parked after
    /// the current pass ([`WorkerRecord::parked`] equals the pass's generation) or has ended and
    /// been reaped. Only the coordinator that started them can know this.
    ///
    /// [`WorkerRecord::parked`]: super::WorkerRecord::parked
    pub unsafe fn pixels_between_passes(&self, index: usize) -> &[u8] {
        self.block.slot_bytes(index)
    }
}
