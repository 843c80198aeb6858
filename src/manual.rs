//! Shell completions and man pages, generated from the clap definitions in [`crate::cli`], so
//! they can never disagree with what the binary accepts.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;
use crate::exit;

/// `shmpipe completions SHELL`: the completion script on stdout.
pub fn completions(shell: clap_complete::Shell) -> i32 {
    clap_complete::generate(
        shell,
        &mut Cli::command(),
        "shmpipe",
        &mut std::io::stdout(),
    );
    exit::OK
}

/// `shmpipe man [DIR]`: the top page on stdout, or every command's page written into `dir`.
pub fn man_pages(dir: Option<&Path>) -> i32 {
    let result = match dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .context("cannot render the man page")
                .and_then(|()| {
                    std::io::stdout()
                        .write_all(&page)
                        .context("cannot write to stdout")
                })
        }
        Some(dir) => std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {}", dir.display()))
            .and_then(|()| {
                clap_mangen::generate_to(Cli::command(), dir)
                    .with_context(|| format!("cannot write the man pages into {}", dir.display()))
            }),
    };
    match result {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("shmpipe: error: {e:#}");
            exit::USAGE
        }
    }
}
