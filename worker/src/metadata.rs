//! What an output carries from its source besides the pixels: the ICC profile, the EXIF (its
//! orientation reset to 1, since decoding turned the pixels upright), text comments, and whether a
//! WebP source was lossless. Read from the source file when its output is encoded; the block
//! never holds any of it.
//!
//! Headers only: JPEG markers up to the scan, WebP chunks, PNG chunks up to the image data (text
//! chunks after it are not seen); other formats through `image`'s decoder. Reading never fails an
//! image: what cannot be read is left out. Every piece has a size limit checked before anything
//! of that size is allocated or inflated ([`MAX_ICC`], [`MAX_EXIF`], [`MAX_COMMENTS`]): a piece
//! over it, or malformed, is dropped and named in [`Metadata::dropped`], so a metadata bomb
//! costs no memory and no output carries what other readers refuse. This module must never
//! touch pixels.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use image::{ImageDecoder, ImageFormat};

/// A text comment: a JPEG COM segment (keyword [`COMMENT`]) or a PNG text chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Comment {
    pub keyword: String,
    /// As stored: a JPEG comment's bytes, a PNG text's UTF-8.
    pub text: Vec<u8>,
}

/// The PNG keyword of a plain comment, and what a JPEG COM segment becomes in a PNG.
pub const COMMENT: &str = "Comment";

/// How an image's warning starts when metadata of its source was left out of its output.
pub const LEFT_OUT: &str = "metadata left out";

/// The largest ICC profile carried: 1 MiB, the most Pillow inflates from a PNG's iCCP chunk
/// (`PngImagePlugin.MAX_TEXT_CHUNK`); real RGB and gray profiles are a few KiB.
pub const MAX_ICC: usize = 1 << 20;
/// The largest EXIF carried: what one JPEG APP1 segment holds, where nearly all EXIF comes from.
pub const MAX_EXIF: usize = 65_533 - 6;
/// The most comment text carried, all comments together.
pub const MAX_COMMENTS: usize = 1 << 20;

/// What a source holds besides its pixels.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Metadata {
    /// The ICC colour profile, as its bytes.
    pub icc: Option<Vec<u8>>,
    /// EXIF as a TIFF structure (no `Exif\0\0` prefix), orientation set to 1.
    pub exif: Option<Vec<u8>>,
    pub comments: Vec<Comment>,
    /// What the source held and is left out, each with why: "ICC profile of 19.6 MiB, over the
    /// limit of 1 MiB".
    pub dropped: Vec<String>,
}

impl Metadata {
    pub fn is_empty(&self) -> bool {
        self.icc.is_none() && self.exif.is_none() && self.comments.is_empty()
    }

    /// Drops what is over its limit or malformed, saying so in `dropped`.
    fn enforce_limits(&mut self) {
        fn mib(n: usize) -> String {
            format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
        }
        if let Some(icc) = &self.icc {
            // An ICC profile is a 128-byte header, which starts with the profile's own size
            // (ICC.1, 7.2.2), then its tags: one that holds less than it says is cut short.
            let declared = icc
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            let whole = icc.len() >= 128 && declared.is_some_and(|d| d as usize <= icc.len());
            if icc.len() > MAX_ICC {
                let text = format!("ICC profile of {}, over the limit of 1 MiB", mib(icc.len()));
                self.dropped.push(text);
                self.icc = None;
            } else if !whole {
                let text = format!("malformed ICC profile ({} bytes)", icc.len());
                self.dropped.push(text);
                self.icc = None;
            }
        }
        if self.exif.as_ref().is_some_and(|e| e.len() > MAX_EXIF) {
            let len = self.exif.take().map_or(0, |e| e.len());
            self.dropped
                .push(format!("EXIF of {len} bytes, over the limit of {MAX_EXIF}"));
        }
        let text: usize = self.comments.iter().map(|c| c.text.len()).sum();
        if text > MAX_COMMENTS {
            self.comments.clear();
            self.dropped.push(format!(
                "comments of {}, over the limit of 1 MiB",
                mib(text)
            ));
        }
    }
}

