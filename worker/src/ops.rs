//! The op chain: parsing `--ops`, and the in-place, shape-preserving kernels that run on a slot.
//!
//! A slot is an `(H, W, C)` u8 `ndarray` view in standard layout, C = 1, 3 or 4. Every op keeps
//! the shape. Colour ops (point ops, grayscale) leave a 4th (alpha) channel unchanged; blur and
//! sharpen filter every channel. Consecutive point ops are folded into one 256-entry lookup table
//! and applied in one pass. This module must never allocate per pixel nor touch anything but the
//! view it is given (and its own scratch buffers).

use std::fmt;

use multiversion::multiversion;
use ndarray::{s, ArrayViewMut3, Axis, Zip};

/// One op as the user wrote it.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `invert`: v' = 255 − v.
    Invert,
    /// `grayscale`: L = ⌊(299 R + 587 G + 114 B + 500) / 1000⌋ (ITU-R 601-2 luma, as Pillow's
    /// `convert("L")`, rounded to nearest), written back to R, G and B. Identity on 1 channel.
    Grayscale,
    /// `brightness:F`: v' = min(255, round(v × F)), F ≥ 0. The same formula as `scale`.
    Brightness(f32),
    /// `scale:F`: v' = min(255, round(v × F)), F ≥ 0 (saturating `arr *= F`).
    Scale(f32),
    /// `contrast:F`: v' = clamp(round((v − 128) × F + 128), 0, 255), F ≥ 0.
    Contrast(f32),
    /// `gamma:G`: v' = round(255 × (v / 255)^(1/G)), G > 0 (G > 1 brightens).
    Gamma(f32),
    /// `threshold:T`: v' = 255 if v ≥ T else 0, T in 0..=255.
    Threshold(u8),
    /// `blur:SIGMA`: gaussian, separable. Weights w_k ∝ exp(−k² / 2σ²) for |k| ≤ r = ⌈3σ⌉,
    /// quantised to 16-bit fixed point summing exactly to 65536. Horizontal pass, then vertical,
    /// each v' = (Σ_k w_k × v[clamp(i + k)] + 32768) >> 16, so a constant image stays constant.
    /// Border: the edge pixel is repeated (clamp). 0 < σ ≤ 64.
    Blur(f32),
    /// `sharpen[:A]`: unsharp mask with σ = 1: b = blur(v, 1),
    /// v' = clamp(v + ⌊(A₂₅₆ × (v − b) + 128) / 256⌋, 0, 255), A₂₅₆ = round(256 A); A defaults
    /// to 1, 0 ≤ A ≤ 16.
    Sharpen(f32),
    /// `flip-h`: pixel (y, x) ← (y, W − 1 − x).
    FlipH,
    /// `flip-v`: pixel (y, x) ← (H − 1 − y, x).
    FlipV,
}

/// Why an `--ops` list was refused. Names the op and the argument.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OpError {
    #[error("unknown op {0:?} (known: invert, grayscale, brightness:F, scale:F, contrast:F, gamma:G, threshold:T, blur:SIGMA, sharpen[:A], flip-h, flip-v)")]
    Unknown(String),
    #[error("op {op:?} needs an argument, for example {example}")]
    MissingArg { op: String, example: &'static str },
    #[error("op {op:?} takes no argument, got {arg:?}")]
    UnexpectedArg { op: String, arg: String },
    #[error("bad argument {arg:?} for op {op:?}: {reason}")]
    BadArg {
        op: String,
        arg: String,
        reason: &'static str,
    },
    #[error("empty op in list {0:?}")]
    Empty(String),
    #[error("{0} is a dataset-wide op: load the folder (shmpipe load DIR --name NAME), then shmpipe apply NAME --ops {0}")]
    DatasetWide(&'static str),
    #[error(
        "an op list may hold one dataset-wide op (normalize, normalize:float, equalize:dataset)"
    )]
    NormalizeTwice,
    #[error("normalize:float must end the op list: it changes no pixel, export applies it")]
    FloatLast,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Invert => write!(f, "invert"),
            Op::Grayscale => write!(f, "grayscale"),
            Op::Brightness(v) => write!(f, "brightness:{v}"),
            Op::Scale(v) => write!(f, "scale:{v}"),
            Op::Contrast(v) => write!(f, "contrast:{v}"),
            Op::Gamma(v) => write!(f, "gamma:{v}"),
            Op::Threshold(v) => write!(f, "threshold:{v}"),
            Op::Blur(v) => write!(f, "blur:{v}"),
            Op::Sharpen(v) => write!(f, "sharpen:{v}"),
            Op::FlipH => write!(f, "flip-h"),
            Op::FlipV => write!(f, "flip-v"),
        }
    }
}

