//! The block against real POSIX shared memory: create, attach, validation, ownership.

use std::io::{Seek, SeekFrom, Write};
use std::mem::offset_of;
use std::path::PathBuf;

use shmpipe_block::{
    fresh_name, AttachedBlock, Backing, BlockError, BlockPlan, Header, ImageRecord, OwnedBlock,
    PlannedImage, StrRef,
};

fn plan(images: &[(u32, u32)]) -> BlockPlan {
    BlockPlan {
        worker_count: 2,
        channels: 3,
        images: images
            .iter()
            .enumerate()
            .map(|(i, &(h, w))| PlannedImage {
                height: h,
                width: w,
                format: 0,
                source: format!("img{i}.png").into_bytes(),
                ..Default::default()
            })
            .collect(),
        input_root: b"/in".to_vec(),
        op_chain: "invert".into(),
        quality: 90,
        max_pixels: 1 << 20,
        ..Default::default()
    }
}

fn shm_path(name: &str) -> PathBuf {
    PathBuf::from("/dev/shm").join(name)
}

fn poke(name: &str, offset: usize, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .unwrap();
    f.seek(SeekFrom::Start(offset as u64)).unwrap();
    f.write_all(bytes).unwrap();
}

fn expect_invalid(name: &str, needle: &str) {
    match AttachedBlock::attach(name, Backing::Shm) {
        Err(BlockError::Invalid { reason, .. }) => {
            assert!(reason.contains(needle), "{reason:?} mentions {needle:?}")
        }
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("attach accepted a corrupt block ({needle})"),
    }
}

#[test]
fn attach_sees_the_layout_and_only_the_owner_unlinks() {
    let name = fresh_name();
    let block = OwnedBlock::create(&name, Backing::Shm, &plan(&[(10, 20), (3, 4)])).unwrap();
    assert!(name.len() <= 30, "fits macOS's limit");
    assert!(shm_path(&name).exists());
    let mode = std::fs::metadata(shm_path(&name))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
        .unwrap();
    assert_eq!(mode & 0o777, 0o600);
    {
        let attached = AttachedBlock::attach(&name, Backing::Shm).unwrap();
        assert_eq!(attached.image_count(), 2);
        assert_eq!(attached.slot(0).len(), 10 * 20 * 3);
        assert_eq!(attached.slot(1).offset % 64, 0);
        assert_eq!(attached.source(1), b"img1.png");
        // A second create under the same name fails: creation is exclusive.
        assert!(OwnedBlock::create(&name, Backing::Shm, &plan(&[(1, 1)])).is_err());
    }
    assert!(
        shm_path(&name).exists(),
        "dropping an attached handle does not unlink"
    );
    drop(block);
    assert!(!shm_path(&name).exists(), "dropping the owner unlinks");
    assert!(matches!(
        AttachedBlock::attach(&name, Backing::Shm),
        Err(BlockError::Io { .. })
    ));
}

#[test]
fn attach_refuses_corrupt_headers_with_an_error() {
    let name = fresh_name();
    let _block = OwnedBlock::create(&name, Backing::Shm, &plan(&[(8, 8)])).unwrap();
    let original = std::fs::read(shm_path(&name)).unwrap();
    let restore = || poke(&name, 0, &original);

    poke(&name, 0, b"NOTMAGIC");
    expect_invalid(&name, "magic");
    restore();

    poke(
        &name,
        offset_of!(Header, layout_version),
        &99u32.to_le_bytes(),
    );
    expect_invalid(&name, "version");
    restore();

    poke(
        &name,
        offset_of!(Header, image_table_offset),
        &(1u64 << 40).to_le_bytes(),
    );
    expect_invalid(&name, "past the end");
    restore();

    poke(
        &name,
        offset_of!(Header, pixels_len),
        &u64::MAX.to_le_bytes(),
    );
    expect_invalid(&name, "pixels");
    restore();

    let table = u64::from_le_bytes(
        original[offset_of!(Header, image_table_offset)..][..8]
            .try_into()
            .unwrap(),
    ) as usize;
    poke(
        &name,
        table + offset_of!(ImageRecord, slot_offset),
        &(1u64 << 30).to_le_bytes(),
    );
    expect_invalid(&name, "image 0");
    restore();

    poke(
        &name,
        offset_of!(Header, op_chain) + 8,
        &u64::MAX.to_le_bytes(),
    );
    expect_invalid(&name, "op chain");
    restore();

    assert!(
        AttachedBlock::attach(&name, Backing::Shm).is_ok(),
        "the restored block attaches"
    );
}

#[test]
fn attach_refuses_a_truncated_block_and_foreign_names() {
    let name = fresh_name();
    let _block = OwnedBlock::create(&name, Backing::Shm, &plan(&[(8, 8)])).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap()
        .set_len(100)
        .unwrap();
    expect_invalid(&name, "smaller than the header");
    assert!(matches!(
        AttachedBlock::attach("not-ours", Backing::Shm),
        Err(BlockError::BadName(_))
    ));
    assert!(matches!(
        AttachedBlock::attach("shmpipe-../../etc", Backing::Shm),
        Err(BlockError::BadName(_))
    ));
}

