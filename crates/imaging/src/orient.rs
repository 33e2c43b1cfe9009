//! The EXIF orientation, applied to the downscaled image: the turn works on the output (at most
//! `edge` × [`MAX_OUTPUT_ASPECT`](crate::MAX_OUTPUT_ASPECT) `edge` pixels), never on the
//! decoded source, so the decoders' memory bounds do not change.

use super::resample::{zeroed, Rgb};
use super::ImageError;
use shared::image::orientation;
use std::io::{Read, Seek, SeekFrom};

/// The most of a WebP `EXIF` chunk read: the orientation is in IFD0, near its start.
const WEBP_EXIF_READ: u64 = 64 << 10;

/// The most RIFF chunks walked looking for `EXIF`.
const WEBP_MAX_CHUNKS: usize = 64;

/// `image` shown upright: `orientation` 1 to 8 as EXIF defines it (other values: unchanged).
/// Orientations 5 to 8 swap width and height.
pub(crate) fn apply(image: Rgb, orientation: u8) -> Result<Rgb, ImageError> {
    if !(2..=8).contains(&orientation) {
        return Ok(image);
    }
    let (w, h) = (image.width as usize, image.height as usize);
    let (out_w, out_h) = if orientation::transposes(orientation) {
        (h, w)
    } else {
        (w, h)
    };
    let mut data = zeroed::<u8>(w * h * 3)?;
    for y in 0..out_h {
        for x in 0..out_w {
            // The stored pixel that shows at (x, y).
            let (sx, sy) = match orientation {
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                _ => (w - 1 - y, x), // 8
            };
            let from = (sy * w + sx) * 3;
            let to = (y * out_w + x) * 3;
            data[to..to + 3].copy_from_slice(&image.data[from..from + 3]);
        }
    }
    Ok(Rgb {
        width: out_w as u32,
        height: out_h as u32,
        data,
    })
}

/// The orientation in a WebP file's `EXIF` chunk, when its `VP8X` header says it has one; the
/// reader is left anywhere (the caller rewinds). Read failures and malformed chunks give
/// `None`: the image is then shown as stored, and its decoder reports any real damage.
pub(crate) fn webp<R: Read + Seek + ?Sized>(r: &mut R) -> Option<u8> {
    let mut head = [0; 21];
    r.seek(SeekFrom::Start(0)).ok()?;
    r.read_exact(&mut head).ok()?;
    // VP8X first, with the EXIF flag (bit 3 of the flags byte).
    if &head[12..16] != b"VP8X" || head[20] & 0x08 == 0 {
        return None;
    }
    let mut pos = 12u64;
    for _ in 0..WEBP_MAX_CHUNKS {
        r.seek(SeekFrom::Start(pos)).ok()?;
        let mut header = [0; 8];
        r.read_exact(&mut header).ok()?;
        let size = u64::from(u32::from_le_bytes([
            header[4], header[5], header[6], header[7],
        ]));
        if &header[..4] == b"EXIF" {
            let mut payload = Vec::new();
            (&mut *r)
                .take(size.min(WEBP_EXIF_READ))
                .read_to_end(&mut payload)
                .ok()?;
            return orientation::from_exif(&payload);
        }
        pos += 8 + size + (size & 1);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3 × 2 image whose pixel values are their stored index.
    fn numbered() -> Rgb {
        Rgb {
            width: 3,
            height: 2,
            data: (0..6u8).flat_map(|i| [i; 3]).collect(),
        }
    }

    fn indices(image: &Rgb) -> Vec<u8> {
        image.data.chunks(3).map(|p| p[0]).collect()
    }

    #[test]
    fn each_orientation_turns_as_exif_defines() {
        // Stored:  0 1 2
        //          3 4 5
        let expected: [(u8, (u32, u32), [u8; 6]); 8] = [
            (1, (3, 2), [0, 1, 2, 3, 4, 5]),
            (2, (3, 2), [2, 1, 0, 5, 4, 3]),
            (3, (3, 2), [5, 4, 3, 2, 1, 0]),
            (4, (3, 2), [3, 4, 5, 0, 1, 2]),
            (5, (2, 3), [0, 3, 1, 4, 2, 5]),
            (6, (2, 3), [3, 0, 4, 1, 5, 2]),
            (7, (2, 3), [5, 2, 4, 1, 3, 0]),
            (8, (2, 3), [2, 5, 1, 4, 0, 3]),
        ];
        for (o, size, pixels) in expected {
            let out = apply(numbered(), o).unwrap();
            assert_eq!((out.width, out.height), size, "orientation {o}");
            assert_eq!(indices(&out), pixels, "orientation {o}");
        }
        for o in [0, 9, 255] {
            assert_eq!(indices(&apply(numbered(), o).unwrap()), [0, 1, 2, 3, 4, 5]);
        }
    }
}
