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
    #[error("not enough shared memory for block {name}: {} needed, {} free in {dir}", Bytes(*needed), Bytes(*free))]
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

/// A size for people: "512 B", "66.0 MiB", "1.74 GiB" (binary units, three significant
/// figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if value < 10.0 {
            write!(f, "{value:.2} {}", UNITS[unit])
        } else {
            write!(f, "{value:.1} {}", UNITS[unit])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Bytes;

    #[test]
    fn sizes_read_in_binary_units_with_three_figures() {
        assert_eq!(Bytes(0).to_string(), "0 B");
        assert_eq!(Bytes(1023).to_string(), "1023 B");
        assert_eq!(Bytes(1024).to_string(), "1.00 KiB");
        assert_eq!(Bytes(66 << 20).to_string(), "66.0 MiB");
        assert_eq!(Bytes(3_834_455_040).to_string(), "3.57 GiB");
        assert_eq!(Bytes(5 << 40).to_string(), "5.00 TiB");
    }
}
