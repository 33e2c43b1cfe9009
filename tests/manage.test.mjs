// Finding and managing images, end to end through the launcher (real workerd, local D1, R2,
// KV and Queues, over a real socket): search by tags with pagination and signed cursors, the
// tag counts, the content route, delete (R2, KV, D1, Idempotency-Key, a queued message, a
// tagger mid-call) and retention run by the cron.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";

import { startPipeline } from "../local/pipeline.mjs";
import { answer } from "../local/ai-stub.mjs";
import { apiError, contract, keys, logEvents, outcome, sql, status } from "../local/contract.mjs";
import { FAST_QUEUES, bucketKeys, upload } from "./support/helpers.mjs";
import { openLive } from "../local/live-client.mjs";
import { encodePng } from "../local/png.mjs";

const TOKEN = "manage-token-5d1c";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const DAY_MS = 86_400_000;

let serial = 0;
/** A real, unique PNG. */
function photo() {
  const n = ++serial;
  return encodePng(8, 6, (x, y) => [(x * 31 + n) & 255, (y * 17 + n * 7) & 255, (n * 13) & 255]);
}

/** AI labels that make exactly these tags (MIN_SCORE is 0.8, strictly above). */
function labelled(...tags) {
  return answer([...tags.map((label, i) => ({ label, score: 0.99 - i * 0.01 })), { label: "NOT A TAG", score: 0.1 }]);
}

async function call(p, path, init = {}) {
  const res = await p.fetch(path, { ...init, headers: { ...AUTH, ...init.headers } });
  const body = Buffer.from(await res.arrayBuffer());
  const json = /json/.test(res.headers.get("content-type") ?? "") && body.length ? JSON.parse(body) : null;
  return { status: res.status, headers: res.headers, body, json };
}

async function rows(p, sql, ...params) {
  return (await (await p.db()).prepare(sql).bind(...params).all()).results;
}

/** Every page of a search, following `nextCursor`. */
async function allPages(p, query, limit) {
  const seen = [];
  let cursor = null;
  for (let pages = 0; pages < 100; pages++) {
    const q = `${query}&limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`;
    const res = await call(p, `/images?${q}`);
    assert.equal(res.status, 200, res.body.toString());
    assert.ok(res.json.images.length <= limit);
    seen.push(...res.json.images);
    cursor = res.json.nextCursor;
    if (!cursor) return seen;
  }
  throw new Error("pagination did not end");
}

function newestFirst(a, b) {
  return b.uploadedAt.localeCompare(a.uploadedAt) || b.imageId.localeCompare(a.imageId);
}

// ---------------------------------------------------------------------------------------
// Search, tags and content: one pipeline with a token.

let p;
const tagged = []; // { id, bytes, tags }
before(async () => {
  p = await startPipeline({ queues: FAST_QUEUES, vars: { upload: { API_TOKEN: TOKEN } } });
  // 13 images tagged "Meadow"; every third also "Sheep"; one also "Dog".
  for (let i = 0; i < 13; i++) {
    const bytes = photo();
    const tags = ["Meadow", ...(i % 3 === 0 ? ["SHEEP"] : []), ...(i === 4 ? ["dog"] : [])];
    p.ai.script(bytes, labelled(...tags));
    tagged.push({ id: await upload(p, bytes, AUTH), bytes, tags });
  }
  for (const t of tagged) await p.waitForStatus(t.id, undefined, { headers: AUTH });
});
after(async () => {
  await p?.close();
});

test("search by one tag pages through every image exactly once, newest first", async () => {
  const expected = tagged.map((t) => t.id).sort();
  for (const limit of [1, 4, 13, 200]) {
    const seen = await allPages(p, "tag=meadow", limit);
    assert.deepEqual(seen.map((i) => i.imageId).sort(), expected, `limit ${limit}`);
    assert.equal(new Set(seen.map((i) => i.imageId)).size, seen.length, "no image twice");
    assert.deepEqual(seen, [...seen].sort(newestFirst), "newest first, then by id");
  }
  const item = (await call(p, "/images?tag=MEADOW&limit=1")).json.images[0];
  assert.equal(item.status, status.done);
  assert.ok(item.tags.includes("Meadow"), "tags as the tagger wrote them");
  assert.equal(item.contentType, "image/png");
  assert.ok(item.size > 0 && item.processedAt && item.uploadedAt);
});

