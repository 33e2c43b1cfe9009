//! Image type detection from magic bytes. The declared `Content-Type` is never trusted.

/// The image formats the pipeline accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ImageType {
    Jpeg,
    Png,
    Gif,
    Webp,
}

/// How many leading bytes [`sniff`] needs to recognise every accepted format.
pub const SNIFF_LEN: usize = 12;

impl ImageType {
    /// Every accepted format.
    pub const ALL: [ImageType; 4] = [Self::Jpeg, Self::Png, Self::Gif, Self::Webp];

    /// The MIME type stored as the R2 object's content type.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
        }
    }

    /// The R2 key's file extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Jpeg => "jpg",
            Self::Png => "png",
            Self::Gif => "gif",
            Self::Webp => "webp",
        }
    }

    /// The type a MIME type names, if it is one of ours (`image/jpg` and `image/pjpeg` are
    /// common aliases of JPEG). Parameters and case are ignored.
    pub fn from_mime(mime: &str) -> Option<Self> {
        match essence(mime).as_str() {
            "image/jpeg" | "image/jpg" | "image/pjpeg" => Some(Self::Jpeg),
            "image/png" => Some(Self::Png),
            "image/gif" => Some(Self::Gif),
            "image/webp" => Some(Self::Webp),
            _ => None,
        }
    }
}

/// The lowercase `type/subtype` of a media type, without parameters.
pub fn essence(media_type: &str) -> String {
    media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The magic numbers of every accepted format, `None` standing for any byte: the one table
/// both [`sniff`] and the header walk ([`crate::image::header`]) read.
pub const MAGIC: [(ImageType, &[Option<u8>]); 5] = {
    const fn s(c: u8) -> Option<u8> {
        Some(c)
    }
    [
        (ImageType::Jpeg, &[s(0xFF), s(0xD8), s(0xFF)]),
        (
            ImageType::Png,
            &[
                s(0x89),
                s(b'P'),
                s(b'N'),
                s(b'G'),
                s(0x0D),
                s(0x0A),
                s(0x1A),
                s(0x0A),
            ],
        ),
        (
            ImageType::Gif,
            &[s(b'G'), s(b'I'), s(b'F'), s(b'8'), s(b'7'), s(b'a')],
        ),
        (
            ImageType::Gif,
            &[s(b'G'), s(b'I'), s(b'F'), s(b'8'), s(b'9'), s(b'a')],
        ),
        (
            ImageType::Webp,
            &[
                s(b'R'),
                s(b'I'),
                s(b'F'),
                s(b'F'),
                None,
                None,
                None,
                None,
                s(b'W'),
                s(b'E'),
                s(b'B'),
                s(b'P'),
            ],
        ),
    ]
};

/// Recognises an image from its first bytes; `None` for anything else, including a prefix
/// too short to be sure.
pub fn sniff(prefix: &[u8]) -> Option<ImageType> {
    MAGIC.into_iter().find_map(|(format, magic)| {
        let matches = prefix.len() >= magic.len()
            && magic
                .iter()
                .zip(prefix)
                .all(|(m, b)| m.is_none_or(|m| m == *b));
        matches.then_some(format)
    })
}

/// Why a body's type is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TypeError {
    /// The bytes are not one of the accepted formats.
    NotAnImage,
    /// The bytes are an image, but the declared `image/*` type names another format.
    Mismatch { declared: String, actual: ImageType },
}

/// Sniffs the body prefix and checks it against the declared content type. Any declared
/// type is accepted for a recognised image except an `image/*` type that names another
/// format.
pub fn check_type(prefix: &[u8], declared: Option<&str>) -> Result<ImageType, TypeError> {
    let actual = sniff(prefix).ok_or(TypeError::NotAnImage)?;
    if let Some(declared) = declared {
        let declared = essence(declared);
        if declared.starts_with("image/") && ImageType::from_mime(&declared) != Some(actual) {
            return Err(TypeError::Mismatch { declared, actual });
        }
    }
    Ok(actual)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    pub const JPEG: &[u8] = b"\xff\xd8\xff\xe0\0\x10JFIF\0";
    pub const GIF: &[u8] = b"GIF89a\x01\0\x01\0\0\0";
    pub const WEBP: &[u8] = b"RIFF\x24\0\0\0WEBPVP8 ";

    #[test]
    fn recognises_each_format() {
        assert_eq!(sniff(PNG), Some(ImageType::Png));
        assert_eq!(sniff(JPEG), Some(ImageType::Jpeg));
        assert_eq!(sniff(GIF), Some(ImageType::Gif));
        assert_eq!(sniff(b"GIF87a"), Some(ImageType::Gif));
        assert_eq!(sniff(WEBP), Some(ImageType::Webp));
    }

    #[test]
    fn rejects_non_images_and_truncated_headers() {
        for bad in [
            &b""[..],
            b"<!DOCTYPE html><html>",
            b"<svg xmlns=\"http://www.w3.org/2000/svg\">",
            b"<?xml version=\"1.0\"?><svg/>",
            b"%PDF-1.7\n",
            b"hello, world",
            b"\x89PNG\r\n",
            b"\xff\xd8",
            b"GIF8",
            b"RIFF\x24\0\0\0WAVE",
            b"RIFF\x24\0\0\0WEB",
            b"BM\x36\0\0\0",
        ] {
            assert_eq!(sniff(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn declared_type_must_not_contradict() {
        assert_eq!(check_type(PNG, Some("image/png")), Ok(ImageType::Png));
        assert_eq!(check_type(PNG, Some("IMAGE/PNG; q=1")), Ok(ImageType::Png));
        assert_eq!(check_type(JPEG, Some("image/jpg")), Ok(ImageType::Jpeg));
        assert_eq!(
            check_type(PNG, Some("application/octet-stream")),
            Ok(ImageType::Png)
        );
        assert_eq!(check_type(PNG, Some("text/plain")), Ok(ImageType::Png));
        assert_eq!(check_type(PNG, None), Ok(ImageType::Png));
        assert_eq!(
            check_type(PNG, Some("image/jpeg")),
            Err(TypeError::Mismatch {
                declared: "image/jpeg".into(),
                actual: ImageType::Png
            })
        );
        assert_eq!(
            check_type(PNG, Some("image/svg+xml")),
            Err(TypeError::Mismatch {
                declared: "image/svg+xml".into(),
                actual: ImageType::Png
            })
        );
        assert_eq!(
            check_type(b"<svg/>", Some("image/svg+xml")),
            Err(TypeError::NotAnImage)
        );
    }

    #[test]
    fn mime_and_extension_round_trip() {
        for t in [
            ImageType::Jpeg,
            ImageType::Png,
            ImageType::Gif,
            ImageType::Webp,
        ] {
            assert_eq!(ImageType::from_mime(t.mime()), Some(t));
        }
    }

    proptest! {
        #[test]
        fn sniff_never_panics_and_depends_only_on_prefix(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let full = sniff(&bytes);
            let prefix = sniff(&bytes[..bytes.len().min(SNIFF_LEN)]);
            prop_assert_eq!(full, prefix);
        }

        #[test]
        fn magic_followed_by_garbage_is_accepted(garbage in proptest::collection::vec(any::<u8>(), 0..64)) {
            for (magic, t) in [(PNG, ImageType::Png), (JPEG, ImageType::Jpeg), (GIF, ImageType::Gif), (WEBP, ImageType::Webp)] {
                let mut body = magic.to_vec();
                body.extend_from_slice(&garbage);
                prop_assert_eq!(sniff(&body), Some(t));
            }
        }
    }
}
