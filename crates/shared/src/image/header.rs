//! An image's width and height from the first bytes of its file, without decoding it.
//!
//! [`parse`] takes any prefix of a file and says whether the prefix holds the dimensions, whether
//! more bytes are needed, or whether the bytes cannot be an accepted image. Its answer depends
//! only on the bytes it was given: once it says [`Header::Known`] or [`Header::Invalid`] for a
//! prefix, it says the same for every longer prefix. It never allocates and never panics.
//!
//! Where the dimensions are:
//! - JPEG: in the frame header (SOFn), after any number of segments (EXIF, ICC and XMP
//!   segments often put it 64 KiB or more into the file).
//! - PNG: in `IHDR`, bytes 16..24.
//! - GIF: the logical screen (bytes 6..10) and the first image descriptor, which may lie outside
//!   the screen; the size is the union of both, as that is what a decoder has to cover.
//! - WebP: in the `VP8 `, `VP8L` or `VP8X` chunk that follows the RIFF header (at most 30
//!   bytes in).

use crate::image::format::{ImageType, MAGIC};
use std::fmt;

/// What a prefix of a file says about the image's size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// The image's format and size in pixels (both at least 1).
    Known {
        format: ImageType,
        width: u32,
        height: u32,
    },
    /// The prefix is consistent with an accepted image but too short to tell its size.
    NeedMore,
    /// The bytes are not an accepted image, or its header is malformed.
    Invalid(&'static str),
}

/// Reads the format and the size of an image from a prefix of its file.
pub fn parse(prefix: &[u8]) -> Header {
    match parse_details(prefix) {
        Ok(d) => Header::Known {
            format: d.format,
            width: d.width,
            height: d.height,
        },
        Err(Stop::NeedMore) => Header::NeedMore,
        Err(Stop::Invalid(reason)) => Header::Invalid(reason),
    }
}

/// An image has more pixels than allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLarge {
    pub width: u32,
    pub height: u32,
    pub max_pixels: u64,
}

impl TooLarge {
    /// The image's pixel count.
    pub fn pixels(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }
}

impl fmt::Display for TooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the image is {}x{} ({} pixels), more than the {} allowed",
            self.width,
            self.height,
            self.pixels(),
            self.max_pixels
        )
    }
}

impl std::error::Error for TooLarge {}

/// Refuses an image of more than `max_pixels` pixels (width × height, without overflow).
pub fn check_pixels(width: u32, height: u32, max_pixels: u64) -> Result<(), TooLarge> {
    if u64::from(width) * u64::from(height) > max_pixels {
        Err(TooLarge {
            width,
            height,
            max_pixels,
        })
    } else {
        Ok(())
    }
}

/// Why [`parse_details`] stopped without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    NeedMore,
    Invalid(&'static str),
}

/// A header's size plus what the decoders need to budget their memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Details {
    pub format: ImageType,
    pub width: u32,
    pub height: u32,
    /// JPEG only: the frame header.
    pub jpeg: Option<JpegFrame>,
}

/// The parts of a JPEG frame header (SOFn) that decide a decoder's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegFrame {
    /// Progressive DCT (SOF2, SOF6, SOF10, SOF14): decoders keep every coefficient.
    pub progressive: bool,
    /// Number of components (1 to 4).
    pub components: u8,
    /// Horizontal and vertical sampling factors of each component (1 to 4).
    pub sampling: [(u8, u8); 4],
}

impl JpegFrame {
    /// Bytes of DCT coefficients of the whole image (64 `i16` a block, blocks padded to whole
    /// MCUs): what a progressive decoder holds until the last scan.
    pub fn coefficient_bytes(&self, width: u32, height: u32) -> u64 {
        let comps = &self.sampling[..usize::from(self.components.min(4))];
        let h_max = comps.iter().map(|c| u64::from(c.0)).max().unwrap_or(1);
        let v_max = comps.iter().map(|c| u64::from(c.1)).max().unwrap_or(1);
        let mcus_x = u64::from(width).div_ceil(8 * h_max);
        let mcus_y = u64::from(height).div_ceil(8 * v_max);
        comps
            .iter()
            .map(|&(h, v)| mcus_x * u64::from(h) * mcus_y * u64::from(v) * 128)
            .sum()
    }
}

type Parsed<T> = Result<T, Stop>;

fn byte(b: &[u8], at: usize) -> Parsed<u8> {
    b.get(at).copied().ok_or(Stop::NeedMore)
}

