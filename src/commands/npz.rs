//! `export NAME FILE.npz`: NumPy's `.npz`, a ZIP of `.npy` arrays, written as a stream. Each
//! member is stored (not compressed: pixels barely compress, and `np.load` then reads them at
//! disk speed), with a data descriptor after its bytes (its CRC-32 and size are known only once
//! it is written) and ZIP64 sizes throughout, so a dataset past 4 GiB is one file too.
//!
//! This file must never seek: it writes forwards into any `Write`, and the caller renames the
//! whole file into place once it is complete.

use std::io::{self, Write};

/// One member as the central directory records it.
struct Member {
    name: String,
    offset: u64,
    crc: u32,
    size: u64,
}

/// A `.npz` being written: [`NpzWriter::member`] for each array, then [`NpzWriter::finish`].
pub struct NpzWriter<W: Write> {
    out: W,
    written: u64,
    members: Vec<Member>,
    current: Option<Member>,
    hasher: crc32fast::Hasher,
}

const STORED: u16 = 0;
/// Version needed to extract: 4.5, ZIP64.
const VERSION: u16 = 45;
/// General purpose flags: bit 3, sizes and CRC in a data descriptor; bit 11, UTF-8 names.
const FLAGS: u16 = (1 << 3) | (1 << 11);

impl<W: Write> NpzWriter<W> {
    pub fn new(out: W) -> NpzWriter<W> {
        NpzWriter {
            out,
            written: 0,
            members: Vec::new(),
            current: None,
            hasher: crc32fast::Hasher::new(),
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Starts the member `name` (`images.npy`, ...), ending the one before.
    pub fn member(&mut self, name: &str) -> io::Result<()> {
        self.end_member()?;
        let offset = self.written;
        let mut header = Vec::with_capacity(30 + name.len() + 20);
        header.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&FLAGS.to_le_bytes());
        header.extend_from_slice(&STORED.to_le_bytes());
        header.extend_from_slice(&[0; 4]); // time and date: none
        header.extend_from_slice(&0u32.to_le_bytes()); // CRC: in the descriptor
        header.extend_from_slice(&u32::MAX.to_le_bytes()); // sizes: in ZIP64 fields
        header.extend_from_slice(&u32::MAX.to_le_bytes());
        header.extend_from_slice(&(name.len() as u16).to_le_bytes());
        header.extend_from_slice(&20u16.to_le_bytes());
        header.extend_from_slice(name.as_bytes());
        // ZIP64 extra field: sizes, 0 until the descriptor gives them.
        header.extend_from_slice(&1u16.to_le_bytes());
        header.extend_from_slice(&16u16.to_le_bytes());
        header.extend_from_slice(&[0; 16]);
        self.put(&header)?;
        self.hasher = crc32fast::Hasher::new();
        self.current = Some(Member {
            name: name.to_string(),
            offset,
            crc: 0,
            size: 0,
        });
        Ok(())
    }

    fn end_member(&mut self) -> io::Result<()> {
        let Some(mut member) = self.current.take() else {
            return Ok(());
        };
        member.crc = std::mem::take(&mut self.hasher).finalize();
        let mut descriptor = Vec::with_capacity(24);
        descriptor.extend_from_slice(&0x0807_4b50u32.to_le_bytes());
        descriptor.extend_from_slice(&member.crc.to_le_bytes());
        descriptor.extend_from_slice(&member.size.to_le_bytes());
        descriptor.extend_from_slice(&member.size.to_le_bytes());
        self.put(&descriptor)?;
        self.members.push(member);
        Ok(())
    }

    /// Writes the central directory and the end records; gives back the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.end_member()?;
        let start = self.written;
        let members = std::mem::take(&mut self.members);
        for m in &members {
            let mut entry = Vec::with_capacity(46 + m.name.len() + 28);
            entry.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
            entry.extend_from_slice(&VERSION.to_le_bytes()); // made by
            entry.extend_from_slice(&VERSION.to_le_bytes()); // needed
            entry.extend_from_slice(&FLAGS.to_le_bytes());
            entry.extend_from_slice(&STORED.to_le_bytes());
            entry.extend_from_slice(&[0; 4]);
            entry.extend_from_slice(&m.crc.to_le_bytes());
            entry.extend_from_slice(&u32::MAX.to_le_bytes());
            entry.extend_from_slice(&u32::MAX.to_le_bytes());
            entry.extend_from_slice(&(m.name.len() as u16).to_le_bytes());
            entry.extend_from_slice(&28u16.to_le_bytes()); // extra
            entry.extend_from_slice(&[0; 4]); // comment length, disk number
            entry.extend_from_slice(&[0; 6]); // internal and external attributes
            entry.extend_from_slice(&u32::MAX.to_le_bytes()); // offset: in ZIP64 field
            entry.extend_from_slice(m.name.as_bytes());
            entry.extend_from_slice(&1u16.to_le_bytes());
            entry.extend_from_slice(&24u16.to_le_bytes());
            entry.extend_from_slice(&m.size.to_le_bytes());
            entry.extend_from_slice(&m.size.to_le_bytes());
            entry.extend_from_slice(&m.offset.to_le_bytes());
            self.put(&entry)?;
        }
        let (directory_size, end64) = (self.written - start, self.written);
        let count = members.len() as u64;
        let mut end = Vec::with_capacity(56 + 20 + 22);
        // ZIP64 end of central directory record.
        end.extend_from_slice(&0x0606_4b50u32.to_le_bytes());
        end.extend_from_slice(&44u64.to_le_bytes());
        end.extend_from_slice(&VERSION.to_le_bytes());
        end.extend_from_slice(&VERSION.to_le_bytes());
        end.extend_from_slice(&[0; 8]); // disk numbers
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&count.to_le_bytes());
        end.extend_from_slice(&directory_size.to_le_bytes());
        end.extend_from_slice(&start.to_le_bytes());
        // Its locator.
        end.extend_from_slice(&0x0706_4b50u32.to_le_bytes());
        end.extend_from_slice(&0u32.to_le_bytes());
        end.extend_from_slice(&end64.to_le_bytes());
        end.extend_from_slice(&1u32.to_le_bytes());
        // The classic end record, every field saying "see ZIP64".
        end.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
        end.extend_from_slice(&[0; 4]);
        end.extend_from_slice(&u16::MAX.to_le_bytes());
        end.extend_from_slice(&u16::MAX.to_le_bytes());
        end.extend_from_slice(&u32::MAX.to_le_bytes());
        end.extend_from_slice(&u32::MAX.to_le_bytes());
        end.extend_from_slice(&0u16.to_le_bytes());
        self.put(&end)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for NpzWriter<W> {
    /// Bytes of the current member.
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let member = self
            .current
            .as_mut()
            .ok_or_else(|| io::Error::other("no member started"))?;
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        member.size += bytes.len() as u64;
        self.written += bytes.len() as u64;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A `.npy` array of strings as NumPy keeps them (`<U{n}`: `n` UTF-32 code units each, `n`
/// the longest), one per item of `texts`.
pub fn unicode_npy(texts: &[String]) -> Vec<u8> {
    let width = texts
        .iter()
        .map(|t| t.chars().count())
        .max()
        .unwrap_or(0)
        .max(1);
    let dict = format!(
        "{{'descr': '<U{width}', 'fortran_order': False, 'shape': ({},), }}",
        texts.len()
    );
    let mut out = npy_preamble(&dict);
    for text in texts {
        let mut n = 0;
        for ch in text.chars() {
            out.extend_from_slice(&(ch as u32).to_le_bytes());
            n += 1;
        }
        out.resize(out.len() + 4 * (width - n), 0);
    }
    out
}

/// A `.npy` array of `i64` values, shape `(len,)`.
pub fn int64_npy(values: &[i64]) -> Vec<u8> {
    int64_array_npy(values, &[values.len()])
}

/// A `.npy` array of `i64` values in C order, of `shape` (whose product is `values.len()`).
pub fn int64_array_npy(values: &[i64], shape: &[usize]) -> Vec<u8> {
    debug_assert_eq!(shape.iter().product::<usize>(), values.len());
    let sides: String = shape.iter().map(|s| format!("{s}, ")).collect();
    let sides = if shape.len() == 1 {
        sides.trim_end().to_string()
    } else {
        sides.trim_end().trim_end_matches(',').to_string()
    };
    let dict = format!("{{'descr': '<i8', 'fortran_order': False, 'shape': ({sides}), }}");
    let mut out = npy_preamble(&dict);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// The magic, version 1.0 and the header `dict`, padded with spaces and a newline to a multiple
/// of 64 bytes, as NumPy writes them.
fn npy_preamble(dict: &str) -> Vec<u8> {
    let unpadded = 10 + dict.len() + 1;
    let total = unpadded.div_ceil(64) * 64;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&((total - 10) as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.resize(total - 1, b' ');
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header names the shape as NumPy writes it: `(3,)` for one side, `(2, 3)` for two.
    #[test]
    fn int64_arrays_name_their_shape_as_numpy_does() {
        let one = int64_npy(&[1, 2, 3]);
        let text = String::from_utf8_lossy(&one[10..]);
        assert!(text.contains("'shape': (3,), "), "{text}");
        assert_eq!(
            (one.len() - 3 * 8) % 64,
            0,
            "the header is padded to 64 bytes"
        );
        assert_eq!(&one[one.len() - 24..one.len() - 16], &1i64.to_le_bytes());
        let two = int64_array_npy(&[1, 2, 3, 4, 5, 6], &[2, 3]);
        let text = String::from_utf8_lossy(&two[10..]);
        assert!(text.contains("'shape': (2, 3), "), "{text}");
        assert_eq!(&two[two.len() - 8..], &6i64.to_le_bytes());
    }

    #[test]
    fn a_stored_member_has_its_crc_and_size_in_every_record() {
        let mut npz = NpzWriter::new(Vec::new());
        npz.member("a.npy").unwrap();
        npz.write_all(b"hello").unwrap();
        npz.member("b.npy").unwrap();
        let bytes = npz.finish().unwrap();
        let crc = crc32fast::hash(b"hello");
        // The first descriptor follows the 5 bytes after a's 30 + 5 + 20 byte header.
        let descriptor = &bytes[55 + 5..55 + 5 + 24];
        assert_eq!(&descriptor[..4], &0x0807_4b50u32.to_le_bytes());
        assert_eq!(&descriptor[4..8], &crc.to_le_bytes());
        assert_eq!(&descriptor[8..16], &5u64.to_le_bytes());
        assert_eq!(
            &bytes[bytes.len() - 22..][..4],
            &0x0605_4b50u32.to_le_bytes()
        );
        let preamble = npy_preamble("{}");
        assert_eq!(preamble.len(), 64);
        // Two strings of at most 2 characters: 2 x 2 UTF-32 units after a 64-aligned header.
        let texts = unicode_npy(&["ab".into(), "c".into()]);
        let (header, data) = texts.split_at(texts.len() - 16);
        assert_eq!(header.len() % 64, 0);
        assert!(header.starts_with(b"\x93NUMPY\x01\x00") && header.ends_with(b"\n"));
        let units: Vec<u32> = data
            .chunks_exact(4)
            .map(|u| u32::from_le_bytes(u.try_into().unwrap()))
            .collect();
        assert_eq!(units, ['a' as u32, 'b' as u32, 'c' as u32, 0]);
    }
}
