//! Training batches straight from a shmpipe dataset: each image of a batch cropped (torchvision's
//! `RandomResizedCrop`, or validation's centred crop), resampled to the output size (bilinear as
//! torchvision, or Lanczos3: the `shmpipe-resample` crate), flipped left to right at random, and written into one fresh
//! batch array: `(B, H, W, C)` uint8, or normalised `(B, C, H, W)` float32. On threads, each
//! image's randomness its own ([`rng::Stream`] of seed, epoch and index).
//!
//! The Python package calls [`shmpipe_augment_batch`] through ctypes (which releases the GIL for
//! the call) with the block's mapping, the images' offsets and shapes, and the batch array.
//!
//! This crate must never write anything but the batch array (and the boxes it reports), and never
//! read outside the images it is given.

pub mod crop;
pub mod rng;

use crop::CropBox;
use rng::Stream;
pub use shmpipe_resample::Filter;
use shmpipe_resample::Region;

/// How each image's crop is chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// torchvision's `RandomResizedCrop(size, scale, ratio)` ([`crop::random_resized_crop`]).
    RandomResizedCrop {
        scale: (f64, f64),
        ratio: (f64, f64),
    },
    /// Validation: the centred box, `fraction` of the shorter side ([`crop::centre_crop`]).
    Centre { fraction: f64 },
}

/// What a batch is made of.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Augment {
    /// The output's (height, width).
    pub size: (u32, u32),
    pub mode: Mode,
    /// Probability of a left-right flip (torchvision's `RandomHorizontalFlip(p)`).
    pub flip: f64,
    /// The resampling filter: bilinear (torchvision's default) or Lanczos3.
    pub filter: Filter,
    /// Per channel `(mean, std)`: the output is `(v / 255 - mean) / std` as float32, `(C, H, W)`
    /// per image (torchvision's `ToTensor` then `Normalize`). None: uint8 `(H, W, C)`.
    pub normalize: Option<([f32; 4], [f32; 4])>,
    pub seed: u64,
}

/// One image of a batch.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// Its `height x width x channels` bytes.
    pub pixels: &'a [u8],
    pub height: u32,
    pub width: u32,
    /// Its index in the dataset: with the seed and the epoch, its random stream.
    pub index: u64,
}

/// The batch array.
pub enum Out<'a> {
    U8(&'a mut [u8]),
    F32(&'a mut [f32]),
}

/// What was done to one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Made {
    pub crop: CropBox,
    pub flipped: bool,
}

/// The crop and flip of image `index` of `height x width` in `epoch`: the first draws of its
/// stream are the crop's (none for a centred crop), then one for the flip.
pub fn plan(aug: &Augment, epoch: u64, index: u64, (height, width): (u32, u32)) -> Made {
    let mut rng = Stream::new(aug.seed, epoch, index);
    let crop = match aug.mode {
        Mode::RandomResizedCrop { scale, ratio } => {
            crop::random_resized_crop(&mut rng, (height, width), scale, ratio)
        }
        Mode::Centre { fraction } => crop::centre_crop((height, width), aug.size, fraction),
    };
    let flipped = rng.unit() < aug.flip;
    Made { crop, flipped }
}

