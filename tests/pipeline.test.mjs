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
