// No paying twice (issue 23), end to end through the launcher (real workerd, local D1, R2,
// KV and Queues; only Workers AI is the stub): the same bytes uploaded twice by one client
// cost one AI call and give two `done` images, the second naming the first in `reusedFrom`;
// of two such uploads tagged at once, one waits for the other instead of calling;
// two clients never share a result (two calls, no `reusedFrom`); `/admin/usage` counts the
// calls saved.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startPipeline, waitFor } from "../local/pipeline.mjs";
import { answer } from "../local/ai-stub.mjs";
import { status } from "../local/contract.mjs";
import { png } from "../local/images.mjs";

const TOKEN = "operator-key-of-the-dedupe-test";
const OP = { authorization: `Bearer ${TOKEN}` };
/** Short leases: an upload waiting for its twin comes back when the twin's lease ends. */
const LEASE_SECONDS = 10;

let p;
before(async () => {
  p = await startPipeline({
    // Batches wait up to 3 s, so that two uploads at once land in one batch.
    queues: { "*": { maxBatchTimeout: 3 } },
    vars: { upload: { API_TOKEN: TOKEN }, tagger: { LEASE_SECONDS: String(LEASE_SECONDS) } },
  });
});
after(async () => {
  await p?.close();
});

async function call(method, path, { headers = {}, body } = {}) {
  const res = await p.fetch(path, { method, headers, body });
  const text = await res.text();
  return { status: res.status, text, json: text ? JSON.parse(text) : null };
}

/** A client key made by the operator; its `Authorization` header. */
async function client(name) {
  const res = await call("POST", "/admin/keys", {
    headers: { ...OP, "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  assert.equal(res.status, 201, res.text);
  return { authorization: `Bearer ${res.json.key}` };
}

async function uploadAs(headers, bytes) {
  const res = await call("POST", "/images", { headers, body: bytes });
  assert.equal(res.status, 202, res.text);
  return res.json.imageId;
}

async function done(headers, id, opts = {}) {
  const record = await p.waitForStatus(id, undefined, { headers, ...opts });
  assert.equal(record.status, status.done, JSON.stringify(record));
  return record;
}

async function saved() {
  const res = await call("GET", "/admin/usage", { headers: OP });
  assert.equal(res.status, 200, res.text);
  return res.json.aiCallsSaved;
}

const LABELS = [
  { label: "TABBY", score: 0.91 },
  { label: "TIGER CAT", score: 0.05 },
];

test("one client: the same bytes twice cost one AI call; the second is done with reusedFrom", async () => {
  const a = await client("dedupe A");
  const bytes = png(400);
  p.ai.script(bytes, answer(LABELS));
  const first = await uploadAs(a, bytes);
  const one = await done(a, first);
  assert.equal(one.reusedFrom, undefined, "the first is tagged by the model");
  const second = await uploadAs(a, bytes);
  assert.notEqual(second, first);
  const two = await done(a, second);
  assert.equal(p.ai.callsFor(bytes).length, 1, "one AI call for both");
  assert.equal(two.reusedFrom, first);
  assert.deepEqual(two.labels, one.labels);
  assert.deepEqual(two.tags, ["TABBY"]);
  assert.deepEqual(two.categories, one.categories);
  assert.ok(two.categories.some((c) => c.name === "cat"), JSON.stringify(two.categories));
  // D1 has it too: without the KV record, the answer comes from the row.
  const row = await (await p.db()).prepare("SELECT content_hash, reused_from FROM images WHERE id = ?1").bind(second).first();
  assert.equal(row.reused_from, first);
  assert.match(row.content_hash, /^[0-9a-f]{64}$/);
  // The calls saved (the answer is cached for a few seconds per isolate: wait for it).
  await waitFor(async () => (await saved()) >= 1, { what: "aiCallsSaved >= 1" });
});

test("two uploads of the same bytes at once: one calls the model, the other waits for it and reuses it", async () => {
  const a = await client("dedupe at once");
  const bytes = png(420);
  // A slow answer: the other delivery of the same batch looks while this call is out.
  p.ai.script(bytes, answer(LABELS, { latencyMs: 1500 }));
  const ids = await Promise.all([uploadAs(a, bytes), uploadAs(a, bytes)]);
  const records = [];
  for (const id of ids) records.push(await done(a, id, { timeoutMs: 3 * LEASE_SECONDS * 1000 }));
  assert.equal(p.ai.callsFor(bytes).length, 1, "one AI call for both");
  const reused = records.filter((r) => r.reusedFrom);
  assert.equal(reused.length, 1, JSON.stringify(records));
  const [copy] = reused;
  const [original] = records.filter((r) => !r.reusedFrom);
  assert.equal(copy.reusedFrom, original.imageId);
  assert.deepEqual(copy.labels, original.labels);
  // It waited (a deferral, as behind another delivery's lease) rather than calling.
  const lines = await p.outcomesOf(copy.imageId);
  assert.deepEqual(
    lines.map((o) => [o.outcome, o.errorCode]),
    [
      ["deferred", "leased"],
      ["done", undefined],
    ],
  );
});

test("two clients never share a result: the same bytes cost two calls, and neither learns of the other", async () => {
  const a = await client("dedupe client A");
  const b = await client("dedupe client B");
  const bytes = png(440);
  p.ai.script(bytes, answer(LABELS));
  const idA = await uploadAs(a, bytes);
  const recordA = await done(a, idA);
  const idB = await uploadAs(b, bytes);
  const recordB = await done(b, idB);
  assert.equal(p.ai.callsFor(bytes).length, 2, "one call per client");
  assert.equal(recordA.reusedFrom, undefined);
  assert.equal(recordB.reusedFrom, undefined, "B is never told of A's image");
  assert.ok(!JSON.stringify(recordB).includes(idA));
  // And B cannot read A's image.
  assert.equal((await call("GET", `/images/${idA}`, { headers: b })).status, 404);
});
