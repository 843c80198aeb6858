//! libjpeg-turbo's decoder and encoder behind a safe interface: the library's C source as
//! mozjpeg-sys builds it with the `cc` crate (its SIMD when `nasm` is on PATH at build time,
//! plain C otherwise), linked statically.
//!
//! This file is the one place outside the block that calls C, so it holds the worker crate's
//! `unsafe`. What it relies on, once for all of it:
//! - a `jpeg_*_struct` and its error manager live in boxes that never move while the struct
//!   exists, and the struct's `err` points at that manager;
//! - libjpeg reports a fatal error through `error_exit`, which must not return: ours unwinds
//!   (the C is compiled with `-fexceptions`, the callbacks are `C-unwind`), and every call into
//!   the library runs inside [`guarded`], which turns that unwind into an `Err`. A struct that
//!   has failed is only ever destroyed after that;
//! - a warning (`emit_message` with level -1: "Corrupt JPEG data: ...", "Premature end of JPEG
//!   file") is recorded, never printed: the caller decides what it means.

use std::ffi::{c_int, c_ulong};
use std::panic::{self, AssertUnwindSafe};

use mozjpeg_sys as ffi;

/// libjpeg's own text for a message (JMSG_LENGTH_MAX).
const MESSAGE_LEN: usize = 200;

/// A fatal libjpeg error: the file cannot be decoded (or the image encoded) at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fatal(pub String);

/// The first warning libjpeg emitted, with its code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub code: c_int,
    pub text: String,
}

impl Warning {
    /// libjpeg met the end of the data before the end of the image ("Premature end of JPEG
    /// file").
    pub fn is_truncation(&self) -> bool {
        self.code == ffi::JWRN_JPEG_EOF as c_int
    }
}

/// libjpeg's error manager followed by what our callbacks record. `#[repr(C)]` with the
/// manager first: libjpeg holds a pointer to the manager, which is a pointer to the whole.
#[repr(C)]
struct ErrorMgr {
    mgr: ffi::jpeg_error_mgr,
    warning: Option<Warning>,
}

impl ErrorMgr {
    fn new() -> Box<ErrorMgr> {
        let mut err = Box::new(ErrorMgr {
            // SAFETY: jpeg_error_mgr is a C struct of integers, pointers and optional fn
            // pointers, for all of which zero is a valid value; jpeg_std_error then fills every
            // field.
            mgr: unsafe { std::mem::zeroed() },
            warning: None,
        });
        // SAFETY: `err.mgr` is a valid, exclusively borrowed manager.
        unsafe { ffi::jpeg_std_error(&mut err.mgr) };
        err.mgr.error_exit = Some(error_exit);
        err.mgr.emit_message = Some(emit_message);
        err
    }
}

/// The text of the message libjpeg has just raised on `cinfo`.
fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
    let mut text = [0u8; MESSAGE_LEN];
    // SAFETY: `cinfo.err` points at the live manager set up by ErrorMgr::new, whose
    // `format_message` is libjpeg's own. That C function takes a plain `char *` of
    // JMSG_LENGTH_MAX bytes (the binding's `&[u8; 80]` is narrower than the C signature), so it
    // is called through a pointer type of the same ABI with a buffer of the full length.
    unsafe {
        if let Some(format) = (*cinfo.err).format_message {
            let format: unsafe extern "C-unwind" fn(*mut ffi::jpeg_common_struct, *mut u8) =
                std::mem::transmute(format);
            format(cinfo, text.as_mut_ptr());
        }
    }
    let end = text.iter().position(|&b| b == 0).unwrap_or(MESSAGE_LEN);
    String::from_utf8_lossy(&text[..end]).into_owned()
}

/// libjpeg's fatal-error hook: leaves the library by unwinding to [`guarded`].
unsafe extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
    let text = message(cinfo);
    panic::resume_unwind(Box::new(Fatal(text)));
}

/// libjpeg's message hook: keeps the first warning, drops trace messages.
unsafe extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
    if level >= 0 {
        return;
    }
    // SAFETY: `cinfo.err` is the `mgr` field, first in a live `#[repr(C)]` ErrorMgr.
    let err = unsafe { &mut *(cinfo.err as *mut ErrorMgr) };
    if err.warning.is_none() {
        let code = err.mgr.msg_code;
        err.warning = Some(Warning {
            code,
            text: message(cinfo),
        });
    }
}

