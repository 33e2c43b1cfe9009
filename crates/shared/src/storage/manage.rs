//! The statements of finding and managing images: search and list, the tag cloud, the
//! content lookup, deletes and retention. The native tests run each query shape against
//! the migrations in SQLite, compare it with a plain reference, and check with
//! `EXPLAIN QUERY PLAN` that no shape scans a table or sorts.
//!
//! Search walks an index in the newest-first order and stops after a page:
//! - no tag: `images_by_upload`, or `images_by_status` with a status;
//! - one tag: `image_tags`' primary key `(tag, uploaded_at, image_id)`, then each image;
//! - several tags: the same walk over the rarest of them (by `tag_counts`; SQLite's `min()`
//!   gives the bare column of the row it picks), keeping the images that have every tag (a
//!   primary key lookup each). A tag nobody has counts 0, so the walk is over nothing.

use serde::Deserialize;

use crate::api::search::{ListItem, Position, SearchQuery};
use crate::wire::time::format_ms;
use crate::{ImageId, Status};

/// A bound parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Int(u64),
    Text(String),
}

/// A statement and its parameters (`?1`, `?2`, … in order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Param>,
}

impl Statement {
    fn bind(&mut self, param: Param) -> String {
        self.params.push(param);
        format!("?{}", self.params.len())
    }
}

/// The columns a list item needs (not the labels: they can be large).
const COLUMNS: &str = "i.id, i.status, i.tags, i.categories, i.content_type, i.size, \
     i.uploaded_at, i.processed_at";

/// One page of `GET /images` over every image (the operator's search), newest first, with
/// one row more than `limit` to tell whether there is a next page. `cursor` is the verified
/// position the page starts after.
pub fn search(query: &SearchQuery, cursor: Option<Position>) -> Statement {
    search_as(query, cursor, None)
}

/// [`search`] over the images of `owner` only (a client's search), or of everyone (`None`).
/// A client's walk uses the owner's indexes (`images_by_owner`, `images_by_owner_status`,
/// `image_tags_by_owner`, `owner_tag_counts`), so it never steps over other owners' rows.
pub fn search_as(query: &SearchQuery, cursor: Option<Position>, owner: Option<&str>) -> Statement {
    let mut st = Statement {
        sql: String::new(),
        params: Vec::new(),
    };
    let owner = owner.map(|o| st.bind(Param::Text(o.to_string())));
    let filters = &query.filters;
    let tags: Vec<String> = filters
        .tags
        .iter()
        .map(|t| st.bind(Param::Text(t.clone())))
        .collect();
    // The owner's rows only: of images, of the tag index, and of the counts.
    // (SQLite prefers image_tags' primary key, which walks every owner's rows of the tag.)
    let (of_image, of_tag, counts, tag_index) = match &owner {
        Some(o) => (
            format!("i.owner = {o} AND "),
            format!("t.owner = {o} AND "),
            format!("owner_tag_counts c ON c.owner = {o} AND"),
            " INDEXED BY image_tags_by_owner",
        ),
        None => (
            String::new(),
            String::new(),
            "tag_counts c ON".to_string(),
            "",
        ),
    };
    // SQLite would walk a client's images by `images_by_owner` and skip other statuses; the
    // status index of the owner walks only the rows asked for.
    let by_status = match (&owner, filters.status) {
        (Some(_), Some(_)) => " INDEXED BY images_by_owner_status",
        _ => "",
    };
    let (at, id, mut sql) = match tags.as_slice() {
        [] => (
            "i.uploaded_at",
            "i.id",
            format!("SELECT {COLUMNS} FROM images i{by_status} WHERE {of_image}"),
        ),
        [tag] => (
            "t.uploaded_at",
            "t.image_id",
            // CROSS JOIN keeps image_tags outermost: the walk is over the tag's rows.
            format!(
                "SELECT {COLUMNS} FROM image_tags t{tag_index} CROSS JOIN images i ON i.id = t.image_id \
                 WHERE {of_tag}t.tag = {tag} AND "
            ),
        ),
        many => {
            let values = many
                .iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(", ");
            let every = many
                .iter()
                .map(|p| {
                    format!(
                        "EXISTS (SELECT 1 FROM image_tags o WHERE o.tag = {p} \
                         AND o.uploaded_at = t.uploaded_at AND o.image_id = t.image_id) AND "
                    )
                })
                .collect::<String>();
            (
                "t.uploaded_at",
                "t.image_id",
                format!(
                    "SELECT {COLUMNS} FROM image_tags t{tag_index} CROSS JOIN images i ON i.id = t.image_id \
                     WHERE {of_tag}t.tag = (SELECT tag FROM (SELECT w.column1 AS tag, \
                         min(coalesce(c.count, 0)) FROM (VALUES {values}) w \
                         LEFT JOIN {counts} c.tag = w.column1)) \
                     AND {every}"
                ),
            )
        }
    };
    if let Some(status) = filters.status {
        let p = st.bind(Param::Text(status_text(status).into()));
        sql.push_str(&format!("i.status = {p} AND "));
    }
    let (hi_at, hi_id) = query.upper_bound(cursor);
    let lo = st.bind(Param::Int(filters.since.unwrap_or(0)));
    let hi = st.bind(Param::Int(hi_at));
    let hi_id = st.bind(Param::Text(hi_id));
    let limit = st.bind(Param::Int(u64::from(query.limit) + 1));
    // `{at} <= hi` bounds the index range; the row value orders ties by id.
    sql.push_str(&format!(
        "{at} >= {lo} AND {at} <= {hi} AND ({at}, {id}) < ({hi}, {hi_id}) \
         ORDER BY {at} DESC, {id} DESC LIMIT {limit}"
    ));
    st.sql = sql;
    st
}

