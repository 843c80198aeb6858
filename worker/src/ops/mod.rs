//! The op chain: parsing `--ops`, and the kernels that run on a slot.
//!
//! A slot is an `(H, W, C)` u8 `ndarray` view in standard layout, C = 1, 3 or 4. Every op but
//! crop, rotate and resize keeps the shape and runs in place; those three write the image they
//! make into a frame of the [`Scratch`], where the rest of the chain runs. Colour ops (point ops, grayscale) leave a 4th (alpha) channel unchanged; blur and
//! sharpen filter every channel. Consecutive point ops are folded into one 256-entry lookup table
//! and applied in one pass. This module must never allocate per pixel nor touch anything but the
//! view it is given (and its own scratch buffers).
//!
//! The files, one concern each:
//!
//! - `catalog`: every op as `shmpipe ops` documents it, and "did you mean".
//! - `parse`: [`Op`], [`OpError`], [`parse_ops`]; `apply` lists: [`DatasetOp`], [`ApplyStages`],
//!   [`parse_apply`].
//! - `chain`: [`OpChain`] (ops compiled into steps and run in order), [`Layout`],
//!   [`expand_gray_plane`].
//! - `point`: point ops folded into lookup tables, grayscale.
//! - `blur`: gaussian blur and sharpen, [`gaussian_kernel`], their run-time CPU dispatch.
//! - `geometry`: flips, crops and quarter turns ([`CropBox`]).
//! - `bands`: [`Scratch`] and row bands on threads.
//! - `stats`: histograms and the dataset-wide ops' tables ([`mean_and_deviation`],
//!   [`equalize_luts`], [`normalize_lut`], [`apply_channel_luts`]).

mod bands;
mod blur;
pub mod catalog;
mod chain;
mod geometry;
mod parse;
mod point;
mod stats;

pub use bands::Scratch;
pub use blur::gaussian_kernel;
pub use chain::{expand_gray_plane, Layout, OpChain, Ran};
pub use geometry::CropBox;
pub use parse::{parse_apply, parse_ops, ApplyStages, DatasetOp, Op, OpError};
pub use stats::{
    add_histograms, apply_channel_luts, equalize_luts, mean_and_deviation, normalize_lut,
};

#[cfg(test)]
mod test_support {
    use super::{OpChain, Scratch};
    use ndarray::Array3;

    /// Runs the op list `ops` on `img` in place.
    pub(super) fn run(ops: &str, img: &mut Array3<u8>) {
        OpChain::parse(ops)
            .unwrap()
            .apply(img.view_mut(), &mut Scratch::default());
    }
}
