//! `--labels`: each image's class, from the folder it lies in (torchvision ImageFolder's rule)
//! or from a labels file (CSV or JSON), and the class names the block records.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use shmpipe_block::PlannedImage;

/// `--labels FILE`: the class names and each image's label, the index of its class. FILE.csv
/// holds lines `path,label` (a first line `path,label` is a header; a field may be in double
/// quotes, `""` for a quote in it); FILE.json one object `{"path": "label"}`. A path is relative
/// to `root` (or absolute under it).
///
/// Labels are class names, and the classes are every label the file gives in sorted byte order
/// (as ImageFolder sorts its folders); or, when the first label is a whole number, every label
/// must be one, and it is the class index itself (classes `"0"` to the largest, so a file's
/// numbering is kept, never re-sorted as text: `"10"` after `"9"`).
///
/// Refused, naming the line (CSV) or the path (JSON): a malformed line, an empty label, a path
/// given twice, a path that is not among the images loaded, a label that is not a whole number
/// in a file of numbers; and, naming it, an image the file does not label.
pub fn label_by_file(
    root: &Path,
    file: &Path,
    images: &mut [PlannedImage],
) -> anyhow::Result<Vec<Vec<u8>>> {
    use anyhow::Context;
    let text =
        std::fs::read(file).with_context(|| format!("cannot read --labels {}", file.display()))?;
    let json = file.extension().is_some_and(|e| e == "json");
    let pairs = match json {
        true => labels_json(&text),
        false => labels_csv(&text),
    }
    .and_then(|pairs| assign(root, pairs, images))
    .map_err(|e| anyhow::anyhow!("--labels {}: {e}", file.display()))?;
    Ok(pairs)
}

/// Gives each image its label from `pairs`; returns the class names.
fn assign(
    root: &Path,
    pairs: Vec<LabelPair>,
    images: &mut [PlannedImage],
) -> Result<Vec<Vec<u8>>, String> {
    let loaded: HashMap<&[u8], usize> = images
        .iter()
        .enumerate()
        .map(|(n, i)| (i.source.as_slice(), n))
        .collect();
    let numbered = pairs
        .first()
        .is_some_and(|p| whole_number(&p.label).is_some());
    // Per image: its label, and where the file gave it.
    let mut given: Vec<Option<(&LabelPair, Option<u32>)>> = vec![None; images.len()];
    for pair in &pairs {
        let path = Path::new(OsStr::from_bytes(&pair.path));
        let relative = path.strip_prefix(root).unwrap_or(path);
        let relative = relative.strip_prefix(".").unwrap_or(relative);
        let at = &pair.at;
        if pair.label.is_empty() || pair.label.contains(&0) {
            return Err(format!(
                "{at}: the label of {} is empty or holds a NUL byte",
                relative.display()
            ));
        }
        let number = whole_number(&pair.label);
        if numbered && number.is_none() {
            return Err(format!(
                "{at}: label {:?} is not a whole number, as the labels before it are (class indexes)",
                String::from_utf8_lossy(&pair.label)
            ));
        }
        let Some(&image) = loaded.get(relative.as_os_str().as_bytes()) else {
            return Err(format!(
                "{at}: {} is not among the images loaded (a typo, a file that is not an image, or one left out by --include/--exclude)",
                relative.display()
            ));
        };
        if let Some((first, _)) = given[image] {
            return Err(format!(
                "{at}: {} is labelled again (first at {})",
                relative.display(),
                first.at
            ));
        }
        given[image] = Some((pair, number));
    }
    let unlabelled: Vec<usize> = (0..images.len()).filter(|&n| given[n].is_none()).collect();
    if let Some(&first) = unlabelled.first() {
        return Err(format!(
            "{} of the images have no label there (the first: {}); label them, or leave them out with --exclude",
            unlabelled.len(),
            String::from_utf8_lossy(&images[first].source)
        ));
    }
    let classes = classes_of(numbered, &given, &pairs);
    for (image, label) in images.iter_mut().zip(given) {
        let (pair, number) = label.expect("every image has a label");
        image.label = match number {
            Some(n) if numbered => i64::from(n),
            _ => classes
                .binary_search(&pair.label)
                .expect("every label is a class") as i64,
        };
    }
    Ok(classes)
}

/// The classes of labels `given` to the images: with whole numbers, `0` to the largest (each
/// named by its number, so that an index is its class); with names, the names in sorted order.
fn classes_of(
    numbered: bool,
    given: &[Option<(&LabelPair, Option<u32>)>],
    pairs: &[LabelPair],
) -> Vec<Vec<u8>> {
    match numbered {
        true => {
            let largest = given
                .iter()
                .flatten()
                .filter_map(|(_, n)| *n)
                .max()
                .unwrap_or(0);
            (0..=largest).map(|n| n.to_string().into_bytes()).collect()
        }
        false => {
            let mut names: Vec<Vec<u8>> = pairs.iter().map(|p| p.label.clone()).collect();
            names.sort();
            names.dedup();
            names
        }
    }
}

/// A label that is a whole number from 0 to 1,000,000 (a class index), as written: digits only.
fn whole_number(label: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(label).ok()?;
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    text.parse().ok().filter(|&n| digits && n <= 1_000_000)
}

/// A path and its label, as a labels file gives them (raw bytes), and where: `line 7` of a
/// CSV, `the entry "a.png"` of a JSON object.
#[derive(Debug)]
struct LabelPair {
    path: Vec<u8>,
    label: Vec<u8>,
    at: String,
}

/// The `(path, label)` pairs of a labels CSV.
fn labels_csv(text: &[u8]) -> Result<Vec<LabelPair>, String> {
    let mut pairs = Vec::new();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let at = format!("line {}", n + 1);
        let fields = csv_fields(line).map_err(|e| format!("{at}: {e}"))?;
        let [path, label] = <[Vec<u8>; 2]>::try_from(fields)
            .map_err(|f| format!("{at}: {} fields, expected path,label", f.len()))?;
        if n == 0 && path.eq_ignore_ascii_case(b"path") && label.eq_ignore_ascii_case(b"label") {
            continue;
        }
        pairs.push(LabelPair { path, label, at });
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

/// The `(path, label)` pairs of a labels JSON object. A label is a string (a class name), or
/// a whole number (a class index).
fn labels_json(text: &[u8]) -> Result<Vec<LabelPair>, String> {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(text)
        .map_err(|e| format!("not a JSON object of path: label: {e}"))?;
    map.into_iter()
        .map(|(path, label)| {
            let at = format!("the entry {path:?}");
            let label = match label {
                serde_json::Value::String(l) => l.into_bytes(),
                serde_json::Value::Number(n) if n.is_u64() => n.to_string().into_bytes(),
                other => {
                    return Err(format!(
                        "{at}: the label is {other}, not a name or a whole number"
                    ))
                }
            };
            Ok(LabelPair {
                path: path.into_bytes(),
                label,
                at,
            })
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
        assert_eq!(pairs[1].at, "line 4");
        assert!(labels_csv(b"a.png\n").unwrap_err().contains("line 1"));
        assert!(labels_json(b"{\"a.png\": 3}").is_ok());
        assert!(labels_json(b"{\"a.png\": -3}").is_err());
        assert!(labels_json(b"{\"a.png\": [1]}").is_err());
    }
}
