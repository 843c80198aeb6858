//! A plotters drawing backend over an RGB image, so `bench memory --plot NAME.png` can write a
//! PNG with the same chart code as the SVG.
//!
//! plotters' own bitmap backend draws text only through a font stack (font-kit and the system's
//! fonts); without one it panics on the first label. This backend draws text itself: each glyph's
//! outline from DejaVu Sans (a subset of it, shipped in the binary: `fonts/`) rasterised by
//! ab_glyph with its coverage as alpha, so the letters are antialiased. Lines, rectangles and
//! polygons use plotters' default rasterisation through `draw_pixel`; the chart is drawn at a
//! multiple of its size and [`downsample`]d, which antialiases them too.

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont};
use image::RgbImage;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// DejaVu Sans, printable ASCII and a few signs (see `fonts/README.md`).
const FONT: &[u8] = include_bytes!("fonts/DejaVuSans-subset.ttf");

/// Never fails: every drawing call lands in memory, out-of-range pixels are clipped.
#[derive(Debug)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}

/// Draws into an image it borrows: once the drawing area is dropped, the image holds the chart.
pub struct RasterBackend<'a> {
    image: &'a mut RgbImage,
    font: FontRef<'static>,
}

impl<'a> RasterBackend<'a> {
    pub fn new(image: &'a mut RgbImage) -> Self {
        let font = FontRef::try_from_slice(FONT).expect("the font shipped in the binary parses");
        RasterBackend { image, font }
    }

    /// The scale at which the font's em is `size / 1.24` pixels: the `font-size` plotters'
    /// SVG backend writes for a font of `size`, so the PNG's text matches the SVG's.
    fn scale(&self, size: f64) -> PxScale {
        let units_per_em = self.font.units_per_em().unwrap_or(2048.0);
        let em = size as f32 / 1.24;
        PxScale::from(em * self.font.height_unscaled() / units_per_em)
    }

    /// Each glyph of `text` with its pen position along the baseline, and the text's width.
    fn layout(&self, text: &str, scale: PxScale) -> (Vec<(GlyphId, f32)>, f32) {
        let font = self.font.as_scaled(scale);
        let mut pen = 0.0;
        let mut previous: Option<GlyphId> = None;
        let mut glyphs = Vec::with_capacity(text.len());
        for ch in text.chars() {
            let id = font.glyph_id(ch);
            if let Some(p) = previous {
                pen += font.kern(p, id);
            }
            glyphs.push((id, pen));
            pen += font.h_advance(id);
            previous = Some(id);
        }
        (glyphs, pen)
    }

    fn blend(&mut self, (x, y): BackendCoord, color: BackendColor) {
        if x < 0 || y < 0 || x >= self.image.width() as i32 || y >= self.image.height() as i32 {
            return;
        }
        let alpha = color.alpha.clamp(0.0, 1.0);
        let pixel = self.image.get_pixel_mut(x as u32, y as u32);
        let (r, g, b) = color.rgb;
        for (channel, new) in pixel.0.iter_mut().zip([r, g, b]) {
            *channel = (f64::from(new) * alpha + f64::from(*channel) * (1.0 - alpha)).round() as u8;
        }
    }
}

/// `image` shrunk by a whole `factor`, each pixel the mean of its `factor x factor` block: the
/// chart drawn at `factor` times its size comes out antialiased.
pub fn downsample(image: &RgbImage, factor: u32) -> RgbImage {
    let n = factor * factor;
    RgbImage::from_fn(image.width() / factor, image.height() / factor, |x, y| {
        let mut sum = [0u32; 3];
        for dy in 0..factor {
            for dx in 0..factor {
                let p = image.get_pixel(x * factor + dx, y * factor + dy);
                for (s, v) in sum.iter_mut().zip(p.0) {
                    *s += u32::from(v);
                }
            }
        }
        image::Rgb(sum.map(|s| ((s + n / 2) / n) as u8))
    })
}

impl DrawingBackend for RasterBackend<'_> {
    type ErrorType = Never;

    fn get_size(&self) -> (u32, u32) {
        self.image.dimensions()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Never>> {
        Ok(())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Never>> {
        Ok(())
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Never>> {
        self.blend(point, color);
        Ok(())
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Never>> {
        let scale = self.scale(style.size());
        let (_, width) = self.layout(text, scale);
        Ok((
            width.ceil() as u32,
            self.font.as_scaled(scale).height().ceil() as u32,
        ))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Never>> {
        let color = style.color();
        let scale = self.scale(style.size());
        let (glyphs, width) = self.layout(text, scale);
        let scaled = self.font.as_scaled(scale);
        let (ascent, height) = (scaled.ascent(), scaled.height());
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        // The baseline, from the anchor: the box is the font's height, its top `ascent` above.
        let baseline = match anchor.v_pos {
            VPos::Top => ascent,
            VPos::Center => ascent - height / 2.0,
            VPos::Bottom => ascent - height,
        };
        let transform = style.transform();
        for (id, pen) in glyphs {
            let glyph = id.with_scale_and_position(scale, ab_glyph::point(dx + pen, baseline));
            let Some(outline) = self.font.outline_glyph(glyph) else {
                continue; // a space
            };
            let bounds = outline.px_bounds();
            let mut covered = Vec::new();
            outline.draw(|x, y, coverage| {
                if coverage > 0.0 {
                    covered.push((x as i32, y as i32, coverage));
                }
            });
            for (x, y, coverage) in covered {
                let (x, y) = (bounds.min.x as i32 + x, bounds.min.y as i32 + y);
                let (x, y) = transform.transform(x, y);
                let alpha = color.alpha * f64::from(coverage.min(1.0));
                self.blend((pos.0 + x, pos.1 + y), BackendColor { alpha, ..color });
            }
        }
        Ok(())
    }
}
