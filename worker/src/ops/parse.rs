//! Parsing op lists: `--ops` into [`Op`]s, and an `apply` list split at its dataset-wide op
//! ([`DatasetOp`], [`ApplyStages`]). Errors ([`OpError`]) name the op and the argument.
//!
//! This file must never touch pixels: it turns text into ops, nothing more.

use std::fmt;

use super::geometry::CropBox;
use super::OpChain;
use crate::resize::{parse_size, Fit, Geometry};

/// One op as the user wrote it.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `invert`: v' = 255 − v.
    Invert,
    /// `grayscale`: L = ⌊(299 R + 587 G + 114 B + 500) / 1000⌋ (ITU-R 601-2 luma, as Pillow's
    /// `convert("L")`, rounded to nearest), written back to R, G and B. Identity on 1 channel.
    Grayscale,
    /// `brightness:F`: v' = min(255, round(v × F)), F ≥ 0. The same formula as `scale`.
    Brightness(f32),
    /// `scale:F`: v' = min(255, round(v × F)), F ≥ 0 (saturating `arr *= F`).
    Scale(f32),
    /// `contrast:F`: v' = clamp(round((v − 128) × F + 128), 0, 255), F ≥ 0.
    Contrast(f32),
    /// `gamma:G`: v' = round(255 × (v / 255)^(1/G)), G > 0 (G > 1 brightens).
    Gamma(f32),
    /// `threshold:T`: v' = 255 if v ≥ T else 0, T in 0..=255.
    Threshold(u8),
    /// `blur:SIGMA`: gaussian, separable. Weights w_k ∝ exp(−k² / 2σ²) for |k| ≤ r = ⌈3σ⌉,
    /// quantised to 16-bit fixed point summing exactly to 65536. Horizontal pass, then vertical,
    /// each v' = (Σ_k w_k × v[clamp(i + k)] + 32768) >> 16, so a constant image stays constant.
    /// Border: the edge pixel is repeated (clamp). 0 < σ ≤ 64.
    Blur(f32),
    /// `sharpen[:A]`: unsharp mask with σ = 1: b = blur(v, 1),
    /// v' = clamp(v + ⌊(A₂₅₆ × (v − b) + 128) / 256⌋, 0, 255), A₂₅₆ = round(256 A); A defaults
    /// to 1, 0 ≤ A ≤ 16.
    Sharpen(f32),
    /// `flip-h`: pixel (y, x) ← (y, W − 1 − x).
    FlipH,
    /// `flip-v`: pixel (y, x) ← (H − 1 − y, x).
    FlipV,
    /// `crop:X,Y,W,H`, `crop:WxH+X+Y` or `crop:WxH` (centred): see [`CropBox`]. The image
    /// becomes the part of the box inside it.
    Crop(CropBox),
    /// `rotate:90|180|270`: a turn clockwise by that many degrees, lossless (pixels move,
    /// none changes); a quarter turn swaps width and height.
    Rotate(u16),
    /// `resize:SIZE[:FIT][:no-enlarge]`: SIZE as `--resize` writes it (WxH, Wx, xH or S),
    /// FIT as `--fit` (inside by default), with Lanczos3 as `--resize` resizes.
    Resize(Geometry),
}

impl Op {
    /// Whether the op makes an image of another shape (or may): crop, rotate and resize.
    pub fn changes_shape(&self) -> bool {
        matches!(self, Op::Crop(_) | Op::Rotate(_) | Op::Resize(_))
    }
}

