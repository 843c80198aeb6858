//! Command-line interface: what the user can type, parsed by clap. Validation that needs the
//! file system (folders exist, can be created) happens in `run`, before any block exists.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use shmpipe_worker::codec::PngCompression;

use crate::engine::settings::Job;
pub use crate::engine::settings::Labels;
/// What `run --resize` asks for.
pub use shmpipe_worker::resize::Size as Resize;

mod values;
use values::{
    format_values, parse_age, parse_box, parse_bytes, parse_channels, parse_color, parse_labels,
    parse_png_compression, parse_run_channels, parse_size,
};

const RUN_EXAMPLES: &str = "\
Examples:
  shmpipe run assets/ -o /tmp/out --ops grayscale,blur:2 -j 4
  shmpipe run photos/ -o out/ --ops invert --format png --quiet
  shmpipe run photos/ --ops scale:2,contrast:1.5 --json      # transform and report, write nothing
  shmpipe run a.jpg b.png shots/ -o out/ --exclude 'thumbs/**' --dry-run
  find photos -name '*.jpg' -mtime -1 -print0 | shmpipe run --files-from - -0 -o out/

Ops (comma list, applied in order): invert grayscale brightness:F scale:F contrast:F
gamma:G threshold:T blur:SIGMA sharpen[:A] flip-h flip-v crop:X,Y,W,H rotate:90|180|270
resize:SIZE; `shmpipe ops` gives each one's parameters, ranges and formula.

Exit codes: 0 all images ok, 1 some failed, 2 usage or setup error, 129/130/143 stopped by
SIGHUP/SIGINT/SIGTERM.";

#[derive(Debug, Parser)]
#[command(
    name = "shmpipe",
    version,
    about = "Load an image folder once into one named shared-memory block; N worker processes transform it in place."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Transform every image of a folder with N worker processes sharing one block.
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunCli>),
    /// Decode a folder once into a named dataset that stays in shared memory (block
    /// `shmpipe-NAME`), for any process to attach to by name.
    #[command(
        after_help = "Example:\n  shmpipe load photos/ --name faces --resize 224x224 --fit cover\n  pip install ./python\n  python3 -c \"import shmpipe; print(shmpipe.attach('faces').shape)\""
    )]
    Load(LoadCli),
    /// Encode the images of a named dataset to a folder, under their relative paths.
    Save(SaveCli),
    /// Write a uniform dataset as one (N, H, W, C) uint8 .npy file.
    Export(ExportCli),
    /// Transform a named dataset in place with N workers; `normalize` uses the whole dataset's
    /// per-channel mean and deviation (two passes).
    Apply(ApplyCli),
    /// Rebuild a dataset's interrupted images from their sources (replaying the load and every
    /// apply since) and finish an apply that was stopped or killed.
    Repair(RepairCli),
    /// Show the progress of a run from another terminal, by its block's name, until it ends.
    Watch(WatchCli),
    /// List our blocks: name, memory held, owner, live, stale or kept, state, images, classes,
    /// age.
    Ls {
        /// Look in DIR (a `--backing` folder) instead of /dev/shm.
        #[arg(long, value_name = "DIR")]
        backing: Option<PathBuf>,
        /// One JSON array on stdout.
        #[arg(long)]
        json: bool,
        /// Sizes in bytes instead of KiB, MiB, GiB.
        #[arg(long)]
        bytes: bool,
    },
    /// Remove the blocks whose owner is gone (left by a killed run), and the temporary output
    /// files their runs left. Live blocks are never touched.
    Clean {
        /// Look in DIR (a `--backing` folder) instead of /dev/shm.
        #[arg(long, value_name = "DIR")]
        backing: Option<PathBuf>,
        /// Output folders to rid of the temporary files (`.NAME.shmpipe-tmp-*`) of runs that are
        /// over, whether or not their block still exists.
        #[arg(value_name = "OUTPUT_DIR")]
        outputs: Vec<PathBuf>,
        /// Also remove the kept datasets created longer ago than AGE (30s, 90m, 12h, 7d) that no
        /// process holds; one in use stays.
        #[arg(long, value_name = "AGE", value_parser = parse_age)]
        older_than: Option<std::time::Duration>,
    },
    /// Remove one block by name, unless its owner is alive.
    Rm {
        /// The block's name as `shmpipe ls` shows it, or a dataset's name.
        name: String,
        /// Look in DIR (a `--backing` folder) instead of /dev/shm.
        #[arg(long, value_name = "DIR")]
        backing: Option<PathBuf>,
        /// Remove a kept dataset even while readers hold it (a Python handle, a save, an
        /// export): they keep what they mapped, the name goes. Never one being written.
        #[arg(long)]
        force: bool,
    },
    /// Write a deterministic synthetic image folder (gradients, noise, edges).
    Gen(GenCli),
    /// Benchmarks anyone can repeat.
    #[command(subcommand)]
    Bench(BenchCli),
    /// List every op of `--ops` with its parameter, range, default and formula, or describe one.
    #[command(after_help = "Examples:\n  shmpipe ops\n  shmpipe ops blur")]
    Ops {
        /// The op to describe (or any of its other names).
        #[arg(value_name = "NAME")]
        name: Option<String>,
    },
    /// Print a shell completion script on stdout (hidden commands and flags left out).
    #[command(after_help = "Examples (the folders may not exist yet):
  mkdir -p ~/.local/share/bash-completion/completions
  shmpipe completions bash > ~/.local/share/bash-completion/completions/shmpipe
  mkdir -p ~/.config/fish/completions
  shmpipe completions fish > ~/.config/fish/completions/shmpipe.fish")]
    Completions {
        /// The shell to complete for.
        #[arg(value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page on stdout, or write one page per command into DIR (shmpipe.1,
    /// shmpipe-run.1, ...).
    #[command(
        after_help = "Examples:\n  shmpipe man | man -l -\n  shmpipe man ~/.local/share/man/man1      # creates the folder\n  export MANPATH=\"$HOME/.local/share/man:$MANPATH\"   # then `man shmpipe` finds it"
    )]
    Man {
        /// Folder to write every page into, created if missing.
        #[arg(value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Internal: one worker process, started by `run`.
    #[command(hide = true)]
    Worker(WorkerCli),
}