/// Makes the batch of `sources` (each of `channels` 1 to 4) into `out`, on up to `threads`
/// threads; gives what was done to each image.
pub fn batch(
    sources: &[Source],
    channels: u32,
    aug: &Augment,
    epoch: u64,
    out: Out,
    threads: usize,
) -> Result<Vec<Made>, String> {
    let c = channels as usize;
    if !(1..=4).contains(&c) {
        return Err(format!("{channels} channels: 1 to 4 expected"));
    }
    let (oh, ow) = (aug.size.0 as usize, aug.size.1 as usize);
    if oh == 0 || ow == 0 {
        return Err("the output size is 0".into());
    }
    let per_image = oh * ow * c;
    let out_len = match &out {
        Out::U8(o) => o.len(),
        Out::F32(o) => o.len(),
    };
    if out_len != sources.len() * per_image || matches!(out, Out::F32(_)) != aug.normalize.is_some()
    {
        return Err(format!(
            "the batch array holds {out_len} values, not {} images of {oh}x{ow}x{c} of the type the normalisation gives",
            sources.len()
        ));
    }
    for (k, s) in sources.iter().enumerate() {
        let needed = s.height as usize * s.width as usize * c;
        if s.height == 0 || s.width == 0 || s.pixels.len() != needed {
            return Err(format!(
                "image {} (batch item {k}): {} bytes for {}x{}x{c}",
                s.index,
                s.pixels.len(),
                s.height,
                s.width
            ));
        }
    }
    let mut made = vec![None; sources.len()];
    let threads = threads.clamp(1, sources.len().max(1));
    let chunk = sources.len().div_ceil(threads).max(1);
    let mut shares = Vec::new();
    let mut made_rest = made.as_mut_slice();
    let mut out_rest = out;
    for part in sources.chunks(chunk) {
        let (made_part, rest) = made_rest.split_at_mut(part.len());
        made_rest = rest;
        let (out_part, rest) = split(out_rest, part.len() * per_image);
        out_rest = rest;
        shares.push((part, out_part, made_part));
    }
    let run = |(part, out_part, made_part): (&[Source], Out, &mut [Option<Made>])| {
        make(part, c, aug, epoch, out_part, made_part)
    };
    // A panic (a bug) fails the batch; it must not unwind into the caller (Python, through C).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if threads == 1 {
            return shares.into_iter().try_for_each(run);
        }
        if let Some(pool) = pool(threads) {
            let outcomes = std::sync::Mutex::new(Vec::new());
            pool.scope(|scope| {
                for share in shares {
                    let (run, outcomes) = (&run, &outcomes);
                    scope.spawn(move |_| {
                        let outcome = run(share);
                        outcomes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(outcome);
                    });
                }
            });
            let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
            return outcomes.into_iter().collect();
        }
        // No pool to be had (see `pool`): threads of this call's own.
        std::thread::scope(|scope| {
            let handles: Vec<_> = shares
                .into_iter()
                .map(|share| scope.spawn(move || run(share)))
                .collect();
            handles.into_iter().try_for_each(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a batch thread panicked".into()))
            })
        })
    }))
    .unwrap_or_else(|_| Err("a batch thread panicked".into()));
    result?;
    Ok(made
        .into_iter()
        .map(|m| m.expect("every image made"))
        .collect())
}

/// The threads that make batches' shares, kept from one call to the next (a thread started for
/// each call would fault in its buffers again each time), with the process and the count they
/// were made for.
static POOL: std::sync::Mutex<Option<(u32, usize, std::sync::Arc<rayon_core::ThreadPool>)>> =
    std::sync::Mutex::new(None);

/// This process's pool of `threads` threads, or None when none can be had without waiting: the
/// lock is held by another call (or was held, in a process forked during a call, by a thread
/// that is not in this one), or the threads cannot be started. After a fork the pool's threads
/// are not in the child, so a pool made by another process is left alone and a new one made.
fn pool(threads: usize) -> Option<std::sync::Arc<rayon_core::ThreadPool>> {
    let mut slot = POOL.try_lock().ok()?;
    let pid = std::process::id();
    match &*slot {
        Some((p, t, pool)) if *p == pid && *t == threads => return Some(pool.clone()),
        Some((p, _, _)) if *p != pid => {
            // Its threads are in the parent: dropping it here would wait for them.
            std::mem::forget(slot.take());
        }
        _ => {}
    }
    let pool = rayon_core::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|k| format!("shmpipe-augment-{k}"))
        .build()
        .ok()?;
    let pool = std::sync::Arc::new(pool);
    *slot = Some((pid, threads, pool.clone()));
    Some(pool)
}