/// Why an `--ops` list was refused. Names the op and the argument.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum OpError {
    #[error("unknown op {name:?}{hint}", name = .0, hint = unknown_hint(.0))]
    Unknown(String),
    #[error("op {op:?} needs an argument, for example {example}")]
    MissingArg { op: String, example: &'static str },
    #[error("op {op:?} takes no argument, got {arg:?}")]
    UnexpectedArg { op: String, arg: String },
    #[error("bad argument {arg:?} for op {op:?}: {reason}")]
    BadArg {
        op: String,
        arg: String,
        reason: &'static str,
    },
    #[error("bad argument {arg:?} for op {op:?}: {reason}")]
    BadSize {
        op: String,
        arg: String,
        reason: String,
    },
    #[error("{0} changes an image's size, and a dataset's images keep theirs (one array): use it in shmpipe run, or give load --resize")]
    ShapeInDataset(String),
    #[error("empty op in list {0:?}")]
    Empty(String),
    #[error("{0} is a dataset-wide op: load the folder (shmpipe load DIR --name NAME), then shmpipe apply NAME --ops {0}")]
    DatasetWide(&'static str),
    #[error(
        "an op list may hold one dataset-wide op (normalize, normalize:float, equalize:dataset)"
    )]
    NormalizeTwice,
    #[error("normalize:float must end the op list: it changes no pixel, export applies it")]
    FloatLast,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Invert => write!(f, "invert"),
            Op::Grayscale => write!(f, "grayscale"),
            Op::Brightness(v) => write!(f, "brightness:{v}"),
            Op::Scale(v) => write!(f, "scale:{v}"),
            Op::Contrast(v) => write!(f, "contrast:{v}"),
            Op::Gamma(v) => write!(f, "gamma:{v}"),
            Op::Threshold(v) => write!(f, "threshold:{v}"),
            Op::Blur(v) => write!(f, "blur:{v}"),
            Op::Sharpen(v) => write!(f, "sharpen:{v}"),
            Op::FlipH => write!(f, "flip-h"),
            Op::FlipV => write!(f, "flip-v"),
            Op::Crop(b) => write!(f, "{b}"),
            Op::Rotate(d) => write!(f, "rotate:{d}"),
            Op::Resize(g) => {
                write!(f, "resize:{}", g.size())?;
                if g.fit != Fit::Inside {
                    write!(f, ":{}", g.fit.name())?;
                }
                if g.no_enlarge {
                    write!(f, ":no-enlarge")?;
                }
                Ok(())
            }
        }
    }
}

/// What to say after an unknown op's name: the op it is nearest to, and where every op is listed.
fn unknown_hint(name: &str) -> String {
    let known = "invert, grayscale, brightness:F, scale:F, contrast:F, gamma:G, threshold:T, blur:SIGMA, sharpen[:A], flip-h, flip-v, crop:X,Y,W,H, rotate:90|180|270, resize:SIZE; and, with shmpipe apply on a loaded dataset, normalize, normalize:float, equalize:dataset";
    match super::catalog::did_you_mean(name) {
        Some(op) => format!(": did you mean {op}? (known: {known}; `shmpipe ops` describes each)"),
        None => format!(" (known: {known}; `shmpipe ops` describes each)"),
    }
}