fn parse_one(item: &str, list: &str) -> Result<Op, OpError> {
    let item = item.trim();
    if item.is_empty() {
        return Err(OpError::Empty(list.to_string()));
    }
    let (name, arg) = match item.split_once(':') {
        Some((n, a)) => (n.trim(), Some(a.trim())),
        None => (item, None),
    };
    let name_l = name.to_ascii_lowercase();
    let no_arg = |op: Op| match arg {
        None => Ok(op),
        Some(a) => Err(OpError::UnexpectedArg {
            op: name.to_string(),
            arg: a.to_string(),
        }),
    };
    let float =
        |example: &'static str, min: f32, max: f32, min_inclusive: bool, reason: &'static str| {
            let a = arg.ok_or(OpError::MissingArg {
                op: name.to_string(),
                example,
            })?;
            let bad = |reason| OpError::BadArg {
                op: name.to_string(),
                arg: a.to_string(),
                reason,
            };
            let v: f32 = a.parse().map_err(|_| bad("not a number"))?;
            let above_min = if min_inclusive { v >= min } else { v > min };
            if !v.is_finite() || !above_min || v > max {
                return Err(bad(reason));
            }
            Ok(v)
        };
    Ok(match name_l.as_str() {
        "normalize" | "normalise" => return Err(OpError::DatasetWide("normalize")),
        "equalize" | "equalise" if arg.is_some_and(|a| a.eq_ignore_ascii_case("dataset")) => {
            return Err(OpError::DatasetWide("equalize:dataset"))
        }
        "invert" => no_arg(Op::Invert)?,
        "grayscale" | "greyscale" | "gray" | "grey" => no_arg(Op::Grayscale)?,
        "flip-h" | "fliph" | "hflip" => no_arg(Op::FlipH)?,
        "flip-v" | "flipv" | "vflip" => no_arg(Op::FlipV)?,
        "brightness" => Op::Brightness(float(
            "brightness:1.2",
            0.0,
            255.0,
            true,
            "must be between 0 and 255",
        )?),
        "scale" => Op::Scale(float(
            "scale:2",
            0.0,
            255.0,
            true,
            "must be between 0 and 255",
        )?),
        "contrast" => Op::Contrast(float(
            "contrast:1.5",
            0.0,
            255.0,
            true,
            "must be between 0 and 255",
        )?),
        "gamma" => Op::Gamma(float(
            "gamma:2.2",
            0.0,
            100.0,
            false,
            "must be above 0 and at most 100",
        )?),
        "blur" => Op::Blur(float(
            "blur:2",
            0.0,
            64.0,
            false,
            "sigma must be above 0 and at most 64",
        )?),
        "sharpen" => match arg {
            None => Op::Sharpen(1.0),
            Some(_) => Op::Sharpen(float(
                "sharpen:1",
                0.0,
                16.0,
                true,
                "amount must be between 0 and 16",
            )?),
        },
        "threshold" => {
            let a = arg.ok_or(OpError::MissingArg {
                op: name.to_string(),
                example: "threshold:128",
            })?;
            Op::Threshold(a.parse().map_err(|_| OpError::BadArg {
                op: name.to_string(),
                arg: a.to_string(),
                reason: "must be an integer from 0 to 255",
            })?)
        }
        _ => return Err(OpError::Unknown(name.to_string())),
    })
}

/// Parses a comma list such as `grayscale,blur:2,brightness:1.2`. An empty list is no op.
pub fn parse_ops(list: &str) -> Result<Vec<Op>, OpError> {
    if list.trim().is_empty() {
        return Ok(Vec::new());
    }
    list.split(',').map(|item| parse_one(item, list)).collect()
}

/// The op chain compiled for execution: point ops folded into lookup tables.
#[derive(Clone, Debug)]
pub struct OpChain {
    ops: Vec<Op>,
    steps: Vec<Step>,
}

#[derive(Clone, Debug)]
enum Step {
    Lut(Box<[u8; 256]>),
    Grayscale,
    Blur(Vec<u32>),
    Sharpen { kernel: Vec<u32>, amount_256: i32 },
    FlipH,
    FlipV,
}

fn point_lut(op: &Op) -> Option<[u8; 256]> {
    let mut lut = [0u8; 256];
    for (v, out) in lut.iter_mut().enumerate() {
        let x = v as f64;
        let y = match *op {
            Op::Invert => 255.0 - x,
            Op::Brightness(f) | Op::Scale(f) => (x * f as f64).round(),
            Op::Contrast(f) => ((x - 128.0) * f as f64 + 128.0).round(),
            Op::Gamma(g) => (255.0 * (x / 255.0).powf(1.0 / g as f64)).round(),
            Op::Threshold(t) => {
                if v >= t as usize {
                    255.0
                } else {
                    0.0
                }
            }
            _ => return None,
        };
        *out = y.clamp(0.0, 255.0) as u8;
    }
    Some(lut)
}

