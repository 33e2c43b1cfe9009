// Tagger reliability: retries with growing backoff, the dead letter queue and redriving,
// permanent failures, poison messages, duplicates, a load test with a planned flaky model,
// and the concurrency of a batch.
//
// Queue settings (batch size, retries, dead letter queue) are the ones in
// wrangler.tagger.toml; tests only shorten the batch timeout and, where they wait for
// retries, RETRY_BASE_SECONDS. Every wait is bounded; "nothing else happened" is proved with
// a queue barrier (p.barrier), never with a sleep.

import { test } from "node:test";
import assert from "node:assert/strict";

import { workerOptions, waitFor } from "../local/pipeline.mjs";
import { LABELS, aiError, aiErrorCode, answer, imageKey } from "../local/ai-stub.mjs";
import {
  imageMessage,
  keys,
  sql,
  outcome,
  queues,
  status,
  tagError,
} from "../local/contract.mjs";
import { mulberry32 } from "../local/util.mjs";
import { png } from "../local/images.mjs";
import { recordImage, storedMessage, upload, withPipeline } from "./support/helpers.mjs";

const CONSUMER = workerOptions("tagger").queueConsumers[queues.images];
const MAX_RETRIES = CONSUMER.maxRetries;
/** Retries after 1 s, 2-4 s, 4-8 s... instead of the configured base, to keep tests short. */
const QUICK_RETRIES = { tagger: { RETRY_BASE_SECONDS: "1" } };
// Documented Workers AI answers (local/workers-ai-errors.json): busy (retry later) and input
// the model cannot use.
const BUSY = ["Out of capacity", "Timeout", "Aborted"].map(aiErrorCode);
const INVALID = aiErrorCode("Invalid data");
const busy = (i = 0) => aiError(BUSY[i % BUSY.length]);

/** The tagger's outcome lines about one image, in log order. */
const outcomesFor = (p, imageId) => p.outcomes().filter((o) => o.imageId === imageId);

/** The image's outcome lines once one of them matches `match`. */
async function linesUntil(p, imageId, match) {
  await p.waitForOutcome({ imageId, ...match });
  return outcomesFor(p, imageId);
}

// 1 ──────────────────────────────────────────────────────────────────────────────────────────
test("a busy AI defers the image, fleet-wide and for longer each time, until it answers", async () => {
  await withPipeline({ vars: QUICK_RETRIES }, async (p) => {
    const image = png(512);
    p.ai.script(image, busy(0), busy(1), answer());
    const imageId = await upload(p, image);

    const done = await p.waitForStatus(imageId, undefined, { timeoutMs: 25_000 });
    assert.equal(done.status, status.done, JSON.stringify(done));
    assert.equal(done.attempts, 3, "the record says which delivery tagged it");
    assert.deepEqual(done.labels, LABELS);

    const calls = p.ai.callsFor(image);
    assert.equal(calls.length, 3, "one AI call per delivery");
    const gap1 = calls[1].at - calls[0].at;
    const gap2 = calls[2].at - calls[1].at;

    const lines = await linesUntil(p, imageId, { outcome: outcome.done });
    assert.deepEqual(
      lines.map((o) => [o.outcome, o.attempt, o.errorCode]),
      [
        [outcome.deferred, 1, tagError.ai_busy],
        [outcome.deferred, 2, tagError.ai_busy],
        [outcome.done, 3, undefined],
      ],
    );
    const [d1, d2] = lines.slice(0, 2).map((o) => o.delaySeconds);
    // The pacer's back-off after a refusal: 1 s, then 2 s, and a slot just after it.
    console.log(`busy: deferred ${d1} s, then ${d2} s; gaps between AI calls ${gap1} ms, ${gap2} ms`);
    assert.ok(d2 > d1, `the wait grows: ${d1} s then ${d2} s`);
    // The queue honoured the delays, so the gaps between calls grow too.
    assert.ok(gap1 >= d1 * 1000 - 50, `gap1 ${gap1} ms >= delay ${d1} s`);
    assert.ok(gap2 >= d2 * 1000 - 50, `gap2 ${gap2} ms >= delay ${d2} s`);
  });
});

