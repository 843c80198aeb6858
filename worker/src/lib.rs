//! What runs inside a shmpipe worker process: attach to the block (the `shmpipe-block` crate),
//! claim, decode, transform, encode.
//!
//! - [`codec`]: header probing, decoding straight into a slot, encoding through a rename.
//! - [`jpeg`]: every JPEG decode and encode, through libjpeg-turbo, whose warnings are the
//!   verdict on a damaged file (refused, or kept when asked to).
//! - [`metadata`]: what an output carries from its source: ICC profile, EXIF, comments.
//! - [`resize`]: what `--resize` and `--fit` mean, and decoding an image resized into its slot.
//! - [`ops`]: the op chain and its in-place kernels on `ndarray` views.
//! - [`worker`]: the worker's main loop: attach by name, claim, decode, transform, encode.
//!
//! The coordinator (the `shmpipe` binary) re-executes itself in a hidden `worker` mode that calls
//! [`worker::run`], so a plain `cargo run` needs no second binary.

#![deny(unsafe_op_in_unsafe_fn)]
// Safe Rust everywhere but in the C codec's interface (`jpeg::libjpeg`, the one named exception;
// the block's `unsafe` is in its own crate). The compiler holds every other module to it.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod codec;
pub mod hooks;
pub mod jpeg;
pub mod metadata;
pub mod ops;
pub mod resize;
pub mod worker;
