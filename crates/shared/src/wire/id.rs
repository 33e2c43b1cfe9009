//! Image ids: random (version 4) UUIDs in their canonical lowercase form.
//!
//! Ids end up in R2 and KV keys, so parsing is strict: exactly 36 characters, lowercase hex
//! and hyphens in the canonical places. Anything else (upper case, braces, `urn:uuid:`,
//! percent-encoding, path separators, Unicode) is rejected, which rules out key injection.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// A validated image id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageId(Uuid);

/// Why a string is not an [`ImageId`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvalidId;

impl fmt::Display for InvalidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "image ids are lowercase version 4 UUIDs like 3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f",
        )
    }
}

impl std::error::Error for InvalidId {}

impl ImageId {
    /// Wraps freshly generated random bytes (from a v4 generator) as an id.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, InvalidId> {
        if uuid.get_version_num() == 4 && uuid.get_variant() == uuid::Variant::RFC4122 {
            Ok(Self(uuid))
        } else {
            Err(InvalidId)
        }
    }

    /// The id's 16 bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// Parses the canonical form, and only that.
    pub fn parse(s: &str) -> Result<Self, InvalidId> {
        let bytes = s.as_bytes();
        if bytes.len() != 36 {
            return Err(InvalidId);
        }
        let canonical = bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        });
        if !canonical {
            return Err(InvalidId);
        }
        Uuid::parse_str(s)
            .map_err(|_| InvalidId)
            .and_then(Self::from_uuid)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for ImageId {
    type Err = InvalidId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ImageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";

    #[test]
    fn accepts_canonical_v4() {
        let id = ImageId::parse(GOOD).unwrap();
        assert_eq!(id.to_string(), GOOD);
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "3F2B8C1E-9D4A-4B7E-8C2D-1A2B3C4D5E6F",
            "{3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f}",
            "urn:uuid:3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f",
            "3f2b8c1e9d4a4b7e8c2d1a2b3c4d5e6f",
            "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f0",
            "3f2b8c1e-9d4a-1b7e-8c2d-1a2b3c4d5e6f", // version 1
            "3f2b8c1e-9d4a-4b7e-cc2d-1a2b3c4d5e6f", // wrong variant
            "00000000-0000-0000-0000-000000000000",
            "../../../../etc/passwd/aaaaaaaaaaaaaaa",
            "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6%2f",
            "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5é6",
            "3f2b8c1e/9d4a-4b7e-8c2d-1a2b3c4d5e6f",
        ] {
            assert_eq!(ImageId::parse(bad), Err(InvalidId), "{bad:?}");
        }
    }

    #[test]
    fn serde_round_trip_validates() {
        let id = ImageId::parse(GOOD).unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{GOOD}\""));
        assert_eq!(serde_json::from_str::<ImageId>(&json).unwrap(), id);
        assert!(serde_json::from_str::<ImageId>("\"not-an-id\"").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_canonical(s in "\\PC{0,64}") {
            if let Ok(id) = ImageId::parse(&s) {
                prop_assert_eq!(id.to_string(), s);
            }
        }

        #[test]
        fn every_v4_uuid_round_trips(bytes in any::<[u8; 16]>()) {
            let uuid = uuid::Builder::from_random_bytes(bytes).into_uuid();
            let id = ImageId::from_uuid(uuid).unwrap();
            prop_assert_eq!(ImageId::parse(&id.to_string()), Ok(id));
            prop_assert_eq!(ImageId::parse(&id.to_string().to_uppercase()), Err(InvalidId));
        }
    }
}