/// Runs `call` (which calls into libjpeg) and turns a fatal libjpeg error into `Err`. Any other
/// panic goes on unwinding.
fn guarded<T>(call: impl FnOnce() -> T) -> Result<T, Fatal> {
    panic::catch_unwind(AssertUnwindSafe(call)).map_err(|payload| {
        match payload.downcast::<Fatal>() {
            Ok(fatal) => *fatal,
            Err(other) => panic::resume_unwind(other),
        }
    })
}

/// The colour space a JPEG stores its samples in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Gray,
    YCbCr,
    Rgb,
    Cmyk,
    Ycck,
    Other,
}

/// What a decode gives out, each sample one byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Gray,
    Rgb,
    /// As stored, for CMYK and YCCK files (libjpeg converts YCCK to CMYK).
    Cmyk,
}

impl Output {
    pub fn channels(self) -> usize {
        match self {
            Output::Gray => 1,
            Output::Rgb => 3,
            Output::Cmyk => 4,
        }
    }
}

/// A JPEG's header: what `jpeg_read_header` found, and the APP1 and APP2 segments.
#[derive(Clone, Debug)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    pub stored: Stored,
    /// The payloads of the APP1 (EXIF, XMP) and APP2 (ICC) segments, in file order.
    pub segments: Vec<(u8, Vec<u8>)>,
}

/// One JPEG file's bytes, decoded once: [`Decompressor::new`] reads the header, then
/// [`Decompressor::decode`] the pixels.
pub struct Decompressor {
    // Field order is drop order: the struct, then the bytes and the manager it points at.
    cinfo: Box<ffi::jpeg_decompress_struct>,
    data: Vec<u8>,
    err: Box<ErrorMgr>,
    header: Header,
    /// A fatal error was raised: the struct may only be destroyed.
    failed: bool,
}

