// The whole path: POST → R2 → queue → tagger → AI → KV → GET, over a real socket.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startPipeline, readWorkerConfig, waitFor } from "../local/pipeline.mjs";
import { LABELS } from "../local/ai-stub.mjs";
import { apiError, apiStatus, extensionOf, keys, logEvents, model, status } from "../local/contract.mjs";
import { png, jpeg } from "../local/images.mjs";
import { rawRequest } from "./support/requests.mjs";
import { FAST_QUEUES, bucketKeys, upload, withPipeline } from "./support/helpers.mjs";

const MIN_SCORE = Number(readWorkerConfig("tagger").vars.MIN_SCORE);
const MiB = 1024 * 1024;
/** The tag names the tagger keeps from the stub's labels: strictly above `min`, best first. */
const above = (min) => LABELS.filter((l) => l.score > min).map((l) => l.label);

let p;
before(async () => {
  p = await startPipeline({ queues: FAST_QUEUES });
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
  assert.equal(accepted.status, status.queued);
  assert.equal(accepted.statusUrl, `/images/${accepted.imageId}`);
  assert.equal(res.headers.get("location"), accepted.statusUrl);

  // The bytes and their type are in R2, under the contract's key.
  const key = keys.object(accepted.imageId, extensionOf("image/png"));
  const object = await (await p.bucket()).get(key);
  assert.ok(object, "object stored in R2");
  assert.equal(object.httpMetadata.contentType, "image/png");
  assert.ok(object.customMetadata.uploadedAt);
  assert.deepEqual(Buffer.from(await object.arrayBuffer()), image);

  // The tagger called the model with exactly the uploaded bytes.
  const call = await waitFor(() => p.ai.callsFor(image)[0], { what: "the AI call" });
  assert.equal(call.model, model);
  assert.ok(call.image.equals(image), "the model got the uploaded bytes");

  const done = await p.waitForStatus(accepted.imageId);
  assert.equal(done.status, status.done);
  assert.equal(done.imageId, accepted.imageId);
  assert.deepEqual(done.tags, above(MIN_SCORE));
  assert.deepEqual(done.labels, LABELS);
  assert.equal(done.model, model);
  assert.equal(done.minScore, MIN_SCORE);
  assert.equal(done.contentType, "image/png");
  assert.equal(done.size, image.length);
  assert.equal(done.attempts, 1);
  assert.ok(Date.parse(done.uploadedAt) <= Date.parse(done.processedAt));

  const view = await (await p.fetch(`/images/${accepted.imageId}/tags`)).json();
  assert.deepEqual(Object.keys(view).sort(), ["imageId", "tags"]);
  assert.equal(view.imageId, accepted.imageId);
  assert.deepEqual(view.tags, above(MIN_SCORE));
});

test("GET shows queued before the tagger has run", async () => {
  const image = jpeg(512);
  p.ai.script(image, { latencyMs: 1500, labels: LABELS });
  const res = await p.fetch("/", { method: "POST", body: image });
  assert.equal(res.status, 202, "POST / is an alias of POST /images");
  const { imageId } = await res.json();
  const queued = await (await p.fetch(`/images/${imageId}`)).json();
  assert.equal(queued.imageId, imageId);
  assert.equal(queued.status, status.queued);
  assert.ok(Date.parse(queued.uploadedAt) <= Date.now(), "the upload time");
  const tagsWhileQueued = await p.fetch(`/images/${imageId}/tags`);
  assert.equal(tagsWhileQueued.status, 200);
  assert.equal((await tagsWhileQueued.json()).status, status.queued);
  const done = await p.waitForStatus(imageId);
  assert.equal(done.status, status.done);
  assert.equal(done.contentType, "image/jpeg");
});

test("a batch of uploads is all tagged, one AI call each", async () => {
  const images = Array.from({ length: 8 }, () => png(300));
  const ids = [];
  for (const image of images) ids.push(await upload(p, image));
  for (const id of ids) {
    const done = await p.waitForStatus(id);
    assert.equal(done.status, status.done, id);
  }
  for (const image of images) assert.equal(p.ai.callsFor(image).length, 1);
});

