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
    pub(super) fn validate(&mut self, creating: bool) -> Result<(), BlockError> {
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
        let per_image = h.channels == CHANNELS_PER_IMAGE && h.flags & FLAG_KEPT == 0;
        if !per_image && !matches!(h.channels, 1 | 3 | 4) {
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
        let kept = h.flags & FLAG_KEPT != 0;
        if h.history_capacity as usize != if kept { HISTORY_CAPACITY } else { 0 } {
            return Err(invalid(format!(
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
                return Err(invalid(format!("{what} string is out of bounds")));
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
        let (channels, pixels_offset) = (h.channels, h.pixels_offset);
        let copy_mode = h.flags & FLAG_COPY != 0;
        // A window block: one slot per worker, which must lie inside the pixels region; each
        // image then has no place of its own (offset 0) and must fit a slot.
        let window = if h.flags & FLAG_WINDOW != 0 {
            let slot_len = h.window_slot_len;
            let fits = slot_len
                .checked_mul(h.worker_count as u64)
                .is_some_and(|all| all <= h.pixels_len);
            if kept || copy_mode || !slot_len.is_multiple_of(ALIGN) || !fits {
                return Err(invalid(format!(
                    "window of {} slots of {slot_len} bytes does not fit its pixels region of {} bytes, or is misaligned, or the block is kept or in copy mode",
                    h.worker_count, h.pixels_len
                )));
            }
            Some((pixels_offset as usize, slot_len as usize))
        } else {
            None
        };
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
                invalid(format!(
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
            let source_in_bounds = || match in_bounds(source) && in_bounds(output) {
                true => Ok(()),
                false => Err(bad("source path or output name is out of bounds")),
            };
            if let Some((_, window_slot)) = window {
                if offset != 0 || slot_len > window_slot as u64 {
                    return Err(bad("image does not fit its window's slots"));
                }
                source_in_bounds()?;
                // No place of its own: only a claim holds the pixels (see `Claim::slot`).
                slots.push(SlotInfo {
                    offset: pixels_offset as usize,
                    height: height as usize,
                    width: width as usize,
                    channels: ch as usize,
                    format,
                    source,
                    output,
                    in_block: false,
                });
                continue;
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
            source_in_bounds()?;
            slots.push(SlotInfo {
                offset: start.unwrap_or_default() as usize,
                height: height as usize,
                width: width as usize,
                channels: ch as usize,
                format,
                source,
                output,
                in_block: !copy_mode,
            });
        }
        self.layout = Layout { window, ..layout };
        self.slots = slots;
        // Source paths and output names must stay inside the input and output folders: plain
        // relative names (an output name may be empty: none planned).
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
                return Err(invalid(format!(
                    "image {i}: source path {:?} is not a plain relative path",
                    Path::new(std::ffi::OsStr::from_bytes(source))
                )));
            }
            if !output.is_empty() && !plain(output) {
                return Err(invalid(format!(
                    "image {i}: output name {:?} is not a plain relative path",
                    Path::new(std::ffi::OsStr::from_bytes(output))
                )));
            }
        }
        Ok(())
    }
}
