// State races (issue 19): what happens when two things touch one image at once. Retention
// while an image is being tagged or uploaded, a DELETE during a streamed upload, the
// reconciler during a slow upload, a dead letter during another delivery's tagging, a KV
// write that fails after a redrive, a rebuilt multipart form with an Idempotency-Key, the
// purge of expired keys, and the takeover of a key whose first request never finished. Every race is made deterministic: a request body or a model
// answer is held back by the test until the other side has acted.

import { test } from "node:test";
import assert from "node:assert/strict";

import { waitFor } from "../local/pipeline.mjs";
import { answer } from "../local/ai-stub.mjs";
import { apiError, apiStatus, bindings, imageMessage, keys, logEvents, outcome, queues, status, tagError } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { bucketKeys, recordImage, storedMessage, withPipeline } from "./support/helpers.mjs";
import { chunkedStream, multipartBody } from "./support/requests.mjs";

const DAY_MS = 86_400_000;
const KiB = 1024;

/** A request body that sends its first `head` bytes, then waits for `release()`. */
function heldBody(bytes, head = 64 * KiB) {
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  const stream = new ReadableStream({
    async start(controller) {
      controller.enqueue(new Uint8Array(bytes.subarray(0, head)));
      await gate;
      for (let at = head; at < bytes.length; at += 64 * KiB) {
        controller.enqueue(new Uint8Array(bytes.subarray(at, Math.min(at + 64 * KiB, bytes.length))));
      }
      controller.close();
    },
  });
  return { stream, release };
}

/** A model answer held until `release()`. */
function heldAnswer() {
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  return { step: { ...answer(), gate }, release };
}

/**
 * POSTs a held body as a chunked upload; resolves to the response, or to the error if the
 * request failed (so that a failed assertion meanwhile is what the test reports).
 */
function startUpload(p, body, headers = { "content-type": "image/png" }) {
  return p.fetch("/images", { method: "POST", body: body.stream, duplex: "half", headers }).catch((e) => e);
}

/** The response of a held upload, once its body is released. */
async function finished(pending) {
  const res = await pending;
  if (res instanceof Error) throw res;
  return res;
}

async function imageRow(p, id) {
  return (await p.db()).prepare("SELECT * FROM images WHERE id = ?1").bind(id).first();
}

/** The row of the one upload in progress (a fresh pipeline has no other). */
function uploadingRow(p) {
  return waitFor(async () => (await p.db()).prepare("SELECT * FROM images").first(), { what: "the upload's row" });
}

/** Runs the cron once; resolves to its `event` log line (parsed) of this run. */
async function cronLine(p, event) {
  const from = p.lines.length;
  await p.scheduled("tagger");
  const line = await p.waitForLine((l) => l.includes(`"${event}"`), { from, what: `the ${event} line` });
  return { from, line: JSON.parse(line.slice(line.indexOf("{"))) };
}

/** An image recorded and stored as the upload does, uploaded at `uploadedAt`. */
async function storedAt(p, bytes, uploadedAt) {
  const message = imageMessage({ uploadedAt, size: bytes.length });
  await recordImage(p, message);
  await (await p.bucket()).put(message.r2Key, new Uint8Array(bytes), { httpMetadata: { contentType: message.contentType } });
  return message;
}

