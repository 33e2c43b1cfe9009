//! `GET /images/{id}/content`, as pure functions: which bytes to send (`Range`, `If-Range`),
//! whether the client's copy is current (`If-None-Match`), and the response headers.
//!
//! An image's bytes never change after upload (a new upload is a new id), so its id is
//! its entity tag: `"{id}"`, a strong validator that needs no read of the object.

use crate::{ImageId, ImageType};

/// The strong entity tag of an image's bytes.
pub fn etag(id: &ImageId) -> String {
    format!("\"{id}\"")
}

/// Whether `If-None-Match` matches `etag` (weak comparison, as RFC 9110 asks): the client's
/// copy is current and the answer is `304`.
pub fn not_modified(if_none_match: Option<&str>, etag: &str) -> bool {
    let Some(header) = if_none_match else {
        return false;
    };
    let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
    header.trim() == "*" || header.split(',').any(|t| bare(t) == bare(etag))
}

/// What to send of an object of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// All of it: `200`.
    Whole,
    /// Bytes `start..=end`: `206` with `Content-Range`.
    Range { start: u64, end: u64 },
    /// `416` with `Content-Range: bytes */{size}`.
    Unsatisfiable,
}

impl Part {
    /// The part a request asks for. A `Range` that is not one well-formed byte range, or an
    /// `If-Range` that does not match `etag` exactly, gets the whole object (RFC 9110 lets a
    /// server ignore such a `Range`); several ranges are served whole as well.
    pub fn of(range: Option<&str>, if_range: Option<&str>, etag: &str, size: u64) -> Self {
        let Some(range) = range else {
            return Self::Whole;
        };
        // A weak tag or a date never matches: only the same strong tag resumes.
        if if_range.is_some_and(|v| v.trim() != etag) {
            return Self::Whole;
        }
        let Some((unit, spec)) = range.trim().split_once('=') else {
            return Self::Whole;
        };
        if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
            return Self::Whole;
        }
        let Some((first, last)) = spec.trim().split_once('-') else {
            return Self::Whole;
        };
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        };
        let (first, last) = (first.trim(), last.trim());
        if first.is_empty() {
            // `bytes=-N`: the last N bytes.
            return match number(last) {
                None => Self::Whole,
                Some(0) => Self::Unsatisfiable,
                Some(_) if size == 0 => Self::Unsatisfiable,
                Some(n) => Self::Range {
                    start: size.saturating_sub(n),
                    end: size - 1,
                },
            };
        }
        // `bytes=A-` and `bytes=A-B`.
        let Some(start) = number(first) else {
            return Self::Whole;
        };
        let end = match number(last) {
            _ if last.is_empty() => u64::MAX,
            Some(end) if end >= start => end,
            _ => return Self::Whole,
        };
        if start >= size {
            Self::Unsatisfiable
        } else {
            Self::Range {
                start,
                end: end.min(size - 1),
            }
        }
    }
}

