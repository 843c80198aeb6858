//! `shmpipe`: load an image folder once into one named shared-memory block, let N worker
//! processes transform it in place, save the results, unlink the block.
//!
//! `main` only parses, dispatches and maps the outcome to an exit code (see [`exit`]).

// The binary's code is safe Rust. Two modules call the block's `unsafe fn`s, whose preconditions
// only the coordinator can know (every worker parked or reaped): `apply` (opening a pass,
// reading pixels between passes) and `supervise` (taking over a dead worker's claim). Each call
// is allowed where it stands, with its `// SAFETY:` line; nothing else may be unsafe.
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod cli;
mod commands;
mod engine;
mod exit;

use clap::error::ErrorKind;
use clap::Parser;

use cli::{Cli, Command};
use commands::{apply, bench, blocks, dataset, gen, manual, ops, run, watch};

fn main() {
    let cli = Cli::try_parse().unwrap_or_else(|e| refuse(e));
    let code = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Ls {
            backing,
            json,
            bytes,
        } => blocks::ls(backing, json, bytes),
        Command::Clean {
            backing,
            outputs,
            older_than,
        } => blocks::clean(backing, &outputs, older_than),
        Command::Rm {
            name,
            backing,
            force,
        } => blocks::rm(&name, backing, force),
        Command::Gen(args) => match gen::generate(
            &args.dir,
            args.count,
            args.size,
            &args.format,
            args.seed,
            90,
        ) {
            Ok(()) => exit::OK,
            Err(e) => {
                eprintln!("shmpipe: error: {e:#}");
                e.downcast_ref::<gen::Stopped>()
                    .map_or(exit::USAGE, |stopped| stopped.code)
            }
        },
        Command::Bench(cli::BenchCli::Memory(args)) => bench::memory(args),
        Command::Load(args) => dataset::load(args),
        Command::Save(args) => dataset::save(args),
        Command::Export(args) => dataset::export(args),
        Command::Apply(args) => apply::apply(args),
        Command::Repair(args) => apply::repair(args),
        Command::Watch(args) => watch::watch(args),
        Command::Ops { name } => ops::ops(name.as_deref()),
        Command::Completions { shell } => manual::completions(shell),
        Command::Man { dir } => manual::man_pages(dir.as_deref()),
        Command::Worker(args) => run_worker(args),
    };
    std::process::exit(code);
}

/// A command line clap refused, in the one error style of every shmpipe error (`shmpipe: error:
/// ...` and what to do), exit 2. Help and --version are printed as clap prints them.
fn refuse(e: clap::Error) -> ! {
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        e.exit();
    }
    // Plain text: the rendering's Display drops clap's colours.
    let text = e.render().to_string();
    eprint!(
        "shmpipe: error: {}",
        text.strip_prefix("error: ").unwrap_or(&text)
    );
    std::process::exit(exit::USAGE);
}

/// The hidden worker mode: the coordinator re-executes this binary with `worker`.
fn run_worker(args: cli::WorkerCli) -> i32 {
    let worker_args = shmpipe_worker::worker::WorkerArgs {
        block: args.block,
        backing: args
            .backing
            .map_or(shmpipe_block::Backing::Shm, shmpipe_block::Backing::Dir),
        id: args.id,
        parent: args.parent,
        max_pixels: args.max_pixels,
        apply: args.apply,
        cores: args.cores,
    };
    match shmpipe_worker::worker::run(&worker_args) {
        Ok(_) => exit::OK,
        // A worker prints nothing; the coordinator sees the exit code and the block.
        Err(_) => exit::USAGE,
    }
}
