//! The plan of a block to be created ([`BlockPlan`]: its images, settings and sizes) and the
//! computation of its regions, every offset and size checked against overflow.
//!
//! Like `layout`, this file must never touch a mapping.

use std::mem::size_of;

use crate::layout::*;

/// Sizes of a block to be created. Its default is a plain run's block of no image, no worker
/// and no setting (quality 0, no limit of pixels 0): a base for tests to fill in.
#[derive(Clone, Debug, Default)]
pub struct BlockPlan {
    pub worker_count: u32,
    /// Channels of every slot, or [`CHANNELS_PER_IMAGE`] for each image's own.
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
    /// [`FLAG_STRIP`].
    pub strip: bool,
    /// [`FLAG_LOSSLESS`].
    pub lossless: bool,
    /// [`FLAG_BACKGROUND`]: the colour images with alpha are flattened onto.
    pub background: Option<[u8; 3]>,
    /// Resize at decode: a [`crate::resize::Fit`] as u32, 0 for none (images' shapes are then
    /// their slots' shapes).
    pub resize_fit: u32,
    /// `--max-pixels`, kept so that a rebuild decodes as the load did.
    pub max_pixels: u64,
    /// Class names, in class order, when images are labelled by folder ([`LABELS_FOLDER`]).
    pub classes: Option<Vec<Vec<u8>>>,
    /// Where the classes came from: `LABELS_FOLDER` or `LABELS_FILE` (read only with classes).
    pub label_kind: u32,
    /// A window block ([`FLAG_WINDOW`]): the bytes of each worker's slot, which every image
    /// must fit. None: one slot per image.
    pub window_slot: Option<u64>,
}

#[derive(Clone, Debug, Default)]
pub struct PlannedImage {
    pub height: u32,
    pub width: u32,
    pub format: u32,
    /// The image's own channels (1 to 4), its slot's under [`CHANNELS_PER_IMAGE`].
    pub channels: u32,
    pub source: Vec<u8>,
    /// The source file's size and modification time when it was planned.
    pub source_size: u64,
    pub source_mtime_ns: u64,
    /// The source's shape (EXIF orientation applied), whatever shape its slot takes.
    pub original_width: u32,
    pub original_height: u32,
    /// Its class index, when the plan has classes.
    pub label: i64,
    /// Its output's name relative to the output folder, when `run --output-name` named it
    /// (see `ImageRecord::output`); empty else.
    pub output: Vec<u8>,
}

/// `v` rounded up to [`ALIGN`]. Only for values already checked to fit (under a total that
/// [`BlockPlan::regions`] computed with [`checked_align_up`]).
pub(super) fn align_up(v: u64) -> u64 {
    v.div_ceil(ALIGN) * ALIGN
}

/// `v` rounded up to [`ALIGN`], or None when that passes `u64::MAX`.
fn checked_align_up(v: u64) -> Option<u64> {
    Some(v.checked_add(ALIGN - 1)? / ALIGN * ALIGN)
}

/// Offsets of each region, computed once from a plan.
pub(super) struct Regions {
    pub(super) image_table: u64,
    pub(super) worker_table: u64,
    pub(super) history: u64,
    pub(super) strings: u64,
    pub(super) strings_len: u64,
    pub(super) pixels: u64,
    pub(super) pixels_len: u64,
    pub(super) total: u64,
}

impl BlockPlan {
    /// The channels of an image's slot: the block's, or the image's own.
    pub fn channels_of(&self, img: &PlannedImage) -> u32 {
        if self.channels == CHANNELS_PER_IMAGE {
            img.channels
        } else {
            self.channels
        }
    }

    /// Bytes of an image's decoded pixels, or None past `u64::MAX`.
    fn image_len(&self, img: &PlannedImage) -> Option<u64> {
        (img.height as u64 * img.width as u64).checked_mul(self.channels_of(img) as u64)
    }

