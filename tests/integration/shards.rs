//! Shards across hosts: disjoint, covering the folder, equal byte for byte to one unsharded run;
//! chosen by flag, Slurm array or Kubernetes Indexed Job; invalid ones refused; re-runs idempotent.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{files_under, os};

fn run_shard(
    args: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> (Option<i32>, serde_json::Value, String) {
    let mut cmd = crate::util::command(args);
    for var in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "SLURM_ARRAY_TASK_MIN",
        "SLURM_ARRAY_TASK_MAX",
        "SLURM_ARRAY_TASK_STEP",
        "JOB_COMPLETION_INDEX",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    let out = crate::util::finish_clean(cmd);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.code(),
        json,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn dataset(dir: &Path) {
    let status = Command::new(crate::util::bin())
        .args([
            os("gen"),
            dir.join("a").as_os_str(),
            os("--count"),
            os("9"),
            os("--size"),
            os("80x60"),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new(crate::util::bin())
        .args([
            os("gen"),
            dir.join("b/c").as_os_str(),
            os("--count"),
            os("8"),
            os("--size"),
            os("64x48"),
            os("--format"),
            os("png"),
            os("--seed"),
            os("2"),
        ])
        .status()
        .unwrap();
    assert!(status.success());
}

fn outputs(dir: &Path) -> Vec<PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|f| !f.to_string_lossy().contains(".shmpipe-shard-"))
        .collect()
}

#[test]
fn shards_are_disjoint_cover_the_folder_and_match_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    dataset(&input);
    let whole = tmp.path().join("whole");
    let (code, _, err) = run_shard(
        &[
            os("run"),
            input.as_os_str(),
            os("-o"),
            whole.as_os_str(),
            os("--ops"),
            os("grayscale,blur:1"),
            os("--json"),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{err}");
    let all = outputs(&whole);
    assert_eq!(all.len(), 17);

    let mut union = Vec::new();
    let merged = tmp.path().join("merged");
    for k in 0..3 {
        let own = tmp.path().join(format!("shard{k}"));
        let shard = format!("{k}/3");
        let (code, s, err) = run_shard(
            &[
                os("run"),
                input.as_os_str(),
                os("-o"),
                own.as_os_str(),
                os("--ops"),
                os("grayscale,blur:1"),
                os("--shard"),
                os(&shard),
                os("--json"),
            ],
            &[],
        );
        assert_eq!(code, Some(0), "{err}");
        assert_eq!(s["shard"]["index"], k);
        assert_eq!(s["shard"]["source"], "flag");
        let files = outputs(&own);
        assert_eq!(s["images_ok"].as_u64().unwrap() as usize, files.len());
        assert!(
            own.join(format!(".shmpipe-shard-{k}-of-3.json")).exists(),
            "a manifest says the shard finished"
        );
        for f in files {
            assert!(!union.contains(&f), "{} is in two shards", f.display());
            std::fs::create_dir_all(merged.join(&f).parent().unwrap()).unwrap();
            std::fs::copy(own.join(&f), merged.join(&f)).unwrap();
            union.push(f);
        }
    }
    union.sort();
    assert_eq!(union, all, "the shards together are the whole folder");
    for f in &all {
        assert!(
            std::fs::read(whole.join(f)).unwrap() == std::fs::read(merged.join(f)).unwrap(),
            "{} differs",
            f.display()
        );
    }
}

#[test]
fn schedulers_pick_the_shard_and_bad_shards_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    dataset(&input);
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec![os("run"), input.as_os_str(), os("--json")];
        args.extend(extra.iter().map(|s| os(s)));
        run_shard(&args, env)
    };
    // Task 3 of `sbatch --array=3` resubmitted from a 4-task array: Slurm says the array has
    // one task starting at 3; the shard is still 3 of 4.
    let (code, s, err) = run(
        &[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "1"),
            ("SLURM_ARRAY_TASK_MIN", "3"),
            ("SLURM_ARRAY_TASK_MAX", "3"),
        ],
        &["--shards", "4"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (
            s["shard"]["index"].as_u64(),
            s["shard"]["count"].as_u64(),
            s["shard"]["source"].as_str()
        ),
        (Some(3), Some(4), Some("slurm"))
    );
    let (code, s, err) = run(&[("JOB_COMPLETION_INDEX", "1")], &["--shards", "2"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        (s["shard"]["index"].as_u64(), s["shard"]["source"].as_str()),
        (Some(1), Some("kubernetes"))
    );
    // The two Kubernetes shards together hold every file once.
    let (_, other, _) = run(&[("JOB_COMPLETION_INDEX", "0")], &["--shards", "2"]);
    assert_eq!(
        s["shard_files"].as_u64().unwrap() + other["shard_files"].as_u64().unwrap(),
        17
    );

    for (env, extra, needle) in [
        (vec![], vec!["--shard", "4/4"], "numbered 0 to 3"),
        (vec![], vec!["--shard", "0/0"], "at least 1"),
        (vec![], vec!["--shard", "x/3"], "not a whole number"),
        (vec![("JOB_COMPLETION_INDEX", "1")], vec![], "--shards"),
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "1"),
                ("SLURM_ARRAY_TASK_COUNT", "4"),
            ],
            vec![],
            "--shards",
        ),
        (
            vec![
                ("SLURM_ARRAY_TASK_ID", "5"),
                ("SLURM_ARRAY_TASK_COUNT", "6"),
            ],
            vec!["--shards", "4"],
            "shard 5/4",
        ),
    ] {
        let (code, _, err) = run(&env, &extra);
        assert_eq!(code, Some(2), "{env:?} {extra:?}: {err}");
        assert!(err.contains(needle), "{err:?} says {needle:?}");
    }
}

#[test]
fn a_retried_shard_with_skip_existing_does_only_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    dataset(&input);
    let out = tmp.path().join("out");
    let args = |skip: bool| {
        let mut a = vec![
            os("run"),
            input.as_os_str(),
            os("-o"),
            out.as_os_str(),
            os("--shard"),
            os("1/2"),
            os("--json"),
        ];
        if skip {
            a.push(os("--skip-existing"));
        }
        a
    };
    let (_, first, _) = run_shard(&args(false), &[]);
    let done = first["images_ok"].as_u64().unwrap();
    assert!(done >= 2);
    let victim = outputs(&out).pop().unwrap();
    std::fs::remove_file(out.join(&victim)).unwrap();
    let (code, again, err) = run_shard(&args(true), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(again["images_ok"], 1, "only the missing file");
    assert_eq!(again["files_existing"].as_u64().unwrap(), done - 1);
    assert!(out.join(&victim).exists());
}

/// `load` has no shard flags, and read a Slurm array's task id all the same: inside an array job
/// it was refused ("give --shards N"). A load is never sharded: it loads the whole folder.
#[test]
fn a_load_inside_a_slurm_array_loads_the_whole_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    crate::util::ok(&[
        os("gen"),
        dir.as_os_str(),
        os("--count"),
        os("5"),
        os("--size"),
        os("32x24"),
    ]);
    let name = format!("inarray{}", std::process::id());
    let _dataset = crate::util::Dataset(name.clone());
    let mut load = crate::util::command(&[
        os("load"),
        dir.as_os_str(),
        os("--name"),
        os(&name),
        os("--json"),
    ]);
    load.env("SLURM_ARRAY_TASK_ID", "1");
    let out = crate::util::finish(load.spawn().unwrap(), "load in an array");
    assert_eq!(out.status.code(), Some(0), "{}", crate::util::stderr(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["images_ok"], 5, "{summary}");
    assert!(summary["shard"].is_null(), "{summary}");
}