test("errors are JSON with a stable code and the contract's status", async () => {
  const unknown = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
  const cases = [
    { path: "/nope", method: "GET", code: apiError.not_found },
    { path: "/images/not-an-id", method: "GET", code: apiError.invalid_id },
    { path: `/images/${unknown.toUpperCase()}`, method: "GET", code: apiError.invalid_id },
    { path: `/images/${unknown}`, method: "GET", code: apiError.image_not_found },
    { path: `/images/${unknown}/tags`, method: "GET", code: apiError.image_not_found },
    { path: `/images/${unknown}`, method: "DELETE", code: apiError.image_not_found },
    { path: `/images/${unknown}`, method: "PATCH", code: apiError.method_not_allowed, allow: "GET, HEAD, DELETE, OPTIONS" },
    { path: "/images", method: "PUT", code: apiError.method_not_allowed, allow: "GET, HEAD, POST, OPTIONS" },
    { path: "/images?limit=0", method: "GET", code: apiError.invalid_query },
    { path: "/images", method: "POST", code: apiError.empty_body },
    { path: "/images", method: "POST", body: "<html></html>", code: apiError.unsupported_media_type },
  ];
  for (const c of cases) {
    const res = await p.fetch(c.path, { method: c.method, body: c.body });
    assert.equal(res.status, apiStatus(c.code), `${c.method} ${c.path}`);
    assert.equal(res.headers.get("content-type"), "application/json");
    const body = await res.json();
    assert.equal(body.error.code, c.code, `${c.method} ${c.path}`);
    assert.equal(typeof body.error.message, "string");
    if (c.allow) assert.equal(res.headers.get("allow"), c.allow);
  }
});

test("MIN_SCORE is a var: a lower threshold keeps more tags", async () => {
  await withPipeline({ vars: { tagger: { MIN_SCORE: "0.5" } } }, async (low) => {
    const imageId = await upload(low, png());
    const done = await low.waitForStatus(imageId);
    assert.deepEqual(done.tags, above(0.5));
    assert.ok(done.tags.length > above(MIN_SCORE).length, "the lower threshold keeps more");
    assert.equal(done.minScore, 0.5);
  });
});

test("large uploads stream into R2 intact, and are refused before storing when bad", async () => {
  // Over 1 MiB a body with a length streams (small ones are buffered): check both branches.
  const big = png(3 * MiB + 17);
  const imageId = await upload(p, big, { "content-type": "image/png" });
  const object = await (await p.bucket()).get(keys.object(imageId, extensionOf("image/png")));
  assert.equal(object.size, big.length);
  assert.ok(Buffer.from(await object.arrayBuffer()).equals(big), "bytes stored unchanged");

  const before = await bucketKeys(p);
  const refused = await p.fetch("/images", { method: "POST", body: Buffer.alloc(2 * MiB, "a") });
  assert.equal(refused.status, apiStatus(apiError.unsupported_media_type));
  const mismatch = await p.fetch("/images", { method: "POST", body: big, headers: { "content-type": "image/gif" } });
  assert.equal(mismatch.status, apiStatus(apiError.unsupported_media_type));
  assert.deepEqual(await bucketKeys(p), before, "nothing stored for refused uploads");

  const done = await p.waitForStatus(imageId);
  assert.equal(done.status, status.done);
  // The model got a small JPEG made from it, not the 3 MiB upload.
  assert.equal(p.ai.callsFor(big).length, 0, "not the original bytes");
  const sent = p.ai.calls.at(-1).image;
  assert.deepEqual([...sent.subarray(0, 3)], [0xff, 0xd8, 0xff], "a JPEG");
  assert.ok(sent.length < 64 * 1024, `${sent.length} bytes`);
});