fn parse_one(item: &str, list: &str) -> Result<Op, OpError> {
    let item = item.trim();
    if item.is_empty() {
        return Err(OpError::Empty(list.to_string()));
    }
    let (name, arg) = match item.split_once(':') {
        Some((n, a)) => (n.trim(), Some(a.trim())),
        None => (item, None),
    };
    let name_l = name.to_ascii_lowercase();
    let no_arg = |op: Op| match arg {
        None => Ok(op),
        Some(a) => Err(OpError::UnexpectedArg {
            op: name.to_string(),
            arg: a.to_string(),
        }),
    };
    let float =
        |example: &'static str, min: f32, max: f32, min_inclusive: bool, reason: &'static str| {
            let a = arg.ok_or(OpError::MissingArg {
                op: name.to_string(),
                example,
            })?;
            let bad = |reason| OpError::BadArg {
                op: name.to_string(),
                arg: a.to_string(),
                reason,
            };
            let v: f32 = a.parse().map_err(|_| bad("not a number"))?;
            let above_min = if min_inclusive { v >= min } else { v > min };
            if !v.is_finite() || !above_min || v > max {
                return Err(bad(reason));
            }
            Ok(v)
        };
    Ok(match name_l.as_str() {
        "normalize" | "normalise" => return Err(OpError::DatasetWide("normalize")),
        "equalize" | "equalise" if arg.is_some_and(|a| a.eq_ignore_ascii_case("dataset")) => {
            return Err(OpError::DatasetWide("equalize:dataset"))
        }
        "invert" => no_arg(Op::Invert)?,
        "grayscale" | "greyscale" | "gray" | "grey" => no_arg(Op::Grayscale)?,
        "flip-h" | "fliph" | "hflip" => no_arg(Op::FlipH)?,
        "flip-v" | "flipv" | "vflip" => no_arg(Op::FlipV)?,
        "brightness" => Op::Brightness(float(
            "brightness:1.2",
            0.0,
            255.0,
            true,
            "must be between 0 and 255",
        )?),
        "scale" => Op::Scale(float(
            "scale:2",
            0.0,
            255.0,
            true,
            "must be between 0 and 255",
        )?),
        "contrast" => Op::Contrast(float(
            "contrast:1.5",
            0.0,
            255.0,
            true,
            "must be between 0 and 255",
        )?),
        "gamma" => Op::Gamma(float(
            "gamma:2.2",
            0.0,
            100.0,
            false,
            "must be above 0 and at most 100",
        )?),
        "blur" => Op::Blur(float(
            "blur:2",
            0.0,
            64.0,
            false,
            "sigma must be above 0 and at most 64",
        )?),
        "sharpen" => match arg {
            None => Op::Sharpen(1.0),
            Some(_) => Op::Sharpen(float(
                "sharpen:1",
                0.0,
                16.0,
                true,
                "amount must be between 0 and 16",
            )?),
        },
        "crop" => Op::Crop(parse_crop(name, arg)?),
        "rotate" | "rot" => {
            let a = arg.ok_or(OpError::MissingArg {
                op: name.to_string(),
                example: "rotate:90",
            })?;
            match a {
                "90" | "180" | "270" => Op::Rotate(a.parse().expect("one of three numbers")),
                _ => {
                    return Err(OpError::BadArg {
                        op: name.to_string(),
                        arg: a.to_string(),
                        reason: "must be 90, 180 or 270 (degrees clockwise)",
                    })
                }
            }
        }
        "resize" => Op::Resize(parse_resize(name, arg)?),
        "threshold" => {
            let a = arg.ok_or(OpError::MissingArg {
                op: name.to_string(),
                example: "threshold:128",
            })?;
            Op::Threshold(a.parse().map_err(|_| OpError::BadArg {
                op: name.to_string(),
                arg: a.to_string(),
                reason: "must be an integer from 0 to 255",
            })?)
        }
        _ => return Err(OpError::Unknown(name.to_string())),
    })
}

/// `crop`'s argument: `X,Y,W,H`, `WxH+X+Y` or `WxH` (centred).
fn parse_crop(name: &str, arg: Option<&str>) -> Result<CropBox, OpError> {
    let a = arg.ok_or(OpError::MissingArg {
        op: name.to_string(),
        example: "crop:10,20,640,480",
    })?;
    let bad = |reason| OpError::BadArg {
        op: name.to_string(),
        arg: a.to_string(),
        reason,
    };
    let number = |v: &str| v.trim().parse::<u32>().map_err(|_| bad(CROP_FORMS));
    let (at, (width, height)) = match a.split(',').collect::<Vec<_>>().as_slice() {
        [x, y, w, h] => (Some((number(x)?, number(y)?)), (number(w)?, number(h)?)),
        [one] => {
            let mut parts = one.split('+');
            let size = parts.next().unwrap_or_default();
            let (w, h) = size.split_once(['x', 'X']).ok_or_else(|| bad(CROP_FORMS))?;
            let at = match (parts.next(), parts.next(), parts.next()) {
                (None, _, _) => None,
                (Some(x), Some(y), None) => Some((number(x)?, number(y)?)),
                _ => return Err(bad(CROP_FORMS)),
            };
            (at, (number(w)?, number(h)?))
        }
        _ => return Err(bad(CROP_FORMS)),
    };
    if width == 0 || height == 0 {
        return Err(bad("the width and height must be at least 1"));
    }
    Ok(CropBox { at, width, height })
}

const CROP_FORMS: &str = "write X,Y,W,H, WxH+X+Y or WxH (centred), in whole pixels";

