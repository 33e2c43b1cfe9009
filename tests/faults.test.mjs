// Failures of the platform around the workers, injected through the bindings (the
// launcher's `faults` option wraps a binding; `p.faults[name]` controls it): transient R2
// and KV errors in the tagger, a queue that refuses the upload worker's message, slow R2,
// and KV that is eventually consistent the way production KV is.

import { test } from "node:test";
import assert from "node:assert/strict";

import { waitFor } from "../local/pipeline.mjs";
import { apiError, apiStatus, bindings, keys, outcome, status, tagError } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { bucketKeys, storedMessage, upload, withPipeline } from "./support/helpers.mjs";

const QUICK_RETRIES = { tagger: { RETRY_BASE_SECONDS: "1" } };

/**
 * Sends a stored image's message after `arm(message)` set up faults; resolves when it ends
 * with `last` (the final outcome line expected).
 */
async function tagWith(p, arm, last = outcome.done) {
  const bytes = png(300);
  const message = await storedMessage(p, bytes);
  arm(message);
  await (await p.queue()).send(message);
  const record = await p.waitForStatus(message.imageId, undefined, { timeoutMs: 20_000 });
  await p.waitForOutcome({ imageId: message.imageId, outcome: last });
  return { record, bytes, lines: p.outcomes().filter((o) => o.imageId === message.imageId) };
}

/** The injected storage error cost one retry; the second delivery ended with `last`. */
function retriedThen({ record, lines }, last = outcome.done) {
  assert.equal(record.status, status.done, JSON.stringify(record));
  assert.deepEqual(
    lines.map((o) => [o.outcome, o.attempt, o.errorCode]),
    [
      [outcome.retry, 1, tagError.storage_unavailable],
      [last, 2, undefined],
    ],
  );
}

test("a transient R2 error in the tagger is retried, and a slow R2 read only delays", async () => {
  await withPipeline({ vars: QUICK_RETRIES, faults: [bindings.imageBucket] }, async (p) => {
    const r2 = p.faults[bindings.imageBucket];
    const failing = await tagWith(p, (m) => r2.fail({ op: "get", worker: "tagger", key: m.r2Key, times: 1 }));
    retriedThen(failing);
    assert.equal(p.ai.callsFor(failing.bytes).length, 1, "the model was called once, after R2 answered");
    assert.equal(r2.opsMatching({ op: "get", worker: "tagger" }).filter((o) => o.failed).length, 1);

    const slow = await tagWith(p, (m) => r2.slow({ op: "get", worker: "tagger", key: m.r2Key, ms: 600, times: 1 }));
    assert.deepEqual(slow.lines.map((o) => [o.outcome, o.attempt]), [[outcome.done, 1]]);
    assert.ok(slow.lines[0].durationMs >= 550, `the slow read shows in the duration: ${slow.lines[0].durationMs} ms`);
  });
});

test("a failed KV write in the tagger is retried, and the retry only republishes what D1 holds", async () => {
  await withPipeline({ vars: QUICK_RETRIES, faults: [bindings.resultsKv] }, async (p) => {
    const kv = p.faults[bindings.resultsKv];
    const write = await tagWith(
      p,
      (m) => kv.fail({ op: "put", worker: "tagger", key: keys.record(m.imageId), times: 1 }),
      outcome.skipped,
    );
    // D1 recorded the result before KV failed: the retry finds it done and writes KV again.
    retriedThen(write, outcome.skipped);
    assert.equal(p.ai.callsFor(write.bytes).length, 1, "the model is not called again");
    const record = await p.record(write.record.imageId);
    assert.equal(record?.status, status.done, "KV holds the record after the retry");
    assert.equal(kv.opsMatching({ op: "put", worker: "tagger" }).filter((o) => o.failed).length, 1);
  });
});

test("when the queue refuses the message, the upload answers 503 and its object is deleted", async () => {
  await withPipeline({ faults: [bindings.imageQueue] }, async (p) => {
    const queue = p.faults[bindings.imageQueue];
    queue.fail({ worker: "upload" });
    const before = await bucketKeys(p);
    // Both ways into R2: a small body is buffered, one over 1 MiB streams.
    for (const size of [2048, 2 * 1024 * 1024]) {
      const res = await p.fetch("/images", { method: "POST", body: png(size), headers: { "content-type": "image/png" } });
      const body = await res.json();
      assert.equal(res.status, apiStatus(apiError.unavailable), JSON.stringify(body));
      assert.equal(body.error.code, apiError.unavailable);
      assert.deepEqual(await bucketKeys(p), before, `no object left behind (${size} bytes)`);
    }
    assert.equal(queue.opsMatching({ worker: "upload" }).filter((o) => o.failed).length, 2);

    queue.clear();
    const id = await upload(p, png(512));
    assert.equal((await p.waitForStatus(id)).status, status.done, "uploads work again once the queue does");
    assert.equal(p.ai.calls.length, 1, "only the accepted upload reached the model");
  });
});

test("a KV outage on the status read answers 503, not 500", async () => {
  await withPipeline({ faults: [bindings.resultsKv] }, async (p) => {
    const id = await upload(p, png(512));
    await p.waitForStatus(id);
    p.faults[bindings.resultsKv].fail({ op: "get", worker: "upload", times: 1 });
    const res = await p.fetch(`/images/${id}`);
    assert.equal(res.status, apiStatus(apiError.unavailable));
    assert.equal((await res.json()).error.code, apiError.unavailable);
    assert.equal((await p.fetch(`/images/${id}`)).status, 200, "the next read works");
  });
});

test("with eventually consistent KV a status never lags: GET falls back to D1", async () => {
  const LAG = 5000;
  await withPipeline({ faults: [bindings.resultsKv] }, async (p) => {
    const kv = p.faults[bindings.resultsKv];
    kv.stale({ lagMs: LAG });
    const id = await upload(p, png(512));
    // A read while the image is queued: a miss, which stale KV then caches.
    assert.equal((await (await p.fetch(`/images/${id}`)).json()).status, status.queued);
    // The record is in KV (read around the wrapper)...
    await waitFor(async () => (await p.record(id))?.status === status.done, { what: "the record in KV" });
    const written = kv.opsMatching({ op: "put", worker: "tagger", key: keys.record(id) })[0];
    assert.ok(written, "the tagger wrote the record through the wrapped KV");
    // ...and a client reading through the lagging binding sees it done at once, from D1.
    const early = await (await p.fetch(`/images/${id}`)).json();
    const readAt = Date.now() - written.at;
    assert.ok(readAt < LAG, `read ${readAt} ms after the write, within the ${LAG} ms lag`);
    assert.equal(early.status, status.done, JSON.stringify(early));
    assert.ok(kv.opsMatching({ op: "get", worker: "upload", key: keys.record(id) }).length >= 2, "KV was asked first");
    console.log(`stale KV: done visible ${readAt} ms after the write (KV lags ${LAG} ms)`);
  });
});
