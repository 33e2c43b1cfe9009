//! The EXIF orientation (TIFF tag 0x0112) of a JPEG or WebP image: how the stored pixels must
//! be turned to show the picture upright. Phones store photos sideways and set this tag.
//!
//! Pure and bounded: the parsers read only inside the bytes given (one APP1 segment, one
//! `EXIF` chunk), look at most [`MAX_IFD_ENTRIES`] entries, never allocate and never panic.
//! Anything missing, malformed or out of range reads as `None` (shown as stored), never as an
//! error: the tag is a hint, not part of the image.

/// The most IFD0 entries looked at; the orientation is among the first few in practice.
pub const MAX_IFD_ENTRIES: usize = 256;

/// The TIFF tag of the orientation.
const ORIENTATION_TAG: u16 = 0x0112;

/// The orientation in an EXIF TIFF structure (starting at its `II`/`MM` byte order mark):
/// `Some(1..=8)`, or `None` when there is no valid orientation entry in IFD0.
pub fn from_tiff(tiff: &[u8]) -> Option<u8> {
    let big = match tiff.get(..2)? {
        b"MM" => true,
        b"II" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = tiff.get(at..at.checked_add(2)?)?;
        let b = [b[0], b[1]];
        Some(if big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = tiff.get(at..at.checked_add(4)?)?;
        let b = [b[0], b[1], b[2], b[3]];
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    if u16_at(2)? != 42 {
        return None;
    }
    let ifd = usize::try_from(u32_at(4)?).ok()?;
    let count = usize::from(u16_at(ifd)?).min(MAX_IFD_ENTRIES);
    for i in 0..count {
        let entry = ifd.checked_add(2)?.checked_add(i.checked_mul(12)?)?;
        if u16_at(entry)? != ORIENTATION_TAG {
            continue;
        }
        // SHORT (type 3), one value, stored in the first two bytes of the value field.
        if u16_at(entry + 2)? != 3 || u32_at(entry + 4)? != 1 {
            return None;
        }
        let value = u16_at(entry + 8)?;
        return u8::try_from(value).ok().filter(|v| (1..=8).contains(v));
    }
    None
}

/// The orientation in an `Exif\0\0` payload (a JPEG APP1 segment's, or a WebP `EXIF` chunk's,
/// which some writers prefix the same way and most do not).
pub fn from_exif(payload: &[u8]) -> Option<u8> {
    from_tiff(payload.strip_prefix(b"Exif\0\0").unwrap_or(payload))
}

/// The orientation of a JPEG from a prefix of its file: the first APP1 `Exif` segment before
/// the frame header, if the prefix holds it whole. `None` when there is none, or when the
/// prefix ends or the segments are malformed before one is found.
pub fn jpeg(prefix: &[u8]) -> Option<u8> {
    if prefix.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut pos = 2usize;
    loop {
        if *prefix.get(pos)? != 0xFF {
            return None;
        }
        while *prefix.get(pos)? == 0xFF {
            pos += 1;
        }
        let marker = *prefix.get(pos)?;
        pos += 1;
        match marker {
            0x01 | 0xD0..=0xD7 => continue,
            // Frame headers, scans, the end, stray bytes: no EXIF before them.
            0x00 | 0xD8 | 0xD9 | 0xDA => return None,
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => return None,
            _ => {
                let len = usize::from(u16::from_be_bytes([
                    *prefix.get(pos)?,
                    *prefix.get(pos + 1)?,
                ]));
                if len < 2 {
                    return None;
                }
                let end = pos.checked_add(len)?;
                if marker == 0xE1 {
                    // The segment's payload, never beyond its length.
                    let payload = prefix.get(pos + 2..end)?;
                    if payload.starts_with(b"Exif\0\0") {
                        return from_exif(payload);
                    }
                }
                pos = end;
            }
        }
    }
}

/// Whether an orientation swaps width and height (5 to 8: a quarter turn, maybe mirrored).
pub fn transposes(orientation: u8) -> bool {
    (5..=8).contains(&orientation)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TIFF structure with IFD0 holding `entries` (tag, type, count, value as a SHORT).
    fn tiff(big: bool, entries: &[(u16, u16, u32, u16)]) -> Vec<u8> {
        let u16b = |v: u16| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u32b = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut t = Vec::new();
        t.extend_from_slice(if big { b"MM" } else { b"II" });
        t.extend_from_slice(&u16b(42));
        t.extend_from_slice(&u32b(8));
        t.extend_from_slice(&u16b(entries.len() as u16));
        for &(tag, kind, count, value) in entries {
            t.extend_from_slice(&u16b(tag));
            t.extend_from_slice(&u16b(kind));
            t.extend_from_slice(&u32b(count));
            t.extend_from_slice(&u16b(value));
            t.extend_from_slice(&[0, 0]);
        }
        t.extend_from_slice(&u32b(0));
        t
    }

    fn jpeg_with_app1(payload: &[u8]) -> Vec<u8> {
        let mut j = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 4, 0, 0, 0xFF, 0xE1];
        j.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
        j.extend_from_slice(payload);
        j.extend_from_slice(&[0xFF, 0xC0, 0, 11, 8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
        j
    }

    fn exif(tiff: &[u8]) -> Vec<u8> {
        [b"Exif\0\0".as_slice(), tiff].concat()
    }

    #[test]
    fn both_byte_orders_give_every_orientation() {
        for big in [true, false] {
            for o in 1..=8u16 {
                let t = tiff(big, &[(0x010F, 2, 4, 0), (ORIENTATION_TAG, 3, 1, o)]);
                assert_eq!(from_tiff(&t), Some(o as u8), "big-endian {big}, {o}");
                assert_eq!(jpeg(&jpeg_with_app1(&exif(&t))), Some(o as u8));
                assert_eq!(
                    from_exif(&t),
                    Some(o as u8),
                    "a WebP chunk without the prefix"
                );
            }
        }
    }

    #[test]
    fn missing_out_of_range_and_wrong_types_are_none() {
        for big in [true, false] {
            assert_eq!(from_tiff(&tiff(big, &[])), None);
            assert_eq!(from_tiff(&tiff(big, &[(0x010F, 3, 1, 6)])), None);
            for bad in [0, 9, 255, 256 + 6, u16::MAX] {
                assert_eq!(from_tiff(&tiff(big, &[(ORIENTATION_TAG, 3, 1, bad)])), None);
            }
            assert_eq!(from_tiff(&tiff(big, &[(ORIENTATION_TAG, 4, 1, 6)])), None);
            assert_eq!(from_tiff(&tiff(big, &[(ORIENTATION_TAG, 3, 2, 6)])), None);
        }
        // No APP1, an APP1 that is XMP, a JPEG without anything before its frame.
        assert_eq!(
            jpeg(&jpeg_with_app1(b"http://ns.adobe.com/xap/1.0/\0")),
            None
        );
        assert_eq!(jpeg(&[0xFF, 0xD8, 0xFF, 0xC0, 0, 11]), None);
    }

    #[test]
    fn garbage_and_truncations_are_none_without_reading_beyond() {
        let good = jpeg_with_app1(&exif(&tiff(true, &[(ORIENTATION_TAG, 3, 1, 6)])));
        assert_eq!(jpeg(&good), Some(6));
        for cut in 0..good.len() - 13 {
            assert_eq!(jpeg(&good[..cut]), None, "cut at {cut}");
        }
        // The IFD offset, the entry count and the segment length pointing far away.
        let mut t = tiff(false, &[(ORIENTATION_TAG, 3, 1, 6)]);
        t[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(from_tiff(&t), None);
        let mut t = tiff(false, &[(ORIENTATION_TAG, 3, 1, 6)]);
        t[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        t[10..12].copy_from_slice(&0u16.to_le_bytes()); // the orientation entry is gone
        assert_eq!(from_tiff(&t), None);
        // The TIFF runs past its APP1 segment: the orientation beyond the end is not read.
        let t = tiff(true, &[(ORIENTATION_TAG, 3, 1, 6)]);
        let mut j = jpeg_with_app1(&exif(&t[..t.len() - 8]));
        j.extend_from_slice(&t[t.len() - 8..]);
        assert_eq!(jpeg(&j), None);
        for junk in [
            &b""[..],
            b"MM",
            b"II*\0",
            b"MM\0*\xff\xff\xff\xff",
            b"XX\0*\0\0\0\x08",
        ] {
            assert_eq!(from_tiff(junk), None);
            assert_eq!(jpeg(junk), None);
        }
        // Every byte of a good segment flipped: no panic, and any answer is 1 to 8.
        for i in 0..good.len() {
            for v in [0x00, 0xFF, 0x80] {
                let mut j = good.clone();
                j[i] = v;
                assert!(jpeg(&j).is_none_or(|o| (1..=8).contains(&o)));
            }
        }
    }
}
