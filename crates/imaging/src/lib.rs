//! Normalising an image for the model, with bounded memory. Only the tagger uses it, so the
//! upload worker builds without the decoders; their speed settings (opt-level) are this
//! crate's and the codec crates' alone.
//!
//! [`normalise`] reads an image's header, refuses it if it has more than
//! [`Limits::max_pixels`], and otherwise either says the original may be sent as it is
//! ([`Normalised::Unchanged`]: a JPEG or PNG within the size limits and at most
//! [`Limits::passthrough_bytes`] long, after checking that it decodes) or decodes it, downscales
//! it so that its shorter side is [`Limits::edge`] (box filter, never upscaling) and re-encodes
//! it as a baseline 4:2:0 JPEG ([`Normalised::Jpeg`]). Alpha is composited over white; greyscale,
//! palette and CMYK images become RGB. Only the first frame of an animation is used.
//!
//! The EXIF orientation (a JPEG's APP1 `Exif` segment before its frame header, a WebP's `EXIF`
//! chunk) is applied to the downscaled image, so the model sees the photo upright; an image
//! whose orientation is not 1 is never sent unchanged. The turn works on the output only (at
//! most `edge` × [`MAX_OUTPUT_ASPECT`] `edge` pixels, one more copy of it), so the bounds below
//! hold as they are.
//!
//! Memory stays bounded; only where a decoder cannot do otherwise does it hold the whole image,
//! within [`Limits::max_decode_bytes`]:
//! - JPEG is decoded at 1/2, 1/4 or 1/8 scale inside the IDCT (the largest reduction that still
//!   leaves the shorter side at least `edge`) and box-filtered from there. Progressive JPEGs
//!   keep every DCT coefficient (2 bytes a sample, e.g. 36 MB for 4000 × 3000 in 4:2:0) until
//!   their last scan: they are refused when that exceeds [`Limits::max_decode_bytes`].
//! - PNG is read row by row (also Adam7-interlaced ones) into the downscaler.
//! - GIF's first frame is read line by line into the downscaler.
//! - WebP: opaque lossy images (the usual photo) go through the VP8 decoder alone, which keeps
//!   the YUV planes (1.5 bytes a pixel: 18 MB for 12 MP) and the compressed data; alpha,
//!   lossless and animated ones are decoded whole (4 to 12 bytes a pixel). Refused when that
//!   exceeds `max_decode_bytes`.
//!
//! Every failure is an [`ImageError`] with a stable [`code`](ImageError::code); nothing that the
//! input can reach panics.

mod decode_gif;
mod decode_jpeg;
mod decode_png;
mod decode_webp;
mod orient;
mod resample;

use resample::Rgb;
use shared::image::format::ImageType;
use shared::image::header::{self, Details, Stop};
use shared::wire::config;
use shared::TagError;
use std::fmt;
use std::io::{self, BufRead, Cursor, Read, Seek, SeekFrom};

/// Longest side of the output, as a multiple of the shorter one: a 10:1 panorama is sent at
/// 4:1 of `edge` on its long side (shorter side below `edge`), so that its output stays small.
pub const MAX_OUTPUT_ASPECT: u32 = 4;

/// What [`normalise`] may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Images with more pixels (width × height from the header) fail as `image_too_large`.
    pub max_pixels: u64,
    /// The output's shorter side, in pixels (clamped to 16..=4096).
    pub edge: u32,
    /// Most heap the decoder and the downscaler may use, estimated from the header before
    /// decoding; more fails as `image_too_large`. Only decoders that hold whole images
    /// (progressive JPEG, WebP) come near the default.
    pub max_decode_bytes: u64,
    /// A JPEG or PNG that needs no downscaling and is at most this long is sent unchanged.
    pub passthrough_bytes: u64,
    /// JPEG quality of re-encoded images (1..=100).
    pub quality: u8,
}

/// Default of [`Limits::max_decode_bytes`]: 40 MiB. Enough for a 4000 × 3000 progressive 4:2:0
/// JPEG (39 MiB) and opaque lossy WebP up to about 25 MP; lossless WebP stops near 6 MP.
pub const DEFAULT_MAX_DECODE_BYTES: u64 = 40 << 20;
/// Default of [`Limits::passthrough_bytes`]: 256 KiB.
pub const DEFAULT_PASSTHROUGH_BYTES: u64 = 256 << 10;
/// Default of [`Limits::quality`].
pub const DEFAULT_QUALITY: u8 = 90;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: config::MAX_PIXELS.value(None),
            edge: config::AI_INPUT_EDGE.value(None),
            max_decode_bytes: DEFAULT_MAX_DECODE_BYTES,
            passthrough_bytes: DEFAULT_PASSTHROUGH_BYTES,
            quality: DEFAULT_QUALITY,
        }
    }
}

