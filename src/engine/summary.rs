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
    /// Images the run set out to do: those found (in its shard), less those whose output exists.
    pub images_planned: u64,
    pub images_ok: u64,
    pub images_failed: u64,
    /// Planned images neither done nor failed: a signal or `--strict` stopped the run first.
    pub images_not_started: u64,
    pub failures: Vec<Failure>,
    /// Folders that could not be read (no permission, a symlink loop): what they hold was not
    /// done. Any makes the exit status 1.
    pub folders_refused: Vec<Failure>,
    /// Images done with a warning: damaged JPEGs kept under `--allow-truncated`, JPEG outputs
    /// without their source's transparency, metadata left out.
    pub warnings: Vec<Failure>,
    /// Output folders that could not be flushed to disk: their outputs are written but may not
    /// survive a crash of the machine. Any makes the exit status 1.
    pub unsynced_folders: Vec<Failure>,
    /// Files that were neither named nor shaped like images.
    pub files_skipped: u64,
    /// Their paths, in walk order.
    pub skipped: Vec<String>,
    /// Images left alone because their output exists (`--skip-existing`).
    pub files_existing: u64,
    /// Images put back in the queue after the worker holding them died.
    pub images_retried: u64,
    pub worker_restarts: u64,
    /// Megapixels of the images done, as they are in the block (after `--resize`).
    pub megapixels: f64,
    /// Megapixels decoded from the sources of the images done (before `--resize`): the work.
    pub source_megapixels: f64,
    pub wall_s: f64,
    /// `source_megapixels` per second of wall time.
    pub megapixels_per_s: f64,
    pub workers: u32,
    pub block_bytes: u64,
    /// A plain run's window: the bytes of each worker's slot (the block holds one per worker);
    /// null when the block holds the whole dataset (a kept dataset, copy mode).
    pub window_slot_bytes: Option<u64>,
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
    /// The text names each skipped file (`--verbose`).
    #[serde(skip)]
    pub list_skipped: bool,
    /// The dataset the run was to keep, kept or not (`load NAME`, `run --keep NAME`).
    #[serde(skip)]
    pub dataset: Option<String>,
    /// The output folder (`-o`); null when the run wrote nothing.
    pub output_dir: Option<String>,
    /// The shard this run did, when the folder is split across hosts.
    pub shard: Option<crate::engine::shard::Shard>,
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
    pub worker_start: Option<crate::engine::supervise::StartCost>,
}

/// A size for people: "512 B", "66.0 MiB", "1.74 GiB".
pub fn human_bytes(bytes: u64) -> String {
    shmpipe_block::Bytes(bytes).to_string()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Below this decoded size a run's memory is mostly the processes' own (code, codec buffers,
/// a few MiB each), so a ratio to the dataset would measure that fixed cost, not the sharing.
const RATIO_MIN_DATASET_BYTES: u64 = 64 << 20;

/// `n` and its noun, which agree: "1 image", "3 images".
/// The width that lines printed on `term` should fit: the terminal's own width, or `COLUMNS`
/// when the terminal reports none; None off a terminal (a pipe or a file keeps whole lines for
/// the scripts that read them; `--json` is the format for those).
pub fn width_of(term: &console::Term) -> Option<usize> {
    if !term.is_term() {
        return None;
    }
    term.size_checked()
        .map(|(_rows, columns)| usize::from(columns))
        .or_else(|| std::env::var("COLUMNS").ok()?.trim().parse().ok())
        .filter(|&w| w >= MIN_FIT_WIDTH)
}

/// Narrower than this, wrapping makes text harder to read, not easier.
const MIN_FIT_WIDTH: usize = 20;

/// `text` with each line longer than `width` broken at spaces into lines that fit. A
/// continuation is indented two more than its line; a word longer than a line (a long path) is
/// cut where it must be. `None` leaves the text as it is.
pub fn fit(text: &str, width: Option<usize>) -> String {
    let Some(width) = width else {
        return text.to_string();
    };
    let mut out = String::with_capacity(text.len() + text.len() / width.max(1));
    for line in text.split_inclusive('\n') {
        let (body, newline) = match line.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (line, ""),
        };
        out.push_str(&fit_line(body, width.max(MIN_FIT_WIDTH)).join("\n"));
        out.push_str(newline);
    }
    out
}

fn fit_line(line: &str, width: usize) -> Vec<String> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let hang = (indent + 2).min(width / 2);
    let mut lines = Vec::new();
    let mut current = " ".repeat(indent.min(width / 2));
    let mut len = current.len();
    let mut empty = true;
    for mut word in line.split_whitespace() {
        loop {
            let word_len = word.chars().count();
            let needed = if empty { word_len } else { word_len + 1 };
            if len + needed <= width {
                if !empty {
                    current.push(' ');
                }
                current.push_str(word);
                len += needed;
                empty = false;
                break;
            }
            // A word that fits a fresh line starts one; a longer one (a path) is cut anyway,
            // so it starts here, after its label.
            if !empty && (word_len <= width - hang || len + 2 > width) {
                lines.push(std::mem::replace(&mut current, " ".repeat(hang)));
                len = hang;
                empty = true;
                continue;
            }
            if !empty {
                current.push(' ');
                len += 1;
            }
            // Too long for any line: cut it at the end of this one.
            let cut = word
                .char_indices()
                .nth(width - len)
                .map_or(word.len(), |(at, _)| at);
            current.push_str(&word[..cut]);
            lines.push(std::mem::replace(&mut current, " ".repeat(hang)));
            len = hang;
            empty = true;
            word = &word[cut..];
        }
    }
    if !empty || lines.is_empty() {
        lines.push(current);
    }
    lines
}

