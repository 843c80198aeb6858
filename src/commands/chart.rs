//! `bench memory --plot`: the figure, and what it shows (`MemoryBench`, also the benchmark's
//! JSON). The same drawing code writes SVG (its text is text, in the reader's sans-serif font)
//! and PNG (drawn at twice its size with antialiased glyphs, then shrunk: no jagged line, no
//! bitmap font).
//!
//! What it shows is what was read: each mode's total Pss over time as sampled, the decoded
//! dataset as a dashed reference line, the reading made at exit from the block's pages as a
//! marker of its own (never joined to the curve), the ratio of the peaks written on it, and the
//! job and the machine in the caption below.

use std::path::Path;

use anyhow::{bail, Context};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use serde::Serialize;

use crate::engine::memory::Sample;

// What one `bench memory` measured: what the figure shows, and the benchmark's JSON.

/// One mode's figures.
#[derive(Debug, Serialize)]
pub struct ModeResult {
    pub peak_total_pss_bytes: u64,
    pub peak_total_rss_bytes: u64,
    /// Peak of the shared-memory part of the total Pss.
    pub peak_shared_pss_bytes: u64,
    pub peak_pss_over_dataset: f64,
    pub wall_s: f64,
    pub images_ok: u64,
    pub images_failed: u64,
    /// The readings as made, each later than the one before.
    pub series: Vec<Sample>,
    /// The reading made at exit from the block's pages (counted in the peaks, not a sample of
    /// `series`).
    pub at_exit: Option<Sample>,
}

#[derive(Debug, Serialize)]
pub struct MemoryBench {
    pub dataset_bytes: u64,
    pub images: u64,
    pub workers: u32,
    /// The op chain both modes ran.
    pub ops: String,
    /// What each mode decodes: `rgb` in both, unless the chain starts with grayscale, when
    /// shared mode reads only each JPEG's luma plane (`luma of JPEGs`) and copy mode still
    /// decodes RGB.
    pub decode_shared: &'static str,
    pub decode_copy: &'static str,
    pub shared: ModeResult,
    pub copy: ModeResult,
    /// Peak total Pss of copy mode over shared mode's.
    pub copy_over_shared: f64,
    /// `--resize`, when given.
    pub resize: Option<(u32, u32)>,
    /// The machine it ran on: processor, cores, memory, kernel.
    pub machine: String,
}

/// What `--plot` can write, chosen by the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlotFormat {
    Svg,
    Png,
}

/// Size of the figure in pixels (the PNG's size, the SVG's view box).
pub const PLOT_SIZE: (u32, u32) = (960, 600);

/// The PNG is drawn at this many times its size, then shrunk.
const SUPERSAMPLE: u32 = 2;

const SHARED: RGBColor = RGBColor(31, 119, 180);
const COPY: RGBColor = RGBColor(214, 39, 40);
const DATASET: RGBColor = RGBColor(80, 80, 80);
const GRID: RGBColor = RGBColor(228, 228, 228);
const INK: RGBColor = RGBColor(25, 25, 25);
const NOTE: RGBColor = RGBColor(85, 85, 85);

pub fn plot_format(path: &Path) -> anyhow::Result<PlotFormat> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("svg") => Ok(PlotFormat::Svg),
        Some("png") => Ok(PlotFormat::Png),
        _ => bail!(
            "--plot {}: unknown plot format; valid file name endings: .svg, .png",
            path.display()
        ),
    }
}

