//! Every kind of bad or unusual input gets its defined outcome: decoded (converted where `image`
//! can), or listed with its path and reason. A bad file never stops the others, never crashes a
//! worker, and `--strict` stops at the first one.

use std::collections::HashMap;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::util::{exif_orientation, files_under, os, run, stderr};
use image::codecs::png::PngEncoder;
use image::{ImageEncoder, Rgb, RgbImage};

/// An 8-bit RGB image whose every pixel says where it is: (x, y, x ^ y).
fn coded(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| Rgb([x as u8, y as u8, (x ^ y) as u8 ^ 0x5a]))
}

fn png_with_exif(img: &RgbImage, orientation: u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut enc = PngEncoder::new(&mut bytes);
    enc.set_exif_metadata(exif_orientation(orientation))
        .unwrap();
    enc.write_image(
        img.as_raw(),
        img.width(),
        img.height(),
        image::ExtendedColorType::Rgb8,
    )
    .unwrap();
    bytes
}

/// The displayed pixel (x, y) of stored image `s` under EXIF orientation `o`, from the EXIF
/// definitions, independently of any image library.
fn displayed(s: &RgbImage, o: u16, x: u32, y: u32) -> Rgb<u8> {
    let (w, h) = s.dimensions();
    let (sx, sy) = match o {
        1 => (x, y),
        2 => (w - 1 - x, y),
        3 => (w - 1 - x, h - 1 - y),
        4 => (x, h - 1 - y),
        5 => (y, x),
        6 => (y, h - 1 - x),
        7 => (w - 1 - y, h - 1 - x),
        8 => (w - 1 - y, x),
        _ => unreachable!(),
    };
    *s.get_pixel(sx, sy)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A 60-byte PNG that declares 100000 x 100000 pixels: a decompression bomb's header.
fn bomb_png() -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    png_chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn palette_png(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 4, 2);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30]);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[0, 1, 2, 3, 3, 2, 1, 0]).unwrap();
}

fn animated_gif(path: &Path) {
    use image::{Delay, Frame, RgbaImage};
    let file = std::fs::File::create(path).unwrap();
    let mut enc = image::codecs::gif::GifEncoder::new(file);
    let first = Frame::from_parts(
        RgbaImage::from_pixel(6, 4, image::Rgba([250, 0, 0, 255])),
        0,
        0,
        Delay::from_numer_denom_ms(100, 1),
    );
    let second = Frame::from_parts(
        RgbaImage::from_pixel(6, 4, image::Rgba([0, 0, 250, 255])),
        0,
        0,
        Delay::from_numer_denom_ms(100, 1),
    );
    enc.encode_frames(vec![first, second]).unwrap();
}

/// Builds the bad-input folder; returns the expected reason fragment of each file that must fail.
fn build(input: &Path) -> HashMap<&'static str, &'static str> {
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let good = coded(48, 32);
    good.save(input.join("good.png")).unwrap();
    good.save(input.join("sub/good.jpg")).unwrap();
    let jpeg = std::fs::read(input.join("sub/good.jpg")).unwrap();
    std::fs::write(input.join("truncated.jpg"), &jpeg[..jpeg.len() / 3]).unwrap();
    let png = std::fs::read(input.join("good.png")).unwrap();
    std::fs::write(input.join("truncated.png"), &png[..png.len() / 2]).unwrap();
    std::fs::write(input.join("empty.png"), b"").unwrap();
    std::fs::write(
        input.join("text.jpg"),
        b"Just some text with a .jpg name.\n",
    )
    .unwrap();
    let mut ppm = b"P6\n2 2\n255\n".to_vec();
    ppm.extend_from_slice(&[9; 12]);
    std::fs::write(input.join("netpbm.ppm"), ppm).unwrap();
    std::fs::write(input.join("bomb.png"), bomb_png()).unwrap();
    image::ImageBuffer::<Rgb<u16>, _>::from_fn(8, 4, |x, _| Rgb([x as u16 * 8000, 65535, 0]))
        .save(input.join("rgb16.png"))
        .unwrap();
    image::GrayAlphaImage::from_fn(5, 3, |x, _| image::LumaA([x as u8 * 50, 128]))
        .save(input.join("gray_alpha.png"))
        .unwrap();
    palette_png(&input.join("palette.png"));
    animated_gif(&input.join("animated.gif"));
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cmyk.jpg"),
        input.join("cmyk.jpg"),
    )
    .unwrap();
    for o in 1..=8u16 {
        std::fs::write(
            input.join(format!("exif/o{o}.png")).tap_dir(),
            png_with_exif(&coded(6, 4), o),
        )
        .unwrap();
    }
    let non_utf8 = PathBuf::from(std::ffi::OsStr::from_bytes(b"caf\xe9.png"));
    good.save(input.join(&non_utf8)).unwrap();
    std::os::unix::fs::symlink(".", input.join("sub/loop")).unwrap();
    HashMap::from([
        ("truncated.jpg", ""),
        ("truncated.png", ""),
        ("empty.png", "not an image"),
        ("text.jpg", "not an image"),
        ("netpbm.ppm", "unsupported format"),
        ("bomb.png", "over the limit"),
    ])
}