#[derive(Debug, Args)]
pub struct RunCli {
    #[command(flatten)]
    pub inputs: Inputs,
    /// Output folder; each result keeps its relative path. Without it nothing is written.
    #[arg(short, long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Name each output from a template instead, under the -o folder: {dir} (the source's
    /// folder, relative), {stem}, {ext} (the output's extension), {name} ({stem}.{ext}),
    /// {index} (its place in sorted order, from 0; {index:4} pads it to 4 digits). For example
    /// '{dir}/{stem}_small.{ext}', or '{stem}.{ext}' for one flat folder. Two images given one
    /// name refuse the run.
    #[arg(long, value_name = "TEMPLATE", requires = "out")]
    pub output_name: Option<String>,
    /// Op chain, run in order, for example `grayscale,blur:2,brightness:1.2` or
    /// `crop:0,0,800,600,rotate:90,resize:256`; crop, rotate and resize make the output their
    /// size. `shmpipe ops` lists every op.
    #[arg(long, value_name = "LIST", default_value = "")]
    pub ops: String,
    /// Worker processes [default: available cores].
    #[arg(short = 'j', long = "workers", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,
    /// Output format [default: each input's own].
    #[arg(long, value_name = "FMT", value_parser = format_values(), ignore_case = true)]
    pub format: Option<String>,
    /// Write 3-channel outputs even when the op chain ends gray (by default a gray result is
    /// encoded as a one-channel image: smaller, and a third of the encoding work).
    #[arg(long)]
    pub rgb: bool,
    /// JPEG and lossy WebP quality, 1-100 [default: 90]. A warning when no output is a JPEG or a
    /// lossy WebP.
    #[arg(long, value_name = "Q", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: Option<u8>,
    /// Write WebP outputs lossless. By default a WebP output is lossy at --quality, unless its
    /// input was a lossless WebP.
    #[arg(long)]
    pub lossless: bool,
    /// Flatten every image with alpha onto this colour and write it without alpha: white,
    /// black, #rrggbb or R,G,B. Without it alpha is kept where the format holds it; a JPEG
    /// (which holds none) drops it, with a warning naming each image that had transparency
    #[arg(long, value_name = "COLOR", value_parser = parse_color)]
    pub background: Option<[u8; 3]>,
    /// PNG compression: fast (the default), default or best. All lossless; slower levels give
    /// smaller files. A warning when no output is a PNG.
    #[arg(long, value_name = "LEVEL", value_parser = parse_png_compression)]
    pub png_compression: Option<PngCompression>,
    /// Write outputs without the ICC profile, EXIF and comments of their sources (by default they
    /// are carried into every output whose format holds them).
    #[arg(long)]
    pub strip: bool,
    /// Resize every image at decode time, straight into its slot: WxH (a box), Wx (the width,
    /// the height follows), xH, or S (the shorter side becomes S, as torchvision's Resize(S)).
    /// By default each image keeps its aspect ratio and fits inside the box (see --fit).
    #[arg(long, value_name = "WxH", value_parser = parse_box)]
    pub resize: Option<Resize>,
    /// How --resize fits an image: inside (keep the aspect ratio, fit inside the box: each image
    /// its own shape), or one shape for all, one (N, H, W, C) array: stretch (to WxH exactly),
    /// cover (crop the overflow), contain (black bars).
    #[arg(long, value_name = "FIT", default_value = "inside", value_parser = ["inside", "stretch", "cover", "contain"])]
    pub fit: String,
    /// With --resize: never enlarge; an image already inside the box keeps its size and its
    /// pixels (ImageMagick's `-resize WxH>`).
    #[arg(long, requires = "resize")]
    pub no_enlarge: bool,
    /// shared: one block, every worker attached to it (the point of shmpipe). copy: the naive
    /// approach, for comparison: every worker decodes the whole dataset into its own memory.
    #[arg(long, value_name = "MODE", default_value = "shared", value_parser = ["shared", "copy"])]
    pub mode: String,
    /// Channels of every image: auto keeps each image's own (gray 1, gray with alpha 2, colour
    /// 3, colour with alpha 4); 1 (gray), 3 (RGB) or 4 (RGBA) forces one layout on all. With
    /// --keep, auto is 3: a dataset holds one layout.
    #[arg(long, value_name = "C", default_value = "auto", value_parser = parse_run_channels)]
    pub channels: u32,
    #[command(flatten)]
    pub limits: Limits,
    /// Put the block in a regular file in DIR instead of /dev/shm (for a small /dev/shm).
    #[arg(long, value_name = "DIR")]
    pub backing: Option<PathBuf>,
    /// Stop at the first image that fails (exit 1); by default a bad file never stops the others.
    #[arg(long)]
    pub strict: bool,
    /// Keep a truncated or corrupt JPEG, decoded as far as its data goes (grey after that),
    /// listed as a warning; by default it fails.
    #[arg(long)]
    pub allow_truncated: bool,
    /// Do not flush each output to disk before renaming it into place (faster on a slow disk;
    /// after a crash of the machine an output may then be empty).
    #[arg(long, requires = "out")]
    pub no_fsync: bool,
    /// Sample memory 20 times a second whatever the reads cost (`bench memory` sets it).
    #[arg(long, hide = true)]
    pub exact_memory: bool,
    /// Leave alone every image whose output already exists; do only what is missing.
    #[arg(long, requires = "out")]
    pub skip_existing: bool,
    /// Do only shard K of N (0-based) of the folder: a stable split by a hash of each relative
    /// path. Without it, a Slurm array task or a Kubernetes Indexed Job picks K (see --shards).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<String>,
    /// The shard count N in a Slurm job array (SLURM_ARRAY_TASK_ID gives K: the array is 0 to
    /// N-1) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX gives K).
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Keep the block afterwards as the named dataset NAME (block `shmpipe-NAME`): any process,
    /// NumPy included, can attach to it by name until `shmpipe rm NAME`.
    #[arg(long, value_name = "NAME")]
    pub keep: Option<String>,
    /// With --keep: record each image's class, as `load --labels` does: `folder`, or a labels
    /// file (FILE.csv or FILE.json).
    #[arg(long, value_name = "HOW", value_parser = parse_labels, requires = "keep")]
    pub labels: Option<Labels>,
    #[command(flatten)]
    pub report: Report,
}