/// Gaussian weights for σ, radius ⌈3σ⌉, 16-bit fixed point summing to exactly 65536.
pub fn gaussian_kernel(sigma: f32) -> Vec<u32> {
    let sigma = sigma as f64;
    let radius = (3.0 * sigma).ceil().max(1.0) as i64;
    let raw: Vec<f64> = (-radius..=radius)
        .map(|k| (-((k * k) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = raw.iter().sum();
    let mut weights: Vec<u32> = raw
        .iter()
        .map(|w| (w / total * 65536.0).round() as u32)
        .collect();
    let sum: i64 = weights.iter().map(|&w| w as i64).sum();
    let centre = radius as usize;
    weights[centre] = (weights[centre] as i64 + 65536 - sum) as u32;
    weights
}

impl OpChain {
    pub fn new(ops: Vec<Op>) -> OpChain {
        let mut steps: Vec<Step> = Vec::new();
        for op in &ops {
            if let Some(lut) = point_lut(op) {
                if let Some(Step::Lut(prev)) = steps.last_mut() {
                    // Fold: apply `prev` then `lut`.
                    for v in prev.iter_mut() {
                        *v = lut[*v as usize];
                    }
                } else {
                    steps.push(Step::Lut(Box::new(lut)));
                }
                continue;
            }
            steps.push(match *op {
                Op::Grayscale => Step::Grayscale,
                Op::Blur(sigma) => Step::Blur(gaussian_kernel(sigma)),
                Op::Sharpen(amount) => Step::Sharpen {
                    kernel: gaussian_kernel(1.0),
                    amount_256: (amount * 256.0).round() as i32,
                },
                Op::FlipH => Step::FlipH,
                Op::FlipV => Step::FlipV,
                _ => unreachable!("point ops are handled above"),
            });
        }
        OpChain { ops, steps }
    }

    pub fn parse(list: &str) -> Result<OpChain, OpError> {
        parse_ops(list).map(OpChain::new)
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Passes over the pixels this chain makes (after folding).
    pub fn passes(&self) -> usize {
        self.steps.len()
    }

    /// Runs the chain in place on `img`, an `(H, W, C)` view in standard layout, and leaves the
    /// result there in that layout.
    pub fn apply(&self, mut img: ArrayViewMut3<'_, u8>, scratch: &mut Scratch) {
        if self.run(img.view_mut(), scratch) == Layout::GrayPlane {
            expand_gray_plane(img);
        }
    }

    /// Runs the chain in place. Once a 3-channel image has been made gray, the rest of the chain
    /// runs on one channel: the luma is packed into the first H x W bytes of the slot (a gray
    /// plane) and [`Layout::GrayPlane`] is returned; the caller may encode that plane as a
    /// one-channel image, and calls [`expand_gray_plane`] if it needs `(H, W, 3)` again.
    pub fn run(&self, img: ArrayViewMut3<'_, u8>, scratch: &mut Scratch) -> Layout {
        self.run_steps(img, &self.steps, Layout::Full, scratch)
    }

    /// Whether the chain's first step is `grayscale` of a colour image: then the decoder may
    /// write the luma plane itself (see [`OpChain::run_after_grayscale`]).
    pub fn starts_with_grayscale(&self) -> bool {
        matches!(self.steps.first(), Some(Step::Grayscale))
    }

    /// Runs the chain without its leading `grayscale` on `plane`, an `(H, W, 1)` view of the
    /// gray plane that step would have made (the first H x W bytes of a 3-channel slot), and
    /// returns [`Layout::GrayPlane`]: the caller goes on as after [`OpChain::run`].
    pub fn run_after_grayscale(
        &self,
        plane: ArrayViewMut3<'_, u8>,
        scratch: &mut Scratch,
    ) -> Layout {
        assert!(self.starts_with_grayscale() && plane.dim().2 == 1);
        self.run_steps(plane, &self.steps[1..], Layout::GrayPlane, scratch)
    }

    fn run_steps(
        &self,
        mut img: ArrayViewMut3<'_, u8>,
        steps: &[Step],
        mut layout: Layout,
        scratch: &mut Scratch,
    ) -> Layout {
        let (h, w, c) = img.dim();
        if h == 0 || w == 0 {
            return layout;
        }
        for step in steps {
            let px = img_slice(&mut img);
            let (px, c) = match layout {
                Layout::GrayPlane => (&mut px[..h * w], 1),
                Layout::Full => (px, c),
            };
            let row_len = w * c;
            // Row-local steps and neighbourhood steps run on row bands at once (one thread
            // each, see `Scratch::set_threads`); packing to a plane and flip-v move bytes across
            // rows and run on this thread.
            match step {
                Step::Lut(lut) => banded(px, row_len, 0, scratch, |band, _, _, _| {
                    apply_lut(band, c, lut)
                }),
                Step::Grayscale if c == 3 => {
                    grayscale_to_plane(px);
                    layout = Layout::GrayPlane;
                }
                Step::Grayscale => {
                    banded(px, row_len, 0, scratch, |band, _, _, _| grayscale(band, c))
                }
                Step::Blur(kernel) => banded(
                    px,
                    row_len,
                    kernel.len() / 2,
                    scratch,
                    |band, above, below, s| blur(band, row_len, c, kernel, (above, below), s),
                ),
                Step::Sharpen { kernel, amount_256 } => banded(
                    px,
                    row_len,
                    kernel.len() / 2,
                    scratch,
                    |band, above, below, s| {
                        sharpen(band, row_len, c, kernel, *amount_256, (above, below), s)
                    },
                ),
                Step::FlipH => banded(px, row_len, 0, scratch, |band, _, _, _| {
                    flip_h(plane_view(band, band.len() / row_len, w, c))
                }),
                Step::FlipV => flip_v(plane_view(px, h, w, c)),
            }
        }
        layout
    }
}

/// Where a chain left the pixels of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `(H, W, C)`, as given.
    Full,
    /// A gray image packed into the first H x W bytes; see [`OpChain::run`].
    GrayPlane,
}

fn plane_view(px: &mut [u8], h: usize, w: usize, c: usize) -> ArrayViewMut3<'_, u8> {
    ArrayViewMut3::from_shape((h, w, c), px).expect("the slice holds h * w * c bytes")
}

/// Expands a gray plane (the first H x W bytes of a 3-channel slot) back to `(H, W, 3)`.
pub fn expand_gray_plane(mut img: ArrayViewMut3<'_, u8>) {
    let (h, w, _) = img.dim();
    let px = img_slice(&mut img);
    // Backwards: pixel i's value sits at i <= 3i, read before anything overwrites it.
    for i in (0..h * w).rev() {
        let v = px[i];
        px[3 * i..3 * i + 3].fill(v);
    }
}

/// Grayscale of a 3-channel image, packed: luma of pixel i goes to byte i. Forwards is safe:
/// byte i belongs to pixel i / 3 <= i, already read. Chosen at run time as [`multiply_add`].
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn grayscale_to_plane(px: &mut [u8]) {
    // Blocks of 64 pixels through local arrays: no aliasing between the reads and the writes, so
    // the compiler vectorises the arithmetic (2x over the plain in-place loop).
    const BLOCK: usize = 64;
    let pixels = px.len() / 3;
    let mut rgb = [0u8; 3 * BLOCK];
    let mut luma = [0u8; BLOCK];
    let mut start = 0;
    while start < pixels {
        let n = BLOCK.min(pixels - start);
        rgb[..3 * n].copy_from_slice(&px[3 * start..3 * (start + n)]);
        for (l, p) in luma.iter_mut().zip(rgb.chunks_exact(3)) {
            let (r, g, b) = (p[0] as u32, p[1] as u32, p[2] as u32);
            *l = ((299 * r + 587 * g + 114 * b + 500) / 1000) as u8;
        }
        // Byte i belongs to pixel i / 3 <= i: every byte written here was already read.
        px[start..start + n].copy_from_slice(&luma[..n]);
        start += n;
    }
}

fn img_slice<'a>(img: &'a mut ArrayViewMut3<'_, u8>) -> &'a mut [u8] {
    img.as_slice_mut()
        .expect("slots are viewed in standard layout")
}

/// Reusable buffers, one set per worker, so kernels do not allocate per image.
#[derive(Default)]
pub struct Scratch<'b> {
    /// 2r + 1 horizontally blurred rows.
    ring: Vec<u8>,
    padded: Vec<u8>,
    acc: Vec<u32>,
    column_acc: Vec<u32>,
    /// Threads a chain may split its steps over (0 and 1: this thread alone).
    threads: usize,
    /// When set, asked before each step instead of `threads`.
    budget: Option<&'b (dyn Fn() -> usize + Sync)>,
    /// The scratch of each extra thread.
    helpers: Vec<Scratch<'b>>,
}

impl<'b> Scratch<'b> {
    /// Lets the chains run from now on split each row-local or neighbourhood step into
    /// `threads` row bands that run at once. The result is the same, byte for byte.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
        self.budget = None;
    }

    /// As [`Scratch::set_threads`], with the number asked of `budget` before each step, so a
    /// core that becomes free while an image is in hand serves its next step.
    pub fn set_thread_budget(&mut self, budget: &'b (dyn Fn() -> usize + Sync)) {
        self.budget = Some(budget);
    }

    fn threads(&self) -> usize {
        self.budget.map_or(self.threads, |threads| threads())
    }
}