/// `resize`'s argument: `SIZE[:FIT][:no-enlarge]`.
fn parse_resize(name: &str, arg: Option<&str>) -> Result<Geometry, OpError> {
    let a = arg.ok_or(OpError::MissingArg {
        op: name.to_string(),
        example: "resize:800x600",
    })?;
    let bad = |reason: String| OpError::BadSize {
        op: name.to_string(),
        arg: a.to_string(),
        reason,
    };
    let mut parts = a.split(':').map(str::trim);
    let size = parse_size(parts.next().unwrap_or_default()).map_err(bad)?;
    let (mut fit, mut no_enlarge) = (Fit::Inside, false);
    for part in parts {
        match (part, Fit::parse(part)) {
            (_, Some(f)) => fit = f,
            ("no-enlarge", _) => no_enlarge = true,
            _ => {
                return Err(bad(format!(
                    "{part:?} is neither a fit (inside, stretch, cover, contain) nor no-enlarge"
                )))
            }
        }
    }
    Geometry::of(size, fit, no_enlarge).map_err(|e| bad(e.to_string()))
}

/// The items of a comma list. A comma followed by a number goes on with the item before it (no
/// op's name starts with a digit), so `crop:10,20,300,200,invert` is two items.
fn items(list: &str) -> Vec<&str> {
    let mut items: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    for piece in list.split(',') {
        let (start, end) = (at, at + piece.len());
        at = end + 1;
        let goes_on = piece.trim_start().starts_with(|c: char| c.is_ascii_digit());
        match items.last_mut() {
            Some(last) if goes_on => last.1 = end,
            _ => items.push((start, end)),
        }
    }
    items.into_iter().map(|(s, e)| &list[s..e]).collect()
}

/// Parses a comma list such as `grayscale,blur:2,brightness:1.2`. An empty list is no op.
pub fn parse_ops(list: &str) -> Result<Vec<Op>, OpError> {
    if list.trim().is_empty() {
        return Ok(Vec::new());
    }
    items(list)
        .into_iter()
        .map(|item| parse_one(item, list))
        .collect()
}

/// A dataset-wide op: it needs statistics over every image before any image can be mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetOp {
    /// `normalize`: v' = clamp(round(128 + 48 × (v − mean_c) / std_c), 0, 255) for each colour
    /// channel c, with the mean and population standard deviation of channel c over every pixel
    /// of every image; a channel with std 0 becomes 128.
    Normalize,
    /// `normalize:float`: the same statistics, stored in the block; the u8 pixels are left as
    /// they are and `export` writes (v − mean_c) / std_c as float32.
    NormalizeFloat,
    /// `equalize:dataset`: one histogram per colour channel over the whole dataset;
    /// v' = round(255 × (cdf_c(v) − cdf_c,min) / (n − cdf_c,min)), with cdf_c,min the count of
    /// the darkest level present (a channel with one level is left alone).
    Equalize,
}

/// An `apply` op list split at its dataset-wide op: `before` runs in pass 1 (which also gathers
/// the statistics), `after` runs in pass 2 once the dataset-wide op has mapped the image.
pub struct ApplyStages {
    pub before: OpChain,
    pub dataset: Option<DatasetOp>,
    pub after: OpChain,
}

impl ApplyStages {
    /// 2 when a dataset-wide op maps the pixels, else 1.
    pub fn passes(&self) -> u32 {
        match self.dataset {
            Some(DatasetOp::Normalize) | Some(DatasetOp::Equalize) => 2,
            _ => 1,
        }
    }
}

fn dataset_op(item: &str) -> Option<DatasetOp> {
    match item.trim().to_ascii_lowercase().as_str() {
        "normalize" | "normalise" => Some(DatasetOp::Normalize),
        "normalize:float" | "normalise:float" => Some(DatasetOp::NormalizeFloat),
        "equalize:dataset" | "equalise:dataset" => Some(DatasetOp::Equalize),
        _ => None,
    }
}

/// Parses an `apply` op list, which may hold one dataset-wide op (see [`DatasetOp`]), and no op
/// that changes an image's shape.
pub fn parse_apply(list: &str) -> Result<ApplyStages, OpError> {
    let stages = parse_stages(list)?;
    let ops = stages.before.ops().iter().chain(stages.after.ops());
    match ops.into_iter().find(|op| op.changes_shape()) {
        Some(op) => Err(OpError::ShapeInDataset(op.to_string())),
        None => Ok(stages),
    }
}

