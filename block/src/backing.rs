//! Where a block's name lives (POSIX shared memory or a file in a `--backing` folder), and the
//! names themselves: checking one, making a fresh one.
//!
//! This file opens and unlinks names; it must never map a block or read its contents.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
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

    /// Opens (or creates) the block file `name`, never through a symbolic link (`O_NOFOLLOW`:
    /// rustix's `shm::open` does not add it, glibc's does), and only if it is a regular file
    /// owned by this user: anything else in the directory is not ours to lock, read or map.
    pub(crate) fn open(&self, name: &str, create: bool) -> io::Result<OwnedFd> {
        let flags = if create {
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR | OFlags::NOFOLLOW
        } else {
            OFlags::RDWR | OFlags::NOFOLLOW
        };
        let opened = match self {
            Backing::Shm => {
                // shm::OFlags passes bits it does not name (NOFOLLOW) on to open(2).
                let shm_flags = shm::OFlags::from_bits_retain(flags.bits());
                shm::open(format!("/{name}"), shm_flags, Mode::from_raw_mode(0o600))
            }
            Backing::Dir(dir) => rustix::fs::open(
                dir.join(name),
                flags | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ),
        };
        let fd = opened.map_err(|e| match e {
            rustix::io::Errno::LOOP => NotOurs::Symlink.into(),
            e => io::Error::from(e),
        })?;
        check_ours(fd.as_fd())?;
        Ok(fd)
    }

    /// Whether the backing can give a block its name in one step ([`Backing::publish`]): a
    /// folder can, and so can Linux's POSIX shm (a tmpfs folder); macOS's shm names cannot.
    pub(crate) fn can_publish(&self) -> bool {
        matches!(self, Backing::Dir(_)) || cfg!(any(target_os = "linux", target_os = "android"))
    }

    /// Whether a file named `name` exists (ours or not), without opening it.
    pub(crate) fn exists(&self, name: &str) -> bool {
        std::fs::symlink_metadata(self.dir().join(name)).is_ok()
    }

    /// Renames block `staged` to `name`, failing with `AlreadyExists` rather than replacing
    /// anything: `renameat2(RENAME_NOREPLACE)`, or `link` and `unlink` where the filesystem
    /// lacks it. Whoever opens `name` then finds the block whole, with its owner lock held.
    pub(crate) fn publish(&self, staged: &str, name: &str) -> io::Result<()> {
        let dir = self.dir();
        let (from, to) = (dir.join(staged), dir.join(name));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        match rustix::fs::renameat_with(
            rustix::fs::CWD,
            &from,
            rustix::fs::CWD,
            &to,
            rustix::fs::RenameFlags::NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {}
            Err(e) => return Err(e.into()),
        }
        std::fs::hard_link(&from, &to)?;
        std::fs::remove_file(&from)
    }

    pub(crate) fn unlink(&self, name: &str) -> io::Result<()> {
        match self {
            Backing::Shm => Ok(shm::unlink(format!("/{name}"))?),
            Backing::Dir(dir) => std::fs::remove_file(dir.join(name)),
        }
    }
}

/// Why a file with a block's name is not one of our blocks.
#[derive(Debug, thiserror::Error)]
pub enum NotOurs {
    #[error("not ours: a symbolic link (not followed)")]
    Symlink,
    #[error("not ours: not a regular file")]
    NotRegular,
    #[error("not ours: owned by uid {owner}, not by uid {us}")]
    Owner { owner: u32, us: u32 },
}

impl From<NotOurs> for io::Error {
    fn from(e: NotOurs) -> io::Error {
        io::Error::new(io::ErrorKind::PermissionDenied, e)
    }
}

impl NotOurs {
    /// The reason behind an error from [`Backing::open`], when it refused a file not ours.
    pub fn of(e: &io::Error) -> Option<&NotOurs> {
        e.get_ref()?.downcast_ref()
    }
}

/// `fstat` of an open block file: a regular file owned by the effective user, or [`NotOurs`].
fn check_ours(fd: BorrowedFd<'_>) -> io::Result<()> {
    let stat = rustix::fs::fstat(fd)?;
    let us = rustix::process::geteuid().as_raw();
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(NotOurs::NotRegular.into());
    }
    if stat.st_uid != us {
        return Err(NotOurs::Owner {
            owner: stat.st_uid,
            us,
        }
        .into());
    }
    Ok(())
}