/// Rows a band gets at least: fewer bands on a short image, so threads are worth starting.
const MIN_BAND_ROWS: usize = 64;

/// Runs `f` on row bands of `px` (rows of `row_len` bytes) at once, one thread per band (as many
/// as [`Scratch::set_threads`] allows). `f` gets its band, the up to `halo` rows above it and the
/// up to `halo` rows below it, and a scratch. The halo rows are copied before any band runs, so a
/// neighbourhood op of that radius reads its neighbours' input, never their output: each band
/// writes only its own rows, and the result equals one pass over the whole image.
fn banded(
    px: &mut [u8],
    row_len: usize,
    halo: usize,
    scratch: &mut Scratch,
    f: impl Fn(&mut [u8], &[u8], &[u8], &mut Scratch) + Sync,
) {
    let height = px.len() / row_len;
    let bands = scratch.threads().min(height / MIN_BAND_ROWS).max(1);
    if bands == 1 {
        return f(px, &[], &[], scratch);
    }
    let bounds: Vec<usize> = (0..=bands).map(|b| b * height / bands).collect();
    let halos: Vec<(Vec<u8>, Vec<u8>)> = bounds
        .windows(2)
        .map(|b| {
            let (y0, y1) = (b[0], b[1]);
            (
                px[y0.saturating_sub(halo) * row_len..y0 * row_len].to_vec(),
                px[y1 * row_len..(y1 + halo).min(height) * row_len].to_vec(),
            )
        })
        .collect();
    let mut parts = Vec::with_capacity(bands);
    let mut rest = px;
    for b in bounds.windows(2) {
        let (band, tail) = rest.split_at_mut((b[1] - b[0]) * row_len);
        parts.push(band);
        rest = tail;
    }
    let mut helpers = std::mem::take(&mut scratch.helpers);
    helpers.resize_with(bands - 1, Scratch::default);
    std::thread::scope(|s| {
        let mut work = parts.into_iter().zip(&halos);
        let (first, (above, below)) = work.next().expect("two bands or more");
        for ((band, (above, below)), helper) in work.zip(helpers.iter_mut()) {
            let f = &f;
            s.spawn(move || f(band, above, below, helper));
        }
        f(first, above, below, scratch);
    });
    scratch.helpers = helpers;
}

fn apply_lut(px: &mut [u8], channels: usize, lut: &[u8; 256]) {
    if channels == 4 {
        for p in px.chunks_exact_mut(4) {
            p[0] = lut[p[0] as usize];
            p[1] = lut[p[1] as usize];
            p[2] = lut[p[2] as usize];
        }
    } else {
        for v in px.iter_mut() {
            *v = lut[*v as usize];
        }
    }
}

/// Grayscale in place, written to R, G and B (alpha left alone). Chosen at run time as
/// [`multiply_add`].
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn grayscale(px: &mut [u8], channels: usize) {
    if channels < 3 {
        return;
    }
    for p in px.chunks_exact_mut(channels) {
        let l = (299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000;
        let l = l as u8;
        p[0] = l;
        p[1] = l;
        p[2] = l;
    }
}

/// The horizontal pass of `kernel` over one row (`channels` bytes a pixel, edge pixels
/// repeated), written to `out`.
fn blur_row(
    row: &[u8],
    out: &mut [u8],
    channels: usize,
    kernel: &[u32],
    padded: &mut Vec<u8>,
    acc: &mut Vec<u32>,
) {
    let row_len = row.len();
    let pad = kernel.len() / 2 * channels;
    padded.resize(row_len + 2 * pad, 0);
    acc.resize(row_len, 0);
    let (left, rest) = padded.split_at_mut(pad);
    let (middle, right) = rest.split_at_mut(row_len);
    middle.copy_from_slice(row);
    for (i, v) in left.iter_mut().enumerate() {
        *v = row[i % channels];
    }
    let last = &row[row_len - channels..];
    for (i, v) in right.iter_mut().enumerate() {
        *v = last[i % channels];
    }
    let acc = &mut acc[..row_len];
    acc.fill(32768);
    for (k, &weight) in kernel.iter().enumerate() {
        multiply_add(acc, &padded[k * channels..k * channels + row_len], weight);
    }
    narrow(out, acc);
}

/// `acc[i] += weight * src[i]`, where both blur passes spend their time. Compiled as well for
/// AVX2 and SSE4.1 and chosen at run time: the x86-64 baseline (SSE2) has no 32-bit vector
/// multiply, and this loop runs 2.4x slower without one, so the binary stays portable without
/// giving that up.
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn multiply_add(acc: &mut [u32], src: &[u8], weight: u32) {
    for (a, &v) in acc.iter_mut().zip(src) {
        *a += weight * v as u32;
    }
}

/// `out[i] = acc[i] >> 16`: fixed-point sums back to bytes (chosen at run time as above).
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn narrow(out: &mut [u8], acc: &[u32]) {
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = (a >> 16) as u8;
    }
}

