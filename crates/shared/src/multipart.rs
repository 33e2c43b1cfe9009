//! `multipart/form-data` header handling. The body itself is parsed by the runtime's
//! `FormData`, which keeps file contents out of wasm memory; this module decides, before
//! that, whether a request is a well-formed multipart upload.

use crate::api::ApiError;
use crate::sniff::essence;

/// Form fields that may carry the image.
pub const FILE_FIELDS: [&str; 2] = ["image", "file"];

/// Whether a `Content-Type` announces a multipart form.
pub fn is_multipart(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|ct| essence(ct) == "multipart/form-data")
}

/// Extracts and validates the boundary of a `multipart/form-data` content type (RFC 2046:
/// 1 to 70 characters from a restricted set, not ending in a space, optionally quoted).
pub fn boundary(content_type: &str) -> Result<String, ApiError> {
    let bad = |why: &str| ApiError::InvalidMultipart(format!("invalid multipart boundary: {why}"));
    let raw = content_type
        .split(';')
        .skip(1)
        .filter_map(|param| param.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, value)| value.trim())
        .ok_or_else(|| bad("missing"))?;
    let value = match raw.strip_prefix('"') {
        Some(quoted) => quoted
            .strip_suffix('"')
            .ok_or_else(|| bad("unterminated quote"))?,
        None => raw,
    };
    if value.is_empty() || value.len() > 70 {
        return Err(bad("must be 1 to 70 characters"));
    }
    if value.ends_with(' ') {
        return Err(bad("must not end with a space"));
    }
    if !value.bytes().all(is_bchar) {
        return Err(bad("contains a character RFC 2046 does not allow"));
    }
    Ok(value.to_string())
}

/// RFC 2046 `bchars`.
fn is_bchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&b)
}

/// Picks the single file of a form from `(field name, is a file)` pairs: exactly one file
/// across the [`FILE_FIELDS`], else an error saying what is wrong.
pub fn pick_file_field<'a>(
    fields: impl IntoIterator<Item = (&'a str, bool)>,
) -> Result<&'a str, ApiError> {
    let mut found = None;
    for (name, is_file) in fields {
        if !FILE_FIELDS.contains(&name) {
            continue;
        }
        if !is_file {
            return Err(ApiError::InvalidMultipart(format!(
                "field `{name}` must be a file"
            )));
        }
        if found.replace(name).is_some() {
            return Err(ApiError::InvalidMultipart("send exactly one file".into()));
        }
    }
    found.ok_or_else(|| ApiError::InvalidMultipart("no file in field `image` or `file`".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn boundaries() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").unwrap(),
            "abc"
        );
        assert_eq!(
            boundary("multipart/form-data; charset=utf-8; BOUNDARY=\"a b'c\"").unwrap(),
            "a b'c"
        );
        assert_eq!(
            boundary("multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW")
                .unwrap(),
            "----WebKitFormBoundary7MA4YWxkTrZu0gW"
        );
        for bad in [
            "multipart/form-data",
            "multipart/form-data; boundary=",
            "multipart/form-data; boundary=\"\"",
            "multipart/form-data; boundary=\"abc",
            "multipart/form-data; boundary=\"abc \"",
            "multipart/form-data; boundary=a\u{0}b",
            "multipart/form-data; boundary=a<b>",
            "multipart/form-data; boundary=é",
        ] {
            assert!(boundary(bad).is_err(), "{bad:?}");
        }
        assert!(boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))).is_err());
        assert!(is_multipart(Some("Multipart/Form-Data; boundary=x")));
        assert!(!is_multipart(Some("image/png")));
        assert!(!is_multipart(None));
    }

    #[test]
    fn exactly_one_file() {
        assert_eq!(pick_file_field([("image", true)]), Ok("image"));
        assert_eq!(
            pick_file_field([("note", false), ("file", true)]),
            Ok("file")
        );
        assert!(pick_file_field([]).is_err());
        assert!(pick_file_field([("image", false)]).is_err());
        assert!(pick_file_field([("other", true)]).is_err());
        assert!(pick_file_field([("image", true), ("file", true)]).is_err());
        assert!(pick_file_field([("image", true), ("image", true)]).is_err());
    }

    proptest! {
        #[test]
        fn boundary_never_panics(s in "\\PC{0,120}") {
            let _ = boundary(&s);
        }

        #[test]
        fn valid_boundaries_round_trip(b in "[A-Za-z0-9'()+_,./:=?-]{1,70}") {
            let plain = format!("multipart/form-data; boundary={b}");
            prop_assert_eq!(boundary(&plain).unwrap(), b.clone());
            let quoted = format!("multipart/form-data; boundary=\"{b}\"");
            prop_assert_eq!(boundary(&quoted).unwrap(), b);
        }
    }
}
