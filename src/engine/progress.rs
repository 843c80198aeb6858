//! The live display: an overall bar (images, MP/s, ETA) and one line per worker (its count and
//! current file), drawn on stderr from counters read in the block. Hidden off a terminal and
//! with `--quiet`. The one factory, [`Display::new`], decides that.
//!
//! The clock is the job's start as its block records it, so `run` and a `watch` of it show the
//! same elapsed time and the same MP/s. Lines fit the terminal's width: the bar takes what the
//! text leaves, and a worker's file name is cut rather than wrapped.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use shmpipe_block::{Mapping, NO_IMAGE};

/// What the display shows at one moment, from the block's counters and the job's clock: the
/// overall bar, and `watch --json`'s records.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    pub images_done: u64,
    pub images_failed: u64,
    /// Pixels of the images done, in millions: a run counts its sources' pixels (before any
    /// resize), as its summary does; an apply, the pixels of the images it transformed.
    pub megapixels: f64,
    /// Since the job's start (`run_started_unix_ns`), not since this process began.
    pub elapsed: Duration,
    pub megapixels_per_s: f64,
}

impl Figures {
    pub fn read(block: &Mapping, start: SystemTime) -> Figures {
        let h = block.header();
        let megapixels = h.pixels_done.load(Ordering::Acquire) as f64 / 1e6;
        let elapsed = SystemTime::now()
            .duration_since(start)
            .unwrap_or(Duration::ZERO);
        Figures {
            images_done: h.images_done.load(Ordering::Acquire),
            images_failed: h.images_failed.load(Ordering::Acquire),
            megapixels,
            elapsed,
            megapixels_per_s: megapixels / elapsed.as_secs_f64().max(1e-3),
        }
    }
}

pub struct Display {
    multi: MultiProgress,
    overall: ProgressBar,
    workers: Vec<ProgressBar>,
    /// The job's start (the block's `run_started_unix_ns`).
    start: SystemTime,
}

impl Display {
    /// `start` is when the job began: the clock of the elapsed time and the MP/s.
    pub fn new(images: u64, workers: usize, hidden: bool, start: SystemTime) -> Display {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr_with_hz(15)
        };
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(images));
        overall.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar:.cyan/blue} {pos}/{len} {msg} ETA {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        let style =
            ProgressStyle::with_template("  {prefix:>10} {wide_msg}").expect("static template");
        let workers = (0..workers)
            .map(|id| {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(style.clone());
                bar.set_prefix(format!("worker {id}"));
                bar
            })
            .collect();
        Display {
            multi,
            overall,
            workers,
            start,
        }
    }

    /// Redraws from the block's counters.
    pub fn update(&self, block: &Mapping) {
        let f = Figures::read(block, self.start);
        self.overall.set_elapsed(f.elapsed);
        self.overall.set_position(f.images_done + f.images_failed);
        let failed_note = if f.images_failed > 0 {
            format!(", {} failed", f.images_failed)
        } else {
            String::new()
        };
        self.overall
            .set_message(format!("{:.1} MP/s{failed_note}", f.megapixels_per_s));
        for (bar, rec) in self.workers.iter().zip(block.workers()) {
            let count =
                rec.images_done.load(Ordering::Acquire) + rec.images_failed.load(Ordering::Acquire);
            let current = rec.current_image.load(Ordering::Acquire);
            let file = if current == NO_IMAGE || current as usize >= block.image_count() {
                "idle".to_string()
            } else {
                String::from_utf8_lossy(block.source(current as usize)).into_owned()
            };
            let noun = if count == 1 { "image " } else { "images" };
            bar.set_message(format!("{count:>5} {noun}  {file}"));
        }
    }

    /// Prints a line above the bars (or plainly when they are hidden).
    pub fn println(&self, line: &str) {
        self.multi.suspend(|| eprintln!("{line}"));
    }

    pub fn finish(&self) {
        for bar in &self.workers {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
        let _ = self.multi.clear();
    }
}