fn parse_stages(list: &str) -> Result<ApplyStages, OpError> {
    let items: Vec<&str> = items(list).into_iter().map(str::trim).collect();
    let at: Vec<usize> = (0..items.len())
        .filter(|&n| dataset_op(items[n]).is_some())
        .collect();
    match at.as_slice() {
        [] => Ok(ApplyStages {
            before: OpChain::parse(list)?,
            dataset: None,
            after: OpChain::new(Vec::new()),
        }),
        [n] => {
            let op = dataset_op(items[*n]);
            let after = OpChain::parse(&items[n + 1..].join(","))?;
            if op == Some(DatasetOp::NormalizeFloat) && !after.ops().is_empty() {
                return Err(OpError::FloatLast);
            }
            Ok(ApplyStages {
                before: OpChain::parse(&items[..*n].join(","))?,
                dataset: op,
                after,
            })
        }
        _ => Err(OpError::NormalizeTwice),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_problem() {
        assert_eq!(parse_ops("blurr:2"), Err(OpError::Unknown("blurr".into())));
        assert!(matches!(parse_ops("blur"), Err(OpError::MissingArg { .. })));
        assert!(matches!(parse_ops("blur:abc"), Err(OpError::BadArg { .. })));
        assert!(matches!(parse_ops("blur:-1"), Err(OpError::BadArg { .. })));
        assert!(matches!(
            parse_ops("threshold:300"),
            Err(OpError::BadArg { .. })
        ));
        assert!(matches!(
            parse_ops("invert:3"),
            Err(OpError::UnexpectedArg { .. })
        ));
        assert!(matches!(
            parse_ops("invert,,blur:1"),
            Err(OpError::Empty(_))
        ));
        assert_eq!(
            parse_ops("grayscale, blur:2").unwrap(),
            vec![Op::Grayscale, Op::Blur(2.0)]
        );
        for bad in [
            "crop",
            "crop:1,2,3",
            "crop:0x5",
            "crop:5x5+1",
            "crop:a,b,c,d",
            "rotate:45",
        ] {
            assert!(
                matches!(
                    parse_ops(bad),
                    Err(OpError::MissingArg { .. } | OpError::BadArg { .. })
                ),
                "{bad}"
            );
        }
        for bad in [
            "resize:0x5",
            "resize:800x600:sideways",
            "resize:800x:cover",
            "resize:256:cover",
        ] {
            assert!(
                matches!(parse_ops(bad), Err(OpError::BadSize { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn numbers_after_a_comma_belong_to_the_op_before() {
        let ops = parse_ops("crop:10, 20,300,200,invert,rotate:90").unwrap();
        let crop = CropBox {
            at: Some((10, 20)),
            width: 300,
            height: 200,
        };
        assert_eq!(ops, vec![Op::Crop(crop), Op::Invert, Op::Rotate(90)]);
        assert_eq!(items("a,1,b,,2"), vec!["a,1", "b", ",2"]);
    }

    /// The block stores the chain as its ops' text joined by commas: it must parse back to the
    /// same ops.
    #[test]
    fn every_op_written_out_parses_back_to_itself() {
        let list = "invert,grayscale,brightness:1.5,scale:0.5,contrast:2,gamma:2.2,threshold:7,blur:1.5,sharpen:0.5,flip-h,flip-v,crop:1,2,30,40,crop:30x40,crop:5x6+7+8,rotate:270,resize:800x600,resize:x90,resize:256:no-enlarge,resize:224x224:cover,resize:64x64:contain";
        let ops = parse_ops(list).unwrap();
        assert_eq!(ops.len(), 20);
        let text = ops
            .iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(parse_ops(&text).unwrap(), ops, "{text}");
    }

    #[test]
    fn apply_refuses_an_op_that_changes_the_size() {
        for list in [
            "crop:10x10",
            "invert,rotate:90",
            "normalize,resize:64x64:stretch",
        ] {
            assert!(
                matches!(parse_apply(list), Err(OpError::ShapeInDataset(_))),
                "{list}"
            );
        }
        assert!(parse_apply("invert,flip-h").is_ok());
    }
}