/// The metadata of the `format` file at `path`; empty where it cannot be read.
pub fn read(path: &Path, format: ImageFormat) -> Metadata {
    let mut metadata = match format {
        ImageFormat::Jpeg => open(path).and_then(read_jpeg),
        ImageFormat::Png => open(path).and_then(|r| read_png(r, path)),
        ImageFormat::WebP => open(path).and_then(read_webp).map(|(m, _)| m),
        _ => read_with_image(path),
    }
    .unwrap_or_default();
    if let Some(exif) = &mut metadata.exif {
        if exif.starts_with(EXIF_PREFIX) {
            exif.drain(..EXIF_PREFIX.len());
        }
        // The pixels were turned upright on decode: an output must not be turned again.
        let _ = image::metadata::Orientation::remove_from_exif_chunk(exif);
    }
    metadata.enforce_limits();
    metadata
}

/// Whether the file at `path` is a lossless WebP (its image is VP8L, not VP8); false when it
/// cannot be read.
pub fn is_lossless_webp(path: &Path) -> bool {
    open(path)
        .and_then(read_webp)
        .is_ok_and(|(_, lossless)| lossless)
}

const EXIF_PREFIX: &[u8] = b"Exif\0\0";
const ICC_PREFIX: &[u8] = b"ICC_PROFILE\0";

fn open(path: &Path) -> io::Result<BufReader<File>> {
    File::open(path).map(BufReader::new)
}

fn read_with_image(path: &Path) -> io::Result<Metadata> {
    let other = |e: image::ImageError| io::Error::other(e.to_string());
    let mut decoder = image::ImageReader::open(path)?
        .with_guessed_format()?
        .into_decoder()
        .map_err(other)?;
    Ok(Metadata {
        icc: decoder.icc_profile().map_err(other)?,
        exif: decoder.exif_metadata().map_err(other)?,
        comments: Vec::new(),
        dropped: Vec::new(),
    })
}

fn read_u16_be(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn read_vec(r: &mut impl Read, len: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0; len];
    r.read_exact(&mut v)?;
    Ok(v)
}

/// The segments before a JPEG's first scan: APP1 EXIF, APP2 ICC (in pieces, by sequence number),
/// COM.
fn read_jpeg(mut r: BufReader<File>) -> io::Result<Metadata> {
    let mut metadata = Metadata::default();
    if read_u16_be(&mut r)? != 0xFFD8 {
        return Ok(metadata);
    }
    // (sequence number, count, piece) of each APP2 ICC_PROFILE chunk.
    let mut icc_pieces: Vec<(u8, u8, Vec<u8>)> = Vec::new();
    loop {
        let mut byte = [0u8];
        r.read_exact(&mut byte)?;
        if byte[0] != 0xFF {
            break;
        }
        // Fill bytes: any number of 0xFF before the marker.
        while byte[0] == 0xFF {
            r.read_exact(&mut byte)?;
        }
        let marker = byte[0];
        if matches!(marker, 0x01 | 0xD0..=0xD7) {
            continue;
        }
        if matches!(marker, 0xDA | 0xD9) {
            break;
        }
        let len = (read_u16_be(&mut r)? as usize).saturating_sub(2);
        match marker {
            0xE1 | 0xE2 | 0xFE => {
                let payload = read_vec(&mut r, len)?;
                match marker {
                    0xE1 if payload.starts_with(EXIF_PREFIX) && metadata.exif.is_none() => {
                        metadata.exif = Some(payload);
                    }
                    0xE2 if payload.starts_with(ICC_PREFIX) && payload.len() >= 14 => {
                        icc_pieces.push((payload[12], payload[13], payload[14..].to_vec()));
                    }
                    0xFE => metadata.comments.push(Comment {
                        keyword: COMMENT.into(),
                        text: payload,
                    }),
                    _ => {}
                }
            }
            _ => r.seek_relative(len as i64)?,
        }
    }
    if !icc_pieces.is_empty() {
        // ICC.1 B.4: chunks numbered 1..=count, each once, all saying the same count.
        icc_pieces.sort_by_key(|(sequence, _, _)| *sequence);
        let count = icc_pieces.len();
        let whole = icc_pieces
            .iter()
            .enumerate()
            .all(|(i, (sequence, of, _))| *sequence as usize == i + 1 && *of as usize == count);
        let total: usize = icc_pieces.iter().map(|(_, _, p)| p.len()).sum();
        if !whole {
            metadata.dropped.push(format!(
                "malformed ICC profile ({count} APP2 chunks, numbered out of order)"
            ));
        } else if total > MAX_ICC {
            metadata.dropped.push(format!(
                "ICC profile of {:.1} MiB, over the limit of 1 MiB",
                total as f64 / (1 << 20) as f64
            ));
        } else {
            metadata.icc = Some(icc_pieces.into_iter().flat_map(|(_, _, p)| p).collect());
        }
    }
    Ok(metadata)
}