test("search by two tags finds the images with both, in any case", async () => {
  const both = tagged.filter((t) => t.tags.includes("SHEEP")).map((t) => t.id).sort();
  assert.equal(both.length, 5);
  const seen = await allPages(p, "tag=Meadow&tag=sheep", 2);
  assert.deepEqual(seen.map((i) => i.imageId).sort(), both);
  const three = await call(p, "/images?tag=meadow&tag=sheep&tag=dog");
  assert.deepEqual(three.json.images, [], "no image has all three");
  const dog = await call(p, "/images?tag=dog&tag=meadow");
  assert.deepEqual(dog.json.images.map((i) => i.imageId), [tagged[4].id]);
  assert.deepEqual((await call(p, "/images?tag=unicorn&tag=meadow")).json, { images: [], nextCursor: null });
  // Other filters: status and upload time.
  assert.deepEqual((await call(p, "/images?tag=meadow&status=queued")).json.images, []);
  const middle = (await allPages(p, "tag=meadow", 50))[6].uploadedAt;
  const since = await allPages(p, `tag=meadow&since=${encodeURIComponent(middle)}`, 3);
  assert.ok(since.length >= 7 && since.every((i) => i.uploadedAt >= middle));
  const until = await allPages(p, `tag=meadow&until=${encodeURIComponent(middle)}`, 3);
  assert.equal(since.length + until.length, 13);
});

test("a cursor is bound to its filters and key; a tampered one is 400 invalid_cursor", async () => {
  const first = (await call(p, "/images?tag=meadow&limit=2")).json;
  const cursor = first.nextCursor;
  assert.equal(cursor.length, contract.search.cursorLength);
  assert.equal((await call(p, `/images?tag=meadow&limit=5&cursor=${cursor}`)).status, 200, "limit may change");

  // The documented format, checked with an independent HMAC: base64url(payload ‖ mac),
  // payload = version 1, upload time (ms, u64 big-endian), id; mac = HMAC-SHA-256 under a
  // key derived from API_TOKEN, over a label, the payload and the canonical filters.
  const raw = Buffer.from(cursor, "base64url");
  const payload = raw.subarray(0, 25);
  const last = first.images[1];
  assert.equal(payload[0], 1);
  assert.equal(Number(payload.readBigUInt64BE(1)), Date.parse(last.uploadedAt));
  assert.equal(payload.subarray(9).toString("hex"), last.imageId.replaceAll("-", ""));
  const key = createHmac("sha256", TOKEN).update("image-tagger search cursor key v1").digest();
  // The filters as serde writes shared::api::search::Filters (field order included).
  const filters = '{"tags":["meadow"],"status":null,"since":null,"until":null}';
  const mac = createHmac("sha256", key)
    .update(Buffer.concat([Buffer.from("image-tagger search cursor v1\n"), payload, Buffer.from(filters)]))
    .digest()
    .subarray(0, 16);
  assert.deepEqual(raw.subarray(25), mac);

  const refused = async (query) => {
    const res = await call(p, `/images?${query}`);
    assert.equal(res.status, 400, query);
    assert.equal(res.json.error.code, apiError.invalid_cursor, query);
  };
  // Any changed character, including in the position it carries.
  for (const at of [0, 5, 20, 40, 54]) {
    const c = cursor[at] === "A" ? "B" : "A";
    await refused(`tag=meadow&cursor=${cursor.slice(0, at)}${c}${cursor.slice(at + 1)}`);
  }
  // A forged position with the old MAC.
  const forged = Buffer.from(raw);
  forged.writeBigUInt64BE(BigInt(Date.now() + DAY_MS), 1);
  await refused(`tag=meadow&cursor=${forged.toString("base64url")}`);
  // Other filters, malformed, truncated.
  await refused(`tag=sheep&cursor=${cursor}`);
  await refused(`cursor=${cursor}`);
  await refused(`tag=meadow&status=done&cursor=${cursor}`);
  await refused("cursor=not-a-cursor");
  await refused(`tag=meadow&cursor=${cursor.slice(0, 54)}`);
  // Other bad parameters are invalid_query.
  for (const query of ["limit=0", "limit=201", "tag=", "status=nope", "since=yesterday", "tags=meadow", "limit=1&limit=2"]) {
    const res = await call(p, `/images?${query}`);
    assert.equal(res.status, 400, query);
    assert.equal(res.json.error.code, apiError.invalid_query, query);
  }
  // And the token is needed.
  assert.equal((await p.fetch("/images")).status, 401);
});

