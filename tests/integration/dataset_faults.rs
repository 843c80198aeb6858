//! Named datasets tried as an attacker would: `load`, `apply` and `repair` killed (SIGKILL and
//! SIGTERM, coordinator and workers) at random moments, workers killed while parked on the pass
//! doorbell, a worker that dawdles between passes, a source changed under a damaged dataset.
//! After each: no command reports success on damaged data, nothing hangs, and `repair` gives the
//! pixels of an uninterrupted load + apply, byte for byte.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use crate::util::{blocks_dir, finish, ok, os, own_backing, shmpipe, signal, Dataset, HANG};
use rustix::process::Signal;

/// Starts `shmpipe ARGS` with `env` added to its environment (in this test's own `--backing`
/// folder, as every command here).
fn spawn(args: &[&OsStr], env: &[(&str, String)]) -> Child {
    let mut cmd = crate::util::command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn shmpipe")
}

fn generate(dir: &Path, count: u32, size: &str, format: &str) {
    ok(&[
        os("gen"),
        dir.as_os_str(),
        os("--count"),
        os(&count.to_string()),
        os("--size"),
        os(size),
        os("--format"),
        os(format),
    ]);
}

fn load(dir: &Path, name: &str) {
    ok(&[
        os("load"),
        dir.as_os_str(),
        os("--name"),
        os(name),
        os("--resize"),
        os("160x120"),
        os("-q"),
    ]);
}

/// The dataset's pixels as `export` writes them, or None when export refuses.
fn export(name: &str, dir: &Path) -> Option<Vec<u8>> {
    let file = dir.join(format!("{name}.npy"));
    let _ = std::fs::remove_file(&file);
    let out = shmpipe(&[os("export"), os(name), file.as_os_str()]);
    out.status
        .success()
        .then(|| std::fs::read(&file).expect("export wrote its file"))
}

/// `ls --json`'s entry for a dataset, if the block exists.
fn listed(name: &str) -> Option<serde_json::Value> {
    let out = ok(&[os("ls"), os("--json")]);
    let all: serde_json::Value = serde_json::from_str(&out).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == format!("shmpipe-{name}"))
        .cloned()
}

/// Every process started as a worker of the coordinator `pid`.
fn workers(pid: u32) -> Vec<u32> {
    crate::util::workers_of(pid)
}

/// A deterministic sequence of numbers in [0, 1), so a failing trial can be replayed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What every later command says of a dataset after its writer was killed: either it is ready
/// and holds exactly one of `expected` (the job's result, or what was there before a job that
/// was killed before it recorded anything), or every reader refuses it, `ls` shows it damaged or
/// incomplete, and `repair` brings it to exactly one of `expected`. Returns whether a repair was
/// needed.
fn check_after_kill(name: &str, tmp: &Path, expected: &[&[u8]], trial: &str) -> bool {
    let Some(entry) = listed(name) else {
        return false;
    };
    let state = entry["state"].as_str().unwrap().to_string();
    let out_dir = tmp.join(format!("saved-{name}"));
    let _ = std::fs::remove_dir_all(&out_dir);
    let saved = shmpipe(&[os("save"), os(name), os("-o"), out_dir.as_os_str()]);
    let exported = export(name, tmp);
    if state == "ready" {
        assert!(saved.status.success(), "{trial}: save of a ready dataset");
        assert!(
            exported.as_deref().is_some_and(|e| expected.contains(&e)),
            "{trial}: a ready dataset holds other pixels than an uninterrupted job's"
        );
        return false;
    }
    assert!(
        state == "damaged" || state == "incomplete",
        "{trial}: ls says {state}"
    );
    if state == "incomplete" && listed(name).is_none() {
        // An interrupted load is stale: any `run` or `load` on this machine sweeps it, as
        // `clean` would. Nothing is left to misread.
        return false;
    }
    assert_eq!(
        saved.status.code(),
        Some(2),
        "{trial}: save of a {state} dataset: {}",
        crate::util::stderr(&saved)
    );
    assert!(
        crate::util::stderr(&saved).contains("shmpipe repair"),
        "{trial}: {}",
        crate::util::stderr(&saved)
    );
    assert!(
        !out_dir.exists() || crate::util::files_under(&out_dir).is_empty(),
        "{trial}: save wrote files from a {state} dataset"
    );
    assert!(exported.is_none(), "{trial}: export of a {state} dataset");
    let applied = shmpipe(&[os("apply"), os(name), os("--ops"), os("invert")]);
    assert_eq!(applied.status.code(), Some(2), "{trial}: apply on {state}");
    let repaired = shmpipe(&[os("repair"), os(name), os("-q")]);
    assert!(
        repaired.status.success(),
        "{trial}: repair: {}",
        crate::util::stderr(&repaired)
    );
    assert_eq!(listed(name).unwrap()["state"], "ready", "{trial}");
    assert!(
        export(name, tmp)
            .as_deref()
            .is_some_and(|e| expected.contains(&e)),
        "{trial}: repaired pixels differ from an uninterrupted job's"
    );
    true
}

