//! The head of an upload: enough of its first bytes to know its type and, where its header
//! says, its size in pixels, so that a bad or oversized image is refused before anything is
//! stored.
//!
//! The bytes are gathered up to [`HEAD_CAP`]. An image whose size is still unknown there (a
//! JPEG with more than 256 KiB of segments before its frame header), or whose header
//! [`crate::image::header`] finds malformed, is accepted: sniffing only promises the type, and
//! the tagger measures the image again before decoding it.
//!
//! A JPEG's head goes on past its frame header, up to [`HEAD_CAP`] or the image's end, counting
//! its scans ([`header::JpegScans`]): one with more scans than any encoder writes is
//! refused as `422 invalid_image`. Scans that start beyond the head are not seen here; the
//! tagger counts every scan of the file before decoding it.

use crate::api::ApiError;
use crate::image::format::{check_type, ImageType, SNIFF_LEN};
use crate::image::header::{self, check_pixels, Header};

/// The most bytes of an upload's head that are read to find its size.
pub const HEAD_CAP: usize = 256 * 1024;

/// What the head read so far says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// More bytes may decide.
    NeedMore,
    /// The upload may be stored, as this type.
    Accept(ImageType),
}

/// The first bytes of an upload, gathered until they decide. The header is parsed when the
/// head reaches 12, 24, 48, ... bytes (parsing is linear, so this costs at most twice one
/// parse of the final length), so the verdict does not depend on how the bytes were cut.
#[derive(Clone, Debug)]
pub struct Head {
    bytes: Vec<u8>,
    max_pixels: u64,
    /// The type, once sniffed and checked against the declared one.
    image_type: Option<ImageType>,
    /// The length at which the header is parsed next.
    next_parse: usize,
    decided: Option<ImageType>,
}

impl Head {
    /// An empty head, for an image of at most `max_pixels` pixels.
    pub fn new(max_pixels: u64) -> Self {
        Self {
            bytes: Vec::new(),
            max_pixels,
            image_type: None,
            next_parse: SNIFF_LEN,
            decided: None,
        }
    }

    /// How many bytes the head takes before it parses again (0 once decided).
    pub fn wants(&self) -> usize {
        match self.decided {
            Some(_) => 0,
            None => self.next_parse.min(HEAD_CAP) - self.bytes.len(),
        }
    }

    /// The type, once the head has decided to accept the upload.
    pub fn decided(&self) -> Option<ImageType> {
        self.decided
    }

    /// The bytes taken so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether no byte was taken.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Offers the next bytes of the upload (after those offered before); takes only what
    /// deciding needs. `declared` is the client's claimed type.
    pub fn feed(&mut self, mut more: &[u8], declared: Option<&str>) -> Result<Verdict, ApiError> {
        loop {
            if let Some(t) = self.decided {
                return Ok(Verdict::Accept(t));
            }
            let take = self.wants().min(more.len());
            self.bytes.extend_from_slice(&more[..take]);
            more = &more[take..];
            if self.wants() > 0 {
                return Ok(Verdict::NeedMore);
            }
            let cap = self.bytes.len() >= HEAD_CAP;
            self.next_parse = self.bytes.len() * 2;
            self.parse(declared, cap)?;
        }
    }

    /// No more bytes will come (the file or body ended): decides on what there is.
    pub fn finish(&mut self, declared: Option<&str>) -> Result<ImageType, ApiError> {
        match self.decided {
            Some(t) => Ok(t),
            None if self.bytes.is_empty() => Err(ApiError::EmptyBody),
            None => self.parse(declared, true)?.ok_or_else(|| {
                ApiError::Internal("the head is undecided after its last byte".into())
            }),
        }
    }

    /// Parses the head; `last` accepts an image whose size is still unknown.
    fn parse(&mut self, declared: Option<&str>, last: bool) -> Result<Option<ImageType>, ApiError> {
        if self.bytes.len() < SNIFF_LEN && !last {
            return Ok(None);
        }
        let image_type = match self.image_type {
            Some(t) => t,
            None => *self.image_type.insert(check_type(&self.bytes, declared)?),
        };
        let accept = match header::parse(&self.bytes) {
            Header::Known { width, height, .. } => {
                check_pixels(width, height, self.max_pixels)?;
                // A JPEG's scans follow its frame header: the head reads on, up to its cap
                // or the image's end, to count them.
                match image_type {
                    ImageType::Jpeg => {
                        let scans = header::jpeg_scans(&self.bytes)
                            .map_err(|why| ApiError::InvalidImage(why.into()))?;
                        scans.ended() || last
                    }
                    _ => true,
                }
            }
            // The tagger's decoder has the last word on a malformed header.
            Header::Invalid(_) => true,
            Header::NeedMore => last,
        };
        if accept {
            self.decided = Some(image_type);
        }
        Ok(self.decided)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u64 = 50_000_000;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        b.extend_from_slice(&width.to_be_bytes());
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
        b
    }

