//! API keys (issue 20): who a request comes from, what it may do, and whose images it sees.
//!
//! - The operator presents `API_TOKEN`. It may do everything, sees every image and manages
//!   client keys. It is not rate limited and has no quota.
//! - A client presents a key made by `POST /admin/keys`: `itk_` and 43 base64url characters
//!   (32 random bytes). D1 stores only the key's SHA-256; the key is shown once. A client sees
//!   only the images it uploaded (its owner id is its key id, `key_` and 20 hex digits), and
//!   only does what its scopes allow.
//! - With no `API_TOKEN`, the API is closed unless `ALLOW_ANONYMOUS` is set (local runs and
//!   demos); anonymous callers then act as one client, [`ANONYMOUS`], with every scope.
//!
//! Key lookups are cached per isolate for [`CACHE_TTL_MS`] ([`KeyCache`]), so a revoked key
//! stops working within that time everywhere, and at once in the isolate that revoked it.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::api::{constant_time_eq, ApiError, Method, Route};
use crate::wire::base64::url_encode;
use crate::wire::time::format_ms;

/// Prefix of a client's secret key.
pub const KEY_PREFIX: &str = "itk_";
/// Prefix of a key's public id.
pub const KEY_ID_PREFIX: &str = "key_";
/// Random bytes in a secret key.
pub const KEY_BYTES: usize = 32;
/// Random bytes in a key id.
pub const KEY_ID_BYTES: usize = 10;
/// Length of a secret key: the prefix and 43 base64url characters.
pub const KEY_LEN: usize = KEY_PREFIX.len() + (KEY_BYTES * 4).div_ceil(3);
/// Length of a key id: the prefix and 20 hex digits.
pub const KEY_ID_LEN: usize = KEY_ID_PREFIX.len() + KEY_ID_BYTES * 2;
/// Owner id of the images the operator uploads.
pub const OPERATOR: &str = "operator";
/// Owner id of anonymous uploads (and of images uploaded before keys existed).
pub const ANONYMOUS: &str = "anonymous";
/// How long an isolate trusts a key lookup: revocation takes effect within this.
pub const CACHE_TTL_MS: u64 = 30_000;
/// Most key lookups an isolate keeps.
pub const CACHE_CAPACITY: usize = 1024;
/// How long `GET /admin/usage` answers from an isolate's copy before asking the pacer again.
pub const USAGE_CACHE_MS: u64 = 5_000;
/// Largest `POST /admin/keys` body read.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// Longest key name, in characters.
pub const MAX_NAME_CHARS: usize = 100;
/// Largest `dailyUploads`.
pub const MAX_DAILY_UPLOADS: u64 = 1_000_000_000;
/// Most keys `GET /admin/keys` lists.
pub const MAX_KEYS_LISTED: u32 = 1000;

const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// What a client key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Upload (`POST /images`).
    ImagesWrite,
    /// Read its images: status, tags, content, search, `GET /tags`.
    ImagesRead,
    /// Delete its images.
    ImagesDelete,
}

impl Scope {
    /// Every scope, in their documented order.
    pub const ALL: [Scope; 3] = [Scope::ImagesWrite, Scope::ImagesRead, Scope::ImagesDelete];

    /// The scope's name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImagesWrite => "images:write",
            Self::ImagesRead => "images:read",
            Self::ImagesDelete => "images:delete",
        }
    }

    /// A scope by name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of scopes. Stored in D1 as their names, space-separated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    /// Every scope: the default of a new key.
    pub fn all() -> Self {
        Scope::ALL.into_iter().collect()
    }

    /// Whether the set holds `scope`.
    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// The scopes, in their documented order.
    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(Scope::as_str)
            .collect()
    }

    /// The stored form: names, space-separated.
    pub fn stored(self) -> String {
        self.names().join(" ")
    }

    /// Reads the stored form; unknown names are ignored (they grant nothing).
    pub fn from_stored(text: &str) -> Self {
        text.split_ascii_whitespace()
            .filter_map(Scope::parse)
            .collect()
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        Self(iter.into_iter().fold(0, |bits, s| bits | s.bit()))
    }
}

