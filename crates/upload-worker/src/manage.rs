//! Finding and managing images: `GET /images` (search and list), `GET /tags`,
//! `GET /images/{id}/content` and `DELETE /images/{id}`. Parsing, cursors, headers and SQL
//! come from [`shared::api::search`], [`shared::api::download`] and [`shared::storage::manage`].

use edge::d1::Db;
use edge::log::{self, Level};
use edge::OrUnavailable;
use shared::api::download::{self, Part};
use shared::api::search::{
    encode_cursor, signing_input, Position, SearchPage, SearchQuery, TagCloud, TagCount, TagsQuery,
    MAX_TIME_MS,
};
use shared::api::ApiError;
use shared::storage::manage::{self as sql, ObjectRow, Param, SearchRow, Statement};
use shared::wire::config::binding;
use shared::wire::keys::record_key;
use shared::wire::log_event;
use shared::ImageId;
use worker::wasm_bindgen::JsValue;
use worker::{Bucket, Env, Headers, Request, Response};

use crate::cursor_mac;
use crate::http;
use crate::settings::Settings;

/// The raw query string of a request, without `?`.
fn raw_query(req: &Request) -> String {
    let url = req.inner().url();
    let query = url.split_once('?').map_or("", |(_, q)| q);
    query.split('#').next().unwrap_or_default().to_string()
}

fn header(req: &Request, name: &str) -> Option<String> {
    req.headers().get(name).ok().flatten()
}

fn d1(env: &Env) -> Result<Db<ApiError>, ApiError> {
    env.d1(binding::DB)
        .map(Db::new)
        .map_err(|e| ApiError::Internal(format!("DB binding: {e}")))
}

fn bucket(env: &Env) -> Result<Bucket, ApiError> {
    env.bucket(binding::IMAGE_BUCKET)
        .map_err(|e| ApiError::Internal(format!("IMAGE_BUCKET binding: {e}")))
}

fn js(param: &Param) -> JsValue {
    match param {
        Param::Int(n) => JsValue::from_f64(*n as f64),
        Param::Text(t) => JsValue::from_str(t),
    }
}

fn params(st: &Statement) -> Vec<JsValue> {
    st.params.iter().map(js).collect()
}

/// A new cursor at `position` for `query`'s filters.
async fn cursor(
    settings: &Settings,
    position: &Position,
    query: &SearchQuery,
) -> Result<String, ApiError> {
    let mac = cursor_mac::mac(settings, &signing_input(position, &query.filters)).await?;
    Ok(encode_cursor(position, &mac))
}

/// `GET /images`: a page of images, newest first, with the next page's cursor. `owner`:
/// only that owner's images (a client's search); `None`: everyone's (the operator's).
pub async fn search(
    req: &Request,
    env: &Env,
    settings: &Settings,
    owner: Option<&str>,
) -> Result<Response, ApiError> {
    let query = SearchQuery::parse(&raw_query(req))?;
    let after = match &query.cursor {
        Some(c) => {
            let expected = cursor_mac::mac(settings, &c.signing_input(&query.filters)).await?;
            Some(c.verify(&expected)?)
        }
        None => None,
    };
    let db = d1(env)?;
    let search = sql::search_as(&query, after, owner);
    let rows: Vec<SearchRow> = db.all("D1 search", &search.sql, &params(&search)).await?;
    let (images, next) = sql::page(rows, query.limit);
    let next_cursor = match next {
        Some(position) => Some(cursor(settings, &position, &query).await?),
        None => None,
    };
    let page = SearchPage {
        images,
        next_cursor,
    };
    Ok(http::json(200, &page, Headers::new()))
}

/// `GET /tags`: the most used tags with their counts, over `owner`'s images (or all).
pub async fn tags(req: &Request, env: &Env, owner: Option<&str>) -> Result<Response, ApiError> {
    let query = TagsQuery::parse(&raw_query(req))?;
    let db = d1(env)?;
    let mut tags: Vec<TagCount> = match owner {
        None => {
            let limit = [JsValue::from(query.limit)];
            db.all("D1 tag cloud", sql::TAG_CLOUD, &limit).await?
        }
        Some(owner) => {
            let params = [JsValue::from(query.limit), JsValue::from_str(owner)];
            db.all("D1 tag cloud", sql::OWNER_TAG_CLOUD, &params)
                .await?
        }
    };
    for t in &mut tags {
        t.category = shared::tagging::categories::is_category(&t.tag);
    }
    Ok(http::json(200, &TagCloud { tags }, Headers::new()))
}

/// Where an image's bytes are, if `owner` owns it (`None`: whoever does).
async fn object_row(
    db: &Db<ApiError>,
    id: &ImageId,
    owner: Option<&str>,
) -> Result<Option<ObjectRow>, ApiError> {
    let id = JsValue::from_str(&id.to_string());
    match owner {
        None => {
            db.first("D1 select content", sql::SELECT_CONTENT, &[id])
                .await
        }
        Some(owner) => {
            let params = [id, JsValue::from_str(owner)];
            db.first("D1 select content", sql::SELECT_OWNED_CONTENT, &params)
                .await
        }
    }
}