/// The headers of a content answer (`200`, `206` or `304`; a `304` has no length or type).
pub fn headers(
    id: &ImageId,
    content_type: &str,
    size: u64,
    part: Part,
    not_modified: bool,
) -> Vec<(&'static str, String)> {
    let mut headers = vec![("etag", etag(id)), ("cache-control", "private".to_string())];
    if not_modified {
        return headers;
    }
    let ext = ImageType::from_mime(content_type).map_or("bin", ImageType::extension);
    headers.extend([
        ("content-type", content_type.to_string()),
        ("accept-ranges", "bytes".to_string()),
        (
            "content-disposition",
            format!("inline; filename=\"{id}.{ext}\""),
        ),
    ]);
    match part {
        Part::Range { start, end } => {
            headers.push(("content-length", (end - start + 1).to_string()));
            headers.push(("content-range", format!("bytes {start}-{end}/{size}")));
        }
        Part::Whole => headers.push(("content-length", size.to_string())),
        Part::Unsatisfiable => {}
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TAG: &str = "\"3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f\"";

    fn part(range: &str, size: u64) -> Part {
        Part::of(Some(range), None, TAG, size)
    }

    #[test]
    fn ranges() {
        use Part::*;
        assert_eq!(Part::of(None, None, TAG, 10), Whole);
        assert_eq!(part("bytes=0-3", 10), Range { start: 0, end: 3 });
        assert_eq!(part("bytes=5-", 10), Range { start: 5, end: 9 });
        assert_eq!(part("bytes=5-100", 10), Range { start: 5, end: 9 });
        assert_eq!(part("bytes=-3", 10), Range { start: 7, end: 9 });
        assert_eq!(part("bytes=-30", 10), Range { start: 0, end: 9 });
        assert_eq!(part("Bytes = 2-2", 10), Range { start: 2, end: 2 });
        assert_eq!(part("bytes=10-", 10), Unsatisfiable);
        assert_eq!(part("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(part("bytes=-0", 10), Unsatisfiable);
        for ignored in [
            "bytes=3-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=a-b",
            "bytes=-",
            "bytes",
            "bytes=1-2-3",
            "bytes=99999999999999999999-",
        ] {
            assert_eq!(part(ignored, 10), Whole, "{ignored}");
        }
    }

    #[test]
    fn if_range_must_match_exactly() {
        let p = |if_range: &str| Part::of(Some("bytes=0-1"), Some(if_range), TAG, 10);
        assert_eq!(p(TAG), Part::Range { start: 0, end: 1 });
        assert_eq!(p(&format!("W/{TAG}")), Part::Whole);
        assert_eq!(p("Sat, 29 Nov 2026 12:00:00 GMT"), Part::Whole);
        assert_eq!(p("\"other\""), Part::Whole);
    }

    #[test]
    fn if_none_match() {
        assert!(!not_modified(None, TAG));
        assert!(not_modified(Some(TAG), TAG));
        assert!(not_modified(Some(&format!("\"x\", W/{TAG}")), TAG));
        assert!(not_modified(Some("*"), TAG));
        assert!(!not_modified(Some("\"x\""), TAG));
    }

    #[test]
    fn header_sets() {
        let id = ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f").unwrap();
        let get = |h: &[(&str, String)], name: &str| {
            h.iter().find(|(n, _)| *n == name).map(|(_, v)| v.clone())
        };
        let whole = headers(&id, "image/png", 10, Part::Whole, false);
        assert_eq!(get(&whole, "content-length").as_deref(), Some("10"));
        assert_eq!(
            get(&whole, "content-disposition").as_deref(),
            Some("inline; filename=\"3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f.png\"")
        );
        assert_eq!(get(&whole, "etag").as_deref(), Some(TAG));
        let range = headers(
            &id,
            "image/jpeg",
            10,
            Part::Range { start: 2, end: 4 },
            false,
        );
        assert_eq!(get(&range, "content-length").as_deref(), Some("3"));
        assert_eq!(
            get(&range, "content-range").as_deref(),
            Some("bytes 2-4/10")
        );
        let cached = headers(&id, "image/png", 10, Part::Whole, true);
        assert_eq!(get(&cached, "content-type"), None);
        assert_eq!(get(&cached, "cache-control").as_deref(), Some("private"));
    }

    proptest! {
        /// A range, when given, always lies inside the object.
        #[test]
        fn ranges_stay_inside(range in "\\PC{0,30}", size in 0u64..1000) {
            if let Part::Range { start, end } = Part::of(Some(&range), None, TAG, size) {
                prop_assert!(start <= end && end < size);
            }
        }

        #[test]
        fn numeric_ranges_stay_inside(a in 0u64..2000, b in 0u64..2000, size in 0u64..1000) {
            for range in [format!("bytes={a}-{b}"), format!("bytes={a}-"), format!("bytes=-{b}")] {
                match Part::of(Some(&range), None, TAG, size) {
                    Part::Range { start, end } => prop_assert!(start <= end && end < size),
                    Part::Unsatisfiable => prop_assert!(a >= size || b == 0 || size == 0),
                    Part::Whole => {
                        let both = format!("bytes={}-{}", a, b);
                        prop_assert!(range == both && b < a);
                    }
                }
            }
        }
    }
}
