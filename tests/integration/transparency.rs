//! Images with alpha written where alpha cannot go, or flattened on request: `--background`
//! composites each onto a colour (checked pixel by pixel against the formula computed here, in
//! `run` and in `save`), gray with alpha stays gray over a gray colour; without it a PNG keeps
//! its alpha and a JPEG drops it with a warning naming each image that had transparency, and
//! only those.

use std::path::Path;

use crate::util::{ok, os, run, stderr, Dataset};

/// in/rgba.png (alpha 0 to 255 across), in/la.png (gray and alpha), in/opaque.png (RGBA, all
/// opaque), in/rgb.png (no alpha).
fn inputs(root: &Path) -> std::path::PathBuf {
    let input = root.join("in");
    std::fs::create_dir_all(&input).unwrap();
    image::RgbaImage::from_fn(32, 8, |x, y| {
        image::Rgba([(x * 8) as u8, (y * 30) as u8, 200, (x * 255 / 31) as u8])
    })
    .save(input.join("rgba.png"))
    .unwrap();
    image::GrayAlphaImage::from_fn(16, 4, |x, y| image::LumaA([(x * 16) as u8, (y * 80) as u8]))
        .save(input.join("la.png"))
        .unwrap();
    image::RgbaImage::from_fn(8, 8, |x, y| image::Rgba([x as u8, y as u8, 9, 255]))
        .save(input.join("opaque.png"))
        .unwrap();
    image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([x as u8, y as u8, 1]))
        .save(input.join("rgb.png"))
        .unwrap();
    input
}

/// `v` with alpha `a` over background `b`, rounded to nearest: computed in floating point.
fn over(v: u8, a: u8, b: u8) -> u8 {
    ((v as f64 * a as f64 + b as f64 * (255.0 - a as f64)) / 255.0).round() as u8
}

/// `img` composited over `bg` as the formula says, pixel by pixel (gray with alpha taken as
/// RGBA, its gray in each channel).
fn flattened(img: &image::DynamicImage, bg: [u8; 3]) -> image::RgbImage {
    let rgba = img.to_rgba8();
    image::RgbImage::from_fn(rgba.width(), rgba.height(), |x, y| {
        let p = rgba.get_pixel(x, y).0;
        image::Rgb([
            over(p[0], p[3], bg[0]),
            over(p[1], p[3], bg[1]),
            over(p[2], p[3], bg[2]),
        ])
    })
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("JSON: {}", stderr(out)))
}

