//! A /dev/shm too small for the block (Docker's default is 64 MiB): in a private mount namespace
//! with an 8 MiB tmpfs on /dev/shm, a dataset that needs more is refused up front with exit 2 and
//! a message naming the bytes, never a SIGBUS; `--backing DIR` loads it. A plain run holds a
//! window of one slot per worker, so the folder runs there; an image too large for a worker's
//! share fails alone, with its reason.
//!
//! Needs root and `unshare` (CI runs as root). Set SHMPIPE_SKIP_NAMESPACE_TESTS=1 to skip
//! elsewhere; without it a missing `unshare` fails the test rather than passing silently.

use crate::util::{assets, files_under};

fn in_small_shm(script: &str) -> Option<std::process::Output> {
    crate::util::in_mount_namespace(&format!(
        "mount -t tmpfs -o size=8m tmpfs /dev/shm && {script}"
    ))
}

#[test]
fn a_dataset_too_large_is_refused_up_front_and_backing_works() {
    let tmp = tempfile::tempdir().unwrap();
    let backing = tmp.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let a = assets();
    let script = format!(
        r#""$SHMPIPE" load '{a}' --name small-shm -j 2 --quiet; echo "exit=$?"; ls -A /dev/shm | sed 's/^/left=/'"#,
        a = a.display(),
    );
    let Some(refused) = in_small_shm(&script) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&refused.stdout);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stdout.contains("exit=2"),
        "refused with exit 2: {stdout} {stderr}"
    );
    assert!(
        !stdout.contains("left="),
        "nothing left in /dev/shm: {stdout}"
    );
    assert!(stderr.contains("not enough shared memory"), "{stderr}");
    assert!(
        // In units people read ("16.0 MiB needed, 4.00 MiB free"), not raw byte counts.
        stderr.contains("iB needed, ")
            && stderr.contains("iB free in")
            && !stderr.contains(" bytes"),
        "{stderr}"
    );
    assert!(stderr.contains("--backing"), "suggests --backing: {stderr}");

    let script = format!(
        r#""$SHMPIPE" load '{a}' --name small-shm -j 2 --quiet --backing '{b}'; echo "exit=$?"; "$SHMPIPE" rm small-shm --backing '{b}' >/dev/null; ls -A /dev/shm '{b}' | grep shmpipe | sed 's/^/left=/'"#,
        a = a.display(),
        b = backing.display()
    );
    let backed = in_small_shm(&script).unwrap();
    let stdout = String::from_utf8_lossy(&backed.stdout);
    assert!(
        stdout.contains("exit=0"),
        "{stdout} {}",
        String::from_utf8_lossy(&backed.stderr)
    );
    assert!(!stdout.contains("left="), "dataset removed: {stdout}");
}

/// A plain run needs only its window: the bundled photos run in 8 MiB with one worker. Three
/// small JPEGs whose headers declare 11000 x 11000 (363 MB each) fail alone, each with its
/// reason, and every other image is written: before the window, the block was sized for the
/// declared folder and the whole run refused, exit 2, no output.
#[test]
fn a_run_holds_a_window_and_an_image_too_large_for_it_fails_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let out = tmp.path().join("out");
    let copy = std::process::Command::new("cp")
        .arg("-r")
        .arg(assets())
        .arg(&input)
        .status()
        .unwrap();
    assert!(copy.success());
    let rocket = std::fs::read(assets().join("rocket.jpg")).unwrap();
    let sof = (2..rocket.len() - 1)
        .find(|&i| rocket[i] == 0xFF && rocket[i + 1] == 0xC0)
        .unwrap();
    // Every header and the start of the scan: a file of a few hundred bytes.
    let sos = (sof..rocket.len() - 1)
        .find(|&i| rocket[i] == 0xFF && rocket[i + 1] == 0xDA)
        .unwrap();
    let mut bomb = rocket[..sos + 200].to_vec();
    bomb[sof + 5..sof + 7].copy_from_slice(&11000u16.to_be_bytes());
    bomb[sof + 7..sof + 9].copy_from_slice(&11000u16.to_be_bytes());
    for k in 0..3 {
        std::fs::write(input.join(format!("declared-huge-{k}.jpg")), &bomb).unwrap();
    }
    let script = format!(
        r#""$SHMPIPE" run '{i}' -o '{o}' --ops invert -j 1 --json > '{t}/summary.json'; echo "exit=$?"; ls -A /dev/shm | sed 's/^/left=/'"#,
        i = input.display(),
        o = out.display(),
        t = tmp.path().display()
    );
    let Some(result) = in_small_shm(&script) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stdout.contains("exit=1"), "{stdout} {stderr}");
    assert!(!stdout.contains("left="), "nothing left: {stdout}");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("summary.json")).unwrap()).unwrap();
    let failures = summary["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 3, "{summary}");
    for f in failures {
        let (path, reason) = (f["path"].as_str().unwrap(), f["reason"].as_str().unwrap());
        assert!(path.contains("declared-huge-"), "{path}");
        assert!(reason.contains("do not fit one worker's share"), "{reason}");
    }
    let images = files_under(&assets())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .count();
    assert_eq!(summary["images_ok"], images, "{summary}");
    assert_eq!(files_under(&out).len(), images);
    assert!(summary["window_slot_bytes"].as_u64().unwrap() < 8 << 20);
}

/// Slots are reserved when a worker claims them. If another process fills /dev/shm after the
/// block was created, the images that no longer fit fail with a clear reason naming the file;
/// no worker dies of SIGBUS and nothing is left behind.
#[test]
fn a_shm_filled_by_someone_else_mid_run_fails_images_cleanly_not_with_sigbus() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    // 3 MB and 0.75 MB of pixels: the block fits the 8 MiB tmpfs when it is created.
    let noise = |w: u32, h: u32| {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 7 + y) as u8, (y * 13) as u8, (x ^ y) as u8])
        })
    };
    noise(1000, 1000).save(input.join("big.png")).unwrap();
    noise(500, 500).save(input.join("small.png")).unwrap();
    let out = tmp.path().join("out");
    // The one worker takes big.png first (largest first) and stalls 2 s before touching its
    // slot; meanwhile a filler takes every free byte of the tmpfs.
    let script = format!(
        r#"SHMPIPE_TEST_STALL=big.png:2000 "$SHMPIPE" run '{i}' -o '{o}' --ops invert -j 1 --json > '{t}/summary.json' & pid=$!
sleep 1; head -c 64M /dev/zero > /dev/shm/filler 2>/dev/null
wait $pid; echo "exit=$?"; rm -f /dev/shm/filler; ls -A /dev/shm | sed 's/^/left=/'"#,
        i = input.display(),
        o = out.display(),
        t = tmp.path().display()
    );
    let Some(result) = in_small_shm(&script) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stdout.contains("exit=1"),
        "some images failed: {stdout} {stderr}"
    );
    assert!(
        !stdout.contains("left="),
        "nothing left in /dev/shm: {stdout}"
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["worker_restarts"], 0, "no worker died: {summary}");
    assert_eq!(summary["images_ok"], 0, "{summary}");
    let failures = summary["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 2, "{summary}");
    for f in failures {
        let (path, reason) = (f["path"].as_str().unwrap(), f["reason"].as_str().unwrap());
        assert!(path.ends_with(".png"), "{path}");
        assert!(
            reason.contains("not enough shared memory"),
            "{path}: {reason}"
        );
    }
    assert!(
        !out.exists() || files_under(&out).is_empty(),
        "no output written"
    );
}
