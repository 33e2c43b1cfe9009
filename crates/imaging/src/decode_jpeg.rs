//! JPEG: `jpeg-decoder`, scaling inside the IDCT so that large photos are never decoded at
//! full size.

use super::resample::{grey, Order, Resampler};
use super::{check_decode_bytes, invalid, Decoded, ImageError, Limits, Plan};
use jpeg_decoder::{CodingProcess, Decoder, PixelFormat};
use shared::image::format::ImageType;
use shared::image::header::Details;
use std::io::Read;

/// IDCT reductions `jpeg-decoder` offers, largest first.
const REDUCTIONS: [u32; 4] = [8, 4, 2, 1];

pub(super) fn decode<R: Read>(
    r: R,
    details: Option<Details>,
    len: u64,
    limits: &Limits,
) -> Result<Decoded, ImageError> {
    let err = |e| invalid("JPEG", e);
    let mut decoder = Decoder::new(r);
    decoder.read_info().map_err(err)?;
    let info = decoder
        .info()
        .ok_or_else(|| ImageError::Invalid("JPEG: no frame header".into()))?;
    let (width, height) = (u32::from(info.width), u32::from(info.height));
    let plan = Plan::new(ImageType::Jpeg, width, height, details, len, limits)?;
    let components: u64 = match info.pixel_format {
        PixelFormat::L8 | PixelFormat::L16 => 1,
        PixelFormat::RGB24 => 3,
        PixelFormat::CMYK32 => 4,
    };
    // Progressive: every coefficient of the image is kept until the last scan.
    let coefficients = match info.coding_process {
        // Neither browsers nor common image libraries decode lossless JPEG.
        CodingProcess::Lossless => {
            return Err(ImageError::Invalid(
                "JPEG: lossless JPEG is not supported".into(),
            ))
        }
        CodingProcess::DctProgressive => match details.and_then(|d| d.jpeg) {
            Some(frame) => frame.coefficient_bytes(width, height),
            None => u64::from(width.div_ceil(8)) * u64::from(height.div_ceil(8)) * 128 * components,
        },
        CodingProcess::DctSequential => 0,
    };
    let what = match coefficients {
        0 => "JPEG",
        _ => "progressive JPEG",
    };

    // The largest reduction that keeps the output size; 1/8 when only checking the data.
    let reduction = if plan.keep {
        8
    } else {
        REDUCTIONS
            .into_iter()
            .find(|&d| width.div_ceil(d) >= plan.out_w && height.div_ceil(d) >= plan.out_h)
            .unwrap_or(1)
    };
    let (w, h) = decoder
        .scale(
            width.div_ceil(reduction) as u16,
            height.div_ceil(reduction) as u16,
        )
        .map_err(err)?;
    let (w, h) = (u32::from(w), u32::from(h));
    // Component planes plus the interleaved output, both at the reduced size, and the
    // downscaler.
    let scaled = u64::from(w) * u64::from(h) * components * 2;
    let (out_w, out_h) = (plan.out_w.min(w), plan.out_h.min(h));
    let resampler = Resampler::bytes(out_w, out_h, Order::TopDown);
    check_decode_bytes(what, &plan.info, coefficients + scaled + resampler, limits)?;
    decoder.set_max_decoding_buffer_size(
        usize::try_from(limits.max_decode_bytes).unwrap_or(usize::MAX),
    );
    let pixels = decoder.decode().map_err(err)?;
    if pixels.len() as u64 != u64::from(w) * u64::from(h) * components {
        return Err(ImageError::Invalid(
            "JPEG: the decoder returned an unexpected amount of data".into(),
        ));
    }
    if plan.keep {
        return Ok((plan.info, None));
    }

    let mut out = Resampler::new(w, h, out_w, out_h, Order::TopDown)?;
    let row_len = w as usize * components as usize;
    for (y, row) in (0..h).zip(pixels.chunks_exact(row_len)) {
        match components {
            1 => out.push_row(y, 0, 1, row.iter().map(|&v| grey(v)))?,
            3 => out.push_row(y, 0, 1, row.chunks_exact(3).map(|p| [p[0], p[1], p[2]]))?,
            _ => out.push_row(y, 0, 1, row.chunks_exact(4).map(cmyk))?,
        }
    }
    Ok((plan.info, Some(out.finish())))
}

/// `jpeg-decoder`'s CMYK (ink amounts, Adobe inversion already undone) as RGB.
fn cmyk(p: &[u8]) -> [u8; 3] {
    let k = 255 - u32::from(p[3]);
    let c = |v: u8| ((255 - u32::from(v)) * k / 255) as u8;
    [c(p[0]), c(p[1]), c(p[2])]
}