fn be16(b: &[u8], at: usize) -> Parsed<u16> {
    Ok(u16::from_be_bytes([byte(b, at)?, byte(b, at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Parsed<u32> {
    Ok(u32::from_be_bytes([
        byte(b, at)?,
        byte(b, at + 1)?,
        byte(b, at + 2)?,
        byte(b, at + 3)?,
    ]))
}

fn le16(b: &[u8], at: usize) -> Parsed<u16> {
    Ok(u16::from_le_bytes([byte(b, at)?, byte(b, at + 1)?]))
}

fn le24(b: &[u8], at: usize) -> Parsed<u32> {
    Ok(u32::from_le_bytes([
        byte(b, at)?,
        byte(b, at + 1)?,
        byte(b, at + 2)?,
        0,
    ]))
}

/// The format of a prefix, `NeedMore` while it is still the start of some magic number.
fn format(prefix: &[u8]) -> Parsed<ImageType> {
    let mut could_be = false;
    for (format, magic) in MAGIC {
        let matches = magic
            .iter()
            .zip(prefix)
            .all(|(m, b)| m.is_none_or(|m| m == *b));
        if matches && prefix.len() >= magic.len() {
            return Ok(format);
        }
        could_be |= matches;
    }
    if could_be {
        Err(Stop::NeedMore)
    } else {
        Err(Stop::Invalid("not a JPEG, PNG, GIF or WebP image"))
    }
}

/// The format, size and (JPEG) frame header of an image from its first bytes, or why not
/// yet ([`Stop::NeedMore`]) or never ([`Stop::Invalid`]).
pub fn parse_details(prefix: &[u8]) -> Parsed<Details> {
    let format = format(prefix)?;
    let (width, height, jpeg) = match format {
        ImageType::Jpeg => {
            let (w, h, frame) = jpeg(prefix)?;
            (w, h, Some(frame))
        }
        ImageType::Png => {
            let (w, h) = png(prefix)?;
            (w, h, None)
        }
        ImageType::Gif => {
            let (w, h) = gif(prefix)?;
            (w, h, None)
        }
        ImageType::Webp => {
            let (w, h) = webp(prefix)?;
            (w, h, None)
        }
    };
    Ok(Details {
        format,
        width,
        height,
        jpeg,
    })
}

/// JPEG: walks the segments from SOI to the first frame header.
fn jpeg(b: &[u8]) -> Parsed<(u32, u32, JpegFrame)> {
    let mut pos = 2; // after SOI
    loop {
        if byte(b, pos)? != 0xFF {
            return Err(Stop::Invalid(
                "JPEG: a segment does not start with a marker",
            ));
        }
        // Any number of 0xFF fill bytes may precede a marker.
        while byte(b, pos)? == 0xFF {
            pos += 1;
        }
        let marker = byte(b, pos)?;
        pos += 1;
        match marker {
            // Markers without a length: TEM and RSTn.
            0x01 | 0xD0..=0xD7 => continue,
            0x00 => return Err(Stop::Invalid("JPEG: stuffed byte outside a scan")),
            0xD8 => return Err(Stop::Invalid("JPEG: a second start of image")),
            0xD9 => return Err(Stop::Invalid("JPEG: ends before its frame header")),
            0xDA => return Err(Stop::Invalid("JPEG: a scan before the frame header")),
            // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                return jpeg_frame(b, pos, marker)
            }
            _ => {
                let len = usize::from(be16(b, pos)?);
                if len < 2 {
                    return Err(Stop::Invalid("JPEG: a segment length below 2"));
                }
                pos += len;
            }
        }
    }
}

/// JPEG: the frame header whose length field starts at `pos`.
fn jpeg_frame(b: &[u8], pos: usize, marker: u8) -> Parsed<(u32, u32, JpegFrame)> {
    let len = usize::from(be16(b, pos)?);
    let height = be16(b, pos + 3)?;
    let width = be16(b, pos + 5)?;
    let components = byte(b, pos + 7)?;
    if height == 0 {
        // The height would come from a DNL segment after the first scan: nobody writes that.
        return Err(Stop::Invalid(
            "JPEG: height 0 (set by DNL) is not supported",
        ));
    }
    if width == 0 {
        return Err(Stop::Invalid("JPEG: width 0"));
    }
    if !(1..=4).contains(&components) {
        return Err(Stop::Invalid("JPEG: not 1 to 4 components"));
    }
    if len != 8 + 3 * usize::from(components) {
        return Err(Stop::Invalid("JPEG: frame header length does not match"));
    }
    let mut sampling = [(1, 1); 4];
    for (i, s) in sampling
        .iter_mut()
        .enumerate()
        .take(usize::from(components))
    {
        let factors = byte(b, pos + 9 + 3 * i)?;
        let (h, v) = (factors >> 4, factors & 0x0F);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(Stop::Invalid("JPEG: sampling factor not 1 to 4"));
        }
        *s = (h, v);
    }
    let frame = JpegFrame {
        progressive: matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
        components,
        sampling,
    };
    Ok((u32::from(width), u32::from(height), frame))
}

/// PNG: the `IHDR` chunk, which must come first.
fn png(b: &[u8]) -> Parsed<(u32, u32)> {
    if be32(b, 8)? != 13 {
        return Err(Stop::Invalid("PNG: IHDR length is not 13"));
    }
    for (i, c) in b"IHDR".iter().enumerate() {
        if byte(b, 12 + i)? != *c {
            return Err(Stop::Invalid("PNG: the first chunk is not IHDR"));
        }
    }
    let width = be32(b, 16)?;
    let height = be32(b, 20)?;
    // The PNG specification limits both to 2^31 - 1.
    if !(1..=0x7FFF_FFFF).contains(&width) || !(1..=0x7FFF_FFFF).contains(&height) {
        return Err(Stop::Invalid("PNG: width or height is 0 or above 2^31 - 1"));
    }
    Ok((width, height))
}

/// GIF: the logical screen, grown to hold the first image's descriptor.
fn gif(b: &[u8]) -> Parsed<(u32, u32)> {
    let screen_w = u32::from(le16(b, 6)?);
    let screen_h = u32::from(le16(b, 8)?);
    let packed = byte(b, 10)?;
    let mut pos = 13;
    if packed & 0x80 != 0 {
        pos += 3 << ((packed & 0x07) + 1); // global colour table
    }
    loop {
        match byte(b, pos)? {
            // Extension: label, then sub-blocks up to an empty one.
            0x21 => {
                pos += 2;
                loop {
                    let size = usize::from(byte(b, pos)?);
                    pos += 1 + size;
                    if size == 0 {
                        break;
                    }
                }
            }
            // Image descriptor: left, top, width, height.
            0x2C => {
                let right = u32::from(le16(b, pos + 1)?) + u32::from(le16(b, pos + 5)?);
                let bottom = u32::from(le16(b, pos + 3)?) + u32::from(le16(b, pos + 7)?);
                let (width, height) = (screen_w.max(right), screen_h.max(bottom));
                if width == 0 || height == 0 {
                    return Err(Stop::Invalid("GIF: the image is empty"));
                }
                return Ok((width, height));
            }
            0x3B => return Err(Stop::Invalid("GIF: no image before the trailer")),
            _ => return Err(Stop::Invalid("GIF: unknown block")),
        }
    }
}

/// WebP: the first chunk after the RIFF header.
fn webp(b: &[u8]) -> Parsed<(u32, u32)> {
    let fourcc = [byte(b, 12)?, byte(b, 13)?, byte(b, 14)?, byte(b, 15)?];
    let (width, height) = match &fourcc {
        // Lossy: a VP8 key frame header.
        b"VP8 " => {
            if byte(b, 20)? & 1 != 0 {
                return Err(Stop::Invalid(
                    "WebP: VP8 data does not start with a key frame",
                ));
            }
            if [byte(b, 23)?, byte(b, 24)?, byte(b, 25)?] != [0x9D, 0x01, 0x2A] {
                return Err(Stop::Invalid("WebP: bad VP8 start code"));
            }
            (
                u32::from(le16(b, 26)? & 0x3FFF),
                u32::from(le16(b, 28)? & 0x3FFF),
            )
        }
        // Lossless: signature 0x2F, then 14 bits each of width - 1 and height - 1.
        b"VP8L" => {
            if byte(b, 20)? != 0x2F {
                return Err(Stop::Invalid("WebP: bad VP8L signature"));
            }
            let bits = u32::from_le_bytes([byte(b, 21)?, byte(b, 22)?, byte(b, 23)?, byte(b, 24)?]);
            if bits >> 29 != 0 {
                return Err(Stop::Invalid("WebP: unknown VP8L version"));
            }
            ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        }
        // Extended: 24 bits each of canvas width - 1 and height - 1.
        b"VP8X" => {
            let (w, h) = (le24(b, 24)? + 1, le24(b, 27)? + 1);
            if u64::from(w) * u64::from(h) > u64::from(u32::MAX) {
                return Err(Stop::Invalid("WebP: canvas larger than 2^32 - 1 pixels"));
            }
            (w, h)
        }
        _ => return Err(Stop::Invalid("WebP: unknown first chunk")),
    };
    if width == 0 || height == 0 {
        return Err(Stop::Invalid("WebP: width or height is 0"));
    }
    Ok((width, height))
}

/// The most scans a progressive JPEG may have. Real encoders write far fewer: libjpeg's
/// default progressive script has 10 scans for colour (6 for grey), mozjpeg's optimised
/// scripts have at most about a dozen, and even a script splitting every component's
/// coefficients into single-band scans stays below 64. A decoder walks every block of a
/// component once per scan, whatever the scan's size, so a file that repeats a scan header
/// costs CPU in proportion to the repeats times the pixels: 64 bounds that factor.
pub const MAX_PROGRESSIVE_SCANS: u32 = 64;

/// The most scans a sequential (baseline or extended) JPEG may have: each component is coded
/// in exactly one scan (ITU T.81, 4.10), and a frame has at most 4 components.
pub const MAX_SEQUENTIAL_SCANS: u32 = 4;

/// Where [`JpegScans`] is in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Walk {
    /// Between segments, looking for a marker's `0xFF`; other bytes are skipped, as decoders
    /// do (libjpeg and `jpeg-decoder` both tolerate them).
    Seek,
    /// After `0xFF`, outside entropy-coded data.
    Marker,
    /// A segment's length, first byte; the marker.
    LenHi(u8),
    /// A segment's length, second byte; the marker and the first byte.
    LenLo(u8, u8),
    /// Inside a segment, this many bytes left; entropy-coded data follows when it is a scan
    /// header.
    Skip(u16, bool),
    /// Entropy-coded data: everything up to a marker other than a stuffed byte or RSTn.
    Entropy,
    /// After `0xFF` in entropy-coded data.
    EntropyFf,
    /// After EOI: decoders stop there, and so does the count.
    End,
}

/// Counts a JPEG's scans (SOS markers outside segments and entropy-coded data) in one pass,
/// fed its bytes in pieces of any size, with no allocation. Refuses a file with more scans
/// than its frame type allows ([`MAX_PROGRESSIVE_SCANS`], [`MAX_SEQUENTIAL_SCANS`]) as soon
/// as the scan header past the limit is seen, so before a decoder spends anything on it. Its
/// work is linear in the bytes fed (each byte is looked at once at most), and its answer for a
/// prefix holds for every longer one: a refusal stays a refusal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JpegScans {
    walk: Walk,
    scans: u32,
    /// From the frame header; `None` before it (a scan there is refused by decoders anyway:
    /// counted against the smaller limit).
    progressive: Option<bool>,
    bytes: u64,
}

impl Default for JpegScans {
    fn default() -> Self {
        Self::new()
    }
}

impl JpegScans {
    /// Ready for the file's first byte (its SOI marker).
    pub const fn new() -> Self {
        Self {
            walk: Walk::Seek,
            scans: 0,
            progressive: None,
            bytes: 0,
        }
    }

    /// Scan headers seen so far.
    pub fn scans(&self) -> u32 {
        self.scans
    }

    /// Bytes fed so far (the work done: each is looked at once at most).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Whether EOI was seen: later bytes cannot add scans.
    pub fn ended(&self) -> bool {
        self.walk == Walk::End
    }

    /// The most scans the frame seen so far allows.
    pub fn limit(&self) -> u32 {
        match self.progressive {
            Some(true) => MAX_PROGRESSIVE_SCANS,
            _ => MAX_SEQUENTIAL_SCANS,
        }
    }

    /// Walks the next bytes of the file; fails once it has more scans than allowed (and
    /// keeps failing for any further bytes).
    pub fn feed(&mut self, mut b: &[u8]) -> Result<(), &'static str> {
        if self.scans > self.limit() {
            return Err(TOO_MANY_SCANS);
        }
        self.bytes += b.len() as u64;
        while let Some((&first, rest)) = b.split_first() {
            match self.walk {
                Walk::End => return Ok(()),
                Walk::Seek | Walk::Entropy => {
                    // The next 0xFF; everything before it is skipped.
                    match b.iter().position(|&x| x == 0xFF) {
                        Some(at) => {
                            self.walk = match self.walk {
                                Walk::Seek => Walk::Marker,
                                _ => Walk::EntropyFf,
                            };
                            b = &b[at + 1..];
                        }
                        None => return Ok(()),
                    }
                    continue;
                }
                Walk::Skip(left, scan) => {
                    let n = usize::from(left).min(b.len());
                    b = &b[n..];
                    let left = left - n as u16;
                    self.walk = match (left, scan) {
                        (0, true) => Walk::Entropy,
                        (0, false) => Walk::Seek,
                        _ => Walk::Skip(left, scan),
                    };
                    continue;
                }
                Walk::Marker => match first {
                    0xFF => {}
                    // A stuffed byte outside a scan: skipped, as decoders do.
                    0x00 => self.walk = Walk::Seek,
                    m => self.marker(m),
                },
                Walk::EntropyFf => match first {
                    0xFF => {}
                    0x00 | 0xD0..=0xD7 => self.walk = Walk::Entropy,
                    m => self.marker(m),
                },
                Walk::LenHi(m) => self.walk = Walk::LenLo(m, first),
                Walk::LenLo(m, hi) => {
                    let len = u16::from_be_bytes([hi, first]);
                    let is_scan = m == 0xDA;
                    if is_scan {
                        self.scans += 1;
                        if self.scans > self.limit() {
                            return Err(TOO_MANY_SCANS);
                        }
                    }
                    // A length below 2 is malformed (decoders fail on it): walk on.
                    self.walk = Walk::Skip(len.saturating_sub(2), is_scan);
                    if len <= 2 && !is_scan {
                        self.walk = Walk::Seek;
                    }
                }
            }
            b = rest;
        }
        Ok(())
    }

    /// A marker outside entropy-coded data.
    fn marker(&mut self, m: u8) {
        self.walk = match m {
            0xD9 => Walk::End,
            // Markers without a length: SOI, TEM, RSTn.
            0xD8 | 0x01 | 0xD0..=0xD7 => Walk::Seek,
            _ => {
                if (0xC0..=0xCF).contains(&m) && !matches!(m, 0xC4 | 0xC8 | 0xCC) {
                    // A second frame header keeps the first's type (decoders refuse it).
                    self.progressive
                        .get_or_insert(matches!(m, 0xC2 | 0xC6 | 0xCA | 0xCE));
                }
                Walk::LenHi(m)
            }
        };
    }
}

