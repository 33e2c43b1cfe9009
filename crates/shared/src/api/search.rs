//! `GET /images` (search and list) and `GET /tags`, as pure functions: query parsing and
//! validation, and the pagination cursor.
//!
//! # The cursor
//! A cursor names the last image of a page, `(uploadedAt, id)`, and is only valid for the
//! filters it was issued with. It is `base64url(payload ‖ mac)` without padding, 55
//! characters, where `payload` is a version byte, the upload time (u64 big-endian, ms) and
//! the id's 16 bytes, and `mac` is the first 16 bytes of HMAC-SHA-256 over
//! [`SignedCursor::signing_input`]: a domain label, the payload and the canonical filters.
//! The HMAC runs in the worker (WebCrypto); this module builds and checks everything around
//! it. A cursor that does not decode, or whose MAC does not match (tampered, from another
//! key, or used with other filters) is `400 invalid_cursor`.

use serde::Serialize;

use crate::api::{constant_time_eq, ApiError};
use crate::wire::base64;
use crate::{ImageId, Status};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 50;
/// Largest `limit` of `GET /images`.
pub const MAX_LIMIT: u32 = 200;
/// Most `tag` parameters in one search.
pub const MAX_TAGS: usize = 10;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 100;
/// Tags `GET /tags` returns when `limit` is not given.
pub const TAGS_DEFAULT_LIMIT: u32 = 100;
/// Largest `limit` of `GET /tags`.
pub const TAGS_MAX_LIMIT: u32 = 1000;
/// Upload times are at most this (JavaScript's largest safe integer; year 287396).
pub const MAX_TIME_MS: u64 = (1 << 53) - 1;

/// What a search is restricted to. Tags are lower case (ASCII only, as SQLite's `lower()`
/// that indexes them), sorted and without duplicates, so equal filters compare equal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Filters {
    pub tags: Vec<String>,
    pub status: Option<Status>,
    /// Uploaded at or after, ms.
    pub since: Option<u64>,
    /// Uploaded before, ms.
    pub until: Option<u64>,
}

impl Filters {
    /// An unambiguous text of the filters (JSON), bound into each cursor's MAC.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Where a page ends: the last image shown, in the newest-first order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub uploaded_at: u64,
    pub id: ImageId,
}

/// A parsed `GET /images` query. The cursor is decoded but not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchQuery {
    pub filters: Filters,
    pub limit: u32,
    pub cursor: Option<SignedCursor>,
}

impl SearchQuery {
    /// Parses a raw query string (without `?`). Unknown or repeated parameters (other than
    /// `tag`) and bad values are `invalid_query`; an undecodable cursor is `invalid_cursor`.
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut filters = Filters::default();
        let mut limit = None;
        let mut cursor = None;
        for (name, value) in pairs(query)? {
            match name.as_str() {
                "tag" => filters.tags.push(tag(&value)?),
                "status" => set_once(&mut filters.status, &name, status(&value)?)?,
                "since" => set_once(&mut filters.since, &name, time(&name, &value)?)?,
                "until" => set_once(&mut filters.until, &name, time(&name, &value)?)?,
                "limit" => set_once(&mut limit, &name, number(&name, &value, MAX_LIMIT)?)?,
                "cursor" => set_once(&mut cursor, &name, SignedCursor::decode(&value)?)?,
                _ => return Err(unknown(&name, "tag, status, since, until, limit, cursor")),
            }
        }
        filters.tags.sort_unstable();
        filters.tags.dedup();
        if filters.tags.len() > MAX_TAGS {
            return Err(invalid(format!("at most {MAX_TAGS} tags")));
        }
        if let (Some(since), Some(until)) = (filters.since, filters.until) {
            if since > until {
                return Err(invalid("since is after until".into()));
            }
        }
        Ok(Self {
            filters,
            limit: limit.unwrap_or(DEFAULT_LIMIT),
            cursor,
        })
    }

    /// The exclusive upper bound of the page: the cursor's position, else `until`.
    pub fn upper_bound(&self, cursor: Option<Position>) -> (u64, String) {
        match cursor {
            Some(p) => (p.uploaded_at, p.id.to_string()),
            // `(until, "")` is above every row uploaded before `until`, and no other.
            None => (self.filters.until.unwrap_or(MAX_TIME_MS), String::new()),
        }
    }
}

