//! PNG: the `png` crate, row by row into the downscaler (Adam7 passes too).

use super::resample::{grey, grey_alpha, rgba, Order, Resampler};
use super::{check_decode_bytes, invalid, Decoded, ImageError, Limits, Plan};
use png::{ColorType, Transformations};
use shared::image::format::ImageType;
use shared::image::header::Details;
use std::io::{BufRead, Seek};

/// Adam7 passes: first column, column step, first row, row step.
pub(crate) const ADAM7: [(u32, u32, u32, u32); 7] = [
    (0, 8, 0, 8),
    (4, 8, 0, 8),
    (0, 4, 4, 8),
    (2, 4, 0, 4),
    (0, 2, 2, 4),
    (1, 2, 0, 2),
    (0, 1, 1, 2),
];

pub(super) fn decode<R: BufRead + Seek>(
    r: R,
    details: Option<Details>,
    len: u64,
    limits: &Limits,
) -> Result<Decoded, ImageError> {
    let err = |e| invalid("PNG", e);
    let budget = usize::try_from(limits.max_decode_bytes).unwrap_or(usize::MAX);
    let mut decoder = png::Decoder::new_with_limits(r, png::Limits { bytes: budget });
    // 8 bits a sample; palettes and low bit depths expanded, tRNS as alpha.
    decoder.set_transformations(Transformations::normalize_to_color8());
    decoder.set_ignore_text_chunk(true);
    decoder.set_ignore_iccp_chunk(true);
    let header = decoder.read_header_info().map_err(err)?;
    let (width, height, interlaced) = (header.width, header.height, header.interlaced);
    let plan = Plan::new(ImageType::Png, width, height, details, len, limits)?;
    // Adam7 passes come one after the other: sums for every output pixel.
    let order = if interlaced {
        Order::Any
    } else {
        Order::TopDown
    };
    // The decoder keeps two raw rows (up to 8 bytes a pixel) and one 8-bit RGBA row.
    let rows = u64::from(width) * (2 * 8 + 4);
    let resampler = Resampler::bytes(plan.out_w, plan.out_h, order);
    check_decode_bytes("PNG", &plan.info, rows + resampler, limits)?;

    let mut reader = decoder.read_info().map_err(err)?;
    let (color, _) = reader.output_color_type();
    let mut out = match plan.keep {
        true => None,
        false => Some(Resampler::new(
            width, height, plan.out_w, plan.out_h, order,
        )?),
    };

    // Where each row goes: (first row, row step, rows, first column, column step).
    let passes: Vec<(u32, u32, u32, u32, u32)> = if interlaced {
        ADAM7
            .iter()
            .filter(|&&(x0, _, y0, _)| x0 < width && y0 < height)
            .map(|&(x0, dx, y0, dy)| (y0, dy, (height - y0).div_ceil(dy), x0, dx))
            .collect()
    } else {
        vec![(0, 1, height, 0, 1)]
    };
    for (y0, dy, count, x0, dx) in passes {
        for i in 0..count {
            let row = reader
                .next_row()
                .map_err(err)?
                .ok_or_else(|| ImageError::Invalid("PNG: fewer rows than its height".into()))?;
            let Some(out) = out.as_mut() else { continue };
            let (y, data) = (y0 + i * dy, row.data());
            match color {
                ColorType::Grayscale => out.push_row(y, x0, dx, data.iter().map(|&v| grey(v))),
                ColorType::GrayscaleAlpha => {
                    out.push_row(y, x0, dx, data.chunks_exact(2).map(grey_alpha))
                }
                ColorType::Rgb => {
                    out.push_row(y, x0, dx, data.chunks_exact(3).map(|p| [p[0], p[1], p[2]]))
                }
                ColorType::Rgba => out.push_row(y, x0, dx, data.chunks_exact(4).map(rgba)),
                ColorType::Indexed => {
                    Err(ImageError::Invalid("PNG: palette was not expanded".into()))
                }
            }?;
        }
    }
    // The chunks after the image data, up to IEND, must be whole too.
    reader.finish().map_err(err)?;
    Ok((plan.info, out.map(Resampler::finish)))
}