// 2 ──────────────────────────────────────────────────────────────────────────────────────────
test("an outage longer than the queue's retries fails nothing: the message is sent anew, and the image is tagged once the AI is back", async () => {
  const retries = 2;
  await withPipeline(
    {
      vars: { tagger: { RETRY_BASE_SECONDS: "1", MAX_RETRIES: String(retries), AI_COOLDOWN_MAX_SECONDS: "1" } },
      queues: { "*": { maxBatchTimeout: 1 }, [queues.images]: { maxBatchTimeout: 1, maxRetries: retries } },
    },
    async (p) => {
      p.ai.outage(10 * 60_000); // Workers AI refuses everything until we end it
      const image = png(512);
      const imageId = await upload(p, image);

      // Past the queue's retries, the message comes back as a new one (attempt 1 again).
      const resent = await p.waitForOutcome({ imageId, outcome: outcome.resent }, { timeoutMs: 30_000 });
      assert.equal(resent.attempt, retries + 1, "sent anew on the last delivery");
      await p.waitForOutcome((o) => o.imageId === imageId && o.attempt === 1 && o.messageId !== resent.messageId, {
        timeoutMs: 20_000,
      });
      const queued = await (await p.fetch(`/images/${imageId}`)).json();
      assert.equal(queued.status, status.queued, "a busy AI never fails an image");
      assert.ok(Date.parse(queued.nextAttemptAt) > Date.parse(queued.uploadedAt), JSON.stringify(queued));

      p.ai.endOutages();
      const done = await p.waitForStatus(imageId, [status.done], { timeoutMs: 20_000 });
      assert.deepEqual(done.labels, LABELS);
      const lines = await p.outcomesOf(imageId, { until: outcome.done });
      assert.ok(!lines.some((o) => o.queue === queues.imagesDeadLetter), "nothing reached the dead letter queue");
      assert.ok(!lines.some((o) => o.outcome === outcome.failed || o.outcome === outcome.retry), JSON.stringify(lines));
    },
  );
});

test("a failed image is redriven by sending its message again, rebuilt from its record", async () => {
  await withPipeline({ vars: QUICK_RETRIES }, async (p) => {
    const image = png(512);
    p.ai.script(image, aiError(INVALID), answer());
    const imageId = await upload(p, image);
    const failed = await p.waitForStatus(imageId);
    assert.equal(failed.status, status.failed, JSON.stringify(failed));

    // README, "Redriving failed images": the message from the record's fields.
    const message = imageMessage({
      imageId: failed.imageId,
      contentType: failed.contentType,
      size: failed.size,
      uploadedAt: failed.uploadedAt,
    });
    await (await p.queue()).send(message);
    const done = await p.waitForStatus(imageId, [status.done], { timeoutMs: 20_000 });
    assert.deepEqual(done.labels, LABELS);
    assert.equal(done.error, undefined, "the old error is gone");
    assert.equal(p.ai.callsFor(image).length, 2, "one more call, for the redrive");
    // KV is written after D1 (which the status may come from), and the done line after both.
    await p.outcomesOf(imageId, { until: outcome.done });
    assert.equal((await p.record(imageId)).status, status.done, "the failed record was replaced in KV too");
  });
});

// 3 ──────────────────────────────────────────────────────────────────────────────────────────
test("an image the model rejects fails at once as invalid_image", async () => {
  await withPipeline({ vars: QUICK_RETRIES }, async (p) => {
    const image = png(512);
    p.ai.script(image, aiError(INVALID), answer());
    const imageId = await upload(p, image);

    const failed = await p.waitForStatus(imageId);
    assert.equal(failed.status, status.failed, JSON.stringify(failed));
    assert.equal(failed.error?.code, tagError.invalid_image);
    // The binding's error message goes to the log only; the record has the code's fixed text.
    assert.ok(!failed.error.message.includes(aiError(INVALID).error.message), failed.error.message);
    assert.equal(failed.attempts, 1);

    await linesUntil(p, imageId, { outcome: outcome.failed });
    // A retry of attempt 1 would come within 2 s: the barrier waits longer than that.
    await p.barrier({ delaySeconds: 2 });
    assert.deepEqual(
      outcomesFor(p, imageId).map((o) => [o.outcome, o.attempt, o.errorCode]),
      [[outcome.failed, 1, tagError.invalid_image]],
      "exactly one outcome: not retried",
    );
    assert.equal(p.ai.callsFor(image).length, 1, "exactly one AI call");
  });
});