/// What a decoding job (`run`, `load`) takes: files and folders, from the command line or a
/// list, and the globs that choose among them.
#[derive(Debug, Args)]
pub struct Inputs {
    /// Images and folders of images (folders walked recursively in sorted order). Paths (each
    /// output's, each image's in a dataset) are relative to the inputs' common folder: the
    /// folder itself for one folder, a file's folder for one file, else the deepest folder
    /// holding them all.
    #[arg(value_name = "INPUT", required_unless_present = "files_from")]
    pub inputs: Vec<PathBuf>,
    /// Read more inputs from FILE (`-`: standard input), one path a line; relative paths are
    /// relative to the current folder.
    #[arg(long, value_name = "FILE")]
    pub files_from: Option<PathBuf>,
    /// With --files-from: the paths are separated by NUL bytes, not newlines (`find -print0`),
    /// so that a name may hold a newline.
    #[arg(short = '0', long = "null", requires = "files_from")]
    pub null: bool,
    /// Take only the files matching this glob (repeatable): a pattern with a '/' is matched
    /// against the path relative to the common folder, one without against the file's name;
    /// `*`, `**` (across folders), `?`, `[a-z]`, `[!a-z]`.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out the files matching this glob (repeatable), as --include matches.
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
}

impl Inputs {
    /// A job on these inputs (and those of `--files-from`), taking what the globs choose.
    pub fn job(&self) -> anyhow::Result<Job> {
        let mut inputs = self.inputs.clone();
        if let Some(list) = &self.files_from {
            inputs.extend(crate::engine::select::read_list(list, self.null)?);
        }
        let mut job = Job::on_inputs(&inputs)?;
        job.filters = crate::engine::select::Filters::new(&self.include, &self.exclude)?;
        Ok(job)
    }
}

