//! The values of flags that clap cannot parse alone: sizes, boxes, byte counts, ages, channel
//! layouts, label sources, formats. Each parser's error names the value and what it should be.

use std::path::PathBuf;

use shmpipe_worker::codec::PngCompression;

/// The output formats `--format` accepts (with `jpg` and `tif` as aliases), for clap to list
/// when it refuses a value.
pub(super) fn format_values() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("png"),
        PossibleValue::new("jpeg").alias("jpg"),
        PossibleValue::new("webp"),
        PossibleValue::new("gif"),
        PossibleValue::new("bmp"),
        PossibleValue::new("tiff").alias("tif"),
    ])
}

pub(super) fn parse_channels(s: &str) -> Result<u32, String> {
    match s {
        "1" | "3" | "4" => Ok(s.parse().unwrap_or(3)),
        _ => Err(format!("{s:?} is not 1, 3 or 4")),
    }
}

/// `run --channels`: `auto` (0: each image keeps its own) or one layout for all.
pub(super) fn parse_run_channels(s: &str) -> Result<u32, String> {
    match s {
        "auto" => Ok(0),
        _ => parse_channels(s).map_err(|_| format!("{s:?} is not auto, 1, 3 or 4")),
    }
}

/// Parses `WxH` (for example `1024x768`), each side 1 to 65535.
pub(super) fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?} is not WxH, for example 1024x768"))?;
    let side = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|n| (1..=65535).contains(n))
            .ok_or_else(|| format!("{v:?} in {s:?} is not a side from 1 to 65535"))
    };
    Ok((side(w)?, side(h)?))
}

use crate::engine::settings::Labels;

/// `--labels`: `folder`, or a labels file ending in `.csv` or `.json`.
pub(super) fn parse_labels(s: &str) -> Result<Labels, String> {
    if s == "folder" {
        return Ok(Labels::Folder);
    }
    let path = PathBuf::from(s);
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") | Some("json") => Ok(Labels::File(path)),
        _ => Err(format!(
            "{s:?} is neither `folder` nor a labels file (FILE.csv or FILE.json)"
        )),
    }
}

use shmpipe_worker::resize::Size as Resize;

/// `--resize` of `run`: `WxH`, `Wx`, `xH` or `S`. ImageMagick's shrink-only `>` suffix is
/// refused with the flag that does it (unquoted, a shell takes `>` as a redirection).
pub(super) fn parse_box(s: &str) -> Result<Resize, String> {
    if s.ends_with('>') {
        return Err(format!(
            "{s:?}: for shrink-only write --resize {} --no-enlarge",
            s.trim_end_matches('>')
        ));
    }
    shmpipe_worker::resize::parse_size(s)
}

pub(super) fn parse_png_compression(s: &str) -> Result<PngCompression, String> {
    PngCompression::parse(s).ok_or_else(|| format!("{s:?} is not one of fast, default, best"))
}

pub(super) fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 2GiB or 512MiB"))?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    if value.is_nan() || value <= 0.0 || !value.is_finite() {
        return Err(format!("{s:?} must be above 0"));
    }
    Ok((value * scale) as u64)
}

/// An age such as `30s`, `90m`, `12h` or `7d` (`clean --older-than`).
pub(super) fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number.parse().map_err(|_| {
        format!("{s:?} is not an age: a whole number and a unit, as 30s, 90m, 12h or 7d")
    })?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?}: the unit is s, m, h or d (30s, 90m, 12h, 7d)"
            ))
        }
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(seconds)))
}

/// `--background`: `white`, `black`, `#rrggbb` or `R,G,B` (each 0 to 255).
pub(super) fn parse_color(s: &str) -> Result<[u8; 3], String> {
    let wrong = || format!("{s:?} is not a colour: white, black, #rrggbb or R,G,B (each 0 to 255)");
    match s.trim().to_ascii_lowercase().as_str() {
        "white" => Ok([255; 3]),
        "black" => Ok([0; 3]),
        hex if hex.starts_with('#') => {
            let digits = &hex[1..];
            if digits.len() != 6 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(wrong());
            }
            let byte =
                |k: usize| u8::from_str_radix(&digits[2 * k..2 * k + 2], 16).map_err(|_| wrong());
            Ok([byte(0)?, byte(1)?, byte(2)?])
        }
        list => {
            let parts: Vec<&str> = list.split(',').map(str::trim).collect();
            let [r, g, b] = parts[..] else {
                return Err(wrong());
            };
            let channel = |v: &str| v.parse::<u8>().map_err(|_| wrong());
            Ok([channel(r)?, channel(g)?, channel(b)?])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{parse_age, parse_bytes, parse_color};

    #[test]
    fn colours_parse_by_name_hex_and_list() {
        assert_eq!(parse_color("white"), Ok([255, 255, 255]));
        assert_eq!(parse_color("Black"), Ok([0, 0, 0]));
        assert_eq!(parse_color("#1a2B3c"), Ok([0x1a, 0x2b, 0x3c]));
        assert_eq!(parse_color("10, 20,30"), Ok([10, 20, 30]));
        for bad in ["#12345", "#12345g", "256,0,0", "1,2", "red", "", "1,2,3,4"] {
            assert!(parse_color(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ages_parse_with_units() {
        assert_eq!(parse_age("90m"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(
            parse_age("7d"),
            Ok(std::time::Duration::from_secs(7 * 86_400))
        );
        assert!(parse_age("12").is_err());
        assert!(parse_age("1w").is_err());
        assert!(parse_age("-1h").is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("64 MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1.5KB"), Ok(1500));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("2 parsecs").is_err());
        assert!(parse_bytes("-1GiB").is_err());
    }
}