// 4 ──────────────────────────────────────────────────────────────────────────────────────────
test("a message whose R2 object is missing fails as object_missing without calling the model", async () => {
  await withPipeline({ vars: QUICK_RETRIES }, async (p) => {
    // Recorded as the upload worker records it, but its bytes never reached R2.
    const message = imageMessage({ size: 128 });
    await recordImage(p, message);
    await (await p.queue()).send(message);

    const failed = await p.waitForStatus(message.imageId);
    assert.equal(failed.status, status.failed, JSON.stringify(failed));
    assert.equal(failed.error?.code, tagError.object_missing);
    assert.equal(failed.attempts, 1);

    await linesUntil(p, message.imageId, { outcome: outcome.failed });
    await p.barrier({ delaySeconds: 2 });
    assert.deepEqual(
      outcomesFor(p, message.imageId).map((o) => [o.outcome, o.attempt, o.errorCode]),
      [[outcome.failed, 1, tagError.object_missing]],
      "exactly one outcome: not retried",
    );
    assert.equal(p.ai.calls.length, 0, "no AI call");
  });
});

// 5 ──────────────────────────────────────────────────────────────────────────────────────────
test("poison messages are kept in KV and acked while good ones in the same batch are tagged", async () => {
  await withPipeline({ vars: QUICK_RETRIES, queues: { "*": { maxBatchTimeout: 1, maxBatchSize: 6 } } }, async (p) => {
    const good = [await storedMessage(p), await storedMessage(p)];
    const other = await storedMessage(p);
    // A message naming an image but carrying another image's key: authority its bytes do not back.
    const forged = { ...good[0], r2Key: other.r2Key };
    // `text`: what the poison record must keep of the body.
    const bad = [
      { send: { body: "not json" }, text: "not json", code: tagError.malformed_message },
      { send: { body: { hello: 1 } }, text: '{"hello":1}', code: tagError.malformed_message },
      { send: { body: forged }, text: JSON.stringify(forged), code: tagError.malformed_message },
      {
        send: { body: new TextEncoder().encode("<binary, not json>"), contentType: "bytes" },
        text: "<binary, not json>",
        code: tagError.malformed_message,
      },
    ];
    // One batch of six: all bad ones, with the good ones between them. The second good one
    // is sent as JSON bytes, which must decode like JSON.
    await (await p.queue()).sendBatch([
      bad[0].send,
      { body: good[0] },
      bad[1].send,
      bad[2].send,
      { body: new TextEncoder().encode(JSON.stringify(good[1])), contentType: "bytes" },
      bad[3].send,
    ]);

    for (const message of good) {
      const done = await p.waitForStatus(message.imageId);
      assert.equal(done.status, status.done, JSON.stringify(done));
    }

    const kv = await p.kv();
    const listed = await waitFor(
      async () => {
        const { keys: found } = await kv.list({ prefix: keys.prefix.poison });
        return found.length >= bad.length && found;
      },
      { what: "a poison record per bad message" },
    );
    assert.equal(listed.length, bad.length, "one poison record per bad message");
    const records = await Promise.all(listed.map(async ({ name }) => [name, JSON.parse(await kv.get(name))]));

    for (const message of good) await linesUntil(p, message.imageId, { outcome: outcome.done });
    const poisonLines = await waitFor(
      () => {
        const lines = p.outcomes().filter((o) => o.outcome === outcome.poison);
        return lines.length >= bad.length && lines;
      },
      { what: "a poison outcome line per bad message" },
    );
    assert.equal(poisonLines.length, bad.length, "one poison outcome per bad message");
    for (const { text, code } of bad) {
      const found = records.find(([, r]) => r.body === text);
      assert.ok(found, `a poison record keeps ${text}`);
      const [key, r] = found;
      assert.equal(r.error.code, code, text);
      assert.equal(key, keys.poison(r.messageId));
      assert.equal(r.queue, queues.images);
      const line = poisonLines.find((o) => o.messageId === r.messageId);
      assert.ok(line, `poison outcome logged for ${text}`);
      assert.equal(line.errorCode, code);
    }
    // Acked, not retried: after a barrier there is still one poison line per bad message.
    await p.barrier({ delaySeconds: 2 });
    assert.equal(p.outcomes().filter((o) => o.outcome === outcome.poison).length, bad.length);
    // The forged message still names its image in the log, and tagged nothing.
    assert.ok(poisonLines.some((o) => o.imageId === forged.imageId));
    assert.equal((await (await p.fetch(`/images/${other.imageId}`)).json()).status, status.queued, "nor the other image");
    // No bad message was retried or tagged.
    assert.ok(!p.outcomes().some((o) => o.outcome === outcome.retry), "nothing retried");
    assert.equal(p.ai.calls.length, good.length, "only the good images reached the model");
  });
});