test("a streamed body over 1 MiB that is cut short is a 400 and nothing is stored", async () => {
  // The client announces 2 MiB, sends 1.5 MiB and half-closes: the streaming path (over the
  // 1 MiB buffer limit) must notice the missing bytes and store nothing.
  const before = await bucketKeys(p);
  const sent = png(1.5 * MiB);
  const reply = await rawRequest(p.url, `POST /images HTTP/1.1\r\nContent-Length: ${2 * MiB}`, sent, { timeoutMs: 15_000 });
  assert.equal(reply.status, apiStatus(apiError.incomplete_body), reply.body.toString("utf8"));
  assert.equal(JSON.parse(reply.body.toString("utf8")).error.code, apiError.incomplete_body);
  assert.deepEqual(await bucketKeys(p), before, "nothing stored");
  // And the worker still takes uploads.
  assert.equal((await p.waitForStatus(await upload(p, png(300)))).status, status.done);
});

test('ALLOWED_ORIGINS="*": any origin can upload and read, end to end', async () => {
  await withPipeline({ vars: { upload: { ALLOWED_ORIGINS: "*" } } }, async (open) => {
    const origin = "https://anywhere.example";
    const preflight = await open.fetch("/images", {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type" },
    });
    assert.equal(preflight.status, 204);
    assert.equal(preflight.headers.get("access-control-allow-origin"), "*");
    assert.match(preflight.headers.get("access-control-allow-methods") ?? "", /POST/);

    const res = await open.fetch("/images", { method: "POST", body: png(400), headers: { origin, "content-type": "image/png" } });
    assert.equal(res.status, 202);
    assert.equal(res.headers.get("access-control-allow-origin"), "*");
    assert.match(res.headers.get("access-control-expose-headers") ?? "", /Location/);
    assert.doesNotMatch(res.headers.get("vary") ?? "", /Origin/, "the answer does not depend on Origin");
    const { imageId } = await res.json();

    const done = await open.waitForStatus(imageId, undefined, { headers: { origin: "https://other.example" } });
    assert.equal(done.status, status.done);
    const read = await open.fetch(`/images/${imageId}`, { headers: { origin: "https://other.example" } });
    assert.equal(read.headers.get("access-control-allow-origin"), "*");
    const refused = await open.fetch("/nope", { headers: { origin } });
    assert.equal(refused.status, apiStatus(apiError.not_found));
    assert.equal(refused.headers.get("access-control-allow-origin"), "*", "errors carry CORS too");
  });
});

test("the demo page may not be framed, and every response says nosniff; API answers are never cached", async () => {
  const page = await p.fetch("/");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/);
  assert.equal(page.headers.get("x-frame-options"), "DENY");
  for (const res of [page, await p.fetch("/nope"), await p.fetch(`/images/${await upload(p, png(300))}`)]) {
    assert.equal(res.headers.get("x-content-type-options"), "nosniff", res.url);
    assert.equal(res.headers.get("referrer-policy"), "no-referrer", res.url);
  }
  const api = await p.fetch("/nope");
  assert.equal(api.headers.get("cache-control"), "no-store");
});

test("every log line of both workers is one JSON object with an event of the contract and a level", async () => {
  // Runs after the tests above: uploads, tagging and refused requests have all logged.
  await p.waitForLine((l) => l.includes(`"${logEvents.uploadAccepted}"`), { what: "an upload.accepted line" });
  const events = new Set(Object.values(logEvents));
  const structured = p.lines.filter((l) => l.includes('{"event":'));
  for (const line of structured) {
    const object = JSON.parse(line.slice(line.indexOf("{")));
    assert.ok(events.has(object.event), `an event of the contract: ${line}`);
    assert.ok(["info", "warn", "error"].includes(object.level), `a level: ${line}`);
  }
  const seen = new Set(structured.map((l) => JSON.parse(l.slice(l.indexOf("{"))).event));
  for (const event of [logEvents.uploadAccepted, logEvents.message]) {
    assert.ok(seen.has(event), `${event} was logged and checked`);
  }
  // No free-text line of the workers' own (the old console_* messages began so).
  assert.ok(!p.lines.some((l) => /^(tagger|reconciler|retention|R2 (delete|abort))\b/.test(l.trim())), "no free-text lines");
});
