//! The op chain compiled for execution ([`OpChain`]): point ops folded into lookup tables, each
//! step run on the slot in place (on row bands where it can), and the gray plane a 3-channel
//! image is packed into once it is made gray ([`Layout`], [`expand_gray_plane`]).
//!
//! A crop, rotate or resize makes an image of another shape: it is written into one of the
//! scratch's two frames, and the rest of the chain runs there ([`Ran`] says where the result is).
//!
//! This file decides what runs in which order; it must never hold a kernel's arithmetic (that is
//! in `point`, `blur`, `geometry` and the resampler) nor allocate per pixel.

use ndarray::ArrayViewMut3;

use super::bands::banded;
use super::blur::{blur, sharpen};
use super::geometry::{crop, flip_h, flip_v, rotate, CropBox};
use super::point::{apply_lut, grayscale, grayscale_to_plane, point_lut};
use super::{gaussian_kernel, parse_ops, Op, OpError, Scratch};
use crate::resize::{resample, Geometry};

/// The op chain compiled for execution: point ops folded into lookup tables.
#[derive(Clone, Debug)]
pub struct OpChain {
    ops: Vec<Op>,
    steps: Vec<Step>,
    /// The most pixels an image a crop, rotate or resize makes may have.
    max_pixels: u64,
}

impl Default for OpChain {
    fn default() -> OpChain {
        OpChain::new(Vec::new())
    }
}

/// Where a chain left its result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ran {
    pub layout: Layout,
    /// The result's height and width: the slot's, unless a crop, rotate or resize changed them.
    pub height: usize,
    pub width: usize,
    /// None: in the slot. `Some(k)`: in [`Scratch::frame`] `k`, which holds
    /// `height x width x` the slot's channels bytes (a gray plane in the first `height x width`).
    pub frame: Option<usize>,
}

