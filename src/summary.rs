//! The end-of-run summary, as text for people and as one JSON object for programs.

use serde::Serialize;

/// One image that did not make it, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The block's name; None when no block was needed (no images to process).
    pub block: Option<String>,
    pub images_ok: u64,
    pub images_failed: u64,
    pub failures: Vec<Failure>,
    /// Images done with a warning: damaged JPEGs kept under `--allow-truncated`.
    pub warnings: Vec<Failure>,
    /// Output folders that could not be flushed to disk: their outputs are written but may not
    /// survive a crash of the machine. Any makes the exit status 1.
    pub unsynced_folders: Vec<Failure>,
    /// Files that were neither named nor shaped like images.
    pub files_skipped: u64,
    /// Images left alone because their output exists (`--skip-existing`).
    pub files_existing: u64,
    /// Images put back in the queue after the worker holding them died.
    pub images_retried: u64,
    pub worker_restarts: u64,
    pub megapixels: f64,
    pub wall_s: f64,
    pub megapixels_per_s: f64,
    pub workers: u32,
    pub block_bytes: u64,
    pub dataset_bytes: u64,
    /// False where /proc is missing: then the peaks below are null, not zero.
    pub memory_measured: bool,
    pub peak_total_pss_bytes: Option<u64>,
    pub peak_total_rss_bytes: Option<u64>,
    pub stopped_by_signal: Option<String>,
    /// `--strict` stopped the run at the first failure.
    pub stopped_by_strict: bool,
    /// The block stays as a named dataset (`load`, `run --keep`).
    pub kept: bool,
    /// The shard this run did, when the folder is split across hosts.
    pub shard: Option<crate::shard::Shard>,
    /// Files of the folder that fall in this shard.
    pub shard_files: Option<u64>,
    /// Where the wall time went before and after the workers' part.
    pub timings: Timings,
}

/// Seconds spent in each serial phase of a run, and the workers' start cost.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Timings {
    /// Walking the folder and reading every header.
    pub plan_s: f64,
    /// Creating, reserving and filling in the block.
    pub create_s: f64,
    /// From the first spawn until every worker has exited.
    pub work_s: f64,
    /// Spawn to attached-and-enlisted, per worker; null when no worker got that far.
    pub worker_start: Option<crate::supervise::StartCost>,
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Summary {
    pub fn text(&self) -> String {
        let mut out = String::new();
        let total = self.images_ok + self.images_failed;
        out.push_str(&format!(
            "{} of {total} images ok, {} failed ({} retried after a worker died, {} worker restarts)\n",
            self.images_ok, self.images_failed, self.images_retried, self.worker_restarts
        ));
        for f in &self.failures {
            out.push_str(&format!("  failed: {}: {}\n", f.path, f.reason));
        }
        if !self.warnings.is_empty() {
            out.push_str(&format!(
                "{} images kept with damage (--allow-truncated)\n",
                self.warnings.len()
            ));
        }
        for w in &self.warnings {
            out.push_str(&format!("  warning: {}: {}\n", w.path, w.reason));
        }
        for f in &self.unsynced_folders {
            out.push_str(&format!(
                "  not flushed to disk: {}: {}\n",
                f.path, f.reason
            ));
        }
        out.push_str(&format!(
            "{:.1} MP in {:.2} s = {:.1} MP/s with {} workers\n",
            self.megapixels, self.wall_s, self.megapixels_per_s, self.workers
        ));
        if let (Some(s), Some(files)) = (&self.shard, self.shard_files) {
            out.push_str(&format!(
                "shard {}/{} (from {}): {files} files of the folder\n",
                s.index, s.count, s.source
            ));
        }
        if self.files_existing > 0 {
            out.push_str(&format!(
                "{} images left alone: their output exists (--skip-existing)\n",
                self.files_existing
            ));
        }
        if self.stopped_by_strict {
            out.push_str("stopped at the first failure (--strict)\n");
        }
        if let Some(sig) = &self.stopped_by_signal {
            out.push_str(&format!(
                "stopped by {sig}: complete outputs kept, the rest not written\n"
            ));
        }
        let Some(block) = &self.block else {
            return out;
        };
        if self.kept {
            out.push_str(&format!(
                "kept as {block}: attach to it by name; remove it with `shmpipe rm {block}`\n"
            ));
        }
        out.push_str(&format!(
            "block {block}: {:.1} MiB ({:.1} MiB of pixels)\n",
            mib(self.block_bytes),
            mib(self.dataset_bytes)
        ));
        match (self.peak_total_pss_bytes, self.peak_total_rss_bytes) {
            (Some(pss), Some(rss)) => out.push_str(&format!(
                "peak total memory, coordinator + workers: Pss {:.1} MiB ({:.2}x the decoded dataset), Rss {:.1} MiB (counts shared pages once per process)\n",
                mib(pss),
                pss as f64 / self.dataset_bytes.max(1) as f64,
                mib(rss)
            )),
            _ => out.push_str("peak total memory: not measured (no /proc on this system)\n"),
        }
        out
    }
}