/// How a decoding job (`run`, `load`) reports, or whether it only plans.
#[derive(Debug, Args)]
pub struct Report {
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress display and no text summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Name every skipped file (not an image) in the text summary; --json always does.
    #[arg(short, long)]
    pub verbose: bool,
    /// Plan only and say what would be done: the images, the files refused and skipped with
    /// their reasons, the memory the block would take and every output path. Reads headers
    /// only; creates no block, starts no worker, writes nothing (not even the -o folder).
    #[arg(long)]
    pub dry_run: bool,
}

impl Report {
    /// `job` reporting as these flags say.
    pub fn onto(&self, job: Job) -> Job {
        Job {
            json: self.json,
            quiet: self.quiet,
            verbose: self.verbose,
            dry_run: self.dry_run,
            ..job
        }
    }
}

/// What one image may cost a decoding job (`run`, `load`) before it is refused or its worker
/// killed.
#[derive(Debug, Args)]
pub struct Limits {
    /// Refuse images with more pixels than this (checked from the header, before any memory).
    #[arg(long, value_name = "N", default_value_t = shmpipe_worker::codec::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Kill a worker that holds one image longer than this many seconds (0: never); the image
    /// is decoded again from its source by a new worker, and marked failed after three such
    /// ends.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub image_timeout: u64,
}

impl Limits {
    /// `--image-timeout`, None for 0 (never).
    pub fn image_timeout(&self) -> Option<std::time::Duration> {
        (self.image_timeout > 0).then(|| std::time::Duration::from_secs(self.image_timeout))
    }
}

#[derive(Debug, Args)]
pub struct GenCli {
    /// Folder to write `img000000.jpg` ... into.
    pub dir: PathBuf,
    /// Number of images to write.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub count: u64,
    /// Size of every image.
    #[arg(long, value_name = "WxH", default_value = "1920x1080", value_parser = parse_size)]
    pub size: (u32, u32),
    /// Format of every image (JPEG at quality 90).
    #[arg(long, value_name = "FMT", default_value = "jpeg", value_parser = ["jpeg", "png"])]
    pub format: String,
    /// Seed of the generator: the same seed writes the same images.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct LoadCli {
    #[command(flatten)]
    pub inputs: Inputs,
    /// The dataset's name: letters, digits, '.', '_', '-'.
    #[arg(long)]
    pub name: String,
    /// Record each image's class. `folder`: the index of the top-level folder it lies in,
    /// among INPUT's folders in sorted order (torchvision ImageFolder's rule); an image lying
    /// directly in INPUT is an error. FILE.csv: lines `path,label` (a first line `path,label`
    /// is a header; a field holding a comma in double quotes); FILE.json: an object
    /// {"path": "label", ...}. Paths are relative to INPUT; the classes are the labels in
    /// sorted order; an image the file does not name is an error.
    #[arg(long, value_name = "HOW", value_parser = parse_labels)]
    pub labels: Option<Labels>,
    /// Resize every image at decode time: WxH (a box, see --fit), or S (the shorter side
    /// becomes S: torchvision's Resize(S), for augmentation later), Wx or xH. The aspect ratio
    /// is kept by default, as with `run`: each image its own shape.
    #[arg(long, value_name = "WxH", value_parser = parse_box)]
    pub resize: Option<Resize>,
    /// How --resize WxH fits an image: inside (the default: keep the aspect ratio, fit inside
    /// the box, each image its own shape, as S, Wx and xH always do), or every image WxH, one
    /// (N, H, W, C) array: cover (keep the ratio, crop the overflow, centred), contain (keep
    /// it, black bars) or stretch (the ratio not kept: torchvision's Resize((H, W))).
    #[arg(long, value_name = "FIT", value_parser = ["inside", "cover", "contain", "stretch"])]
    pub fit: Option<String>,
    /// Channels of every image: 1 (gray), 3 (RGB) or 4 (RGBA). One layout for the whole
    /// dataset, so that it is one (N, H, W, C) array: an image with other channels is converted.
    #[arg(long, value_name = "C", default_value_t = 3, value_parser = parse_channels)]
    pub channels: u32,
    /// Worker processes [default: available cores].
    #[arg(short = 'j', long = "workers", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,
    #[command(flatten)]
    pub limits: Limits,
    /// Put the dataset in a regular file in DIR instead of /dev/shm (for a small /dev/shm).
    #[arg(long, value_name = "DIR")]
    pub backing: Option<PathBuf>,
    #[command(flatten)]
    pub report: Report,
}