/// `out` cut after its first `n` values.
fn split(out: Out, n: usize) -> (Out, Out) {
    match out {
        Out::U8(o) => {
            let (a, b) = o.split_at_mut(n);
            (Out::U8(a), Out::U8(b))
        }
        Out::F32(o) => {
            let (a, b) = o.split_at_mut(n);
            (Out::F32(a), Out::F32(b))
        }
    }
}

/// One thread's share of a batch.
fn make(
    sources: &[Source],
    c: usize,
    aug: &Augment,
    epoch: u64,
    out: Out,
    made: &mut [Option<Made>],
) -> Result<(), String> {
    // This thread's buffers, kept from one call to the next: the calling thread makes a share
    // of every batch, and freeing and allocating them again each time costs page faults.
    BUFFERS.with_borrow_mut(|(scratch, resampler)| {
        make_with(sources, c, aug, epoch, out, made, scratch, resampler)
    })
}

thread_local! {
    /// [`make`]'s resampled image and resampler, for the next call on this thread.
    static BUFFERS: std::cell::RefCell<(Vec<u8>, shmpipe_resample::Resampler)> =
        std::cell::RefCell::default();
}

/// [`make`] with this thread's buffers.
#[allow(clippy::too_many_arguments)]
fn make_with(
    sources: &[Source],
    c: usize,
    aug: &Augment,
    epoch: u64,
    mut out: Out,
    made: &mut [Option<Made>],
    scratch: &mut Vec<u8>,
    resampler: &mut shmpipe_resample::Resampler,
) -> Result<(), String> {
    let (oh, ow) = (aug.size.0 as usize, aug.size.1 as usize);
    let per_image = oh * ow * c;
    scratch.resize(per_image, 0);
    for (k, s) in sources.iter().enumerate() {
        let m = plan(aug, epoch, s.index, (s.height, s.width));
        let b = m.crop;
        let region = Region::Box {
            left: f64::from(b.left),
            top: f64::from(b.top),
            width: f64::from(b.width),
            height: f64::from(b.height),
        };
        let resampled = match &mut out {
            Out::U8(o) => &mut o[k * per_image..(k + 1) * per_image],
            Out::F32(_) => &mut scratch[..],
        };
        resampler
            .resample(
                aug.filter,
                s.pixels,
                (s.width, s.height),
                c as u32,
                region,
                resampled,
                (ow as u32, oh as u32),
            )
            .map_err(|e| format!("image {}: {e}", s.index))?;
        match (&mut out, aug.normalize) {
            (Out::U8(o), _) => {
                if m.flipped {
                    for row in o[k * per_image..(k + 1) * per_image].chunks_exact_mut(ow * c) {
                        flip_row(row, c);
                    }
                }
            }
            (Out::F32(o), Some((mean, std))) => {
                let image = &mut o[k * per_image..(k + 1) * per_image];
                normalise(scratch, (oh, ow, c), m.flipped, (&mean, &std), image);
            }
            (Out::F32(_), None) => unreachable!("checked by `batch`"),
        }
        made[k] = Some(m);
    }
    Ok(())
}

/// Mirrors one row of `c`-byte pixels.
fn flip_row(row: &mut [u8], c: usize) {
    let w = row.len() / c;
    for x in 0..w / 2 {
        for ch in 0..c {
            row.swap(x * c + ch, (w - 1 - x) * c + ch);
        }
    }
}

