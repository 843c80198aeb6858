//! Codec throughput on a 1920x1080 photo-like image, in MP/s: decode per format, and the JPEG
//! encoders we could use (image's built-in one against jpeg-encoder with SIMD), gray and RGB.
//!
//!     cargo bench --bench codecs

use std::io::Cursor;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{ExtendedColorType, ImageEncoder, ImageFormat, RgbImage};

fn photo_like(w: u32, h: u32) -> RgbImage {
    let mut state = 0x2545_f491u32;
    RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let edge = if (x / 64 + y / 64) % 2 == 0 { 60 } else { 0 };
        image::Rgb([
            ((x * 200 / w) + edge + (state & 15)) as u8,
            ((y * 200 / h) + (state >> 8 & 15)) as u8,
            (((x + y) % 200) ^ (state >> 16 & 7)) as u8,
        ])
    })
}

fn codecs(c: &mut Criterion) {
    let (w, h) = (1920u32, 1080u32);
    let rgb = photo_like(w, h);
    let gray = image::DynamicImage::ImageRgb8(rgb.clone()).to_luma8();
    let mut group = c.benchmark_group("codecs/1920x1080");
    group.throughput(Throughput::Elements((w * h) as u64));
    group.sample_size(10);

    for format in [
        ImageFormat::Jpeg,
        ImageFormat::Png,
        ImageFormat::WebP,
        ImageFormat::Bmp,
        ImageFormat::Tiff,
    ] {
        let mut bytes = Cursor::new(Vec::new());
        rgb.write_to(&mut bytes, format).unwrap();
        let bytes = bytes.into_inner();
        let mut slot = vec![0u8; (w * h * 3) as usize];
        group.bench_function(format!("decode {format:?} RGB"), |b| {
            b.iter(|| {
                let reader = image::ImageReader::with_format(Cursor::new(&bytes), format);
                let decoder = reader.into_decoder().unwrap();
                image::ImageDecoder::read_image(decoder, &mut slot).unwrap();
            })
        });
    }

    for (name, data, color) in [
        ("RGB", rgb.as_raw(), ExtendedColorType::Rgb8),
        ("gray", gray.as_raw(), ExtendedColorType::L8),
    ] {
        group.bench_function(format!("encode JPEG q90 {name}, image"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(1 << 20);
                JpegEncoder::new_with_quality(&mut out, 90)
                    .write_image(data, w, h, color)
                    .unwrap();
                out
            })
        });
        let jpeg_color = if name == "RGB" {
            jpeg_encoder::ColorType::Rgb
        } else {
            jpeg_encoder::ColorType::Luma
        };
        group.bench_function(format!("encode JPEG q90 {name}, jpeg-encoder simd"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(1 << 20);
                jpeg_encoder::Encoder::new(&mut out, 90)
                    .encode(data, w as u16, h as u16, jpeg_color)
                    .unwrap();
                out
            })
        });
        group.bench_function(format!("encode PNG fast {name}"), |b| {
            b.iter(|| {
                let mut out = Vec::with_capacity(1 << 20);
                PngEncoder::new_with_quality(&mut out, CompressionType::Fast, FilterType::Adaptive)
                    .write_image(data, w, h, color)
                    .unwrap();
                out
            })
        });
    }
    group.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
