//! A plain conversion keeps what the user had: each image's channels (gray, alpha), its ICC
//! profile, EXIF and comments, and a lossy WebP stays lossy. Through the real binary; outputs
//! decoded and compared with their inputs.

use std::path::Path;

use crate::util::{os, run, stderr};
use image::{ColorType, DynamicImage, GenericImageView, ImageDecoder, ImageReader};

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

/// A stand-in ICC profile: a header that names its data colour space (`RGB ` or `GRAY`), and
/// bytes no encoder could invent.
fn icc_profile(space: &[u8; 4]) -> Vec<u8> {
    let mut icc: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 251) as u8).collect();
    icc[..4].copy_from_slice(&3000u32.to_be_bytes());
    icc[16..20].copy_from_slice(space);
    icc[36..40].copy_from_slice(b"acsp");
    icc
}

/// A 48x32 photo (shown turned: EXIF orientation 6) with an ICC profile and a COM comment.
fn write_tagged_jpeg(path: &Path, icc: &[u8], comment: &[u8]) {
    let (w, h) = (48u16, 32u16);
    let rgb: Vec<u8> = (0..w as u32 * h as u32)
        .flat_map(|i| [(i % 48 * 5) as u8, (i / 48 * 7) as u8, 120])
        .collect();
    let mut jpeg = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut jpeg, 95);
    encoder.add_icc_profile(icc).unwrap();
    encoder
        .add_exif_metadata(&shmpipe_worker::codec::exif_orientation(6))
        .unwrap();
    encoder
        .encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    // jpeg-encoder writes no COM segment: one right after SOI.
    let mut com = vec![0xFF, 0xFE];
    com.extend_from_slice(&(comment.len() as u16 + 2).to_be_bytes());
    com.extend_from_slice(comment);
    jpeg.splice(2..2, com);
    std::fs::write(path, jpeg).unwrap();
}

fn orientation(path: &Path) -> Option<image::metadata::Orientation> {
    let exif = decoder(path).exif_metadata().unwrap()?;
    image::metadata::Orientation::from_exif_chunk(&exif)
}

fn comments(path: &Path) -> Vec<Vec<u8>> {
    let format = image::ImageFormat::from_path(path).unwrap();
    shmpipe_worker::metadata::read(path, format)
        .comments
        .into_iter()
        .map(|c| c.text)
        .collect()
}

#[test]
fn a_jpeg_keeps_its_profile_exif_and_comment_and_strip_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let icc = icc_profile(b"RGB ");
    write_tagged_jpeg(&input.join("photo.jpg"), &icc, b"taken on the pier");
    assert_eq!(
        orientation(&input.join("photo.jpg")),
        Some(image::metadata::Orientation::Rotate90)
    );

    let out = dir.path().join("out");
    shmpipe_run(&input, &out, &[]);
    let photo = out.join("photo.jpg");
    assert_eq!(decode(&photo).width(), 32, "turned upright on decode");
    assert_eq!(decoder(&photo).icc_profile().unwrap(), Some(icc.clone()));
    assert_eq!(
        orientation(&photo),
        Some(image::metadata::Orientation::NoTransforms),
        "shown as it is stored: not turned a second time"
    );
    assert_eq!(comments(&photo), vec![b"taken on the pier".to_vec()]);

    // Into PNG: the profile in iCCP, EXIF in eXIf, the comment in a text chunk.
    let png = dir.path().join("png");
    shmpipe_run(&input, &png, &["--format", "png"]);
    let photo_png = png.join("photo.png");
    assert_eq!(
        decoder(&photo_png).icc_profile().unwrap(),
        Some(icc.clone())
    );
    assert_eq!(
        orientation(&photo_png),
        Some(image::metadata::Orientation::NoTransforms)
    );
    assert_eq!(comments(&photo_png), vec![b"taken on the pier".to_vec()]);

    // A gray result (the luma-plane path) keeps EXIF and the comment; an RGB profile would
    // misdescribe its pixels and is left out.
    let gray = dir.path().join("gray");
    shmpipe_run(&input, &gray, &["--ops", "grayscale,blur:2"]);
    let photo_gray = gray.join("photo.jpg");
    assert_eq!(decoder(&photo_gray).color_type(), ColorType::L8);
    assert_eq!(decoder(&photo_gray).icc_profile().unwrap(), None);
    assert_eq!(
        orientation(&photo_gray),
        Some(image::metadata::Orientation::NoTransforms)
    );
    assert_eq!(comments(&photo_gray), vec![b"taken on the pier".to_vec()]);

    let stripped = dir.path().join("stripped");
    shmpipe_run(&input, &stripped, &["--strip"]);
    let photo = stripped.join("photo.jpg");
    assert_eq!(decoder(&photo).icc_profile().unwrap(), None);
    assert_eq!(decoder(&photo).exif_metadata().unwrap(), None);
    assert!(comments(&photo).is_empty());
    assert_eq!(decode(&photo).width(), 32);
}

