//! Memory of the coordinator and every worker, sampled from `/proc/PID/smaps_rollup`.
//!
//! The honest total is the sum of Pss: a shared page is split among the processes that map it.
//! The sum of Rss counts a shared page once per process, so it is shown beside Pss to make the
//! difference visible. Where /proc is missing (macOS) the sampler says so instead of reporting 0.
//!
//! A read of smaps_rollup walks every page the process maps: about 17 ms per GiB a worker has
//! touched. So a run's sampler reads at the asked rate only while that costs under 5% of a core,
//! and less often beyond (`bench memory` keeps the rate, whatever it costs: there the peak of a
//! worker's private copy is what is measured). The peak it would miss at the end (workers exit,
//! and the block's pages that nobody maps any more drop out of every Pss) is taken from the
//! block itself: at `finish`, the block's pages in memory (one `fstat`) plus the private memory
//! of the last reading that found a worker.

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
    /// The readings, as read: strictly later one after the other.
    pub series: Vec<Sample>,
    /// The reading made at `finish` from the block's pages (see [`Sampler::finish`]): it counts
    /// in the peaks, and is kept out of `series`, which holds only what was read.
    pub at_exit: Option<Sample>,
    /// The last reading that found a worker (the last reading, until one does).
    last_with_workers: Sample,
}

/// The share of one core the sampler may spend reading.
const MAX_DUTY: f64 = 0.05;

/// A background thread that samples the coordinator and the current worker pids at `hz`.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Record>>,
}

impl Sampler {
    /// `pids` is read at each sample: the supervisor keeps it up to date as workers come and go.
    /// With `thrifty`, the period stretches so that reading costs at most [`MAX_DUTY`] of a core.
    pub fn start(pids: Arc<Mutex<Vec<u32>>>, hz: u32, thrifty: bool) -> Sampler {
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
                let reading = Instant::now();
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
                if sample.processes > 1 || record.last_with_workers.processes <= 1 {
                    record.last_with_workers = sample;
                }
                record.peak_pss = record.peak_pss.max(sample.pss);
                record.peak_rss = record.peak_rss.max(sample.rss);
                record.peak_pss_shmem = record.peak_pss_shmem.max(sample.pss_shmem);
                record.series.push(sample);
                if finishing {
                    return record;
                }
                // Parked rather than asleep, so `finish` need not wait out the period.
                let cost = reading.elapsed().as_secs_f64();
                let wait = match thrifty {
                    true => period.max(Duration::from_secs_f64(cost * (1.0 / MAX_DUTY - 1.0))),
                    false => period,
                };
                std::thread::park_timeout(wait);
            }
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Takes one last sample and returns the record. `block_memory` is what the block holds in
    /// memory now ([`shmpipe_block::Mapping::memory_bytes`]): with the private memory
    /// of the last reading that found a worker, it makes a final reading that no longer depends
    /// on which process still maps which page.
    pub fn finish(mut self, block_memory: Option<u64>) -> Record {
        self.stop.store(true, Ordering::Release);
        let mut record = self
            .thread
            .take()
            .and_then(|t| {
                t.thread().unpark();
                t.join().ok()
            })
            .unwrap_or_default();
        if let (true, Some(block)) = (record.available, block_memory) {
            let w = record.last_with_workers;
            let last = record.series.last().copied().unwrap_or_default();
            let sample = Sample {
                t_s: last.t_s,
                // The private memory then, and the block now in place of its share then.
                pss: w.pss - w.pss_shmem.min(w.pss) + block,
                // Rss then, and each block page touched since then counted once (at least).
                rss: w.rss + block.saturating_sub(w.pss_shmem),
                pss_shmem: block,
                processes: w.processes,
            };
            record.peak_pss = record.peak_pss.max(sample.pss);
            record.peak_rss = record.peak_rss.max(sample.rss);
            record.peak_pss_shmem = record.peak_pss_shmem.max(sample.pss_shmem);
            record.at_exit = Some(sample);
        }
        record
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