/// Writes the figure of `b` to `path`, whole or not at all (a temporary, then a rename).
pub fn plot(path: &Path, b: &MemoryBench) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let format = plot_format(path)?;
    let suffix = match format {
        PlotFormat::Svg => ".svg",
        PlotFormat::Png => ".png",
    };
    let tmp = tempfile::Builder::new()
        .prefix(".shmpipe-plot-")
        .suffix(suffix)
        .permissions(shmpipe_worker::codec::ordinary_mode())
        .tempfile_in(dir)
        .with_context(|| format!("cannot write the plot in {}", dir.display()))?;
    let written = match format {
        PlotFormat::Svg => draw(
            SVGBackend::new(tmp.path(), PLOT_SIZE).into_drawing_area(),
            b,
            1,
        ),
        PlotFormat::Png => {
            let (w, h) = (PLOT_SIZE.0 * SUPERSAMPLE, PLOT_SIZE.1 * SUPERSAMPLE);
            let mut image = image::RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
            let backend = crate::commands::raster::RasterBackend::new(&mut image);
            draw(backend.into_drawing_area(), b, SUPERSAMPLE)?;
            crate::commands::raster::downsample(&image, SUPERSAMPLE)
                .save_with_format(tmp.path(), image::ImageFormat::Png)
                .map_err(anyhow::Error::from)
        }
    };
    written.with_context(|| format!("cannot write the plot {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("cannot write the plot {}", path.display()))?;
    Ok(())
}

/// The unit of the figure's memory axis: MiB below 2 GiB, else GiB.
#[derive(Clone, Copy)]
struct Unit {
    name: &'static str,
    bytes: f64,
}

const MIB: Unit = Unit {
    name: "MiB",
    bytes: (1u64 << 20) as f64,
};
const GIB: Unit = Unit {
    name: "GiB",
    bytes: (1u64 << 30) as f64,
};

impl Unit {
    fn for_max(bytes: u64) -> Unit {
        if bytes < 2 << 30 {
            MIB
        } else {
            GIB
        }
    }

    fn of(self, bytes: u64) -> f64 {
        bytes as f64 / self.bytes
    }

    /// `bytes` with about three significant digits, in MiB below 1 GiB, else in GiB:
    /// `16.4 MiB`, `1.23 GiB`.
    fn show(bytes: u64) -> String {
        let unit = if bytes < 1 << 30 { MIB } else { GIB };
        let v = unit.of(bytes);
        format!("{:.*} {}", decimals(v), v, unit.name)
    }
}

/// Decimals that give about three significant digits for values up to `v`.
fn decimals(v: f64) -> usize {
    match v {
        v if v < 10.0 => 2,
        v if v < 100.0 => 1,
        _ => 0,
    }
}

/// Draws the figure on `root`, every length times `k` (the PNG's supersampling).
fn draw<DB>(root: DrawingArea<DB, Shift>, b: &MemoryBench, k: u32) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
{
    let px = |v: u32| v * k;
    let font = |size: u32| ("sans-serif", f64::from(px(size))).into_font();
    root.fill(&WHITE)?;
    let (chart_area, caption_area) = root.split_vertically(px(PLOT_SIZE.1 - 62));
    let ends = [&b.shared, &b.copy].map(|m| m.at_exit.map_or(0.0, |s| s.t_s));
    let t_max = b
        .shared
        .series
        .iter()
        .chain(&b.copy.series)
        .map(|s| s.t_s)
        .chain(ends)
        .fold(0.1, f64::max);
    let peaks = [b.shared.peak_total_pss_bytes, b.copy.peak_total_pss_bytes];
    let top = peaks.into_iter().fold(b.dataset_bytes, u64::max);
    let unit = Unit::for_max(top);
    let y_max = unit.of(top) * 1.18;
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(
            "Memory of the whole run: one shared block against a copy per worker",
            font(24).color(&INK),
        )
        .margin(px(16))
        .x_label_area_size(px(48))
        .y_label_area_size(px(66))
        .build_cartesian_2d(0.0..t_max * 1.02, 0.0..y_max)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(GRID.stroke_width(k))
        .axis_style(INK.stroke_width(k))
        .x_labels(8)
        .y_labels(7)
        .label_style(font(15).color(&INK))
        .axis_desc_style(font(16).color(&INK))
        .x_desc("time since the run started (s)")
        .y_desc(format!("total Pss of all processes ({})", unit.name))
        .y_label_formatter(&|v| format!("{:.*}", decimals(y_max).saturating_sub(1), v))
        .x_label_formatter(&|v| format!("{:.*}", decimals(t_max).saturating_sub(1), v))
        .draw()?;

    let dataset = unit.of(b.dataset_bytes);
    let dash = DATASET.stroke_width(px(2));
    chart
        .draw_series(DashedLineSeries::new(
            [(0.0, dataset), (t_max * 1.02, dataset)],
            px(9),
            px(6),
            dash,
        ))?
        .label(format!("decoded dataset: {}", Unit::show(b.dataset_bytes)))
        .legend(move |(x, y)| {
            let seg = |from: u32, to: u32| {
                PathElement::new(vec![(x + px(from) as i32, y), (x + px(to) as i32, y)], dash)
            };
            EmptyElement::at((0, 0)) + seg(0, 6) + seg(9, 15) + seg(18, 24)
        });
    for (mode, color, name) in [
        (&b.shared, SHARED, "one shared block"),
        (&b.copy, COPY, "a copy per worker"),
    ] {
        let line: Vec<(f64, f64)> = mode
            .series
            .iter()
            .map(|s| (s.t_s, unit.of(s.pss)))
            .collect();
        chart
            .draw_series(LineSeries::new(line, color.stroke_width(px(2))))?
            .label(format!(
                "{name}: peak {}",
                Unit::show(mode.peak_total_pss_bytes)
            ))
            .legend(move |(x, y)| {
                PathElement::new(
                    vec![(x, y), (x + px(24) as i32, y)],
                    color.stroke_width(px(2)),
                )
            });
        chart.draw_series(mode.at_exit.iter().map(|s: &Sample| {
            Circle::new((s.t_s, unit.of(s.pss)), px(4), color.stroke_width(px(2)))
        }))?;
    }
    chart.draw_series(std::iter::once(Text::new(
        format!(
            "a copy per worker takes {:.1}\u{d7} the memory of one shared block",
            b.copy_over_shared
        ),
        (t_max * 1.01, y_max * 0.985),
        font(17).color(&INK).pos(Pos::new(HPos::Right, VPos::Top)),
    )))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .legend_area_size(px(34))
        .label_font(font(15).color(&INK))
        .background_style(WHITE.mix(0.9))
        .border_style(GRID.stroke_width(k))
        .margin(px(10))
        .draw()?;

    let notes = [
        caption_job(b),
        format!(
            "{}. Pss read from /proc/PID/smaps_rollup; a circle is the reading at exit, from the block's pages.",
            b.machine
        ),
    ];
    for (line, text) in notes.iter().enumerate() {
        caption_area.draw(&Text::new(
            text.clone(),
            (px(18) as i32, px(6 + 24 * line as u32) as i32),
            font(14).color(&NOTE),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// The job in words: images, decoded size, workers, resize and ops.
fn caption_job(b: &MemoryBench) -> String {
    let resize = b.resize.map_or("no --resize".to_string(), |(w, h)| {
        format!("--resize {w}x{h}")
    });
    let ops = match b.ops.is_empty() {
        true => "no --ops".to_string(),
        false => format!("--ops {}", b.ops),
    };
    format!(
        "shmpipe bench memory: the same run in each mode over {} images ({} decoded), -j {}, {resize}, {ops}.",
        b.images,
        Unit::show(b.dataset_bytes),
        b.workers
    )
}