/// `(H, W, C)` u8 into `(C, H, W)` f32 as `(v / 255 - mean) / std`, mirrored when `flipped`.
/// In float32, in that order, as NumPy computes `(a.astype(float32) / 255 - mean) / std`: each
/// channel's 256 values are computed so once, then looked up.
fn normalise(
    src: &[u8],
    (h, w, c): (usize, usize, usize),
    flipped: bool,
    (mean, std): (&[f32; 4], &[f32; 4]),
    out: &mut [f32],
) {
    let tables: [[f32; 256]; 4] =
        std::array::from_fn(|ch| std::array::from_fn(|v| (v as f32 / 255.0 - mean[ch]) / std[ch]));
    // One loop for each channel count, so that the pixel's stride is a constant.
    match c {
        1 => planes::<1>(src, (h, w), flipped, &tables, out),
        2 => planes::<2>(src, (h, w), flipped, &tables, out),
        3 => planes::<3>(src, (h, w), flipped, &tables, out),
        _ => planes::<4>(src, (h, w), flipped, &tables, out),
    }
}

/// [`normalise`] for `C` channels: plane by plane, each row looked up from its source row (the
/// resampled image, in cache for the `C` passes).
fn planes<const C: usize>(
    src: &[u8],
    (h, w): (usize, usize),
    flipped: bool,
    tables: &[[f32; 256]; 4],
    out: &mut [f32],
) {
    for (ch, (plane, table)) in out.chunks_exact_mut(h * w).zip(tables).enumerate() {
        for (dst, row) in plane.chunks_exact_mut(w).zip(src.chunks_exact(w * C)) {
            let values = row
                .chunks_exact(C)
                .map(|pixel| table[usize::from(pixel[ch])]);
            if flipped {
                dst.iter_mut().rev().zip(values).for_each(|(d, v)| *d = v);
            } else {
                dst.iter_mut().zip(values).for_each(|(d, v)| *d = v);
            }
        }
    }
}

/// The version of [`shmpipe_augment_batch`]'s arguments and of [`Params`]' layout: raised
/// whenever either changes, so that a package never calls a library built for another.
pub const ABI: u64 = 2;

/// [`ABI`] in the high 32 bits and the size of [`Params`] in the low ones: what the Python
/// package compares with its own before its first call.
#[no_mangle]
pub extern "C" fn shmpipe_augment_abi() -> u64 {
    (ABI << 32) | std::mem::size_of::<Params>() as u64
}

/// The parameters of [`shmpipe_augment_batch`], laid out for ctypes.
#[repr(C)]
pub struct Params {
    pub out_height: u32,
    pub out_width: u32,
    /// 0: RandomResizedCrop, 1: centred crop.
    pub mode: u32,
    /// 1: normalise to float32 `(C, H, W)` with `mean` and `std`; 0: uint8 `(H, W, C)`.
    pub normalize: u32,
    /// 0: bilinear, 1: Lanczos3.
    pub filter: u32,
    pub _pad: u32,
    pub scale: [f64; 2],
    pub ratio: [f64; 2],
    pub fraction: f64,
    pub flip: f64,
    pub mean: [f32; 4],
    pub std: [f32; 4],
    pub seed: u64,
}