#[test]
fn a_png_keeps_its_profile_exif_and_text() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let icc = icc_profile(b"RGB ");
    let (w, h) = (20u32, 12u32);
    let mut info = png::Info::with_size(w, h);
    info.color_type = png::ColorType::Rgba;
    info.bit_depth = png::BitDepth::Eight;
    info.icc_profile = Some(icc.clone().into());
    info.exif_metadata = Some(shmpipe_worker::codec::exif_orientation(1).into());
    let file = std::fs::File::create(input.join("tagged.png")).unwrap();
    let mut encoder = png::Encoder::with_info(file, info).unwrap();
    encoder
        .add_text_chunk("Comment".into(), "plain latin-1".into())
        .unwrap();
    encoder
        .add_itxt_chunk("Title".into(), "café ☕".into())
        .unwrap();
    let mut writer = encoder.write_header().unwrap();
    let rgba: Vec<u8> = (0..w * h * 4).map(|i| (i * 3 % 256) as u8).collect();
    writer.write_image_data(&rgba).unwrap();
    writer.finish().unwrap();

    let out = dir.path().join("out");
    shmpipe_run(&input, &out, &[]);
    let tagged = out.join("tagged.png");
    assert_eq!(decode(&tagged).as_bytes(), &rgba[..]);
    assert_eq!(decoder(&tagged).icc_profile().unwrap(), Some(icc.clone()));
    assert_eq!(
        orientation(&tagged),
        Some(image::metadata::Orientation::NoTransforms)
    );
    let meta = shmpipe_worker::metadata::read(&tagged, image::ImageFormat::Png);
    let texts: Vec<(String, String)> = meta
        .comments
        .into_iter()
        .map(|c| (c.keyword, String::from_utf8(c.text).unwrap()))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("Comment".to_string(), "plain latin-1".to_string()),
            ("Title".to_string(), "café ☕".to_string()),
        ]
    );

    // Into JPEG: the profile and EXIF go along, the texts become COM segments.
    let jpeg = dir.path().join("jpeg");
    shmpipe_run(&input, &jpeg, &["--format", "jpeg"]);
    let tagged = jpeg.join("tagged.jpg");
    assert_eq!(decoder(&tagged).icc_profile().unwrap(), Some(icc));
    assert_eq!(
        comments(&tagged),
        vec![
            b"plain latin-1".to_vec(),
            "Title: café ☕".as_bytes().to_vec()
        ]
    );
}

/// The fourcc of a WebP's image chunk: `VP8 ` (lossy) or `VP8L` (lossless), after a VP8X and
/// ALPH if there are.
fn webp_image_chunk(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[8..12], b"WEBP");
    let mut at = 12;
    while at + 8 <= bytes.len() {
        let fourcc = &bytes[at..at + 4];
        if fourcc == b"VP8 " || fourcc == b"VP8L" {
            return String::from_utf8(fourcc.to_vec()).unwrap();
        }
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        at += 8 + len + (len & 1);
    }
    panic!("{}: no image chunk", path.display());
}