/// A parsed `GET /tags` query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TagsQuery {
    pub limit: u32,
}

impl TagsQuery {
    /// Parses a raw query string: only `limit` (1 to [`TAGS_MAX_LIMIT`]).
    pub fn parse(query: &str) -> Result<Self, ApiError> {
        let mut limit = None;
        for (name, value) in pairs(query)? {
            match name.as_str() {
                "limit" => set_once(&mut limit, &name, number(&name, &value, TAGS_MAX_LIMIT)?)?,
                _ => return Err(unknown(&name, "limit")),
            }
        }
        Ok(Self {
            limit: limit.unwrap_or(TAGS_DEFAULT_LIMIT),
        })
    }
}

fn invalid(why: String) -> ApiError {
    ApiError::InvalidQuery(why)
}

fn unknown(name: &str, known: &str) -> ApiError {
    let shown: String = name.chars().take(40).collect();
    invalid(format!("unknown parameter {shown:?}; use {known}"))
}

fn set_once<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), ApiError> {
    if slot.replace(value).is_some() {
        return Err(invalid(format!("{name} is given more than once")));
    }
    Ok(())
}

/// A tag as searched: trimmed and ASCII-lower-cased (as indexed).
fn tag(value: &str) -> Result<String, ApiError> {
    let tag = value.trim();
    if tag.is_empty() || tag.len() > MAX_TAG_BYTES || tag.chars().any(char::is_control) {
        return Err(invalid(format!(
            "a tag is 1 to {MAX_TAG_BYTES} bytes of text"
        )));
    }
    Ok(tag.to_ascii_lowercase())
}

fn status(value: &str) -> Result<Status, ApiError> {
    match value {
        "queued" => Ok(Status::Queued),
        "done" => Ok(Status::Done),
        "failed" => Ok(Status::Failed),
        _ => Err(invalid("status is queued, done or failed".into())),
    }
}

fn time(name: &str, value: &str) -> Result<u64, ApiError> {
    parse_rfc3339(value)
        .filter(|ms| *ms <= MAX_TIME_MS)
        .ok_or_else(|| {
            invalid(format!(
                "{name} is an RFC 3339 time like 2026-11-29T12:00:00Z"
            ))
        })
}

fn number(name: &str, value: &str, max: u32) -> Result<u32, ApiError> {
    let ok = !value.is_empty() && value.len() <= 5 && value.bytes().all(|b| b.is_ascii_digit());
    match value.parse::<u32>() {
        Ok(n) if ok && (1..=max).contains(&n) => Ok(n),
        _ => Err(invalid(format!("{name} is an integer from 1 to {max}"))),
    }
}