#[test]
fn a_block_too_large_for_its_filesystem_is_refused_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let name = fresh_name();
    let huge = plan(&[(1 << 20, 1 << 20)]);
    match OwnedBlock::create(&name, Backing::Dir(dir.path().to_path_buf()), &huge) {
        Err(BlockError::NoSpace { needed, free, .. }) => assert!(needed > free),
        Err(other) => panic!("expected NoSpace, got {other}"),
        Ok(_) => panic!("a 3 TiB block was created"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn attach_refuses_overlapping_slots_and_regions() {
    let name = fresh_name();
    let _block = OwnedBlock::create(&name, Backing::Shm, &plan(&[(8, 8), (8, 8)])).unwrap();
    let original = std::fs::read(shm_path(&name)).unwrap();
    let restore = || poke(&name, 0, &original);
    let table = u64::from_le_bytes(
        original[offset_of!(Header, image_table_offset)..][..8]
            .try_into()
            .unwrap(),
    ) as usize;

    // Image 1's slot moved onto image 0's: two claims would cover the same bytes.
    let second = table + std::mem::size_of::<ImageRecord>() + offset_of!(ImageRecord, slot_offset);
    poke(&name, second, &0u64.to_le_bytes());
    expect_invalid(&name, "overlaps another");
    restore();

    // The worker table laid over the image table.
    poke(
        &name,
        offset_of!(Header, worker_table_offset),
        &(table as u64).to_le_bytes(),
    );
    expect_invalid(&name, "worker table");
    restore();

    // A shape whose byte count overflows u64 must be an error, not a panic or a wrap.
    poke(
        &name,
        table + offset_of!(ImageRecord, height),
        &u32::MAX.to_le_bytes(),
    );
    poke(
        &name,
        table + offset_of!(ImageRecord, width),
        &u32::MAX.to_le_bytes(),
    );
    expect_invalid(&name, "does not match its shape");
    restore();
    assert!(AttachedBlock::attach(&name, Backing::Shm).is_ok());
}

#[test]
fn source_paths_must_stay_inside_their_folder() {
    for bad in ["../escape.png", "/etc/passwd", "a/../../b.png", ""] {
        let mut p = plan(&[(2, 2)]);
        p.images[0].source = bad.as_bytes().to_vec();
        let name = fresh_name();
        match OwnedBlock::create(&name, Backing::Shm, &p) {
            Err(BlockError::Invalid { reason, .. }) => {
                assert!(reason.contains("plain relative path"), "{reason}")
            }
            Err(other) => panic!("{bad:?}: expected Invalid, got {other}"),
            Ok(_) => panic!("{bad:?} was accepted"),
        }
        assert!(!shm_path(&name).exists(), "a refused block is unlinked");
    }
}

/// An output name planned by `run --output-name` is where a worker writes: it must be a plain
/// relative name, in bounds, or the block is refused.
#[test]
fn output_names_must_stay_inside_the_output_folder() {
    for bad in ["../escape.png", "/etc/passwd", "a/../../b.png"] {
        let mut p = plan(&[(2, 2)]);
        p.images[0].output = bad.as_bytes().to_vec();
        let name = fresh_name();
        match OwnedBlock::create(&name, Backing::Shm, &p) {
            Err(BlockError::Invalid { reason, .. }) => {
                assert!(reason.contains("output name"), "{reason}")
            }
            Err(other) => panic!("{bad:?}: expected Invalid, got {other}"),
            Ok(_) => panic!("{bad:?} was accepted"),
        }
        assert!(!shm_path(&name).exists(), "a refused block is unlinked");
    }
    let mut p = plan(&[(2, 2), (2, 2)]);
    p.images[1].output = b"flat/one.png".to_vec();
    let name = fresh_name();
    let _block = OwnedBlock::create(&name, Backing::Shm, &p).unwrap();
    let attached = AttachedBlock::attach(&name, Backing::Shm).unwrap();
    assert_eq!(attached.output_name(0), b"");
    assert_eq!(attached.output_name(1), b"flat/one.png");
    drop(attached);
    // A damaged record whose name runs past the strings is refused, not read.
    let original = std::fs::read(shm_path(&name)).unwrap();
    let table = u64::from_le_bytes(
        original[offset_of!(Header, image_table_offset)..][..8]
            .try_into()
            .unwrap(),
    ) as usize;
    let len_at = table
        + std::mem::size_of::<ImageRecord>()
        + offset_of!(ImageRecord, output)
        + offset_of!(StrRef, len);
    poke(&name, len_at, &u64::MAX.to_le_bytes());
    expect_invalid(&name, "output name is out of bounds");
}

/// A block whose header says "per image" holds each image's own channels (1 to 4) and is
/// checked record by record; a kept dataset, or a header with one layout, is not allowed that.
#[test]
fn per_image_channels_are_validated_record_by_record() {
    let mut per_image = plan(&[(5, 7), (5, 7), (5, 7), (5, 7)]);
    per_image.channels = shmpipe_block::CHANNELS_PER_IMAGE;
    for (c, image) in (1..=4).zip(&mut per_image.images) {
        image.channels = c;
    }
    let name = fresh_name();
    let _block = OwnedBlock::create(&name, Backing::Shm, &per_image).unwrap();
    let attached = AttachedBlock::attach(&name, Backing::Shm).unwrap();
    for i in 0..4 {
        assert_eq!(attached.slot(i).channels, i + 1);
        assert_eq!(attached.slot(i).len(), 5 * 7 * (i + 1));
    }
    drop(attached);
    let record = |i: usize| std::mem::size_of::<Header>() + i * std::mem::size_of::<ImageRecord>();
    poke(
        &name,
        record(2) + offset_of!(ImageRecord, channels),
        &5u32.to_le_bytes(),
    );
    expect_invalid(&name, "channels are not 1 to 4");

    // One layout in the header: every record must have it.
    let name = fresh_name();
    let _block = OwnedBlock::create(&name, Backing::Shm, &plan(&[(5, 7), (5, 7)])).unwrap();
    poke(
        &name,
        record(1) + offset_of!(ImageRecord, channels),
        &1u32.to_le_bytes(),
    );
    expect_invalid(&name, "channels differ from the block's");
}
