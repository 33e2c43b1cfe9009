// Large photos: the tagger sends the model a small JPEG whatever the upload, decodes in
// bounded memory, and fails bombs and corrupt files at once without calling the model.
// Photos are made at test time (local/photos.mjs). Memory and CPU are measured in
// the benchmark (bench/photos.mjs), not asserted here.

import { test } from "node:test";
import assert from "node:assert/strict";

import { outcome, status, tagError } from "../local/contract.mjs";
import { bombPng, corruptJpeg, largeJpeg, largePng, largeWebp } from "../local/photos.mjs";
import { storedMessage, upload, withPipeline } from "./support/helpers.mjs";

const MiB = 1024 * 1024;
const BIG = { upload: { MAX_UPLOAD_BYTES: String(24 * MiB) } };

/** Width and height of a baseline JPEG, from its frame header. */
function jpegSize(bytes) {
  for (let i = 2; i < bytes.length - 9; ) {
    const marker = bytes[i + 1];
    if (marker >= 0xc0 && marker <= 0xc3) return [bytes.readUInt16BE(i + 7), bytes.readUInt16BE(i + 5)];
    i += 2 + bytes.readUInt16BE(i + 2);
  }
  return null;
}

test("five 4000×3000 photos in one batch are all tagged; the model gets 512-pixel JPEGs", async () => {
  const photos = await Promise.all([1, 2, 3, 4, 5].map((seed) => largeJpeg({ seed })));
  console.log(`photos: ${photos.map((p) => (p.length / MiB).toFixed(1)).join(", ")} MiB`);
  await withPipeline({ vars: BIG, queues: { "*": { maxBatchTimeout: 3 } } }, async (p) => {
    const ids = await Promise.all(photos.map((bytes) => upload(p, bytes, { "content-type": "image/jpeg" })));
    for (const id of ids) {
      const view = await p.waitForStatus(id, undefined, { timeoutMs: 60_000 });
      assert.equal(view.status, status.done, JSON.stringify(view));
    }
    const lines = [];
    for (const id of ids) lines.push(...(await p.outcomesOf(id, { until: outcome.done })));
    const batches = new Set(lines.map((o) => o.attempt));
    console.log(`five photos: ${lines.length} outcome lines, attempts ${[...batches]}`);
    assert.equal(p.ai.calls.length, 5, "one call each");
    for (const call of p.ai.calls) {
      const size = jpegSize(call.image);
      assert.ok(size, "a JPEG");
      assert.equal(Math.min(...size), 512, `shorter side 512: ${size}`);
      assert.equal(Math.max(...size), 683, `aspect kept: ${size}`);
      assert.ok(call.image.length < 200 * 1024, `${call.image.length} bytes sent, not megabytes`);
    }
  });
});

test("large PNG and WebP photos are normalised too", async () => {
  const png = await largePng();
  const webp = await largeWebp();
  await withPipeline({ vars: BIG }, async (p) => {
    for (const [bytes, type] of [[png, "image/png"], [webp, "image/webp"]]) {
      const id = await upload(p, bytes, { "content-type": type });
      const view = await p.waitForStatus(id, undefined, { timeoutMs: 60_000 });
      assert.equal(view.status, status.done, `${type}: ${JSON.stringify(view)}`);
      const size = jpegSize(p.ai.calls.at(-1).image);
      assert.equal(Math.min(...size), 512, `${type}: ${size}`);
    }
  });
});

test("a decompression bomb sent straight to the queue fails as image_too_large without an AI call", async () => {
  await withPipeline({}, async (p) => {
    const message = await storedMessage(p, bombPng(), "image/png");
    await (await p.queue()).send(message);
    const view = await p.waitForStatus(message.imageId);
    assert.deepEqual([view.status, view.error?.code], [status.failed, tagError.image_too_large], JSON.stringify(view));
    await p.waitForOutcome({ imageId: message.imageId, outcome: outcome.failed });
    await p.barrier({ delaySeconds: 2 });
    assert.equal(p.outcomes().filter((o) => o.imageId === message.imageId).length, 1, "not retried");
    assert.equal(p.ai.calls.length, 0, "no AI call");
  });
});

test("a corrupt JPEG behind a valid header fails as invalid_image without an AI call", async () => {
  await withPipeline({}, async (p) => {
    const id = await upload(p, await corruptJpeg(), { "content-type": "image/jpeg" });
    const view = await p.waitForStatus(id);
    assert.deepEqual([view.status, view.error?.code], [status.failed, tagError.invalid_image], JSON.stringify(view));
    assert.equal(view.attempts, 1);
    assert.equal(p.ai.calls.length, 0, "no AI call");
  });
});
