//! Standard Webhooks signatures, without the HMAC itself (the worker computes that with
//! WebCrypto): secrets, the signed content, and the headers.
//!
//! - `webhook-id`: the event's id, the same on every retry.
//! - `webhook-timestamp`: the attempt's time, in seconds since the epoch (receivers refuse
//!   old timestamps, so every attempt is signed afresh).
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per
//!   secret, space-separated. During a rotation both the current and the previous secret
//!   sign, so that receivers that know either one verify.

/// Header names.
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";

/// The prefix of a secret in the Standard Webhooks format.
pub const SECRET_PREFIX: &str = "whsec_";

/// Why a configured secret cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretError {
    /// Not base64 after the prefix.
    NotBase64,
    /// Fewer than [`MIN_SECRET_BYTES`] bytes of key.
    TooShort,
}

/// The shortest key accepted (the specification recommends 24 to 64 bytes).
pub const MIN_SECRET_BYTES: usize = 16;

impl std::fmt::Display for SecretError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotBase64 => write!(f, "the secret is not `whsec_` followed by base64"),
            Self::TooShort => write!(f, "the secret is shorter than {MIN_SECRET_BYTES} bytes"),
        }
    }
}

/// The key bytes of a secret: base64 after an optional `whsec_` prefix, as the Standard
/// Webhooks libraries read it.
pub fn parse_secret(raw: &str) -> Result<Vec<u8>, SecretError> {
    let raw = raw.trim();
    let encoded = raw.strip_prefix(SECRET_PREFIX).unwrap_or(raw);
    let key = base64_decode(encoded).ok_or(SecretError::NotBase64)?;
    if key.len() < MIN_SECRET_BYTES {
        return Err(SecretError::TooShort);
    }
    Ok(key)
}

/// What is signed: `{id}.{timestamp}.{body}`.
pub fn signed_content(id: &str, timestamp_s: u64, body: &str) -> String {
    format!("{id}.{timestamp_s}.{body}")
}

/// The `webhook-signature` value for one MAC per secret.
pub fn signature_header<M: AsRef<[u8]>>(macs: &[M]) -> String {
    macs.iter()
        .map(|mac| format!("v1,{}", base64_encode(mac.as_ref())))
        .collect::<Vec<_>>()
        .join(" ")
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
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
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64, padded or not; `None` for anything else (URL-safe characters,
/// whitespace, bits left over).
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2
        || (text.len() != trimmed.len() && !text.len().is_multiple_of(4))
    {
        return None;
    }
    if trimmed.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in trimmed.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
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
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
            assert_eq!(
                base64_decode(encoded.trim_end_matches('=')).unwrap(),
                plain.as_bytes()
            );
        }
        for bad in ["Zg=", "Z", "Zh==", "Zm9v-_", "Zm 9v", "Zg===", "=Zg="] {
            assert_eq!(base64_decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn secrets() {
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(key.len(), 24);
        assert_eq!(
            parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap(),
            key,
            "the prefix is optional"
        );
        assert_eq!(parse_secret("whsec_"), Err(SecretError::TooShort));
        assert_eq!(parse_secret("whsec_c2hvcnQ="), Err(SecretError::TooShort));
        assert_eq!(
            parse_secret("whsec_not base64!"),
            Err(SecretError::NotBase64)
        );
    }

    /// The example of the Standard Webhooks specification: its secret, id, timestamp and
    /// body give its signature. The HMAC is computed natively here; the worker computes the
    /// same with WebCrypto.
    #[test]
    fn the_specification_example() {
        use hmac::{Hmac, Mac};
        let key = parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let content = signed_content(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            r#"{"test": 2432232314}"#,
        );
        assert_eq!(
            content,
            r#"msg_p5jXN8AQM9LWM0D4loKWxJek.1614265330.{"test": 2432232314}"#
        );
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(content.as_bytes());
        let mac = mac.finalize().into_bytes();
        assert_eq!(
            signature_header(&[mac.as_slice()]),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert_eq!(
            signature_header(&[[0u8; 2], [255u8; 2]]),
            "v1,AAA= v1,//8=",
            "one signature per secret, space-separated"
        );
    }

    proptest! {
        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let text = base64_encode(&bytes);
            prop_assert_eq!(text.len() % 4, 0);
            prop_assert_eq!(base64_decode(&text), Some(bytes.clone()));
            prop_assert_eq!(base64_decode(text.trim_end_matches('=')), Some(bytes));
        }

        #[test]
        fn base64_decode_never_panics(text in "\\PC{0,40}") {
            if let Some(bytes) = base64_decode(&text) {
                let again = base64_encode(&bytes);
                prop_assert_eq!(again.trim_end_matches('='), text.trim_end_matches('='));
            }
        }
    }
}
