//! The op chain compiled for execution ([`OpChain`]): point ops folded into lookup tables, each
//! step run on the slot in place (on row bands where it can), and the gray plane a 3-channel
//! image is packed into once it is made gray ([`Layout`], [`expand_gray_plane`]).
//!
//! This file decides what runs in which order; it must never hold a kernel's arithmetic (that is
//! in `point`, `blur` and `geometry`) nor allocate per pixel.

use ndarray::ArrayViewMut3;

use super::bands::banded;
use super::blur::{blur, sharpen};
use super::geometry::{flip_h, flip_v};
use super::point::{apply_lut, grayscale, grayscale_to_plane, point_lut};
use super::{gaussian_kernel, parse_ops, Op, OpError, Scratch};

/// The op chain compiled for execution: point ops folded into lookup tables.
#[derive(Clone, Debug, Default)]
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

fn img_slice<'a>(img: &'a mut ArrayViewMut3<'_, u8>) -> &'a mut [u8] {
    img.as_slice_mut()
        .expect("slots are viewed in standard layout")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::Array3;

    /// Every op runs on each layout a slot can have (1 to 4 channels); the ops that change
    /// values leave alpha alone, and grayscale leaves a gray image as it is.
    #[test]
    fn every_op_handles_every_channel_count_and_keeps_alpha() {
        let ops = [
            "invert",
            "grayscale",
            "brightness:1.3",
            "scale:0.5",
            "contrast:1.5",
            "gamma:2.2",
            "threshold:100",
            "blur:1.5",
            "sharpen:0.8",
            "flip-h",
            "flip-v",
        ];
        for c in 1..=4usize {
            let img = Array3::from_shape_fn((9, 11, c), |(y, x, ch)| {
                ((x * 23 + y * 11 + ch * 71) % 256) as u8
            });
            for op in ops {
                let mut out = img.clone();
                OpChain::parse(op)
                    .unwrap()
                    .apply(out.view_mut(), &mut Scratch::default());
                assert_eq!(out.dim(), img.dim(), "{op} on {c} channels");
                let moves = op.starts_with("flip") || op.starts_with("blur");
                if (c == 2 || c == 4) && !moves {
                    let alpha = |a: &Array3<u8>| a.index_axis(ndarray::Axis(2), c - 1).to_owned();
                    assert_eq!(
                        alpha(&out),
                        alpha(&img),
                        "{op} changed alpha on {c} channels"
                    );
                }
                if c <= 2 && op == "grayscale" {
                    assert_eq!(out, img, "grayscale of a gray image");
                }
                if !moves && op != "grayscale" {
                    assert_ne!(out, img, "{op} did nothing on {c} channels");
                }
            }
        }
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
}
