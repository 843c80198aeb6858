//! The block's error type: what creating, opening, attaching or validating a block can fail with.
//!
//! Every error names the block it concerns; this file must never decide what to do about one.

use std::io;

use super::{MAX_NAME_LEN, NAME_PREFIX};

/// Errors of creating, opening, attaching or validating a block. Each names the block.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("block name {0:?} is invalid: it must start with {NAME_PREFIX:?}, be at most {MAX_NAME_LEN} bytes, and hold only [A-Za-z0-9._-]")]
    BadName(String),
    #[error("not enough shared memory for block {name}: {needed} bytes needed, {free} bytes free in {dir}")]
    NoSpace {
        name: String,
        needed: u64,
        free: u64,
        dir: String,
    },
    #[error("failed to {what} block {name}")]
    Io {
        what: &'static str,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("block {name} is not valid: {reason}")]
    Invalid { name: String, reason: String },
}

pub(super) fn io_err<'a>(
    what: &'static str,
    name: &'a str,
) -> impl FnOnce(io::Error) -> BlockError + 'a {
    move |source| BlockError::Io {
        what,
        name: name.to_string(),
        source,
    }
}
