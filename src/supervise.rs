//! Process supervision, all in one place: spawn workers, watch them, replace the ones that die,
//! stop them in order (SIGTERM, a grace period, SIGKILL). Each worker's end is a [`WorkerEnd`].
//!
//! Workers run in their own process group, so a terminal's Ctrl-C reaches only the coordinator,
//! which then stops them here. This module never touches pixels.

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use shmpipe_worker::block::{now_ns, Mapping};
use std::sync::atomic::Ordering;

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
    /// `apply` mode: the op list the workers run on the block's pixels.
    pub apply: Option<String>,
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
        if let Some(list) = &self.launch.apply {
            cmd.arg("--apply").arg(list);
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

fn signal(pid: u32, sig: Signal) {
    if let Some(pid) = Pid::from_raw(pid as i32) {
        let _ = kill_process(pid, sig);
    }
}
