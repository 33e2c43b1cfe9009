//! The statements against the real migrations, in SQLite: results against a plain reference,
//! pagination, tag counts, deletes, and the query plan of every shape.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rusqlite::{params, params_from_iter, Connection};

use super::*;
use crate::api::search::{Filters, SearchQuery, DEFAULT_LIMIT};
use crate::storage::images::{
    CLAIM, EXISTS, INDEX_TAGS, INSERT_QUEUED, MARK_DONE, MARK_FAILED, RESERVE_KEY,
};
use crate::storage::testing::{db, migrations};

/// splitmix64: a small deterministic generator for seeding.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn id(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .to_string()
    }
}

/// Tag names as the model writes them (mixed case); searched in lower case.
const NAMES: [&str; 12] = [
    "Tabby",
    "TIGER CAT",
    "lynx",
    "Egyptian cat",
    "golden retriever",
    "LABRADOR",
    "seashore",
    "Volcano",
    "daisy",
    "mountain bike",
    "espresso",
    "pizza",
];

/// The owners images are seeded for: two clients and the anonymous one.
const OWNERS: [&str; 3] = [
    "key_aaaaaaaaaaaaaaaaaaaa",
    "key_bbbbbbbbbbbbbbbbbbbb",
    "anonymous",
];

#[derive(Clone, Debug)]
struct Img {
    id: String,
    status: &'static str,
    tags: BTreeSet<String>,
    uploaded_at: u64,
    owner: &'static str,
}

/// The insert and tag index of the schema before owners (migrations 0001 to 0003).
const LEGACY_INSERT: &str = "INSERT INTO images \
     (id, status, r2_key, content_type, size, uploaded_at, due_at, updated_at) \
     VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?5, ?5)";
const LEGACY_INDEX: &str = "INSERT OR IGNORE INTO image_tags (tag, uploaded_at, image_id) \
     SELECT lower(j.value), i.uploaded_at, i.id FROM images i, json_each(i.tags) j \
     WHERE i.id = ?1 AND i.status = 'done'";

/// Inserts `n` images through the production statements: most done with 1 to 4 tags
/// (skewed towards the first names), some queued, some failed; upload times collide often;
/// each of one of [`OWNERS`].
fn seed(conn: &Connection, rng: &mut Rng, n: usize) -> Vec<Img> {
    seed_with(conn, rng, n, false)
}

/// [`seed`], or with the statements of the schema before owners (`legacy`: every image is
/// then the anonymous client's).
fn seed_with(conn: &Connection, rng: &mut Rng, n: usize, legacy: bool) -> Vec<Img> {
    let mut images = Vec::new();
    for _ in 0..n {
        let id = rng.id();
        let uploaded_at = 1_000 + rng.below(n as u64 / 2 + 1) * 10;
        let owner = if legacy {
            "anonymous"
        } else {
            OWNERS[rng.below(OWNERS.len() as u64) as usize]
        };
        let key = format!("images/{id}.png");
        if legacy {
            conn.execute(
                LEGACY_INSERT,
                params![id, key, "image/png", 10, uploaded_at],
            )
        } else {
            conn.execute(
                INSERT_QUEUED,
                params![id, key, "image/png", 10, uploaded_at, owner],
            )
        }
        .unwrap();
        let roll = rng.below(10);
        let mut tags = BTreeSet::new();
        let status = if roll < 7 {
            // Some names are labels, some categories: search finds both.
            let (mut names, mut categories) = (Vec::new(), Vec::new());
            for _ in 0..=rng.below(4) {
                // Skewed: the square of a uniform index favours the first names.
                let r = rng.below(NAMES.len() as u64);
                let name = NAMES[(r * r / NAMES.len() as u64) as usize];
                if tags.insert(name.to_ascii_lowercase()) {
                    if rng.below(3) == 0 {
                        categories.push(serde_json::json!({"name": name, "score": 0.9}));
                    } else {
                        names.push(name);
                    }
                }
            }
            let json = serde_json::to_string(&names).unwrap();
            let categories = serde_json::to_string(&categories).unwrap();
            conn.execute(
                MARK_DONE,
                params![
                    id,
                    json,
                    "[]",
                    "m",
                    0.8,
                    uploaded_at + 5,
                    None::<u64>,
                    categories
                ],
            )
            .unwrap();
            let index = if legacy { LEGACY_INDEX } else { INDEX_TAGS };
            conn.execute(index, [&id]).unwrap();
            "done"
        } else if roll < 9 {
            "queued"
        } else {
            conn.execute(
                MARK_FAILED,
                params![id, "invalid_image", "x", uploaded_at + 5, None::<u64>],
            )
            .unwrap();
            "failed"
        };
        images.push(Img {
            id,
            status,
            tags,
            uploaded_at,
            owner,
        });
    }
    images
}