impl Limits {
    /// Defaults with the vars [`config::MAX_PIXELS`] and [`config::AI_INPUT_EDGE`] applied
    /// (unset, empty or invalid values keep the default).
    pub fn from_vars(max_pixels: Option<&str>, edge: Option<&str>) -> Self {
        Self {
            max_pixels: config::MAX_PIXELS.value(max_pixels),
            edge: config::AI_INPUT_EDGE.value(edge),
            ..Self::default()
        }
    }

    fn sanitised(&self) -> Self {
        Self {
            edge: self.edge.clamp(16, 4096),
            quality: self.quality.clamp(1, 100),
            ..*self
        }
    }
}

/// An input image's format and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageType,
    pub width: u32,
    pub height: u32,
}

/// What to send to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Normalised {
    /// Send the original bytes: they decode, need no downscaling, are small and upright (no
    /// EXIF orientation other than 1).
    Unchanged(ImageInfo),
    /// Send these JPEG bytes instead of the original: `width` × `height` upright, while
    /// `source` is the file's size as stored (swapped for EXIF orientations 5 to 8).
    Jpeg {
        bytes: Vec<u8>,
        width: u32,
        height: u32,
        source: ImageInfo,
    },
}

/// Why an image cannot be normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Permanent, `image_too_large`: too many pixels, or too much memory to decode.
    TooLarge(String),
    /// Permanent, `invalid_image`: not an accepted format, corrupt, truncated or unsupported.
    Invalid(String),
    /// The reader failed (other than by ending early): not the image's fault, worth a retry.
    Read(String),
}

impl ImageError {
    /// Stable, machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "image_too_large",
            Self::Invalid(_) => "invalid_image",
            Self::Read(_) => "image_read_failed",
        }
    }

    /// Whether the same bytes will always fail the same way.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, Self::Read(_))
    }

    /// Human-readable detail.
    pub fn message(&self) -> &str {
        match self {
            Self::TooLarge(m) | Self::Invalid(m) | Self::Read(m) => m,
        }
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code(), self.message())
    }
}

impl std::error::Error for ImageError {}

impl From<header::TooLarge> for ImageError {
    fn from(e: header::TooLarge) -> Self {
        Self::TooLarge(e.to_string())
    }
}

/// Decoding failures: `image_too_large` and `invalid_image` are permanent; a failing reader is
/// a storage problem, retried.
impl From<ImageError> for TagError {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::TooLarge(m) => Self::ImageTooLarge(m),
            ImageError::Invalid(m) => Self::InvalidImage(m),
            ImageError::Read(m) => Self::Storage(format!("reading the image: {m}")),
        }
    }
}

/// The output size for a `width × height` image: the shorter side scaled down to `edge` and
/// the longer one to at most [`MAX_OUTPUT_ASPECT`] × `edge`, aspect ratio kept, never larger
/// than the input.
pub fn output_size(width: u32, height: u32, edge: u32) -> (u32, u32) {
    let short = f64::from(width.min(height).max(1));
    let long = f64::from(width.max(height).max(1));
    let edge = f64::from(edge.max(1));
    let scale = (edge / short).min(f64::from(MAX_OUTPUT_ASPECT) * edge / long);
    if scale >= 1.0 {
        return (width, height);
    }
    let side = |v: u32| ((f64::from(v) * scale).round() as u32).clamp(1, v.max(1));
    (side(width), side(height))
}

/// Normalises the image that `reader` yields: `len` bytes from position 0.
///
/// The header is read first (4 KiB, more for JPEGs with large metadata, up to 1 MiB), then the
/// reader is rewound and read front to back as the decoder needs it; seeks are rare (WebP
/// chunks, PNG's end). The file never has to be in memory as a whole, except the compressed
/// data of a WebP image, which its decoder reads whole. `len` decides whether a small file may
/// pass unchanged and budgets WebP.
pub fn normalise<R: BufRead + Seek>(
    reader: R,
    len: u64,
    limits: &Limits,
) -> Result<Normalised, ImageError> {
    let mut reader = Tracked {
        inner: reader,
        failure: None,
    };
    let result = run(&mut reader, len, &limits.sanitised());
    match (result, reader.failure) {
        (Err(_), Some(failure)) => Err(ImageError::Read(failure)),
        (result, _) => result,
    }
}