#[test]
fn background_flattens_alpha_exactly_and_a_jpeg_without_it_names_what_it_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let source = |name: &str| image::open(input.join(name)).unwrap();

    // Onto a colour: every image without alpha, each pixel the formula's.
    let out = tmp.path().join("flat");
    let done = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        out.as_os_str(),
        os("--background"),
        os("10,200,30"),
        os("-q"),
    ]);
    assert!(done.status.success(), "{}", stderr(&done));
    let bg = [10u8, 200, 30];
    let flat = image::open(out.join("rgba.png")).unwrap();
    assert_eq!(flat.color(), image::ColorType::Rgb8);
    let want = flattened(&source("rgba.png"), bg);
    assert_eq!(flat.to_rgb8(), want);
    let la = image::open(out.join("la.png")).unwrap();
    assert_eq!(
        la.color(),
        image::ColorType::Rgb8,
        "gray over a colour is colour"
    );
    let la_want = flattened(&source("la.png"), bg);
    assert_eq!(la.to_rgb8(), la_want);
    let opaque = image::open(out.join("opaque.png")).unwrap();
    assert_eq!(opaque.color(), image::ColorType::Rgb8);
    assert_eq!(opaque.to_rgb8(), source("opaque.png").to_rgb8());
    assert_eq!(
        image::open(out.join("rgb.png")).unwrap().to_rgb8(),
        source("rgb.png").to_rgb8()
    );

    // Gray with alpha over white stays gray.
    let white = tmp.path().join("white");
    ok(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        white.as_os_str(),
        os("--include"),
        os("la.png"),
        os("--background"),
        os("#ffffff"),
        os("-q"),
    ]);
    let gray = image::open(white.join("la.png")).unwrap();
    assert_eq!(gray.color(), image::ColorType::L8);
    let gray_want = image::GrayImage::from_fn(16, 4, |x, y| {
        let p = source("la.png").to_luma_alpha8().get_pixel(x, y).0;
        image::Luma([over(p[0], p[1], 255)])
    });
    assert_eq!(gray.to_luma8(), gray_want);

    // Without it: a PNG keeps its alpha, and a JPEG drops it with a warning naming the two
    // images that had transparency (not the opaque RGBA one).
    let kept = tmp.path().join("kept");
    ok(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        kept.as_os_str(),
        os("-q"),
    ]);
    assert_eq!(
        image::open(kept.join("rgba.png")).unwrap().to_rgba8(),
        source("rgba.png").to_rgba8()
    );
    let jpeg = tmp.path().join("jpeg");
    let done = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        jpeg.as_os_str(),
        os("--format"),
        os("jpeg"),
        os("--json"),
    ]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    let said = json(&done);
    let mut warned: Vec<String> = said["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            assert_eq!(
                w["reason"], "its transparency was dropped (a JPEG holds none)",
                "{w}"
            );
            w["path"]
                .as_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    warned.sort();
    assert_eq!(warned, ["la.png", "rgba.png"]);
    let text = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        jpeg.as_os_str(),
        os("--format"),
        os("jpeg"),
    ]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("2 images written as JPEG without their transparency")
            || stderr(&text).contains("2 images written as JPEG without their transparency"),
        "{}{}",
        String::from_utf8_lossy(&text.stdout),
        stderr(&text)
    );
    // With --background, nothing is dropped and nothing said.
    let done = run(&[
        os("run"),
        input.as_os_str(),
        os("-o"),
        tmp.path().join("jpeg2").as_os_str(),
        os("--format"),
        os("jpeg"),
        os("--background"),
        os("white"),
        os("--json"),
    ]);
    assert_eq!(json(&done)["warnings"], serde_json::json!([]));

    // A flag with nothing to do says so; a colour that is not one is refused.
    let done = run(&[
        os("run"),
        input.as_os_str(),
        os("--include"),
        os("rgb.png"),
        os("-o"),
        tmp.path().join("none").as_os_str(),
        os("--background"),
        os("black"),
    ]);
    assert!(
        stderr(&done).contains("--background has no effect"),
        "{}",
        stderr(&done)
    );
    let done = run(&[os("run"), input.as_os_str(), os("--background"), os("red")]);
    assert_eq!(done.status.code(), Some(2));
    assert!(
        stderr(&done).contains("\"red\" is not a colour"),
        "{}",
        stderr(&done)
    );
}

/// `save` flattens a kept dataset's RGBA images the same way, and warns, per image, when a
/// JPEG drops transparency.
#[test]
fn save_flattens_onto_the_background_and_warns_when_a_jpeg_drops_alpha() {
    let tmp = tempfile::tempdir().unwrap();
    let input = inputs(tmp.path());
    let name = format!("alpha{}", std::process::id());
    let _guard = Dataset(name.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--include"),
        os("rgba.png"),
        os("--channels"),
        os("4"),
        os("-q"),
    ]);
    let out = tmp.path().join("saved");
    ok(&[
        os("save"),
        os(&name),
        os("-o"),
        out.as_os_str(),
        os("--background"),
        os("0,0,255"),
    ]);
    let want = flattened(&image::open(input.join("rgba.png")).unwrap(), [0, 0, 255]);
    let saved = image::open(out.join("rgba.png")).unwrap();
    assert_eq!(saved.color(), image::ColorType::Rgb8);
    assert_eq!(saved.to_rgb8(), want);
    // An RGB dataset has nothing to flatten: said.
    let rgb = format!("rgb{}", std::process::id());
    let _rgb_guard = Dataset(rgb.clone());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&rgb),
        os("-q"),
    ]);
    let save = |name: &str, out: &str, flag: &str, value: &str| {
        crate::util::shmpipe(&[
            os("save"),
            os(name),
            os("-o"),
            tmp.path().join(out).as_os_str(),
            os(flag),
            os(value),
        ])
    };
    let done = save(&rgb, "rgb", "--background", "white");
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert!(
        stderr(&done).contains("--background has no effect"),
        "{}",
        stderr(&done)
    );
    let done = save(&name, "jpeg", "--format", "jpeg");
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert!(
        stderr(&done).contains("rgba.png: its transparency was dropped (a JPEG holds none)"),
        "{}",
        stderr(&done)
    );
}
