//! GIF: the `gif` crate, first frame only, line by line into the downscaler.
//!
//! The canvas is the logical screen grown to hold the first frame; what the frame does not
//! cover, and its transparent pixels, are white.

use super::resample::{Order, Resampler, WHITE};
use super::{check_decode_bytes, invalid, Decoded, ImageError, Limits, Plan};
use gif::{ColorOutput, DecodeOptions, MemoryLimit};
use shared::image::format::ImageType;
use shared::image::header::Details;
use std::io::Read;
use std::num::NonZeroU64;

pub(super) fn decode<R: Read>(
    r: R,
    details: Option<Details>,
    limits: &Limits,
) -> Result<Decoded, ImageError> {
    let err = |e| invalid("GIF", e);
    let mut options = DecodeOptions::new();
    options.set_color_output(ColorOutput::Indexed);
    if let Some(bytes) = NonZeroU64::new(limits.max_decode_bytes) {
        options.set_memory_limit(MemoryLimit::Bytes(bytes));
    }
    let mut decoder = options.read_info(r).map_err(err)?;
    let (screen_w, screen_h) = (u32::from(decoder.width()), u32::from(decoder.height()));
    let frame = decoder
        .next_frame_info()
        .map_err(err)?
        .ok_or_else(|| ImageError::Invalid("GIF: no image".into()))?;
    let (left, top) = (u32::from(frame.left), u32::from(frame.top));
    let (frame_w, frame_h) = (u32::from(frame.width), u32::from(frame.height));
    let (interlaced, transparent) = (frame.interlaced, frame.transparent);
    let (width, height) = (screen_w.max(left + frame_w), screen_h.max(top + frame_h));
    // A GIF is always re-encoded, so the file length does not matter.
    let plan = Plan::new(ImageType::Gif, width, height, details, u64::MAX, limits)?;

    let palette: Vec<[u8; 3]> = decoder
        .palette()
        .map_err(err)?
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    let color = |i: u8| match palette.get(usize::from(i)) {
        Some(&c) if Some(i) != transparent => c,
        _ => WHITE,
    };
    // Interlaced frames come in four passes: sums for the whole output, and the canvas around
    // the frame added at the end. Others come top to bottom: whole canvas rows.
    let order = if interlaced {
        Order::Any
    } else {
        Order::TopDown
    };
    let resampler = Resampler::bytes(plan.out_w, plan.out_h, order);
    check_decode_bytes("GIF", &plan.info, resampler + u64::from(frame_w), limits)?;
    let mut out = Resampler::new(width, height, plan.out_w, plan.out_h, order)?;
    let white = |n: u32| std::iter::repeat_n(WHITE, n as usize);
    let frame_rows = if frame_w > 0 { frame_h } else { 0 };
    if order == Order::TopDown {
        for y in 0..top {
            out.push_row(y, 0, 1, white(width))?;
        }
    }
    let mut line = vec![0u8; frame_w as usize];
    let mut ended = false;
    for i in 0..frame_rows {
        // Many encoders write a little too little data: the rest stays transparent.
        ended = ended || !decoder.fill_buffer(&mut line).map_err(err)?;
        let pixels = line.iter().map(|&i| if ended { WHITE } else { color(i) });
        if interlaced {
            out.push_row(top + interlaced_row(i, frame_h), left, 1, pixels)?;
        } else {
            let right = white(width - left - frame_w);
            out.push_row(top + i, 0, 1, white(left).chain(pixels).chain(right))?;
        }
    }
    if order == Order::TopDown {
        for y in top + frame_rows..height {
            out.push_row(y, 0, 1, white(width))?;
        }
    } else {
        out.fill_outside((left, top, left + frame_w, top + frame_rows), WHITE);
    }
    Ok((plan.info, Some(out.finish())))
}

/// The image row of the `i`th line of an interlaced frame: rows 0, 8, 16… then 4, 12…
/// then 2, 6… then 1, 3…
fn interlaced_row(i: u32, height: u32) -> u32 {
    let mut i = i;
    for (start, step) in [(0, 8), (4, 8), (2, 4), (1, 2)] {
        let rows = height.saturating_sub(start).div_ceil(step);
        if i < rows {
            return start + i * step;
        }
        i -= rows;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::interlaced_row;

    #[test]
    fn interlaced_rows_cover_every_row_once() {
        for h in 1..40 {
            let mut rows: Vec<u32> = (0..h).map(|i| interlaced_row(i, h)).collect();
            rows.sort();
            assert_eq!(rows, (0..h).collect::<Vec<_>>(), "height {h}");
        }
        assert_eq!(
            (0..10).map(|i| interlaced_row(i, 10)).collect::<Vec<_>>(),
            [0, 8, 4, 2, 6, 1, 3, 5, 7, 9]
        );
    }
}
