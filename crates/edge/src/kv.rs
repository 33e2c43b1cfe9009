//! KV reads both workers make: the finished record of an image (the fast read path).

use shared::wire::keys::record_key;
use shared::{ImageId, TagRecord};
use worker::KvStore;

use crate::fail::PlatformError;

/// The record KV holds for an image, if any (a record that does not parse counts as none).
pub async fn published<E: PlatformError>(
    kv: &KvStore,
    id: &ImageId,
) -> Result<Option<TagRecord>, E> {
    let text = kv
        .get(&record_key(id))
        .text()
        .await
        .map_err(|e| E::platform("KV get", e))?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}
