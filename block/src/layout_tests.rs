//! The layout and the plan checked together: regions placed and aligned as the plan says, sizes
//! past 64 bits refused, the pass word, window blocks, and the offsets the Python package reads.

use crate::layout::*;
use crate::plan::{align_up, BlockPlan, PlannedImage};
use std::mem::offset_of;

fn plan(images: Vec<PlannedImage>, channels: u32) -> BlockPlan {
    BlockPlan {
        worker_count: 2,
        channels,
        images,
        input_root: b"/in".to_vec(),
        quality: 90,
        kept: true,
        max_pixels: u64::MAX,
        ..Default::default()
    }
}

fn image(width: u32, height: u32) -> PlannedImage {
    PlannedImage {
        width,
        height,
        channels: 3,
        source: b"a.png".to_vec(),
        ..PlannedImage::default()
    }
}

/// A plan whose sizes pass 64 bits (headers can declare anything) has no regions, and the
/// block is refused with a reason, instead of wrapping to a small block whose slots overlap.
#[test]
fn a_plan_past_64_bits_has_no_regions() {
    let huge = vec![image(u32::MAX, u32::MAX); 2];
    assert!(plan(huge.clone(), 3).regions().is_none());
    assert!(plan(huge, 3).total_size().is_none());
    // One image near the edge: its slot alone overflows when rounded up to ALIGN.
    let mut edge = plan(vec![image(1, 1)], 3);
    edge.channels = CHANNELS_PER_IMAGE;
    edge.images[0].channels = 4;
    edge.images[0].width = u32::MAX;
    edge.images[0].height = u32::MAX;
    assert!(edge.regions().is_none());
    let prefix = crate::backing::NAME_PREFIX;
    let name = format!("{prefix}{}-layout-test", std::process::id());
    let err = crate::OwnedBlock::create(&name, crate::Backing::Shm, &edge)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("does not fit in 64 bits"), "{err}");
    assert!(!std::path::Path::new("/dev/shm").join(&name).exists());
}

/// A stop changes the pass word, so a worker about to wait for the word to leave the
/// generation it saw (having checked its stop flag just before the stop) returns at once:
/// the futex compares the word before sleeping. Before, a stop stored the same generation
/// and such a worker slept its whole park timeout. The next pass clears the stop bit.
#[test]
fn a_stop_changes_the_pass_word() {
    use std::sync::atomic::Ordering;
    let prefix = crate::backing::NAME_PREFIX;
    let name = format!("{prefix}{}-doorbell-test", std::process::id());
    let mut p = plan(vec![image(4, 4)], 3);
    p.kept = false;
    let block = crate::OwnedBlock::create(&name, crate::Backing::Shm, &p).unwrap();
    let seen = block.header().pass.load(Ordering::Acquire);
    block.request_stop(0);
    let now = block.header().pass.load(Ordering::Acquire);
    assert_ne!(now, seen);
    assert_eq!(now & !crate::doorbell::STOP_BIT, seen);
}

/// A window block (one slot per worker): attach accepts it as written, gives each claim its
/// worker's slot, and refuses it once its header claims a window larger than its pixels
/// region or an image larger than a slot (a damaged or forged block).
#[test]
fn a_window_block_is_validated_and_a_forged_window_refused() {
    use std::os::unix::fs::FileExt;
    let prefix = crate::backing::NAME_PREFIX;
    let name = format!("{prefix}{}-window-test", std::process::id());
    let mut p = plan(vec![image(40, 30), image(20, 10), image(8, 8)], 3);
    p.kept = false;
    p.window_slot = Some(40 * 30 * 3);
    let block = crate::OwnedBlock::create(&name, crate::Backing::Shm, &p).unwrap();
    let attached = crate::AttachedBlock::attach(&name, crate::Backing::Shm)
        .expect("a window block as written is valid");
    let slot_len = align_up(40 * 30 * 3) as usize;
    for (worker, index) in [(0u32, 2usize), (1, 0)] {
        let claim = attached.try_claim(index, worker).unwrap();
        let slot = claim.slot();
        assert!(slot.in_block);
        let base = attached.slot(index).offset;
        assert_eq!(slot.offset, base + worker as usize * slot_len);
        assert_eq!(slot.len(), attached.slot(index).len());
    }
    // Outside a claim an image of a window block has no bytes of its own.
    assert!(!attached.slot(1).in_block);
    drop(attached);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(std::path::Path::new("/dev/shm").join(&name))
        .unwrap();
    let at = offset_of!(Header, window_slot_len) as u64;
    file.write_all_at(&(1u64 << 40).to_le_bytes(), at).unwrap();
    let err = crate::AttachedBlock::attach(&name, crate::Backing::Shm)
        .err()
        .expect("a window past its pixels is refused")
        .to_string();
    assert!(err.contains("window"), "{err}");
    // A slot of 64 bytes, smaller than the images recorded.
    file.write_all_at(&64u64.to_le_bytes(), at).unwrap();
    let err = crate::AttachedBlock::attach(&name, crate::Backing::Shm)
        .err()
        .expect("an image larger than a slot is refused")
        .to_string();
    assert!(err.contains("does not fit its window"), "{err}");
    drop(block);
}