/// [`normalise`] for an image already in memory.
pub fn normalise_bytes(bytes: &[u8], limits: &Limits) -> Result<Normalised, ImageError> {
    normalise(Cursor::new(bytes), bytes.len() as u64, limits)
}

/// How far [`read_header`] reads looking for the dimensions before leaving them to the decoder
/// (only JPEG and GIF headers can be that long).
const HEADER_READ_LIMIT: usize = 1 << 20;

/// The decoded, downscaled image, or `None` when the original is to be sent.
type Decoded = (ImageInfo, Option<Rgb>);

/// What the decoders read from. One type whatever the caller's reader, so that each decoder is
/// compiled once (generic decoders are large: this halves the wasm when a caller uses both
/// [`normalise`] and [`normalise_bytes`]).
pub(crate) trait Input: BufRead + Seek {}

impl<T: BufRead + Seek + ?Sized> Input for T {}

fn run(r: &mut dyn Input, len: u64, limits: &Limits) -> Result<Normalised, ImageError> {
    let (format, details, mut orientation) = read_header(r)?;
    if let Some(d) = details {
        header::check_pixels(d.width, d.height, limits.max_pixels)?;
    }
    if format == ImageType::Webp {
        orientation = orient::webp(r);
        r.seek(SeekFrom::Start(0))
            .map_err(|e| ImageError::Invalid(format!("rewinding: {e}")))?;
    }
    // A turned image is re-encoded upright: never sent as it is.
    let turned;
    let limits = match orientation {
        Some(2..=8) => {
            turned = Limits {
                passthrough_bytes: 0,
                ..*limits
            };
            &turned
        }
        _ => limits,
    };
    if format == ImageType::Jpeg {
        check_jpeg_scans(r)?;
    }
    let (source, image) = match format {
        // jpeg-decoder reads a byte at a time: a buffer saves a virtual call for each.
        ImageType::Jpeg => decode_jpeg::decode(
            io::BufReader::with_capacity(16 << 10, r),
            details,
            len,
            limits,
        )?,
        ImageType::Png => decode_png::decode(r, details, len, limits)?,
        ImageType::Gif => decode_gif::decode(r, details, limits)?,
        ImageType::Webp => decode_webp::decode(r, details, len, limits)?,
    };
    match image {
        None => Ok(Normalised::Unchanged(source)),
        Some(image) => {
            let image = orient::apply(image, orientation.unwrap_or(1))?;
            Ok(Normalised::Jpeg {
                bytes: encode_jpeg(&image, limits.quality)?,
                width: image.width,
                height: image.height,
                source,
            })
        }
    }
}

/// Reads a growing prefix until [`header::parse_details`] answers, then rewinds. The
/// details are `None` when the header is longer than [`HEADER_READ_LIMIT`]. The orientation
/// is a JPEG's EXIF orientation, when its APP1 segment lies in the prefix.
type HeaderRead = (ImageType, Option<Details>, Option<u8>);

fn read_header(r: &mut dyn Input) -> Result<HeaderRead, ImageError> {
    let mut prefix = Vec::new();
    let mut want = 4096;
    let details = loop {
        let missing = (want - prefix.len()) as u64;
        let got = (&mut *r).take(missing).read_to_end(&mut prefix);
        got.map_err(|e| ImageError::Invalid(format!("reading the header: {e}")))?;
        match header::parse_details(&prefix) {
            Ok(details) => break Some(details),
            Err(Stop::Invalid(reason)) => return Err(ImageError::Invalid(reason.into())),
            Err(Stop::NeedMore) if prefix.len() < want => {
                return Err(ImageError::Invalid(
                    "the file ends inside its header".into(),
                ))
            }
            Err(Stop::NeedMore) if want >= HEADER_READ_LIMIT => break None,
            Err(Stop::NeedMore) => want *= 4,
        }
    };
    let format = match details {
        Some(d) => d.format,
        None => shared::image::format::sniff(&prefix)
            .ok_or_else(|| ImageError::Invalid("not an accepted image".into()))?,
    };
    let orientation = match format {
        ImageType::Jpeg => shared::image::orientation::jpeg(&prefix),
        _ => None,
    };
    drop(prefix);
    r.seek(SeekFrom::Start(0))
        .map_err(|e| ImageError::Invalid(format!("rewinding: {e}")))?;
    Ok((format, details, orientation))
}

