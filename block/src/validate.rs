//! Validation of a mapped block before anything else reads it: magic, version, sizes, every
//! region and every slot against the mapping's length; the validated layout and slot table are
//! copied into the [`Mapping`].
//!
//! This file must never trust a field it has not checked, nor write the block.

use std::mem::size_of;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::mapping::Layout;
use super::{
    BlockError, BlockState, Header, HistoryEntry, ImageRecord, Mapping, SlotInfo, StrRef,
    WorkerRecord, ALIGN, CHANNELS_PER_IMAGE, FLAG_COPY, FLAG_KEPT, FLAG_WINDOW, HISTORY_CAPACITY,
    LAYOUT_VERSION, MAGIC,
};

impl Mapping {
    /// Checks every field a reader relies on, in the order they depend on each other (the
    /// header, the regions it declares, a window's slots, each image's record, each path), and
    /// copies the validated layout and slot table into the mapping. `creating`: the creator's
    /// own check, before it publishes the block.
    pub(super) fn validate(&mut self, creating: bool) -> Result<(), BlockError> {
        self.check_header(creating)?;
        let (layout, pixels_end) = self.check_regions()?;
        let window = self.check_window()?;
        let slots = self.check_records(&layout, window, pixels_end)?;
        self.layout = Layout { window, ..layout };
        self.slots = slots;
        self.check_paths()
    }

    fn invalid(&self, reason: String) -> BlockError {
        BlockError::Invalid {
            name: self.name.clone(),
            reason,
        }
    }

    /// The header itself: large enough, ours (magic), this build's layout and record sizes,
    /// the mapping's length, a known state (and past `Creating`, unless `creating`), and the
    /// channels.
    fn check_header(&self, creating: bool) -> Result<(), BlockError> {
        let len = self.map.len() as u64;
        let header_size = size_of::<Header>() as u64;
        if len < header_size {
            return Err(self.invalid(format!("{len} bytes is smaller than the header")));
        }
        let h = self.header();
        if h.magic != MAGIC {
            return Err(self.invalid("wrong magic: not a shmpipe block".into()));
        }
        if h.layout_version != LAYOUT_VERSION {
            return Err(self.invalid(format!(
                "layout version {} (this build reads {LAYOUT_VERSION})",
                h.layout_version
            )));
        }
        if h.header_size as u64 != header_size {
            return Err(self.invalid(format!("header size {}", h.header_size)));
        }
        if h.total_size != len {
            return Err(self.invalid(format!(
                "header says {} bytes but the mapping has {len}",
                h.total_size
            )));
        }
        match BlockState::from_u32(h.state.load(Ordering::Acquire)) {
            Some(BlockState::Creating) if !creating => {
                return Err(self.invalid("still being created".into()))
            }
            None => return Err(self.invalid("unknown state".into())),
            Some(_) => {}
        }
        if !per_image(h) && !matches!(h.channels, 1 | 3 | 4) {
            return Err(self.invalid(format!("{} channels", h.channels)));
        }
        if h.image_record_size != size_of::<ImageRecord>() as u64
            || h.worker_record_size != size_of::<WorkerRecord>() as u64
        {
            return Err(self.invalid("record sizes differ from this build's".into()));
        }
        Ok(())
    }