#[derive(Debug, Args)]
pub struct SaveCli {
    /// The dataset (NAME or shmpipe-NAME).
    pub name: String,
    /// Output folder; each image is written under its relative path.
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Output format [default: each source's own].
    #[arg(long, value_name = "FMT", value_parser = format_values(), ignore_case = true)]
    pub format: Option<String>,
    /// JPEG quality, 1-100.
    #[arg(long, value_name = "Q", default_value_t = 90, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: u8,
    /// PNG compression: fast, default or best.
    #[arg(long, value_name = "LEVEL", default_value = "fast", value_parser = parse_png_compression)]
    pub png_compression: PngCompression,
    /// As `run --background`: flatten images with alpha onto this colour.
    #[arg(long, value_name = "COLOR", value_parser = parse_color)]
    pub background: Option<[u8; 3]>,
    /// As `run --no-fsync`.
    #[arg(long)]
    pub no_fsync: bool,
    /// Encoding threads [default: available cores].
    #[arg(short = 'j', long = "workers", value_name = "N")]
    pub workers: Option<u32>,
    /// Look for the dataset in DIR (a `--backing` folder) instead of /dev/shm.
    #[arg(long, value_name = "DIR")]
    pub backing: Option<PathBuf>,
}

/// What `apply` and `repair` share: the workers of each pass over a kept dataset.
#[derive(Debug, Args)]
pub struct PassCli {
    /// Worker processes [default: available cores].
    #[arg(short = 'j', long = "workers", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,
    /// Kill a worker that holds one image longer than this many seconds (0: never); the image
    /// is rebuilt from its source by a new worker, and marked failed after three such ends.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub image_timeout: u64,
    /// Look for the dataset in DIR (a `--backing` folder) instead of /dev/shm.
    #[arg(long, value_name = "DIR")]
    pub backing: Option<PathBuf>,
    /// No progress display and no summary.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct ApplyCli {
    /// The dataset (NAME or shmpipe-NAME).
    pub name: String,
    /// Op chain, as `run --ops`; may hold one dataset-wide op: normalize, normalize:float or
    /// equalize:dataset.
    #[arg(long, value_name = "LIST")]
    pub ops: String,
    #[command(flatten)]
    pub pass: PassCli,
}

#[derive(Debug, Args)]
pub struct RepairCli {
    /// The dataset (NAME or shmpipe-NAME).
    pub name: String,
    #[command(flatten)]
    pub pass: PassCli,
}

#[derive(Debug, Args)]
pub struct WatchCli {
    /// The block's name, as `run` prints it at start (or a dataset's name).
    pub name: String,
    /// Look in DIR (a `--backing` folder) instead of /dev/shm.
    #[arg(long, value_name = "DIR")]
    pub backing: Option<PathBuf>,
    /// One JSON object per line on stdout, twice a second and at the end: the counts, the
    /// elapsed time since the job started and its MP/s, as the progress display shows them.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ExportCli {
    /// The dataset (NAME or shmpipe-NAME).
    pub name: String,
    /// The file to write: FILE.npy, the pixels as one (N, H, W, C) array; or FILE.npz, NumPy's
    /// archive of `images` (that array), `labels` (int64, -1 without labels), `paths` (each
    /// image's source path, relative) and, with labels, `classes` (the class names in label
    /// order): `np.load(FILE)["labels"]`. Images of their own shapes go only to a .npz, as
    /// `pixels` (every image's values one after the other), `offsets` (image i is
    /// pixels[offsets[i]:offsets[i+1]]) and `shapes` (each one's H, W, C) instead of `images`;
    /// `shmpipe.read_export(FILE)` gives them back as arrays of their shapes.
    pub file: PathBuf,
    /// Export only the images that loaded (leaving out those that failed, listed on stderr)
    /// instead of refusing a dataset that holds failed images.
    #[arg(long)]
    pub partial: bool,
    /// Look for the dataset in DIR (a `--backing` folder) instead of /dev/shm.
    #[arg(long, value_name = "DIR")]
    pub backing: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BenchCli {
    /// The same job twice: one shared block, then a private copy of the dataset in every worker;
    /// peak total Pss and Rss of all processes, side by side.
    #[command(
        after_help = "Examples:\n  shmpipe bench memory --generate 2GiB -j 8\n  shmpipe bench memory photos/ -j 8 --resize 1024x768 --plot mem.svg"
    )]
    Memory(BenchMemoryCli),
}