/// Why [`JpegScans`] refuses a file.
const TOO_MANY_SCANS: &str = "JPEG: more scans than any encoder writes";

/// Counts the scans of a whole JPEG file, or of a prefix of it, with [`JpegScans`].
pub fn jpeg_scans(bytes: &[u8]) -> Result<JpegScans, &'static str> {
    let mut walk = JpegScans::new();
    walk.feed(bytes)?;
    Ok(walk)
}

/// `jpeg` with `app_bytes` of APP1 and APP2 segments (as EXIF and ICC data) after SOI, which
/// pushes the frame header far into the file: for the tests of this module and of the
/// `imaging` crate. Anything shorter than SOI comes back as it is.
pub fn with_app_segments(jpeg: &[u8], app_bytes: usize) -> Vec<u8> {
    if jpeg.len() < 2 {
        return jpeg.to_vec();
    }
    let mut out = jpeg[..2].to_vec();
    let mut left = app_bytes;
    let mut marker = 0xE1;
    while left > 0 {
        let n = left.min(65533);
        out.extend_from_slice(&[0xFF, marker]);
        out.extend_from_slice(&((n + 2) as u16).to_be_bytes());
        out.extend(std::iter::repeat_n(0xAB, n));
        left -= n;
        marker = if marker == 0xE1 { 0xE2 } else { 0xE1 };
    }
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::format::sniff;
    use proptest::prelude::*;
    use std::io::Cursor;

    /// A real file of each format, encoded by the `image` crate.
    pub fn encoded(format: image::ImageFormat, width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        });
        let mut out = Cursor::new(Vec::new());
        match format {
            image::ImageFormat::Gif => {
                // RGBA of few colours: the GIF encoder then skips its (slow) quantiser.
                let img = image::RgbaImage::from_fn(width, height, |x, y| {
                    image::Rgba([(x / 4 % 4 * 80) as u8, (y / 4 % 4 * 80) as u8, 99, 255])
                });
                img.write_to(&mut out, format).unwrap();
            }
            _ => img.write_to(&mut out, format).unwrap(),
        }
        out.into_inner()
    }

    fn known(format: ImageType, width: u32, height: u32) -> Header {
        Header::Known {
            format,
            width,
            height,
        }
    }

    /// Every prefix says `NeedMore` until one says `Known` with the right answer, and so does
    /// every longer one.
    fn check_prefixes(file: &[u8], want: Header) {
        let mut seen = false;
        for n in 0..=file.len() {
            let got = parse(&file[..n]);
            if seen {
                assert_eq!(got, want, "prefix {n}");
            } else if got != Header::NeedMore {
                assert_eq!(got, want, "prefix {n}");
                seen = true;
            }
        }
        assert!(seen, "never known");
    }

    #[test]
    fn real_files_of_every_format() {
        use image::ImageFormat as F;
        for (f, t) in [
            (F::Jpeg, ImageType::Jpeg),
            (F::Png, ImageType::Png),
            (F::Gif, ImageType::Gif),
            (F::WebP, ImageType::Webp),
        ] {
            for (w, h) in [(1, 1), (3, 2), (640, 480), (17, 301)] {
                check_prefixes(&encoded(f, w, h), known(t, w, h));
            }
        }
    }

    #[test]
    fn jpeg_frame_header_far_into_the_file() {
        let file = with_app_segments(&encoded(image::ImageFormat::Jpeg, 40, 30), 200_000);
        assert_eq!(parse(&file[..150_000]), Header::NeedMore);
        assert_eq!(parse(&file), known(ImageType::Jpeg, 40, 30));
        check_prefixes(&file, known(ImageType::Jpeg, 40, 30));
    }

    #[test]
    fn jpeg_frame_details() {
        let file = encoded(image::ImageFormat::Jpeg, 4000 / 8, 3000 / 8);
        let d = parse_details(&file).unwrap();
        let frame = d.jpeg.unwrap();
        assert!(!frame.progressive);
        assert_eq!(frame.components, 3);
        // The `image` crate writes 4:4:4: 500x375 is 63x47 MCUs of 3 blocks.
        assert_eq!(frame.sampling[..3], [(1, 1), (1, 1), (1, 1)]);
        assert_eq!(frame.coefficient_bytes(500, 375), 63 * 47 * 3 * 128);
        // 4:2:0 (as phones write): 32x24 MCUs of 6 blocks.
        let subsampled = JpegFrame {
            sampling: [(2, 2), (1, 1), (1, 1), (1, 1)],
            ..frame
        };
        assert_eq!(subsampled.coefficient_bytes(500, 375), 32 * 24 * 6 * 128);
    }

    #[test]
    fn gif_size_covers_the_first_frame() {
        let mut gif = b"GIF89a\x0a\x00\x05\x00\x80\x00\x00".to_vec();
        gif.extend_from_slice(&[0; 6]); // global table of 2 colours
        gif.extend_from_slice(b"\x21\xf9\x04\x00\x00\x00\x00\x00"); // graphic control
        gif.extend_from_slice(b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00");
        // Frame at (8, 1), 30 x 2: beyond the 10 x 5 screen on the right.
        gif.extend_from_slice(b"\x2c\x08\x00\x01\x00\x1e\x00\x02\x00\x00");
        check_prefixes(&gif, known(ImageType::Gif, 38, 5));
    }

    #[test]
    fn truncated_and_garbage_headers() {
        let cases: &[(&[u8], Header)] = &[
            (b"", Header::NeedMore),
            (b"\xff", Header::NeedMore),
            (b"\xff\xd8", Header::NeedMore),
            (b"RIFF", Header::NeedMore),
            (b"RIFF\0\0\0\0WEB", Header::NeedMore),
            (b"GIF8", Header::NeedMore),
            (b"\xff\xd8\xff", Header::NeedMore),
            (b"\xff\xd8\xff\xe0\x00", Header::NeedMore),
            (
                b"hello",
                Header::Invalid("not a JPEG, PNG, GIF or WebP image"),
            ),
            (
                b"GIF88a",
                Header::Invalid("not a JPEG, PNG, GIF or WebP image"),
            ),
            (
                b"RIFF\0\0\0\0WAVE",
                Header::Invalid("not a JPEG, PNG, GIF or WebP image"),
            ),
            (
                b"\xff\xd8\xff\xd9",
                Header::Invalid("JPEG: ends before its frame header"),
            ),
            (
                b"\xff\xd8\xff\xda\x00\x08",
                Header::Invalid("JPEG: a scan before the frame header"),
            ),
            (
                b"\xff\xd8\xff\xe0\x00\x01",
                Header::Invalid("JPEG: a segment length below 2"),
            ),
            (
                b"\xff\xd8\xff\xe0\x00\x02\x12",
                Header::Invalid("JPEG: a segment does not start with a marker"),
            ),
            (
                b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x00\x00\x10\x03",
                Header::Invalid("JPEG: height 0 (set by DNL) is not supported"),
            ),
            (
                b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x02",
                Header::Invalid("JPEG: frame header length does not match"),
            ),
            (
                b"\xff\xd8\xff\xc0\x00\x0b\x08\x00\x10\x00\x10\x01\x01\x50",
                Header::Invalid("JPEG: sampling factor not 1 to 4"),
            ),
            (
                b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\0\0\0\0\0\x01",
                Header::Invalid("PNG: width or height is 0 or above 2^31 - 1"),
            ),
            (
                b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDX",
                Header::Invalid("PNG: the first chunk is not IHDR"),
            ),
            (
                b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR\0\0\x75\x30\0\0\x75\x30",
                known(ImageType::Png, 30000, 30000),
            ),
            (
                b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x3b",
                Header::Invalid("GIF: no image before the trailer"),
            ),
            (
                b"GIF89a\x01\x00\x01\x00\x00\x00\x00\x99",
                Header::Invalid("GIF: unknown block"),
            ),
            (
                b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0\xff\xff\xff\xff\xff\xff",
                Header::Invalid("WebP: canvas larger than 2^32 - 1 pixels"),
            ),
            (
                b"RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0\x9f\x0f\x00\x6f\x0b\x00",
                known(ImageType::Webp, 4000, 2928),
            ),
            (
                b"RIFF\0\0\0\0WEBPVP8 \0\0\0\0\x00\x00\x00\x9d\x01\x2b\x01\x00\x01\x00",
                Header::Invalid("WebP: bad VP8 start code"),
            ),
            (
                b"RIFF\0\0\0\0WEBPVP8L\0\0\0\0\x2f\xff\xff\xff\xff",
                Header::Invalid("WebP: unknown VP8L version"),
            ),
            (
                b"RIFF\0\0\0\0WEBPALPH",
                Header::Invalid("WebP: unknown first chunk"),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), *want, "{bytes:?}");
        }
    }

    #[test]
    fn pixel_limit() {
        assert_eq!(check_pixels(5000, 10000, 50_000_000), Ok(()));
        let err = check_pixels(5000, 10001, 50_000_000).unwrap_err();
        assert_eq!(err.pixels(), 50_005_000);
        assert!(err.to_string().contains("5000x10001"), "{err}");
        assert!(check_pixels(u32::MAX, u32::MAX, u64::MAX).is_ok());
        assert!(check_pixels(u32::MAX, u32::MAX, u64::MAX - 1).is_ok());
        assert!(check_pixels(u32::MAX, 2, u64::from(u32::MAX)).is_err());
    }

    fn any_magic() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"\xff\xd8\xff".to_vec()),
            Just(b"\x89PNG\r\n\x1a\n".to_vec()),
            Just(b"GIF89a".to_vec()),
            Just(b"RIFF\0\0\0\0WEBPVP8 ".to_vec()),
            Just(b"RIFF\0\0\0\0WEBPVP8L".to_vec()),
            Just(b"RIFF\0\0\0\0WEBPVP8X".to_vec()),
            Just(Vec::new()),
        ]
    }

    proptest! {
        /// Any bytes: no panic, the format agrees with `sniff`, and an answer other than
        /// `NeedMore` for a prefix is the answer for the whole.
        #[test]
        fn answers_depend_only_on_the_prefix(
            magic in any_magic(),
            rest in proptest::collection::vec(any::<u8>(), 0..300),
            cut in 0usize..320,
        ) {
            let mut bytes = magic;
            bytes.extend_from_slice(&rest);
            let whole = parse(&bytes);
            let part = parse(&bytes[..cut.min(bytes.len())]);
            if part != Header::NeedMore {
                prop_assert_eq!(part, whole);
            }
            if let Header::Known { format, width, height } = whole {
                prop_assert_eq!(sniff(&bytes), Some(format));
                prop_assert!(width >= 1 && height >= 1);
            }
        }

    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A real image's prefixes never give a wrong answer, also with garbage after a cut.
        #[test]
        fn real_prefixes_then_garbage(
            f in 0usize..4,
            w in 1u32..100,
            h in 1u32..100,
            cut in 0usize..2000,
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            use image::ImageFormat as F;
            let (format, t) = [(F::Jpeg, ImageType::Jpeg), (F::Png, ImageType::Png), (F::Gif, ImageType::Gif), (F::WebP, ImageType::Webp)][f];
            let file = encoded(format, w, h);
            let cut = cut.min(file.len());
            let got = parse(&file[..cut]);
            prop_assert!(got == Header::NeedMore || got == known(t, w, h), "{:?}", got);
            let mut spoiled = file[..cut].to_vec();
            spoiled.extend_from_slice(&garbage);
            let spoiled = parse(&spoiled);
            if got == known(t, w, h) {
                prop_assert_eq!(spoiled, got);
            }
        }
    }

    /// SOI, a frame header (SOF2 when `progressive`), then `scans` scans of a few entropy
    /// bytes (with a stuffed byte and a restart marker), then EOI.
    pub fn jpeg_with_scans(progressive: bool, scans: usize) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        // An APP1 holding a whole thumbnail's markers, scans included: never counted.
        b.extend_from_slice(&[
            0xFF, 0xE1, 0x00, 0x0A, 0xFF, 0xD8, 0xFF, 0xDA, 0xFF, 0xDA, 0xFF, 0xD9,
        ]);
        b.extend_from_slice(&[0xFF, if progressive { 0xC2 } else { 0xC0 }, 0, 11, 8]);
        b.extend_from_slice(&[0, 16, 0, 16, 1, 1, 0x11, 0]);
        for _ in 0..scans {
            b.extend_from_slice(&[0xFF, 0xDA, 0, 8, 1, 1, 0, 0, 63, 0]);
            b.extend_from_slice(&[
                0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56, 0xFF, 0xFF, 0xC4, 0, 2,
            ]);
        }
        b.extend_from_slice(&[0xFF, 0xD9]);
        b
    }

    #[test]
    fn jpeg_scans_are_counted_outside_segments_and_entropy_data() {
        for (progressive, limit) in [(true, MAX_PROGRESSIVE_SCANS), (false, MAX_SEQUENTIAL_SCANS)] {
            let limit = limit as usize;
            let ok = jpeg_scans(&jpeg_with_scans(progressive, limit)).unwrap();
            assert_eq!(ok.scans() as usize, limit);
            assert!(ok.ended());
            assert_eq!(
                ok.bytes() as usize,
                jpeg_with_scans(progressive, limit).len()
            );
            assert_eq!(
                jpeg_scans(&jpeg_with_scans(progressive, limit + 1)),
                Err(TOO_MANY_SCANS)
            );
        }
        // After EOI nothing counts.
        let mut tail = jpeg_with_scans(true, 3);
        tail.extend_from_slice(&jpeg_with_scans(true, 100));
        assert_eq!(jpeg_scans(&tail).unwrap().scans(), 3);
        // Real files of the image crate (baseline): one scan.
        let real = encoded(image::ImageFormat::Jpeg, 64, 48);
        let walk = jpeg_scans(&real).unwrap();
        assert_eq!((walk.scans(), walk.ended()), (1, true));
    }

    proptest! {
        /// The walk gives the same answer whatever the pieces, and a refusal of a prefix is a
        /// refusal of the whole.
        #[test]
        fn jpeg_scans_do_not_depend_on_the_pieces(
            progressive in any::<bool>(),
            scans in 0usize..80,
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
            prefix in any::<prop::sample::Index>(),
        ) {
            let file = jpeg_with_scans(progressive, scans);
            let whole = jpeg_scans(&file);
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(file.len() + 1)).collect();
            at.sort_unstable();
            let mut walk = JpegScans::new();
            let mut from = 0;
            let mut pieces = Ok(());
            for to in at.into_iter().chain([file.len()]) {
                pieces = pieces.and_then(|()| walk.feed(&file[from..to]));
                from = to;
            }
            prop_assert_eq!(pieces.map(|()| walk), whole);
            let part = jpeg_scans(&file[..prefix.index(file.len() + 1)]);
            if part.is_err() {
                prop_assert_eq!(part, whole);
            }
        }

        /// Any bytes: the walk never panics and counts at most one scan per 4 bytes.
        #[test]
        fn jpeg_scans_of_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Ok(walk) = jpeg_scans(&bytes) {
                prop_assert!(walk.scans() as usize <= bytes.len() / 4);
            }
        }
    }
}
