// What several test files do the same way, on top of the launcher (local/pipeline.mjs).

import assert from "node:assert/strict";

import { startPipeline } from "../../local/pipeline.mjs";
import { contract, imageMessage, sql } from "../../local/contract.mjs";
import { png } from "../../local/images.mjs";

/** Consumer overrides for tests: a batch is taken after 1 s instead of the configured 5 s. */
export const FAST_QUEUES = Object.freeze({ "*": { maxBatchTimeout: 1 } });

/** Runs `body(p)` against a fresh pipeline (fast batches unless `queues` says otherwise). */
export async function withPipeline(options, body) {
  const p = await startPipeline({ queues: FAST_QUEUES, ...options });
  try {
    return await body(p);
  } finally {
    await p.close();
  }
}

/** POSTs an image over the socket; returns its id (asserting 202). */
export async function upload(p, bytes, headers = {}) {
  const res = await p.fetch("/images", { method: "POST", body: bytes, headers });
  assert.equal(res.status, 202, `upload answered ${res.status}: ${await res.clone().text()}`);
  return (await res.json()).imageId;
}

/**
 * Records an image and stores its bytes exactly as the upload worker does (the D1 row with the
 * worker's own statement, then the R2 object), and returns its queue message, unsent.
 */
export async function storedMessage(p, bytes = png(128), contentType = "image/png") {
  const message = imageMessage({ contentType, size: bytes.length });
  await recordImage(p, message);
  // The proxy only carries plain typed arrays, not Buffers.
  await (await p.bucket()).put(message.r2Key, new Uint8Array(bytes), {
    httpMetadata: { contentType },
    customMetadata: { uploadedAt: message.uploadedAt },
  });
  return message;
}

/**
 * Inserts the queued D1 row of a message's image, as the upload worker does, and marks it
 * sent (due) at its upload time, as the upload does once its message is out; with
 * `{ sent: false }` the row stays as during the upload (not due).
 */
export async function recordImage(p, message, { sent = true } = {}) {
  const db = await p.db();
  const uploaded = Date.parse(message.uploadedAt);
  await db.prepare(sql.insertQueued).bind(message.imageId, message.r2Key, message.contentType, message.size, uploaded, contract.auth.owners.anonymous).run();
  if (sent) await db.prepare(sql.markSent).bind(message.imageId, uploaded).run();
}

/** Every key in the image bucket, sorted. */
export async function bucketKeys(p) {
  const bucket = await p.bucket();
  const keys = [];
  let cursor;
  do {
    const page = await bucket.list({ cursor });
    keys.push(...page.objects.map((o) => o.key));
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor);
  return keys.sort();
}
