//! Codec throughput on a 1920x1080 photo-like image, in MP/s: decode per format (and a JPEG's
//! luma plane alone, from its file, as a grayscale-first chain reads it), the JPEG encoders we
//! could use (image's built-in one against jpeg-encoder with SIMD), gray and RGB, PNG at each
//! `--png-compression` level, WebP lossless (image) and lossy (libwebp), and the other formats'
//! encoders.
//!
//!     cargo bench -p shmpipe-benches --bench codecs

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

    // The luma plane of the JPEG, from a file, as a worker decodes it for `grayscale,...`.
    let dir = tempfile::tempdir().unwrap();
    let jpeg_path = dir.path().join("photo.jpg");
    rgb.save_with_format(&jpeg_path, ImageFormat::Jpeg).unwrap();
    let mut plane = vec![0u8; (w * h) as usize];
    let mut stored = Vec::new();
    group.bench_function("decode JPEG luma plane (file)", |b| {
        b.iter(|| {
            assert!(shmpipe_worker::codec::decode_jpeg_luma(
                &jpeg_path,
                &mut plane,
                h,
                w,
                &mut stored
            ))
        })
    });
    group.bench_function("decode JPEG RGB (file)", |b| {
        let mut slot = vec![0u8; (w * h * 3) as usize];
        b.iter(|| {
            let strict = shmpipe_worker::jpeg::Strictness::Strict;
            shmpipe_worker::codec::decode_into(&jpeg_path, &mut slot, (h, w, 3), 1 << 30, strict)
                .unwrap()
        })
    });

    for format in [ImageFormat::WebP, ImageFormat::Bmp, ImageFormat::Tiff] {
        group.bench_function(format!("encode {format:?} RGB"), |b| {
            b.iter(|| {
                let mut out = Cursor::new(Vec::with_capacity(1 << 20));
                rgb.write_to(&mut out, format).unwrap();
                out
            })
        });
    }

    // Lossy WebP through libwebp (what `run` writes by default), against image's lossless
    // encoder above.
    for method in [0, 2, 4] {
        let mut config = webp::WebPConfig::new().unwrap();
        config.lossless = 0;
        config.quality = 90.0;
        config.method = method;
        group.bench_function(
            format!("encode WebP lossy q90 m{method} RGB, libwebp"),
            |b| {
                b.iter(|| {
                    webp::Encoder::from_rgb(rgb.as_raw(), w, h)
                        .encode_advanced(&config)
                        .unwrap()
                        .len()
                })
            },
        );
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
        // 4:4:4 at q90, as jpeg-encoder above and the worker.
        group.bench_function(format!("encode JPEG q90 {name}, libjpeg-turbo"), |b| {
            let channels = if name == "RGB" { 3 } else { 1 };
            let encoding = shmpipe_worker::jpeg::libjpeg::Encoding {
                quality: 90,
                subsample: false,
            };
            b.iter(|| {
                shmpipe_worker::jpeg::libjpeg::compress(data, (w, h), channels, encoding).unwrap()
            })
        });
        for (level, compression) in [
            ("fast", CompressionType::Fast),
            ("default", CompressionType::Default),
            ("best", CompressionType::Best),
        ] {
            group.bench_function(format!("encode PNG {level} {name}"), |b| {
                b.iter(|| {
                    let mut out = Vec::with_capacity(1 << 20);
                    PngEncoder::new_with_quality(&mut out, compression, FilterType::Adaptive)
                        .write_image(data, w, h, color)
                        .unwrap();
                    out
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, codecs);
criterion_main!(benches);
