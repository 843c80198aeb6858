//! Process supervision, all in one place, for every mode that has workers (`run`, `load`,
//! `apply`, `repair`, `bench memory`): spawn workers, watch them, replace the ones that die,
//! quarantine an image in hand at too many deaths, kill a worker that holds one image too long,
//! stop them in order (SIGTERM, a grace period, SIGKILL) on a stop signal. Each worker's end is a
//! [`WorkerEnd`].
//!
//! Workers run in their own process group, so a terminal's Ctrl-C reaches only the coordinator,
//! which then stops them here. This module never touches pixels.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rustix::process::{kill_process, Pid, Signal};
use shmpipe_block::{now_ns, ImageStatus, Mapping};

use crate::engine::progress::Display;
use crate::exit;

/// An image in hand during this many worker deaths is quarantined as failed.
pub const MAX_CRASHES: u32 = 3;
/// How long stopped workers get to finish their current image before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// Supervisor and display tick (20 Hz).
const TICK: Duration = Duration::from_millis(50);

/// How one worker process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerEnd {
    /// Exit code 0: it ran out of work or was asked to stop.
    Finished,
    /// A non-zero exit code.
    Failed(i32),
    /// Killed by a signal it did not handle (SIGKILL, SIGSEGV, SIGBUS, SIGABRT, ...).
    Signaled(i32),
}

impl WorkerEnd {
    fn from_status(status: ExitStatus) -> WorkerEnd {
        match (status.code(), status.signal()) {
            (Some(0), _) => WorkerEnd::Finished,
            (Some(code), _) => WorkerEnd::Failed(code),
            (None, Some(sig)) => WorkerEnd::Signaled(sig),
            (None, None) => WorkerEnd::Failed(-1),
        }
    }

    pub fn is_abnormal(self) -> bool {
        self != WorkerEnd::Finished
    }
}

/// How to start a worker.
#[derive(Clone, Debug)]
pub struct Launch {
    pub exe: PathBuf,
    pub block: String,
    pub backing: Option<PathBuf>,
    pub max_pixels: u64,
    /// `apply` mode (`apply`, `repair`): workers bring a kept dataset to its history's latest step.
    pub apply: bool,
    /// Cores the run may use (its -j), which can exceed its workers (never more than images).
    pub cores: u32,
}

struct Running {
    child: Child,
    pid: u32,
}

/// How long starting the workers took: from just before each spawn to the worker having
/// attached, validated the block and enlisted (its `ready_ns`), in milliseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct StartCost {
    pub median_ms: f64,
    pub max_ms: f64,
}

/// The worker pool: one optional process per worker id.
pub struct Pool {
    launch: Launch,
    slots: Vec<Option<Running>>,
    /// Current worker pids, shared with the memory sampler.
    pids: Arc<Mutex<Vec<u32>>>,
    pub spawned: u32,
    /// Per worker id: when its latest process was spawned (`now_ns`).
    spawned_ns: Vec<u64>,
}

impl Pool {
    pub fn new(launch: Launch, workers: u32, pids: Arc<Mutex<Vec<u32>>>) -> Pool {
        Pool {
            launch,
            slots: (0..workers).map(|_| None).collect(),
            pids,
            spawned: 0,
            spawned_ns: vec![0; workers as usize],
        }
    }

