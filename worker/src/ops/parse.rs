//! Parsing op lists: `--ops` into [`Op`]s, and an `apply` list split at its dataset-wide op
//! ([`DatasetOp`], [`ApplyStages`]). Errors ([`OpError`]) name the op and the argument.
//!
//! This file must never touch pixels: it turns text into ops, nothing more.

use std::fmt;

use super::OpChain;

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
        }
    }
}

/// What to say after an unknown op's name: the op it is nearest to, and where every op is listed.
fn unknown_hint(name: &str) -> String {
    let known = "invert, grayscale, brightness:F, scale:F, contrast:F, gamma:G, threshold:T, blur:SIGMA, sharpen[:A], flip-h, flip-v; and, with shmpipe apply on a loaded dataset, normalize, normalize:float, equalize:dataset";
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

/// Parses a comma list such as `grayscale,blur:2,brightness:1.2`. An empty list is no op.
pub fn parse_ops(list: &str) -> Result<Vec<Op>, OpError> {
    if list.trim().is_empty() {
        return Ok(Vec::new());
    }
    list.split(',').map(|item| parse_one(item, list)).collect()
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

/// Parses an `apply` op list, which may hold one dataset-wide op (see [`DatasetOp`]).
pub fn parse_apply(list: &str) -> Result<ApplyStages, OpError> {
    let items: Vec<&str> = list.split(',').map(str::trim).collect();
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
    }
}
