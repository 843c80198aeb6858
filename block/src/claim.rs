//! Claims: an image held by one worker between its compare-and-swap `Pending -> Claimed` and
//! its outcome. A [`Claim`] is the only way to write a slot's pixels, and it reserves their pages
//! before handing them out.
//!
//! A claim must never change a status word other than the one it wrote, and nothing but
//! [`Mapping::take_over`] (an `unsafe fn`: the holder must have been reaped) may take another
//! worker's claim.

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;

use super::owned::{fallocate_range, reserve_error};
use super::{claimed_word, BlockError, ImageStatus, Mapping, SlotInfo, MESSAGE_LEN};

impl Mapping {
    /// Takes over the claim worker `worker_id` held on image `index`, if it holds one: dropping
    /// the returned claim puts the image back in the queue; `fail` quarantines it.
    ///
    /// # Safety
    ///
    /// The worker process that held `worker_id` must have ended (been reaped by the caller, its
    /// coordinator): a live holder may still be writing the slot, and the claim handed out here
    /// would let a second writer in. Only the coordinator that spawned the worker can know this.
    pub unsafe fn take_over(&self, index: usize, worker_id: u32) -> Option<Claim<'_>> {
        let rec = self.images().get(index)?;
        let word = claimed_word(worker_id);
        let held = rec.status.load(Ordering::Acquire) == word;
        // Lazily: a Claim built and dropped unused would put the image back to Pending.
        held.then(|| Claim {
            mapping: self,
            index,
            word,
            worker: worker_id,
            finished: false,
            reserved: 0,
        })
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
            word: claimed_word(worker_id),
            worker: worker_id,
            finished: false,
            reserved: 0,
        })
    }
}

/// An image held by one worker between its claim and its outcome. The only way to write a slot.
pub struct Claim<'a> {
    mapping: &'a Mapping,
    index: usize,
    /// The status word this claim put in the record: the only word it ever replaces.
    word: u32,
    /// The worker id holding it: in a window block, whose slot the pixels go to.
    worker: u32,
    finished: bool,
    /// Leading bytes of the slot this claim has reserved (see [`Claim::reserve`]).
    reserved: usize,
}

impl<'a> Claim<'a> {
    pub fn index(&self) -> usize {
        self.index
    }

    /// The image's place and shape. In a window block the place is the holder's own slot,
    /// `worker` slots into the pixels region (validated to hold one per worker record): a
    /// worker holds one claim at a time, and a replacement takes a dead worker's id (and slot)
    /// only after it was reaped.
    pub fn slot(&self) -> SlotInfo {
        let slot = self.mapping.slots[self.index];
        match self.mapping.layout.window {
            Some((pixels, slot_len))
                if (self.worker as usize) < self.mapping.layout.worker_count =>
            {
                SlotInfo {
                    offset: pixels + self.worker as usize * slot_len,
                    in_block: true,
                    ..slot
                }
            }
            _ => slot,
        }
    }

    /// The history steps this image's pixels have been through ([`STEPS_UNKNOWN`] if none known).
    ///
    /// [`STEPS_UNKNOWN`]: super::STEPS_UNKNOWN
    pub fn steps(&self) -> u32 {
        self.mapping.images()[self.index]
            .steps
            .load(Ordering::Acquire)
    }

    /// Records the steps the pixels have been through; [`STEPS_UNKNOWN`] before touching them.
    ///
    /// [`STEPS_UNKNOWN`]: super::STEPS_UNKNOWN
    pub fn set_steps(&mut self, steps: u32) {
        self.mapping.images()[self.index]
            .steps
            .store(steps, Ordering::Release);
    }

    /// The pixels of the source image as planned (its width times height, before any resize):
    /// what a run's progress counts, as its summary does.
    pub fn source_pixels(&self) -> u64 {
        let rec = &self.mapping.images()[self.index];
        u64::from(rec.original_width) * u64::from(rec.original_height)
    }

    /// The source file's size and modification time recorded when it was planned.
    pub fn source_identity(&self) -> (u64, u64) {
        let rec = &self.mapping.images()[self.index];
        (rec.source_size, rec.source_mtime_ns)
    }

    /// The hash of the source's bytes recorded when it was loaded (0 before).
    pub fn source_hash(&self) -> u64 {
        self.mapping.images()[self.index]
            .source_hash
            .load(Ordering::Acquire)
    }

    /// Records the hash of the source's bytes this load decodes.
    pub fn set_source_hash(&self, hash: u64) {
        self.mapping.images()[self.index]
            .source_hash
            .store(hash, Ordering::Release);
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
        // From our own claimed word only: an outcome never overwrites someone else's.
        let _ = rec.status.compare_exchange(
            self.word,
            status as u32,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        self.finished = true;
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        // A claim dropped without an outcome (a panic unwinding, an early return, a dead worker's
        // claim released by the owner) goes back to the queue, so another worker decodes it again
        // from its source. Only from this claim's own word: never a Done or Failed back to
        // Pending, never another holder's claim.
        if !self.finished {
            let rec = &self.mapping.images()[self.index];
            let _ = rec.status.compare_exchange(
                self.word,
                ImageStatus::Pending as u32,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }
}
