//! `--labels`: each image's class, from the folder it lies in (torchvision ImageFolder's rule)
//! or from a labels file (CSV or JSON), and the class names the block records.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use shmpipe_block::PlannedImage;

/// `--labels FILE`: the class names (every label the file gives, in sorted byte order, as
/// ImageFolder sorts its folders) and each image's label, the index of the class the file gives
/// its path. FILE.csv holds lines `path,label` (a first line `path,label` is a header; a field
/// may be in double quotes, `""` for a quote in it); FILE.json one object `{"path": "label"}`.
/// A path is relative to `root` (or absolute under it). An image the file does not name, a path
/// named twice with two labels and a malformed line are errors naming the line or the path.
pub fn label_by_file(
    root: &Path,
    file: &Path,
    images: &mut [PlannedImage],
) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::{bail, Context};
    let text =
        std::fs::read(file).with_context(|| format!("cannot read --labels {}", file.display()))?;
    let json = file.extension().is_some_and(|e| e == "json");
    let pairs = match json {
        true => labels_json(&text),
        false => labels_csv(&text),
    }
    .map_err(|e| anyhow::anyhow!("--labels {}: {e}", file.display()))?;
    let mut by_path: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for (path, label) in pairs {
        let path = Path::new(OsStr::from_bytes(&path));
        let relative = path.strip_prefix(root).unwrap_or(path);
        let relative = relative.strip_prefix(".").unwrap_or(relative);
        let key = relative.as_os_str().as_bytes().to_vec();
        if label.is_empty() || label.contains(&0) {
            bail!(
                "--labels {}: the label of {} is empty or holds a NUL byte",
                file.display(),
                relative.display()
            );
        }
        if let Some(other) = by_path.insert(key, label.clone()) {
            if other != label {
                bail!(
                    "--labels {}: {} is labelled twice, {:?} and {:?}",
                    file.display(),
                    relative.display(),
                    String::from_utf8_lossy(&other),
                    String::from_utf8_lossy(&label)
                );
            }
        }
    }
    let mut classes: Vec<Vec<u8>> = by_path.values().cloned().collect();
    classes.sort();
    classes.dedup();
    let unlabelled: Vec<&PlannedImage> = images
        .iter()
        .filter(|i| !by_path.contains_key(&i.source))
        .collect();
    if let Some(first) = unlabelled.first() {
        bail!(
            "--labels {}: {} of the images have no label there (the first: {}); label them, or leave them out with --exclude",
            file.display(),
            unlabelled.len(),
            String::from_utf8_lossy(&first.source)
        );
    }
    for image in images.iter_mut() {
        let label = &by_path[&image.source];
        image.label = classes
            .binary_search(label)
            .expect("every label is a class") as i64;
    }
    Ok(classes)
}

/// A path and its label, as a labels file gives them (raw bytes).
type LabelPair = (Vec<u8>, Vec<u8>);

/// The `(path, label)` pairs of a labels CSV.
fn labels_csv(text: &[u8]) -> Result<Vec<LabelPair>, String> {
    let mut pairs = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let fields = csv_fields(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let [path, label] = <[Vec<u8>; 2]>::try_from(fields)
            .map_err(|f| format!("line {}: {} fields, expected path,label", n + 1, f.len()))?;
        if n == 0 && path.eq_ignore_ascii_case(b"path") && label.eq_ignore_ascii_case(b"label") {
            continue;
        }
        pairs.push((path, label));
    }
    Ok(pairs)
}

/// The fields of one CSV line: comma-separated, each bare or in double quotes (`""` inside
/// quotes is one quote).
fn csv_fields(line: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut fields = Vec::new();
    let mut i = 0;
    loop {
        let mut field = Vec::new();
        if line.get(i) == Some(&b'"') {
            i += 1;
            loop {
                match (line.get(i), line.get(i + 1)) {
                    (Some(b'"'), Some(b'"')) => {
                        field.push(b'"');
                        i += 2;
                    }
                    (Some(b'"'), _) => {
                        i += 1;
                        break;
                    }
                    (Some(&c), _) => {
                        field.push(c);
                        i += 1;
                    }
                    (None, _) => return Err("a quoted field is not closed".into()),
                }
            }
            if !matches!(line.get(i), None | Some(b',')) {
                return Err("text after a quoted field".into());
            }
        } else {
            while let Some(&c) = line.get(i).filter(|&&c| c != b',') {
                field.push(c);
                i += 1;
            }
        }
        fields.push(field);
        match line.get(i) {
            Some(b',') => i += 1,
            _ => return Ok(fields),
        }
    }
}

/// The `(path, label)` pairs of a labels JSON object.
fn labels_json(text: &[u8]) -> Result<Vec<LabelPair>, String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(text)
        .map_err(|e| format!("not a JSON object of path: label: {e}"))?;
    map.into_iter()
        .map(|(path, label)| match label {
            serde_json::Value::String(l) => Ok((path.into_bytes(), l.into_bytes())),
            other => Err(format!("the label of {path} is {other}, not a string")),
        })
        .collect()
}

/// `--labels folder`: the class names (every top-level folder of `root`, in sorted byte order:
/// torchvision ImageFolder's classes) and each image's label, the index of the folder it lies in.
/// An image lying directly in `root` has no class: that is an error naming it, as nothing
/// sensible can stand for its label.
pub fn label_by_folder(root: &Path, images: &mut [PlannedImage]) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::Context;
    let mut classes: Vec<Vec<u8>> = std::fs::read_dir(root)
        .with_context(|| format!("cannot list the class folders of {}", root.display()))?
        .flatten()
        // Through symbolic links, as the walk goes.
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().as_bytes().to_vec())
        .collect();
    classes.sort();
    let loose: Vec<&PlannedImage> = images
        .iter()
        .filter(|i| !i.source.contains(&b'/'))
        .collect();
    if let Some(first) = loose.first() {
        anyhow::bail!(
            "--labels folder: {} image(s) lie directly in {} (the first: {}), not in a class folder; move them into DIR/CLASS/ or load without --labels",
            loose.len(),
            root.display(),
            String::from_utf8_lossy(&first.source)
        );
    }
    for image in images.iter_mut() {
        let top = image
            .source
            .split(|&b| b == b'/')
            .next()
            .unwrap_or_default();
        let index = classes
            .binary_search_by(|c| c.as_slice().cmp(top))
            .map_err(|_| {
                anyhow::anyhow!(
                    "--labels folder: no class folder for {}",
                    String::from_utf8_lossy(&image.source)
                )
            })?;
        image.label = index as i64;
    }
    Ok(classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_as_spreadsheets_write_them() {
        assert_eq!(
            csv_fields(b"a.png,cat").unwrap(),
            vec![b"a.png".to_vec(), b"cat".to_vec()]
        );
        assert_eq!(
            csv_fields(b"\"x, \"\"y\"\".png\",dog").unwrap(),
            vec![b"x, \"y\".png".to_vec(), b"dog".to_vec()]
        );
        assert!(csv_fields(b"\"open,dog").is_err());
        let pairs = labels_csv(b"path,label\r\na.png,cat\n\nb/c.png,dog\n").unwrap();
        assert_eq!(pairs.len(), 2);
        assert!(labels_csv(b"a.png\n").unwrap_err().contains("line 1"));
        assert!(labels_json(b"{\"a.png\": 3}").is_err());
    }
}