test("retention takes only finished images: one being tagged and one still uploading stay", async () => {
  // The give-up horizon is set past the images' age: the reconciler (which runs first) would
  // otherwise take the two-day-old upload for an abandoned one and fail it.
  const vars = { tagger: { RETENTION_DAYS: "1", GIVE_UP_AFTER_SECONDS: String((3 * DAY_MS) / 1000) } };
  await withPipeline({ vars }, async (p) => {
    const old = new Date(Date.now() - 2 * DAY_MS).toISOString();
    const db = await p.db();
    // Two days old and done: retention's to take.
    const finished = await storedAt(p, png(300), old);
    await db.prepare("UPDATE images SET status = 'done', tags = '[]', processed_at = ?2 WHERE id = ?1").bind(finished.imageId, Date.now()).run();
    // Two days old, recorded, its message never sent and no bytes yet: an upload in progress.
    const uploading = imageMessage({ uploadedAt: old, size: 300 });
    await recordImage(p, uploading, { sent: false });
    // Two days old and being tagged: its model call waits for the test.
    const bytes = png(300);
    const held = heldAnswer();
    p.ai.script(bytes, held.step);
    const tagging = await storedAt(p, bytes, old);
    await (await p.queue()).send(tagging);
    await waitFor(() => p.ai.callsFor(bytes).length === 1, { what: "the model call" });
    assert.ok((await imageRow(p, tagging.imageId)).lease_until > Date.now(), "leased while tagged");

    const { line } = await cronLine(p, logEvents.retention);
    assert.deepEqual([line.deleted, line.errors], [1, 0], JSON.stringify(line));
    assert.equal(await imageRow(p, finished.imageId), null, "the finished image is gone");
    assert.equal((await imageRow(p, uploading.imageId))?.status, status.queued, "the upload in progress stays");
    assert.equal((await imageRow(p, tagging.imageId))?.status, status.queued, "the image being tagged stays");

    held.release();
    assert.equal((await p.waitForStatus(tagging.imageId)).status, status.done);
    assert.deepEqual(await bucketKeys(p), [tagging.r2Key], "its bytes stayed; the finished image's went");
  });
});

test("RETENTION_DAYS=0 is a configuration error: logged, and retention stays off", async () => {
  await withPipeline({ vars: { tagger: { RETENTION_DAYS: "0" } } }, async (p) => {
    const finished = await storedAt(p, png(300), new Date(Date.now() - 2 * DAY_MS).toISOString());
    await (await p.db()).prepare("UPDATE images SET status = 'done', tags = '[]' WHERE id = ?1").bind(finished.imageId).run();
    const { from, line } = await cronLine(p, logEvents.configInvalid);
    assert.equal(line.var, "RETENTION_DAYS", JSON.stringify(line));
    assert.match(line.error, /from 1/);
    // Logged in place of retention's own line, in the same run.
    assert.ok(!p.lines.slice(from).some((l) => l.includes(`"${logEvents.retention}"`)), "retention did not run");
    assert.equal((await imageRow(p, finished.imageId))?.status, status.done, "nothing deleted");
    assert.deepEqual(await bucketKeys(p), [finished.r2Key]);
  });
});

test("a DELETE during a streamed upload leaves nothing behind; the upload answers 409 image_deleted", async () => {
  await withPipeline({}, async (p) => {
    const body = heldBody(png(512 * KiB));
    const pending = startUpload(p, body);
    const row = await uploadingRow(p);
    assert.equal(row.due_at, null, "not due while its bytes stream");
    const deleted = await p.fetch(`/images/${row.id}`, { method: "DELETE" });
    assert.equal(deleted.status, 204);
    body.release();
    const res = await finished(pending);
    const json = await res.json();
    assert.equal(res.status, apiStatus(apiError.image_deleted), JSON.stringify(json));
    assert.equal(json.error.code, apiError.image_deleted);
    assert.deepEqual(await bucketKeys(p), [], "no object left in R2");
    assert.equal(await imageRow(p, row.id), null);
    assert.equal(await p.record(row.id), null);
    assert.equal((await p.fetch(`/images/${row.id}`)).status, 404);
  });
});

test("the reconciler leaves an upload slower than STUCK_AFTER_SECONDS alone; it is then tagged", async () => {
  await withPipeline({ vars: { tagger: { STUCK_AFTER_SECONDS: "1" } } }, async (p) => {
    const body = heldBody(png(512 * KiB));
    const pending = startUpload(p, body);
    const row = await uploadingRow(p);
    // Its bytes are still arriving well past the stuck threshold.
    await waitFor(() => Date.now() - row.uploaded_at > 2000, { what: "the stuck threshold to pass" });
    const { line } = await cronLine(p, logEvents.reconcile);
    assert.deepEqual([line.requeued, line.failedMissing, line.errors], [0, 0, 0], JSON.stringify(line));
    const during = await imageRow(p, row.id);
    assert.deepEqual([during.status, during.error_code, during.due_at], [status.queued, null, null]);

    body.release();
    const res = await finished(pending);
    assert.equal(res.status, 202, await res.clone().text());
    assert.equal((await res.json()).imageId, row.id);
    assert.equal((await p.waitForStatus(row.id)).status, status.done);
  });
});