/// A key's public id: `key_` and 20 lower-case hex digits. `Copy`, so that routes can hold it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// A new id from random bytes.
    pub fn from_random(random: &[u8; KEY_ID_BYTES]) -> Self {
        let mut id = [0u8; KEY_ID_LEN];
        id[..KEY_ID_PREFIX.len()].copy_from_slice(KEY_ID_PREFIX.as_bytes());
        for (i, b) in random.iter().enumerate() {
            let hex = b"0123456789abcdef";
            id[KEY_ID_PREFIX.len() + 2 * i] = hex[usize::from(b >> 4)];
            id[KEY_ID_PREFIX.len() + 2 * i + 1] = hex[usize::from(b & 15)];
        }
        Self(id)
    }

    /// Parses an id exactly as [`KeyId::from_random`] writes them; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let digits = text.strip_prefix(KEY_ID_PREFIX)?;
        let ok = digits.len() == KEY_ID_BYTES * 2
            && digits
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| {
            let mut id = [0u8; KEY_ID_LEN];
            id.copy_from_slice(text.as_bytes());
            Self(id)
        })
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII is ever written into it.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({})", self.as_str())
    }
}

/// A new secret key from random bytes: `itk_` and their base64url.
pub fn format_key(random: &[u8; KEY_BYTES]) -> String {
    format!("{KEY_PREFIX}{}", url_encode(random))
}

/// Whether a bearer credential has the shape of a client key (and is worth a lookup).
pub fn is_key_shaped(credential: &str) -> bool {
    credential.len() == KEY_LEN
        && credential.starts_with(KEY_PREFIX)
        && credential[KEY_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The credential of a `Bearer` `Authorization` header, if it is one.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    header
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, credentials)| credentials.trim())
        .filter(|c| !c.is_empty())
}

/// What a request presents, decided before any lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presented<'a> {
    /// The operator key (`API_TOKEN`).
    Operator,
    /// No credential, on an API that allows anonymous callers.
    Anonymous,
    /// Something shaped like a client key: look up its SHA-256.
    Key(&'a str),
}

/// Reads the `Authorization` header against the configuration: `API_TOKEN` (the operator
/// key) and `ALLOW_ANONYMOUS`. With an operator key, a request needs it or a client key.
/// Without one the API is closed ([`ApiError::AuthNotConfigured`]) unless anonymous callers
/// are allowed: then a client key still identifies its client, and anything else is
/// anonymous.
pub fn present<'a>(
    header: Option<&'a str>,
    operator_key: Option<&str>,
    allow_anonymous: bool,
) -> Result<Presented<'a>, ApiError> {
    let credential = bearer(header);
    match operator_key.filter(|t| !t.is_empty()) {
        Some(token) => match credential {
            Some(c) if constant_time_eq(c.as_bytes(), token.as_bytes()) => Ok(Presented::Operator),
            Some(c) if is_key_shaped(c) => Ok(Presented::Key(c)),
            _ => Err(ApiError::Unauthorized),
        },
        None if !allow_anonymous => Err(ApiError::AuthNotConfigured),
        None => Ok(match credential {
            Some(c) if is_key_shaped(c) => Presented::Key(c),
            _ => Presented::Anonymous,
        }),
    }
}

/// A client key, as its lookup finds it (never the secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientKey {
    pub key_id: String,
    pub scopes: Scopes,
    /// Most uploads per UTC day; `None`: no quota.
    pub daily_uploads: Option<u64>,
}

/// Who a request comes from, once authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Anonymous,
    Client(ClientKey),
}

/// What a route needs of its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing more than being authenticated (a `405`, say).
    Nothing,
    /// A scope (the operator and anonymous callers have every scope).
    Scope(Scope),
    /// The operator key.
    Operator,
}

