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
        &mut visible(&Cli::command()),
        "shmpipe",
        &mut std::io::stdout(),
    );
    exit::OK
}

/// `cmd` as a user sees it: without its hidden subcommands (`worker`) and hidden arguments,
/// which clap_complete would otherwise offer (it skips only hidden values). clap cannot remove
/// a subcommand or an argument, so the tree is rebuilt from the visible parts. (clap without its
/// `string` feature takes names as `&'static str`: the few bytes are leaked, once, by a process
/// that prints one script and exits.)
fn visible(cmd: &clap::Command) -> clap::Command {
    let mut pruned = clap::Command::new(&*cmd.get_name().to_owned().leak());
    if let Some(about) = cmd.get_about() {
        pruned = pruned.about(about.clone());
    }
    if let Some(version) = cmd.get_version() {
        pruned = pruned.version(&*version.to_owned().leak());
    }
    pruned
        .args(cmd.get_arguments().filter(|a| !a.is_hide_set()).cloned())
        .subcommands(
            cmd.get_subcommands()
                .filter(|s| !s.is_hide_set())
                .map(visible),
        )
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

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use crate::cli::Cli;

    /// The pruned tree is a valid command (no argument refers to one left out) and holds every
    /// visible subcommand.
    #[test]
    fn the_completion_tree_is_consistent_and_complete() {
        let pruned = super::visible(&Cli::command());
        pruned.clone().debug_assert();
        let names: Vec<_> = pruned.get_subcommands().map(|s| s.get_name()).collect();
        assert!(!names.contains(&"worker"), "{names:?}");
        let full = Cli::command();
        for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
            assert!(names.contains(&sub.get_name()), "{} kept", sub.get_name());
        }
    }
}