    /// The start cost of each worker id's latest process that got as far as enlisting in `block`.
    pub fn start_cost(&self, block: &Mapping) -> Option<StartCost> {
        let mut ms: Vec<f64> = block
            .workers()
            .iter()
            .zip(&self.spawned_ns)
            .filter_map(|(record, &spawned)| {
                let ready = record.ready_ns.load(Ordering::Acquire);
                (spawned > 0 && ready >= spawned).then(|| (ready - spawned) as f64 / 1e6)
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        // With an even count, the upper of the two middle values.
        Some(StartCost {
            median_ms: *ms.get(ms.len() / 2)?,
            max_ms: *ms.last()?,
        })
    }

    /// Starts worker `id` (a first start or a replacement).
    pub fn spawn(&mut self, id: u32) -> std::io::Result<()> {
        let mut cmd = Command::new(&self.launch.exe);
        cmd.arg("worker")
            .arg("--block")
            .arg(&self.launch.block)
            .arg("--id")
            .arg(id.to_string())
            .arg("--parent")
            .arg(std::process::id().to_string())
            .arg("--max-pixels")
            .arg(self.launch.max_pixels.to_string())
            .arg("--cores")
            .arg(self.launch.cores.to_string());
        if let Some(dir) = &self.launch.backing {
            cmd.arg("--backing").arg(dir);
        }
        if self.launch.apply {
            cmd.arg("--apply");
        }
        let stderr = if std::env::var_os("SHMPIPE_WORKER_STDERR").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        self.spawned_ns[id as usize] = now_ns();
        let child = cmd.spawn()?;
        let pid = child.id();
        self.slots[id as usize] = Some(Running { child, pid });
        self.spawned += 1;
        self.publish_pids();
        Ok(())
    }

    fn publish_pids(&self) {
        if let Ok(mut pids) = self.pids.lock() {
            *pids = self.slots.iter().flatten().map(|r| r.pid).collect();
        }
    }

    pub fn live(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// The ids of the workers running now.
    pub fn live_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_some())
            .map(|(id, _)| id as u32)
    }

    /// Starts every worker id that has no process.
    pub fn spawn_missing(&mut self) -> std::io::Result<()> {
        for id in 0..self.slots.len() as u32 {
            if self.slots[id as usize].is_none() {
                self.spawn(id)?;
            }
        }
        Ok(())
    }

    /// Sends SIGKILL to worker `id`; `reap` reports its end.
    pub fn kill(&self, id: u32) {
        if let Some(Some(running)) = self.slots.get(id as usize) {
            signal(running.pid, Signal::KILL);
        }
    }

    /// Reaps the workers that have ended since the last call.
    pub fn reap(&mut self) -> Vec<(u32, WorkerEnd)> {
        let mut ended = Vec::new();
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(running) = slot else { continue };
            match running.child.try_wait() {
                Ok(Some(status)) => {
                    ended.push((id as u32, WorkerEnd::from_status(status)));
                    *slot = None;
                }
                Ok(None) => {}
                Err(_) => {
                    // Never report a worker as ended while it may still hold a claim.
                    signal(running.pid, Signal::KILL);
                    let status = running.child.wait();
                    ended.push((
                        id as u32,
                        status.map_or(WorkerEnd::Failed(-1), WorkerEnd::from_status),
                    ));
                    *slot = None;
                }
            }
        }
        if !ended.is_empty() {
            self.publish_pids();
        }
        ended
    }

    /// Stops every live worker: SIGTERM, up to `grace` for them to finish their current image,
    /// then SIGKILL. Returns how each ended.
    pub fn stop(&mut self, grace: Duration) -> Vec<(u32, WorkerEnd)> {
        for running in self.slots.iter().flatten() {
            signal(running.pid, Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        let mut ended = Vec::new();
        while self.live() > 0 && Instant::now() < deadline {
            ended.extend(self.reap());
            std::thread::sleep(Duration::from_millis(10));
        }
        for (id, slot) in self.slots.iter_mut().enumerate() {
            let Some(running) = slot else { continue };
            signal(running.pid, Signal::KILL);
            let status = running.child.wait();
            let end = status.map_or(WorkerEnd::Failed(-1), WorkerEnd::from_status);
            ended.push((id as u32, end));
        }
        self.slots.iter_mut().for_each(|s| *s = None);
        self.publish_pids();
        ended
    }
}

impl Drop for Pool {
    /// No worker outlives the pool, whatever path led here.
    fn drop(&mut self) {
        for running in self.slots.iter_mut().flatten() {
            signal(running.pid, Signal::KILL);
            let _ = running.child.wait();
        }
    }
}

/// Signals that stop a job (`run`, `load`, `apply`, `repair`, each job of `bench memory`), each with its own flag so the exit code can say which; and a wake-up
/// pipe that these and SIGCHLD write to, so the supervisor reacts to a worker's exit (above all
/// the last one's) at once instead of at its next tick.
pub struct Signals {
    flags: Vec<(i32, &'static str, Arc<AtomicBool>)>,
    wake: std::os::unix::net::UnixStream,
    /// Every handler installed, removed on drop: `load` and `bench memory` run several jobs.
    handlers: Vec<signal_hook::SigId>,
}

impl Drop for Signals {
    fn drop(&mut self) {
        for id in self.handlers.drain(..) {
            signal_hook::low_level::unregister(id);
        }
        // Unregistering leaves the signals caught by nothing, that is ignored: between jobs and
        // after the last one they must act as they do by default (end the process).
        between_jobs().store(true, Ordering::SeqCst);
    }
}

/// True while no job's handlers are installed; the stop signals then take their default action
/// (through one handler per signal, installed once per process).
fn between_jobs() -> &'static Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(true));
        for sig in [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ] {
            // Only fails for a signal signal-hook cannot name; these three it can.
            let _ = signal_hook::flag::register_conditional_default(sig, Arc::clone(&flag));
        }
        flag
    })
}