/// What `method` on `route` needs.
pub fn need(route: Route, method: Method) -> Need {
    use Method::{Delete, Get, Head, Post};
    match (route, method) {
        (Route::Root | Route::Images, Post) => Need::Scope(Scope::ImagesWrite),
        (Route::Image(_), Delete) => Need::Scope(Scope::ImagesDelete),
        (
            Route::Images
            | Route::Image(_)
            | Route::ImageTags(_)
            | Route::ImageContent(_)
            | Route::Tags,
            Get | Head,
        ) => Need::Scope(Scope::ImagesRead),
        (Route::AdminUsage | Route::AdminKeys | Route::AdminKey(_) | Route::AdminStats, _) => {
            Need::Operator
        }
        // Live updates show the caller's own images, as reading them does.
        (Route::Events, Get) | (Route::EventsTicket, Post) => Need::Scope(Scope::ImagesRead),
        _ => Need::Nothing,
    }
}

impl Caller {
    /// The owner id this caller's uploads get.
    pub fn owner(&self) -> &str {
        match self {
            Self::Operator => OPERATOR,
            Self::Anonymous => ANONYMOUS,
            Self::Client(key) => &key.key_id,
        }
    }

    /// Whose images this caller sees: `None` for every image (the operator).
    pub fn sees(&self) -> Option<&str> {
        match self {
            Self::Operator => None,
            _ => Some(self.owner()),
        }
    }

    /// Checks that the caller may do what `need` says: `403 insufficient_scope` if not.
    pub fn allow(&self, need: Need) -> Result<(), ApiError> {
        match (self, need) {
            (_, Need::Nothing) | (Self::Operator, _) => Ok(()),
            (_, Need::Operator) => Err(ApiError::InsufficientScope("the operator key")),
            (Self::Anonymous, Need::Scope(_)) => Ok(()),
            (Self::Client(key), Need::Scope(scope)) if key.scopes.contains(scope) => Ok(()),
            (Self::Client(_), Need::Scope(scope)) => {
                Err(ApiError::InsufficientScope(scope.as_str()))
            }
        }
    }

    /// Whether the per-client upload rate limit applies (to everyone but the operator).
    pub fn rate_limited(&self) -> bool {
        !matches!(self, Self::Operator)
    }

    /// The caller's daily upload quota, if it has one.
    pub fn daily_uploads(&self) -> Option<u64> {
        match self {
            Self::Client(key) => key.daily_uploads,
            _ => None,
        }
    }
}

/// A row of `api_keys`, as D1 returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct KeyRow {
    pub key_id: String,
    pub name: String,
    pub scopes: String,
    pub daily_uploads: Option<u64>,
    pub created_at: u64,
    pub revoked_at: Option<u64>,
}

impl KeyRow {
    /// The key as a caller.
    pub fn client(&self) -> ClientKey {
        ClientKey {
            key_id: self.key_id.clone(),
            scopes: Scopes::from_stored(&self.scopes),
            daily_uploads: self.daily_uploads,
        }
    }

    /// What `GET /admin/keys` shows of the key.
    pub fn view(&self) -> KeyView {
        KeyView {
            key_id: self.key_id.clone(),
            name: self.name.clone(),
            scopes: Scopes::from_stored(&self.scopes).names(),
            daily_uploads: self.daily_uploads,
            created_at: format_ms(self.created_at),
            revoked_at: self.revoked_at.map(format_ms),
        }
    }
}

/// A key in `GET /admin/keys`: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    pub key_id: String,
    pub name: String,
    pub scopes: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_uploads: Option<u64>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

/// The `GET /admin/keys` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// The `201` answer of `POST /admin/keys`: the only time the secret key is shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    pub key_id: String,
    pub key: String,
    pub name: String,
    pub scopes: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_uploads: Option<u64>,
    pub created_at: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewKeyBody {
    name: String,
    scopes: Option<Vec<String>>,
    daily_uploads: Option<u64>,
}

/// A checked `POST /admin/keys` request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    pub name: String,
    pub scopes: Scopes,
    pub daily_uploads: Option<u64>,
}