fn status_text(status: Status) -> &'static str {
    match status {
        Status::Queued => "queued",
        Status::Done => "done",
        Status::Failed => "failed",
    }
}

/// A row of [`search`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct SearchRow {
    pub id: String,
    pub status: String,
    pub tags: Option<String>,
    /// JSON array of `{name, score}`.
    #[serde(default)]
    pub categories: Option<String>,
    pub content_type: String,
    pub size: u64,
    pub uploaded_at: u64,
    pub processed_at: Option<u64>,
}

impl SearchRow {
    /// The row as a list item, or `None` if its id is malformed.
    pub fn item(&self) -> Option<ListItem> {
        Some(ListItem {
            image_id: ImageId::parse(&self.id).ok()?,
            status: match self.status.as_str() {
                "done" => Status::Done,
                "failed" => Status::Failed,
                _ => Status::Queued,
            },
            tags: self
                .tags
                .as_deref()
                .and_then(|t| serde_json::from_str(t).ok())
                .unwrap_or_default(),
            categories: self
                .categories
                .as_deref()
                .and_then(|c| serde_json::from_str::<Vec<crate::wire::record::Category>>(c).ok())
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.name)
                .collect(),
            uploaded_at: format_ms(self.uploaded_at),
            content_type: self.content_type.clone(),
            size: self.size,
            processed_at: self.processed_at.map(format_ms),
        })
    }

    /// Where a page ending with this row ends.
    pub fn position(&self) -> Option<Position> {
        Some(Position {
            uploaded_at: self.uploaded_at,
            id: ImageId::parse(&self.id).ok()?,
        })
    }
}

/// Cuts the rows of [`search`] to a page: its items, and the position of its last item if
/// another page follows.
pub fn page(mut rows: Vec<SearchRow>, limit: u32) -> (Vec<ListItem>, Option<Position>) {
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next = if more {
        rows.last().and_then(SearchRow::position)
    } else {
        None
    };
    (rows.iter().filter_map(SearchRow::item).collect(), next)
}

/// The most used tags. `?1` limit.
pub const TAG_CLOUD: &str = "SELECT tag, count FROM tag_counts ORDER BY count DESC, tag LIMIT ?1";

/// Where an image's bytes are. `?1` id.
pub const SELECT_CONTENT: &str =
    "SELECT r2_key, content_type, size, owner FROM images WHERE id = ?1";

/// The tags of `?2`'s images, most used first (a client's `GET /tags`). `?1` limit, `?2`
/// owner.
pub const OWNER_TAG_CLOUD: &str = "SELECT tag, count FROM owner_tag_counts WHERE owner = ?2 \
     ORDER BY count DESC, tag LIMIT ?1";

/// Where an image's bytes are, if `?2` owns it. `?1` id, `?2` owner.
pub const SELECT_OWNED_CONTENT: &str =
    "SELECT r2_key, content_type, size, owner FROM images WHERE id = ?1 AND owner = ?2";

/// A row of [`SELECT_CONTENT`] and [`SELECT_EXPIRED`].
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ObjectRow {
    #[serde(default)]
    pub id: String,
    pub r2_key: String,
    #[serde(default)]
    pub content_type: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub status: String,
    /// Whose image it is (the live `image.deleted` goes to this owner).
    #[serde(default)]
    pub owner: String,
}

/// Finished images (`done` or `failed`: not `queued`) uploaded before `?1`, oldest first, at
/// most `?2`.
/// Retention never takes a queued image: its upload may still be running, or a delivery
/// may be tagging it, or it waits for a budget; it is deleted once it has a final state.
pub const SELECT_EXPIRED: &str = "SELECT id, r2_key, status, owner FROM images \
     WHERE uploaded_at < ?1 AND status != 'queued' ORDER BY uploaded_at, id LIMIT ?2";

/// The statements that delete images from D1, run as one batch (a transaction), each with
/// `?1` a JSON array of ids (see [`id_list`]): their tag rows (the triggers uncount them),
/// every `Idempotency-Key` naming them, their webhook deliveries, and their rows. The
/// foreign keys would cascade the tags and deliveries; these do not rely on it.
pub const DELETE_IMAGES: [&str; 4] = [
    "DELETE FROM image_tags WHERE image_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM idempotency_keys WHERE image_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM notifications WHERE image_id IN (SELECT value FROM json_each(?1))",
    "DELETE FROM images WHERE id IN (SELECT value FROM json_each(?1))",
];

/// The `?1` of [`DELETE_IMAGES`].
pub fn id_list<S: AsRef<str>>(ids: &[S]) -> String {
    serde_json::to_string(&ids.iter().map(AsRef::as_ref).collect::<Vec<_>>()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