/// "N files skipped: not images", and with `list` one line naming each.
pub fn push_skipped(out: &mut String, skipped: &[String], list: bool) {
    if skipped.is_empty() {
        return;
    }
    out.push_str(&format!(
        "{} skipped: not images{}\n",
        count(skipped.len() as u64, "file"),
        if list { "" } else { " (--verbose names them)" }
    ));
    if list {
        for path in skipped {
            out.push_str(&format!("  skipped: {path}\n"));
        }
    }
}

pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

impl Summary {
    /// What stopped the run before every planned image was done, if anything did.
    fn stop_reason(&self) -> Option<String> {
        if let Some(sig) = &self.stopped_by_signal {
            Some(format!("stopped by {sig}"))
        } else if self.stopped_by_strict {
            Some("stopped at the first failure (--strict)".into())
        } else {
            None
        }
    }

    pub fn text(&self) -> String {
        let stop = self.stop_reason();
        let mut out = self.headline(stop.as_deref());
        self.push_problems(&mut out);
        if let Some(block) = &self.block {
            self.push_block(&mut out, block, stop.is_some());
        }
        let interrupted = self.stopped_by_signal.is_some() && self.output_dir.is_some();
        if interrupted && self.images_not_started > 0 {
            out.push_str(
                "the outputs written are complete: run the same command with --skip-existing to \
                 do only the images whose output is missing\n",
            );
        }
        out
    }

    /// The first line: how many images were done of how many, and why the run stopped.
    fn headline(&self, stop: Option<&str>) -> String {
        let mut out = String::new();
        if self.images_planned == 0 {
            let line = match (&stop, self.files_existing) {
                (Some(stop), _) => format!("nothing done: {stop} before any image was planned"),
                (None, 0) => "nothing to do: no images found".into(),
                (None, n) => format!(
                    "nothing to do: {} {} (--skip-existing)",
                    count(n, "output"),
                    if n == 1 { "exists" } else { "exist" }
                ),
            };
            out.push_str(&line);
            out.push('\n');
        } else {
            out.push_str(&format!(
                "{} of {} done, {} failed",
                self.images_ok,
                count(self.images_planned, "image"),
                self.images_failed
            ));
            if self.images_not_started > 0 {
                out.push_str(&format!(", {} not started", self.images_not_started));
            }
            if let Some(stop) = stop {
                out.push_str(&format!(": {stop}"));
            }
            out.push('\n');
        }
        out
    }