test("a dead letter during another delivery's tagging does not flip the image; one webhook event", async () => {
  // The lease outlasts the dead letter's trip through its queue on a busy machine; the dead
  // letter comes back once it ends.
  await withPipeline({ vars: { tagger: { LEASE_SECONDS: "12" } } }, async (p) => {
    const bytes = png(300);
    const held = heldAnswer();
    p.ai.script(bytes, held.step);
    const message = await storedMessage(p, bytes);
    const id = message.imageId;
    const db = await p.db();
    await db.prepare("UPDATE images SET callback_url = 'https://hooks.example.com/x' WHERE id = ?1").bind(id).run();
    await (await p.queue()).send(message);
    await waitFor(() => p.ai.callsFor(bytes).length === 1, { what: "the model call" });

    // The image queue's dead letter for the same image arrives while the model answers.
    await (await p.queue(queues.imagesDeadLetter)).send(message);
    const dead = await p.waitForOutcome({ imageId: id, queue: queues.imagesDeadLetter });
    assert.deepEqual([dead.outcome, dead.errorCode], [outcome.deferred, tagError.leased], JSON.stringify(dead));
    assert.equal((await imageRow(p, id)).status, status.queued, "not failed under another delivery's lease");

    held.release();
    await p.waitForOutcome({ imageId: id, queue: queues.images, outcome: outcome.done });
    // The dead letter comes back after the lease, and finds the image done.
    const late = await p.waitForOutcome({ imageId: id, queue: queues.imagesDeadLetter, outcome: outcome.skipped }, { timeoutMs: 45_000 });
    assert.equal(late.outcome, outcome.skipped);
    const row = await imageRow(p, id);
    assert.deepEqual([row.status, row.error_code], [status.done, null]);
    const events = (await db.prepare("SELECT type FROM notifications WHERE image_id = ?1").bind(id).all()).results;
    assert.deepEqual(events.map((e) => e.type), ["image.tagged"], "one webhook event, never image.failed");
    assert.ok(!p.outcomes().some((o) => o.imageId === id && o.outcome === outcome.failed), "never failed");
  });
});

test("a failed KV write after a redrive heals: GET reads D1 meanwhile, the retry rewrites KV", async () => {
  await withPipeline({ vars: { tagger: { RETRY_BASE_SECONDS: "1" } }, faults: [bindings.resultsKv] }, async (p) => {
    const kv = p.faults[bindings.resultsKv];
    const message = await storedMessage(p);
    const id = message.imageId;
    // The image queue gave up on it: failed, in D1 and in KV.
    await (await p.queue(queues.imagesDeadLetter)).send(message);
    await p.waitForOutcome({ imageId: id, queue: queues.imagesDeadLetter, outcome: outcome.failed });
    assert.equal((await p.record(id))?.status, status.failed);

    // A redrive tags it, and KV refuses the done record.
    kv.fail({ op: "put", worker: "tagger", key: keys.record(id) });
    await (await p.queue()).send(message);
    const retry = await p.waitForOutcome({ imageId: id, queue: queues.images, outcome: outcome.retry });
    assert.equal(retry.errorCode, tagError.storage_unavailable);
    assert.equal((await imageRow(p, id)).status, status.done, "D1 has it done");
    assert.equal((await p.record(id))?.status, status.failed, "KV still says failed");
    const view = await (await p.fetch(`/images/${id}`)).json();
    assert.equal(view.status, status.done, "GET does not trust a failed record in KV");

    kv.clear();
    await p.waitForOutcome({ imageId: id, queue: queues.images, outcome: outcome.skipped }, { timeoutMs: 20_000 });
    assert.equal((await p.record(id))?.status, status.done, "KV healed");
  });
});