/// Walks a whole JPEG once, counting its scans ([`header::JpegScans`]), and rewinds:
/// a file with more scans than its frame type allows fails as `invalid_image` before the
/// decoder spends a block walk on each of them.
fn check_jpeg_scans(r: &mut dyn Input) -> Result<(), ImageError> {
    let mut scans = header::JpegScans::new();
    loop {
        let buf = r
            .fill_buf()
            .map_err(|e| ImageError::Invalid(format!("reading: {e}")))?;
        if buf.is_empty() || scans.ended() {
            break;
        }
        let n = buf.len();
        scans
            .feed(buf)
            .map_err(|reason| ImageError::Invalid(reason.into()))?;
        r.consume(n);
    }
    r.seek(SeekFrom::Start(0))
        .map_err(|e| ImageError::Invalid(format!("rewinding: {e}")))?;
    Ok(())
}

/// The checks and the output size of an image, decided from its header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Plan {
    pub info: ImageInfo,
    pub out_w: u32,
    pub out_h: u32,
    /// Send the original (after checking that it decodes).
    pub keep: bool,
}

impl Plan {
    /// Checks the size the decoder reports against the header and the limits.
    pub fn new(
        format: ImageType,
        width: u32,
        height: u32,
        details: Option<Details>,
        len: u64,
        limits: &Limits,
    ) -> Result<Self, ImageError> {
        if let Some(d) = details {
            if (d.width, d.height) != (width, height) {
                return Err(ImageError::Invalid(format!(
                    "the header says {}x{}, the decoder {width}x{height}",
                    d.width, d.height
                )));
            }
        }
        if width == 0 || height == 0 {
            return Err(ImageError::Invalid("the image is empty".into()));
        }
        header::check_pixels(width, height, limits.max_pixels)?;
        let (out_w, out_h) = output_size(width, height, limits.edge);
        let keep = matches!(format, ImageType::Jpeg | ImageType::Png)
            && len <= limits.passthrough_bytes
            && (out_w, out_h) == (width, height);
        Ok(Self {
            info: ImageInfo {
                format,
                width,
                height,
            },
            out_w,
            out_h,
            keep,
        })
    }
}

/// Fails with `image_too_large` when a decoder would need more than the limit.
pub(crate) fn check_decode_bytes(
    what: &str,
    info: &ImageInfo,
    bytes: u64,
    limits: &Limits,
) -> Result<(), ImageError> {
    if bytes > limits.max_decode_bytes {
        return Err(ImageError::TooLarge(format!(
            "decoding this {}x{} {what} needs {} MiB, more than the {} MiB allowed",
            info.width,
            info.height,
            bytes.div_ceil(1 << 20),
            limits.max_decode_bytes >> 20
        )));
    }
    Ok(())
}

/// A decoder's error as `invalid_image`.
pub(crate) fn invalid(format: &str, e: impl fmt::Display) -> ImageError {
    ImageError::Invalid(format!("{format}: {e}"))
}

fn encode_jpeg(image: &Rgb, quality: u8) -> Result<Vec<u8>, ImageError> {
    let too_wide = || ImageError::TooLarge("the output is wider than 65535 pixels".into());
    let width = u16::try_from(image.width).map_err(|_| too_wide())?;
    let height = u16::try_from(image.height).map_err(|_| too_wide())?;
    // About 1.5 bits a pixel at quality 90: start there to avoid most regrowth.
    let mut out = Vec::with_capacity(image.data.len() / 16 + 1024);
    let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
    // 4:2:0, as cameras write (the encoder picks 4:4:4 from quality 90 on): a third smaller.
    encoder.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2);
    encoder
        .encode(&image.data, width, height, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| ImageError::Invalid(format!("encoding JPEG: {e}")))?;
    Ok(out)
}

/// Passes reads through and keeps the first failure other than an early end, so that a reader
/// failure is not mistaken for a corrupt image.
struct Tracked<R> {
    inner: R,
    failure: Option<String>,
}

/// Keeps `e` unless it is an early end (the image's fault) or a failure is already kept.
fn note(failure: &mut Option<String>, e: &io::Error) {
    let early_end = matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::Interrupted
    );
    if !early_end && failure.is_none() {
        *failure = Some(e.to_string());
    }
}

impl<R: Read> Read for Tracked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner
            .read(buf)
            .inspect_err(|e| note(&mut self.failure, e))
    }
}

impl<R: BufRead> BufRead for Tracked<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        let Self { inner, failure } = self;
        inner.fill_buf().inspect_err(|e| note(failure, e))
    }

    fn consume(&mut self, amt: usize) {
        self.inner.consume(amt)
    }
}

impl<R: Seek> Seek for Tracked<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner
            .seek(pos)
            .inspect_err(|e| note(&mut self.failure, e))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod hostile;

#[cfg(test)]
mod tests_orient;
