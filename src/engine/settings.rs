//! The one settings type of a job, [`Job`]: what `run`, `load` and `bench memory` each make of
//! their own flags, validated, and the one thing the engine reads.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use image::ImageFormat;
use shmpipe_block::{self as block, Backing};
use shmpipe_worker::codec::{self, PngCompression};
use shmpipe_worker::ops::OpChain;
use shmpipe_worker::resize::Geometry;

use crate::engine::shard::Shard;

/// How each image of a dataset gets its class.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Labels {
    #[default]
    None,
    /// The top-level folder it lies in (torchvision ImageFolder's rule).
    Folder,
    /// What a labels file (CSV or JSON) says.
    File(PathBuf),
}

/// JPEG and lossy WebP quality when none is given.
pub const DEFAULT_QUALITY: u8 = 90;

/// Everything a job needs, validated: what `run`, `load` and `bench memory` each make of their
/// own flags, and the one thing the engine reads.
#[derive(Clone, Debug)]
pub struct Job {
    /// The input folder, resolved: the inputs' common folder, which output paths are relative
    /// to.
    pub input: PathBuf,
    /// The files and folders given, under `input`; none: all of `input`.
    pub entries: Vec<PathBuf>,
    /// `--include` and `--exclude`.
    pub filters: crate::engine::select::Filters,
    /// The output folder, resolved and created; None: nothing is written.
    pub output: Option<PathBuf>,
    /// The output folder as the user gave it (what the summary shows).
    pub output_as_given: Option<PathBuf>,
    /// The output folder is inside the input folder and holds only outputs: the walk skips it.
    pub output_in_input: bool,
    /// The outermost folder this run created for its output folder (None: it was there): a run
    /// refused before it writes removes them again.
    pub output_created: Option<PathBuf>,
    /// `--output-name`: each output's name from its source's; None: its relative path.
    pub output_name: Option<crate::engine::naming::NameTemplate>,
    pub chain: OpChain,
    /// Every output in this format; None: each in its source's.
    pub format: Option<ImageFormat>,
    pub quality: Option<u8>,
    pub png_compression: Option<PngCompression>,
    pub strip: bool,
    pub lossless: bool,
    /// `--background`: images with alpha flattened onto this colour.
    pub background: Option<[u8; 3]>,
    pub rgb: bool,
    /// `--resize`, `--fit` and `--no-enlarge`.
    pub geometry: Option<Geometry>,
    pub channels: u32,
    pub max_pixels: u64,
    pub workers: u32,
    pub image_timeout: Option<Duration>,
    /// Each worker decodes into memory of its own (the comparison of `bench memory`).
    pub copy_mode: bool,
    pub backing: Option<PathBuf>,
    pub strict: bool,
    pub allow_truncated: bool,
    pub skip_existing: bool,
    pub no_fsync: bool,
    pub exact_memory: bool,
    pub shard: Option<Shard>,
    /// Keep the block as this dataset.
    pub keep: Option<String>,
    /// How each image gets its class (`--labels`).
    pub labels: Labels,
    /// The summary goes out as JSON: no progress display, no announcement.
    pub json: bool,
    pub quiet: bool,
    /// The text summary names every skipped file.
    pub verbose: bool,
    /// Plan only: no block, no worker, nothing written (`--dry-run`).
    pub dry_run: bool,
}

impl Job {
    /// A job on the folder `input` with every setting at its default: no output, no ops, every
    /// core, RGB or gray as each image is, refusing nothing but what is damaged.
    pub fn on(input: &Path) -> anyhow::Result<Job> {
        if !input.exists() {
            bail!("input folder {} does not exist", input.display());
        }
        if !input.is_dir() {
            bail!("input {} is not a folder", input.display());
        }
        let input = input
            .canonicalize()
            .with_context(|| format!("cannot resolve input folder {}", input.display()))?;
        Ok(Job {
            input,
            entries: Vec::new(),
            filters: Default::default(),
            output: None,
            output_as_given: None,
            output_in_input: false,
            output_created: None,
            output_name: None,
            chain: OpChain::default(),
            format: None,
            quality: None,
            png_compression: None,
            strip: false,
            lossless: false,
            background: None,
            rgb: false,
            geometry: None,
            channels: block::CHANNELS_PER_IMAGE,
            max_pixels: codec::DEFAULT_MAX_PIXELS,
            workers: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            image_timeout: None,
            copy_mode: false,
            backing: None,
            strict: false,
            allow_truncated: false,
            skip_existing: false,
            no_fsync: false,
            exact_memory: false,
            shard: None,
            keep: None,
            labels: Labels::None,
            json: false,
            quiet: false,
            verbose: false,
            dry_run: false,
        })
    }

    /// A job on files and folders (`run a.jpg photos/ ...`): on their common folder, taking
    /// only them.
    pub fn on_inputs(inputs: &[PathBuf]) -> anyhow::Result<Job> {
        let (root, entries) = crate::engine::select::resolve(inputs)?;
        let whole_folder = entries.len() == 1 && entries[0] == root;
        let mut job = Job::on(&root)?;
        if !whole_folder {
            job.entries = entries;
        }
        Ok(job)
    }

    /// Sets the block's folder (`--backing DIR`), which must exist.
    pub fn backing(mut self, dir: Option<PathBuf>) -> anyhow::Result<Job> {
        if let Some(dir) = &dir {
            if !dir.is_dir() {
                bail!("--backing {} is not a folder", dir.display());
            }
        }
        self.backing = dir;
        Ok(self)
    }

    pub(crate) fn backing_dir(&self) -> Backing {
        self.backing.clone().map_or(Backing::Shm, Backing::Dir)
    }
}
