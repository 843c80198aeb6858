//! `run --output-name TEMPLATE`: each output's name made from its source's, planned before any
//! block exists. `{dir}` (the source's folder relative to the inputs' common folder, empty at
//! the top), `{stem}` (its name without the extension), `{ext}` (the output's extension: the
//! source's when it names the output format, else the format's own), `{name}` (`{stem}.{ext}`),
//! `{index}` (its place among the planned images in sorted order, from 0; `{index:4}` pads it
//! with zeros to four digits). Empty folders in the result are dropped, so `{dir}/{stem}.{ext}`
//! names a top-level image `stem.ext`.
//!
//! This file must never let a name leave the output folder, nor give two images one name: it
//! refuses the run instead, naming the images.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use image::ImageFormat;
use shmpipe_block::PlannedImage;
use shmpipe_worker::codec;

/// A parsed `--output-name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameTemplate {
    parts: Vec<Part>,
    text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    Dir,
    Stem,
    Ext,
    Name,
    /// `{index}`, zero-padded to this many digits.
    Index(usize),
}

const FIELDS: &str = "{dir}, {stem}, {ext}, {name}, {index} or {index:N}";

impl NameTemplate {
    pub fn parse(text: &str) -> Result<NameTemplate, String> {
        if text.starts_with('/') {
            return Err(format!(
                "--output-name {text:?}: a template names a path inside the -o folder, not an absolute path: drop the leading /"
            ));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest[open..].starts_with('}') {
                return Err(format!("--output-name {text:?}: a }} with no {{ before it"));
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .ok_or_else(|| format!("--output-name {text:?}: a {{ with no }} after it"))?;
            let field = &rest[open + 1..close];
            parts.push(match field {
                "dir" => Part::Dir,
                "stem" => Part::Stem,
                "ext" => Part::Ext,
                "name" => Part::Name,
                "index" => Part::Index(0),
                _ => match field.strip_prefix("index:").map(str::parse::<usize>) {
                    Some(Ok(width)) if width <= 20 => Part::Index(width),
                    _ => {
                        return Err(format!(
                            "--output-name {text:?}: {{{field}}} is not a field: use {FIELDS}"
                        ))
                    }
                },
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        if !parts
            .iter()
            .any(|p| matches!(p, Part::Stem | Part::Name | Part::Index(_)))
        {
            return Err(format!(
                "--output-name {text:?} names every image alike: use {{stem}}, {{name}} or {{index}}"
            ));
        }
        Ok(NameTemplate {
            parts,
            text: text.to_string(),
        })
    }

    /// Whether it numbers the images (`{index}`): a shard's numbers would repeat another's.
    pub fn numbers(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Index(_)))
    }

    /// The name for the image at `relative`, `index`-th of the plan, whose output extension is
    /// `ext`: its folders with the empty and `.` ones dropped. Err when it would leave the
    /// output folder or has no file name.
    fn expand(&self, relative: &Path, index: usize, ext: &[u8]) -> Result<Vec<u8>, String> {
        let dir = relative
            .parent()
            .map_or(&[][..], |d| d.as_os_str().as_bytes());
        let stem = relative.file_stem().map_or(&[][..], |s| s.as_bytes());
        let mut name = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => name.extend_from_slice(t.as_bytes()),
                Part::Dir => name.extend_from_slice(dir),
                Part::Stem => name.extend_from_slice(stem),
                Part::Ext => name.extend_from_slice(ext),
                Part::Name => {
                    name.extend_from_slice(stem);
                    name.push(b'.');
                    name.extend_from_slice(ext);
                }
                Part::Index(width) => name.extend_from_slice(format!("{index:0width$}").as_bytes()),
            }
        }
        let mut clean: Vec<&[u8]> = Vec::new();
        for component in name.split(|&b| b == b'/') {
            match component {
                b"" | b"." => {}
                b".." => return Err("it goes up out of the output folder (..)".into()),
                c => clean.push(c),
            }
        }
        if name.ends_with(b"/") || clean.is_empty() {
            return Err("it names a folder, not a file".into());
        }
        Ok(clean.join(&b'/'))
    }
}

impl std::fmt::Display for NameTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Names each planned image's output by `template` (sets [`PlannedImage::output`]), `format`
/// being `--format`. Refuses a name that leaves the output folder, one whose extension does not
/// name the image's output format, and a name given to two images, naming them.
pub fn name_outputs(
    images: &mut [PlannedImage],
    template: &NameTemplate,
    format: Option<ImageFormat>,
) -> anyhow::Result<()> {
    let mut taken: HashMap<Vec<u8>, usize> = HashMap::with_capacity(images.len());
    for index in 0..images.len() {
        let image = &images[index];
        let relative = Path::new(OsStr::from_bytes(&image.source));
        let output = format.unwrap_or(codec::FORMATS[image.format as usize]);
        let default = codec::output_path(Path::new(""), relative, output);
        let ext = default.extension().map_or(&[][..], |e| e.as_bytes());
        let refuse = |why: String| {
            anyhow::anyhow!(
                "--output-name {template}: for {}: {why}",
                relative.display()
            )
        };
        let name = template.expand(relative, index, ext).map_err(refuse)?;
        let named = Path::new(OsStr::from_bytes(&name));
        let fits = named.extension().and_then(|e| e.to_str()).is_some_and(|e| {
            output
                .extensions_str()
                .iter()
                .any(|k| k.eq_ignore_ascii_case(e))
        });
        if !fits {
            return Err(refuse(format!(
                "{} does not end in an extension of its {} output: end the template with .{{ext}}, or give --format",
                named.display(),
                output.extensions_str()[0]
            )));
        }
        if let Some(&first) = taken.get(&name) {
            let other = Path::new(OsStr::from_bytes(&images[first].source));
            return Err(anyhow::anyhow!(
                "--output-name {template} gives {} and {} one name, {}: add {{dir}} or {{index}} to it",
                other.display(),
                relative.display(),
                named.display()
            ));
        }
        taken.insert(name.clone(), index);
        images[index].output = name;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(template: &str, relative: &str, index: usize, ext: &str) -> Result<String, String> {
        NameTemplate::parse(template)?
            .expand(Path::new(relative), index, ext.as_bytes())
            .map(|n| String::from_utf8(n).unwrap())
    }

    #[test]
    fn fields_expand_and_empty_folders_drop() {
        assert_eq!(
            expand("{dir}/{stem}_small.{ext}", "a/b/x.JPG", 3, "JPG").unwrap(),
            "a/b/x_small.JPG"
        );
        assert_eq!(expand("{dir}/{name}", "x.png", 0, "png").unwrap(), "x.png");
        assert_eq!(
            expand("img-{index:4}.{ext}", "a/x.png", 7, "webp").unwrap(),
            "img-0007.webp"
        );
        assert_eq!(
            expand("{index}-{stem}.png", "x.bmp", 12, "png").unwrap(),
            "12-x.png"
        );
        assert_eq!(
            expand("./out//{stem}.png", "x.png", 0, "png").unwrap(),
            "out/x.png"
        );
    }

    #[test]
    fn templates_that_cannot_name_a_file_are_refused() {
        for bad in [
            "{stem",
            "stem}",
            "{size}",
            "{index:x}",
            "fixed.png",
            "{dir}.png",
            "/tmp/{name}",
        ] {
            assert!(NameTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(expand("../{name}", "x.png", 0, "png").is_err());
        assert!(expand("{stem}/", "x.png", 0, "png").is_err());
        assert!(expand("{dir}/../{name}", "a/x.png", 0, "png").is_err());
    }
}