/// A separable gaussian over `px` (`height` rows of `row_len` bytes), in place, holding only a
/// ring of 2r + 1 horizontally blurred rows: row y is written once rows up to y + r have been
/// blurred horizontally, and those rows are still original because only rows above y have been
/// written. `finish` turns each output row's fixed-point sums (and the original row) into bytes.
fn separable(
    px: &mut [u8],
    row_len: usize,
    channels: usize,
    kernel: &[u32],
    (above, below): (&[u8], &[u8]),
    scratch: &mut Scratch,
    mut finish: impl FnMut(&mut [u8], &[u32]),
) {
    // Rows are numbered over `above`, `px` and `below` together; the edge rows of that span are
    // repeated outward. Without halo rows that is the image's own edge.
    let height = px.len() / row_len;
    let top = above.len() / row_len;
    let span = top + height + below.len() / row_len;
    let radius = kernel.len() / 2;
    let ring_rows = 2 * radius + 1;
    let mut ring = std::mem::take(&mut scratch.ring);
    ring.resize(ring_rows * row_len, 0);
    let mut column_acc = std::mem::take(&mut scratch.column_acc);
    column_acc.resize(row_len, 0);
    let mut blurred_rows = 0; // rows [0, blurred_rows) of the span are blurred horizontally
    for y in 0..height {
        let needed = (top + y + radius + 1).min(span);
        while blurred_rows < needed {
            let r = blurred_rows;
            let slot = r % ring_rows;
            let source = if r < top {
                &above[r * row_len..(r + 1) * row_len]
            } else if r < top + height {
                &px[(r - top) * row_len..(r - top + 1) * row_len]
            } else {
                &below[(r - top - height) * row_len..(r - top - height + 1) * row_len]
            };
            blur_row(
                source,
                &mut ring[slot * row_len..(slot + 1) * row_len],
                channels,
                kernel,
                &mut scratch.padded,
                &mut scratch.acc,
            );
            blurred_rows += 1;
        }
        column_acc.fill(32768);
        for (k, &weight) in kernel.iter().enumerate() {
            let sy = (top + y + k).saturating_sub(radius).min(span - 1);
            let slot = sy % ring_rows;
            multiply_add(
                &mut column_acc,
                &ring[slot * row_len..(slot + 1) * row_len],
                weight,
            );
        }
        finish(&mut px[y * row_len..(y + 1) * row_len], &column_acc);
    }
    scratch.ring = ring;
    scratch.column_acc = column_acc;
}

fn blur(
    px: &mut [u8],
    row_len: usize,
    channels: usize,
    kernel: &[u32],
    halo: (&[u8], &[u8]),
    scratch: &mut Scratch,
) {
    separable(px, row_len, channels, kernel, halo, scratch, narrow);
}

fn sharpen(
    px: &mut [u8],
    row_len: usize,
    channels: usize,
    kernel: &[u32],
    amount_256: i32,
    halo: (&[u8], &[u8]),
    scratch: &mut Scratch,
) {
    separable(px, row_len, channels, kernel, halo, scratch, |row, acc| {
        unsharp_row(row, acc, channels, amount_256)
    });
}

/// One row of the unsharp mask: `row` is the original, `acc` its blur in fixed point; alpha (a
/// 4th channel) is left alone. Chosen at run time as [`multiply_add`].
#[multiversion(targets("x86_64+avx2", "x86_64+sse4.1"))]
fn unsharp_row(row: &mut [u8], acc: &[u32], channels: usize, amount_256: i32) {
    let sharpen = |p: &mut u8, b: u32| {
        let v = *p as i32;
        let d = v - (b >> 16) as i32;
        *p = (v + ((amount_256 * d + 128) >> 8)).clamp(0, 255) as u8;
    };
    if channels == 4 {
        for (p, b) in row.chunks_exact_mut(4).zip(acc.chunks_exact(4)) {
            for ch in 0..3 {
                sharpen(&mut p[ch], b[ch]);
            }
        }
    } else {
        // Every byte is a colour value: one flat loop, which the compiler vectorises.
        for (p, &b) in row.iter_mut().zip(acc) {
            sharpen(p, b);
        }
    }
}

fn flip_h(mut img: ArrayViewMut3<'_, u8>) {
    let w = img.dim().1;
    for mut row in img.outer_iter_mut() {
        let (mut left, right) = row.view_mut().split_at(Axis(0), w / 2);
        let mut right = right.slice_move(s![..;-1, ..]);
        let right = right.slice_mut(s![..w / 2, ..]);
        Zip::from(&mut left).and(right).for_each(std::mem::swap);
    }
}

