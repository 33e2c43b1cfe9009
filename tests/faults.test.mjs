// Failures of the platform around the workers, injected through the bindings (the
// launcher's `faults` option wraps a binding; `p.faults[name]` controls it): transient R2
// and KV errors in the tagger, a queue that refuses the upload worker's message, slow R2,
// and KV that is eventually consistent the way production KV is.

import { test } from "node:test";
import assert from "node:assert/strict";

import { waitFor } from "../local/pipeline.mjs";
import { apiError, apiStatus, bindings, keys, logEvents, outcome, status, tagError } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { chunkedStream } from "../local/util.mjs";
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
  return { record, bytes, lines: await p.outcomesOf(message.imageId, { until: last }) };
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
  // Production KV's worst case: the read below comes well within it even on a loaded machine.
  const LAG = 60_000;
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

// ---------------------------------------------------------------------------------------
// D1, R2's multipart calls and the pacer: each fault the README says the pipeline survives.

const CLAIM = /^UPDATE images SET lease_until/;
const MARK_DONE = /^UPDATE images\s+SET status = 'done'/;

test("D1 down for the tagger's first claims: the message is retried and the image ends done, with one AI call", async () => {
  await withPipeline({ vars: QUICK_RETRIES, faults: [bindings.db] }, async (p) => {
    const d1 = p.faults[bindings.db];
    const bytes = png(300);
    const message = await storedMessage(p, bytes);
    d1.fail({ worker: "tagger", key: CLAIM, times: 2, message: "D1_ERROR: injected: database unavailable" });
    await (await p.queue()).send(message);
    const lines = await p.outcomesOf(message.imageId, { until: outcome.done, timeoutMs: 30_000 });
    assert.deepEqual(
      lines.map((o) => [o.outcome, o.errorCode]),
      [
        [outcome.retry, tagError.storage_unavailable],
        [outcome.retry, tagError.storage_unavailable],
        [outcome.done, undefined],
      ],
    );
    assert.equal(d1.opsMatching({ worker: "tagger", key: CLAIM }).filter((o) => o.failed).length, 2, "both faults were hit");
    assert.equal(p.ai.callsFor(bytes).length, 1, "the model was called once, after D1 answered");
    assert.equal((await p.waitForStatus(message.imageId)).status, status.done);
  });
});

test("D1 failing the write of a result: the answer is lost, the image is tagged again and ends done, once", async () => {
  await withPipeline({ vars: QUICK_RETRIES, faults: [bindings.db] }, async (p) => {
    const d1 = p.faults[bindings.db];
    const bytes = png(300);
    const message = await storedMessage(p, bytes);
    d1.fail({ worker: "tagger", op: "batch", key: MARK_DONE, times: 1, message: "D1_ERROR: injected: write failed" });
    await (await p.queue()).send(message);
    const lines = await p.outcomesOf(message.imageId, { until: outcome.done, timeoutMs: 30_000 });
    assert.deepEqual(lines.map((o) => o.outcome), [outcome.retry, outcome.done], JSON.stringify(lines));
    assert.equal(lines[0].errorCode, tagError.storage_unavailable);
    // The first answer never reached D1, so the retry asked again: two calls, one result.
    assert.equal(p.ai.callsFor(bytes).length, 2);
    const view = await p.waitForStatus(message.imageId);
    assert.equal(view.status, status.done);
    assert.equal((await p.record(message.imageId))?.status, status.done, "KV has it too");
  });
});

test("slow D1 only delays: every tagger statement 300 ms late, the image is done on its first delivery", async () => {
  await withPipeline({ faults: [bindings.db] }, async (p) => {
    const d1 = p.faults[bindings.db];
    d1.slow({ worker: "tagger", ms: 300 });
    const message = await storedMessage(p);
    await (await p.queue()).send(message);
    const lines = await p.outcomesOf(message.imageId, { until: outcome.done, timeoutMs: 30_000 });
    assert.deepEqual(lines.map((o) => [o.outcome, o.attempt]), [[outcome.done, 1]]);
    assert.ok(lines[0].durationMs >= 300, `the delay shows in the duration: ${lines[0].durationMs} ms`);
  });
});

