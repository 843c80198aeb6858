//! End to end: the real `shmpipe run` binary (coordinator, spawned workers, block, codecs, files)
//! on a generated folder of 12 1920x1080 JPEGs, in MP/s, with -j 1 and -j 2; and the fixed cost
//! of a run on one 64x64 image (start, plan, create, spawn and attach one worker, join, unlink).
//!
//!     cargo build --release && cargo bench -p shmpipe-benches --bench run
//!
//! The binary measured is `$SHMPIPE_BIN`, by default the workspace's `target/release/shmpipe`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// The binary measured: `$SHMPIPE_BIN`, or the workspace's release build.
fn bin() -> PathBuf {
    let bin = std::env::var_os("SHMPIPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/shmpipe"));
    assert!(
        bin.is_file(),
        "no binary at {} (cargo build --release, or set SHMPIPE_BIN)",
        bin.display()
    );
    bin
}

fn shmpipe(args: &[&str]) {
    let out = Command::new(bin()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "shmpipe {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn end_to_end(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (photos, tiny, out) = (
        dir.path().join("photos"),
        dir.path().join("tiny"),
        dir.path().join("out"),
    );
    let (count, w, h) = (12u64, 1920u64, 1080u64);
    shmpipe(&["gen", path(&photos), "--count", "12", "--size", "1920x1080"]);
    shmpipe(&["gen", path(&tiny), "--count", "1", "--size", "64x64"]);

    let mut group = c.benchmark_group("run/12x1920x1080 jpeg");
    group.throughput(Throughput::Elements(count * w * h));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (ops, format) in [
        ("grayscale,blur:2", "jpeg"),
        ("blur:2", "jpeg"),
        ("invert", "png"),
    ] {
        for workers in ["1", "2"] {
            let name = format!("{ops} -> {format}, -j {workers}");
            group.bench_function(name, |b| {
                b.iter(|| {
                    shmpipe(&[
                        "run",
                        path(&photos),
                        "-o",
                        path(&out),
                        "--ops",
                        ops,
                        "--format",
                        format,
                        "-j",
                        workers,
                        "--quiet",
                    ])
                })
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("run/fixed cost");
    group.sample_size(20);
    group.bench_function("one 64x64 image, -j 1", |b| {
        b.iter(|| {
            shmpipe(&[
                "run",
                path(&tiny),
                "-o",
                path(&out),
                "--ops",
                "invert",
                "-j",
                "1",
                "--quiet",
            ])
        })
    });
    group.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
