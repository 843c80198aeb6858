//! Memory of the coordinator and every worker, sampled from `/proc/PID/smaps_rollup`.
//!
//! The honest total is the sum of Pss: a shared page is split among the processes that map it.
//! The sum of Rss counts a shared page once per process, so it is shown beside Pss to make the
//! difference visible. Where /proc is missing (macOS) the sampler says so instead of reporting 0.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One process's memory at one moment, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcMemory {
    pub pss: u64,
    pub rss: u64,
    /// Pss of shared-memory (tmpfs) pages: our block's share in this process.
    pub pss_shmem: u64,
}

/// Reads `/proc/PID/smaps_rollup`; None when the process is gone or /proc is missing.
pub fn read(pid: u32) -> Option<ProcMemory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut m = ProcMemory::default();
    for line in text.lines() {
        let mut parts = line.split_whitespace();
        let (Some(key), Some(value)) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(kib) = value.parse::<u64>() else {
            continue;
        };
        match key {
            "Pss:" => m.pss = kib * 1024,
            "Rss:" => m.rss = kib * 1024,
            "Pss_Shmem:" => m.pss_shmem = kib * 1024,
            _ => {}
        }
    }
    Some(m)
}

/// True where per-process memory can be read.
pub fn available() -> bool {
    read(std::process::id()).is_some()
}

/// Totals over all sampled processes at one moment.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Sample {
    pub t_s: f64,
    pub pss: u64,
    pub rss: u64,
    /// The shared-memory part of `pss`: the block's pages (and any other tmpfs mapping).
    pub pss_shmem: u64,
    pub processes: u32,
}

/// Peaks and the time series of one run.
#[derive(Clone, Debug, Default)]
pub struct Record {
    pub available: bool,
    pub peak_pss: u64,
    pub peak_rss: u64,
    pub peak_pss_shmem: u64,
    pub series: Vec<Sample>,
}

/// A background thread that samples the coordinator and the current worker pids at `hz`.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Record>>,
}

impl Sampler {
    /// `pids` is read at each sample: the supervisor keeps it up to date as workers come and go.
    pub fn start(pids: Arc<Mutex<Vec<u32>>>, hz: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut record = Record {
                available: available(),
                ..Record::default()
            };
            if !record.available {
                return record;
            }
            let start = Instant::now();
            let period = Duration::from_secs_f64(1.0 / hz.max(1) as f64);
            let me = std::process::id();
            loop {
                let finishing = stop_thread.load(Ordering::Acquire);
                let mut sample = Sample {
                    t_s: start.elapsed().as_secs_f64(),
                    ..Sample::default()
                };
                let workers = pids.lock().map(|p| p.clone()).unwrap_or_default();
                for pid in std::iter::once(me).chain(workers) {
                    if let Some(m) = read(pid) {
                        sample.pss += m.pss;
                        sample.rss += m.rss;
                        sample.pss_shmem += m.pss_shmem;
                        sample.processes += 1;
                    }
                }
                record.peak_pss = record.peak_pss.max(sample.pss);
                record.peak_rss = record.peak_rss.max(sample.rss);
                record.peak_pss_shmem = record.peak_pss_shmem.max(sample.pss_shmem);
                record.series.push(sample);
                if finishing {
                    return record;
                }
                // Parked rather than asleep, so `finish` need not wait out the period.
                std::thread::park_timeout(period);
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Takes one last sample and returns the record.
    pub fn finish(mut self) -> Record {
        self.stop.store(true, Ordering::Release);
        self.thread
            .take()
            .and_then(|t| {
                t.thread().unpark();
                t.join().ok()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_memory_where_proc_exists() {
        if std::path::Path::new("/proc/self/smaps_rollup").exists() {
            let m = read(std::process::id()).expect("own smaps_rollup");
            assert!(m.rss > 0 && m.pss > 0 && m.pss <= m.rss);
        } else {
            assert!(!available());
        }
    }
}