test("D1 refusing the upload's insert: 503, no object left behind, nothing queued; the next upload works", async () => {
  await withPipeline({ faults: [bindings.db] }, async (p) => {
    const d1 = p.faults[bindings.db];
    d1.fail({ worker: "upload", key: /^INSERT INTO images/, times: 1, message: "D1_ERROR: injected: database unavailable" });
    const before = await bucketKeys(p);
    const res = await p.fetch("/images", { method: "POST", body: png(2048), headers: { "content-type": "image/png" } });
    const body = await res.json();
    assert.equal(res.status, apiStatus(apiError.unavailable), JSON.stringify(body));
    assert.equal(body.error.code, apiError.unavailable);
    assert.equal(d1.opsMatching({ worker: "upload" }).filter((o) => o.failed).length, 1, "the fault was hit");
    assert.deepEqual(await bucketKeys(p), before, "no object left behind");
    await p.barrier();
    assert.deepEqual(p.outcomes(), [], "nothing was queued");
    const id = await upload(p, png(512));
    assert.equal((await p.waitForStatus(id)).status, status.done);
  });
});

test("R2 multipart: a failed part answers 503, the upload is aborted and nothing is stored; a retry stores it", async () => {
  await withPipeline({ faults: [bindings.imageBucket] }, async (p) => {
    const r2 = p.faults[bindings.imageBucket];
    r2.fail({ op: "uploadPart", worker: "upload", times: 1, message: "injected: R2 part upload failed" });
    const before = await bucketKeys(p);
    // Without Content-Length and over one part (5 MiB): a multipart upload.
    const bytes = png(6 * 1024 * 1024);
    const send = () =>
      p.fetch("/images", { method: "POST", body: chunkedStream(bytes), duplex: "half", headers: { "content-type": "image/png" } });
    const res = await send();
    const body = await res.json();
    assert.equal(res.status, apiStatus(apiError.unavailable), JSON.stringify(body));
    assert.equal(body.error.code, apiError.unavailable);
    const created = r2.opsMatching({ op: "createMultipartUpload", worker: "upload" });
    assert.equal(created.length, 1, "a multipart upload was begun");
    await waitFor(() => r2.opsMatching({ op: "abortMultipartUpload", key: created[0].key }).length === 1, {
      what: "the multipart upload to be aborted",
    });
    assert.deepEqual(r2.opsMatching({ op: "completeMultipartUpload" }), [], "never completed");
    assert.deepEqual(await bucketKeys(p), before, "nothing stored");

    const again = await send();
    assert.equal(again.status, 202, await again.clone().text());
    const { imageId } = await again.json();
    assert.equal(r2.opsMatching({ op: "completeMultipartUpload" }).length, 1, "completed this time");
    assert.equal(r2.opsMatching({ op: "uploadPart", worker: "upload" }).filter((o) => !o.failed).length, 2, "two parts");
    assert.equal((await p.waitForStatus(imageId, undefined, { timeoutMs: 30_000 })).status, status.done);
  });
});

test("the pacer unavailable: the tagger logs it and calls without it; every image ends done, none lost", async () => {
  await withPipeline({ pacerDown: true }, async (p) => {
    const images = Array.from({ length: 4 }, () => png(300));
    const ids = [];
    for (const bytes of images) ids.push(await upload(p, bytes));
    for (const id of ids) {
      const lines = await p.outcomesOf(id, { until: outcome.done, timeoutMs: 30_000 });
      assert.equal(lines.at(-1).attempt, lines.length, JSON.stringify(lines));
    }
    for (const bytes of images) assert.equal(p.ai.callsFor(bytes).length, 1, "one AI call each");
    await p.waitForLine((l) => l.includes(`"event":"${logEvents.pacerUnavailable}"`), { what: "the tagger's warning" });
    for (const id of ids) assert.equal((await p.waitForStatus(id)).status, status.done);
  });
});
