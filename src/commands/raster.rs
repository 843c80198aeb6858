//! A plotters drawing backend over an RGB image, so `bench memory --plot NAME.png` can write a
//! PNG with the same chart code as the SVG.
//!
//! plotters' own bitmap backend draws text only through a font stack (font-kit and the system's
//! fonts, or ab_glyph with a TrueType file shipped in the binary); without one it panics on the
//! first label. A chart's labels need no more than ASCII, so this backend draws them from an 8x8
//! bitmap font (public domain, `font8x8`) scaled by whole pixels. Lines, rectangles and polygons
//! use plotters' default rasterisation through `draw_pixel`.

use image::RgbImage;
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendTextStyle, DrawingBackend, DrawingErrorKind,
};

/// Glyph cell of the bitmap font, in pixels before scaling.
const GLYPH: i32 = 8;

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
}

impl<'a> RasterBackend<'a> {
    pub fn new(image: &'a mut RgbImage) -> Self {
        RasterBackend { image }
    }

    /// Whole-pixel scale of the 8x8 font for a plotters font size: 1 up to size 35 (the
    /// chart's caption is 20, and twice 8 pixels would not fit its line in the width).
    fn scale(size: f64) -> i32 {
        ((size / 24.0).round() as i32).max(1)
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
        let scale = Self::scale(style.size());
        let width = GLYPH * scale * text.chars().count() as i32;
        Ok((width as u32, (GLYPH * scale) as u32))
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Never>> {
        let color = style.color();
        let scale = Self::scale(style.size());
        let width = GLYPH * scale * text.chars().count() as i32;
        let height = GLYPH * scale;
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0,
            HPos::Center => -width / 2,
            HPos::Right => -width,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        for (index, ch) in text.chars().enumerate() {
            let code = if ch.is_ascii() {
                ch as usize
            } else {
                b'?' as usize
            };
            let rows = font8x8::legacy::BASIC_LEGACY[code];
            for (row, bits) in rows.iter().enumerate() {
                for column in 0..GLYPH {
                    // Bit 0 is the glyph's leftmost pixel.
                    if bits >> column & 1 == 0 {
                        continue;
                    }
                    for sy in 0..scale {
                        for sx in 0..scale {
                            let x = dx + (index as i32 * GLYPH + column) * scale + sx;
                            let y = dy + row as i32 * scale + sy;
                            let (x, y) = transform.transform(x, y);
                            self.blend((pos.0 + x, pos.1 + y), color);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}