impl Signals {
    pub fn register() -> anyhow::Result<Signals> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        between_jobs().store(false, Ordering::SeqCst);
        let mut flags = Vec::new();
        let mut handlers = Vec::new();
        for (sig, name, code) in [
            (SIGINT, "SIGINT", exit::SIGINT),
            (SIGTERM, "SIGTERM", exit::SIGTERM),
            (SIGHUP, "SIGHUP", exit::SIGHUP),
        ] {
            let flag = Arc::new(AtomicBool::new(false));
            handlers.push(
                signal_hook::flag::register(sig, Arc::clone(&flag))
                    .context("failed to install signal handler")?,
            );
            flags.push((code, name, flag));
        }
        let (wake, ring) =
            std::os::unix::net::UnixStream::pair().context("failed to create a wake-up pipe")?;
        ring.set_nonblocking(true)
            .context("failed to create a wake-up pipe")?;
        for sig in [signal_hook::consts::SIGCHLD, SIGINT, SIGTERM, SIGHUP] {
            let ring = ring
                .try_clone()
                .context("failed to create a wake-up pipe")?;
            handlers.push(
                signal_hook::low_level::pipe::register(sig, ring)
                    .context("failed to install signal handler")?,
            );
        }
        Ok(Signals {
            flags,
            wake,
            handlers,
        })
    }

    /// Sleeps up to `timeout`, less if a worker exits or a stop signal arrives meanwhile.
    pub fn wait(&self, timeout: Duration) {
        use std::io::Read;
        if self.wake.set_read_timeout(Some(timeout)).is_ok() {
            // One read takes every wake-up written so far (each is one byte).
            let _ = (&self.wake).read(&mut [0u8; 256]);
        } else {
            std::thread::sleep(timeout);
        }
    }

    /// The exit code and name of the first signal received, if any.
    pub fn received(&self) -> Option<(i32, &'static str)> {
        self.flags
            .iter()
            .find(|(_, _, f)| f.load(Ordering::Relaxed))
            .map(|(code, name, _)| (*code, *name))
    }
}

/// How a job's workers are watched.
pub struct Rules {
    /// Kill a worker that holds one image longer than this (`--image-timeout`).
    pub image_timeout: Option<Duration>,
    /// `--strict`: stop at the first failed image.
    pub strict: bool,
}