impl Decompressor {
    /// Reads the header of the JPEG in `data`.
    pub fn new(data: Vec<u8>) -> Result<Decompressor, Fatal> {
        let mut err = ErrorMgr::new();
        // SAFETY: all-zero is the state libjpeg expects before jpeg_create_decompress (a null
        // `mem` also makes jpeg_destroy_decompress a no-op should creation fail).
        let mut cinfo: Box<ffi::jpeg_decompress_struct> = Box::new(unsafe { std::mem::zeroed() });
        cinfo.common.err = &mut err.mgr;
        let mut this = Decompressor {
            cinfo,
            data,
            err,
            header: Header {
                width: 0,
                height: 0,
                stored: Stored::Other,
                segments: Vec::new(),
            },
            failed: false,
        };
        let cinfo = &mut *this.cinfo;
        let (data, len) = (this.data.as_ptr(), this.data.len() as c_ulong);
        let read = guarded(|| {
            // SAFETY: `cinfo` is boxed and zeroed with its error manager set; `data` lives in
            // `this.data`, which is never changed and outlives the struct (drop order above).
            unsafe {
                ffi::jpeg_create_decompress(cinfo);
                ffi::jpeg_mem_src(cinfo, data, len);
                ffi::jpeg_save_markers(cinfo, 0xE1, 0xFFFF);
                ffi::jpeg_save_markers(cinfo, 0xE2, 0xFFFF);
                ffi::jpeg_read_header(cinfo, 1);
            }
        });
        if let Err(fatal) = read {
            this.failed = true;
            return Err(fatal);
        }
        let cinfo = &*this.cinfo;
        let mut segments = Vec::new();
        let mut marker = cinfo.marker_list;
        while !marker.is_null() {
            // SAFETY: the saved-marker list is libjpeg's, alive until the struct is destroyed,
            // each node's `data` holding `data_length` bytes.
            let node = unsafe { &*marker };
            // SAFETY: as above: `data` points at `data_length` bytes libjpeg owns until the
            // struct is destroyed, and they are copied out before that.
            let payload =
                unsafe { std::slice::from_raw_parts(node.data, node.data_length as usize) };
            segments.push((node.marker, payload.to_vec()));
            marker = node.next;
        }
        use ffi::J_COLOR_SPACE::*;
        this.header = Header {
            width: cinfo.image_width,
            height: cinfo.image_height,
            stored: match cinfo.jpeg_color_space {
                JCS_GRAYSCALE => Stored::Gray,
                JCS_YCbCr => Stored::YCbCr,
                JCS_RGB => Stored::Rgb,
                JCS_CMYK => Stored::Cmyk,
                JCS_YCCK => Stored::Ycck,
                _ => Stored::Other,
            },
            segments,
        };
        Ok(this)
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The first warning libjpeg has emitted on this file so far (reading the header included).
    pub fn warning(&self) -> Option<&Warning> {
        self.err.warning.as_ref()
    }

    /// The `(width, height)` a decode as `output` at 1/`denom` of the size gives.
    pub fn output_size(&mut self, output: Output, denom: u32) -> Result<(u32, u32), Fatal> {
        self.set_output(output, denom);
        let cinfo = &mut *self.cinfo;
        let sized = guarded(|| {
            // SAFETY: the header has been read and no decode started (set_output's contract).
            unsafe { ffi::jpeg_calc_output_dimensions(cinfo) };
            (cinfo.output_width, cinfo.output_height)
        });
        self.failed |= sized.is_err();
        sized
    }

    fn set_output(&mut self, output: Output, denom: u32) {
        use ffi::J_COLOR_SPACE::*;
        self.cinfo.out_color_space = match output {
            Output::Gray => JCS_GRAYSCALE,
            Output::Rgb => JCS_RGB,
            Output::Cmyk => JCS_CMYK,
        };
        self.cinfo.scale_num = 1;
        self.cinfo.scale_denom = denom;
    }

    /// Decodes the whole image as `output`, at 1/`denom` of its size (1, 2, 4 or 8), into `out`,
    /// which must hold exactly the output's `width x height x channels` bytes, then reads the
    /// file on to its end marker. A warning on the way does not stop the decode: it is
    /// [`Decompressor::warning`] afterwards.
    pub fn decode(mut self, output: Output, denom: u32, out: &mut [u8]) -> Result<Self, Fatal> {
        if self.failed {
            return Err(Fatal("decoder already failed".into()));
        }
        let (width, height) = self.output_size(output, denom)?;
        let row = width as usize * output.channels();
        if out.len() != row * height as usize {
            return Err(Fatal(format!(
                "buffer of {} bytes for {width}x{height}x{} samples",
                out.len(),
                output.channels()
            )));
        }
        let cinfo = &mut *self.cinfo;
        let decoded = guarded(|| {
            // SAFETY: output settings are made and the header read. The row pointers handed to
            // jpeg_read_scanlines point at whole rows of `out` (`row` bytes each, checked above
            // to hold `output_height` rows), below `output_height`.
            unsafe {
                ffi::jpeg_start_decompress(cinfo);
                debug_assert_eq!(cinfo.output_components as usize, output.channels());
                while cinfo.output_scanline < cinfo.output_height {
                    let first = cinfo.output_scanline as usize;
                    let count = (cinfo.output_height as usize - first).min(16);
                    let mut rows = [std::ptr::null_mut::<u8>(); 16];
                    for (i, r) in rows.iter_mut().take(count).enumerate() {
                        *r = out.as_mut_ptr().add((first + i) * row);
                    }
                    ffi::jpeg_read_scanlines(cinfo, rows.as_mut_ptr(), count as u32);
                }
                ffi::jpeg_finish_decompress(cinfo);
            }
        });
        match decoded {
            Ok(()) => Ok(self),
            Err(fatal) => {
                self.failed = true;
                Err(fatal)
            }
        }
    }
}

impl Drop for Decompressor {
    fn drop(&mut self) {
        let cinfo = &mut *self.cinfo;
        // SAFETY: destroying is allowed in any state, after an error included; a struct whose
        // creation failed has a null `mem` and is left alone by libjpeg.
        let _ = guarded(|| unsafe { ffi::jpeg_destroy_decompress(cinfo) });
    }
}

/// How [`compress`] encodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoding {
    /// 1..=100, libjpeg's scale.
    pub quality: u8,
    /// Chroma halved both ways (4:2:0); whole (4:4:4) when false. Colour only.
    pub subsample: bool,
}

/// libjpeg's destination manager over a `Vec`: libjpeg writes into the vector's spare capacity.
/// `#[repr(C)]` with the manager first, as for [`ErrorMgr`].
#[repr(C)]
struct VecDest {
    mgr: ffi::jpeg_destination_mgr,
    out: Vec<u8>,
    /// The length of the spare capacity last handed to libjpeg.
    offered: usize,
}

