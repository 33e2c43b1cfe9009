//! Standard Webhooks signatures, without the HMAC itself (the worker computes that with
//! WebCrypto): secrets, the signed content, and the headers.
//!
//! - `webhook-id`: the event's id, the same on every retry.
//! - `webhook-timestamp`: the attempt's time, in seconds since the epoch (receivers refuse
//!   old timestamps, so every attempt is signed afresh).
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per
//!   secret, space-separated. During a rotation both the current and the previous secret
//!   sign, so that receivers that know either one verify.

use crate::wire::base64;

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
    let key = base64::decode(encoded).ok_or(SecretError::NotBase64)?;
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
        .map(|mac| format!("v1,{}", base64::encode(mac.as_ref())))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