    /// The regions: aligned, in this order, and not overlapping (header, image table, worker
    /// table, history, strings, pixels, end of the mapping), the history as large as a dataset
    /// keeps, and every string of the header inside the strings. Gives the layout (no window
    /// yet) and where the pixels end.
    fn check_regions(&self) -> Result<(Layout, u64), BlockError> {
        let len = self.map.len() as u64;
        let h = self.header();
        let mut previous_end = size_of::<Header>() as u64;
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
                    self.invalid(format!(
                        "{what} region (offset {offset}, {count} x {size} bytes) is misaligned, overlaps the one before, or runs past the end ({len} bytes)"
                    ))
                })?;
            previous_end = end;
            Ok(end)
        };
        region(
            "image table",
            h.image_table_offset,
            h.image_count,
            h.image_record_size,
        )?;
        region(
            "worker table",
            h.worker_table_offset,
            h.worker_count as u64,
            h.worker_record_size,
        )?;
        let kept = h.flags & FLAG_KEPT != 0;
        if h.history_capacity as usize != if kept { HISTORY_CAPACITY } else { 0 } {
            return Err(self.invalid(format!(
                "history capacity {} (this build keeps {HISTORY_CAPACITY} in a dataset)",
                h.history_capacity
            )));
        }
        region(
            "history",
            h.history_offset,
            h.history_capacity as u64,
            size_of::<HistoryEntry>() as u64,
        )?;
        region("strings", h.strings_offset, h.strings_len, 1)?;
        let pixels_end = region("pixels", h.pixels_offset, h.pixels_len, 1)?;
        for (what, r) in [
            ("input root", h.input_root),
            ("output root", h.output_root),
            ("op chain", h.op_chain),
            ("output format", h.output_format),
            ("class names", h.class_names),
        ] {
            if r.offset
                .checked_add(r.len)
                .is_none_or(|e| e > h.strings_len)
            {
                return Err(self.invalid(format!("{what} string is out of bounds")));
            }
        }
        let layout = Layout {
            image_table: h.image_table_offset as usize,
            worker_table: h.worker_table_offset as usize,
            worker_count: h.worker_count as usize,
            history: h.history_offset as usize,
            history_capacity: h.history_capacity as usize,
            strings: h.strings_offset as usize,
            strings_len: h.strings_len as usize,
            window: None,
        };
        Ok((layout, pixels_end))
    }

    /// A window block's slots (one per worker, where each image is decoded in turn): inside
    /// the pixels region, aligned, and never in a kept or copy-mode block. Gives the first
    /// slot's offset and a slot's length; None for a block with a slot per image.
    fn check_window(&self) -> Result<Option<(usize, usize)>, BlockError> {
        let h = self.header();
        if h.flags & FLAG_WINDOW == 0 {
            return Ok(None);
        }
        let slot_len = h.window_slot_len;
        let fits = slot_len
            .checked_mul(h.worker_count as u64)
            .is_some_and(|all| all <= h.pixels_len);
        let (kept, copy_mode) = (h.flags & FLAG_KEPT != 0, h.flags & FLAG_COPY != 0);
        if kept || copy_mode || !slot_len.is_multiple_of(ALIGN) || !fits {
            return Err(self.invalid(format!(
                "window of {} slots of {slot_len} bytes does not fit its pixels region of {} bytes, or is misaligned, or the block is kept or in copy mode",
                h.worker_count, h.pixels_len
            )));
        }
        Ok(Some((h.pixels_offset as usize, slot_len as usize)))
    }

    /// Every image record: its channels, a slot length that is its shape's, its strings inside
    /// the strings region, and its slot: in a window block none of its own and no larger than
    /// a window slot; else aligned, in order and disjoint inside the pixels (so no two claims
    /// can ever cover the same byte); none in copy mode. Gives the slot table.
    fn check_records(
        &self,
        layout: &Layout,
        window: Option<(usize, usize)>,
        pixels_end: u64,
    ) -> Result<Vec<SlotInfo>, BlockError> {
        let h = self.header();
        let (per_image, channels, pixels_offset) = (per_image(h), h.channels, h.pixels_offset);
        let copy_mode = h.flags & FLAG_COPY != 0;
        let image_count = h.image_count;
        let len = self.map.len() as u64;
        let mut slots =
            Vec::with_capacity(image_count.min(len / size_of::<ImageRecord>() as u64) as usize);
        let mut next_free = pixels_offset;
        for i in 0..image_count as usize {
            // SAFETY: the table lies inside the mapping (checked by `check_regions`) and is
            // 64-aligned; any bit pattern is a valid ImageRecord. We copy the fields out.
            let rec = unsafe {
                &*(self
                    .map
                    .as_ptr()
                    .add(layout.image_table + i * size_of::<ImageRecord>())
                    as *const ImageRecord)
            };
            let (offset, slot_len, height, width, ch, format, source, output) = (
                rec.slot_offset,
                rec.slot_len,
                rec.height,
                rec.width,
                rec.channels,
                rec.format,
                rec.source,
                rec.output,
            );
            let bad = |what: &str| {
                self.invalid(format!(
                    "image {i}: {what} (slot offset {offset}, {slot_len} bytes, {height}x{width}x{ch})"
                ))
            };
            if per_image && !(1..=4).contains(&ch) {
                return Err(bad("channels are not 1 to 4"));
            }
            if !per_image && ch != channels {
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
            let in_bounds = |s: StrRef| {
                s.offset
                    .checked_add(s.len)
                    .is_some_and(|e| e <= layout.strings_len as u64)
            };
            if !(in_bounds(source) && in_bounds(output)) {
                return Err(bad("source path or output name is out of bounds"));
            }
            let slot = |offset: u64, in_block: bool| SlotInfo {
                offset: offset as usize,
                height: height as usize,
                width: width as usize,
                channels: ch as usize,
                format,
                source,
                output,
                in_block,
            };
            if let Some((_, window_slot)) = window {
                if offset != 0 || slot_len > window_slot as u64 {
                    return Err(bad("image does not fit its window's slots"));
                }
                // No place of its own: only a claim holds the pixels (see `Claim::slot`).
                slots.push(slot(pixels_offset, false));
                continue;
            }
            // Each slot starts at or after the end of the one before.
            let start = pixels_offset.checked_add(offset);
            let end = start.and_then(|s| s.checked_add(slot_len));
            match (start, end) {
                (Some(s), Some(e))
                    if s >= next_free && e <= pixels_end && offset.is_multiple_of(ALIGN) =>
                {
                    next_free = e;
                    slots.push(slot(s, !copy_mode));
                }
                _ => {
                    return Err(bad(
                        "slot is misaligned, overlaps another, or is out of bounds",
                    ))
                }
            }
        }
        Ok(slots)
    }

    /// Source paths and output names must stay inside the input and output folders: plain
    /// relative names (an output name may be empty: none planned).
    fn check_paths(&self) -> Result<(), BlockError> {
        let plain = |bytes: &[u8]| {
            let path = Path::new(std::ffi::OsStr::from_bytes(bytes));
            !path.as_os_str().is_empty()
                && path
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
        };
        for i in 0..self.slots.len() {
            let (source, output) = (self.source(i), self.output_name(i));
            if !plain(source) {
                return Err(self.invalid(format!(
                    "image {i}: source path {:?} is not a plain relative path",
                    Path::new(std::ffi::OsStr::from_bytes(source))
                )));
            }
            if !output.is_empty() && !plain(output) {
                return Err(self.invalid(format!(
                    "image {i}: output name {:?} is not a plain relative path",
                    Path::new(std::ffi::OsStr::from_bytes(output))
                )));
            }
        }
        Ok(())
    }
}

/// Whether each image has its own channel count (a run's block with `--channels auto`).
fn per_image(h: &Header) -> bool {
    h.channels == CHANNELS_PER_IMAGE && h.flags & FLAG_KEPT == 0
}