/// Makes a batch of `n` images for Python: image `k` is the `shapes[3k] x shapes[3k+1] x
/// shapes[3k+2]` bytes at `base + offsets[k]`, its dataset index `indices[k]`; the batch goes
/// to `out` (`out_len` bytes: uint8, or float32 when `params.normalize`). Writes each image's
/// box and flip to `boxes` (5 values a row: top, left, height, width, flipped) unless it is
/// null. Returns 0, or 1 with the reason in `err` (NUL-terminated, at most `err_len` bytes).
///
/// # Safety
///
/// `base` must point to `base_len` readable bytes that nobody writes during the call (the
/// Python handle holds the dataset's shared lock, which every writer takes exclusively);
/// `offsets` and `indices` to `n` values, `shapes` to `3n`; `params` to one `Params`; `out` to
/// `out_len` writable bytes, aligned for f32 when normalising, overlapping nothing else given;
/// `boxes` null or to `5n` writable values; `err` to `err_len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn shmpipe_augment_batch(
    base: *const u8,
    base_len: u64,
    offsets: *const i64,
    shapes: *const u32,
    indices: *const i64,
    n: u64,
    params: *const Params,
    epoch: u64,
    out: *mut u8,
    out_len: u64,
    threads: u32,
    boxes: *mut i64,
    err: *mut u8,
    err_len: u64,
) -> i32 {
    let n = n as usize;
    // SAFETY: the caller gives these pointers with the lengths above (see `# Safety`).
    let (block, offsets, shapes, indices, params) = unsafe {
        (
            std::slice::from_raw_parts(base, base_len as usize),
            std::slice::from_raw_parts(offsets, n),
            std::slice::from_raw_parts(shapes, 3 * n),
            std::slice::from_raw_parts(indices, n),
            &*params,
        )
    };
    let outcome = (|| -> Result<Vec<Made>, String> {
        let channels = shapes.get(2).copied().unwrap_or(3);
        let mut sources = Vec::with_capacity(n);
        for k in 0..n {
            let (h, w, c) = (shapes[3 * k], shapes[3 * k + 1], shapes[3 * k + 2]);
            if c != channels {
                return Err(format!(
                    "batch item {k} has {c} channels, item 0 {channels}"
                ));
            }
            let len = h as usize * w as usize * c as usize;
            let start = usize::try_from(offsets[k]).map_err(|_| "a negative offset")?;
            let pixels = start
                .checked_add(len)
                .and_then(|end| block.get(start..end))
                .ok_or_else(|| format!("image {}: its slot lies outside the block", indices[k]))?;
            sources.push(Source {
                pixels,
                height: h,
                width: w,
                index: indices[k] as u64,
            });
        }
        let aug = Augment {
            size: (params.out_height, params.out_width),
            mode: match params.mode {
                0 => Mode::RandomResizedCrop {
                    scale: (params.scale[0], params.scale[1]),
                    ratio: (params.ratio[0], params.ratio[1]),
                },
                _ => Mode::Centre {
                    fraction: params.fraction,
                },
            },
            flip: params.flip,
            filter: match params.filter {
                0 => Filter::Bilinear,
                _ => Filter::Lanczos3,
            },
            normalize: (params.normalize != 0).then_some((params.mean, params.std)),
            seed: params.seed,
        };
        let out = match aug.normalize {
            None => {
                // SAFETY: `out` is `out_len` writable bytes overlapping nothing else given.
                Out::U8(unsafe { std::slice::from_raw_parts_mut(out, out_len as usize) })
            }
            Some(_) => {
                if !(out as usize).is_multiple_of(std::mem::align_of::<f32>())
                    || !out_len.is_multiple_of(4)
                {
                    return Err("the float32 batch array is not aligned".into());
                }
                // SAFETY: as above, and aligned for f32 (checked just now).
                Out::F32(unsafe {
                    std::slice::from_raw_parts_mut(out as *mut f32, out_len as usize / 4)
                })
            }
        };
        batch(&sources, channels, &aug, epoch, out, threads as usize)
    })();
    match outcome {
        Ok(made) => {
            if !boxes.is_null() {
                // SAFETY: a non-null `boxes` is `5n` writable values (see `# Safety`).
                let rows = unsafe { std::slice::from_raw_parts_mut(boxes, 5 * n) };
                for (row, m) in rows.chunks_exact_mut(5).zip(made) {
                    let b = m.crop;
                    row.copy_from_slice(&[
                        i64::from(b.top),
                        i64::from(b.left),
                        i64::from(b.height),
                        i64::from(b.width),
                        i64::from(m.flipped),
                    ]);
                }
            }
            0
        }
        Err(reason) => {
            if !err.is_null() && err_len > 0 {
                let bytes = reason.as_bytes();
                let len = bytes.len().min(err_len as usize - 1);
                // SAFETY: `err` is `err_len` writable bytes; we write `len + 1 <= err_len`.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr(), err, len);
                    *err.add(len) = 0;
                }
            }
            1
        }
    }
}
