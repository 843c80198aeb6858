//! A plain conversion keeps what the user had: each image's channels (gray, alpha), its ICC
//! profile, EXIF and comments, and a lossy WebP stays lossy. Through the real binary; outputs
//! decoded and compared with their inputs.

mod common;

use std::path::Path;

use common::{os, run, stderr};
use image::{ColorType, DynamicImage, ImageDecoder, ImageReader};

fn shmpipe_run(input: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![os("run"), input.as_os_str(), os("-o"), out.as_os_str()];
    args.extend([os("-j"), os("2"), os("-q")]);
    args.extend(extra.iter().map(|s| os(s)));
    let output = run(&args);
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
}

fn decoder(path: &Path) -> Box<dyn ImageDecoder> {
    Box::new(
        ImageReader::open(path)
            .unwrap()
            .with_guessed_format()
            .unwrap()
            .into_decoder()
            .unwrap(),
    )
}

fn decode(path: &Path) -> DynamicImage {
    image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An RGBA, a gray, and a gray-with-alpha PNG, each with every alpha value used.
fn write_channel_cases(dir: &Path) {
    let (w, h) = (64u32, 40u32);
    let rgba = image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([(x * 4) as u8, (y * 6) as u8, 90, ((x + y * w) % 256) as u8])
    });
    rgba.save(dir.join("rgba.png")).unwrap();
    let gray = image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 3 + y) as u8]));
    gray.save(dir.join("gray.png")).unwrap();
    let gray_alpha = image::GrayAlphaImage::from_fn(w, h, |x, y| {
        image::LumaA([(x * 3) as u8, ((x * 7 + y * 3) % 256) as u8])
    });
    gray_alpha.save(dir.join("gray-alpha.png")).unwrap();
}

#[test]
fn each_image_keeps_its_own_channels_and_alpha() {
    let dir = tempfile::tempdir().unwrap();
    let (input, out) = (dir.path().join("in"), dir.path().join("out"));
    std::fs::create_dir(&input).unwrap();
    write_channel_cases(&input);
    shmpipe_run(&input, &out, &[]);
    for (name, color) in [
        ("rgba.png", ColorType::Rgba8),
        ("gray.png", ColorType::L8),
        ("gray-alpha.png", ColorType::La8),
    ] {
        assert_eq!(decoder(&out.join(name)).color_type(), color, "{name}");
        assert_eq!(
            decode(&out.join(name)).as_bytes(),
            decode(&input.join(name)).as_bytes(),
            "{name}: pixels and alpha kept"
        );
    }

    // A colour op leaves alpha alone; grayscale of a gray image changes nothing.
    let out_ops = dir.path().join("out-ops");
    shmpipe_run(&input, &out_ops, &["--ops", "invert"]);
    let (before, after) = (
        decode(&input.join("rgba.png")).to_rgba8(),
        decode(&out_ops.join("rgba.png")).to_rgba8(),
    );
    for (b, a) in before.pixels().zip(after.pixels()) {
        assert_eq!([255 - b[0], 255 - b[1], 255 - b[2], b[3]], a.0);
    }
    let out_gray = dir.path().join("out-gray");
    shmpipe_run(&input, &out_gray, &["--ops", "grayscale"]);
    assert_eq!(
        decode(&out_gray.join("gray.png")).as_bytes(),
        decode(&input.join("gray.png")).as_bytes()
    );

    // `--channels 3` forces one layout on every image.
    let forced = dir.path().join("forced");
    shmpipe_run(&input, &forced, &["--channels", "3"]);
    for name in ["rgba.png", "gray.png", "gray-alpha.png"] {
        assert_eq!(
            decoder(&forced.join(name)).color_type(),
            ColorType::Rgb8,
            "{name}"
        );
    }
}
