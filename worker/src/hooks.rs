//! The test hooks: fault injection that the integration tests drive through `SHMPIPE_TEST_*`
//! variables (every duration in milliseconds), read only through [`test_hook`], which gives
//! nothing unless the crate is built with its `test-hooks` feature. Only the tests turn it on
//! (the root package's dev-dependency on this crate), so `cargo build`, `cargo install` and the
//! wheel have no fault hooks.

/// The value of test hook `name` (one of the `SHMPIPE_TEST_*` variables below), in test builds
/// only (the `test-hooks` feature): no environment variable can make a shipped worker crash,
/// stall or stop.
pub fn test_hook(name: &str) -> Option<String> {
    if cfg!(feature = "test-hooks") {
        std::env::var(name).ok()
    } else {
        None
    }
}

/// Test-only fault injection: `SHMPIPE_TEST_CRASH=NAME[:N]` makes a worker abort while it holds
/// the image whose path ends with NAME, as long as that image has seen fewer than N crashes
/// (default 1). Fault tests use it to kill a worker at a chosen image, deterministically.
pub const CRASH_ENV: &str = "SHMPIPE_TEST_CRASH";
/// Test-only: `SHMPIPE_TEST_STALL=NAME[:MS]` makes a worker sleep MS milliseconds (a minute by
/// default),
/// ignoring SIGTERM, once it holds the image whose path ends with NAME and before it touches the
/// slot: a worker stuck in a decoder, for stop tests.
pub const STALL_ENV: &str = "SHMPIPE_TEST_STALL";
/// Test-only: `SHMPIPE_TEST_SIGSTOP=NAME` makes a worker stop itself with SIGSTOP (a hung
/// process, as a debugger or a stuck NFS read leaves one) once it holds the image whose path ends
/// with NAME, the first time that image is tried.
pub const SIGSTOP_ENV: &str = "SHMPIPE_TEST_SIGSTOP";
/// Test-only: `SHMPIPE_TEST_FAIL_START_AFTER=N` makes a worker exit with an error as soon as it
/// has attached, once N images of the run are done: a worker that cannot start, after outputs
/// were written.
pub const FAIL_START_ENV: &str = "SHMPIPE_TEST_FAIL_START_AFTER";

/// Test-only: `SHMPIPE_TEST_DELAY_AFTER_DONE=MS` makes an `apply` worker wait that long after
/// each image it publishes, before it looks for the next: the window in which a coordinator that
/// did not wait for every worker to park would open the next pass under it.
pub const DELAY_AFTER_DONE_ENV: &str = "SHMPIPE_TEST_DELAY_AFTER_DONE";
/// Test-only: `SHMPIPE_TEST_PARK_TIMEOUT=MS` sets how long a parked `apply` worker waits
/// before it re-checks its parent (1000 ms by default): set high, a wake-up that misses a worker
/// shows as a hang instead of a one-second stall.
pub const PARK_TIMEOUT_ENV: &str = "SHMPIPE_TEST_PARK_TIMEOUT";

/// The per-image hooks of a worker ([`CRASH_ENV`], [`STALL_ENV`], [`SIGSTOP_ENV`]), read once.
#[derive(Debug, Default)]
pub struct Faults {
    /// The name, and how many crashes of that image to cause.
    crash_on: Option<(String, u32)>,
    /// The name, and the milliseconds to sleep.
    stall_on: Option<(String, u64)>,
    sigstop_on: Option<String>,
}

impl Faults {
    pub fn from_env() -> Faults {
        Faults {
            crash_on: test_hook(CRASH_ENV).map(|spec| {
                let (name, n) = name_and_count(&spec, 1);
                (name, n.min(u64::from(u32::MAX)) as u32)
            }),
            stall_on: test_hook(STALL_ENV).map(|spec| name_and_count(&spec, 60_000)),
            sigstop_on: test_hook(SIGSTOP_ENV),
        }
    }

    /// Crashes, stops or stalls this worker as asked, at the image whose source path is
    /// `relative` and that has seen `crashes` crashes so far.
    pub fn fire(&self, relative: &std::path::Path, crashes: u32) {
        use std::os::unix::ffi::OsStrExt;
        let ends_with = |name: &str| relative.as_os_str().as_bytes().ends_with(name.as_bytes());
        if let Some((name, limit)) = &self.crash_on {
            if ends_with(name) && crashes < *limit {
                std::process::abort();
            }
        }
        if let Some(name) = &self.sigstop_on {
            if ends_with(name) && crashes == 0 {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::STOP,
                );
            }
        }
        if let Some((name, ms)) = &self.stall_on {
            if ends_with(name) {
                std::thread::sleep(std::time::Duration::from_millis(*ms));
            }
        }
    }
}

/// A test hook's `NAME[:N]`: the name, and N (or `default` when it is absent or not a number).
fn name_and_count(spec: &str, default: u64) -> (String, u64) {
    match spec
        .rsplit_once(':')
        .map(|(name, n)| (name, n.parse::<u64>()))
    {
        Some((name, Ok(n))) => (name.to_string(), n),
        _ => (spec.to_string(), default),
    }
}