/// An ordinary plan: regions in order, aligned, and the total the sum of its parts.
#[test]
fn an_ordinary_plan_has_aligned_regions_in_order() {
    let p = plan(vec![image(640, 427), image(3, 5)], 3);
    let r = p.regions().unwrap();
    let order = [
        r.image_table,
        r.worker_table,
        r.history,
        r.strings,
        r.pixels,
    ];
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
    assert!(order.iter().all(|o| o % ALIGN == 0));
    assert_eq!(r.pixels_len, align_up(640 * 427 * 3) + align_up(3 * 5 * 3));
    assert_eq!(r.total, r.pixels + r.pixels_len);
}

/// python/shmpipe/_layout.py reads these offsets: change them together.
#[test]
fn offsets_the_python_module_relies_on() {
    assert_eq!(offset_of!(Header, layout_version), 8);
    assert_eq!(offset_of!(Header, header_size), 12);
    assert_eq!(offset_of!(Header, total_size), 16);
    assert_eq!(offset_of!(Header, state), 28);
    assert_eq!(offset_of!(Header, image_count), 32);
    assert_eq!(offset_of!(Header, channels), 44);
    assert_eq!(offset_of!(Header, image_table_offset), 48);
    assert_eq!(offset_of!(Header, image_record_size), 56);
    assert_eq!(offset_of!(Header, strings_offset), 80);
    assert_eq!(offset_of!(Header, strings_len), 88);
    assert_eq!(offset_of!(Header, pixels_offset), 96);
    assert_eq!(offset_of!(Header, pixels_len), 104);
    assert_eq!(offset_of!(Header, input_root), 112);
    assert_eq!(offset_of!(StrRef, offset), 0);
    assert_eq!(offset_of!(StrRef, len), 8);
    assert_eq!(offset_of!(Header, flags), 188);
    assert_eq!(offset_of!(Header, dataset_state), 296);
    assert_eq!(offset_of!(Header, stop_reason), 264);
    assert_eq!(offset_of!(Header, created_unix_ns), 232);
    assert_eq!(offset_of!(Header, python_writers), 248);
    assert_eq!(offset_of!(Header, history_count), 300);
    assert_eq!(offset_of!(ImageRecord, status), 48);
    assert_eq!(offset_of!(ImageRecord, steps), 52);
    assert_eq!(offset_of!(ImageRecord, message_len), 60);
    assert_eq!(offset_of!(ImageRecord, message), 80);
    assert_eq!(MESSAGE_LEN, 104);
    assert_eq!(size_of::<ImageRecord>(), 256);
    assert_eq!(LAYOUT_VERSION, 4);
    assert_eq!(offset_of!(Header, label_kind), 324);
    assert_eq!(offset_of!(Header, class_count), 328);
    assert_eq!(offset_of!(Header, class_names), 336);
    assert_eq!(offset_of!(ImageRecord, original_width), 184);
    assert_eq!(offset_of!(ImageRecord, original_height), 188);
    assert_eq!(offset_of!(ImageRecord, label), 192);
    assert_eq!(offset_of!(ImageRecord, source_hash), 200);
    assert_eq!(offset_of!(ImageRecord, output), 208);
    assert_eq!(offset_of!(ImageRecord, source_size), 64);
    assert_eq!(offset_of!(ImageRecord, source_mtime_ns), 72);
    assert_eq!(offset_of!(ImageRecord, slot_offset), 0);
    assert_eq!(offset_of!(ImageRecord, slot_len), 8);
    assert_eq!(offset_of!(ImageRecord, height), 16);
    assert_eq!(offset_of!(ImageRecord, width), 20);
    assert_eq!(offset_of!(ImageRecord, channels), 24);
    assert_eq!(offset_of!(ImageRecord, format), 28);
    assert_eq!(offset_of!(ImageRecord, source), 32);
    assert_eq!(FLAG_COPY, 2);
    assert_eq!(FLAG_KEPT, 8);
}