impl VecDest {
    /// The destination behind `cinfo.dest`, whose spare capacity is handed to libjpeg.
    ///
    /// # Safety
    /// `cinfo.dest` must be the `mgr` field of a live VecDest (as [`compress`] sets it).
    unsafe fn of(cinfo: &mut ffi::jpeg_compress_struct) -> &mut VecDest {
        // SAFETY: the caller's precondition.
        unsafe { &mut *(cinfo.dest as *mut VecDest) }
    }

    /// Makes at least 64 KiB of spare capacity and hands all of it to libjpeg.
    fn offer(&mut self) {
        self.out.reserve(64 << 10);
        let spare = self.out.spare_capacity_mut();
        self.offered = spare.len();
        self.mgr.free_in_buffer = spare.len();
        self.mgr.next_output_byte = spare.as_mut_ptr().cast();
    }

    /// Counts the first `written` bytes of the spare capacity offered as part of the vector.
    ///
    /// # Safety
    /// libjpeg must have written those bytes.
    unsafe fn keep(&mut self, written: usize) {
        debug_assert!(written <= self.offered);
        // SAFETY: the caller's precondition; `written` is within the spare capacity offered.
        unsafe { self.out.set_len(self.out.len() + written) };
        self.offered = 0;
    }
}

unsafe extern "C-unwind" fn init_destination(cinfo: &mut ffi::jpeg_compress_struct) {
    // SAFETY: libjpeg calls this on the struct whose `dest` compress set to a live VecDest.
    unsafe { VecDest::of(cinfo) }.offer();
}

/// Called when libjpeg has filled the whole buffer offered: libjpeg's contract is that the
/// whole buffer counts, whatever `free_in_buffer` says (its Huffman encoder keeps its position
/// in locals and does not update the field before this call).
unsafe extern "C-unwind" fn empty_output_buffer(cinfo: &mut ffi::jpeg_compress_struct) -> c_int {
    // SAFETY: as in init_destination.
    let dest = unsafe { VecDest::of(cinfo) };
    let offered = dest.offered;
    // SAFETY: libjpeg calls this with the whole buffer offered written.
    unsafe { dest.keep(offered) };
    dest.offer();
    1
}

/// Called once at the end: here `free_in_buffer` is up to date.
unsafe extern "C-unwind" fn term_destination(cinfo: &mut ffi::jpeg_compress_struct) {
    // SAFETY: as in init_destination.
    let dest = unsafe { VecDest::of(cinfo) };
    let written = dest.offered - dest.mgr.free_in_buffer;
    // SAFETY: libjpeg wrote all but the last `free_in_buffer` bytes of what was offered.
    unsafe { dest.keep(written) };
}