/// Starts `command` (`apply` with `ops`, or `repair`) on `name` with one worker, which stalls
/// for 30 s on `image` once it has marked it in flux; returns when that worker sleeps there.
fn stalled_on(command: &str, name: &str, ops: &str, image: &str) -> (Child, u32) {
    let mut args = vec![os(command), os(name)];
    if command == "apply" {
        args.extend([os("--ops"), os(ops)]);
    }
    args.extend([os("-j"), os("1")]);
    let child = spawn(
        &args,
        &[(shmpipe_worker::hooks::STALL_ENV, format!("{image}:30000"))],
    );
    let pid = child.id();
    let deadline = Instant::now() + HANG;
    while !workers(pid).iter().any(|w| {
        std::fs::read_to_string(format!("/proc/{w}/wchan")).is_ok_and(|c| c.contains("nanosleep"))
    }) {
        assert!(Instant::now() < deadline, "{command} never reached {image}");
        std::thread::sleep(Duration::from_millis(10));
    }
    (child, pid)
}

/// SIGKILLs an apply of `ops` on `name` while its worker holds `image` half transformed: the
/// dataset is then damaged.
fn kill_apply_mid_image(name: &str, ops: &str, image: &str) {
    let (child, pid) = stalled_on("apply", name, ops, image);
    signal(pid, Signal::KILL);
    finish(child, "killed apply");
    crate::util::assert_no_leaks(pid);
    assert_eq!(listed(name).unwrap()["state"], "damaged");
}

/// A load killed while creating its block leaves it under the staging name it made (with its
/// pid), never under the dataset's name: `ls` must call it stale and incomplete, and `rm` takes
/// it. Any later `load` or `run` would sweep it as well.
fn remove_staged(pid: u32, trial: &str) {
    for staged in crate::util::blocks_of(pid) {
        let short = staged.strip_prefix("shmpipe-").unwrap();
        let entry = listed(short).unwrap_or_else(|| panic!("{trial}: {staged} not listed"));
        assert_eq!(entry["status"], "stale", "{trial}: {staged}: {entry}");
        assert_eq!(entry["state"], "incomplete", "{trial}: {staged}: {entry}");
        ok(&[os("rm"), os(&staged)]);
    }
}

/// `load` SIGKILLed the moment its block's file appears, while the block is being sized,
/// reserved and given its tables: the dataset's name is absent or names a whole block that `ls`
/// calls incomplete, never a headless file; what is left under the staging name is stale and
/// removable; and the same `load` then succeeds.
#[test]
fn a_load_killed_while_creating_its_block_leaves_no_headless_dataset() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    // Big pixels, so that reserving the block's pages takes a while.
    generate(&input, 4, "4000x3000", "jpeg");
    let name = format!("born{}", std::process::id());
    let _guard = Dataset(name.clone());
    let dataset = format!("shmpipe-{name}");
    let mut staged_seen = 0;
    for trial in 0..8 {
        let child = spawn(
            &[
                os("load"),
                input.as_os_str(),
                os("--name"),
                os(&name),
                os("-q"),
            ],
            &[],
        );
        let pid = child.id();
        let ours = format!("shmpipe-{pid}-");
        let deadline = Instant::now() + HANG;
        'watch: loop {
            assert!(
                Instant::now() < deadline,
                "trial {trial}: no block appeared"
            );
            for entry in std::fs::read_dir(blocks_dir()).unwrap().flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if file == dataset || file.starts_with(&ours) {
                    signal(pid, Signal::KILL);
                    staged_seen += usize::from(file != dataset);
                    break 'watch;
                }
            }
        }
        finish(child, "killed load");
        let label = format!("trial {trial}");
        remove_staged(pid, &label);
        crate::util::assert_no_leaks(pid);
        if let Some(entry) = listed(&name) {
            assert_eq!(entry["state"], "incomplete", "{label}: {entry}");
            assert!(entry["owner_pid"].is_number(), "{label}: headless: {entry}");
            ok(&[os("rm"), os(&name)]);
        }
    }
    assert!(
        staged_seen >= 4,
        "only {staged_seen} kills landed while staging"
    );
    load(&input, &name);
    assert_eq!(listed(&name).unwrap()["state"], "ready");
}