fn flip_v(img: ArrayViewMut3<'_, u8>) {
    let h = img.dim().0;
    let (top, bottom) = img.split_at(Axis(0), h / 2);
    let bottom = bottom.slice_move(s![..;-1, .., ..]);
    let bottom = bottom.slice_move(s![..h / 2, .., ..]);
    Zip::from(top).and(bottom).for_each(std::mem::swap);
}

/// A dataset-wide op: it needs statistics over every image before any image can be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetOp {
    /// `normalize`: v' = clamp(round(128 + 48 × (v − mean_c) / std_c), 0, 255) for each colour
    /// channel c, with the mean and population standard deviation of channel c over every pixel
    /// of every image; a channel with std 0 becomes 128.
    Normalize,
    /// `normalize:float`: the same statistics, stored in the block; the u8 pixels are left as
    /// they are and `export` writes (v − mean_c) / std_c as float32.
    NormalizeFloat,
    /// `equalize:dataset`: one histogram per colour channel over the whole dataset;
    /// v' = round(255 × (cdf_c(v) − cdf_c,min) / (n − cdf_c,min)), with cdf_c,min the count of
    /// the darkest level present (a channel with one level is left alone).
    Equalize,
}

/// An `apply` op list split at its dataset-wide op: `before` runs in pass 1 (which also gathers
/// the statistics), `after` runs in pass 2 once the dataset-wide op has mapped the image.
pub struct ApplyStages {
    pub before: OpChain,
    pub dataset: Option<DatasetOp>,
    pub after: OpChain,
}

impl ApplyStages {
    /// 2 when a dataset-wide op maps the pixels, else 1.
    pub fn passes(&self) -> u32 {
        match self.dataset {
            Some(DatasetOp::Normalize) | Some(DatasetOp::Equalize) => 2,
            _ => 1,
        }
    }
}

fn dataset_op(item: &str) -> Option<DatasetOp> {
    match item.trim().to_ascii_lowercase().as_str() {
        "normalize" | "normalise" => Some(DatasetOp::Normalize),
        "normalize:float" | "normalise:float" => Some(DatasetOp::NormalizeFloat),
        "equalize:dataset" | "equalise:dataset" => Some(DatasetOp::Equalize),
        _ => None,
    }
}

/// Parses an `apply` op list, which may hold one dataset-wide op (see [`DatasetOp`]).
pub fn parse_apply(list: &str) -> Result<ApplyStages, OpError> {
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
    let at: Vec<usize> = (0..items.len())
        .filter(|&n| dataset_op(items[n]).is_some())
        .collect();
    match at.as_slice() {
        [] => Ok(ApplyStages {
            before: OpChain::parse(list)?,
            dataset: None,
            after: OpChain::new(Vec::new()),
        }),
        [n] => {
            let op = dataset_op(items[*n]);
            let after = OpChain::parse(&items[n + 1..].join(","))?;
            if op == Some(DatasetOp::NormalizeFloat) && !after.ops().is_empty() {
                return Err(OpError::FloatLast);
            }
            Ok(ApplyStages {
                before: OpChain::parse(&items[..*n].join(","))?,
                dataset: op,
                after,
            })
        }
        _ => Err(OpError::NormalizeTwice),
    }
}

/// Per colour channel of one image: the histogram of its values (256 counts), from which the
/// dataset's sums, means, deviations and equalisation tables all follow.
pub fn add_histograms(px: &[u8], channels: usize, hist: &mut [[u64; 256]; 4]) {
    let colour = if channels == 4 { 3 } else { channels };
    for p in px.chunks_exact(channels) {
        for c in 0..colour {
            hist[c][p[c] as usize] += 1;
        }
    }
}

/// Each colour channel's mean and population standard deviation, from its histogram.
pub fn mean_and_deviation(hist: &[u64; 256]) -> (f64, f64) {
    let n: u64 = hist.iter().sum();
    let n = n.max(1) as f64;
    let sum: f64 = hist
        .iter()
        .enumerate()
        .map(|(v, &k)| v as f64 * k as f64)
        .sum();
    let sum_sq: f64 = hist
        .iter()
        .enumerate()
        .map(|(v, &k)| (v * v) as f64 * k as f64)
        .sum();
    let mean = sum / n;
    (mean, (sum_sq / n - mean * mean).max(0.0).sqrt())
}

/// Equalisation tables from the dataset's histograms, one per channel (see [`DatasetOp::Equalize`]).
pub fn equalize_luts(hist: &[u64], colour: usize) -> Vec<[u8; 256]> {
    (0..colour)
        .map(|c| {
            let h = &hist[c * 256..(c + 1) * 256];
            let total: u64 = h.iter().sum();
            let cdf_min = h.iter().copied().find(|&n| n > 0).unwrap_or(0);
            let mut lut = [0u8; 256];
            let mut cdf = 0u64;
            for (v, out) in lut.iter_mut().enumerate() {
                cdf += h[v];
                *out = if total == cdf_min {
                    v as u8
                } else {
                    (255.0 * cdf.saturating_sub(cdf_min) as f64 / (total - cdf_min) as f64).round()
                        as u8
                };
            }
            lut
        })
        .collect()
}