/**
 * Fails if D1's own plan (workerd's SQLite) scans a table or sorts. Scans of constant rows
 * are fine: the VALUES list of searched tags and the one-row co-routine that picks the rarest.
 */
function assertIndexedPlan(plan, what) {
  for (const { id, detail } of plan) {
    const scan = detail.startsWith("SCAN ") && !detail.endsWith("-ROW VALUES CLAUSE");
    const coroutine = detail.match(/^SCAN (\(subquery-\d+\))$/)?.[1];
    const constant =
      coroutine &&
      plan
        .filter((n) => n.parent === plan.find((c) => c.detail === `CO-ROUTINE ${coroutine}`)?.id)
        .every((n) => /-ROW VALUES CLAUSE$/.test(n.detail) || n.detail.startsWith("SEARCH c USING PRIMARY KEY"));
    assert.ok(!(scan && !constant) && !detail.includes("TEMP B-TREE"), `${what}: ${detail} (node ${id})\n${JSON.stringify(plan)}`);
  }
}

test("D1's own query plans search indexes: no table scan, no sort", async () => {
  const db = await p.db();
  for (const shape of sql.searchShapes) {
    const plan = (await db.prepare(`EXPLAIN QUERY PLAN ${shape.sql}`).bind(...shape.params).all()).results;
    assert.ok(plan.some((n) => n.detail.startsWith("SEARCH ")), shape.sql);
    assertIndexedPlan(plan, shape.sql);
  }
  const cloud = (await db.prepare(`EXPLAIN QUERY PLAN ${sql.tagCloud}`).bind(100).all()).results;
  assert.deepEqual(cloud.map((n) => n.detail), ["SCAN tag_counts USING COVERING INDEX tag_counts_by_count"]);
});

test("GET /tags counts the tags in use, most used first", async () => {
  const cloud = (await call(p, "/tags")).json.tags;
  // "sheep" and "dog" are category names too (shared::tagging::categories), whoever indexed them.
  assert.deepEqual(cloud.slice(0, 3), [
    { tag: "meadow", count: 13, category: false },
    { tag: "sheep", count: 5, category: true },
    { tag: "dog", count: 1, category: true },
  ]);
  assert.deepEqual((await call(p, "/tags?limit=1")).json.tags, [{ tag: "meadow", count: 13, category: false }]);
  assert.equal((await call(p, "/tags?limit=1001")).json.error.code, apiError.invalid_query);
});