impl NewKey {
    /// Parses `{"name": "...", "scopes": [...], "dailyUploads": n}`: a name of 1 to 100
    /// printable characters; scopes optional (default: all), known and not empty;
    /// `dailyUploads` optional, 1 to a billion.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let bad = |why: &str| ApiError::InvalidKeyRequest(why.into());
        if body.len() > MAX_REQUEST_BYTES {
            return Err(bad("the body is larger than 4096 bytes"));
        }
        let body: NewKeyBody = serde_json::from_slice(body).map_err(|e| {
            ApiError::InvalidKeyRequest(format!(
                "expected {{\"name\", \"scopes\"?, \"dailyUploads\"?}}: {e}"
            ))
        })?;
        let name = body.name.trim().to_string();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(bad(
                "name must be 1 to 100 characters, without control characters",
            ));
        }
        let scopes = match body.scopes {
            None => Scopes::all(),
            Some(names) => {
                let mut scopes = Vec::new();
                for n in &names {
                    scopes.push(Scope::parse(n).ok_or_else(|| {
                        ApiError::InvalidKeyRequest(format!(
                            "unknown scope {n:?}; the scopes are {}",
                            Scopes::all().names().join(", ")
                        ))
                    })?);
                }
                if scopes.is_empty() {
                    return Err(bad("scopes must not be empty"));
                }
                scopes.into_iter().collect()
            }
        };
        if body
            .daily_uploads
            .is_some_and(|n| n == 0 || n > MAX_DAILY_UPLOADS)
        {
            return Err(bad("dailyUploads must be 1 to 1000000000"));
        }
        Ok(Self {
            name,
            scopes,
            daily_uploads: body.daily_uploads,
        })
    }
}

/// The UTC day of a time: days since the Unix epoch.
pub fn day(now_ms: u64) -> u64 {
    now_ms / DAY_MS
}

/// Seconds from `now_ms` to the next UTC midnight, rounded up (at least 1): the
/// `Retry-After` of a used-up daily quota.
pub fn until_next_day(now_ms: u64) -> u64 {
    let next = (day(now_ms) + 1) * DAY_MS;
    (next - now_ms).div_ceil(1000).max(1)
}

/// An isolate's cache of key lookups, by the key's SHA-256: a found key, or `None` for a
/// hash that names no live key. Entries live [`CACHE_TTL_MS`]; at most [`CACHE_CAPACITY`]
/// are kept (when full, expired entries go, then everything).
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: HashMap<String, (u64, Option<ClientKey>)>,
}

impl KeyCache {
    /// The cached lookup of `hash`, if still fresh at `now_ms`.
    pub fn get(&self, hash: &str, now_ms: u64) -> Option<Option<ClientKey>> {
        self.entries
            .get(hash)
            .filter(|(at, _)| now_ms < at.saturating_add(CACHE_TTL_MS) && *at <= now_ms)
            .map(|(_, key)| key.clone())
    }