/// `name=value` pairs of a query string, percent-decoded (`+` is a space). Empty pieces
/// (`a=1&&b=2`) are skipped; a name without `=` has an empty value.
pub fn pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query
        .split('&')
        .filter(|piece| !piece.is_empty())
        .map(|piece| {
            let (name, value) = piece.split_once('=').unwrap_or((piece, ""));
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// Percent-decodes one query component as UTF-8.
fn decode(text: &str) -> Result<String, ApiError> {
    let bad = || invalid("the query string is not valid percent-encoded UTF-8".into());
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        out.push(match b {
            b'+' => b' ',
            b'%' => {
                let hi = bytes.next().and_then(hex_value).ok_or_else(bad)?;
                let lo = bytes.next().and_then(hex_value).ok_or_else(bad)?;
                hi << 4 | lo
            }
            other => other,
        });
    }
    String::from_utf8(out).map_err(|_| bad())
}

fn hex_value(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Parses an RFC 3339 date-time (`T` or `t`, a fraction of any length, `Z`, `z` or an
/// offset `±hh:mm`) to ms since the epoch; `None` for anything else or a time before 1970.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let n = text.len();
    let (local, offset_ms) = match text.as_bytes().last()? {
        b'Z' | b'z' => (text.get(..n - 1)?, 0i64),
        _ => {
            let zone = text.get(n.checked_sub(6)?..)?.as_bytes();
            let sign = match zone[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let two = |s: &[u8]| -> Option<i64> {
                s.iter()
                    .all(u8::is_ascii_digit)
                    .then(|| i64::from(s[0] - b'0') * 10 + i64::from(s[1] - b'0'))
            };
            let (h, m) = (two(&zone[1..3])?, two(&zone[4..6])?);
            if zone[3] != b':' || h > 23 || m > 59 {
                return None;
            }
            (text.get(..n - 6)?, sign * (h * 3_600_000 + m * 60_000))
        }
    };
    let local = local.replacen('t', "T", 1);
    let ms = crate::wire::time::parse_ms(&format!("{local}Z"))?;
    u64::try_from(i64::try_from(ms).ok()?.checked_sub(offset_ms)?).ok()
}

/// Where the cursor's HMAC key comes from, in order of preference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CursorKey<'a> {
    /// `CURSOR_SECRET`, as given: rotating it invalidates the cursors issued before.
    Secret(&'a str),
    /// `HMAC-SHA-256(API_TOKEN, KEY_LABEL)`: changes (and invalidates cursors) with the token.
    DerivedFrom(&'a str),
    /// An open API: [`PUBLIC_KEY`]. Cursors are still checked for corruption and bound to
    /// their filters, but anyone can forge one; that gives nothing the open API does not
    /// already give (a cursor is only a position in a listing everyone may read).
    Public,
}

/// The message whose HMAC under `API_TOKEN` is the derived cursor key.
pub const KEY_LABEL: &[u8] = b"image-tagger search cursor key v1";
/// The cursor key of an open API (no `CURSOR_SECRET`, no `API_TOKEN`).
pub const PUBLIC_KEY: &[u8] = b"image-tagger search cursor key v1 (open API)";

impl<'a> CursorKey<'a> {
    /// The key for the configured secrets; empty values count as unset.
    pub fn choose(cursor_secret: Option<&'a str>, api_token: Option<&'a str>) -> Self {
        match (
            cursor_secret.filter(|s| !s.is_empty()),
            api_token.filter(|t| !t.is_empty()),
        ) {
            (Some(secret), _) => Self::Secret(secret),
            (None, Some(token)) => Self::DerivedFrom(token),
            (None, None) => Self::Public,
        }
    }
}

/// Bytes of MAC a cursor carries (HMAC-SHA-256 truncated to 128 bits).
pub const MAC_LEN: usize = 16;
const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 8 + 16;
/// Length of a cursor in characters.
pub const CURSOR_LEN: usize = (PAYLOAD_LEN + MAC_LEN) * 4 / 3 + 1;
/// Prefix of every MAC input: a key used for anything else never yields a valid cursor.
const DOMAIN: &[u8] = b"image-tagger search cursor v1\n";

/// A cursor as sent by a client: decoded, not yet verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCursor {
    payload: [u8; PAYLOAD_LEN],
    mac: [u8; MAC_LEN],
}

impl SignedCursor {
    /// Decodes the text form; anything but exactly a canonical 55-character base64url
    /// string of a known version is `invalid_cursor`.
    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let bytes = base64::url_decode(text).ok_or(ApiError::InvalidCursor)?;
        if bytes.len() != PAYLOAD_LEN + MAC_LEN || bytes[0] != VERSION {
            return Err(ApiError::InvalidCursor);
        }
        let mut payload = [0; PAYLOAD_LEN];
        let mut mac = [0; MAC_LEN];
        payload.copy_from_slice(&bytes[..PAYLOAD_LEN]);
        mac.copy_from_slice(&bytes[PAYLOAD_LEN..]);
        Ok(Self { payload, mac })
    }

    /// The bytes to MAC to check this cursor against `filters`.
    pub fn signing_input(&self, filters: &Filters) -> Vec<u8> {
        signing_input_of(&self.payload, filters)
    }

    /// The position, if `expected` (the MAC the key gives for [`Self::signing_input`])
    /// matches; compared in constant time.
    pub fn verify(&self, expected: &[u8]) -> Result<Position, ApiError> {
        let expected = expected.get(..MAC_LEN).ok_or(ApiError::InvalidCursor)?;
        if !constant_time_eq(expected, &self.mac) {
            return Err(ApiError::InvalidCursor);
        }
        position_of(&self.payload).ok_or(ApiError::InvalidCursor)
    }
}

/// The bytes to MAC for a new cursor at `position` under `filters`.
pub fn signing_input(position: &Position, filters: &Filters) -> Vec<u8> {
    signing_input_of(&payload_of(position), filters)
}

/// The text of a cursor at `position`, given the MAC of its [`signing_input`] (at least
/// [`MAC_LEN`] bytes; longer MACs are truncated).
pub fn encode_cursor(position: &Position, mac: &[u8]) -> String {
    let mut bytes = payload_of(position).to_vec();
    bytes.extend(mac.iter().take(MAC_LEN));
    bytes.resize(PAYLOAD_LEN + MAC_LEN, 0);
    base64::url_encode(&bytes)
}

fn signing_input_of(payload: &[u8; PAYLOAD_LEN], filters: &Filters) -> Vec<u8> {
    let canonical = filters.canonical();
    let mut input = Vec::with_capacity(DOMAIN.len() + PAYLOAD_LEN + canonical.len());
    input.extend_from_slice(DOMAIN);
    input.extend_from_slice(payload);
    input.extend_from_slice(canonical.as_bytes());
    input
}

fn payload_of(position: &Position) -> [u8; PAYLOAD_LEN] {
    let mut payload = [0; PAYLOAD_LEN];
    payload[0] = VERSION;
    payload[1..9].copy_from_slice(&position.uploaded_at.to_be_bytes());
    payload[9..].copy_from_slice(position.id.as_bytes());
    payload
}

fn position_of(payload: &[u8; PAYLOAD_LEN]) -> Option<Position> {
    let mut at = [0; 8];
    at.copy_from_slice(&payload[1..9]);
    let uploaded_at = u64::from_be_bytes(at);
    let mut id = [0; 16];
    id.copy_from_slice(&payload[9..]);
    let id = ImageId::from_uuid(uuid::Uuid::from_bytes(id)).ok()?;
    (uploaded_at <= MAX_TIME_MS).then_some(Position { uploaded_at, id })
}

/// One image in a `GET /images` answer.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListItem {
    pub image_id: ImageId,
    pub status: Status,
    /// The tags as the tagger wrote them (empty until done).
    pub tags: Vec<String>,
    /// The names of the image's categories, best first (empty until done).
    pub categories: Vec<String>,
    /// RFC 3339.
    pub uploaded_at: String,
    pub content_type: String,
    pub size: u64,
    /// RFC 3339, once done or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processed_at: Option<String>,
}

/// The body of `GET /images`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchPage {
    pub images: Vec<ListItem>,
    /// The next page's `cursor`; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A tag in use and how many images have it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct TagCount {
    pub tag: String,
    pub count: u64,
    /// Whether the name is a category ([`crate::tagging::categories`]) rather than only a label.
    #[serde(default)]
    pub category: bool,
}