    /// What went wrong or was left alone: retries, failures and warnings with their files,
    /// folders not flushed, files skipped, outputs that existed, the shard.
    fn push_problems(&self, out: &mut String) {
        if self.images_retried > 0 || self.worker_restarts > 0 {
            out.push_str(&format!(
                "{} retried after a worker died, {}\n",
                count(self.images_retried, "image"),
                count(self.worker_restarts, "worker restart")
            ));
        }
        for f in &self.failures {
            out.push_str(&format!("  failed: {}: {}\n", f.path, f.reason));
        }
        if !self.folders_refused.is_empty() {
            out.push_str(&format!(
                "{} not read, what they hold not done:\n",
                count(self.folders_refused.len() as u64, "folder")
            ));
        }
        for f in &self.folders_refused {
            out.push_str(&format!("  refused folder: {}: {}\n", f.path, f.reason));
        }
        // A warning is a damaged JPEG kept, a JPEG output without its source's transparency,
        // or metadata of a source left out of its output.
        let starting = |with: &str| {
            self.warnings
                .iter()
                .filter(|w| w.reason.starts_with(with))
                .count()
        };
        let left_out = starting(shmpipe_worker::metadata::LEFT_OUT);
        let transparency = starting(shmpipe_worker::codec::TRANSPARENCY_DROPPED);
        let damaged = self.warnings.len() - left_out - transparency;
        if transparency > 0 {
            out.push_str(&format!(
                "{} written as JPEG without their transparency: the colours under transparent pixels show (--background COLOR flattens it)\n",
                count(transparency as u64, "image")
            ));
        }
        if damaged > 0 {
            out.push_str(&format!(
                "{} kept with damage (--allow-truncated)\n",
                count(damaged as u64, "image")
            ));
        }
        if left_out > 0 {
            out.push_str(&format!(
                "{} written without metadata over its limit or malformed\n",
                count(left_out as u64, "image")
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
        push_skipped(out, &self.skipped, self.list_skipped);
        if self.images_planned > 0 && self.files_existing > 0 {
            out.push_str(&format!(
                "{} left alone: their output exists (--skip-existing)\n",
                count(self.files_existing, "image")
            ));
        }
        if let (Some(s), Some(files)) = (&self.shard, self.shard_files) {
            out.push_str(&format!(
                "shard {}/{} (from {}): {} of the folder\n",
                s.index,
                s.count,
                s.source,
                count(files, "file")
            ));
        }
    }

    /// What the block did: the throughput, where the outputs went, what was kept, the block's
    /// size and the peak memory.
    fn push_block(&self, out: &mut String, block: &str, stopped: bool) {
        if self.images_ok > 0 {
            let resized = if (self.source_megapixels - self.megapixels).abs() > 0.05 {
                format!(" (resized to {:.1} MP)", self.megapixels)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "{:.1} MP decoded{resized} in {:.2} s = {:.1} MP/s with {}\n",
                self.source_megapixels,
                self.wall_s,
                self.megapixels_per_s,
                count(self.workers as u64, "worker")
            ));
        }
        match &self.output_dir {
            Some(dir) if stopped => out.push_str(&format!(
                "written to {dir}: the complete outputs, none of the rest\n"
            )),
            Some(dir) => out.push_str(&format!("written to {dir}\n")),
            None if self.kept => {}
            None => match &self.dataset {
                Some(name) => out.push_str(&format!(
                    "dataset {name} not kept: stopped before every image was decoded, its block is removed\n"
                )),
                None => out.push_str("nothing written (no -o)\n"),
            },
        }
        if self.kept {
            out.push_str(&format!(
                "kept as {block}: attach to it by name; remove it with `shmpipe rm {block}`\n"
            ));
        }
        match self.window_slot_bytes {
            Some(slot) => out.push_str(&format!(
                "block {block}: {:.1} MiB, a window of {} of {:.1} MiB ({:.1} MiB of pixels decoded in all)\n",
                mib(self.block_bytes),
                count(self.workers.into(), "slot"),
                mib(slot),
                mib(self.dataset_bytes)
            )),
            None => out.push_str(&format!(
                "block {block}: {:.1} MiB ({:.1} MiB of pixels)\n",
                mib(self.block_bytes),
                mib(self.dataset_bytes)
            )),
        }
        match (self.peak_total_pss_bytes, self.peak_total_rss_bytes) {
            (Some(pss), Some(rss)) => {
                let ratio = if self.dataset_bytes >= RATIO_MIN_DATASET_BYTES {
                    format!(
                        " ({:.2}x the decoded dataset)",
                        pss as f64 / self.dataset_bytes as f64
                    )
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "peak memory, all processes: Pss {:.1} MiB{ratio}, Rss {:.1} MiB\n",
                    mib(pss),
                    mib(rss)
                ));
            }
            _ => out.push_str("peak memory: not measured (no /proc on this system)\n"),
        }
    }
}

#[cfg(test)]
mod fit_tests {
    use super::fit;

    #[test]
    fn long_lines_break_at_spaces_and_keep_every_word() {
        let text = "peak memory, all processes: Pss 48.9 MiB (1.23x the decoded dataset), Rss 120.0 MiB\nshort\n";
        let fitted = fit(text, Some(40));
        for line in fitted.lines() {
            assert!(line.chars().count() <= 40, "{line:?}");
        }
        assert_eq!(
            fitted.split_whitespace().collect::<Vec<_>>(),
            text.split_whitespace().collect::<Vec<_>>()
        );
        assert!(fitted.ends_with("\nshort\n"), "{fitted:?}");
        assert!(
            fitted.lines().nth(1).unwrap().starts_with("  "),
            "continuations are indented"
        );
    }

    #[test]
    fn a_word_longer_than_the_line_is_cut_and_nothing_is_lost() {
        let path = "/tmp/".to_string() + &"x".repeat(70) + ".jpg";
        let text = format!("  failed: {path}: not an image\n");
        let fitted = fit(&text, Some(30));
        for line in fitted.lines() {
            assert!(line.chars().count() <= 30, "{line:?}");
        }
        assert_eq!(
            fitted.split_whitespace().collect::<String>(),
            text.split_whitespace().collect::<String>()
        );
    }

    #[test]
    fn no_width_and_short_lines_are_left_alone() {
        let text = "10 of 10 images done, 0 failed\n";
        assert_eq!(fit(text, None), text);
        assert_eq!(fit(text, Some(60)), text);
    }
}