fn to_sql(p: &Param) -> rusqlite::types::Value {
    match p {
        Param::Int(n) => rusqlite::types::Value::Integer(*n as i64),
        Param::Text(t) => rusqlite::types::Value::Text(t.clone()),
    }
}

fn run(conn: &Connection, st: &Statement) -> Vec<SearchRow> {
    conn.prepare(&st.sql)
        .unwrap()
        .query_map(params_from_iter(st.params.iter().map(to_sql)), |r| {
            Ok(SearchRow {
                id: r.get("id")?,
                status: r.get("status")?,
                tags: r.get("tags")?,
                categories: r.get("categories")?,
                content_type: r.get("content_type")?,
                size: r.get("size")?,
                uploaded_at: r.get("uploaded_at")?,
                processed_at: r.get("processed_at")?,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Every page of a search, following the cursor, as ids.
fn all_pages(conn: &Connection, query: &SearchQuery) -> Vec<String> {
    all_pages_as(conn, query, None)
}

/// Every page of an owner's search (or everyone's), following the cursor, as ids.
fn all_pages_as(conn: &Connection, query: &SearchQuery, owner: Option<&str>) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor = None;
    for _ in 0..10_000 {
        let (items, next) = page(run(conn, &search_as(query, cursor, owner)), query.limit);
        assert!(items.len() <= query.limit as usize);
        ids.extend(items.iter().map(|i| i.image_id.to_string()));
        match next {
            Some(p) => cursor = Some(p),
            None => return ids,
        }
    }
    panic!("pagination did not end");
}

/// The plain reference: filter, then newest first by (uploaded_at, id).
fn reference(images: &[Img], filters: &Filters) -> Vec<String> {
    reference_as(images, filters, None)
}

/// [`reference`] over one owner's images (or everyone's).
fn reference_as(images: &[Img], filters: &Filters, owner: Option<&str>) -> Vec<String> {
    let mut hits: Vec<&Img> = images
        .iter()
        .filter(|i| owner.is_none_or(|o| i.owner == o))
        .filter(|i| filters.tags.iter().all(|t| i.tags.contains(t)))
        .filter(|i| filters.status.is_none_or(|s| status_text(s) == i.status))
        .filter(|i| filters.since.is_none_or(|s| i.uploaded_at >= s))
        .filter(|i| filters.until.is_none_or(|u| i.uploaded_at < u))
        .collect();
    hits.sort_by(|a, b| (b.uploaded_at, &b.id).cmp(&(a.uploaded_at, &a.id)));
    hits.into_iter().map(|i| i.id.clone()).collect()
}

fn query(text: &str) -> SearchQuery {
    SearchQuery::parse(text).unwrap()
}

/// The `EXPLAIN QUERY PLAN` of a statement: `(id, parent, detail)` per node.
fn plan_tree(
    conn: &Connection,
    sql: &str,
    params: &[rusqlite::types::Value],
) -> Vec<(i64, i64, String)> {
    conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(params_from_iter(params.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(3)?))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The details of the plan's nodes, in order.
fn plan(conn: &Connection, sql: &str, params: &[rusqlite::types::Value]) -> Vec<String> {
    plan_tree(conn, sql, params)
        .into_iter()
        .map(|(_, _, d)| d)
        .collect()
}

/// No full scan of a table and no sort: only searches of indexes. The scans allowed are of
/// constant rows: the `VALUES` list of searched tags (at most `MAX_TAGS` rows), the one-row
/// co-routine that picks the rarest of them, and `json_each` (a list of ids).
fn assert_indexed(conn: &Connection, sql: &str, params: &[rusqlite::types::Value], what: &str) {
    let tree = plan_tree(conn, sql, params);
    let lines: Vec<&str> = tree.iter().map(|(_, _, d)| d.as_str()).collect();
    // Co-routines that only read the VALUES list (and tag_counts by its primary key).
    let constant = |name: &str| {
        let Some((id, _, _)) = tree
            .iter()
            .find(|(_, _, d)| d == &format!("CO-ROUTINE {name}"))
        else {
            return false;
        };
        let children: Vec<&str> = tree
            .iter()
            .filter(|(_, parent, _)| parent == id)
            .map(|(_, _, d)| d.as_str())
            .collect();
        children.iter().all(|d| {
            d.ends_with("-ROW VALUES CLAUSE")
                || d.starts_with("SEARCH c USING PRIMARY KEY (tag=?)")
                || d.starts_with("SEARCH c USING PRIMARY KEY (owner=? AND tag=?)")
        })
    };
    for line in &lines {
        let allowed_scan = line.ends_with("-ROW VALUES CLAUSE")
            || line.contains("json_each VIRTUAL TABLE")
            || line.strip_prefix("SCAN ").is_some_and(constant);
        assert!(
            (allowed_scan || !line.starts_with("SCAN ")) && !line.contains("TEMP B-TREE"),
            "{what}: {line}\n{lines:#?}"
        );
    }
}

const SHAPES: [&str; 8] = [
    "",
    "status=queued",
    "tag=tabby",
    "tag=tabby&status=done",
    "tag=tabby&tag=lynx",
    "tag=tabby&tag=lynx&tag=daisy&status=done",
    "since=1970-01-01T00:00:01Z&until=1970-01-01T00:00:02Z",
    "tag=TIGER+CAT&since=1970-01-01T00:00:01Z",
];

#[test]
fn every_search_shape_walks_an_index_without_sorting() {
    let conn = db();
    seed(&conn, &mut Rng(1), 300);
    for text in SHAPES {
        // A client's search: the owner's indexes.
        let q = query(text);
        let st = search_as(&q, None, Some(OWNERS[0]));
        let params: Vec<_> = st.params.iter().map(to_sql).collect();
        let lines = plan(&conn, &st.sql, &params);
        assert_indexed(&conn, &st.sql, &params, text);
        let expected = match (q.filters.tags.len(), q.filters.status) {
            (0, None) => "SEARCH i USING INDEX images_by_owner (owner=?",
            (0, Some(_)) => "SEARCH i USING INDEX images_by_owner_status (owner=? AND status=?",
            _ => "SEARCH t USING COVERING INDEX image_tags_by_owner (owner=? AND tag=? AND uploaded_at>? AND uploaded_at<?)",
        };
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "{text}, owned: {lines:#?}"
        );
    }
    for text in SHAPES {
        let q = query(text);
        let cursor = Position {
            uploaded_at: 1_500,
            id: ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f").unwrap(),
        };
        for cursor in [None, Some(cursor)] {
            let st = search(&q, cursor);
            let params: Vec<_> = st.params.iter().map(to_sql).collect();
            let lines = plan(&conn, &st.sql, &params);
            assert_indexed(&conn, &st.sql, &params, text);
            // Each shape uses the index it was written for.
            let expected = match (q.filters.tags.len(), q.filters.status) {
                (0, None) => "SEARCH i USING INDEX images_by_upload",
                (0, Some(_)) => "SEARCH i USING INDEX images_by_status",
                _ => "SEARCH t USING PRIMARY KEY (tag=? AND uploaded_at>? AND uploaded_at<?)",
            };
            assert!(
                lines.iter().any(|l| l.starts_with(expected)),
                "{text}: {lines:#?}"
            );
            if q.filters.tags.len() > 1 {
                assert!(
                    lines.iter().any(|l| l.contains(
                        "SEARCH o USING PRIMARY KEY (tag=? AND uploaded_at=? AND image_id=?)"
                    )),
                    "{text}: {lines:#?}"
                );
            }
        }
    }
}

#[test]
fn other_statements_search_indexes() {
    let conn = db();
    let id = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
    let ids = id_list(&[id]);
    let text = |s: &str| rusqlite::types::Value::Text(s.into());
    let int = rusqlite::types::Value::Integer;
    for (sql, params) in [
        (SELECT_CONTENT, vec![text(id)]),
        (SELECT_OWNED_CONTENT, vec![text(id), text(OWNERS[0])]),
        (
            crate::storage::images::SELECT_OWNED_IMAGE,
            vec![text(id), text(OWNERS[0])],
        ),
        (SELECT_EXPIRED, vec![int(5), int(100)]),
        (
            crate::storage::images::SELECT_UNSENT,
            vec![int(5), int(100)],
        ),
        (crate::storage::images::PURGE_KEYS, vec![int(5), int(1000)]),
        (DELETE_IMAGES[0], vec![text(&ids)]),
        (DELETE_IMAGES[1], vec![text(&ids)]),
        (DELETE_IMAGES[2], vec![text(&ids)]),
        (DELETE_IMAGES[3], vec![text(&ids)]),
    ] {
        assert_indexed(&conn, sql, &params, sql);
    }
    // The tag cloud reads its index in order and stops at the limit: no sort, and never
    // image_tags. (O(limit), at most O(distinct tags).)
    let cloud = plan(&conn, TAG_CLOUD, &[int(10)]);
    assert_eq!(
        cloud,
        ["SCAN tag_counts USING COVERING INDEX tag_counts_by_count"]
    );
    // A client's: the owner's range of its index, in order.
    let owned = plan(&conn, OWNER_TAG_CLOUD, &[int(10), text(OWNERS[0])]);
    assert_eq!(
        owned,
        ["SEARCH owner_tag_counts USING COVERING INDEX owner_tag_counts_by_count (owner=?)"]
    );
}

#[test]
fn a_client_finds_only_its_own_images() {
    let conn = db();
    let images = seed(&conn, &mut Rng(13), 300);
    for owner in OWNERS {
        for text in SHAPES {
            for limit in [2, DEFAULT_LIMIT] {
                let mut q = query(text);
                q.limit = limit;
                let got = all_pages_as(&conn, &q, Some(owner));
                assert_eq!(
                    got,
                    reference_as(&images, &q.filters, Some(owner)),
                    "{owner} {text}"
                );
                assert!(got
                    .iter()
                    .all(|id| images.iter().any(|i| &i.id == id && i.owner == owner)));
            }
        }
        // Its content and rows: its own only.
        for image in &images {
            let content = conn
                .query_row(SELECT_OWNED_CONTENT, params![image.id, owner], |_| Ok(()))
                .is_ok();
            let row = conn
                .query_row(
                    crate::storage::images::SELECT_OWNED_IMAGE,
                    params![image.id, owner],
                    |_| Ok(()),
                )
                .is_ok();
            assert_eq!(content, image.owner == owner);
            assert_eq!(row, image.owner == owner);
        }
    }
}

#[test]
fn searches_match_the_reference_and_pages_cover_each_image_once() {
    let conn = db();
    let images = seed(&conn, &mut Rng(7), 400);
    for text in SHAPES {
        for limit in [1, 3, DEFAULT_LIMIT] {
            let mut q = query(text);
            q.limit = limit;
            let expected = reference(&images, &q.filters);
            let got = all_pages(&conn, &q);
            assert_eq!(got, expected, "{text} limit {limit}");
        }
    }
    // The items carry the row's data.
    let first = page(run(&conn, &search(&query("tag=tabby"), None)), 1).0;
    let item = &first[0];
    assert_eq!(item.status, Status::Done);
    assert!(item.tags.iter().any(|t| t.eq_ignore_ascii_case("tabby")));
    assert!(item.processed_at.is_some());
    assert_eq!(item.content_type, "image/png");
}

#[test]
fn an_unknown_tag_finds_nothing_at_once() {
    let conn = db();
    seed(&conn, &mut Rng(3), 200);
    for text in [
        "tag=unicorn",
        "tag=tabby&tag=unicorn",
        "tag=unicorn&tag=lynx&tag=daisy",
    ] {
        assert!(run(&conn, &search(&query(text), None)).is_empty(), "{text}");
    }
}

fn counts(conn: &Connection) -> Vec<(String, u64)> {
    conn.prepare(TAG_CLOUD)
        .unwrap()
        .query_map([1000], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn owner_counts(conn: &Connection, owner: &str) -> Vec<(String, u64)> {
    conn.prepare(OWNER_TAG_CLOUD)
        .unwrap()
        .query_map(params![1000, owner], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn owner_recount(conn: &Connection, owner: &str) -> Vec<(String, u64)> {
    conn.prepare(
        "SELECT tag, count(*) AS n FROM image_tags WHERE owner = ?1 GROUP BY tag \
         ORDER BY n DESC, tag",
    )
    .unwrap()
    .query_map([owner], |r| Ok((r.get(0)?, r.get(1)?)))
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn recount(conn: &Connection) -> Vec<(String, u64)> {
    conn.prepare("SELECT tag, count(*) AS n FROM image_tags GROUP BY tag ORDER BY n DESC, tag")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn delete(conn: &Connection, ids: &[&str]) {
    let list = id_list(ids);
    for sql in DELETE_IMAGES {
        conn.execute(sql, [&list]).unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random filters and page sizes: the pages, followed to the end, are the reference.
    #[test]
    fn any_search_pages_like_the_reference(
        seed_value in any::<u64>(),
        tags in proptest::sample::subsequence(NAMES.to_vec(), 0..=3),
        status in proptest::option::of(0..3u8),
        since in proptest::option::of(1_000u64..2_200),
        span in proptest::option::of(0u64..1_200),
        limit in 1u32..12,
    ) {
        let conn = db();
        let images = seed(&conn, &mut Rng(seed_value), 120);
        let owner = OWNERS[(seed_value % 4) as usize % OWNERS.len()];
        let owner = (seed_value % 4 != 3).then_some(owner);
        let mut q = SearchQuery::parse("").unwrap();
        q.filters = Filters {
            tags: tags.iter().map(|t| t.to_ascii_lowercase()).collect::<BTreeSet<_>>().into_iter().collect(),
            status: status.map(|s| [Status::Queued, Status::Done, Status::Failed][s as usize]),
            since,
            until: span.map(|s| since.unwrap_or(1_000) + s),
        };
        q.limit = limit;
        prop_assert_eq!(all_pages_as(&conn, &q, owner), reference_as(&images, &q.filters, owner));
    }

    /// Whatever is indexed and deleted, in any order, the counts are those of image_tags.
    #[test]
    fn tag_counts_follow_image_tags(seed_value in any::<u64>(), deletions in proptest::collection::vec(any::<prop::sample::Index>(), 0..40)) {
        let conn = db();
        let images = seed(&conn, &mut Rng(seed_value), 60);
        prop_assert_eq!(counts(&conn), recount(&conn));
        for index in deletions {
            let image = index.get(&images);
            delete(&conn, &[&image.id]);
            // Indexing again (a redelivery) never counts twice.
            conn.execute(INDEX_TAGS, [&images[0].id]).unwrap();
            prop_assert_eq!(counts(&conn), recount(&conn));
            for owner in OWNERS {
                prop_assert_eq!(owner_counts(&conn, owner), owner_recount(&conn, owner));
            }
        }
        prop_assert!(counts(&conn).iter().all(|(_, n)| *n > 0));
    }
}

#[test]
fn the_migration_counts_tags_indexed_before_it() {
    let conn = Connection::open_in_memory().unwrap();
    // Every migration but the tag counts' (today's statements need the later columns), then
    // images, then the tag counts.
    let (counting, others): (Vec<_>, Vec<_>) = migrations()
        .into_iter()
        .partition(|f| f.ends_with("0002_tag_counts.sql"));
    for file in &others {
        conn.execute_batch(&std::fs::read_to_string(file).unwrap())
            .unwrap();
    }
    seed(&conn, &mut Rng(11), 80);
    let before = recount(&conn);
    assert_eq!(counting.len(), 1);
    conn.execute_batch(&std::fs::read_to_string(&counting[0]).unwrap())
        .unwrap();
    assert!(!before.is_empty());
    assert_eq!(counts(&conn), before);
}

#[test]
fn images_from_before_owners_are_the_anonymous_clients_and_counted_as_such() {
    let conn = Connection::open_in_memory().unwrap();
    // The migrations before owners, the rows, then 0005 and the ones after it.
    let (owners, others): (Vec<_>, Vec<_>) = migrations().into_iter().partition(|f| {
        f.file_name()
            .is_some_and(|n| n.to_string_lossy().as_ref() >= "0005")
    });
    for file in &others {
        conn.execute_batch(&std::fs::read_to_string(file).unwrap())
            .unwrap();
    }
    seed_with(&conn, &mut Rng(11), 80, true);
    let before = recount(&conn);
    assert!(owners[0].ends_with("0005_api_keys.sql"));
    for file in &owners {
        conn.execute_batch(&std::fs::read_to_string(file).unwrap())
            .unwrap();
    }
    assert!(!before.is_empty());
    assert_eq!(owner_counts(&conn, "anonymous"), before);
    assert!(owner_counts(&conn, OWNERS[0]).is_empty());
    let owned: i64 = conn
        .query_row(
            "SELECT count(*) FROM images WHERE owner = 'anonymous'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(owned, 80);
}

#[test]
fn a_deleted_image_is_gone_everywhere_and_no_tagger_statement_brings_it_back() {
    let conn = db();
    let images = seed(&conn, &mut Rng(5), 30);
    let done = images.iter().find(|i| i.status == "done").unwrap();
    let queued = images.iter().find(|i| i.status == "queued").unwrap();
    conn.query_row(
        RESERVE_KEY,
        params!["anon", "k", queued.id, 1, 1000, 0],
        |_| Ok(()),
    )
    .unwrap();
    conn.execute(
        "INSERT INTO notifications (event_id, image_id, type, url, payload, created_at, updated_at) \
         VALUES ('msg_1', ?1, 'image.tagged', 'https://hook.example/', '{}', 1, 1)",
        [&done.id],
    )
    .unwrap();
    delete(&conn, &[&done.id, &queued.id]);
    let count = |sql: &str, id: &str| -> i64 { conn.query_row(sql, [id], |r| r.get(0)).unwrap() };
    for id in [&done.id, &queued.id] {
        assert_eq!(count("SELECT count(*) FROM images WHERE id = ?1", id), 0);
        assert_eq!(
            count("SELECT count(*) FROM image_tags WHERE image_id = ?1", id),
            0
        );
        assert_eq!(
            count(
                "SELECT count(*) FROM idempotency_keys WHERE image_id = ?1",
                id
            ),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM notifications WHERE image_id = ?1", id),
            0
        );
        // A delivery still on the queue finds nothing to claim (outcome `gone`) ...
        let claimed = conn
            .prepare(CLAIM)
            .unwrap()
            .query_map(params![id, 5000, 9000], |_| Ok(()))
            .unwrap()
            .count();
        assert_eq!(claimed, 0);
        // ... and a delivery that claimed before the delete writes nothing back.
        assert_eq!(
            conn.execute(
                MARK_DONE,
                params![id, "[\"Tabby\"]", "[]", "m", 0.8, 6000, None::<u64>, "[]"]
            )
            .unwrap(),
            0
        );
        assert_eq!(conn.execute(INDEX_TAGS, [id]).unwrap(), 0);
        assert_eq!(
            conn.execute(
                MARK_FAILED,
                params![id, "object_missing", "x", 6000, None::<u64>]
            )
            .unwrap(),
            0
        );
        // `Store::publish` re-checks this after writing KV, and removes the record.
        assert_eq!(
            conn.prepare(EXISTS)
                .unwrap()
                .query_map([id], |_| Ok(()))
                .unwrap()
                .count(),
            0
        );
    }
    assert_eq!(counts(&conn), recount(&conn));
    assert_eq!(images.len() - 2, {
        let n: i64 = conn
            .query_row("SELECT count(*) FROM images", [], |r| r.get(0))
            .unwrap();
        n as usize
    });
}

#[test]
fn expired_images_come_oldest_first_in_bounded_batches() {
    let conn = db();
    let images = seed(&conn, &mut Rng(9), 50);
    let cutoff = 1_100;
    let expired: Vec<String> = conn
        .prepare(SELECT_EXPIRED)
        .unwrap()
        .query_map(params![cutoff, 5], |r| r.get("id"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    // Only finished images: a queued one may be uploading or being tagged.
    let mut older: Vec<&Img> = images
        .iter()
        .filter(|i| i.uploaded_at < cutoff && i.status != "queued")
        .collect();
    older.sort_by(|a, b| (a.uploaded_at, &a.id).cmp(&(b.uploaded_at, &b.id)));
    let expected: Vec<String> = older.iter().take(5).map(|i| i.id.clone()).collect();
    assert_eq!(expired, expected);
}

#[test]
fn id_lists_are_json() {
    assert_eq!(id_list(&["a", "b\""]), r#"["a","b\""]"#);
    assert_eq!(id_list::<&str>(&[]), "[]");
}

/// The search statements alone, natively in SQLite (no worker, no D1 layer), on 100,000
/// images with 1 to 5 of 1,000 Zipf-distributed tags each: p50 and p99 of each shape.
/// `cargo test -p shared --release -- --ignored --nocapture query_timings`
#[test]
#[ignore = "a benchmark; run it on purpose"]
fn query_timings() {
    use std::time::Instant;
    const IMAGES: usize = 100_000;
    const LABELS: usize = 1000;
    const SAMPLES: usize = 500;
    const T0: u64 = 1_700_000_000_000;
    const STEP: u64 = 300_000;

    // Zipf (s = 1): rank k with probability proportional to 1 / (k + 1).
    let mut cumulative: Vec<f64> = (1..=LABELS)
        .scan(0.0, |sum, k| {
            *sum += 1.0 / k as f64;
            Some(*sum)
        })
        .collect();
    let total = cumulative[LABELS - 1];
    cumulative.iter_mut().for_each(|c| *c /= total);
    let zipf = |rng: &mut Rng| {
        let u = (rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        cumulative.partition_point(|c| *c < u).min(LABELS - 1)
    };

    let conn = db();
    let mut rng = Rng(2026);
    let started = Instant::now();
    let tx = conn.unchecked_transaction().unwrap();
    let mut images: Vec<(String, Vec<usize>)> = Vec::with_capacity(IMAGES);
    for i in 0..IMAGES {
        let id = rng.id();
        let at = T0 + i as u64 * STEP;
        let mut tags: Vec<usize> = Vec::new();
        let n = 1 + rng.below(5) as usize;
        while tags.len() < n {
            let t = zipf(&mut rng);
            if !tags.contains(&t) {
                tags.push(t);
            }
        }
        let names: Vec<String> = tags.iter().map(|t| format!("label {t}")).collect();
        let json = serde_json::to_string(&names).unwrap();
        tx.execute(
            INSERT_QUEUED,
            params![id, "k", "image/jpeg", 1, at, "operator"],
        )
        .unwrap();
        tx.execute(
            MARK_DONE,
            params![id, json, "[]", "m", 0.8, at + 1, None::<u64>, "[]"],
        )
        .unwrap();
        tx.execute(INDEX_TAGS, [&id]).unwrap();
        images.push((id, tags));
    }
    tx.commit().unwrap();
    println!("seeded {IMAGES} images in {:?}", started.elapsed());

    let tag = |t: usize| format!("tag=label+{t}");
    let report = |name: &str, mut ms: Vec<f64>| {
        ms.sort_by(f64::total_cmp);
        println!(
            "{name:<22} p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
            ms[ms.len() / 2],
            ms[ms.len() * 99 / 100 - 1],
            ms[ms.len() - 1]
        );
    };
    let timed = |q: &SearchQuery, cursor: Option<Position>| {
        let st = search(q, cursor);
        let t = Instant::now();
        let rows = run(&conn, &st);
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        assert!(rows.len() <= q.limit as usize + 1);
        ms
    };
    let one: Vec<f64> = (0..SAMPLES)
        .map(|_| timed(&query(&tag(zipf(&mut rng))), None))
        .collect();
    report("one-tag search", one);
    let two: Vec<f64> = (0..SAMPLES)
        .map(|_| loop {
            let (_, tags) = &images[rng.below(IMAGES as u64) as usize];
            if let [a, b, ..] = tags.as_slice() {
                break timed(&query(&format!("{}&{}", tag(*a), tag(*b))), None);
            }
        })
        .collect();
    report("two-tag search", two);
    let deep: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let i = IMAGES / 2 + rng.below(1000) as usize;
            let cursor = Position {
                uploaded_at: T0 + i as u64 * STEP,
                id: ImageId::parse(&images[i].0).unwrap(),
            };
            timed(&query(""), Some(cursor))
        })
        .collect();
    report("deep page, no filter", deep);
    let cloud: Vec<f64> = (0..SAMPLES)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(counts(&conn).len(), LABELS);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    report("tag cloud (all 1000)", cloud);
}

/// Prints the plan of every statement, for the docs:
/// `cargo test -p shared -- --ignored --nocapture print_plans`
#[test]
#[ignore = "prints plans; run it on purpose"]
fn print_plans() {
    let conn = db();
    seed(&conn, &mut Rng(1), 50);
    let cursor = Position {
        uploaded_at: 1_500,
        id: ImageId::parse("3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f").unwrap(),
    };
    for text in [
        "",
        "status=done",
        "tag=tabby",
        "tag=tabby&tag=lynx&status=done",
    ] {
        let st = search(&query(text), Some(cursor));
        let params: Vec<_> = st.params.iter().map(to_sql).collect();
        println!("GET /images?{text}&cursor=…\n  {}", st.sql);
        for line in plan(&conn, &st.sql, &params) {
            println!("    {line}");
        }
    }
    let int = rusqlite::types::Value::Integer;
    let text = |s: &str| rusqlite::types::Value::Text(s.into());
    let ids = id_list(&["3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f"]);
    for (sql, params) in [
        (TAG_CLOUD, vec![int(100)]),
        (SELECT_CONTENT, vec![text("x")]),
        (SELECT_EXPIRED, vec![int(5), int(100)]),
        (DELETE_IMAGES[0], vec![text(&ids)]),
        (DELETE_IMAGES[1], vec![text(&ids)]),
        (DELETE_IMAGES[2], vec![text(&ids)]),
        (DELETE_IMAGES[3], vec![text(&ids)]),
    ] {
        println!("{sql}");
        for line in plan(&conn, sql, &params) {
            println!("    {line}");
        }
    }
}
