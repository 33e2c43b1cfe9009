//! The one base64: standard (padded, for webhook signatures and secrets) and base64url
//! (unpadded, for search cursors). Decoding is canonical: unused trailing bits must be zero,
//! so that each value has exactly one text.

/// The standard alphabet (RFC 4648 section 4).
pub const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The URL- and filename-safe alphabet (RFC 4648 section 5).
pub const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The longest base64url text [`url_decode`] reads.
pub const MAX_URL_TEXT: usize = 4096;

/// Standard base64 with padding.
pub fn encode(bytes: &[u8]) -> String {
    encode_with(STANDARD, bytes, true)
}

/// Standard base64, padded or not; `None` for anything else (URL-safe characters,
/// whitespace, bits left over).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2
        || (text.len() != trimmed.len() && !text.len().is_multiple_of(4))
    {
        return None;
    }
    decode_with(STANDARD, trimmed)
}

/// base64url without padding.
pub fn url_encode(bytes: &[u8]) -> String {
    encode_with(URL_SAFE, bytes, false)
}

/// Decodes canonical base64url without padding, at most [`MAX_URL_TEXT`] characters.
pub fn url_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() > MAX_URL_TEXT {
        return None;
    }
    decode_with(URL_SAFE, text)
}

fn encode_with(alphabet: &[u8; 64], bytes: &[u8], pad: bool) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes unpadded text in `alphabet`; `None` for a character outside it, a length that
/// no byte string encodes to, or non-zero bits left over.
fn decode_with(alphabet: &[u8; 64], text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = alphabet.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero (canonical encoding).
    (acc == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn base64_vectors() {
        // RFC 4648, section 10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), encoded);
            assert_eq!(decode(encoded).unwrap(), plain.as_bytes());
            assert_eq!(
                decode(encoded.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        for bad in ["Zg=", "Z", "Zh==", "Zm9v-_", "Zm 9v", "Zg===", "=Zg="] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn url_known_values() {
        assert_eq!(url_encode(b""), "");
        assert_eq!(url_encode(b"f"), "Zg");
        assert_eq!(url_encode(b"fo"), "Zm8");
        assert_eq!(url_encode(b"foo"), "Zm9v");
        assert_eq!(url_encode(&[0xfb, 0xff]), "-_8");
        assert_eq!(url_decode("-_8"), Some(vec![0xfb, 0xff]));
        assert_eq!(url_decode("Zh"), None, "non-zero trailing bits");
        assert_eq!(url_decode("Zg=="), None, "no padding");
        assert_eq!(url_decode("Z"), None);
        assert_eq!(url_decode("Zm9v+A"), None, "not the url alphabet");
        assert_eq!(url_decode(&"A".repeat(MAX_URL_TEXT + 4)), None, "too long");
    }

    proptest! {
        #[test]
        fn url_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let text = url_encode(&bytes);
            prop_assert_eq!(url_decode(&text), Some(bytes));
        }

        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let text = encode(&bytes);
            prop_assert_eq!(text.len() % 4, 0);
            prop_assert_eq!(decode(&text), Some(bytes.clone()));
            prop_assert_eq!(decode(text.trim_end_matches('=')), Some(bytes));
        }

        #[test]
        fn base64_decode_never_panics(text in "\\PC{0,40}") {
            if let Some(bytes) = decode(&text) {
                let again = encode(&bytes);
                prop_assert_eq!(again.trim_end_matches('='), text.trim_end_matches('='));
            }
        }
    }
}