test("a message of a newer schema (99) is retried, never tagged, and after the queue's retries its image fails as unsupported_schema_version", async () => {
  const retries = 2;
  await withPipeline(
    {
      vars: { tagger: { RETRY_BASE_SECONDS: "1", MAX_RETRIES: String(retries) } },
      queues: { "*": { maxBatchTimeout: 1 }, [queues.images]: { maxBatchTimeout: 1, maxRetries: retries } },
    },
    async (p) => {
      const message = await storedMessage(p);
      await (await p.queue()).send({ ...message, schemaVersion: 99 });
      const failed = await p.waitForStatus(message.imageId, undefined, { timeoutMs: 30_000 });
      assert.equal(failed.status, status.failed, JSON.stringify(failed));
      assert.equal(failed.error.code, tagError.unsupported_schema_version);
      const lines = await linesUntil(p, message.imageId, { queue: queues.imagesDeadLetter });
      assert.deepEqual(
        lines.map((o) => [o.queue, o.outcome, o.errorCode]),
        [
          ...Array.from({ length: retries + 1 }, () => [queues.images, outcome.retry, tagError.newer_schema_version]),
          [queues.imagesDeadLetter, outcome.failed, tagError.unsupported_schema_version],
        ],
        "retried while a newer tagger may be on its way, then failed by the dead letter consumer",
      );
      assert.equal(p.ai.calls.length, 0, "never tagged by this build");
    },
  );
});

// 6 ──────────────────────────────────────────────────────────────────────────────────────────
test("duplicates in a batch and a redelivery after done cost one AI call", async () => {
  await withPipeline({}, async (p) => {
    const bytes = png(256);
    const message = await storedMessage(p, bytes);
    const queue = await p.queue();
    await queue.sendBatch([{ body: message }, { body: message }]);

    const done = await p.waitForStatus(message.imageId);
    assert.equal(done.status, status.done, JSON.stringify(done));
    await waitFor(() => outcomesFor(p, message.imageId).length >= 2, { what: "both first-batch outcomes" });
    assert.deepEqual(outcomesFor(p, message.imageId).map((o) => o.outcome).sort(), [outcome.done, outcome.duplicate].sort());

    await queue.send(message);
    await p.waitForOutcome({ imageId: message.imageId, outcome: outcome.skipped });
    await p.barrier();
    const outcomes = outcomesFor(p, message.imageId).map((o) => o.outcome);
    assert.deepEqual(outcomes.sort(), [outcome.done, outcome.duplicate, outcome.skipped].sort());
    assert.equal(p.ai.callsFor(bytes).length, 1, "exactly one AI call for the image");
    assert.deepEqual(await p.record(message.imageId), done, "the skip did not rewrite the record");
  });
});

// 7 ──────────────────────────────────────────────────────────────────────────────────────────
test("a dead letter for an image that is already done is skipped", async () => {
  await withPipeline({}, async (p) => {
    const bytes = png(256);
    const message = await storedMessage(p, bytes);
    await (await p.queue()).send(message);
    const done = await p.waitForStatus(message.imageId);
    assert.equal(done.status, status.done, JSON.stringify(done));

    // As if a late retry of the image had run out on the main queue.
    await (await p.queue(queues.imagesDeadLetter)).send(message);
    const skipped = await p.waitForOutcome({ imageId: message.imageId, queue: queues.imagesDeadLetter });
    assert.equal(skipped.outcome, outcome.skipped, JSON.stringify(skipped));
    await p.barrier({ queue: queues.imagesDeadLetter });
    assert.deepEqual(await p.record(message.imageId), done, "the record is unchanged");
    assert.equal(p.ai.callsFor(bytes).length, 1, "no further AI call");
    assert.equal(outcomesFor(p, message.imageId).length, 2, "one line per delivery");
  });
});

// 8 ──────────────────────────────────────────────────────────────────────────────────────────
/** Runs `fn` over `items`, at most `limit` at a time. */
async function eachLimited(items, limit, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const i = next++;
        await fn(items[i], i);
      }
    }),
  );
}

/**
 * A seeded plan of model answers for one image: up to `maxRun` busy answers, then an answer
 * or a rejection. What must come of it follows from the plan alone: `calls` AI calls, then
 * done, or failed as invalid_image.
 */