    /// Remembers a lookup made at `now_ms`.
    pub fn put(&mut self, hash: &str, key: Option<ClientKey>, now_ms: u64) {
        if self.entries.len() >= CACHE_CAPACITY && !self.entries.contains_key(hash) {
            self.entries
                .retain(|_, (at, _)| now_ms < at.saturating_add(CACHE_TTL_MS));
            if self.entries.len() >= CACHE_CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(hash.to_string(), (now_ms, key));
    }

    /// Forgets a revoked key at once (in this isolate).
    pub fn revoke(&mut self, key_id: &str) {
        self.entries
            .retain(|_, (_, key)| key.as_ref().is_none_or(|k| k.key_id != key_id));
    }

    /// How many lookups are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// An isolate's copy of the pacer's last `GET /admin/usage` answer. The pacer is asked at
/// most once per [`USAGE_CACHE_MS`]: a fresh answer is reused, and so is an older one while
/// a question asked less than that long ago is on its way; only an isolate that has never
/// had an answer asks while another question is out.
#[derive(Clone, Debug)]
pub struct UsageCache<T> {
    answer: Option<(u64, T)>,
    asked_at: Option<u64>,
}

impl<T> UsageCache<T> {
    /// Nothing asked yet.
    pub const fn new() -> Self {
        Self {
            answer: None,
            asked_at: None,
        }
    }
}

impl<T> Default for UsageCache<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Clone> UsageCache<T> {
    /// The answer to give at `now_ms` without asking, if any.
    pub fn get(&self, now_ms: u64) -> Option<T> {
        let fresh = |at: u64| at <= now_ms && now_ms - at < USAGE_CACHE_MS;
        let (at, answer) = self.answer.as_ref()?;
        (fresh(*at) || self.asked_at.is_some_and(fresh)).then(|| answer.clone())
    }

    /// Notes that the pacer is being asked at `now_ms`.
    pub fn asking(&mut self, now_ms: u64) {
        self.asked_at = Some(now_ms);
    }

    /// Keeps the pacer's answer to the question asked at `asked_ms`.
    pub fn answered(&mut self, asked_ms: u64, answer: T) {
        self.answer = Some((asked_ms, answer));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageId;

    const TOKEN: &str = "operator-s3cret";

    fn key() -> String {
        format_key(&[7; KEY_BYTES])
    }

    fn client(scopes: &[Scope]) -> Caller {
        Caller::Client(ClientKey {
            key_id: KeyId::from_random(&[1; KEY_ID_BYTES]).to_string(),
            scopes: scopes.iter().copied().collect(),
            daily_uploads: None,
        })
    }

    #[test]
    fn keys_and_ids_have_their_shapes() {
        let k = key();
        assert_eq!(k.len(), KEY_LEN);
        assert_eq!(KEY_LEN, 47);
        assert!(k.starts_with("itk_"));
        assert!(is_key_shaped(&k));
        assert_ne!(format_key(&[8; KEY_BYTES]), k);
        for bad in [
            "",
            "itk_",
            "itk_short",
            &k[1..],
            &format!("{k}x"),
            &k.replace('i', "I"),
        ] {
            assert!(!is_key_shaped(bad), "{bad}");
        }
        assert!(!is_key_shaped(&format!("itk_{}!", &k[5..])));
        let id = KeyId::from_random(&[0xab; KEY_ID_BYTES]);
        assert_eq!(id.as_str(), "key_abababababababababab");
        assert_eq!(KeyId::parse(id.as_str()), Some(id));
        for bad in [
            "",
            "key_",
            "key_ABABABABABABABABABAB",
            "key_abababababababababa",
            "key_ababababababababababa",
            "kez_abababababababababab",
            "key_abababababababababag",
        ] {
            assert_eq!(KeyId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn presenting_credentials() {
        let k = key();
        let header = format!("Bearer {k}");
        let op = format!("Bearer {TOKEN}");
        // With an operator key: it, or a client key; nothing else.
        assert_eq!(
            present(Some(&op), Some(TOKEN), false),
            Ok(Presented::Operator)
        );
        assert_eq!(
            present(Some(&format!("bearer  {TOKEN} ")), Some(TOKEN), true),
            Ok(Presented::Operator)
        );
        assert_eq!(
            present(Some(&header), Some(TOKEN), false),
            Ok(Presented::Key(&k))
        );
        for bad in [None, Some("Bearer"), Some("Basic x"), Some("Bearer nope")] {
            assert_eq!(
                present(bad, Some(TOKEN), true),
                Err(ApiError::Unauthorized),
                "{bad:?}"
            );
        }
        // Without one: closed, unless anonymous callers are allowed.
        for h in [None, Some(op.as_str()), Some(header.as_str())] {
            assert_eq!(present(h, None, false), Err(ApiError::AuthNotConfigured));
            assert_eq!(
                present(h, Some(""), false),
                Err(ApiError::AuthNotConfigured)
            );
        }
        assert_eq!(present(None, None, true), Ok(Presented::Anonymous));
        assert_eq!(present(Some(&op), None, true), Ok(Presented::Anonymous));
        assert_eq!(present(Some(&header), None, true), Ok(Presented::Key(&k)));
    }

    #[test]
    fn scopes_and_needs() {
        let id = ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f").unwrap();
        let key_id = KeyId::from_random(&[2; KEY_ID_BYTES]);
        let reader = client(&[Scope::ImagesRead]);
        let writer = client(&[Scope::ImagesWrite]);
        let post = need(Route::Images, Method::Post);
        assert_eq!(post, Need::Scope(Scope::ImagesWrite));
        assert_eq!(need(Route::Root, Method::Post), post);
        assert_eq!(
            reader.allow(post),
            Err(ApiError::InsufficientScope("images:write"))
        );
        assert_eq!(writer.allow(post), Ok(()));
        for (route, method) in [
            (Route::Images, Method::Get),
            (Route::Image(id), Method::Head),
            (Route::ImageTags(id), Method::Get),
            (Route::ImageContent(id), Method::Get),
            (Route::Tags, Method::Get),
        ] {
            assert_eq!(need(route, method), Need::Scope(Scope::ImagesRead));
            assert_eq!(reader.allow(need(route, method)), Ok(()));
            assert!(writer.allow(need(route, method)).is_err());
        }
        let delete = need(Route::Image(id), Method::Delete);
        assert_eq!(delete, Need::Scope(Scope::ImagesDelete));
        assert!(reader.allow(delete).is_err());
        for route in [
            Route::AdminUsage,
            Route::AdminKeys,
            Route::AdminKey(key_id),
            Route::AdminStats,
        ] {
            let n = need(route, Method::Get);
            assert_eq!(n, Need::Operator);
            assert_eq!(Caller::Operator.allow(n), Ok(()));
            let all = client(&Scope::ALL);
            assert_eq!(
                all.allow(n),
                Err(ApiError::InsufficientScope("the operator key"))
            );
            assert!(Caller::Anonymous.allow(n).is_err());
        }
        assert_eq!(need(Route::Tags, Method::Post), Need::Nothing);
        assert_eq!(reader.allow(Need::Nothing), Ok(()));
        for n in [post, delete] {
            assert_eq!(Caller::Anonymous.allow(n), Ok(()));
            assert_eq!(Caller::Operator.allow(n), Ok(()));
        }
    }

    #[test]
    fn owners() {
        let c = client(&[Scope::ImagesRead]);
        assert_eq!(c.owner(), "key_0101010101010101010101".get(..24).unwrap());
        assert_eq!(c.sees(), Some(c.owner()));
        assert_eq!(Caller::Operator.sees(), None);
        assert_eq!(Caller::Operator.owner(), OPERATOR);
        assert_eq!(Caller::Anonymous.sees(), Some(ANONYMOUS));
        assert!(!Caller::Operator.rate_limited() && c.rate_limited());
        assert!(Caller::Anonymous.rate_limited());
        // No key id can be taken for the fixed owners.
        assert!(KeyId::parse(OPERATOR).is_none() && KeyId::parse(ANONYMOUS).is_none());
    }

    #[test]
    fn stored_scopes_round_trip() {
        let s: Scopes = [Scope::ImagesDelete, Scope::ImagesRead]
            .into_iter()
            .collect();
        assert_eq!(s.stored(), "images:read images:delete");
        assert_eq!(Scopes::from_stored(&s.stored()), s);
        assert_eq!(
            Scopes::from_stored("images:read admin:all"),
            [Scope::ImagesRead].into_iter().collect()
        );
        assert_eq!(
            Scopes::all().names(),
            ["images:write", "images:read", "images:delete"]
        );
        assert_eq!(Scopes::from_stored(""), Scopes::default());
    }

    #[test]
    fn new_key_requests() {
        let ok = NewKey::parse(br#"{"name": " app A "}"#).unwrap();
        assert_eq!(ok.name, "app A");
        assert_eq!(ok.scopes, Scopes::all());
        assert_eq!(ok.daily_uploads, None);
        let ro = NewKey::parse(
            br#"{"name":"r","scopes":["images:read","images:read"],"dailyUploads":5}"#,
        )
        .unwrap();
        assert_eq!(ro.scopes.names(), ["images:read"]);
        assert_eq!(ro.daily_uploads, Some(5));
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"name":""}"#,
            br#"{"name":"   "}"#,
            br#"{"name":"a\nb"}"#,
            br#"{"name":"a","scopes":[]}"#,
            br#"{"name":"a","scopes":["admin"]}"#,
            br#"{"name":"a","dailyUploads":0}"#,
            br#"{"name":"a","dailyUploads":-1}"#,
            br#"{"name":"a","dailyUploads":1.5}"#,
            br#"{"name":"a","dailyUploads":1000000001}"#,
            br#"{"name":"a","extra":1}"#,
        ] {
            let e = NewKey::parse(bad).unwrap_err();
            assert_eq!(
                e.code(),
                "invalid_key_request",
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = format!(r#"{{"name":"{}"}}"#, "é".repeat(MAX_NAME_CHARS));
        assert!(NewKey::parse(long.as_bytes()).is_ok());
        let longer = format!(r#"{{"name":"{}"}}"#, "é".repeat(MAX_NAME_CHARS + 1));
        assert!(NewKey::parse(longer.as_bytes()).is_err());
        let huge = format!(
            r#"{{"name":"a","pad":"{}"}}"#,
            "x".repeat(MAX_REQUEST_BYTES)
        );
        assert!(NewKey::parse(huge.as_bytes()).is_err());
    }

    #[test]
    fn quota_days() {
        let midnight = 20_000 * DAY_MS;
        assert_eq!(day(midnight), 20_000);
        assert_eq!(day(midnight - 1), 19_999);
        assert_eq!(until_next_day(midnight), 86_400);
        assert_eq!(until_next_day(midnight - 1), 1);
        assert_eq!(until_next_day(midnight - 1500), 2);
        assert_eq!(until_next_day(midnight + 1), 86_400);
    }

    #[test]
    fn usage_is_asked_at_most_once_per_period() {
        let mut cache = UsageCache::default();
        let mut asks = 0;
        // A request every 100 ms for a minute, each answered 2 s after it asks.
        let mut pending: Option<(u64, u64)> = None;
        for now in (0..60_000).step_by(100) {
            if let Some((asked, due)) = pending {
                if now >= due {
                    cache.answered(asked, asks);
                    pending = None;
                }
            }
            if cache.get(now).is_none() && pending.is_none() {
                cache.asking(now);
                asks += 1;
                pending = Some((now, now + 2_000));
            }
        }
        assert!(asks <= 60_000 / USAGE_CACHE_MS + 1, "{asks} asks");
        assert!(
            asks >= 60_000 / (USAGE_CACHE_MS + 2_000),
            "{asks} asks: it does ask again"
        );
        // Never answered yet: nothing to give.
        let empty: UsageCache<u32> = UsageCache::default();
        assert_eq!(empty.get(5), None);
        // A stale answer is given while a recent question is out, not after.
        let mut c = UsageCache::default();
        c.answered(0, 7);
        assert_eq!(c.get(USAGE_CACHE_MS - 1), Some(7));
        assert_eq!(c.get(USAGE_CACHE_MS), None);
        c.asking(USAGE_CACHE_MS);
        assert_eq!(c.get(USAGE_CACHE_MS + 10), Some(7));
        assert_eq!(
            c.get(2 * USAGE_CACHE_MS),
            None,
            "a question that never came back"
        );
    }

    #[test]
    fn the_cache_expires_revokes_and_stays_bounded() {
        let mut cache = KeyCache::default();
        let Caller::Client(k) = client(&[Scope::ImagesRead]) else {
            unreachable!()
        };
        cache.put("h1", Some(k.clone()), 1_000);
        cache.put("h2", None, 1_000);
        assert_eq!(cache.get("h1", 1_000), Some(Some(k.clone())));
        assert_eq!(cache.get("h2", 2_000), Some(None));
        assert_eq!(
            cache.get("h1", 1_000 + CACHE_TTL_MS - 1),
            Some(Some(k.clone()))
        );
        assert_eq!(cache.get("h1", 1_000 + CACHE_TTL_MS), None, "expired");
        assert_eq!(
            cache.get("h1", 999),
            None,
            "a clock that went back trusts nothing"
        );
        assert_eq!(cache.get("h3", 1_000), None);
        cache.revoke(&k.key_id);
        assert_eq!(cache.get("h1", 1_000), None, "revoked at once");
        assert_eq!(cache.get("h2", 1_000), Some(None));
        for i in 0..CACHE_CAPACITY * 3 {
            cache.put(&format!("k{i}"), None, 5_000 + i as u64);
            assert!(cache.len() <= CACHE_CAPACITY);
        }
        assert!(!cache.is_empty());
    }
}
