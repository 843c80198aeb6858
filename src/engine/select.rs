//! Which files a job takes: its inputs (files and folders, from the command line or a list), the
//! folder their output paths are relative to, and the `--include` / `--exclude` patterns.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// The inputs as given, made absolute (a file's own name kept, so a link is not followed to
/// another name), and their common folder: the folder itself for one folder, the file's folder
/// for one file, else the deepest folder holding them all. Outputs keep their path relative to
/// it.
pub fn resolve(inputs: &[PathBuf]) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    if inputs.is_empty() {
        bail!("no inputs: give files or folders, or --files-from");
    }
    // Each entry with the folder its output paths start from: itself, or a file's folder.
    let mut entries: Vec<(PathBuf, PathBuf)> = Vec::with_capacity(inputs.len());
    let mut seen = std::collections::HashSet::new();
    for input in inputs {
        let meta = std::fs::metadata(input);
        if meta.is_err() && std::fs::symlink_metadata(input).is_err() {
            bail!("input {} does not exist", input.display());
        }
        let (entry, folder) = if meta.as_ref().is_ok_and(|m| m.is_dir()) {
            let folder = input
                .canonicalize()
                .with_context(|| format!("cannot resolve input folder {}", input.display()))?;
            (folder.clone(), folder)
        } else {
            let absolute = std::path::absolute(input)
                .with_context(|| format!("cannot resolve input {}", input.display()))?;
            let (Some(parent), Some(name)) = (absolute.parent(), absolute.file_name()) else {
                bail!("input {} is not a file or a folder", input.display());
            };
            let folder = parent
                .canonicalize()
                .with_context(|| format!("cannot resolve input {}", input.display()))?;
            (folder.join(name), folder)
        };
        // A list of many files holds each once, found in constant time.
        if seen.insert(entry.clone()) {
            entries.push((entry, folder));
        }
    }
    let mut root = entries[0].1.clone();
    for (_, folder) in &entries[1..] {
        while !folder.starts_with(&root) {
            root = root
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf);
        }
    }
    Ok((root, entries.into_iter().map(|(entry, _)| entry).collect()))
}

/// The paths of `--files-from FILE` (`-`: standard input): one a line, or NUL-separated with
/// `-0` (for names holding a newline). Empty entries are ignored; relative paths are relative to
/// the current folder.
pub fn read_list(from: &Path, nul: bool) -> anyhow::Result<Vec<PathBuf>> {
    let mut bytes = Vec::new();
    if from == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("cannot read the list of inputs from standard input")?;
    } else {
        std::fs::File::open(from)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("cannot read the list of inputs {}", from.display()))?;
    }
    let separator = if nul { b'\0' } else { b'\n' };
    Ok(bytes
        .split(|&b| b == separator)
        .map(|line| match nul {
            true => line,
            false => line.strip_suffix(b"\r").unwrap_or(line),
        })
        .filter(|line| !line.is_empty())
        .map(|line| PathBuf::from(OsStr::from_bytes(line)))
        .collect())
}

/// `--include` and `--exclude` glob patterns, matched against each file's path relative to the
/// inputs' common folder: a pattern with a `/` against the whole path, one without against the
/// file's name alone (as rsync and .gitignore do). `*` matches within one path component, `**`
/// across components, `?` one character, `[abc]`, `[a-z]` and `[!abc]` one of a set. A file is
/// taken when it matches an `--include` (or there is none) and no `--exclude`.
#[derive(Clone, Debug, Default)]
pub struct Filters {
    include: Vec<Pattern>,
    exclude: Vec<Pattern>,
}

#[derive(Clone, Debug)]
struct Pattern {
    text: String,
    /// How many files it matched: a pattern that matched none is worth a warning.
    hits: Cell<u64>,
}

impl Filters {
    pub fn new(include: &[String], exclude: &[String]) -> anyhow::Result<Filters> {
        let patterns = |list: &[String], flag: &str| -> anyhow::Result<Vec<Pattern>> {
            list.iter()
                .map(|p| {
                    if p.is_empty() {
                        bail!("{flag}: an empty pattern matches nothing");
                    }
                    if p.matches('[').count() != p.matches(']').count() {
                        bail!("{flag} {p:?}: a '[' without its ']'");
                    }
                    Ok(Pattern {
                        text: p.clone(),
                        hits: Cell::new(0),
                    })
                })
                .collect()
        };
        Ok(Filters {
            include: patterns(include, "--include")?,
            exclude: patterns(exclude, "--exclude")?,
        })
    }

    /// Whether the file at `relative` is taken.
    pub fn accept(&self, relative: &[u8]) -> bool {
        let hit = |p: &Pattern| {
            let matched = glob_path(p.text.as_bytes(), relative);
            if matched {
                p.hits.set(p.hits.get() + 1);
            }
            matched
        };
        let included =
            self.include.is_empty() || self.include.iter().filter(|p| hit(p)).count() > 0;
        let excluded = self.exclude.iter().filter(|p| hit(p)).count() > 0;
        included && !excluded
    }

    /// The patterns that matched no file, as `--include PATTERN` or `--exclude PATTERN`.
    pub fn unmatched(&self) -> Vec<String> {
        let flagged = |flag: &str, list: &[Pattern]| -> Vec<String> {
            list.iter()
                .filter(|p| p.hits.get() == 0)
                .map(|p| format!("{flag} {:?}", p.text))
                .collect()
        };
        let mut out = flagged("--include", &self.include);
        out.extend(flagged("--exclude", &self.exclude));
        out
    }
}

