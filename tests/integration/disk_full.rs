//! An output folder that fills up mid-run (a 600 KiB tmpfs in a private mount namespace): every
//! image that no longer fits is reported with the OS's reason and its output path, the others are
//! written whole, and no temporary file is left behind.
//!
//! Needs root and `unshare` (CI runs as root); see `crate::util::in_mount_namespace`.

use std::path::Path;

use crate::util::{assets, files_under};

#[test]
fn a_full_output_disk_fails_the_images_that_do_not_fit_and_leaves_no_partial_file() {
    // Under /tmp, whatever TMPDIR says: a failure's reason is kept to 120 bytes, and its output
    // path (last in it) must fit for the check below.
    let tmp = tempfile::tempdir_in("/tmp").unwrap();
    let mnt = tmp.path().join("mnt");
    let kept = tmp.path().join("kept");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        r#"mount -t tmpfs -o size=600k tmpfs '{m}' || exit 99
"$SHMPIPE" run '{a}' -o '{m}/out' --ops invert -j 2 --json > '{t}/summary.json'
echo "exit=$?"
cp -a '{m}/out' '{k}'"#,
        m = mnt.display(),
        a = assets().display(),
        t = tmp.path().display(),
        k = kept.display(),
    );
    let Some(out) = crate::util::in_mount_namespace(&script) else {
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("exit=1"),
        "some images failed, so exit 1: {stdout} {}",
        crate::util::stderr(&out)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("summary.json")).unwrap()).unwrap();
    let failures = summary["failures"].as_array().unwrap();
    let ok = summary["images_ok"].as_u64().unwrap();
    assert!(!failures.is_empty(), "600 KiB cannot hold every output");
    assert_eq!(ok + failures.len() as u64, 10, "{summary}");
    for failure in failures {
        let reason = failure["reason"].as_str().unwrap();
        let input = Path::new(failure["path"].as_str().unwrap());
        let name = input.file_name().unwrap().to_str().unwrap();
        assert!(
            reason.starts_with("cannot write output: No space left on device")
                && reason.contains("/out/"),
            "{input:?}: {reason}"
        );
        assert!(
            reason.contains(name),
            "the reason names the output: {reason}"
        );
    }

    // What is in the folder is exactly the images reported done, each whole.
    let files = files_under(&kept);
    assert_eq!(files.len() as u64, ok, "{files:?}");
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(
            !name.contains(".shmpipe-tmp-"),
            "partial file left: {file:?}"
        );
        image::open(kept.join(file)).unwrap_or_else(|e| panic!("{file:?} is not whole: {e}"));
    }
}
