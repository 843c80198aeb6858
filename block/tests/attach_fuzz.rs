//! Property test: attach on arbitrary header and table bytes returns Ok or an error, never
//! panics (overflow checks are on in tests), and whatever it accepts lies inside the mapping.

use std::os::unix::fs::FileExt;

use shmpipe_block::{fresh_name, AttachedBlock, Backing, BlockPlan, OwnedBlock, PlannedImage};

fn next(state: &mut u64) -> u64 {
    // xorshift64*: reproducible, so a failure names its iteration.
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn attach_never_panics_on_mutated_blocks() {
    mutate_and_attach(None);
}

/// The same for a window block (a plain run's: one slot per worker).
#[test]
fn attach_never_panics_on_mutated_window_blocks() {
    mutate_and_attach(Some(7 * 7 * 3));
}

fn mutate_and_attach(window_slot: Option<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let backing = Backing::Dir(dir.path().to_path_buf());
    let name = fresh_name();
    let plan = BlockPlan {
        worker_count: 3,
        channels: 3,
        images: (0..5)
            .map(|i| PlannedImage {
                height: 3 + i,
                width: 7,
                format: 1,
                source: format!("d/img{i}.jpg").into_bytes(),
                ..Default::default()
            })
            .collect(),
        input_root: b"/in".to_vec(),
        output_root: b"/out".to_vec(),
        op_chain: "blur:2".into(),
        output_format: "png".into(),
        quality: 90,
        max_pixels: 1 << 20,
        window_slot,
        ..Default::default()
    };
    let owner = OwnedBlock::create(&name, backing.clone(), &plan).unwrap();
    let path = dir.path().join(&name);
    let pristine = std::fs::read(&path).unwrap();
    let len = pristine.len() as u64;
    // Header, image table and worker table: everything attach must distrust.
    let tables_end = 512 + 5 * 256 + 3 * 128;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut rng = 0x1234_5678_9abc_def1u64;
    let (mut accepted, mut refused) = (0u32, 0u32);
    for round in 0..3000 {
        file.write_all_at(&pristine, 0).unwrap();
        let edits = 1 + next(&mut rng) % 4;
        for _ in 0..edits {
            let at = next(&mut rng) % tables_end;
            let value = match next(&mut rng) % 4 {
                0 => next(&mut rng),
                1 => u64::MAX - next(&mut rng) % 4096,
                2 => next(&mut rng) % (2 * len),
                _ => 0,
            };
            let width = [1usize, 4, 8][(next(&mut rng) % 3) as usize];
            let at = at.min(tables_end - width as u64);
            file.write_all_at(&value.to_le_bytes()[..width], at)
                .unwrap();
        }
        let outcome =
            std::panic::catch_unwind(|| match AttachedBlock::attach(&name, backing.clone()) {
                Ok(block) => {
                    for i in 0..block.image_count() {
                        let slot = block.slot(i);
                        assert!(
                            slot.offset as u64 + slot.len() as u64 <= block.len(),
                            "slot {i} in bounds"
                        );
                        assert!(
                            slot.offset as u64 >= tables_end,
                            "slot {i} clear of the tables"
                        );
                        let _ = block.source(i);
                    }
                    let _ = block.workers().len();
                    true
                }
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    false
                }
            });
        match outcome {
            Ok(true) => accepted += 1,
            Ok(false) => refused += 1,
            Err(_) => panic!("attach panicked in round {round}"),
        }
    }
    assert!(
        refused > 1000,
        "most mutations are caught ({refused} refused, {accepted} accepted)"
    );
    drop(owner);
    assert!(!path.exists());
}