/// What supervision observed.
#[derive(Debug, Default)]
pub struct Outcome {
    pub retried: u64,
    pub restarts: u64,
    pub signal: Option<(i32, &'static str)>,
    /// `--strict` stopped the run at the first failed image.
    pub strict_stop: bool,
}

/// Runs the workers of `pool` on `block` (starting those that are not running) until the queue
/// is empty and every worker has ended, or `settled` says the job's pass is over, or a stop
/// signal or `--strict` stops it. A worker that dies is replaced and the images it held go back
/// to the queue (`on_release` is told each, for cleanup), until one has been in hand at
/// [`MAX_CRASHES`] deaths: that one is failed with the reason.
pub fn supervise(
    block: &Mapping,
    pool: &mut Pool,
    display: &Display,
    signals: &Signals,
    rules: &Rules,
    settled: &dyn Fn(&Pool) -> bool,
    on_release: &dyn Fn(usize),
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    if let Some(sig) = signals.received() {
        outcome.signal = Some(sig);
        return Ok(outcome);
    }
    if block.image_count() == 0 {
        return Ok(outcome);
    }
    pool.spawn_missing()
        .context("failed to start a worker process")?;
    let mut deaths = Deaths::new(pool.slots.len() as u32);
    loop {
        let strict_stop = rules.strict && block.header().images_failed.load(Ordering::Acquire) > 0;
        if let Some(sig) = signals.received() {
            outcome.signal = Some(sig);
        }
        if outcome.signal.is_some() || strict_stop {
            outcome.strict_stop = strict_stop && outcome.signal.is_none();
            stop_workers(block, pool, rules, on_release, outcome.signal);
            return Ok(outcome);
        }
        deaths.replace_the_dead(block, pool, display, rules, on_release, &mut outcome)?;
        if pool.live() == 0 {
            if work_left(block) {
                pool.spawn(0)
                    .context("failed to restart a worker process")?;
                outcome.restarts += 1;
                continue;
            }
            return Ok(outcome);
        }
        if settled(pool) {
            return Ok(outcome);
        }
        if let Some(limit) = rules.image_timeout {
            for id in stuck_workers(block, limit) {
                if deaths.timed_out.insert(id) {
                    pool.kill(id);
                }
            }
        }
        display.update(block);
        signals.wait(TICK);
    }
}

/// Stops every worker (a stop signal, or `--strict`'s first failure): the stop's reason in the
/// block (the signal's number, or [`shmpipe_block::STOP_STRICT`]), then each worker stopped,
/// and whatever a stopped worker held goes back to Pending.
fn stop_workers(
    block: &Mapping,
    pool: &mut Pool,
    rules: &Rules,
    on_release: &dyn Fn(usize),
    signal: Option<(i32, &'static str)>,
) {
    // The exit code of a signal is 128 + its number.
    block.request_stop(match signal {
        Some((code, _)) => (code - 128) as u32,
        None => shmpipe_block::STOP_STRICT,
    });
    for (id, _) in pool.stop(STOP_GRACE) {
        release(block, id, None, rules, on_release);
    }
}

/// The workers' deaths in one supervision, and what is done about them.
struct Deaths {
    /// Deaths that released no image: a worker that cannot even start. Bounded, then we give up.
    fruitless: u32,
    /// The bound: twice the workers, and two.
    fruitless_limit: u32,
    /// Workers killed for holding one image longer than the timeout.
    timed_out: std::collections::HashSet<u32>,
}

impl Deaths {
    fn new(workers: u32) -> Deaths {
        Deaths {
            fruitless: 0,
            fruitless_limit: 2 * workers + 2,
            timed_out: std::collections::HashSet::new(),
        }
    }

    /// Reaps the workers that ended; for each that ended abnormally, the images it held go
    /// back to the queue (or fail, past [`MAX_CRASHES`]), and a new worker takes its place
    /// while work is left. Gives up when workers keep dying without releasing anything.
    fn replace_the_dead(
        &mut self,
        block: &Mapping,
        pool: &mut Pool,
        display: &Display,
        rules: &Rules,
        on_release: &dyn Fn(usize),
        outcome: &mut Outcome,
    ) -> anyhow::Result<()> {
        for (id, end) in pool.reap() {
            // Whatever its end, this process is gone: a later worker with its id is a new one,
            // to be killed for a timeout of its own (a worker that exited 0 just as it was
            // marked timed out left its id here, and shielded every later holder of it).
            let timed_out = self.timed_out.remove(&id);
            if !end.is_abnormal() {
                continue;
            }
            let (retried, quarantined) = release(block, id, Some(timed_out), rules, on_release);
            outcome.retried += retried;
            if retried == 0 && quarantined == 0 {
                self.fruitless += 1;
            }
            if self.fruitless > self.fruitless_limit {
                bail!("workers keep failing at start (last: {end:?}); giving up");
            }
            if work_left(block) {
                pool.spawn(id)
                    .context("failed to restart a worker process")?;
                outcome.restarts += 1;
                display.println(&format!("shmpipe: worker {id} ended ({end:?}); restarted"));
            }
        }
        Ok(())
    }
}

/// Whether any image waits for a worker.
pub fn work_left(block: &Mapping) -> bool {
    block
        .images()
        .iter()
        .any(|r| r.status() == Some(ImageStatus::Pending))
}

/// Workers that have held their current image for longer than `limit`.
fn stuck_workers(block: &Mapping, limit: Duration) -> Vec<u32> {
    let now = shmpipe_block::now_ms();
    block
        .workers()
        .iter()
        .enumerate()
        .filter(|(_, w)| {
            w.current_image.load(Ordering::Acquire) != shmpipe_block::NO_IMAGE
                && now.saturating_sub(w.heartbeat_ms.load(Ordering::Acquire))
                    > limit.as_millis() as u64
        })
        .map(|(id, _)| id as u32)
        .collect()
}

/// After worker `id` ended (reaped by the caller): every image it still held goes back to the
/// queue. When it died (`death` is Some, holding whether we killed it for a timeout), the death
/// counts against those images; at `MAX_CRASHES` one is quarantined.
/// Returns (images put back, images quarantined).
fn release(
    block: &Mapping,
    id: u32,
    death: Option<bool>,
    rules: &Rules,
    on_release: &dyn Fn(usize),
) -> (u64, u64) {
    let (mut retried, mut quarantined) = (0, 0);
    if let Some(record) = block.workers().get(id as usize) {
        record.clear_image();
    }
    for index in 0..block.image_count() {
        // SAFETY: worker `id`'s process has ended and been reaped: `Pool::reap` and
        // `Pool::stop`, the only sources of the ids passed here, report an id only after
        // `wait` returned its status, and no new process takes the id before this returns.
        #[allow(unsafe_code)]
        let Some(claim) = (unsafe { block.take_over(index, id) }) else {
            continue;
        };
        on_release(index);
        let Some(timed_out) = death else {
            drop(claim);
            continue;
        };
        let crashes = block.images()[index].crashes.fetch_add(1, Ordering::AcqRel) + 1;
        if crashes >= MAX_CRASHES {
            let reason = match (timed_out, rules.image_timeout) {
                (true, Some(limit)) => format!(
                    "no result within {} s, {crashes} times (--image-timeout)",
                    limit.as_secs()
                ),
                _ => format!("worker crashed while processing ({crashes} times)"),
            };
            claim.fail(&reason);
            block.header().images_failed.fetch_add(1, Ordering::AcqRel);
            quarantined += 1;
        } else {
            drop(claim);
            retried += 1;
        }
    }
    (retried, quarantined)
}

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, sig);
    }
}