/// The reference: a dataset loaded and changed by `ops` with nothing interrupted.
fn reference(input: &Path, tmp: &Path, ops: &[&str]) -> Vec<u8> {
    let name = format!("ref{}", std::process::id());
    let _guard = Dataset(name.clone());
    load(input, &name);
    for list in ops {
        ok(&[os("apply"), os(&name), os("--ops"), os(list), os("-q")]);
    }
    export(&name, tmp).expect("reference export")
}

fn timed(args: &[&OsStr]) -> Duration {
    let started = Instant::now();
    ok(args);
    started.elapsed()
}

/// `apply` and `load` killed at random moments: the coordinator with SIGKILL or SIGTERM, or one
/// worker with SIGKILL. 24 trials of each command.
#[test]
fn killed_loads_and_applies_never_pass_for_good_data_and_repair_restores_them() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 10, "800x600", "jpeg");
    let chains = ["blur:4,sharpen", "invert,normalize,blur:1"];
    let loaded = reference(&input, tmp.path(), &[]);
    let applied: Vec<Vec<u8>> = chains
        .iter()
        .map(|c| reference(&input, tmp.path(), &[c]))
        .collect();
    let name = format!("kill{}", std::process::id());
    let _guard = Dataset(name.clone());
    // How long each job takes here, to spread the kills over it (and a little past its end).
    load(&input, &name);
    let apply_time = timed(&[os("apply"), os(&name), os("--ops"), os(chains[0]), os("-q")]);
    ok(&[os("rm"), os(&name)]);
    let load_time = timed(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--resize"),
        os("160x120"),
        os("-q"),
    ]);
    ok(&[os("rm"), os(&name)]);

    let mut random = Lcg(7);
    let mut repaired = [0, 0];
    let mut worker_kills = 0;
    // Starts `args`, and `delay` later kills as trial `trial` says: SIGKILL the coordinator,
    // SIGTERM it, or SIGKILL one of its workers. Then checks what every later command sees.
    let mut trial_run = |trial: usize, args: &[&OsStr], delay: Duration, expected: &[&[u8]]| {
        let how = trial % 3;
        let label = format!("{:?} trial {trial} (kind {how})", args[0]);
        let child = spawn(args, &[]);
        let pid = child.id();
        std::thread::sleep(delay);
        match how {
            0 => signal(pid, Signal::KILL),
            1 => signal(pid, Signal::TERM),
            _ => {
                if let Some(&w) = workers(pid).first() {
                    signal(w, Signal::KILL);
                    worker_kills += 1;
                }
            }
        }
        let out = finish(child, &label);
        remove_staged(pid, &label);
        crate::util::assert_no_leaks(pid);
        if how == 2 {
            // A dead worker's image is decoded again, or rebuilt, by its replacement.
            assert!(
                out.status.success(),
                "{label}: {}",
                crate::util::stderr(&out)
            );
        }
        check_after_kill(&name, tmp.path(), expected, &label)
    };
    let load_args = [
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(&name),
        os("--resize"),
        os("160x120"),
        os("-q"),
    ];
    for trial in 0..24 {
        let delay = load_time.mul_f64(1.2 * random.next());
        if trial_run(trial, &load_args, delay, &[&loaded]) {
            repaired[0] += 1;
        }
        let _ = shmpipe(&["rm", &name]);
    }
    for trial in 0..24 {
        let (chain, expected) = (chains[trial / 3 % 2], &applied[trial / 3 % 2]);
        // Each trial starts from a freshly loaded dataset.
        let _ = shmpipe(&["rm", &name]);
        load(&input, &name);
        let delay = apply_time.mul_f64(1.2 * random.next());
        let args = [
            os("apply"),
            os(&name),
            os("--ops"),
            os(chain),
            os("-j"),
            os("2"),
            os("-q"),
        ];
        if trial_run(trial, &args, delay, &[expected, &loaded]) {
            repaired[1] += 1;
        }
    }
    eprintln!(
        "repaired after killed loads and applies: {repaired:?}; workers killed: {worker_kills}"
    );
    assert!(
        worker_kills >= 8,
        "only {worker_kills} workers were caught alive"
    );
    // The kills must have landed mid-job often enough for the test to mean something.
    assert!(
        repaired[0] >= 3 && repaired[1] >= 3,
        "too few trials left damage to repair: {repaired:?}"
    );
}