/// The iCCP and eXIf chunks and the text chunks before the image data.
fn read_png(r: BufReader<File>, path: &Path) -> io::Result<Metadata> {
    // The png crate inflates iCCP up to its byte limit and drops a profile that goes over it;
    // the rest of the budget is for the chunks it holds before the image data.
    let limits = png::Limits {
        bytes: MAX_ICC + 1 + 4 * MAX_COMMENTS,
    };
    let reader = png::Decoder::new_with_limits(r, limits)
        .read_info()
        .map_err(io::Error::other)?;
    let info = reader.info();
    let mut dropped = Vec::new();
    if info.icc_profile.is_none() && png_has_chunk(path, b"iCCP") {
        dropped.push("ICC profile over the limit of 1 MiB, or malformed".to_string());
    }
    let mut comments: Vec<Comment> = info
        .uncompressed_latin1_text
        .iter()
        .map(|t| (t.keyword.clone(), Ok(t.text.clone())))
        .chain(info.compressed_latin1_text.iter().map(|t| {
            let mut t = t.clone();
            let text = t.decompress_text().and_then(|()| t.get_text());
            (t.keyword, text)
        }))
        .chain(info.utf8_text.iter().map(|t| {
            let mut t = t.clone();
            let text = t.decompress_text().and_then(|()| t.get_text());
            (t.keyword, text)
        }))
        .filter_map(|(keyword, text)| {
            Some(Comment {
                keyword,
                text: text.ok()?.into_bytes(),
            })
        })
        .collect();
    comments.retain(|c| !c.keyword.is_empty());
    Ok(Metadata {
        icc: info.icc_profile.as_ref().map(|p| p.to_vec()),
        exif: info.exif_metadata.as_ref().map(|e| e.to_vec()),
        comments,
        dropped,
    })
}

/// Whether the PNG at `path` has a chunk of this type before its image data (chunk headers
/// only: nothing is inflated or held).
fn png_has_chunk(path: &Path, kind: &[u8; 4]) -> bool {
    let walk = || -> io::Result<bool> {
        let mut r = open(path)?;
        r.seek_relative(8)?;
        loop {
            let mut header = [0u8; 8];
            r.read_exact(&mut header)?;
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            match &header[4..] {
                found if found == kind => return Ok(true),
                b"IDAT" | b"IEND" => return Ok(false),
                _ => r.seek_relative(len as i64 + 4)?,
            }
        }
    };
    walk().unwrap_or(false)
}