#[test]
fn a_lossy_webp_stays_lossy_and_lossless_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let photo = decode(&crate::util::assets().join("rocket.jpg")).to_rgb8();
    let (w, h) = photo.dimensions();
    let lossy = webp::Encoder::from_rgb(photo.as_raw(), w, h).encode(75.0);
    std::fs::write(input.join("rocket.webp"), &*lossy).unwrap();
    let lossless = webp::Encoder::from_rgb(photo.as_raw(), w, h).encode_lossless();
    std::fs::write(input.join("lossless.webp"), &*lossless).unwrap();
    assert_eq!(webp_image_chunk(&input.join("rocket.webp")), "VP8 ");

    let out = dir.path().join("out");
    shmpipe_run(&input, &out, &[]);
    let (before, after) = (
        std::fs::metadata(input.join("rocket.webp")).unwrap().len(),
        std::fs::metadata(out.join("rocket.webp")).unwrap().len(),
    );
    assert_eq!(webp_image_chunk(&out.join("rocket.webp")), "VP8 ");
    assert!(
        after as f64 <= 1.5 * before as f64,
        "{after} bytes from a {before}-byte lossy input"
    );
    assert_eq!(decode(&out.join("rocket.webp")).dimensions(), (w, h));
    // A lossless input stays lossless, pixel for pixel.
    assert_eq!(webp_image_chunk(&out.join("lossless.webp")), "VP8L");
    assert_eq!(
        decode(&out.join("lossless.webp")).to_rgb8().as_raw(),
        photo.as_raw()
    );

    let forced = dir.path().join("forced");
    shmpipe_run(&input, &forced, &["--lossless"]);
    assert_eq!(webp_image_chunk(&forced.join("rocket.webp")), "VP8L");
}

/// Lossy WebP with alpha, a profile and EXIF: the extended container holds them all.
#[test]
fn a_lossy_webp_output_keeps_alpha_profile_and_exif() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    write_channel_cases(&input);
    let icc = icc_profile(b"RGB ");
    write_tagged_jpeg(&input.join("photo.jpg"), &icc, b"pier");
    let out = dir.path().join("out");
    shmpipe_run(&input, &out, &["--format", "webp"]);

    let rgba = out.join("rgba.webp");
    assert_eq!(webp_image_chunk(&rgba), "VP8 ");
    assert_eq!(decoder(&rgba).color_type(), ColorType::Rgba8);
    let alpha_in = decode(&input.join("rgba.png")).to_rgba8();
    let alpha_out = decode(&rgba).to_rgba8();
    // Lossy colour; alpha is stored lossless by default.
    for (a, b) in alpha_in.pixels().zip(alpha_out.pixels()) {
        assert_eq!(a[3], b[3]);
    }

    let photo = out.join("photo.webp");
    assert_eq!(webp_image_chunk(&photo), "VP8 ");
    assert_eq!(decoder(&photo).icc_profile().unwrap(), Some(icc));
    assert_eq!(
        orientation(&photo),
        Some(image::metadata::Orientation::NoTransforms)
    );
    assert_eq!(decode(&photo).dimensions(), (32, 48));
    assert_eq!(decode(&out.join("gray.webp")).width(), 64);
}

/// The JSON summary of `shmpipe run ARGS --json`, with its exit code.
fn run_json(args: &[&std::ffi::OsStr]) -> (Option<i32>, serde_json::Value) {
    let mut args = args.to_vec();
    args.push(os("--json"));
    let out = run(&args);
    let summary =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    (out.status.code(), summary)
}