/// A worker SIGKILLed while it waits on the pass doorbell, 20 times: every apply still ends, and
/// every later apply, save and export works. (raw_sync's condition variable wedged every later
/// broadcast after one such death.)
#[test]
fn workers_killed_while_parked_on_the_doorbell_wedge_nothing() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 6, "64x48", "png");
    let name = format!("bell{}", std::process::id());
    let _guard = Dataset(name.clone());
    load(&input, &name);
    let mut parked_kills = 0;
    for trial in 0..20 {
        // One worker holds img0000 for a second in each pass; the other runs out of work and
        // parks on the doorbell: that one is killed.
        let child = spawn(
            &[
                os("apply"),
                os(&name),
                os("--ops"),
                os("normalize"),
                os("-j"),
                os("2"),
                os("-q"),
            ],
            &[(
                shmpipe_worker::hooks::STALL_ENV,
                "img000000.png:300".to_string(),
            )],
        );
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(5);
        'find: while Instant::now() < deadline {
            for w in workers(pid) {
                let wchan = std::fs::read_to_string(format!("/proc/{w}/wchan")).unwrap_or_default();
                if wchan.contains("futex") {
                    signal(w, Signal::KILL);
                    parked_kills += 1;
                    break 'find;
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let out = finish(child, &format!("apply trial {trial}"));
        assert!(
            out.status.success(),
            "trial {trial}: {}",
            crate::util::stderr(&out)
        );
        crate::util::assert_no_leaks(pid);
    }
    assert!(
        parked_kills >= 15,
        "only {parked_kills} parked workers found"
    );
    // Every later command works, and the pixels are those of 20 uninterrupted applies.
    let expected = reference(&input, tmp.path(), &["normalize"; 20]);
    assert_eq!(export(&name, tmp.path()).as_deref(), Some(&expected[..]));
    ok(&[os("apply"), os(&name), os("--ops"), os("invert")]);
    ok(&[
        os("save"),
        os(&name),
        os("-o"),
        tmp.path().join("saved").as_os_str(),
    ]);
}

/// A worker that publishes its last image of pass 1 and then dawdles must not find pass 2
/// opened under it: the coordinator waits until every worker has parked.
#[test]
fn the_next_pass_opens_only_when_every_worker_has_parked() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 8, "64x48", "png");
    let expected = reference(&input, tmp.path(), &["invert,normalize"]);
    let name = format!("race{}", std::process::id());
    let _guard = Dataset(name.clone());
    load(&input, &name);
    let before = export(&name, tmp.path()).unwrap();
    let child = spawn(
        &[
            os("apply"),
            os(&name),
            os("--ops"),
            os("invert,normalize"),
            os("-j"),
            os("2"),
        ],
        &[(
            shmpipe_worker::hooks::DELAY_AFTER_DONE_ENV,
            "300".to_string(),
        )],
    );
    let out = finish(child, "apply with a dawdling worker");
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    let after = export(&name, tmp.path()).unwrap();
    assert_ne!(after, before, "the apply changed nothing");
    assert_eq!(after, expected, "a pass ran twice or was skipped");
}