/// The body of `GET /tags`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TagCloud {
    pub tags: Vec<TagCount>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";

    fn id() -> ImageId {
        ImageId::parse(ID).unwrap()
    }

    fn code(r: Result<SearchQuery, ApiError>) -> &'static str {
        r.map(|_| "ok").unwrap_or_else(|e| e.code())
    }

    #[test]
    fn parses_filters() {
        let q = SearchQuery::parse(
            "tag=Tabby&tag=tiger+cat&tag=%20TABBY&status=done&since=2026-01-01T00:00:00Z\
             &until=2026-01-02T01:00:00%2B01:00&limit=7",
        )
        .unwrap();
        assert_eq!(q.filters.tags, ["tabby", "tiger cat"]);
        assert_eq!(q.filters.status, Some(Status::Done));
        assert_eq!(q.filters.since, Some(1_767_225_600_000));
        assert_eq!(q.filters.until, Some(1_767_225_600_000 + 86_400_000));
        assert_eq!(q.limit, 7);
        assert_eq!(q.cursor, None);
        let empty = SearchQuery::parse("").unwrap();
        assert_eq!(empty.limit, DEFAULT_LIMIT);
        assert_eq!(empty.filters, Filters::default());
        assert_eq!(SearchQuery::parse("&&limit=200&").unwrap().limit, 200);
    }

    #[test]
    fn refuses_bad_queries() {
        for bad in [
            "tags=cat",
            "limit=0",
            "limit=201",
            "limit=-1",
            "limit=1e2",
            "limit=",
            "limit=1&limit=2",
            "status=DONE",
            "status=done&status=failed",
            "since=yesterday",
            "since=2026-01-01",
            "since=1969-12-31T23:59:59Z",
            "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
            "tag=",
            "tag=%20",
            "tag=%0A",
            "tag=%ZZ",
            "tag=%FF",
            "tag=%E2%9C",
        ] {
            assert_eq!(code(SearchQuery::parse(bad)), "invalid_query", "{bad}");
        }
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("tag=t{i}")).collect();
        assert_eq!(code(SearchQuery::parse(&many.join("&"))), "invalid_query");
        let long = format!("tag={}", "a".repeat(MAX_TAG_BYTES + 1));
        assert_eq!(code(SearchQuery::parse(&long)), "invalid_query");
        for bad in ["cursor=", "cursor=abc", "cursor=%%"] {
            let expected = if bad == "cursor=%%" {
                "invalid_query"
            } else {
                "invalid_cursor"
            };
            assert_eq!(code(SearchQuery::parse(bad)), expected, "{bad}");
        }
    }

    #[test]
    fn tags_query() {
        assert_eq!(TagsQuery::parse("").unwrap().limit, TAGS_DEFAULT_LIMIT);
        assert_eq!(TagsQuery::parse("limit=1000").unwrap().limit, 1000);
        for bad in ["limit=1001", "limit=0", "tag=x", "limit=1&limit=1"] {
            assert_eq!(
                TagsQuery::parse(bad).unwrap_err().code(),
                "invalid_query",
                "{bad}"
            );
        }
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01t00:00:01.5z"), Some(1500));
        assert_eq!(parse_rfc3339("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00-00:30"), Some(1_800_000));
        for bad in [
            "",
            "Z",
            "1970-01-01T00:00:00",
            "1970-01-01T00:00:00+0100",
            "1970-01-01T00:00:00+24:00",
            "1970-01-01T00:30:00+01:00",
            "1970-01-01 00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn upper_bound_is_the_cursor_or_until() {
        let q = SearchQuery::parse("until=1970-01-01T00:00:01Z").unwrap();
        assert_eq!(q.upper_bound(None), (1000, String::new()));
        let p = Position {
            uploaded_at: 7,
            id: id(),
        };
        assert_eq!(q.upper_bound(Some(p)), (7, ID.to_string()));
        let open = SearchQuery::parse("").unwrap();
        assert_eq!(open.upper_bound(None).0, MAX_TIME_MS);
    }

    /// A stand-in MAC for the pure tests (the worker uses HMAC-SHA-256): any function of
    /// the whole input serves to check what goes into it.
    fn mac(input: &[u8]) -> Vec<u8> {
        let mut state = [0u64; 2];
        for (i, b) in input.iter().enumerate() {
            let lane = &mut state[i % 2];
            *lane = (*lane ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3) ^ (i as u64);
        }
        state.iter().flat_map(|s| s.to_be_bytes()).collect()
    }

    fn cursor_for(position: &Position, filters: &Filters) -> String {
        encode_cursor(position, &mac(&signing_input(position, filters)))
    }

    fn check(text: &str, filters: &Filters) -> Result<Position, ApiError> {
        let cursor = SignedCursor::decode(text)?;
        cursor.verify(&mac(&cursor.signing_input(filters)))
    }

    #[test]
    fn cursors_round_trip_and_bind_their_filters() {
        let p = Position {
            uploaded_at: 1_764_417_600_123,
            id: id(),
        };
        let filters = SearchQuery::parse("tag=cat&status=done").unwrap().filters;
        let text = cursor_for(&p, &filters);
        assert_eq!(text.len(), CURSOR_LEN);
        assert!(text.bytes().all(|b| base64::URL_SAFE.contains(&b)));
        assert_eq!(check(&text, &filters), Ok(p));
        // The same filters spelled differently are the same filters.
        let same = SearchQuery::parse("status=done&tag=CAT&tag=cat").unwrap();
        assert_eq!(check(&text, &same.filters), Ok(p));
        for other in [
            "tag=cat",
            "tag=cat&status=failed",
            "tag=dog&status=done",
            "",
        ] {
            let other = SearchQuery::parse(other).unwrap().filters;
            assert_eq!(check(&text, &other), Err(ApiError::InvalidCursor));
        }
        // The cursor also parses as part of a query.
        let q = SearchQuery::parse(&format!("tag=cat&status=done&cursor={text}")).unwrap();
        assert!(q.cursor.is_some());
    }

    #[test]
    fn the_mac_input_is_injective_over_filters() {
        let a = Filters {
            tags: vec!["a\",\"b".into()],
            ..Filters::default()
        };
        let b = Filters {
            tags: vec!["a".into(), "b".into()],
            ..Filters::default()
        };
        assert_ne!(a.canonical(), b.canonical());
        let since = Filters {
            since: Some(5),
            ..Filters::default()
        };
        let until = Filters {
            until: Some(5),
            ..Filters::default()
        };
        assert_ne!(since.canonical(), until.canonical());
    }

    #[test]
    fn cursor_keys() {
        assert_eq!(
            CursorKey::choose(Some("s"), Some("t")),
            CursorKey::Secret("s")
        );
        assert_eq!(
            CursorKey::choose(Some(""), Some("t")),
            CursorKey::DerivedFrom("t")
        );
        assert_eq!(CursorKey::choose(None, Some("")), CursorKey::Public);
    }

    proptest! {
        /// Changing any character of a cursor makes it invalid: it no longer decodes, or
        /// its MAC no longer matches.
        #[test]
        fn tampered_cursors_are_refused(
            at in 0..=MAX_TIME_MS,
            raw in any::<[u8; 16]>(),
            index in 0..CURSOR_LEN,
            replacement in 0..64usize,
        ) {
            let id = ImageId::from_uuid(uuid::Builder::from_random_bytes(raw).into_uuid()).unwrap();
            let p = Position { uploaded_at: at, id };
            let filters = Filters::default();
            let text = cursor_for(&p, &filters);
            prop_assert_eq!(check(&text, &filters), Ok(p));
            let mut bytes = text.into_bytes();
            let new = base64::URL_SAFE[replacement];
            prop_assume!(bytes[index] != new);
            bytes[index] = new;
            let tampered = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(check(&tampered, &filters), Err(ApiError::InvalidCursor));
        }

        #[test]
        fn parsing_never_panics(query in "\\PC{0,80}") {
            let _ = SearchQuery::parse(&query);
            let _ = TagsQuery::parse(&query);
        }

        #[test]
        fn decode_never_panics(text in "[A-Za-z0-9_=+/-]{0,80}") {
            let _ = SignedCursor::decode(&text);
        }
    }
}