/// Metadata bombs cost no memory and never reach an output (issue 22, item 9): a 64x64 PNG
/// whose iCCP chunk inflates to 384 MiB, and a JPEG whose 300 APP2 ICC chunks (each "1 of 1")
/// would glue into a 19 MB profile. Both images are written, without the profile, each with a
/// warning naming what was left out; the peak memory of all processes stays far below the bomb,
/// with and without outputs (the decoder read the iCCP in full before).
#[test]
fn metadata_bombs_are_left_out_with_a_warning_and_cost_no_memory() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir(&input).unwrap();
    let (w, h) = (64u32, 64u32);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 256) as u8).collect();
    let bomb_len: u32 = 384 << 20;
    let mut bomb = vec![0u8; bomb_len as usize];
    bomb[..4].copy_from_slice(&bomb_len.to_be_bytes());
    bomb[16..20].copy_from_slice(b"RGB ");
    let mut info = png::Info::with_size(w, h);
    info.color_type = png::ColorType::Rgb;
    info.bit_depth = png::BitDepth::Eight;
    info.icc_profile = Some(bomb.into());
    let file = std::fs::File::create(input.join("iccp-bomb.png")).unwrap();
    let mut writer = png::Encoder::with_info(file, info)
        .unwrap()
        .write_header()
        .unwrap();
    writer.write_image_data(&rgb).unwrap();
    writer.finish().unwrap();
    assert!(
        std::fs::metadata(input.join("iccp-bomb.png"))
            .unwrap()
            .len()
            < 4 << 20
    );

    let mut jpeg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpeg, 90)
        .encode(&rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let mut segments = Vec::new();
    for _ in 0..300 {
        let piece = [b"ICC_PROFILE\0".as_slice(), &[1, 1], &[0x5A; 65_000]].concat();
        segments.extend_from_slice(&[0xFF, 0xE2]);
        segments.extend_from_slice(&(piece.len() as u16 + 2).to_be_bytes());
        segments.extend_from_slice(&piece);
    }
    let plain_jpeg = jpeg.clone();
    jpeg.splice(2..2, segments);
    std::fs::write(input.join("app2-bomb.jpg"), &jpeg).unwrap();

    let out = dir.path().join("out");
    let (code, summary) = run_json(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--format"),
        os("png"),
    ]);
    assert_eq!(code, Some(0), "{summary}");
    assert_eq!(summary["images_ok"], 2);
    let mut warned: Vec<(String, String)> = summary["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let path = w["path"].as_str().unwrap();
            (
                path.rsplit('/').next().unwrap().to_string(),
                w["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    warned.sort();
    assert_eq!(warned.len(), 2, "{warned:?}");
    assert!(warned[0].0 == "app2-bomb.jpg" && warned[0].1.contains("malformed ICC profile"));
    assert!(warned[1].0 == "iccp-bomb.png" && warned[1].1.contains("ICC profile"));
    for name in ["iccp-bomb.png", "app2-bomb.png"] {
        let written = out.join(name);
        assert_eq!(decoder(&written).icc_profile().unwrap(), None, "{name}");
        assert_eq!(decode(&written).dimensions(), (w, h));
    }
    // Against the same two pictures without their bombs, so that what the processes of a test
    // build cost on a busy machine is not counted. The PNG decoder may fill its header budget
    // (64 MiB, `codec::png_header_budget`) before it drops the profile, in a buffer that grows
    // by doubling; the bomb inflated would add its 384 MiB (it peaked at 331 MB before).
    let control = dir.path().join("control");
    std::fs::create_dir(&control).unwrap();
    image::RgbImage::from_raw(w, h, rgb.clone())
        .unwrap()
        .save(control.join("iccp-plain.png"))
        .unwrap();
    std::fs::write(control.join("app2-plain.jpg"), &plain_jpeg).unwrap();
    let peak_of = |folder: &std::path::Path, out: Option<&std::path::Path>| {
        let mut args = vec![os("run"), folder.as_os_str()];
        match out {
            Some(out) => args.extend([os("-o"), out.as_os_str(), os("--format"), os("png")]),
            None => args.extend([os("--ops"), os("invert")]),
        }
        let (code, summary) = run_json(&args);
        assert_eq!(code, Some(0), "{summary}");
        summary["peak_total_pss_bytes"].as_u64().unwrap()
    };
    let bound = |control_peak: u64| control_peak + (160 << 20);
    let peak = summary["peak_total_pss_bytes"].as_u64().unwrap();
    let control_peak = peak_of(&control, Some(&dir.path().join("control-out")));
    assert!(
        peak < bound(control_peak),
        "peak Pss {peak} bytes, {control_peak} without the bombs"
    );
    // Decoding alone (no output, no metadata read) does not inflate the profile either.
    let (peak, control_peak) = (peak_of(&input, None), peak_of(&control, None));
    assert!(
        peak < bound(control_peak),
        "peak Pss {peak} bytes without -o, {control_peak} without the bombs"
    );
}