/// A pattern against a relative path: with a `/`, the whole path; without, its last component.
fn glob_path(pattern: &[u8], path: &[u8]) -> bool {
    if pattern.contains(&b'/') {
        glob(pattern, path)
    } else {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        glob(pattern, name)
    }
}

/// Glob matching by backtracking over the two byte strings.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some(b'*') if pattern.get(1) == Some(&b'*') => {
            // `**/` also matches no folder at all; `**` any run of characters, `/` included.
            let rest = &pattern[2..];
            let rest_after_slash = rest.strip_prefix(b"/");
            (0..=text.len()).any(|i| {
                glob(rest, &text[i..])
                    || rest_after_slash
                        .is_some_and(|r| (i == 0 || text[i - 1] == b'/') && glob(r, &text[i..]))
            })
        }
        Some(b'*') => {
            let rest = &pattern[1..];
            (0..=text.len())
                .take_while(|&i| i == 0 || text[i - 1] != b'/')
                .any(|i| glob(rest, &text[i..]))
        }
        Some(b'?') => text.first().is_some_and(|&c| c != b'/') && glob(&pattern[1..], &text[1..]),
        Some(b'[') => {
            let Some(end) = pattern
                .iter()
                .skip(1)
                .position(|&b| b == b']')
                .map(|p| p + 1)
            else {
                return false;
            };
            let Some(&c) = text.first() else {
                return false;
            };
            let set = &pattern[1..end];
            let (negate, set) = match set.first() {
                Some(b'!') | Some(b'^') => (true, &set[1..]),
                _ => (false, set),
            };
            let mut in_set = false;
            let mut i = 0;
            while i < set.len() {
                if i + 2 < set.len() && set[i + 1] == b'-' {
                    in_set |= set[i] <= c && c <= set[i + 2];
                    i += 3;
                } else {
                    in_set |= set[i] == c;
                    i += 1;
                }
            }
            c != b'/' && in_set != negate && glob(&pattern[end + 1..], &text[1..])
        }
        Some(&p) => text.first() == Some(&p) && glob(&pattern[1..], &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(include: &[&str], exclude: &[&str], path: &str) -> bool {
        let strings = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Filters::new(&strings(include), &strings(exclude))
            .unwrap()
            .accept(path.as_bytes())
    }

    #[test]
    fn globs_match_as_rsync_and_gitignore_do() {
        assert!(glob_path(b"*.jpg", b"a/b/c.jpg"));
        assert!(!glob_path(b"*.jpg", b"a/b/c.jpeg"));
        assert!(glob_path(b"a/*.jpg", b"a/c.jpg"));
        assert!(!glob_path(b"a/*.jpg", b"a/b/c.jpg"));
        assert!(glob_path(b"a/**/*.jpg", b"a/c.jpg"));
        assert!(glob_path(b"a/**/*.jpg", b"a/b/d/c.jpg"));
        assert!(glob_path(b"**/raw/**", b"x/raw/y/z.png"));
        assert!(glob_path(b"img00?.png", b"img007.png"));
        assert!(!glob_path(b"img00?.png", b"img0007.png"));
        assert!(glob_path(b"[a-c]*.png", b"b1.png"));
        assert!(!glob_path(b"[!a-c]*.png", b"b1.png"));
        assert!(glob_path(b"[!a-c]*.png", b"d1.png"));
        assert!(!glob_path(b"a?b", b"a/b"));
    }

    #[test]
    fn include_then_exclude() {
        assert!(accepts(&[], &[], "x.png"));
        assert!(accepts(&["*.png"], &[], "d/x.png"));
        assert!(!accepts(&["*.png"], &[], "d/x.jpg"));
        assert!(!accepts(&["*.png"], &["d/*"], "d/x.png"));
        assert!(accepts(&["*.png", "*.jpg"], &["thumbs/**"], "a/x.jpg"));
        assert!(!accepts(
            &["*.png", "*.jpg"],
            &["thumbs/**"],
            "thumbs/x.jpg"
        ));
    }

    #[test]
    fn patterns_that_match_nothing_are_named() {
        let f = Filters::new(&["*.png".into(), "*.xyz".into()], &["*.tmp".into()]).unwrap();
        f.accept(b"a.png");
        assert_eq!(
            f.unmatched(),
            vec!["--include \"*.xyz\"", "--exclude \"*.tmp\""]
        );
        assert!(Filters::new(&["[ab".into()], &[]).is_err());
    }

    #[test]
    fn the_common_folder_of_files_and_folders() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("c")).unwrap();
        std::fs::write(root.join("a/b/x.png"), b"").unwrap();
        std::fs::write(root.join("c/y.png"), b"").unwrap();
        let (r, e) = resolve(&[root.join("a/b")]).unwrap();
        assert_eq!((r, e), (root.join("a/b"), vec![root.join("a/b")]));
        let (r, _) = resolve(&[root.join("a/b/x.png")]).unwrap();
        assert_eq!(r, root.join("a/b"));
        let (r, e) = resolve(&[
            root.join("a/b/x.png"),
            root.join("c/y.png"),
            root.join("c/y.png"),
        ])
        .unwrap();
        assert_eq!(r, root);
        assert_eq!(e.len(), 2, "a file given twice is one input");
        assert!(resolve(&[root.join("nope.png")]).is_err());
    }
}
