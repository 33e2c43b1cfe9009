// Two tagger invocations at once, as production runs them (max_concurrency 10): the launcher's
// second tagger (`secondTagger`) is the same bundle on a second queue, sharing D1, R2, KV and
// the AiPacer Durable Object. Miniflare runs one batch at a time per queue, so the two queues
// are what makes two batches overlap for real. Overlap is shown by holding the AI's answers
// until both invocations have a call in flight, never by timing; the rate is checked with
// counts and a margin.

import { test } from "node:test";
import assert from "node:assert/strict";

import { SECOND_QUEUE, waitFor } from "../local/pipeline.mjs";
import { outcome, status, tagError } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { storedMessage, withPipeline } from "./support/helpers.mjs";

test("lease contention: two deliveries of one image in two invocations at once make one AI call", async () => {
  await withPipeline({ secondTagger: true, vars: { tagger: { LEASE_SECONDS: "5" } } }, async (p) => {
    const bytes = png(300);
    const message = await storedMessage(p, bytes);
    p.ai.hold();
    try {
      // The first invocation claims the image and calls the model (held)...
      await (await p.queue()).send(message);
      await waitFor(() => p.ai.callsFor(bytes).length === 1, { what: "the first delivery's AI call" });
      // ...while the second invocation gets the same image from its own queue.
      await (await p.queue(SECOND_QUEUE)).send(message);
      const deferred = await p.waitForOutcome({ imageId: message.imageId, outcome: outcome.deferred });
      assert.equal(deferred.errorCode, tagError.leased, "the second delivery found the lease");
      assert.equal(p.ai.callsFor(bytes).length, 1, "and made no call while the first one's was in flight");
    } finally {
      p.ai.release();
    }
    // The first ends done; the second comes back after the lease and finds it done.
    const lines = await p.outcomesOf(message.imageId, { until: outcome.skipped, timeoutMs: 30_000 });
    assert.deepEqual(lines.map((o) => o.outcome).sort(), [outcome.deferred, outcome.done, outcome.skipped].sort());
    assert.equal(p.ai.callsFor(bytes).length, 1, "one AI call in all");
    assert.equal((await p.waitForStatus(message.imageId)).status, status.done);
  });
});

test("lease contention at scale: 20 images each delivered to both invocations at once, one AI call each", async () => {
  await withPipeline({ secondTagger: true, vars: { tagger: { LEASE_SECONDS: "5" } } }, async (p) => {
    const images = Array.from({ length: 20 }, () => png(256));
    const messages = [];
    for (const bytes of images) messages.push(await storedMessage(p, bytes));
    const batch = messages.map((body) => ({ body }));
    const [first, second] = [await p.queue(), await p.queue(SECOND_QUEUE)];
    await Promise.all([first.sendBatch(batch), second.sendBatch(batch)]);
    for (const m of messages) {
      const view = await p.waitForStatus(m.imageId, undefined, { timeoutMs: 60_000 });
      assert.equal(view.status, status.done, JSON.stringify(view));
    }
    // Every delivery ends (done, or skipped once the other was done) and nothing else is pending.
    for (const m of messages) {
      await waitFor(
        () => p.outcomes().filter((o) => o.imageId === m.imageId && [outcome.done, outcome.skipped].includes(o.outcome)).length === 2,
        { timeoutMs: 30_000, what: `both deliveries of ${m.imageId} to end` },
      );
    }
    await p.barrier();
    await p.barrier({ queue: SECOND_QUEUE });
    images.forEach((bytes, i) => assert.equal(p.ai.callsFor(bytes).length, 1, `image ${i}: one AI call`));
    const done = p.outcomes().filter((o) => o.outcome === outcome.done).length;
    assert.equal(done, images.length, "each image done once");
  });
});

test("pacer contention: two invocations together keep to the configured rate", async () => {
  const RATE = 5;
  const PER_QUEUE = 20;
  await withPipeline({ secondTagger: true, vars: { tagger: { AI_REQUESTS_PER_SECOND: String(RATE) } } }, async (p) => {
    const images = Array.from({ length: 2 * PER_QUEUE }, () => png(256));
    const messages = [];
    for (const bytes of images) messages.push(await storedMessage(p, bytes));
    const ofFirst = new Set(images.slice(0, PER_QUEUE));
    // Hold the first answers until both invocations have a call in flight: the two batches
    // overlap for certain, and each has asked the shared pacer for its slots.
    p.ai.hold();
    try {
      await Promise.all([
        (await p.queue()).sendBatch(messages.slice(0, PER_QUEUE).map((body) => ({ body }))),
        (await p.queue(SECOND_QUEUE)).sendBatch(messages.slice(PER_QUEUE).map((body) => ({ body }))),
      ]);
      const byQueue = () => {
        const firstCalls = images.filter((b) => ofFirst.has(b) && p.ai.callsFor(b).length > 0).length;
        const secondCalls = images.filter((b) => !ofFirst.has(b) && p.ai.callsFor(b).length > 0).length;
        return firstCalls > 0 && secondCalls > 0;
      };
      await waitFor(byQueue, { timeoutMs: 30_000, what: "a call in flight from each invocation" });
    } finally {
      p.ai.release();
    }
    for (const m of messages) {
      const view = await p.waitForStatus(m.imageId, undefined, { timeoutMs: 90_000, intervalMs: 200 });
      assert.equal(view.status, status.done, JSON.stringify(view));
    }
    images.forEach((bytes, i) => assert.equal(p.ai.callsFor(bytes).length, 1, `image ${i}: one AI call`));
    // The pacer allows RATE calls in any second. A call can start late (a loaded machine)
    // but never before its slot: so the k-th call starts at least (k - RATE) / RATE seconds
    // after the first, less a margin for the first call's own lateness. Two pacers, or none,
    // would let the 40 calls through in about half the time.
    const MARGIN_MS = 2000;
    const starts = p.ai.calls.map((c) => c.at).sort((a, b) => a - b);
    const early = starts
      .map((at, k) => ({ k, after: at - starts[0], floor: ((k - RATE) / RATE) * 1000 - MARGIN_MS }))
      .filter(({ after, floor }) => after < floor);
    const span = (starts.at(-1) - starts[0]) / 1000;
    console.log(`pacer contention: ${starts.length} calls from two invocations over ${span.toFixed(1)} s at ${RATE}/s (bound ${((starts.length - RATE) / RATE).toFixed(1)} s)`);
    assert.deepEqual(early, [], "no call ahead of the shared rate");
  });
});