/// Encodes `samples` (`width x height`, 1 channel gray or 3 RGB) as a baseline JPEG with
/// libjpeg-turbo's defaults (JFIF header, standard tables scaled to `quality`, Huffman tables
/// not optimised) but its floating-point forward DCT: what `cjpeg -dct float` writes. The float
/// DCT is libjpeg's most accurate, and built without SIMD (no nasm) it is also the fastest, as
/// its quantisation is a multiply the C compiler vectorises where the integer one branches on
/// every coefficient's sign: the standard job (`grayscale,blur:2`, JPEG q90) took 0.64 s of CPU
/// against 1.04 with the default integer DCT, on 30 photos of 1920x1080 (`/usr/bin/time`).
pub fn compress(
    samples: &[u8],
    (width, height): (u32, u32),
    channels: usize,
    encoding: Encoding,
) -> Result<Vec<u8>, Fatal> {
    let row = width as usize * channels;
    if !matches!(channels, 1 | 3) || samples.len() != row * height as usize || row == 0 {
        return Err(Fatal(format!(
            "{} bytes are not {width}x{height}x{channels} samples",
            samples.len()
        )));
    }
    let mut err = ErrorMgr::new();
    let mut dest = Box::new(VecDest {
        // SAFETY: a C struct of a pointer, a size and optional fn pointers: zero is valid.
        mgr: unsafe { std::mem::zeroed() },
        out: Vec::new(),
        offered: 0,
    });
    dest.mgr.init_destination = Some(init_destination);
    dest.mgr.empty_output_buffer = Some(empty_output_buffer);
    dest.mgr.term_destination = Some(term_destination);
    // SAFETY: as in Decompressor::new.
    let mut cinfo: Box<ffi::jpeg_compress_struct> = Box::new(unsafe { std::mem::zeroed() });
    cinfo.common.err = &mut err.mgr;
    let cinfo_ref = &mut *cinfo;
    let dest_mgr: *mut ffi::jpeg_destination_mgr = &mut dest.mgr;
    let encoded = guarded(|| {
        // SAFETY: `cinfo`, its error manager and its destination are boxed and outlive every
        // call here (destroyed below). Rows handed to jpeg_write_scanlines are whole rows of
        // `samples` (its length checked above), below `height`.
        unsafe {
            use ffi::J_COLOR_SPACE::*;
            ffi::jpeg_create_compress(cinfo_ref);
            cinfo_ref.dest = dest_mgr;
            cinfo_ref.image_width = width;
            cinfo_ref.image_height = height;
            cinfo_ref.input_components = channels as c_int;
            cinfo_ref.in_color_space = if channels == 1 {
                JCS_GRAYSCALE
            } else {
                JCS_RGB
            };
            ffi::jpeg_c_set_int_param(
                cinfo_ref,
                ffi::J_INT_PARAM::JINT_COMPRESS_PROFILE,
                ffi::JINT_COMPRESS_PROFILE_VALUE::JCP_FASTEST as c_int,
            );
            ffi::jpeg_set_defaults(cinfo_ref);
            ffi::jpeg_set_quality(cinfo_ref, encoding.quality.clamp(1, 100) as c_int, 1);
            cinfo_ref.dct_method = ffi::J_DCT_METHOD::JDCT_FLOAT;
            if channels == 3 {
                let factor = if encoding.subsample { 2 } else { 1 };
                let luma = &mut *cinfo_ref.comp_info;
                luma.h_samp_factor = factor;
                luma.v_samp_factor = factor;
            }
            ffi::jpeg_start_compress(cinfo_ref, 1);
            while cinfo_ref.next_scanline < height {
                let first = cinfo_ref.next_scanline as usize;
                let count = (height as usize - first).min(16);
                let mut rows = [std::ptr::null::<u8>(); 16];
                for (i, r) in rows.iter_mut().take(count).enumerate() {
                    *r = samples.as_ptr().add((first + i) * row);
                }
                ffi::jpeg_write_scanlines(cinfo_ref, rows.as_ptr(), count as u32);
            }
            ffi::jpeg_finish_compress(cinfo_ref);
        }
    });
    let cinfo_ref = &mut *cinfo;
    // SAFETY: destroying is allowed in any state, after an error included.
    let _ = guarded(|| unsafe { ffi::jpeg_destroy_compress(cinfo_ref) });
    encoded.map(|()| std::mem::take(&mut dest.out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        let mse: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
            .sum::<f64>()
            / a.len() as f64;
        10.0 * (255.0f64.powi(2) / mse).log10()
    }

    /// What the encoder writes decodes back to the pixels it was given, within what the quality
    /// allows, with no warning: a photo, colour 4:4:4 and 4:2:0 and gray, at qualities whose
    /// output overflows the first buffer offered (libjpeg's Huffman encoder reports a full
    /// buffer without updating `free_in_buffer`: counting that field there lost data).
    #[test]
    fn an_encoded_photo_decodes_back_close_to_its_pixels() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/coffee.png");
        let photo = image::open(path).unwrap().to_rgb8();
        let (w, h) = photo.dimensions();
        let gray = image::DynamicImage::ImageRgb8(photo.clone()).to_luma8();
        for (samples, channels, output, quality, subsample, floor) in [
            (gray.as_raw(), 1, Output::Gray, 95, false, 40.0),
            (gray.as_raw(), 1, Output::Gray, 100, false, 48.0),
            (photo.as_raw(), 3, Output::Rgb, 95, false, 38.0),
            (photo.as_raw(), 3, Output::Rgb, 75, true, 30.0),
        ] {
            let encoding = Encoding { quality, subsample };
            let jpeg = compress(samples, (w, h), channels, encoding).unwrap();
            let mut back = vec![0u8; samples.len()];
            let decoder = Decompressor::new(jpeg).unwrap();
            let decoder = decoder.decode(output, 1, &mut back).unwrap();
            assert_eq!(decoder.warning(), None);
            let db = psnr(samples, &back);
            assert!(db > floor, "{channels} channels q{quality}: {db:.1} dB");
        }
    }
}
