// Failures of the platform around the workers, injected through the bindings (the
// launcher's `faults` option wraps a binding; `p.faults[name]` controls it): transient R2
// and KV errors in the tagger, a queue that refuses the upload worker's message, slow R2,
// and KV that is eventually consistent the way production KV is.

import { test } from "node:test";
import assert from "node:assert/strict";

import { waitFor } from "../local/pipeline.mjs";
import { apiError, apiStatus, bindings, keys, outcome, status, tagError } from "../local/contract.mjs";
import { png } from "./support/images.mjs";
import { bucketKeys, storedMessage, upload, withPipeline } from "./support/helpers.mjs";

const QUICK_RETRIES = { tagger: { RETRY_BASE_SECONDS: "1" } };

/** Sends a stored image's message after `arm(message)` set up faults; resolves when it ends. */
async function tagWith(p, arm) {
  const bytes = png(300);
  const message = await storedMessage(p, bytes);
  arm(message);
  await (await p.queue()).send(message);
  const record = await p.waitForStatus(message.imageId, undefined, { timeoutMs: 20_000 });
  await p.waitForOutcome({ imageId: message.imageId, outcome: record.status === status.done ? outcome.done : outcome.failed });
  return { record, bytes, lines: p.outcomes().filter((o) => o.imageId === message.imageId) };
}

/** The injected storage error cost one retry, then the second delivery tagged the image. */
function retriedThenDone({ record, lines }) {
  assert.equal(record.status, status.done, JSON.stringify(record));
  assert.deepEqual(
    lines.map((o) => [o.outcome, o.attempt, o.errorCode]),
    [
      [outcome.retry, 1, tagError.storage_unavailable],
      [outcome.done, 2, undefined],
    ],
  );
}

test("a transient R2 error in the tagger is retried, and a slow R2 read only delays", async () => {
  await withPipeline({ vars: QUICK_RETRIES, faults: [bindings.imageBucket] }, async (p) => {
    const r2 = p.faults[bindings.imageBucket];
    const failing = await tagWith(p, (m) => r2.fail({ op: "get", worker: "tagger", key: m.r2Key, times: 1 }));
    retriedThenDone(failing);
    assert.equal(p.ai.callsFor(failing.bytes).length, 1, "the model was called once, after R2 answered");
    assert.equal(r2.opsMatching({ op: "get", worker: "tagger" }).filter((o) => o.failed).length, 1);

    const slow = await tagWith(p, (m) => r2.slow({ op: "get", worker: "tagger", key: m.r2Key, ms: 600, times: 1 }));
    assert.deepEqual(slow.lines.map((o) => [o.outcome, o.attempt]), [[outcome.done, 1]]);
    assert.ok(slow.lines[0].durationMs >= 550, `the slow read shows in the duration: ${slow.lines[0].durationMs} ms`);
  });
});

test("transient KV errors in the tagger are retried: a failed read, and a failed record write", async () => {
  await withPipeline({ vars: QUICK_RETRIES, faults: [bindings.resultsKv] }, async (p) => {
    const kv = p.faults[bindings.resultsKv];
    const read = await tagWith(p, (m) => kv.fail({ op: "get", worker: "tagger", key: keys.record(m.imageId), times: 1 }));
    retriedThenDone(read);
    assert.equal(p.ai.callsFor(read.bytes).length, 1, "the failed read came before the model");

    const write = await tagWith(p, (m) => kv.fail({ op: "put", worker: "tagger", key: keys.record(m.imageId), times: 1 }));
    retriedThenDone(write);
    assert.equal(p.ai.callsFor(write.bytes).length, 2, "the record was lost, so the retry classified again");
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

test("with eventually consistent KV a client sees queued for a while after the image is done", async () => {
  const LAG = 2000;
  await withPipeline({ faults: [bindings.resultsKv] }, async (p) => {
    const kv = p.faults[bindings.resultsKv];
    kv.stale({ lagMs: LAG });
    const id = await upload(p, png(512));
    // The record is in KV (read around the wrapper)...
    await waitFor(async () => (await p.record(id))?.status === status.done, { what: "the record in KV" });
    const written = kv.opsMatching({ op: "put", worker: "tagger", key: keys.record(id) })[0];
    assert.ok(written, "the tagger wrote the record through the wrapped KV");
    // ...but a client reading through the binding within the lag still sees the old state.
    const early = await (await p.fetch(`/images/${id}`)).json();
    const earlyAt = Date.now() - written.at;
    if (earlyAt < LAG - 300) assert.equal(early.status, status.queued, `read ${earlyAt} ms after the write`);
    await p.waitForStatus(id, [status.done], { intervalMs: 50, timeoutMs: 20_000 });
    const visibleAfter = Date.now() - written.at;
    console.log(`stale KV: read as ${early.status} ${earlyAt} ms after the write, done after ${visibleAfter} ms (lag ${LAG} ms)`);
    assert.ok(visibleAfter >= LAG - 100, `done became visible ${visibleAfter} ms after the write`);
  });
});
