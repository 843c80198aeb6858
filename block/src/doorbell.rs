//! The doorbell between the passes of `apply` and `repair`: a futex on the header's pass word
//! (shared, not PRIVATE), and the stop request that rings it.
//!
//! A wake here must never block and a wait must never be the only check: every waiter re-reads
//! the word, its parent and its stop flag, so no death can wedge anyone.

use std::sync::atomic::Ordering;

use super::{BlockState, Mapping};

/// The pass word's top bit: a stop was requested. A stop changes the word, so a worker that
/// checked its stop flag just before the stop and then waits for the word to leave the
/// generation it saw returns at once (the futex compares the word before it sleeps), instead
/// of sleeping its whole park timeout.
pub(super) const STOP_BIT: u32 = 1 << 31;

impl Mapping {
    /// Asks every worker to stop after its current image, and wakes those parked between passes.
    /// `reason` goes to [`crate::Header::stop_reason`] (a signal's number, or
    /// [`crate::STOP_STRICT`]; 0 says none).
    pub fn request_stop(&self, reason: u32) {
        let h = self.header();
        h.stop_reason.store(reason, Ordering::Release);
        h.state
            .store(BlockState::Stopping as u32, Ordering::Release);
        self.open_pass(h.pass.load(Ordering::Acquire) | STOP_BIT);
    }

    /// Sets the pass word to `generation` (a pass's, or the last one's with [`STOP_BIT`]) and
    /// wakes every worker waiting on it.
    pub(super) fn open_pass(&self, generation: u32) {
        let word = &self.header().pass;
        word.store(generation, Ordering::Release);
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::thread::futex;
            // A wake never blocks, whoever died where: at worst it wakes nobody. The count is a
            // C int in the kernel: u32::MAX would read as -1 and wake a single waiter.
            let _ = futex::wake(word, futex::Flags::empty(), i32::MAX as u32);
        }
    }

    /// Waits until the pass generation is no longer `seen`, or `timeout` passes (the caller
    /// re-checks its parent and stop flag, then waits again). Spurious returns are fine: callers
    /// loop on the word.
    pub fn wait_for_pass_after(&self, seen: u32, timeout: std::time::Duration) {
        let word = &self.header().pass;
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::thread::futex;
            let timeout = rustix::time::Timespec {
                tv_sec: timeout.as_secs() as _,
                tv_nsec: timeout.subsec_nanos() as _,
            };
            // Returns at once if the word is no longer `seen` (EAGAIN), on a wake, on a signal
            // (EINTR) or at the timeout: each is a reason to look again. Shared, not PRIVATE:
            // the waker is another process mapping the same pages.
            let _ = futex::wait(word, futex::Flags::empty(), seen, Some(&timeout));
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        if word.load(Ordering::Acquire) == seen {
            std::thread::sleep(timeout.min(std::time::Duration::from_millis(5)));
        }
    }
}