/// The ICCP and EXIF chunks of a WebP, and whether its image is lossless (VP8L).
fn read_webp(mut r: BufReader<File>) -> io::Result<(Metadata, bool)> {
    use std::io::Seek;
    let file_len = r.get_ref().metadata()?.len();
    let mut metadata = Metadata::default();
    let header = read_vec(&mut r, 12)?;
    if &header[..4] != b"RIFF" || &header[8..] != b"WEBP" {
        return Ok((metadata, false));
    }
    let mut lossless = false;
    loop {
        let mut chunk = [0u8; 8];
        match r.read_exact(&mut chunk) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            done => done?,
        }
        let len = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]) as usize;
        // A length is read only when it is under its limit and the file holds it: a chunk's
        // claim is never allocated as given.
        let left = file_len.saturating_sub(r.stream_position()?) as usize;
        let limit = match &chunk[..4] {
            b"ICCP" => MAX_ICC,
            b"EXIF" => MAX_EXIF,
            _ => 0,
        };
        if limit > 0 && (len > limit || len > left) {
            let what = if &chunk[..4] == b"ICCP" {
                "ICC profile"
            } else {
                "EXIF"
            };
            metadata.dropped.push(if len > left {
                format!("{what} chunk claims {len} bytes, more than the file holds")
            } else {
                format!("{what} of {len} bytes, over the limit of {limit}")
            });
            if len > left {
                break;
            }
            r.seek_relative(len as i64)?;
            r.seek_relative((len & 1) as i64)?;
            continue;
        }
        match &chunk[..4] {
            b"ICCP" => metadata.icc = Some(read_vec(&mut r, len)?),
            b"EXIF" => metadata.exif = Some(read_vec(&mut r, len)?),
            b"VP8L" => {
                lossless = true;
                r.seek_relative(len as i64)?;
            }
            _ => r.seek_relative(len as i64)?,
        }
        // Chunks are padded to an even length.
        r.seek_relative((len & 1) as i64)?;
    }
    Ok((metadata, lossless))
}

