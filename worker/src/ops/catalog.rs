//! Every op a user can name, as `shmpipe ops` shows it: its syntax, its parameter with range and
//! default, what it computes, and the other names it answers to; and the nearest op to a name
//! that is none ("did you mean").
//!
//! This file must never parse or run an op: `parse` does. A test holds the two together (every
//! example here parses, and every name `parse` accepts is here).

/// One op, as documented.
#[derive(Debug)]
pub struct OpInfo {
    pub name: &'static str,
    /// How it is written in `--ops`.
    pub syntax: &'static str,
    /// Its parameter: meaning, range and default; empty when it takes none.
    pub parameter: &'static str,
    /// What it computes, per pixel value v (0 to 255) unless it says otherwise.
    pub formula: &'static str,
    /// Other names it answers to.
    pub aliases: &'static [&'static str],
    /// A dataset-wide op: only `shmpipe apply` on a loaded dataset runs it.
    pub dataset_wide: bool,
    /// It makes an image of another shape: only `shmpipe run` runs it (a dataset's images keep
    /// their size).
    pub reshapes: bool,
    /// An example that parses.
    pub example: &'static str,
}

/// Every op, in the order `shmpipe ops` lists them.
pub const CATALOG: &[OpInfo] = &[
    OpInfo {
        name: "invert",
        syntax: "invert",
        parameter: "",
        formula: "v' = 255 - v",
        aliases: &[],
        reshapes: false,
        dataset_wide: false,
        example: "invert",
    },
    OpInfo {
        name: "grayscale",
        syntax: "grayscale",
        parameter: "",
        formula: "L = floor((299 R + 587 G + 114 B + 500) / 1000) (ITU-R 601-2 luma, as Pillow's convert(\"L\")), written to R, G and B; identity on one channel",
        aliases: &["greyscale", "gray", "grey"],
        reshapes: false,
        dataset_wide: false,
        example: "grayscale",
    },
    OpInfo {
        name: "brightness",
        syntax: "brightness:F",
        parameter: "F: factor, 0 to 255 (required)",
        formula: "v' = min(255, round(v * F))",
        aliases: &[],
        reshapes: false,
        dataset_wide: false,
        example: "brightness:1.2",
    },
    OpInfo {
        name: "scale",
        syntax: "scale:F",
        parameter: "F: factor, 0 to 255 (required)",
        formula: "v' = min(255, round(v * F)), as NumPy's saturating arr *= F",
        aliases: &[],
        reshapes: false,
        dataset_wide: false,
        example: "scale:2",
    },
    OpInfo {
        name: "contrast",
        syntax: "contrast:F",
        parameter: "F: factor, 0 to 255 (required)",
        formula: "v' = clamp(round((v - 128) * F + 128), 0, 255)",
        aliases: &[],
        reshapes: false,
        dataset_wide: false,
        example: "contrast:1.5",
    },
    OpInfo {
        name: "gamma",
        syntax: "gamma:G",
        parameter: "G: gamma, above 0 and at most 100 (required); G > 1 brightens",
        formula: "v' = round(255 * (v / 255)^(1/G))",
        aliases: &[],
        reshapes: false,
        dataset_wide: false,
        example: "gamma:2.2",
    },
    OpInfo {
        name: "threshold",
        syntax: "threshold:T",
        parameter: "T: integer, 0 to 255 (required)",
        formula: "v' = 255 if v >= T else 0",
        aliases: &[],
        reshapes: false,
        dataset_wide: false,
        example: "threshold:128",
    },
    OpInfo {
        name: "blur",
        syntax: "blur:SIGMA",
        parameter: "SIGMA: standard deviation in pixels, above 0 and at most 64 (required)",
        formula: "separable gaussian, radius ceil(3 SIGMA), 16-bit weights summing to 65536, horizontal then vertical; edge pixels repeated",
        aliases: &[],
        reshapes: false,
        dataset_wide: false,
        example: "blur:2",
    },
    OpInfo {
        name: "sharpen",
        syntax: "sharpen[:A]",
        parameter: "A: amount, 0 to 16 (default 1)",
        formula: "unsharp mask: b = blur(v, 1), v' = clamp(v + floor((round(256 A) * (v - b) + 128) / 256), 0, 255)",
        aliases: &[],
        reshapes: false,
        dataset_wide: false,
        example: "sharpen:1.5",
    },
    OpInfo {
        name: "flip-h",
        syntax: "flip-h",
        parameter: "",
        formula: "pixel (y, x) <- (y, W - 1 - x): left and right swapped",
        aliases: &["fliph", "hflip"],
        reshapes: false,
        dataset_wide: false,
        example: "flip-h",
    },
    OpInfo {
        name: "flip-v",
        syntax: "flip-v",
        parameter: "",
        formula: "pixel (y, x) <- (H - 1 - y, x): top and bottom swapped",
        aliases: &["flipv", "vflip"],
        reshapes: false,
        dataset_wide: false,
        example: "flip-v",
    },
    OpInfo {
        name: "crop",
        syntax: "crop:X,Y,W,H | crop:WxH+X+Y | crop:WxH",
        parameter: "X, Y: the top-left corner, in pixels from the left and top (default: centred, the odd pixel to the right and bottom); W, H: the size, at least 1 (required)",
        formula: "pixel (y, x) <- (Y + y, X + x), 0 <= x < W', 0 <= y < H'; a box reaching past the image keeps the part inside it (W' = min(W, width - X), H' likewise); a box wholly outside fails that image",
        aliases: &[],
        reshapes: true,
        dataset_wide: false,
        example: "crop:0,0,640,480",
    },
    OpInfo {
        name: "rotate",
        syntax: "rotate:D",
        parameter: "D: degrees clockwise, 90, 180 or 270 (required)",
        formula: "lossless: 90: pixel (x, H - 1 - y) <- (y, x), width and height swapped; 180: (H - 1 - y, W - 1 - x) <- (y, x); 270: (W - 1 - x, y) <- (y, x)",
        aliases: &["rot"],
        reshapes: true,
        dataset_wide: false,
        example: "rotate:90",
    },
    OpInfo {
        name: "resize",
        syntax: "resize:SIZE[:FIT][:no-enlarge]",
        parameter: "SIZE: WxH, Wx, xH or S (the shorter side), sides 1 to 65535, as --resize; FIT: inside (default), stretch, cover or contain, as --fit; no-enlarge as --no-enlarge",
        formula: "Lanczos3 (a = 3) resampling, as --resize; inside keeps the aspect ratio (each side round(side / factor)), cover crops the centred overflow, contain pads with black",
        aliases: &[],
        reshapes: true,
        dataset_wide: false,
        example: "resize:800x600",
    },
    OpInfo {
        name: "normalize",
        syntax: "normalize",
        parameter: "",
        formula: "per colour channel c, with the mean and population standard deviation of c over every pixel of the dataset: v' = clamp(round(128 + 48 * (v - mean_c) / std_c), 0, 255); a channel with std 0 becomes 128",
        aliases: &["normalise"],
        reshapes: false,
        dataset_wide: true,
        example: "normalize",
    },
    OpInfo {
        name: "normalize:float",
        syntax: "normalize:float",
        parameter: "",
        formula: "the statistics of normalize, stored in the block; the pixels are left as they are, and export writes (v - mean_c) / std_c as float32; last in its list",
        aliases: &["normalise:float"],
        reshapes: false,
        dataset_wide: true,
        example: "normalize:float",
    },
    OpInfo {
        name: "equalize:dataset",
        syntax: "equalize:dataset",
        parameter: "",
        formula: "one histogram per colour channel over the whole dataset: v' = round(255 * (cdf_c(v) - cdf_c,min) / (n - cdf_c,min)), cdf_c,min the count of the darkest level present; a channel of one level is left alone",
        aliases: &["equalise:dataset"],
        reshapes: false,
        dataset_wide: true,
        example: "equalize:dataset",
    },
];

