//! The queue message the upload worker sends and the tagger consumes.

use serde::{Deserialize, Serialize};

use crate::ImageId;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Body of a message on `image-processing-queue`, as camelCase JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageMessage {
    /// Lets a consumer recognise bodies it does not understand; see [`SCHEMA_VERSION`].
    pub schema_version: u32,
    pub image_id: ImageId,
    /// Where the bytes are in R2.
    pub r2_key: String,
    /// The sniffed MIME type of the bytes.
    pub content_type: String,
    /// Size of the object in bytes.
    pub size: u64,
    /// Upload time, RFC 3339.
    pub uploaded_at: String,
}

/// Why a queue body could not be turned into an [`ImageMessage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON, or not the shape of any known message.
    Malformed(String),
    /// A well-formed body with a schema version this build does not know.
    UnsupportedVersion(u64),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed message body: {why}"),
            Self::UnsupportedVersion(v) => write!(
                f,
                "unsupported schema version {v} (this build understands {SCHEMA_VERSION})"
            ),
        }
    }
}

impl ImageMessage {
    /// Decodes a JSON body, checking the schema version before the shape, so that a newer
    /// producer's message is reported as such rather than as garbage.
    pub fn decode(json: &str) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Versioned {
            schema_version: Option<u64>,
        }
        let versioned: Versioned =
            serde_json::from_str(json).map_err(|e| DecodeError::Malformed(e.to_string()))?;
        match versioned.schema_version {
            Some(v) if v == u64::from(SCHEMA_VERSION) => {
                serde_json::from_str(json).map_err(|e| DecodeError::Malformed(e.to_string()))
            }
            Some(v) => Err(DecodeError::UnsupportedVersion(v)),
            None => Err(DecodeError::Malformed("missing schemaVersion".into())),
        }
    }

    /// Best effort: the image id of a body that does not decode, for logs and records.
    pub fn sniff_image_id(json: &str) -> Option<ImageId> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct WithId {
            image_id: ImageId,
        }
        serde_json::from_str::<WithId>(json)
            .ok()
            .map(|m| m.image_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ImageMessage {
        ImageMessage {
            schema_version: SCHEMA_VERSION,
            image_id: ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f").unwrap(),
            r2_key: "images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f.png".into(),
            content_type: "image/png".into(),
            size: 1234,
            uploaded_at: "2026-11-28T17:46:45.123Z".into(),
        }
    }

    #[test]
    fn serializes_as_camel_case() {
        let json = serde_json::to_value(sample()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "schemaVersion": 1,
                "imageId": "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f",
                "r2Key": "images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f.png",
                "contentType": "image/png",
                "size": 1234,
                "uploadedAt": "2026-11-28T17:46:45.123Z"
            })
        );
    }

    #[test]
    fn decode_round_trips() {
        let json = serde_json::to_string(&sample()).unwrap();
        assert_eq!(ImageMessage::decode(&json), Ok(sample()));
    }

    #[test]
    fn decode_tells_unknown_versions_from_garbage() {
        let mut v = serde_json::to_value(sample()).unwrap();
        v["schemaVersion"] = 2.into();
        assert_eq!(
            ImageMessage::decode(&v.to_string()),
            Err(DecodeError::UnsupportedVersion(2))
        );
        assert_eq!(
            ImageMessage::sniff_image_id(&v.to_string()),
            Some(sample().image_id)
        );
        for bad in [
            "",
            "null",
            "[]",
            "\"text\"",
            "{\"imageId\":1}",
            "{\"schemaVersion\":1}",
            "{",
        ] {
            assert!(
                matches!(ImageMessage::decode(bad), Err(DecodeError::Malformed(_))),
                "{bad:?}"
            );
        }
        let mut bad_id = serde_json::to_value(sample()).unwrap();
        bad_id["imageId"] = "../../etc".into();
        assert!(matches!(
            ImageMessage::decode(&bad_id.to_string()),
            Err(DecodeError::Malformed(_))
        ));
    }
}
