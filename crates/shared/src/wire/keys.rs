//! Storage key naming. Every R2 and KV key is built here, from validated parts only.

use crate::wire::id::ImageId;

/// Prefix of every uploaded object in R2.
pub const OBJECT_PREFIX: &str = "images/";

/// R2 key of an image: `images/{id}.{ext}`, `extension` being its type's
/// ([`crate::image::format::ImageType::extension`]).
pub fn object_key(id: &ImageId, extension: &'static str) -> String {
    format!("{OBJECT_PREFIX}{id}.{extension}")
}

/// R2 list prefix that finds an image's object whatever its extension.
pub fn object_prefix(id: &ImageId) -> String {
    format!("{OBJECT_PREFIX}{id}.")
}

/// Prefix of an image's tag record in KV.
pub const RECORD_PREFIX: &str = "tags:";
/// Prefix of a kept poison message in KV.
pub const POISON_PREFIX: &str = "poison:";

/// KV key of an image's tag record.
pub fn record_key(id: &ImageId) -> String {
    format!("{RECORD_PREFIX}{id}")
}

/// KV key under which a message that could not be decoded is kept.
pub fn poison_key(message_id: &str) -> String {
    let safe: String = message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .take(128)
        .collect();
    format!("{POISON_PREFIX}{safe}")
}

/// The shape of every key, with `{id}`, `{ext}` and `{messageId}` placeholders, for the
/// generated contract.
pub fn templates() -> serde_json::Value {
    serde_json::json!({
        "object": format!("{OBJECT_PREFIX}{{id}}.{{ext}}"),
        "record": format!("{RECORD_PREFIX}{{id}}"),
        "poison": format!("{POISON_PREFIX}{{messageId}}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable() {
        let id = ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f").unwrap();
        assert_eq!(
            object_key(&id, "png"),
            "images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f.png"
        );
        assert!(object_key(&id, "jpg").starts_with(&object_prefix(&id)));
        assert_eq!(record_key(&id), "tags:3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f");
        assert_eq!(poison_key("ab/../c d"), "poison:abcd");
    }
}