test("the content route serves the original bytes, ranges and 304s", async () => {
  const { id, bytes } = tagged[0];
  const whole = await call(p, `/images/${id}/content`);
  assert.equal(whole.status, 200);
  assert.deepEqual(whole.body, bytes);
  const h = Object.fromEntries(whole.headers);
  assert.equal(h["content-type"], "image/png");
  assert.equal(h["content-length"], String(bytes.length));
  assert.equal(h["etag"], `"${id}"`);
  assert.equal(h["cache-control"], "private");
  assert.equal(h["x-content-type-options"], "nosniff");
  assert.equal(h["content-disposition"], `inline; filename="${id}.png"`);
  assert.equal(h["accept-ranges"], "bytes");

  const ranges = [
    ["bytes=0-7", 0, 8],
    ["bytes=10-", 10, bytes.length],
    ["bytes=-5", bytes.length - 5, bytes.length],
    [`bytes=3-${bytes.length + 100}`, 3, bytes.length],
  ];
  for (const [range, start, end] of ranges) {
    const part = await call(p, `/images/${id}/content`, { headers: { range } });
    assert.equal(part.status, 206, range);
    assert.deepEqual(part.body, bytes.subarray(start, end), range);
    assert.equal(part.headers.get("content-range"), `bytes ${start}-${end - 1}/${bytes.length}`);
    assert.equal(part.headers.get("content-length"), String(end - start));
  }
  for (const range of [`bytes=${bytes.length}-`, "bytes=-0"]) {
    const refused = await call(p, `/images/${id}/content`, { headers: { range } });
    assert.equal(refused.status, 416, range);
    assert.equal(refused.headers.get("content-range"), `bytes */${bytes.length}`);
    assert.equal(refused.json.error.code, apiError.range_not_satisfiable);
  }
  // Ignored ranges: several, malformed, or an If-Range that is not the entity tag.
  for (const headers of [{ range: "bytes=0-1,4-5" }, { range: "bytes=5-1" }, { range: "bytes=0-1", "if-range": '"other"' }]) {
    const full = await call(p, `/images/${id}/content`, { headers });
    assert.equal(full.status, 200, JSON.stringify(headers));
    assert.deepEqual(full.body, bytes);
  }
  const resumed = await call(p, `/images/${id}/content`, { headers: { range: "bytes=0-1", "if-range": `"${id}"` } });
  assert.equal(resumed.status, 206);

  for (const inm of [`"${id}"`, `W/"${id}"`, `"x", "${id}"`, "*"]) {
    const cached = await call(p, `/images/${id}/content`, { headers: { "if-none-match": inm } });
    assert.equal(cached.status, 304, inm);
    assert.equal(cached.body.length, 0);
    assert.equal(cached.headers.get("etag"), `"${id}"`);
  }
  assert.equal((await call(p, `/images/${id}/content`, { headers: { "if-none-match": '"other"' } })).status, 200);
  const head = await call(p, `/images/${id}/content`, { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("content-length"), String(bytes.length));
  assert.equal(head.body.length, 0);
  assert.equal((await p.fetch(`/images/${id}/content`)).status, 401, "the token is needed");
});

test("a tagger working on an image when it is deleted brings nothing back", async () => {
  const bytes = photo();
  p.ai.script(bytes, labelled("Racing"));
  // The AI answers only once the image is deleted.
  p.ai.hold();
  let id;
  try {
    id = await upload(p, bytes, AUTH);
    // The tagger has claimed the image and is waiting for the AI.
    await waitUntil(() => p.ai.callsFor(bytes).length === 1, "the AI call");
    assert.equal((await call(p, `/images/${id}`, { method: "DELETE" })).status, 204);
  } finally {
    p.ai.release();
  }
  await p.waitForOutcome({ imageId: id, outcome: outcome.gone });
  assert.equal(await p.record(id), null, "no KV record");
  assert.equal((await call(p, `/images/${id}`)).status, 404);
  assert.deepEqual(await rows(p, "SELECT id FROM images WHERE id = ?", id), []);
  assert.deepEqual(await rows(p, "SELECT tag FROM image_tags WHERE image_id = ?", id), []);
  assert.deepEqual(await rows(p, "SELECT tag FROM tag_counts WHERE tag = 'racing'"), []);
});

test("a record the tagger publishes as the image is deleted, and cannot remove at once, is removed by the retry", async () => {
  // KV takes one write a second per key: the tagger's delete right after its put can be
  // refused. Here its put is held back until the image is deleted, and its delete fails once.
  const q = await startPipeline({ queues: FAST_QUEUES, faults: ["RESULTS_KV"], vars: { tagger: { RETRY_BASE_SECONDS: "1" } } });
  try {
    const kv = q.faults.RESULTS_KV;
    const put = kv.hold({ op: "put", worker: "tagger" });
    kv.fail({ op: "delete", worker: "tagger", times: 1, message: "KV DELETE failed: 429 Too Many Requests" });
    const bytes = photo();
    q.ai.script(bytes, labelled("Phoenix"));
    const id = await upload(q, bytes);
    // D1 says done; the tagger's KV put is on its way.
    await waitUntil(() => kv.opsMatching({ op: "put", worker: "tagger", key: keys.record(id) }).length === 1, "the tagger's put");
    assert.equal((await call(q, `/images/${id}`, { method: "DELETE" })).status, 204);
    put.release();
    // The put lands, publish finds the row gone, its delete is refused: the message is retried ...
    await q.waitForOutcome({ imageId: id, outcome: outcome.retry });
    assert.equal(kv.opsMatching({ op: "delete", worker: "tagger", key: keys.record(id) })[0]?.failed, true);
    // ... and the retry finds the image gone and removes the record.
    await q.waitForOutcome({ imageId: id, outcome: outcome.gone });
    assert.equal(await q.record(id), null);
    assert.equal((await call(q, `/images/${id}`)).status, 404);
    assert.equal(q.ai.callsFor(bytes).length, 1);
  } finally {
    await q.close();
  }
});

async function waitUntil(check, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// ---------------------------------------------------------------------------------------
// Delete with a message still queued, and retention (the tagger keeps images for one day).

test("delete removes the image from R2, KV and D1 with its Idempotency-Key; its queued message is acked without an AI call", async () => {
  const q = await startPipeline({ queues: FAST_QUEUES, vars: { tagger: { RETENTION_DAYS: "1" } } });
  try {
    // A finished image, uploaded with an Idempotency-Key. Its AI call is held: the queue runs
    // one batch at a time, so while it waits, the next message stays queued.
    const done = photo();
    q.ai.script(done, labelled("Harbour", "Boat"));
    q.ai.hold();
    let queued;
    let queuedId;
    let doneId;
    try {
      doneId = await upload(q, done, { "idempotency-key": "manage-key-1" });
      await waitUntil(() => q.ai.callsFor(done).length === 1, "the first image's AI call");
      // A second image, deleted while its message waits in the queue.
      queued = photo();
      queuedId = await upload(q, queued);
      assert.equal((await call(q, `/images/${queuedId}`, { method: "DELETE" })).status, 204);
    } finally {
      q.ai.release();
    }
    await q.waitForStatus(doneId);
    // KV is written after D1, and the done line after both: wait for the line.
    await q.waitForOutcome({ imageId: doneId, outcome: outcome.done });
    assert.ok(await q.record(doneId), "KV has the record");
    assert.equal((await rows(q, "SELECT * FROM idempotency_keys WHERE image_id = ?", doneId)).length, 1);
    const gone = await q.waitForOutcome({ imageId: queuedId });
    assert.equal(gone.outcome, outcome.gone);
    assert.equal(q.ai.callsFor(queued).length, 0, "no AI call for a deleted image");

    assert.equal((await call(q, `/images/${doneId}`, { method: "DELETE" })).status, 204);
    assert.equal((await call(q, `/images/${doneId}`, { method: "DELETE" })).status, 404, "deleting again");
    for (const id of [doneId, queuedId]) {
      assert.equal(await q.record(id), null, "KV");
      assert.deepEqual(await rows(q, "SELECT id FROM images WHERE id = ?", id), [], "D1 images");
      assert.deepEqual(await rows(q, "SELECT tag FROM image_tags WHERE image_id = ?", id), [], "D1 image_tags");
      assert.deepEqual(await rows(q, "SELECT key FROM idempotency_keys WHERE image_id = ?", id), [], "D1 idempotency_keys");
      assert.equal((await call(q, `/images/${id}`)).status, 404);
      assert.equal((await call(q, `/images/${id}/content`)).status, 404);
    }
    assert.deepEqual(await bucketKeys(q), [], "R2");
    assert.deepEqual((await call(q, "/tags")).json.tags, [], "no tag counted any more");
    // The key is free again: the same request makes a new image.
    const again = await upload(q, done, { "idempotency-key": "manage-key-1" });
    assert.notEqual(again, doneId);
  } finally {
    await q.close();
  }
});

test("retention deletes images older than RETENTION_DAYS everywhere, in bounded batches", async () => {
  const q = await startPipeline({ queues: FAST_QUEUES, faults: ["RESULTS_KV"], vars: { tagger: { RETENTION_DAYS: "1" } } });
  try {
    const now = Date.now();
    const db = await q.db();
    const bucket = await q.bucket();
    const kv = await q.kv();
    // 105 images two days old (done, failed and one queued), seeded straight into D1, R2, KV.
    // Retention takes the 104 finished ones; the queued one is never taken.
    const old = [];
    for (let i = 0; i < 105; i++) {
      const id = crypto.randomUUID();
      const at = now - 2 * DAY_MS + i;
      const st = i === 0 ? "queued" : i % 10 === 0 ? "failed" : "done";
      old.push({ id, st });
      const r2Key = keys.object(id, "png");
      const statements = [
        db
          .prepare(
            "INSERT INTO images (id, status, r2_key, content_type, size, uploaded_at, updated_at, tags, processed_at, due_at) VALUES (?1, ?2, ?3, 'image/png', 4, ?4, ?4, ?5, ?6, ?7)",
          )
          // The queued one waits for tomorrow (a spent AI budget), so the reconciler leaves it.
          .bind(id, st, r2Key, at, st === "done" ? '["Old"]' : null, st === "queued" ? null : at + 1, st === "queued" ? now + DAY_MS : null),
      ];
      if (st === "done") statements.push(db.prepare("INSERT INTO image_tags (tag, uploaded_at, image_id) VALUES ('old', ?1, ?2)").bind(at, id));
      await db.batch(statements);
      await bucket.put(r2Key, new Uint8Array([1, 2, 3, 4]));
      if (st !== "queued") await kv.put(keys.record(id), JSON.stringify({ imageId: id, status: st }));
    }
    // And a fresh image, which stays.
    const fresh = photo();
    q.ai.script(fresh, labelled("New"));
    const freshId = await upload(q, fresh);
    await q.waitForStatus(freshId);

    // Their owner (the anonymous client: the seeded rows have no other) has a socket open.
    const socket = await openLive(q.url);
    // One record cannot be deleted in the first run: that image is kept whole until the next.
    q.faults.RESULTS_KV.fail({ op: "delete", worker: "tagger", key: keys.record(old[5].id), times: 1 });
    const runs = [];
    for (let run = 0; run < 2; run++) {
      const from = q.lines.length;
      await q.scheduled("tagger");
      const line = await q.waitForLine((l) => l.includes(`"${logEvents.retention}"`), { from, what: "the retention line" });
      runs.push(JSON.parse(line.slice(line.indexOf("{"))));
    }
    assert.deepEqual(
      runs.map((r) => [r.deleted, r.recordsDeleted, r.more, r.errors]),
      [
        [99, 99, true, 1],
        [5, 5, false, 0],
      ],
    );
    assert.equal(runs[0].retentionDays, 1);
    // Refused once, then deleted before and after the rows went (never read first).
    assert.equal(q.faults.RESULTS_KV.opsMatching({ op: "delete", key: keys.record(old[5].id) }).length, 3);
    assert.equal(q.faults.RESULTS_KV.opsMatching({ op: "get", worker: "tagger" }).length, 0, "retention reads no record");
    for (const { id, st } of old) {
      const kept = st === "queued" ? [{ id }] : [];
      assert.deepEqual(await rows(q, "SELECT id FROM images WHERE id = ?", id), kept);
      assert.equal(await kv.get(keys.record(id)), null);
    }
    assert.deepEqual(await rows(q, "SELECT count(*) AS n FROM image_tags WHERE tag = 'old'"), [{ n: 0 }]);
    assert.deepEqual((await call(q, "/tags")).json.tags, [{ tag: "new", count: 1, category: false }]);
    assert.deepEqual(await bucketKeys(q), [keys.object(freshId, "png"), keys.object(old[0].id, "png")].sort());
    assert.equal((await call(q, `/images/${freshId}`)).json.status, status.done);
    // The owner's socket heard of each deleted image once (old[5] in the second run), and of
    // nothing that stays.
    const [, , , DELETED] = contract.live.events;
    const deleted = old.filter((o) => o.st !== "queued").map((o) => o.id);
    for (const id of deleted) await socket.eventOf(id, DELETED);
    const heard = socket.events().filter((e) => e.type === DELETED).map((e) => e.data.imageId);
    assert.deepEqual([...heard].sort(), [...deleted].sort(), "one image.deleted per deleted image");
    await socket.close();
    // A third run has nothing to do.
    const from = q.lines.length;
    await q.scheduled("tagger");
    const line = await q.waitForLine((l) => l.includes(`"${logEvents.retention}"`), { from });
    assert.equal(JSON.parse(line.slice(line.indexOf("{"))).deleted, 0);
  } finally {
    await q.close();
  }
});
