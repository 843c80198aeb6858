//! The creator's handle, [`OwnedBlock`]: exclusive create under a fresh name, the free-space
//! check, `fallocate` of the pages, the header and tables written before `Ready` is published,
//! and the unlink on drop.
//!
//! Only the coordinator holds an `OwnedBlock`; this file must never leave the name behind on an
//! error path (the handle owns it from the moment it exists).

use std::cell::UnsafeCell;
use std::fs::File;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapRaw;
use rustix::fs::{FallocateFlags, FlockOperation};

use super::error::io_err;
use super::mapping::Layout;
use super::plan::{align_up, PlannedImage, Regions};
use super::{
    fresh_name, validate_name, Backing, BlockError, BlockPlan, BlockState, DatasetState, Header,
    HistoryEntry, ImageRecord, ImageStatus, Mapping, StrRef, WorkerRecord, FLAG_ALLOW_TRUNCATED,
    FLAG_BACKGROUND, FLAG_COPY, FLAG_KEPT, FLAG_LOSSLESS, FLAG_NO_FSYNC, FLAG_RGB_OUTPUT,
    FLAG_STRICT, FLAG_STRIP, FLAG_WINDOW, HISTORY_AT_LOAD, HISTORY_CAPACITY, HISTORY_OPS_LEN,
    LABELS_FILE, LABELS_FOLDER, LABELS_NONE, LAYOUT_VERSION, MAGIC, MESSAGE_LEN, NAME_PREFIX,
    NO_IMAGE, PNG_LEVEL_SHIFT, STEPS_UNKNOWN,
};

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
pub(super) fn reserve_error(e: io::Error, name: &str, dir: &Path, needed: u64) -> BlockError {
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

/// Bytes free for an unprivileged user in the filesystem holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

impl OwnedBlock {
    /// Creates a block for `plan` under `name`: exclusive create, mode 0600, sized exactly after a
    /// free-space check, then writes the header and tables (a dataset's name appears only then). A kept block's
    /// pages are all reserved here; a run's own block reserves its tables here and each slot when
    /// a worker claims it ([`Claim::reserve`]). Either way a full filesystem is an error, never a
    /// SIGBUS.
    ///
    /// [`Claim::reserve`]: super::Claim::reserve
    pub fn create(
        name: &str,
        backing: Backing,
        plan: &BlockPlan,
    ) -> Result<OwnedBlock, BlockError> {
        validate_name(name)?;
        let regions = plan.regions().ok_or_else(|| BlockError::Invalid {
            name: name.to_string(),
            reason: "its planned size does not fit in 64 bits".into(),
        })?;
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
        // A name of our own making (`fresh_name`) is ours alone, and `ls` judges it live while
        // its creator lives. Any other name (a dataset's) is staged under a fresh name until its
        // tables are written, then published with its lock held: nobody ever finds it headless,
        // whenever this process is killed.
        let own_name = name.starts_with(&format!("{NAME_PREFIX}{}-", std::process::id()));
        let staged = !own_name && backing.can_publish();
        if staged && backing.exists(name) {
            return Err(io_err("create", name)(io::ErrorKind::AlreadyExists.into()));
        }
        let file_name = if staged {
            fresh_name()
        } else {
            name.to_string()
        };
        let fd = backing
            .open(&file_name, true)
            .map_err(io_err("create", name))?;
        // From here on the file exists: remove it on every error path.
        let fail = |err: BlockError| {
            let _ = backing.unlink(&file_name);
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
            name: file_name.clone(),
            backing: backing.clone(),
            map,
            file,
            layout: Layout::default(),
            slots: Vec::new(),
        };
        // From here the handle owns the file: any error below unlinks it on drop.
        let mut owned = OwnedBlock {
            mapping,
            keep: false,
        };
        owned.mapping.write_tables(plan, &regions)?;
        if staged {
            backing
                .publish(&file_name, name)
                .map_err(io_err("create", name))?;
            owned.mapping.name = name.to_string();
        }
        Ok(owned)
    }

    /// A kept dataset's load has finished: every image has an outcome.
    pub fn set_dataset_ready(&self) {
        self.header()
            .dataset_state
            .store(DatasetState::Ready as u32, Ordering::Release);
    }

    /// Keeps the name after drop (for blocks that outlive their creator on purpose).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Records when the job that owns the block started (see `Header::run_started_unix_ns`).
    pub fn set_run_started(&self, at: std::time::SystemTime) {
        self.header()
            .run_started_unix_ns
            .store(unix_ns(at), Ordering::Release);
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
pub(super) fn fallocate_range(fd: BorrowedFd<'_>, offset: u64, len: u64) -> io::Result<()> {
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
pub(super) fn fallocate_range(_fd: BorrowedFd<'_>, _offset: u64, _len: u64) -> io::Result<()> {
    let _ = FallocateFlags::empty();
    Ok(())
}

impl Mapping {
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
        let class_names: Vec<u8> = plan
            .classes
            .iter()
            .flatten()
            .flat_map(|name| name.iter().copied().chain([0]))
            .collect();
        let header_strings = [
            push(&plan.input_root),
            push(&plan.output_root),
            push(plan.op_chain.as_bytes()),
            push(plan.output_format.as_bytes()),
            push(&class_names),
        ];
        let sources: Vec<StrRef> = plan.images.iter().map(|i| push(&i.source)).collect();
        let outputs: Vec<StrRef> = plan.images.iter().map(|i| push(&i.output)).collect();
        let header = header_of(plan, r, header_strings);
        // SAFETY: the mapping is `r.total` bytes, exclusively ours (no worker exists yet), and
        // page-aligned; each write below targets a 64-aligned offset computed by `regions` whose
        // record fits before the next region.
        unsafe {
            std::ptr::write(base as *mut Header, header);
            let mut slot_offset = 0u64;
            for (i, img) in plan.images.iter().enumerate() {
                let rec = record_of(plan, img, slot_offset, sources[i], outputs[i]);
                std::ptr::write(
                    base.add((r.image_table + i as u64 * size_of::<ImageRecord>() as u64) as usize)
                        as *mut ImageRecord,
                    rec,
                );
                slot_offset += align_up(plan.slot_len(img));
            }
            for w in 0..plan.worker_count as u64 {
                std::ptr::write(
                    base.add((r.worker_table + w * size_of::<WorkerRecord>() as u64) as usize)
                        as *mut WorkerRecord,
                    idle_worker(),
                );
            }
            std::ptr::copy_nonoverlapping(
                strings.as_ptr(),
                base.add(r.strings as usize),
                strings.len(),
            );
        }
        self.validate(true)?;
        if plan.kept && !plan.op_chain.is_empty() {
            // The load's chain is step 1 of the dataset's history (see `HISTORY_AT_LOAD`).
            let mut step = HistoryEntry::new(&plan.op_chain, 0, "").ok_or_else(|| {
                BlockError::Invalid {
                    name: self.name.clone(),
                    reason: format!(
                        "its op chain is longer than a dataset's history records ({HISTORY_OPS_LEN} bytes)"
                    ),
                }
            })?;
            step.flags = HISTORY_AT_LOAD;
            // SAFETY: a kept block has a history region of HISTORY_CAPACITY entries at
            // `r.history` (64-aligned, inside the mapping, validated just above); nobody else
            // maps the block before `Ready`, and the count is raised only after the write.
            unsafe { std::ptr::write(base.add(r.history as usize) as *mut HistoryEntry, step) };
            self.header().history_count.store(1, Ordering::Release);
        }
        self.header()
            .state
            .store(BlockState::Ready as u32, Ordering::Release);
        Ok(())
    }
}

/// The header of a block of `plan` in `r`'s regions, its state `Creating`: `strings` are its
/// strings' places (input root, output root, op chain, output format, class names) in the
/// strings region.
fn header_of(plan: &BlockPlan, r: &Regions, strings: [StrRef; 5]) -> Header {
    let [input_root, output_root, op_chain, output_format, class_names] = strings;
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
    Header {
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
            (plan.strip, FLAG_STRIP),
            (plan.lossless, FLAG_LOSSLESS),
            (plan.window_slot.is_some(), FLAG_WINDOW),
            (plan.background.is_some(), FLAG_BACKGROUND),
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
        created_unix_ns: unix_ns_now(),
        run_started_unix_ns: AtomicU64::new(0),
        python_writers: AtomicU64::new(0),
        window_slot_len: plan.window_slot.map_or(0, align_up),
        stop_reason: AtomicU32::new(0),
        _reserved_pad2: 0,
        _reserved_stats: [0; 3],
        dataset_state: AtomicU32::new(if plan.kept {
            DatasetState::Loading
        } else {
            DatasetState::None
        } as u32),
        history_count: AtomicU32::new(0),
        history_offset: r.history,
        load_max_pixels: plan.max_pixels,
        history_capacity: if plan.kept {
            HISTORY_CAPACITY as u32
        } else {
            0
        },
        label_kind: match (&plan.classes, plan.label_kind) {
            (None, _) => LABELS_NONE,
            (Some(_), LABELS_FILE) => LABELS_FILE,
            (Some(_), _) => LABELS_FOLDER,
        },
        class_count: plan.classes.as_ref().map_or(0, |c| c.len() as u32),
        _reserved_pad: 0,
        class_names,
        background: plan.background.map_or([0; 4], |[r, g, b]| [r, g, b, 0]),
        _reserved: [0; 148],
        _reserved_tail: 0,
    }
}

/// The record of `img`, pending, whose slot starts `slot_offset` bytes into the pixels, with
/// its source path and output name at `source` and `output` in the strings.
fn record_of(
    plan: &BlockPlan,
    img: &PlannedImage,
    slot_offset: u64,
    source: StrRef,
    output: StrRef,
) -> ImageRecord {
    ImageRecord {
        // A window block's images have no place of their own: each is decoded into
        // its claimer's slot.
        slot_offset: if plan.window_slot.is_some() {
            0
        } else {
            slot_offset
        },
        slot_len: plan.slot_len(img),
        height: img.height,
        width: img.width,
        channels: plan.channels_of(img),
        format: img.format,
        source,
        status: AtomicU32::new(ImageStatus::Pending as u32),
        steps: AtomicU32::new(STEPS_UNKNOWN),
        crashes: AtomicU32::new(0),
        message_len: AtomicU32::new(0),
        source_size: img.source_size,
        source_mtime_ns: img.source_mtime_ns,
        message: UnsafeCell::new([0; MESSAGE_LEN]),
        original_width: img.original_width,
        original_height: img.original_height,
        label: if plan.classes.is_some() {
            img.label
        } else {
            -1
        },
        source_hash: AtomicU64::new(0),
        output,
        _reserved: [0; 32],
    }
}

/// A worker's record before its worker starts.
fn idle_worker() -> WorkerRecord {
    WorkerRecord {
        pid: AtomicU32::new(0),
        state: AtomicU32::new(0),
        heartbeat_ms: AtomicU64::new(0),
        images_done: AtomicU64::new(0),
        images_failed: AtomicU64::new(0),
        pixels_done: AtomicU64::new(0),
        current_image: AtomicU64::new(NO_IMAGE),
        ready_ns: AtomicU64::new(0),
        parked: AtomicU32::new(0),
        _reserved: [0; 17],
    }
}

/// Nanoseconds since the Unix epoch of `at` (0 before the epoch: unknown).
pub fn unix_ns(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn unix_ns_now() -> u64 {
    unix_ns(std::time::SystemTime::now())
}