    /// A JPEG whose frame header follows an APP1 segments of `app` bytes in all.
    fn jpeg(app: usize, width: u16, height: u16) -> Vec<u8> {
        let mut b = vec![0xFF, 0xD8];
        let mut left = app;
        while left > 0 {
            let n = left.min(65533);
            b.extend_from_slice(&[0xFF, 0xE1]);
            b.extend_from_slice(&((n + 2) as u16).to_be_bytes());
            b.extend(std::iter::repeat_n(0x45, n));
            left -= n;
        }
        b.extend_from_slice(&[0xFF, 0xC0, 0, 17, 8]);
        b.extend_from_slice(&height.to_be_bytes());
        b.extend_from_slice(&width.to_be_bytes());
        b.extend_from_slice(&[3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1]);
        b.extend_from_slice(&[0xFF, 0xDA]);
        b
    }

    /// Feeds `file` in `step`-byte pieces; the verdict and how many bytes it took.
    fn run(
        file: &[u8],
        step: usize,
        declared: Option<&str>,
    ) -> (Result<ImageType, ApiError>, usize) {
        let mut head = Head::new(MAX);
        for piece in file.chunks(step.max(1)) {
            match head.feed(piece, declared) {
                Ok(Verdict::NeedMore) => assert!(head.wants() > 0),
                Ok(Verdict::Accept(t)) => return (Ok(t), head.len()),
                Err(e) => return (Err(e), head.len()),
            }
        }
        (head.finish(declared), head.len())
    }

    #[test]
    fn small_headers_decide_at_once() {
        let (v, used) = run(&[png(100, 100), vec![0; 10_000]].concat(), 4096, None);
        assert_eq!(v, Ok(ImageType::Png));
        assert_eq!(used, 24);
        let (v, used) = run(&png(30_000, 30_000), 64, None);
        assert_eq!(v.unwrap_err().code(), "image_too_large");
        assert!(used <= 64);
    }

    #[test]
    fn a_jpeg_frame_header_after_100_kib_of_segments() {
        let file = [jpeg(100 * 1024, 8000, 7000), vec![0; 500_000]].concat();
        let (v, used) = run(&file, 16 * 1024, Some("image/jpeg"));
        assert_eq!(v.unwrap_err().code(), "image_too_large");
        // Parsed at 12 × 2^k bytes: the first such length past the frame header.
        assert_eq!(used, 12 << 14);
        let (v, _) = run(&jpeg(100 * 1024, 4000, 3000), 1000, None);
        assert_eq!(v, Ok(ImageType::Jpeg));
    }

    #[test]
    fn past_the_cap_the_size_is_left_to_the_tagger() {
        let file = jpeg(HEAD_CAP + 10, 60_000, 60_000);
        let (v, used) = run(&file, 50_000, None);
        assert_eq!(v, Ok(ImageType::Jpeg));
        assert_eq!(used, HEAD_CAP);
    }

    #[test]
    fn type_errors_and_empty_bodies() {
        assert_eq!(run(b"", 10, None).0, Err(ApiError::EmptyBody));
        assert_eq!(
            run(b"<html>hello</html>", 5, None).0.unwrap_err().code(),
            "unsupported_media_type"
        );
        assert_eq!(
            run(&png(1, 1), 3, Some("image/jpeg")).0.unwrap_err().code(),
            "unsupported_media_type"
        );
        // Short but complete: decided on what there is.
        assert_eq!(run(&[0xFF, 0xD8, 0xFF], 1, None).0, Ok(ImageType::Jpeg));
        assert_eq!(
            run(&[0xFF, 0xD8], 1, None).0.unwrap_err().code(),
            "unsupported_media_type"
        );
        // A malformed header is the tagger's business.
        let mut bad = png(1, 1);
        bad[12] = b'X';
        assert_eq!(run(&bad, 1, None).0, Ok(ImageType::Png));
    }

    proptest! {
        #[test]
        fn the_verdict_does_not_depend_on_the_pieces(
            width in 1u32..100_000, height in 1u32..100_000,
            app in 0usize..300_000, step in 1usize..70_000,
        ) {
            let file = jpeg(app, (width % 65535 + 1) as u16, (height % 65535 + 1) as u16);
            prop_assert_eq!(run(&file, step, None).0, run(&file, file.len(), None).0);
            let file = png(width, height);
            prop_assert_eq!(run(&file, step.min(30), None).0, run(&file, file.len(), None).0);
        }
    }

    #[test]
    fn a_jpeg_with_more_scans_than_encoders_write_is_refused() {
        use crate::image::header::tests::jpeg_with_scans;
        use crate::image::header::MAX_PROGRESSIVE_SCANS;
        let max = MAX_PROGRESSIVE_SCANS as usize;
        for step in [1, 7, 4096, 1 << 20] {
            let (v, _) = run(&jpeg_with_scans(true, max), step, None);
            assert_eq!(v, Ok(ImageType::Jpeg), "{step}");
            let (v, used) = run(&jpeg_with_scans(true, max + 1), step, None);
            let e = v.unwrap_err();
            assert_eq!((e.status(), e.code()), (422, "invalid_image"), "{step}");
            assert!(e.message().contains("more scans"), "{e}");
            assert!(used <= jpeg_with_scans(true, max + 1).len());
        }
        // Scans past the head's cap are the tagger's to count.
        let mut far = jpeg(HEAD_CAP, 100, 100);
        far.truncate(far.len() - 2);
        far.extend_from_slice(&jpeg_with_scans(true, max + 1)[2..]);
        assert_eq!(run(&far, 65536, None).0, Ok(ImageType::Jpeg));
    }
}