    /// Bytes of an image's slot in the block: its pixels, or none in copy mode. Only for a plan
    /// whose [`BlockPlan::regions`] is Some (then every slot fits).
    pub(super) fn slot_len(&self, img: &PlannedImage) -> u64 {
        if self.copy_mode {
            0
        } else {
            self.image_len(img).unwrap_or(u64::MAX)
        }
    }

    /// Every region's offset and length, or None when the plan's sizes do not fit in 64 bits
    /// (every sum and product here is checked: the plan comes from file headers).
    pub(super) fn regions(&self) -> Option<Regions> {
        let front = self.front()?;
        let pixels = front.pixels;
        if let Some(slot) = self.window_slot {
            let slot = checked_align_up(slot)?;
            let fits = self
                .images
                .iter()
                .all(|img| self.image_len(img).is_some_and(|l| l <= slot));
            let pixels_len = slot.checked_mul(self.worker_count as u64)?;
            return fits.then_some(Regions {
                pixels_len,
                total: pixels.checked_add(pixels_len)?,
                ..front
            });
        }
        let pixels_len = self.images.iter().try_fold(0u64, |sum, img| {
            let slot = if self.copy_mode {
                0
            } else {
                self.image_len(img)?
            };
            sum.checked_add(checked_align_up(slot)?)
        })?;
        Some(Regions {
            pixels_len,
            total: pixels.checked_add(pixels_len)?,
            ..front
        })
    }

    /// The regions before the pixels, with the pixels' offset (their length and the total
    /// left 0).
    fn front(&self) -> Option<Regions> {
        let after = |start: u64, count: usize, size: usize| -> Option<u64> {
            checked_align_up(start.checked_add((count as u64).checked_mul(size as u64)?)?)
        };
        let image_table = checked_align_up(size_of::<Header>() as u64)?;
        let worker_table = after(image_table, self.images.len(), size_of::<ImageRecord>())?;
        let history = after(
            worker_table,
            self.worker_count as usize,
            size_of::<WorkerRecord>(),
        )?;
        let history_entries = if self.kept { HISTORY_CAPACITY } else { 0 };
        let strings = after(history, history_entries, size_of::<HistoryEntry>())?;
        let strings_len = [
            self.input_root.len(),
            self.output_root.len(),
            self.op_chain.len(),
            self.output_format.len(),
            self.class_names_len(),
        ]
        .into_iter()
        .chain(self.images.iter().map(|i| i.source.len() + i.output.len()))
        .try_fold(0u64, |sum, len| sum.checked_add(len as u64))?;
        let pixels = after(strings, 1, strings_len as usize)?;
        Some(Regions {
            image_table,
            worker_table,
            history,
            strings,
            strings_len,
            pixels,
            pixels_len: 0,
            total: 0,
        })
    }

    /// Bytes of the class names in the strings region: each name and a NUL.
    pub(super) fn class_names_len(&self) -> usize {
        self.classes
            .iter()
            .flatten()
            .map(|name| name.len() + 1)
            .sum()
    }

    /// Bytes the block will take, or None when the plan's sizes pass 64 bits.
    pub fn total_size(&self) -> Option<u64> {
        Some(self.regions()?.total)
    }

    /// Bytes before the pixels region (header, tables, history, strings), or None past 64 bits.
    pub fn tables_size(&self) -> Option<u64> {
        Some(self.front()?.pixels)
    }

    /// Bytes of an image's decoded pixels in this plan's layout (its slot's length).
    pub fn image_bytes(&self, img: &PlannedImage) -> Option<u64> {
        self.image_len(img)
    }

    /// Bytes of pixels alone: the decoded dataset (saturating: for reports).
    pub fn pixel_bytes(&self) -> u64 {
        self.images
            .iter()
            .map(|i| self.image_len(i).unwrap_or(u64::MAX))
            .fold(0, u64::saturating_add)
    }
}