#[derive(Clone, Debug)]
enum Step {
    Lut(Box<[u8; 256]>),
    Grayscale,
    Blur(Vec<u32>),
    Sharpen { kernel: Vec<u32>, amount_256: i32 },
    FlipH,
    FlipV,
    Crop(CropBox),
    Rotate(u16),
    Resize(Geometry),
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
                Op::Crop(b) => Step::Crop(b),
                Op::Rotate(d) => Step::Rotate(d),
                Op::Resize(g) => Step::Resize(g),
                _ => unreachable!("point ops are handled above"),
            });
        }
        OpChain {
            ops,
            steps,
            max_pixels: u64::MAX,
        }
    }

    /// Refuses, from now on, an image a crop, rotate or resize would make of more than
    /// `max_pixels` pixels (`--max-pixels`: `resize:65535x65535` must not take 12 GiB).
    pub fn limit_pixels(&mut self, max_pixels: u64) {
        self.max_pixels = max_pixels;
    }

    /// Whether an op of the chain makes an image of another shape (see [`Op::changes_shape`]).
    pub fn changes_shape(&self) -> bool {
        self.ops.iter().any(Op::changes_shape)
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

    /// Runs a chain that keeps the shape ([`OpChain::changes_shape`] is false: `apply` on a
    /// dataset refuses any other) in place on `img`, an `(H, W, C)` view in standard layout,
    /// and leaves the result there in that layout.
    pub fn apply(&self, mut img: ArrayViewMut3<'_, u8>, scratch: &mut Scratch) {
        assert!(
            !self.changes_shape(),
            "apply runs shape-keeping chains only"
        );
        let ran = self.run(img.view_mut(), scratch);
        if ran.expect("a shape-keeping chain cannot fail").layout == Layout::GrayPlane {
            expand_gray_plane(img);
        }
    }

    /// Runs the chain on `img`, in place until a crop, rotate or resize makes an image of
    /// another shape in a frame of `scratch` (see [`Ran`]). Once a 3-channel image has been made
    /// gray, the rest of the chain runs on one channel: the luma is packed into the first H x W
    /// bytes (a gray plane) and the layout is [`Layout::GrayPlane`]; the caller may encode that
    /// plane as a one-channel image, and calls [`expand_gray_plane`] if it needs `(H, W, 3)`
    /// again. Fails, naming the op, when a crop lies outside the image or an image made would
    /// be over the pixel limit.
    pub fn run(&self, img: ArrayViewMut3<'_, u8>, scratch: &mut Scratch) -> Result<Ran, String> {
        let channels = img.dim().2;
        self.run_steps(img, &self.steps, Layout::Full, channels, scratch)
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
    ) -> Result<Ran, String> {
        assert!(self.starts_with_grayscale() && plane.dim().2 == 1);
        // The plane is a 3-channel slot's: a frame made from it is sized for 3 channels too.
        self.run_steps(plane, &self.steps[1..], Layout::GrayPlane, 3, scratch)
    }

    fn run_steps(
        &self,
        mut img: ArrayViewMut3<'_, u8>,
        steps: &[Step],
        mut layout: Layout,
        channels: usize,
        scratch: &mut Scratch,
    ) -> Result<Ran, String> {
        let (mut h, mut w, c) = img.dim();
        let mut frame = None;
        if h == 0 || w == 0 {
            return Ok(Ran {
                layout,
                height: h,
                width: w,
                frame,
            });
        }
        // Out of `scratch` while the chain runs, so a step can hold a frame and the scratch.
        let mut frames = std::mem::take(&mut scratch.frames);
        let mut outcome = Ok(());
        for step in steps {
            let px = match frame {
                None => img_slice(&mut img),
                Some(k) => &mut frames[k][..],
            };
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
                Step::Crop(_) | Step::Rotate(_) | Step::Resize(_) => {
                    // Into the frame the image is not in; the other holds it, or the slot does.
                    let into = frame.map_or(0, |k| 1 - k);
                    let size = h * w * c;
                    let [first, second] = &mut frames;
                    let (src, dst): (&[u8], &mut Vec<u8>) = match frame {
                        None => (&img_slice(&mut img)[..size], first),
                        Some(0) => (&first[..size], second),
                        Some(_) => (&second[..size], first),
                    };
                    match self.reshape(step, src, (h, w, c), channels, dst) {
                        Ok((height, width)) => (h, w, frame) = (height, width, Some(into)),
                        Err(reason) => {
                            outcome = Err(reason);
                            break;
                        }
                    }
                }
            }
        }
        scratch.frames = frames;
        outcome.map(|()| Ran {
            layout,
            height: h,
            width: w,
            frame,
        })
    }

    /// Runs a crop, rotate or resize `step` on `src` (`h x w x c`), into `dst`, sized for
    /// `channels` a pixel (the slot's; a gray plane fills its first `h' x w'` bytes). Gives the
    /// new `(height, width)`.
    fn reshape(
        &self,
        step: &Step,
        src: &[u8],
        (h, w, c): (usize, usize, usize),
        channels: usize,
        dst: &mut Vec<u8>,
    ) -> Result<(usize, usize), String> {
        let (height, width) = match step {
            Step::Crop(b) => match b.within(w, h) {
                Some((_, _, cw, ch)) => (ch, cw),
                None => return Err(format!("{b} lies outside the {w}x{h} image")),
            },
            Step::Rotate(90 | 270) => (w, h),
            Step::Rotate(_) => (h, w),
            Step::Resize(g) => {
                let (tw, th) = g.slot_shape(w as u32, h as u32);
                (th as usize, tw as usize)
            }
            _ => unreachable!("only crop, rotate and resize reshape"),
        };
        if (height as u64).saturating_mul(width as u64) > self.max_pixels {
            return Err(format!(
                "{} would make a {width}x{height} image, over the limit of {} pixels (--max-pixels)",
                self.op_of(step),
                self.max_pixels
            ));
        }
        dst.clear();
        dst.resize(height * width * channels, 0);
        let out = &mut dst[..height * width * c];
        match step {
            Step::Crop(b) => crop(src, w, c, b.within(w, h).expect("checked above"), out),
            Step::Rotate(degrees) => rotate(src, (h, w), c, *degrees, out),
            Step::Resize(g) => {
                let (from, to) = ((w as u32, h as u32), (width as u32, height as u32));
                resample(src, from, c as u32, out, to, g.fit)
                    .map_err(|e| format!("{}: {e}", self.op_of(step)))?
            }
            _ => unreachable!("only crop, rotate and resize reshape"),
        }
        Ok((height, width))
    }

    /// The op a reshaping step came from, as the user wrote it.
    fn op_of(&self, step: &Step) -> String {
        match step {
            Step::Crop(b) => b.to_string(),
            Step::Rotate(d) => Op::Rotate(*d).to_string(),
            Step::Resize(g) => Op::Resize(*g).to_string(),
            _ => String::new(),
        }
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
            chain
                .run(fast.view_mut(), &mut Scratch::default())
                .map(|r| r.layout),
            Ok(Layout::GrayPlane)
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
            rest.run(slow.view_mut(), &mut Scratch::default())
                .map(|r| r.layout),
            Ok(Layout::Full)
        );
        assert_eq!(fast, slow);
    }
}
