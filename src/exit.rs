//! The process exit codes of `shmpipe`, in one place.

/// Every image succeeded.
pub const OK: i32 = 0;
/// The run finished, but some images failed (or `--strict` stopped it at the first failure).
pub const SOME_FAILED: i32 = 1;
/// Usage or setup error: bad flags, missing folder, no room for the block. Nothing was created.
pub const USAGE: i32 = 2;
/// Stopped by SIGHUP (128 + 1).
pub const SIGHUP: i32 = 129;
/// Stopped by SIGINT (128 + 2).
pub const SIGINT: i32 = 130;
/// Stopped by SIGTERM (128 + 15).
pub const SIGTERM: i32 = 143;
