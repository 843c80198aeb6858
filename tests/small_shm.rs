//! A /dev/shm too small for the block (Docker's default is 64 MiB): in a private mount namespace
//! with an 8 MiB tmpfs on /dev/shm, a run that needs more is refused up front with exit 2 and a
//! message naming the bytes, never a SIGBUS; `--backing DIR` runs the same job.
//!
//! Needs root and `unshare` (CI runs as root). Set SHMPIPE_SKIP_NAMESPACE_TESTS=1 to skip
//! elsewhere; without it a missing `unshare` fails the test rather than passing silently.

mod common;

use std::process::Command;

use common::{assets, files_under};

fn in_small_shm(script: &str) -> Option<std::process::Output> {
    if std::env::var_os("SHMPIPE_SKIP_NAMESPACE_TESTS").is_some() {
        eprintln!("skipped: SHMPIPE_SKIP_NAMESPACE_TESTS is set");
        return None;
    }
    let full = format!("mount -t tmpfs -o size=8m tmpfs /dev/shm && {script}");
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &full])
        .env("SHMPIPE", common::bin())
        .output()
        .expect("unshare is installed (util-linux)");
    Some(out)
}

#[test]
fn too_little_shared_memory_is_refused_up_front_and_backing_works() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let backing = tmp.path().join("backing");
    std::fs::create_dir_all(&backing).unwrap();
    let a = assets();
    let script = format!(
        r#""$SHMPIPE" run '{a}' -o '{o}' --ops invert -j 2 --quiet; echo "exit=$?"; ls -A /dev/shm | sed 's/^/left=/'"#,
        a = a.display(),
        o = out.display()
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
        stderr.contains("bytes needed") && stderr.contains("bytes free"),
        "{stderr}"
    );
    assert!(stderr.contains("--backing"), "suggests --backing: {stderr}");
    assert!(
        !out.exists() || files_under(&out).is_empty(),
        "no output written"
    );

    let script = format!(
        r#""$SHMPIPE" run '{a}' -o '{o}' --ops invert -j 2 --quiet --backing '{b}'; echo "exit=$?"; ls -A /dev/shm '{b}' | grep shmpipe | sed 's/^/left=/'"#,
        a = a.display(),
        o = out.display(),
        b = backing.display()
    );
    let backed = in_small_shm(&script).unwrap();
    let stdout = String::from_utf8_lossy(&backed.stdout);
    assert!(
        stdout.contains("exit=0"),
        "{stdout} {}",
        String::from_utf8_lossy(&backed.stderr)
    );
    assert!(
        !stdout.contains("left="),
        "block removed from the backing folder: {stdout}"
    );
    let inputs = files_under(&a)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .count();
    assert_eq!(files_under(&out).len(), inputs);
}