/// The `normalize` table of one channel (see [`DatasetOp::Normalize`]).
pub fn normalize_lut(mean: f64, std: f64) -> [u8; 256] {
    let mut lut = [128u8; 256];
    if std > 0.0 {
        for (v, out) in lut.iter_mut().enumerate() {
            *out = (128.0 + 48.0 * (v as f64 - mean) / std)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    lut
}

/// Applies `luts[c]` to channel c of every pixel (channels beyond the tables are left alone).
pub fn apply_channel_luts(px: &mut [u8], channels: usize, luts: &[[u8; 256]]) {
    for p in px.chunks_exact_mut(channels) {
        for (v, lut) in p.iter_mut().zip(luts) {
            *v = lut[*v as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    fn run(ops: &str, img: &mut Array3<u8>) {
        OpChain::parse(ops)
            .unwrap()
            .apply(img.view_mut(), &mut Scratch::default());
    }

    /// Row bands on several threads give the single-threaded result byte for byte: every op,
    /// gray, RGB and RGBA, band edges anywhere (heights not a multiple of the band count, blur
    /// radii up to 9 rows, images too short to split).
    #[test]
    fn row_bands_on_threads_equal_one_pass() {
        let chains = [
            "invert,contrast:1.4",
            "blur:1",
            "blur:3",
            "sharpen:1.5",
            "flip-h,blur:2,flip-v",
            "grayscale,blur:2,threshold:120",
            "brightness:1.2,sharpen,grayscale",
        ];
        let mut state = 0x9e37_79b9u32;
        for (h, w, c) in [
            (300usize, 37usize, 3usize),
            (257, 20, 1),
            (131, 9, 4),
            (100, 16, 3),
        ] {
            let original = Array3::from_shape_fn((h, w, c), |(y, x, ch)| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                ((x * 7 + y * 3 + ch * 50) as u32 ^ (state & 63)) as u8
            });
            for chain in chains {
                let chain = OpChain::parse(chain).unwrap();
                let mut one = original.clone();
                chain.apply(one.view_mut(), &mut Scratch::default());
                for threads in [2, 3, 5] {
                    let mut scratch = Scratch::default();
                    scratch.set_threads(threads);
                    let mut many = original.clone();
                    chain.apply(many.view_mut(), &mut scratch);
                    assert!(
                        one == many,
                        "{chain:?} on {h}x{w}x{c} with {threads} threads"
                    );
                }
            }
        }
    }

    /// A thread budget is asked before each banded step, and a budget that grows between steps
    /// (a worker finishing mid-image) still gives the one-pass result.
    #[test]
    fn thread_budget_is_asked_per_step() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let original = Array3::from_shape_fn((400, 50, 3), |(y, x, c)| (x * 5 + y * 3 + c) as u8);
        let chain = OpChain::parse("invert,blur:2,flip-h,sharpen").unwrap();
        let mut one = original.clone();
        chain.apply(one.view_mut(), &mut Scratch::default());
        let asked = AtomicUsize::new(0);
        let budget = || asked.fetch_add(1, Ordering::Relaxed) + 1;
        let mut scratch = Scratch::default();
        scratch.set_thread_budget(&budget);
        let mut many = original.clone();
        chain.apply(many.view_mut(), &mut scratch);
        assert!(one == many);
        assert_eq!(asked.load(Ordering::Relaxed), chain.passes());
    }

    #[test]
    fn grayscale_matches_hand_computed_luma() {
        // (299*200 + 587*100 + 114*50 + 500) / 1000 = (59800 + 58700 + 5700 + 500) / 1000 = 124
        // (299*255 + 587*0 + 114*0 + 500) / 1000 = 76745 / 1000 = 76
        // (299*10 + 587*20 + 114*30 + 500) / 1000 = (2990 + 11740 + 3420 + 500) / 1000 = 18
        let mut img =
            Array3::from_shape_vec((1, 3, 3), vec![200, 100, 50, 255, 0, 0, 10, 20, 30]).unwrap();
        run("grayscale", &mut img);
        assert_eq!(
            img.into_raw_vec_and_offset().0,
            vec![124, 124, 124, 76, 76, 76, 18, 18, 18]
        );
    }

    #[test]
    fn grayscale_keeps_alpha() {
        let mut img = Array3::from_shape_vec((1, 1, 4), vec![0, 255, 0, 77]).unwrap();
        run("grayscale", &mut img);
        // 587*255 + 500 = 150185 -> 150
        assert_eq!(img.into_raw_vec_and_offset().0, vec![150, 150, 150, 77]);
    }

    #[test]
    fn invert_is_255_minus_v() {
        let mut img = Array3::from_shape_vec((1, 2, 3), vec![0, 1, 128, 200, 254, 255]).unwrap();
        run("invert", &mut img);
        assert_eq!(
            img.into_raw_vec_and_offset().0,
            vec![255, 254, 127, 55, 1, 0]
        );
    }

    #[test]
    fn point_ops_match_formulas_and_fold_into_one_pass() {
        let chain = OpChain::parse("scale:2,contrast:1.5,threshold:100,invert").unwrap();
        assert_eq!(chain.passes(), 1);
        let mut img = Array3::from_shape_vec((1, 1, 3), vec![10, 50, 90]).unwrap();
        chain.apply(img.view_mut(), &mut Scratch::default());
        // scale:2 -> 20, 100, 180; contrast 1.5 -> (20-128)*1.5+128 = -34 -> 0, 86, 206;
        // threshold 100 -> 0, 0, 255; invert -> 255, 255, 0
        assert_eq!(img.into_raw_vec_and_offset().0, vec![255, 255, 0]);
    }

    #[test]
    fn scale_saturates_and_gamma_matches_formula() {
        let mut img = Array3::from_shape_vec((1, 1, 3), vec![100, 128, 200]).unwrap();
        run("scale:2", &mut img);
        assert_eq!(img.as_slice().unwrap(), &[200, 255, 255]);
        let mut img = Array3::from_shape_vec((1, 1, 3), vec![0, 64, 255]).unwrap();
        run("gamma:2", &mut img);
        // 255 * (64/255)^(1/2) = 127.75... -> 128
        assert_eq!(img.as_slice().unwrap(), &[0, 128, 255]);
    }

    #[test]
    fn blur_of_constant_image_is_constant() {
        for sigma in ["0.5", "2", "7.5"] {
            let mut img = Array3::from_elem((23, 17, 3), 173u8);
            run(&format!("blur:{sigma}"), &mut img);
            assert!(img.iter().all(|&v| v == 173), "sigma {sigma}");
        }
    }

    #[test]
    fn blur_matches_float_reference_within_one() {
        // An independent 2-D convolution in f64 with clamped borders.
        let (h, w, c) = (19, 23, 3);
        let img = Array3::from_shape_fn((h, w, c), |(y, x, ch)| {
            ((x * 37 + y * 91 + ch * 53) % 256) as u8
        });
        let sigma = 1.7f64;
        let r = (3.0 * sigma).ceil() as i64;
        let g: Vec<f64> = (-r..=r)
            .map(|k| (-(k * k) as f64 / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f64 = g.iter().sum();
        let mut expected = Array3::<f64>::zeros((h, w, c));
        for y in 0..h as i64 {
            for x in 0..w as i64 {
                for ch in 0..c {
                    let mut s = 0.0;
                    for (i, gy) in g.iter().enumerate() {
                        for (j, gx) in g.iter().enumerate() {
                            let sy = (y + i as i64 - r).clamp(0, h as i64 - 1) as usize;
                            let sx = (x + j as i64 - r).clamp(0, w as i64 - 1) as usize;
                            s += gy * gx * img[[sy, sx, ch]] as f64;
                        }
                    }
                    expected[[y as usize, x as usize, ch]] = s / (total * total);
                }
            }
        }
        let mut got = img.clone();
        run("blur:1.7", &mut got);
        for (a, b) in got.iter().zip(expected.iter()) {
            assert!((*a as f64 - b).abs() <= 1.0, "{a} vs {b}");
        }
    }

    #[test]
    fn flips_twice_are_identity_and_once_mirror() {
        let img = Array3::from_shape_fn((5, 7, 3), |(y, x, c)| (y * 50 + x * 7 + c) as u8);
        for op in ["flip-h", "flip-v"] {
            let mut once = img.clone();
            run(op, &mut once);
            assert_ne!(once, img);
            let mut twice = once.clone();
            run(op, &mut twice);
            assert_eq!(twice, img, "{op}");
        }
        let mut h = img.clone();
        run("flip-h", &mut h);
        assert_eq!(h[[2, 0, 1]], img[[2, 6, 1]]);
        let mut v = img.clone();
        run("flip-v", &mut v);
        assert_eq!(v[[0, 3, 2]], img[[4, 3, 2]]);
    }

    #[test]
    fn sharpen_keeps_flat_areas_and_raises_edges() {
        let mut img = Array3::from_shape_fn((9, 9, 1), |(_, x, _)| if x < 4 { 100 } else { 200 });
        run("sharpen:1", &mut img);
        assert_eq!(img[[4, 0, 0]], 100);
        assert_eq!(img[[4, 8, 0]], 200);
        assert!(img[[4, 3, 0]] < 100, "dark side of the edge gets darker");
        assert!(img[[4, 4, 0]] > 200, "bright side gets brighter");
    }

    #[test]
    fn gray_plane_path_equals_the_same_ops_on_an_expanded_gray_image() {
        let img = Array3::from_shape_fn((37, 29, 3), |(y, x, c)| {
            ((x * 13 + y * 7 + c * 61) % 251) as u8
        });
        let mut fast = img.clone();
        let chain =
            OpChain::parse("grayscale,blur:1.5,sharpen:0.7,flip-h,gamma:1.4,flip-v").unwrap();
        assert_eq!(
            chain.run(fast.view_mut(), &mut Scratch::default()),
            Layout::GrayPlane
        );
        expand_gray_plane(fast.view_mut());
        // Reference: luma by hand into all three channels, then the rest of the chain on the
        // full 3-channel image (no grayscale step, so no plane).
        let mut slow = Array3::from_shape_fn((37, 29, 3), |(y, x, _)| {
            let (r, g, b) = (
                img[[y, x, 0]] as u32,
                img[[y, x, 1]] as u32,
                img[[y, x, 2]] as u32,
            );
            ((299 * r + 587 * g + 114 * b + 500) / 1000) as u8
        });
        let rest = OpChain::parse("blur:1.5,sharpen:0.7,flip-h,gamma:1.4,flip-v").unwrap();
        assert_eq!(
            rest.run(slow.view_mut(), &mut Scratch::default()),
            Layout::Full
        );
        assert_eq!(fast, slow);
    }

    #[test]
    fn kernel_sums_to_one_in_fixed_point() {
        for sigma in [0.3, 1.0, 2.0, 10.0] {
            let k = gaussian_kernel(sigma);
            assert_eq!(k.iter().sum::<u32>(), 65536);
            assert_eq!(k.len(), 2 * (3.0f32 * sigma).ceil().max(1.0) as usize + 1);
        }
    }

    #[test]
    fn parse_errors_name_the_problem() {
        assert_eq!(parse_ops("blurr:2"), Err(OpError::Unknown("blurr".into())));
        assert!(matches!(parse_ops("blur"), Err(OpError::MissingArg { .. })));
        assert!(matches!(parse_ops("blur:abc"), Err(OpError::BadArg { .. })));
        assert!(matches!(parse_ops("blur:-1"), Err(OpError::BadArg { .. })));
        assert!(matches!(
            parse_ops("threshold:300"),
            Err(OpError::BadArg { .. })
        ));
        assert!(matches!(
            parse_ops("invert:3"),
            Err(OpError::UnexpectedArg { .. })
        ));
        assert!(matches!(
            parse_ops("invert,,blur:1"),
            Err(OpError::Empty(_))
        ));
        assert_eq!(
            parse_ops("grayscale, blur:2").unwrap(),
            vec![Op::Grayscale, Op::Blur(2.0)]
        );
    }
}