#[derive(Debug, Args)]
pub struct BenchMemoryCli {
    /// Folder of images (or use --generate).
    pub input: Option<PathBuf>,
    /// Generate a synthetic dataset of this decoded size (for example 2GiB) in a temporary
    /// folder, removed afterwards.
    #[arg(long, value_name = "SIZE", value_parser = parse_bytes, conflicts_with = "input")]
    pub generate: Option<u64>,
    /// Size of each generated image.
    #[arg(long, value_name = "WxH", default_value = "1920x1080", value_parser = parse_size)]
    pub image_size: (u32, u32),
    /// Seed of the generated dataset.
    #[arg(long, value_name = "S", default_value_t = 1)]
    pub seed: u64,
    /// Worker processes [default: available cores].
    #[arg(short = 'j', long = "workers", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    pub workers: Option<u32>,
    /// Resize at decode, as `run --resize`.
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub resize: Option<(u32, u32)>,
    /// Op chain run in both modes. The default decodes the same RGB pixels in both; a chain
    /// that starts with grayscale decodes only the JPEG luma plane in shared mode.
    #[arg(long, value_name = "LIST", default_value = "blur:2")]
    pub ops: String,
    /// Draw total Pss over time for both modes, with the dataset size: SVG or PNG, by the
    /// file name's ending (.svg, .png). Give it twice for both, from the one measurement.
    #[arg(long, value_name = "FILE")]
    pub plot: Vec<PathBuf>,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
    /// With --json, include the sampled time series.
    #[arg(long)]
    pub series: bool,
}

#[derive(Debug, Args)]
pub struct WorkerCli {
    #[arg(long)]
    pub block: String,
    #[arg(long)]
    pub id: u32,
    #[arg(long)]
    pub parent: u32,
    #[arg(long)]
    pub backing: Option<PathBuf>,
    #[arg(long, default_value_t = shmpipe_worker::codec::DEFAULT_MAX_PIXELS)]
    pub max_pixels: u64,
    /// Bring a kept dataset's images to the latest step of its history (`apply`, `repair`).
    #[arg(long)]
    pub apply: bool,
    /// Cores the whole run may use (its -j); a worker runs an image's bands on those the other
    /// workers leave idle.
    #[arg(long, default_value_t = 1)]
    pub cores: u32,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Cli;

    /// Every visible subcommand has an about line and every visible argument a help line, at
    /// every depth of the command tree.
    #[test]
    fn every_command_and_argument_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.is_hide_set() {
                return;
            }
            if cmd.get_about().is_none() && !path.is_empty() {
                missing.push(format!("command `shmpipe{path}`"));
            }
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("`shmpipe{path}` argument {}", arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut cli = Cli::command();
        cli.build();
        let mut missing = Vec::new();
        walk(&cli, "", &mut missing);
        assert!(missing.is_empty(), "no help line: {missing:#?}");
    }

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }
}