/// A source rewritten with its size and modification time kept (`cp -p`, `rsync -a`, `touch -r`)
/// is a changed source too: repair compares the bytes' hash recorded at load, and fails that
/// image with the reason instead of rebuilding it from other pixels.
#[test]
fn repair_refuses_a_source_rewritten_with_its_size_and_time_kept() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    // BMP: the same size for every image of one shape, whatever its pixels.
    std::fs::create_dir_all(&input).unwrap();
    for k in 0..4u32 {
        image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x * (k + 1)) as u8, (y * (k + 3)) as u8, (x ^ y ^ k) as u8])
        })
        .save(input.join(format!("img{k:06}.bmp")))
        .unwrap();
    }
    let name = format!("cpp{}", std::process::id());
    let _guard = Dataset(name.clone());
    load(&input, &name);
    kill_apply_mid_image(&name, "blur:2", "img000002.bmp");
    let changed = input.join("img000002.bmp");
    let other = std::fs::read(input.join("img000001.bmp")).unwrap();
    let before = std::fs::metadata(&changed).unwrap();
    assert_eq!(before.len(), other.len() as u64);
    std::fs::write(&changed, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&changed)
        .unwrap()
        .set_modified(before.modified().unwrap())
        .unwrap();
    let out = shmpipe(&[os("repair"), os(&name)]);
    assert_eq!(out.status.code(), Some(1), "{}", crate::util::stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("img000002.bmp") && said.contains("changed since the load"),
        "{said}"
    );
    assert_eq!(listed(&name).unwrap()["state"], "ready");
}

/// Repair rebuilds from the sources; a source that changed since the load cannot be used: that
/// image is failed with the reason, and the rest of the dataset is repaired and readable.
#[test]
fn repair_refuses_a_changed_source_and_saves_the_rest() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 4, "640x480", "png");
    let name = format!("chg{}", std::process::id());
    let _guard = Dataset(name.clone());
    load(&input, &name);
    // A worker stalls on img0002 in the middle of its blur; the coordinator dies meanwhile.
    kill_apply_mid_image(&name, "blur:2", "img000002.png");
    // Every image that was not through the apply is rebuilt; change the one in hand.
    let changed = input.join("img000002.png");
    let mut bytes = std::fs::read(&changed).unwrap();
    bytes.extend_from_slice(b"trailing");
    std::fs::write(&changed, bytes).unwrap();
    let out = shmpipe(&[os("repair"), os(&name)]);
    assert_eq!(out.status.code(), Some(1), "{}", crate::util::stderr(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("img000002.png") && said.contains("changed since the load"),
        "{said}"
    );
    assert_eq!(listed(&name).unwrap()["state"], "ready");
    // save writes the other three and lists the failed one; export refuses without --partial.
    let saved = tmp.path().join("saved");
    let out = shmpipe(&[os("save"), os(&name), os("-o"), saved.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(crate::util::stderr(&out).contains("img000002.png"));
    assert_eq!(
        crate::util::files_under(&saved),
        ["img000000.png", "img000001.png", "img000003.png"]
            .iter()
            .map(PathBuf::from)
            .collect::<Vec<_>>()
    );
    assert!(export(&name, tmp.path()).is_none());
    let file = tmp.path().join("partial.npy");
    let out = shmpipe(&[os("export"), os(&name), file.as_os_str(), os("--partial")]);
    assert!(out.status.success(), "{}", crate::util::stderr(&out));
    // Three 640x480x3 images after a 128-byte .npy header.
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        128 + 3 * 120 * 160 * 3
    );
}

/// A load killed by SIGKILL leaves a block that every later command sees as incomplete, and that
/// `clean` removes (nothing in it was ever ready).
#[test]
fn a_killed_load_is_incomplete_and_clean_removes_it() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 3, "320x240", "png");
    let name = format!("half{}", std::process::id());
    let _guard = Dataset(name.clone());
    let child = spawn(
        &[
            os("load"),
            input.as_os_str(),
            os("--name"),
            os(&name),
            os("-j"),
            os("1"),
        ],
        &[(
            shmpipe_worker::hooks::STALL_ENV,
            "img000001.png:30000".to_string(),
        )],
    );
    let pid = child.id();
    let deadline = Instant::now() + HANG;
    while workers(pid).is_empty() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(500));
    signal(pid, Signal::KILL);
    finish(child, "killed load");
    crate::util::assert_no_leaks(pid);
    assert_eq!(listed(&name).unwrap()["state"], "incomplete");
    assert_eq!(listed(&name).unwrap()["status"], "stale");
    let out = shmpipe(&[
        os("save"),
        os(&name),
        os("-o"),
        tmp.path().join("o").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(crate::util::stderr(&out).contains("incomplete"));
    ok(&[os("clean")]);
    assert!(listed(&name).is_none(), "clean removes an interrupted load");
}

/// A dataset kept by `run --keep NAME --ops LIST` holds the chain's result (a colour JPEG under a
/// gray-first chain through its luma plane alone): the chain is its load's step, and a rebuild
/// goes through it exactly as the run did.
#[test]
fn a_dataset_kept_by_run_with_ops_is_rebuilt_through_its_chain() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 4, "640x480", "jpeg");
    let keep = |name: &str| {
        ok(&[
            os("run"),
            input.as_os_str(),
            os("--keep"),
            os(name),
            os("--ops"),
            os("grayscale,blur:1"),
            os("-q"),
        ]);
    };
    let reference = format!("rref{}", std::process::id());
    let _reference_guard = Dataset(reference.clone());
    keep(&reference);
    ok(&[
        os("apply"),
        os(&reference),
        os("--ops"),
        os("invert"),
        os("-q"),
    ]);
    let expected = export(&reference, tmp.path()).unwrap();

    let name = format!("rkeep{}", std::process::id());
    let _guard = Dataset(name.clone());
    keep(&name);
    kill_apply_mid_image(&name, "invert", "img000001.jpg");
    ok(&[os("repair"), os(&name), os("-q")]);
    assert!(
        export(&name, tmp.path()).as_deref() == Some(&expected[..]),
        "the rebuilt image differs from the run's"
    );
}