trait TapDir {
    fn tap_dir(self) -> Self;
}

impl TapDir for PathBuf {
    fn tap_dir(self) -> Self {
        std::fs::create_dir_all(self.parent().unwrap()).unwrap();
        self
    }
}

#[test]
fn each_bad_input_gets_its_outcome_and_the_good_ones_are_processed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let expected_failures = build(&input);
    let before: Vec<(PathBuf, Vec<u8>)> = files_under(&input)
        .into_iter()
        .filter(|f| !f.ends_with("loop"))
        .map(|f| {
            let b = std::fs::read(input.join(&f)).unwrap_or_default();
            (f, b)
        })
        .collect();
    let out = tmp.path().join("out");
    let output = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--json"),
        os("-j"),
        os("3"),
        os("--format"),
        os("png"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["worker_restarts"], 0, "no bad file crashed a worker");

    let failures: HashMap<String, String> = s["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let path = f["path"].as_str().unwrap();
            let rel = path
                .strip_prefix(&format!("{}/", input.display()))
                .unwrap_or(path)
                .to_string();
            (rel, f["reason"].as_str().unwrap().to_string())
        })
        .collect();
    for (file, fragment) in &expected_failures {
        let reason = failures
            .get(*file)
            .unwrap_or_else(|| panic!("{file} is listed as failed: {failures:?}"));
        assert!(
            reason.contains(fragment),
            "{file}: reason {reason:?} says {fragment:?}"
        );
    }
    assert_eq!(
        failures.len(),
        expected_failures.len(),
        "only the bad files fail: {failures:?}"
    );
    // The symlink loop is a folder that cannot be walked: refused as a folder, not counted as an
    // image that failed.
    let folders = s["folders_refused"].as_array().expect("folders_refused");
    assert_eq!(folders.len(), 1, "{folders:?}");
    assert_eq!(
        folders[0]["path"].as_str().unwrap(),
        input.join("sub/loop").display().to_string()
    );
    assert!(folders[0]["reason"]
        .as_str()
        .unwrap()
        .contains("symlink loop"));
    assert_eq!(
        s["images_failed"].as_u64().unwrap() as usize,
        expected_failures.len()
    );

    // Converted, not rejected: 16-bit, gray+alpha, palette, CMYK, animated GIF (first frame),
    // the EXIF-rotated ones and the non-UTF-8 name; plus the two plain good files.
    let ok = s["images_ok"].as_u64().unwrap();
    assert_eq!(ok, 2 + 5 + 8 + 1);
    let decoded = |rel: &str| {
        image::open(out.join(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .to_rgb8()
    };
    assert_eq!(decoded("palette.png").get_pixel(1, 0), &Rgb([0, 255, 0]));
    assert_eq!(decoded("palette.png").get_pixel(3, 0), &Rgb([10, 20, 30]));
    assert_eq!(
        decoded("animated.png").get_pixel(2, 2),
        &Rgb([250, 0, 0]),
        "first frame"
    );
    assert_eq!(
        decoded("gray_alpha.png").get_pixel(2, 1),
        &Rgb([100, 100, 100])
    );
    assert_eq!(decoded("rgb16.png").get_pixel(0, 0)[1], 255);
    let cmyk = decoded("cmyk.png");
    let near = |p: &Rgb<u8>, q: [u8; 3]| {
        p.0.iter()
            .zip(q)
            .all(|(a, b)| (*a as i32 - b as i32).abs() <= 12)
    };
    assert!(
        near(cmyk.get_pixel(4, 4), [200, 100, 50]),
        "cmyk top-left {:?}",
        cmyk.get_pixel(4, 4)
    );
    assert!(
        near(cmyk.get_pixel(28, 12), [30, 100, 220]),
        "cmyk bottom-right {:?}",
        cmyk.get_pixel(28, 12)
    );
    let stored = coded(6, 4);
    for o in 1..=8u16 {
        let got = decoded(&format!("exif/o{o}.png"));
        let (w, h) = if o >= 5 { (4, 6) } else { (6, 4) };
        assert_eq!(got.dimensions(), (w, h), "orientation {o} shape");
        for y in 0..h {
            for x in 0..w {
                assert_eq!(
                    got.get_pixel(x, y),
                    &displayed(&stored, o, x, y),
                    "orientation {o} at ({x}, {y})"
                );
            }
        }
    }
    assert!(
        out.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png"))
            .exists(),
        "non-UTF-8 name kept byte for byte"
    );
    assert!(!files_under(&out)
        .iter()
        .any(|f| f.to_string_lossy().contains("shmpipe-tmp")));

    for (f, bytes) in before {
        assert!(
            std::fs::read(input.join(&f)).unwrap_or_default() == bytes,
            "input {} unchanged",
            f.display()
        );
    }
}

#[test]
fn strict_stops_at_the_first_bad_file() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    build(&input);
    let out = tmp.path().join("out");
    let output = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--json"),
        os("--strict"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["images_failed"], 1, "only the first failure is reported");
    assert_eq!(s["stopped_by_strict"], true);
    assert_eq!(s["images_ok"], 0);

    // A failure found only while decoding (the header is fine) also stops a strict run.
    let late = tmp.path().join("late");
    std::fs::create_dir_all(&late).unwrap();
    for i in 0..6 {
        coded(64, 64)
            .save(late.join(format!("img{i}.png")))
            .unwrap();
    }
    let png = std::fs::read(late.join("img0.png")).unwrap();
    std::fs::write(late.join("img0.png"), &png[..png.len() - 40]).unwrap();
    let output = run(&[
        os("run"),
        late.as_os_str(),
        os("--json"),
        os("--strict"),
        os("-j"),
        os("1"),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let s: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(s["stopped_by_strict"], true);
    assert_eq!(s["images_failed"], 1);
    assert!(
        s["images_ok"].as_u64().unwrap() < 5,
        "the run stopped early: {s}"
    );
}

#[test]
fn an_empty_folder_says_so_and_exits_0() {
    let tmp = tempfile::tempdir().unwrap();
    let output = run(&[os("run"), tmp.path().as_os_str()]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.starts_with("nothing to do: no images found\n"),
        "{text}"
    );
}

/// Issue 22: `load` of a folder without an image exited 0 and created nothing, so the next
/// `save` or `apply` said the dataset did not exist. It fails, saying so, and creates nothing.
#[test]
fn load_of_a_folder_without_images_fails_and_creates_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let name = format!("emptyload{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    let with_readme = tmp.path().join("notes");
    std::fs::create_dir_all(&with_readme).unwrap();
    std::fs::write(with_readme.join("README.txt"), "no pictures here").unwrap();
    for folder in [tmp.path().to_path_buf(), with_readme] {
        let out = run(&[os("load"), folder.as_os_str(), os("--name"), os(&name)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {err}", folder.display());
        assert!(
            err.contains("no images") && err.contains(&*folder.to_string_lossy()),
            "says why, naming the folder: {err}"
        );
        assert!(err.contains(&name), "names the dataset not created: {err}");
        assert!(!std::path::Path::new("/dev/shm")
            .join(format!("shmpipe-{name}"))
            .exists());
    }
}

#[test]
fn skip_existing_does_only_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    for i in 0..4 {
        coded(16 + i, 16)
            .save(input.join(format!("{i}.png")))
            .unwrap();
    }
    let out = tmp.path().join("out");
    let first = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--ops"),
        os("invert"),
        os("--json"),
    ]);
    assert_eq!(first.status.code(), Some(0));
    let kept = std::fs::read(out.join("0.png")).unwrap();
    std::fs::remove_file(out.join("2.png")).unwrap();
    let again = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--ops"),
        os("invert"),
        os("--json"),
        os("--skip-existing"),
    ]);
    assert_eq!(again.status.code(), Some(0));
    let s: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(s["images_ok"], 1);
    assert_eq!(s["files_existing"], 3);
    assert!(out.join("2.png").exists());
    assert!(std::fs::read(out.join("0.png")).unwrap() == kept);
}

/// A folder the walk cannot read is said as a folder, with its reason, and makes the exit
/// status 1; it is not counted as an image.
#[test]
fn an_unreadable_folder_is_a_refused_folder_not_a_failed_image() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    coded(8, 6).save(input.join("one.png")).unwrap();
    std::os::unix::fs::symlink("..", input.join("sub/up")).unwrap();
    let output = run(&[os("run"), input.as_os_str(), os("-j"), os("1")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("1 of 1 image done, 0 failed"), "{text}");
    assert!(text.contains("1 folder not read"), "{text}");
    assert!(
        text.contains(&format!(
            "  refused folder: {}: symlink loop",
            input.join("sub/up").display()
        )),
        "{text}"
    );
}
