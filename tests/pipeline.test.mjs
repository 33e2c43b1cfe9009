// The whole path: POST → R2 → queue → tagger → AI → KV → GET.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startPipeline, waitFor, waitForStatus, MODEL } from "./support/pipeline.mjs";
import { LABELS } from "./support/ai-stub.mjs";
import { png, jpeg } from "./support/images.mjs";

let p;
before(async () => {
  p = await startPipeline();
});
after(async () => {
  await p?.close();
});

test("an upload is stored, queued, tagged and reported", async () => {
  const image = png(2048);
  const res = await p.fetch("/images", {
    method: "POST",
    body: image,
    headers: { "content-type": "image/png" },
  });
  assert.equal(res.status, 202);
  const accepted = await res.json();
  assert.match(accepted.imageId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(accepted.status, "queued");
  assert.equal(accepted.statusUrl, `/images/${accepted.imageId}`);
  assert.equal(res.headers.get("location"), accepted.statusUrl);

  // The bytes and their type are in R2.
  const object = await (await p.bucket()).get(`images/${accepted.imageId}.png`);
  assert.ok(object, "object stored in R2");
  assert.equal(object.httpMetadata.contentType, "image/png");
  assert.ok(object.customMetadata.uploadedAt);
  assert.deepEqual(Buffer.from(await object.arrayBuffer()), image);

  // The tagger called the model with exactly the uploaded bytes.
  const call = await waitFor(() => p.ai.callsFor(image)[0], { what: "the AI call" });
  assert.equal(call.model, MODEL);
  assert.deepEqual(call.image, [...image]);

  const done = await waitForStatus(p, accepted.imageId);
  assert.equal(done.status, "done");
  assert.equal(done.imageId, accepted.imageId);
  assert.deepEqual(done.tags, [{ label: "TABBY", score: 0.91 }]);
  assert.deepEqual(done.labels, LABELS);
  assert.equal(done.model, MODEL);
  assert.equal(done.minScore, 0.8);
  assert.equal(done.r2Key, `images/${accepted.imageId}.png`);
  assert.ok(!Number.isNaN(Date.parse(done.processedAt)));

  const tags = await (await p.fetch(`/images/${accepted.imageId}/tags`)).json();
  assert.deepEqual(tags, { imageId: accepted.imageId, tags: [{ label: "TABBY", score: 0.91 }] });
});

test("GET shows queued before the tagger has run", async () => {
  const image = jpeg(512);
  p.ai.script(image, { latencyMs: 1500, labels: LABELS });
  const res = await p.fetch("/", { method: "POST", body: image });
  assert.equal(res.status, 202, "POST / is an alias of POST /images");
  const { imageId } = await res.json();
  const queued = await (await p.fetch(`/images/${imageId}`)).json();
  assert.deepEqual(queued, { imageId, status: "queued" });
  const tagsWhileQueued = await p.fetch(`/images/${imageId}/tags`);
  assert.equal(tagsWhileQueued.status, 200);
  assert.deepEqual(await tagsWhileQueued.json(), { imageId, status: "queued" });
  const done = await waitForStatus(p, imageId);
  assert.equal(done.status, "done");
  assert.equal(done.r2Key, `images/${imageId}.jpg`);
});

test("a batch of uploads is all tagged, one AI call each", async () => {
  const images = Array.from({ length: 8 }, () => png(300));
  const ids = [];
  for (const image of images) {
    const res = await p.fetch("/images", { method: "POST", body: image });
    assert.equal(res.status, 202);
    ids.push((await res.json()).imageId);
  }
  for (const id of ids) {
    const done = await waitForStatus(p, id);
    assert.equal(done.status, "done", id);
  }
  for (const image of images) assert.equal(p.ai.callsFor(image).length, 1);
});

test("errors are JSON with a stable code", async () => {
  const cases = [
    { path: "/nope", method: "GET", status: 404, code: "not_found" },
    { path: "/images/not-an-id", method: "GET", status: 400, code: "invalid_id" },
    { path: "/images/3F2B8C1E-9D4A-4B7E-8C2D-1A2B3C4D5E6F", method: "GET", status: 400, code: "invalid_id" },
    { path: "/images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f", method: "GET", status: 404, code: "image_not_found" },
    { path: "/images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f/tags", method: "GET", status: 404, code: "image_not_found" },
    { path: "/images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f", method: "DELETE", status: 405, code: "method_not_allowed", allow: "GET, HEAD, OPTIONS" },
    { path: "/images", method: "GET", status: 405, code: "method_not_allowed", allow: "POST, OPTIONS" },
    { path: "/images", method: "POST", status: 400, code: "empty_body" },
    { path: "/images", method: "POST", body: "<html></html>", status: 415, code: "unsupported_media_type" },
  ];
  for (const c of cases) {
    const res = await p.fetch(c.path, { method: c.method, body: c.body });
    assert.equal(res.status, c.status, `${c.method} ${c.path}`);
    assert.equal(res.headers.get("content-type"), "application/json");
    const body = await res.json();
    assert.equal(body.error.code, c.code, `${c.method} ${c.path}`);
    assert.equal(typeof body.error.message, "string");
    if (c.allow) assert.equal(res.headers.get("allow"), c.allow);
  }
});

test("MIN_SCORE is a var: a lower threshold keeps more tags", async () => {
  const low = await startPipeline({ taggerVars: { MIN_SCORE: "0.5" } });
  try {
    const res = await low.fetch("/images", { method: "POST", body: png() });
    const { imageId } = await res.json();
    const done = await waitForStatus(low, imageId);
    assert.deepEqual(done.tags.map((t) => t.label), ["TABBY", "TIGER CAT"]);
    assert.equal(done.minScore, 0.5);
  } finally {
    await low.close();
  }
});

test("large uploads stream into R2 intact, and are refused before storing when bad", async () => {
  // Over 1 MiB a body with a length streams (small ones are buffered): check both branches.
  const big = png(3 * 1024 * 1024 + 17);
  const res = await p.fetch("/images", { method: "POST", body: big, headers: { "content-type": "image/png" } });
  assert.equal(res.status, 202);
  const { imageId } = await res.json();
  const object = await (await p.bucket()).get(`images/${imageId}.png`);
  assert.equal(object.size, big.length);
  assert.ok(Buffer.from(await object.arrayBuffer()).equals(big), "bytes stored unchanged");

  const before = (await (await p.bucket()).list({ prefix: "images/" })).objects.length;
  const text = Buffer.alloc(2 * 1024 * 1024, "a");
  const refused = await p.fetch("/images", { method: "POST", body: text });
  assert.equal(refused.status, 415);
  const mismatch = await p.fetch("/images", { method: "POST", body: big, headers: { "content-type": "image/gif" } });
  assert.equal(mismatch.status, 415);
  const after = (await (await p.bucket()).list({ prefix: "images/" })).objects.length;
  assert.equal(after, before, "nothing stored for refused uploads");

  const done = await waitForStatus(p, imageId);
  assert.equal(done.status, "done");
  assert.equal(p.ai.callsFor(big)[0].image.length, big.length);
});