/// `repair` itself killed mid-image (SIGKILL, then SIGTERM): the dataset stays damaged, every
/// reader keeps refusing it, and the next repair finishes the job with the right pixels.
#[test]
fn a_killed_repair_is_repaired_by_the_next() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 4, "640x480", "png");
    let expected = reference(&input, tmp.path(), &["blur:2"]);
    let name = format!("rep{}", std::process::id());
    let _guard = Dataset(name.clone());
    load(&input, &name);
    kill_apply_mid_image(&name, "blur:2", "img000002.png");
    for sig in [Signal::KILL, Signal::TERM] {
        let (child, pid) = stalled_on("repair", &name, "", "img000002.png");
        signal(pid, sig);
        let out = finish(child, "stopped repair");
        crate::util::assert_no_leaks(pid);
        if sig == Signal::TERM {
            assert_eq!(
                out.status.code(),
                Some(143),
                "{}",
                crate::util::stderr(&out)
            );
        }
        assert_eq!(listed(&name).unwrap()["state"], "damaged");
        assert!(
            export(&name, tmp.path()).is_none(),
            "export of a damaged dataset"
        );
    }
    ok(&[os("repair"), os(&name), os("-q")]);
    assert_eq!(export(&name, tmp.path()).as_deref(), Some(&expected[..]));
}

/// Opening a pass wakes every parked worker, not just one: with the waits' own timeout set to an
/// hour, a worker the wake-up missed would hang the apply.
#[test]
fn opening_a_pass_wakes_every_parked_worker() {
    let _backing = own_backing();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    generate(&input, 8, "64x48", "png");
    let name = format!("wake{}", std::process::id());
    let _guard = Dataset(name.clone());
    load(&input, &name);
    for (ops, workers) in [("invert,normalize,blur:1", "2"), ("equalize:dataset", "4")] {
        let child = spawn(
            &[
                os("apply"),
                os(&name),
                os("--ops"),
                os(ops),
                os("-j"),
                os(workers),
                os("-q"),
            ],
            &[(
                shmpipe_worker::hooks::PARK_TIMEOUT_ENV,
                "3600000".to_string(),
            )],
        );
        let out = finish(child, "apply with hour-long waits");
        assert!(out.status.success(), "{}", crate::util::stderr(&out));
    }
}
