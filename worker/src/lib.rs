//! What runs inside a shmpipe worker process, and the block layout both sides share.
//!
//! - [`block`]: the shared-memory block: layout, create, attach, claims. Its `unsafe` is there;
//!   the only other `unsafe` of the crate is the C codec's, in [`jpeg::libjpeg`].
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
// Safe Rust everywhere but in the two modules that must not be: the block (shared memory) and
// the C codec's interface. The compiler holds every other module to it.
#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod block;
pub mod codec;
pub mod jpeg;
pub mod metadata;
pub mod ops;
pub mod registry;
pub mod resize;
pub mod worker;