test("a rebuilt multipart form gets its first image; expired Idempotency-Keys are purged by the cron", async () => {
  await withPipeline({}, async (p) => {
    const bytes = png(4096);
    const post = (boundary, parts, { stream = false } = {}) => {
      const body = multipartBody(boundary, parts);
      return p.fetch("/images", {
        method: "POST",
        body: stream ? chunkedStream(body, 700) : body,
        ...(stream ? { duplex: "half" } : {}),
        headers: { "content-type": `multipart/form-data; boundary=${boundary}`, "idempotency-key": "form-key" },
      });
    };
    const file = (type = "image/png", body = bytes, filename = "photo.png") => ({ name: "image", filename, type, body });
    const first = await post("first-boundary-1f3a", [file()]);
    assert.equal(first.status, 202, await first.clone().text());
    const id = (await first.json()).imageId;
    // The same file and type, in a form rebuilt with another boundary, another field and
    // another file name, sent whole or chunked: the first image.
    for (const [boundary, parts, options] of [
      ["----rebuilt-boundary-9c2e", [{ name: "caption", body: "hello" }, file("image/png", bytes, "again.png")]],
      ["x", [file()], { stream: true }],
    ]) {
      const again = await post(boundary, parts, options);
      assert.equal(again.status, 200, await again.clone().text());
      assert.equal((await again.json()).imageId, id);
    }
    // Another declared type or other bytes: another body.
    for (const parts of [[file("application/octet-stream")], [file("image/png", png(4096))]]) {
      const other = await post("first-boundary-1f3a", parts);
      assert.equal(other.status, 422, await other.clone().text());
      assert.equal((await other.json()).error.code, apiError.idempotency_key_reused);
    }
    assert.equal((await bucketKeys(p)).length, 1, "one object");

    // An expired reservation is purged; the live one stays.
    const db = await p.db();
    await db
      .prepare("INSERT INTO idempotency_keys (scope, key, image_id, body_sha256, created_at, expires_at) VALUES ('anonymous', 'expired-key', ?1, 'ff', 0, ?2)")
      .bind(crypto.randomUUID(), Date.now() - 1000)
      .run();
    const { line } = await cronLine(p, logEvents.reconcile);
    assert.equal(line.keysPurged, 1, JSON.stringify(line));
    const left = (await db.prepare("SELECT key FROM idempotency_keys ORDER BY key").all()).results.map((r) => r.key);
    assert.deepEqual(left, ["form-key"]);
  });
});

test("a stale pending Idempotency-Key is taken over only when its first image has no row", async () => {
  await withPipeline({}, async (p) => {
    const db = await p.db();
    const pending = (key, imageId) =>
      db
        .prepare("INSERT INTO idempotency_keys (scope, key, image_id, body_sha256, created_at, expires_at) VALUES ('anonymous', ?1, ?2, NULL, 0, ?3)")
        .bind(key, imageId, Date.now() + DAY_MS)
        .run();
    const post = (key) => p.fetch("/images", { method: "POST", body: png(2048), headers: { "content-type": "image/png", "idempotency-key": key } });
    // A first request that has been running for long (its key pending since the epoch) and
    // whose image exists: its body may still stream. A retry must not make a second image.
    const slow = await storedMessage(p);
    await pending("slow-key", slow.imageId);
    const before = await bucketKeys(p);
    const retry = await post("slow-key");
    assert.equal(retry.status, apiStatus(apiError.idempotency_key_in_flight), await retry.clone().text());
    assert.equal((await retry.json()).error.code, apiError.idempotency_key_in_flight);
    assert.deepEqual(await bucketKeys(p), before, "no second image");
    // A first request that died before recording its image: the key is taken over.
    await pending("dead-key", crypto.randomUUID());
    const takeover = await post("dead-key");
    assert.equal(takeover.status, 202, await takeover.clone().text());
    const row = await db.prepare("SELECT image_id FROM idempotency_keys WHERE key = 'dead-key'").first();
    assert.equal(row.image_id, (await takeover.json()).imageId);
  });
});

