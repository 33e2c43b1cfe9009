//! WebP: `image-webp`.
//!
//! Opaque lossy images (the usual photo) go through its VP8 decoder alone, which keeps the
//! YUV 4:2:0 planes (1.5 bytes a pixel) and the compressed data; the planes are converted to
//! RGB row by row into the downscaler. Everything else (alpha, lossless, animation) goes
//! through `WebPDecoder::read_image`, which needs a whole RGB(A) frame and, inside, up to one
//! more: that memory is budgeted before decoding.

use super::resample::{rgba, zeroed, Order, Resampler};
use super::{check_decode_bytes, invalid, Decoded, ImageError, Limits, Plan};
use image_webp::vp8::Vp8Decoder;
use image_webp::WebPDecoder;
use shared::image::format::ImageType;
use shared::image::header::Details;
use std::io::{BufRead, Read, Seek, SeekFrom};

pub(super) fn decode<R: BufRead + Seek>(
    mut r: R,
    details: Option<Details>,
    len: u64,
    limits: &Limits,
) -> Result<Decoded, ImageError> {
    let err = |e| invalid("WebP", e);
    let mut decoder = WebPDecoder::new(&mut r).map_err(err)?;
    let (width, height) = decoder.dimensions();
    let plan = Plan::new(ImageType::Webp, width, height, details, len, limits)?;
    let pixels = u64::from(width) * u64::from(height);
    let compressed = len.min(u64::from(u32::MAX));
    let resampler = Resampler::bytes(plan.out_w, plan.out_h, Order::TopDown);
    let (alpha, animated, lossy) = (
        decoder.has_alpha(),
        decoder.is_animated(),
        decoder.is_lossy(),
    );
    if lossy && !alpha && !animated {
        drop(decoder);
        // YUV planes padded to 16 x 16 macroblocks, plus the compressed partitions (read into
        // a growing buffer: up to twice their size).
        let planes = u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16)) * 384;
        check_decode_bytes(
            "lossy WebP",
            &plan.info,
            planes + 2 * compressed + resampler,
            limits,
        )?;
        return decode_vp8(&mut r, plan);
    }

    let bytes_per_pixel = if alpha { 4 } else { 3 };
    // Besides our buffer: an RGBA canvas and frame for animations, an RGBA frame for
    // lossless images without alpha, the planes and compressed data for lossy ones.
    let inside = if animated {
        pixels * 8
    } else if lossy {
        pixels * 3 / 2 + 2 * compressed
    } else if alpha {
        0
    } else {
        pixels * 4
    };
    check_decode_bytes(
        "WebP",
        &plan.info,
        pixels * bytes_per_pixel + inside + resampler,
        limits,
    )?;
    decoder.set_memory_limit(usize::try_from(limits.max_decode_bytes).unwrap_or(usize::MAX));
    let mut buf = zeroed::<u8>((pixels * bytes_per_pixel) as usize)?;
    decoder.read_image(&mut buf).map_err(err)?;
    let mut out = Resampler::new(width, height, plan.out_w, plan.out_h, Order::TopDown)?;
    let row_len = width as usize * bytes_per_pixel as usize;
    for (y, row) in (0..height).zip(buf.chunks_exact(row_len)) {
        if alpha {
            out.push_row(y, 0, 1, row.chunks_exact(4).map(rgba))?;
        } else {
            out.push_row(y, 0, 1, row.chunks_exact(3).map(|p| [p[0], p[1], p[2]]))?;
        }
    }
    Ok((plan.info, Some(out.finish())))
}

/// Decodes the `VP8 ` chunk alone and converts its planes row by row.
fn decode_vp8<R: Read + Seek>(mut r: R, plan: Plan) -> Result<Decoded, ImageError> {
    let (start, size) = find_chunk(&mut r, *b"VP8 ")?;
    r.seek(SeekFrom::Start(start))
        .map_err(|e| invalid("WebP", e))?;
    // `Take<&mut R>`, the type `WebPDecoder` gives its own VP8 decoder: one copy in the binary.
    let frame = Vp8Decoder::decode_frame((&mut r).take(size)).map_err(|e| invalid("WebP", e))?;
    let (width, height) = (u32::from(frame.width), u32::from(frame.height));
    if (width, height) != (plan.info.width, plan.info.height) {
        return Err(ImageError::Invalid(
            "WebP: the VP8 frame and the header disagree on the size".into(),
        ));
    }
    let y_stride = width.div_ceil(16) as usize * 16;
    let c_stride = y_stride / 2;
    let rows_needed = (height as usize - 1) * y_stride + width as usize;
    let chroma_needed = (height as usize - 1) / 2 * c_stride + width.div_ceil(2) as usize;
    if frame.ybuf.len() < rows_needed
        || frame.ubuf.len() < chroma_needed
        || frame.vbuf.len() < chroma_needed
    {
        return Err(ImageError::Invalid("WebP: VP8 planes are too small".into()));
    }
    let mut out = Resampler::new(width, height, plan.out_w, plan.out_h, Order::TopDown)?;
    for y in 0..height as usize {
        let luma = &frame.ybuf[y * y_stride..][..width as usize];
        let u = &frame.ubuf[y / 2 * c_stride..];
        let v = &frame.vbuf[y / 2 * c_stride..];
        let pixels = luma
            .iter()
            .enumerate()
            .map(|(x, &l)| yuv_to_rgb(l, u[x / 2], v[x / 2]));
        out.push_row(y as u32, 0, 1, pixels)?;
    }
    Ok((plan.info, Some(out.finish())))
}

/// The data offset and size of the first RIFF chunk named `name` (at most 64 chunks in).
fn find_chunk<R: Read + Seek>(r: &mut R, name: [u8; 4]) -> Result<(u64, u64), ImageError> {
    let err = |e| invalid("WebP", e);
    let mut pos = 12;
    for _ in 0..64 {
        r.seek(SeekFrom::Start(pos)).map_err(err)?;
        let mut header = [0; 8];
        r.read_exact(&mut header).map_err(err)?;
        let size = u64::from(u32::from_le_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        if header[..4] == name {
            return Ok((pos + 8, size));
        }
        pos += 8 + size + (size & 1);
    }
    Err(ImageError::Invalid("WebP: no VP8 chunk".into()))
}

/// libwebp's YUV to RGB (BT.601, limited range, 14-bit fixed point), as `image-webp` does it.
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    fn mulhi(v: u8, coeff: u32) -> i32 {
        ((u32::from(v) * coeff) >> 8) as i32
    }
    fn clip(v: i32) -> u8 {
        (v >> 6).clamp(0, 255) as u8
    }
    let luma = mulhi(y, 19077);
    [
        clip(luma + mulhi(v, 26149) - 14234),
        clip(luma - mulhi(u, 6419) - mulhi(v, 13320) + 8708),
        clip(luma + mulhi(u, 33050) - 17685),
    ]
}