function planFor(random, maxRun) {
  const r = random();
  const retryable = Math.min(maxRun, r < 0.5 ? 0 : r < 0.75 ? 1 : r < 0.9 ? 2 : 3);
  const rejected = random() < 0.1;
  const steps = [
    ...Array.from({ length: retryable }, (_, i) => busy(i)),
    rejected ? aiError(INVALID) : answer(),
  ];
  return {
    steps,
    retries: retryable,
    calls: steps.length,
    status: rejected ? status.failed : status.done,
    errorCode: rejected ? tagError.invalid_image : undefined,
  };
}

test("load: 120 uploads against a planned flaky model end exactly as planned, none lost or tagged twice", async () => {
  const COUNT = 120;
  const SEED = 20261128;
  // Runs of busy answers stay within the configured retries, so every plan ends in its last
  // answer whatever the retry policy does on top.
  const MAX_RUN = Math.min(3, MAX_RETRIES);
  // A short fleet-wide back-off after each refusal keeps the run short; it is not under test.
  await withPipeline({ vars: { tagger: { RETRY_BASE_SECONDS: "1", AI_COOLDOWN_MAX_SECONDS: "1" } } }, async (p) => {
    const random = mulberry32(SEED);
    const images = Array.from({ length: COUNT }, () => png(200));
    assert.equal(new Set(images.map(imageKey)).size, COUNT, "images are unique");
    const plans = images.map(() => planFor(random, MAX_RUN));
    images.forEach((bytes, i) => p.ai.script(bytes, ...plans[i].steps));

    const started = Date.now();
    const ids = new Array(COUNT);
    await eachLimited(images, 8, async (bytes, i) => {
      ids[i] = await upload(p, bytes);
    });

    // Every image reaches its planned end (a done or failed outcome line).
    const ended = (id) => outcomesFor(p, id).some((o) => o.outcome === outcome.done || o.outcome === outcome.failed);
    const pending = () => ids.filter((id) => !ended(id));
    // Nearly half the calls are refused, far more than a real AI would refuse, and refusals in
    // a clump cost the fleet a back-off (1 s here) and stop the rest of their batch: allow
    // 60 s plus 1.5 s for each planned refusal.
    const refusals = plans.reduce((n, plan) => n + plan.retries, 0);
    const timeoutMs = 60_000 + 1500 * refusals;
    await waitFor(() => pending().length === 0, { timeoutMs, intervalMs: 250, what: "every image to end" }).catch((e) => {
      const sample = pending().slice(0, 3).map((id) => `${id}: ${JSON.stringify(outcomesFor(p, id).map((o) => [o.outcome, o.errorCode, o.delaySeconds]))}`);
      throw new Error(`${e.message}; still pending: ${pending().length} of ${COUNT}; e.g. ${sample.join("; ")}`);
    });
    const seconds = (Date.now() - started) / 1000;
    // Nothing more is on its way: a redelivery of anything would have been logged by now.
    await p.barrier({ delaySeconds: 2 });

    const statuses = new Array(COUNT);
    await eachLimited(ids, 8, async (id, i) => {
      statuses[i] = await (await p.fetch(`/images/${id}`)).json();
    });
    const problems = [];
    plans.forEach((plan, i) => {
      const id = ids[i];
      const s = statuses[i];
      const lines = outcomesFor(p, id);
      const calls = p.ai.callsFor(images[i]).length;
      const want = `${plan.status}${plan.errorCode ? `/${plan.errorCode}` : ""} after ${plan.calls} calls`;
      const got = `${s.status}${s.error ? `/${s.error.code}` : ""} after ${calls} calls`;
      if (want !== got) problems.push(`${id}: planned ${want}, got ${got}`);
      // A busy answer defers the image; so can the pacer, or another image's busy answer in
      // the same batch (no call is made then). Every delivery but the last is a deferral.
      const last = plan.status === status.done ? outcome.done : outcome.failed;
      const gotLines = lines.map((o) => o.outcome);
      const deferrals = gotLines.slice(0, -1);
      const later = [outcome.deferred, outcome.resent];
      if (gotLines.at(-1) !== last || deferrals.some((o) => !later.includes(o)) || deferrals.length < plan.retries) {
        problems.push(`${id}: outcome lines ${gotLines.join(",")}, planned ${plan.retries} deferrals then ${last}`);
      }
      if (s.attempts < plan.calls) problems.push(`${id}: record says ${s.attempts} attempts, planned ${plan.calls} calls`);
    });
    assert.deepEqual(problems, [], "every image ends as planned, with one line per delivery");

    // Totals: none lost, none tagged twice, not one AI call more or less than planned.
    const sum = (f) => plans.reduce((n, plan) => n + f(plan), 0);
    const byStatus = (st) => statuses.filter((r) => r.status === st).length;
    assert.equal(byStatus(status.queued), 0, "none left queued");
    assert.equal(byStatus(status.done), sum((plan) => (plan.status === status.done ? 1 : 0)));
    assert.equal(byStatus(status.failed), sum((plan) => (plan.status === status.failed ? 1 : 0)));
    assert.equal(p.ai.calls.length, sum((plan) => plan.calls), "AI calls, in total");
    const count = (o) => p.outcomes().filter((line) => line.outcome === o).length;
    assert.equal(count(outcome.done), byStatus(status.done), "each image tagged once");
    assert.equal(count(outcome.failed), byStatus(status.failed), "each failure recorded once");
    assert.ok(count(outcome.deferred) + count(outcome.resent) >= sum((plan) => plan.retries), "at least one deferral per busy answer");
    assert.equal(count(outcome.retry), 0, "no transient errors were injected");
    // D1 (the system of record) and KV (the fast read path) agree on every image.
    const db = await p.db();
    const disagree = [];
    await eachLimited(ids, 8, async (id) => {
      const row = await db.prepare(sql.selectImage).bind(id).first();
      const kv = await p.record(id);
      if (row.status !== kv?.status || JSON.stringify(JSON.parse(row.tags ?? "[]")) !== JSON.stringify(kv?.tags ?? [])) {
        disagree.push(`${id}: D1 ${row.status} ${row.tags}, KV ${kv?.status} ${JSON.stringify(kv?.tags)}`);
      }
    });
    assert.deepEqual(disagree, [], "D1 and KV agree");
    // Images whose first answer was a success cost exactly one call.
    const firstTry = plans.filter((plan) => plan.calls === 1 && plan.status === status.done).length;
    console.log(
      `load: ${COUNT} images, done=${byStatus(status.done)} failed=${byStatus(status.failed)} ` +
        `first-try=${firstTry} refusals=${refusals} deferrals=${count(outcome.deferred)} resent=${count(outcome.resent)} ` +
        `ai_calls=${p.ai.calls.length} seconds=${seconds.toFixed(1)}`,
    );
  });
});

