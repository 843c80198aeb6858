//! A kept dataset whose header or tables were forged or damaged in place is refused by every
//! reader of ours (`save`, `export`, `apply`), naming the image and the fault, before a byte of
//! its pixels is read or one of the block or of an output is written: slots that overlap or are
//! misaligned, a slot length that is not its shape's, channels not the dataset's, a path
//! outside the strings or leaving the input folder, a table running past the end, another
//! magic. The true bytes put back, the dataset saves again.

use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileExt;

use shmpipe_block::{Header, ImageRecord, StrRef};

use crate::util::{blocks_dir, files_under, ok, os, own_backing, shmpipe, stderr, Dataset};

/// A forgery: what it is, the bytes written where, and what every reader must then say.
type Forgery<'a> = (&'a str, Vec<(usize, Vec<u8>)>, &'a str);

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

#[test]
fn forged_tables_are_refused_by_every_reader_naming_the_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let _backing = own_backing();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for k in 0..3u32 {
        image::RgbImage::from_fn(16, 12, |x, y| {
            image::Rgb([(x * 9 + k) as u8, (y * 13) as u8, 77])
        })
        .save(input.join(format!("{k}.png")))
        .unwrap();
    }
    let name = "forged";
    let _guard = Dataset(name.into());
    ok(&[
        os("load"),
        input.as_os_str(),
        os("--name"),
        os(name),
        os("-q"),
    ]);
    let path = blocks_dir().join(format!("shmpipe-{name}"));
    let true_bytes = std::fs::read(&path).unwrap();
    let table = u64_at(&true_bytes, offset_of!(Header, image_table_offset)) as usize;
    let record = |i: usize| table + i * size_of::<ImageRecord>();
    let slot_offset = |i: usize| record(i) + offset_of!(ImageRecord, slot_offset);
    let source = |i: usize| record(i) + offset_of!(ImageRecord, source);
    let input_root = offset_of!(Header, input_root);
    let le = |v: u64| v.to_le_bytes().to_vec();

    let forgeries: Vec<Forgery> = vec![
        (
            "image 1's slot on image 0's",
            vec![(slot_offset(1), le(u64_at(&true_bytes, slot_offset(0))))],
            "image 1: slot is misaligned, overlaps another, or is out of bounds",
        ),
        (
            "image 0's slot moved 8 bytes",
            vec![(slot_offset(0), le(u64_at(&true_bytes, slot_offset(0)) + 8))],
            "image 0: slot is misaligned, overlaps another, or is out of bounds",
        ),
        (
            "image 2's slot 3 bytes longer",
            vec![(
                record(2) + offset_of!(ImageRecord, slot_len),
                le(u64_at(&true_bytes, record(2) + offset_of!(ImageRecord, slot_len)) + 3),
            )],
            "image 2: slot length does not match its shape",
        ),
        (
            "image 0 with 4 channels in an RGB dataset",
            vec![(
                record(0) + offset_of!(ImageRecord, channels),
                4u32.to_le_bytes().to_vec(),
            )],
            "image 0: channels differ from the block's",
        ),
        (
            "image 1's path running out of the strings",
            vec![(source(1) + offset_of!(StrRef, len), le(u64::MAX))],
            "image 1: source path or output name is out of bounds",
        ),
        (
            "image 1's path the absolute input folder",
            vec![(source(1), true_bytes[input_root..input_root + 16].to_vec())],
            "image 1: source path \"/",
        ),
        (
            "an image table past the end",
            vec![(offset_of!(Header, image_count), le(u64::MAX / 256))],
            "image table region",
        ),
        (
            "another magic",
            vec![(0, b"NOTOURS\0".to_vec())],
            "wrong magic: not a shmpipe block",
        ),
    ];
    let out = tmp.path().join("out");
    let npy = tmp.path().join("x.npy");
    let block = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    for (what, patches, says) in &forgeries {
        for (at, bytes) in patches {
            block.write_all_at(bytes, *at as u64).unwrap();
        }
        let forged = std::fs::read(&path).unwrap();
        for args in [
            vec![os("save"), os(name), os("-o"), out.as_os_str()],
            vec![os("export"), os(name), npy.as_os_str()],
            vec![os("apply"), os(name), os("--ops"), os("invert")],
        ] {
            let done = shmpipe(&args);
            let err = stderr(&done);
            assert_eq!(done.status.code(), Some(2), "{what}: {args:?}: {err}");
            assert!(
                err.contains(&format!("block shmpipe-{name} is not valid")) && err.contains(says),
                "{what}: {args:?}: {err}"
            );
            assert_eq!(
                std::fs::read(&path).unwrap(),
                forged,
                "{what}: {args:?} wrote the block"
            );
        }
        assert!(
            !npy.exists() && (!out.exists() || files_under(&out).is_empty()),
            "{what}: an output was written"
        );
        block.write_all_at(&true_bytes, 0).unwrap();
    }
    // The true bytes back: the same dataset saves.
    let done = shmpipe(&[os("save"), os(name), os("-o"), out.as_os_str()]);
    assert_eq!(done.status.code(), Some(0), "{}", stderr(&done));
    assert_eq!(files_under(&out).len(), 3);
}
