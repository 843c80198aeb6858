//! Where a block's name lives (POSIX shared memory or a file in a `--backing` folder), and the
//! names themselves: checking one, making a fresh one.
//!
//! This file opens and unlinks names; it must never map a block or read its contents.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use rustix::fs::{Mode, OFlags};
use rustix::shm;

use super::BlockError;

/// Every block name starts with this, so `ls` and `clean` can find ours.
pub const NAME_PREFIX: &str = "shmpipe-";
/// macOS limits POSIX shm names to 31 bytes including the leading slash.
pub const MAX_NAME_LEN: usize = 30;
/// Where a block lives when it is not in the default POSIX shm directory.
pub const DEFAULT_SHM_DIR: &str = "/dev/shm";

/// Checks a block name: our prefix, short enough for macOS, a portable character set.
pub fn validate_name(name: &str) -> Result<(), BlockError> {
    let ok = name.starts_with(NAME_PREFIX)
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(BlockError::BadName(name.to_string()))
    }
}

/// A fresh name: prefix, creator pid, 32 random bits. At most 8 + 10 + 1 + 8 = 27 bytes.
pub fn fresh_name() -> String {
    let mut random = [0u8; 4];
    // getrandom on Linux cannot fail for 4 bytes once the pool is initialised; fall back to the
    // clock rather than abort, uniqueness is still enforced by O_EXCL.
    let bits = match rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty()) {
        Ok(_) => u32::from_le_bytes(random),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0),
    };
    format!("{NAME_PREFIX}{}-{bits:08x}", std::process::id())
}

/// Where a block's name lives: POSIX shared memory, or a regular file in a directory of the
/// user's choice (`--backing DIR`) for hosts whose /dev/shm is small.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backing {
    Shm,
    Dir(PathBuf),
}

impl Backing {
    /// The directory whose free space bounds the block.
    pub fn dir(&self) -> PathBuf {
        match self {
            Backing::Shm => PathBuf::from(DEFAULT_SHM_DIR),
            Backing::Dir(d) => d.clone(),
        }
    }

    pub(crate) fn open(&self, name: &str, create: bool) -> io::Result<OwnedFd> {
        let flags = if create {
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR
        } else {
            OFlags::RDWR
        };
        match self {
            Backing::Shm => {
                let shm_flags = shm::OFlags::from_bits_truncate(flags.bits());
                Ok(shm::open(
                    format!("/{name}"),
                    shm_flags,
                    Mode::from_raw_mode(0o600),
                )?)
            }
            Backing::Dir(dir) => Ok(rustix::fs::open(
                dir.join(name),
                flags | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?),
        }
    }

    pub(crate) fn unlink(&self, name: &str) -> io::Result<()> {
        match self {
            Backing::Shm => Ok(shm::unlink(format!("/{name}"))?),
            Backing::Dir(dir) => std::fs::remove_file(dir.join(name)),
        }
    }
}