// 9 ──────────────────────────────────────────────────────────────────────────────────────────
/**
 * Sends `n` stored images as one batch with every AI call held, waits until `inFlight` calls
 * are held at once (a bound: it fails if they never are), then releases them; resolves once
 * all are done. How many run at once is read from the stub, never from timings.
 */
async function heldBatch(p, n, inFlight) {
  p.ai.hold();
  const messages = [];
  try {
    for (let i = 0; i < n; i++) messages.push(await storedMessage(p, png(256)));
    await (await p.queue()).sendBatch(messages.map((body) => ({ body })));
    await waitFor(() => p.ai.stats.inFlight >= inFlight, { what: `${inFlight} AI calls in flight at once` });
  } finally {
    p.ai.release();
  }
  for (const m of messages) {
    const lines = await p.outcomesOf(m.imageId, { until: outcome.done });
    assert.deepEqual(lines.map((o) => [o.outcome, o.attempt]), [[outcome.done, 1]]);
  }
  assert.equal(p.ai.calls.length, n);
  return p.ai.calls;
}

test("a batch's messages are classified concurrently", async () => {
  const N = CONSUMER.maxBatchSize;
  await withPipeline({ vars: { tagger: { CONCURRENCY: String(N) } } }, async (p) => {
    // All N calls of the batch are held unanswered at the same moment.
    await heldBatch(p, N, N);
    assert.equal(p.ai.stats.maxInFlight, N, `all ${N} calls of the batch overlapped`);
  });
});

test("CONCURRENCY bounds the calls in flight: 2 at a time for a batch of 5", async () => {
  const N = 5;
  assert.ok(N <= CONSUMER.maxBatchSize, "one batch");
  await withPipeline({ vars: { tagger: { CONCURRENCY: "2" } } }, async (p) => {
    // Two calls are held at once; the third cannot start until one of them is answered.
    await heldBatch(p, N, 2);
    console.log(`CONCURRENCY=2: at most ${p.ai.stats.maxInFlight} of ${N} calls at once`);
    assert.equal(p.ai.stats.maxInFlight, 2, "never more than 2 in flight");
  });
});
