//! Scratch buffers and row bands on threads: [`Scratch`] holds a worker's reusable buffers and how
//! many threads its chains may use; `banded` runs a step on row bands at once, halo rows copied
//! first, so the result equals one pass over the whole image byte for byte.
//!
//! This file must never let a band write outside its own rows.

/// Reusable buffers, one set per worker, so kernels do not allocate per image.
#[derive(Default)]
pub struct Scratch<'b> {
    /// 2r + 1 horizontally blurred rows.
    pub(super) ring: Vec<u8>,
    pub(super) padded: Vec<u8>,
    pub(super) acc: Vec<u32>,
    pub(super) column_acc: Vec<u32>,
    /// Where each tap's source row starts, for [`super::blur`]'s weighted sums.
    pub(super) starts: Vec<usize>,
    /// The images a crop, rotate or resize makes, turn about (see [`Scratch::frame`]).
    pub(super) frames: [Vec<u8>; 2],
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

    /// The pixels a chain left in frame `k` ([`super::Ran::frame`]): `height x width x
    /// channels` bytes as the chain's result says, the slot's channel count.
    pub fn frame(&mut self, k: usize) -> &mut [u8] {
        &mut self.frames[k]
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
pub(super) fn banded(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::OpChain;
    use ndarray::Array3;

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
}
