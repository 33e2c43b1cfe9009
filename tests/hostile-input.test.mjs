// Hostile inputs against the real workers (issue 19):
// - the scan bomb: a 4000×3000 progressive JPEG whose first scan header (with the start of its
//   data) is repeated 1000 times before EOI, about 110 KB. Each repeat would make the decoder
//   walk every block of the image again (seconds of CPU). The upload's head counts its scans
//   and refuses it (422 invalid_image, nothing stored); sent straight onto the queue, the
//   tagger counts them before decoding and fails it as invalid_image at once, without an AI
//   call, while three good photos beside it end done;
// - impossible dates in search parameters give 400;
// - callback URLs naming local or special-use hosts, or a port other than 443, give 400.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import sharp from "sharp";

import { startPipeline } from "../local/pipeline.mjs";
import { apiError, apiStatus, contract, outcome, status, tagError } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { largeJpeg } from "../local/photos.mjs";
import { FAST_QUEUES, bucketKeys, storedMessage, upload } from "./support/helpers.mjs";

/** More than any encoder writes (the limit is 64 for progressive JPEGs). */
const REPEATS = 1000;
/** A bounded wait for a terminal status: generous for a busy machine, short next to the
 * minutes the bomb cost before. */
const WAIT = { timeoutMs: 60_000 };

/**
 * The scan bomb: a real progressive JPEG's headers (libjpeg's, through sharp), then its first
 * scan header and the first `keep` bytes of that scan's data, `repeats` times, then EOI.
 */
async function scanBomb(repeats = REPEATS, keep = 100) {
  const base = await sharp({ create: { width: 4000, height: 3000, channels: 3, background: { r: 90, g: 120, b: 200 } } })
    .jpeg({ progressive: true, quality: 80 })
    .toBuffer();
  // Walk the segments from SOI to the first SOS.
  let pos = 2;
  while (!(base[pos] === 0xff && base[pos + 1] === 0xda)) {
    assert.equal(base[pos], 0xff, `a marker at ${pos}`);
    pos += 2 + base.readUInt16BE(pos + 2);
  }
  const headerEnd = pos + 2 + base.readUInt16BE(pos + 2);
  let scan = base.subarray(pos, headerEnd + keep);
  while (scan.at(-1) === 0xff) scan = scan.subarray(0, -1);
  return Buffer.concat([base.subarray(0, pos), ...Array(repeats).fill(scan), Buffer.from([0xff, 0xd9])]);
}

let p;
let bomb;
let photos;
before(async () => {
  bomb = await scanBomb();
  photos = await Promise.all([1, 2, 3].map((seed) => largeJpeg({ width: 2000, height: 1500, seed })));
  p = await startPipeline({ queues: FAST_QUEUES });
});
after(async () => {
  await p?.close();
});

test("the scan bomb is refused at upload: 422 invalid_image, nothing stored", async () => {
  assert.ok(bomb.length < 256 * 1024, `${bomb.length} bytes: within the upload's head`);
  const before = await bucketKeys(p);
  const res = await p.fetch("/images", { method: "POST", body: bomb, headers: { "content-type": "image/jpeg" } });
  const body = await res.json();
  assert.equal(res.status, apiStatus(apiError.invalid_image), JSON.stringify(body));
  assert.equal(body.error.code, apiError.invalid_image);
  assert.match(body.error.message, /more scans/);
  assert.deepEqual(await bucketKeys(p), before, "nothing stored");
  // The worker still serves (with bytes of its own: the next test's photos must be new to
  // this owner, or the tagger would reuse their labels instead of calling the model).
  const served = await largeJpeg({ width: 800, height: 600, seed: 4 });
  const id = await upload(p, served, { "content-type": "image/jpeg" });
  assert.equal((await p.waitForStatus(id, undefined, WAIT)).status, status.done);
});

test("the scan bomb sent straight to the queue fails at once; three photos beside it end done", async () => {
  const calls = p.ai.calls.length;
  const message = await storedMessage(p, bomb, "image/jpeg");
  await (await p.queue()).send(message);
  const ids = [];
  for (const photo of photos) ids.push(await upload(p, photo, { "content-type": "image/jpeg" }));

  const view = await p.waitForStatus(message.imageId, undefined, WAIT);
  assert.deepEqual([view.status, view.error?.code], [status.failed, tagError.invalid_image], JSON.stringify(view));
  for (const id of ids) {
    const photo = await p.waitForStatus(id, undefined, WAIT);
    assert.equal(photo.status, status.done, JSON.stringify(photo));
  }
  const failed = await p.waitForOutcome({ imageId: message.imageId, outcome: outcome.failed });
  assert.equal(failed.attempt, 1, "failed on its first delivery, not retried");
  // The decoder never ran: the log says why, and the model was called for the photos only.
  assert.ok(p.lines.some((l) => l.includes(message.imageId) && l.includes("more scans")), "the reason is logged");
  assert.equal(p.ai.callsFor(bomb).length, 0, "no AI call for the bomb");
  assert.equal(p.ai.calls.length - calls, photos.length);
});

test("impossible dates in a search are 400 invalid_query", async () => {
  for (const since of [
    "2025-02-31T00:00:00Z",
    "2025-02-29T00:00:00Z",
    "2025-13-01T00:00:00Z",
    "2025-04-31T12:00:00Z",
    "2025-01-01T24:00:00Z",
    "2025-01-01T10:00:00+24:00",
  ]) {
    const res = await p.fetch(`/images?since=${encodeURIComponent(since)}`);
    const body = await res.json();
    assert.equal(res.status, 400, `${since}: ${JSON.stringify(body)}`);
    assert.equal(body.error.code, apiError.invalid_query, since);
  }
  const res = await p.fetch(`/images?since=${encodeURIComponent("2024-02-29T00:00:00Z")}&until=2025-02-28T23:59:59Z`);
  assert.equal(res.status, 200, "a leap day and the last day of February are real dates");
});

test("callback URLs to local or special-use names, or to other ports, are 400", async () => {
  const header = contract.webhooks.callbackHeader;
  const before = await bucketKeys(p);
  for (const url of [
    "https://localhost:6379/",
    "https://LOCALHOST./hook",
    "https://redis.localhost/",
    "https://intranet/hook",
    "https://printer.local/hook",
    "https://db.internal/hook",
    "https://nas.home.arpa/hook",
    "https://hooks.test/hook",
    "https://hooks.example.com:8443/hook",
  ]) {
    // A small body: the header is refused before the body is read.
    const res = await p.fetch("/images", { method: "POST", body: png(200), headers: { [header]: url } });
    const body = await res.json();
    assert.equal(res.status, 400, `${url}: ${JSON.stringify(body)}`);
    assert.equal(body.error.code, apiError.invalid_callback_url, url);
  }
  assert.deepEqual(await bucketKeys(p), before, "nothing stored");
});