/// `webp`, a simple or extended WebP as libwebp writes it (one still image), with the ICC
/// profile and EXIF of `metadata` in an extended container: VP8X (flags and canvas), ICCP, the
/// image's own chunks (ALPH, VP8), EXIF. A file it cannot parse is given back as it is.
pub fn webp_with_metadata(
    webp: &[u8],
    (width, height): (u32, u32),
    metadata: &Metadata,
) -> Vec<u8> {
    if webp.len() < 12 || &webp[..4] != b"RIFF" || &webp[8..12] != b"WEBP" {
        return webp.to_vec();
    }
    // The image's chunks, without a VP8X of its own (its alpha flag is re-derived).
    let mut image_chunks = Vec::new();
    let mut alpha = false;
    let mut at = 12;
    while at + 8 <= webp.len() {
        let fourcc = &webp[at..at + 4];
        let len = u32::from_le_bytes([webp[at + 4], webp[at + 5], webp[at + 6], webp[at + 7]]);
        let end = (at + 8 + len as usize + (len as usize & 1)).min(webp.len());
        match fourcc {
            b"VP8X" => alpha |= webp.get(at + 8).is_some_and(|flags| flags & 0x10 != 0),
            _ => {
                alpha |= fourcc == b"ALPH";
                image_chunks.extend_from_slice(&webp[at..end]);
            }
        }
        at = end;
    }
    let chunk = |out: &mut Vec<u8>, fourcc: &[u8; 4], data: &[u8]| {
        out.extend_from_slice(fourcc);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
    };
    let mut flags = 0u8;
    if metadata.icc.is_some() {
        flags |= 0x20;
    }
    if alpha {
        flags |= 0x10;
    }
    if metadata.exif.is_some() {
        flags |= 0x08;
    }
    let mut vp8x = vec![flags, 0, 0, 0];
    vp8x.extend_from_slice(&(width - 1).to_le_bytes()[..3]);
    vp8x.extend_from_slice(&(height - 1).to_le_bytes()[..3]);
    let mut body = b"WEBP".to_vec();
    chunk(&mut body, b"VP8X", &vp8x);
    if let Some(icc) = &metadata.icc {
        chunk(&mut body, b"ICCP", icc);
    }
    body.extend_from_slice(&image_chunks);
    if let Some(exif) = &metadata.exif {
        chunk(&mut body, b"EXIF", exif);
    }
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Whether an ICC profile describes pixels of this kind: its data colour space (bytes 16 to 20
/// of its header) is `GRAY` for a gray image, `RGB ` for a colour one. A profile that does not
/// (an RGB one after grayscale, the CMYK one of a CMYK JPEG decoded to RGB) is left out: readers
/// would misread the pixels with it, or refuse them.
pub fn icc_fits(icc: &[u8], gray: bool) -> bool {
    let space = icc.get(16..20);
    space == Some(if gray { b"GRAY" } else { b"RGB " })
}

/// The APPn segments of `metadata` for a JPEG: EXIF in APP1 (`Exif\0\0` and the TIFF
/// structure), then the ICC profile in numbered APP2 `ICC_PROFILE` chunks (ICC.1, B.4). To go
/// after the encoder's JFIF APP0. EXIF larger than one segment and a profile of 255 chunks or
/// more are left out: no reader could put them together again.
pub fn jpeg_app_segments(metadata: &Metadata) -> Vec<u8> {
    fn segment(out: &mut Vec<u8>, marker: u8, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&(len as u16 + 2).to_be_bytes());
        for part in parts {
            out.extend_from_slice(part);
        }
    }
    const MAX_DATA: usize = 65535 - 2;
    let mut out = Vec::new();
    if let Some(exif) = &metadata.exif {
        const HEADER: &[u8] = b"Exif\0\0";
        if HEADER.len() + exif.len() <= MAX_DATA {
            segment(&mut out, 0xE1, &[HEADER, exif]);
        }
    }
    if let Some(icc) = &metadata.icc {
        const HEADER: &[u8] = b"ICC_PROFILE\0";
        let chunk = MAX_DATA - HEADER.len() - 2;
        let count = icc.len().div_ceil(chunk);
        if count < 255 {
            for (i, part) in icc.chunks(chunk).enumerate() {
                segment(&mut out, 0xE2, &[HEADER, &[i as u8 + 1, count as u8], part]);
            }
        }
    }
    out
}

/// COM segments for `comments`, to go after a JPEG's APPn segments: a PNG text under another
/// keyword than [`COMMENT`] keeps it as `keyword: text`.
pub fn jpeg_comment_segments(comments: &[Comment]) -> Vec<u8> {
    let mut out = Vec::new();
    for comment in comments {
        let mut text = Vec::new();
        if comment.keyword != COMMENT {
            text.extend_from_slice(comment.keyword.as_bytes());
            text.extend_from_slice(b": ");
        }
        text.extend_from_slice(&comment.text);
        text.truncate(65533);
        out.extend_from_slice(&[0xFF, 0xFE]);
        out.extend_from_slice(&(text.len() as u16 + 2).to_be_bytes());
        out.extend_from_slice(&text);
    }
    out
}

/// Where COM segments go in an encoded JPEG: after SOI and the APPn segments.
pub fn jpeg_comment_offset(jpeg: &[u8]) -> usize {
    let mut at = 2;
    while at + 4 <= jpeg.len() && jpeg[at] == 0xFF && (0xE0..=0xEF).contains(&jpeg[at + 1]) {
        at += 2 + u16::from_be_bytes([jpeg[at + 2], jpeg[at + 3]]) as usize;
    }
    at.min(jpeg.len())
}

/// PNG text chunks for `comments` (tEXt for Latin-1 text, iTXt for the rest), to go after the
/// IHDR chunk. A text that is neither UTF-8 nor fit for a chunk is left out.
pub fn png_text_chunks(comments: &[Comment]) -> Vec<u8> {
    use png::text_metadata::{EncodableTextChunk, ITXtChunk, TEXtChunk};
    let mut out = Vec::new();
    for comment in comments {
        let text = match std::str::from_utf8(&comment.text) {
            Ok(text) => text.to_string(),
            // A JPEG comment in another 8-bit encoding: Latin-1 is the likeliest.
            Err(_) => comment.text.iter().map(|&b| b as char).collect(),
        };
        let mut chunk = Vec::new();
        let latin1 = text.chars().all(|c| (c as u32) < 256);
        let encoded = if latin1 {
            TEXtChunk::new(comment.keyword.clone(), text).encode(&mut chunk)
        } else {
            ITXtChunk::new(comment.keyword.clone(), text).encode(&mut chunk)
        };
        if encoded.is_ok() {
            out.extend_from_slice(&chunk);
        }
    }
    out
}

/// Where text chunks go in an encoded PNG: after the signature and the IHDR chunk.
pub const PNG_TEXT_OFFSET: usize = 8 + 4 + 4 + 13 + 4;