fn with_headers(status: u16, pairs: &[(&'static str, String)]) -> worker::ResponseBuilder {
    let headers = Headers::new();
    for (name, value) in pairs {
        let _ = headers.set(name, value);
    }
    Response::builder()
        .with_status(status)
        .with_headers(headers)
}

/// `GET` and `HEAD /images/{id}/content`: the original bytes, streamed from R2 to the client
/// without passing through wasm; `Range` gives `206` or `416`, a current `If-None-Match`
/// `304`. Another owner's image is a `404`, as one that does not exist.
pub async fn image_content(
    req: &Request,
    env: &Env,
    id: ImageId,
    head: bool,
    owner: Option<&str>,
) -> Result<Response, ApiError> {
    let row = object_row(&d1(env)?, &id, owner)
        .await?
        .ok_or(ApiError::ImageNotFound)?;
    if row.size > MAX_TIME_MS {
        return Err(ApiError::Internal(format!(
            "image {id} has size {}",
            row.size
        )));
    }
    let etag = download::etag(&id);
    if download::not_modified(header(req, "if-none-match").as_deref(), &etag) {
        let headers = download::headers(&id, &row.content_type, row.size, Part::Whole, true);
        return Ok(with_headers(304, &headers).empty());
    }
    let part = Part::of(
        header(req, "range").as_deref(),
        header(req, "if-range").as_deref(),
        &etag,
        row.size,
    );
    let (status, range) = match part {
        Part::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size: row.size }),
        Part::Whole => (200, None),
        Part::Range { start, end } => (
            206,
            Some(worker::Range::OffsetWithLength {
                offset: start,
                length: end - start + 1,
            }),
        ),
    };
    let headers = download::headers(&id, &row.content_type, row.size, part, false);
    if head {
        return Ok(with_headers(status, &headers).empty());
    }
    let bucket = bucket(env)?;
    let get = bucket.get(&row.r2_key);
    let get = match range {
        Some(range) => get.range(range),
        None => get,
    };
    // No object yet (its upload is still being stored) or no more: nothing to show.
    let object = get
        .execute()
        .await
        .or_unavailable("R2 get")?
        .ok_or(ApiError::ImageNotFound)?;
    if object.size() != row.size {
        return Err(ApiError::Unavailable(format!(
            "image {id}: R2 holds {} bytes, D1 says {}",
            object.size(),
            row.size
        )));
    }
    let body = object
        .body()
        .ok_or_else(|| ApiError::Unavailable(format!("R2 object of {id} has no body")))?
        .response_body()
        .or_unavailable("R2 body")?;
    Ok(with_headers(status, &headers).body(body))
}

/// `DELETE /images/{id}`: the bytes in R2, then the rows in D1 (tags, Idempotency-Keys, the
/// image) in one transaction, then the bytes in R2 again and the record in KV; `204`, and
/// `404` once gone.
///
/// The order keeps a tagger from bringing the image back: once the row is gone it cannot
/// claim, mark or index it, and a record it writes to KV after it re-checks D1
/// (`Store::publish`) or before our KV delete. An upload still streaming checks its row
/// after its put and removes its object if the row is gone; the second R2 delete covers a
/// put that ended between our first delete and the rows' removal. A failure leaves a state
/// that a retry of the delete finishes (R2 deletes are idempotent; a `404` still removes a
/// KV record left behind). KV is never read first: a stale read must not skip the delete.
/// A client (`owner`) deletes only its own images: another's is a `404`, and its record is
/// left alone. Returns the owner of the image deleted (for its live `image.deleted`).
pub async fn delete(env: Env, id: ImageId, owner: Option<String>) -> Result<String, ApiError> {
    let db = d1(&env)?;
    let kv = env
        .kv(binding::RESULTS_KV)
        .map_err(|e| ApiError::Internal(format!("RESULTS_KV binding: {e}")))?;
    let key = record_key(&id);
    let Some(row) = object_row(&db, &id, owner.as_deref()).await? else {
        // A record left behind is removed only once no owner has the image.
        if owner.is_none() || object_row(&db, &id, None).await?.is_none() {
            kv.delete(&key).await.or_unavailable("KV delete")?;
        }
        return Err(ApiError::ImageNotFound);
    };
    let bucket = bucket(&env)?;
    crate::r2::delete(&bucket, &row.r2_key).await?;
    let ids = JsValue::from_str(&sql::id_list(&[id.to_string()]));
    let batch = sql::DELETE_IMAGES
        .iter()
        .map(|s| db.statement(s, std::slice::from_ref(&ids)))
        .collect::<Result<Vec<_>, _>>()?;
    db.batch("D1 delete", batch).await?;
    crate::r2::delete(&bucket, &row.r2_key).await?;
    kv.delete(&key).await.or_unavailable("KV delete")?;
    log::emit(
        Level::Info,
        log_event::UPLOAD_DELETED,
        &serde_json::json!({ "imageId": id }),
    );
    Ok(row.owner)
}