/// The op named `name` (or one of its aliases), case aside.
pub fn find(name: &str) -> Option<&'static OpInfo> {
    CATALOG.iter().find(|op| {
        op.name.eq_ignore_ascii_case(name)
            || op.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

/// The op whose name (or alias) is nearest to `name`, when it is near enough to be a typo: at
/// most two edits, and fewer than half the name's letters.
pub fn did_you_mean(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    CATALOG
        .iter()
        .flat_map(|op| {
            std::iter::once(op.name)
                .chain(op.aliases.iter().copied())
                .map(move |n| (op.name, n))
        })
        .map(|(op, candidate)| (edit_distance(&name, candidate), op))
        .filter(|&(d, _)| d > 0 && d <= 2 && d * 2 < name.len().max(2))
        .min_by_key(|&(d, _)| d)
        .map(|(_, op)| op)
}

/// Levenshtein distance between two short ASCII names.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{parse_apply, parse_ops, OpError};

    #[test]
    fn every_example_parses_and_every_name_is_an_op() {
        for op in CATALOG {
            if op.dataset_wide {
                assert!(parse_apply(op.example).is_ok(), "{}", op.example);
                assert!(matches!(
                    parse_ops(op.example),
                    Err(OpError::DatasetWide(_))
                ));
            } else {
                let parsed = parse_ops(op.example).unwrap();
                assert_eq!(parsed[0].changes_shape(), op.reshapes, "{}", op.example);
                for name in std::iter::once(op.name).chain(op.aliases.iter().copied()) {
                    let with_arg = op.example.replacen(op.name, name, 1);
                    assert!(parse_ops(&with_arg).is_ok(), "{with_arg}");
                }
            }
        }
    }

    #[test]
    fn typos_find_the_op_and_strangers_find_none() {
        assert_eq!(did_you_mean("grayscal"), Some("grayscale"));
        assert_eq!(did_you_mean("blurr"), Some("blur"));
        assert_eq!(did_you_mean("invret"), Some("invert"));
        assert_eq!(did_you_mean("flip"), Some("flip-h"));
        assert_eq!(did_you_mean("resise"), Some("resize"));
        assert_eq!(did_you_mean("rotat"), Some("rotate"));
        assert_eq!(did_you_mean("scissors"), None);
        assert_eq!(did_you_mean("x"), None);
    }
}
