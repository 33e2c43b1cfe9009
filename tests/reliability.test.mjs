// Tagger reliability: retries with growing backoff, the dead letter queue, permanent
// failures, poison messages, duplicates, a load test with a flaky model, and concurrency.
//
// Every wait is a bounded poll (`waitFor`); timings are read from the AI stub's call
// timestamps and the tagger's outcome log lines, never from sleeps.

import { test } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { startPipeline, waitFor, waitForStatus, DEAD_LETTER_QUEUE } from "./support/pipeline.mjs";
import { errors, imageKey, LABELS } from "./support/ai-stub.mjs";
import { png } from "./support/images.mjs";

const TERMINAL = ["done", "failed"];

/** Runs `body` against a fresh pipeline, closing it whatever happens. */
async function withPipeline(options, body) {
  const p = await startPipeline(options);
  try {
    return await body(p);
  } finally {
    await p.close();
  }
}

/** POSTs an image; returns its id. */
async function upload(p, bytes) {
  const res = await p.fetch("/images", {
    method: "POST",
    body: bytes,
    headers: { "content-type": "image/png" },
  });
  assert.equal(res.status, 202, `upload answered ${res.status}: ${await res.clone().text()}`);
  return (await res.json()).imageId;
}

/** A valid `ImageMessage` for a fresh image id (no object is stored). */
function imageMessage(bytes = png(128)) {
  const imageId = randomUUID();
  return {
    schemaVersion: 1,
    imageId,
    r2Key: `images/${imageId}.png`,
    contentType: "image/png",
    size: bytes.length,
    uploadedAt: new Date().toISOString(),
  };
}

/** Stores `bytes` in R2 the way the upload worker does and returns the message for them. */
async function storedMessage(p, bytes = png(128)) {
  const message = imageMessage(bytes);
  const bucket = await p.bucket();
  // The proxy only carries plain typed arrays, not Buffers.
  await bucket.put(message.r2Key, new Uint8Array(bytes), {
    httpMetadata: { contentType: "image/png" },
    customMetadata: { uploadedAt: message.uploadedAt },
  });
  return message;
}

/** The tagger's outcome lines about one image, in log order. */
function outcomesFor(p, imageId) {
  return p.outcomes().filter((o) => o.imageId === imageId);
}

/**
 * The image's outcome lines once one says `outcome` (and `queue`, if given). A line is
 * logged just after the record is written, so it can trail what `GET` already shows.
 */
function linesUntil(p, imageId, outcome, queue) {
  return waitFor(
    () => {
      const lines = outcomesFor(p, imageId);
      return lines.some((o) => o.outcome === outcome && (!queue || o.queue === queue)) && lines;
    },
    { what: `a ${outcome} outcome line for ${imageId}` },
  );
}

/**
 * A queue barrier: sends a marker message (for an image with no object, so it fails at once
 * without a model call) delivered after `delaySeconds`, and waits for its outcome. A message
 * retried before the call with a shorter delay (attempt 1 waits 1 s) is redelivered in the
 * marker's batch or earlier, so once this returns its redelivery has been logged: "not
 * retried" can be asserted without sleeping.
 */
async function barrier(p, delaySeconds = 3) {
  const marker = imageMessage();
  await (await p.queue()).send(marker, { delaySeconds });
  await linesUntil(p, marker.imageId, "failed");
}

/** The image's record straight from KV, or null. */
async function record(p, imageId) {
  const kv = await p.kv();
  const text = await kv.get(`tags:${imageId}`);
  return text === null ? null : JSON.parse(text);
}

// 1 ──────────────────────────────────────────────────────────────────────────────────────────
test("a retryable AI failure is retried with growing delays until it succeeds", async () => {
  await withPipeline({ queue: { maxBatchTimeout: 1, maxRetries: 3 } }, async (p) => {
    const image = png(512);
    p.ai.script(image, { error: errors.capacity }, { error: errors.rateLimited }, { labels: LABELS });
    const imageId = await upload(p, image);

    const done = await waitForStatus(p, imageId, TERMINAL, { timeoutMs: 25_000 });
    assert.equal(done.status, "done", JSON.stringify(done));
    assert.equal(done.attempts, 3, "the record says which delivery tagged it");
    assert.deepEqual(done.labels, LABELS);

    const calls = p.ai.callsFor(image);
    assert.equal(calls.length, 3, "one AI call per delivery");
    const gap1 = calls[1].at - calls[0].at;
    const gap2 = calls[2].at - calls[1].at;

    const lines = await linesUntil(p, imageId, "done");
    assert.deepEqual(
      lines.map((o) => [o.outcome, o.attempt, o.errorCode ?? null]),
      [
        ["retry", 1, "ai_capacity"],
        ["retry", 2, "ai_rate_limited"],
        ["done", 3, null],
      ],
    );
    const [d1, d2] = lines.slice(0, 2).map((o) => o.delaySeconds);
    // RETRY_BASE_SECONDS=1: attempt a waits in [2^(a-1), 2^a).
    assert.equal(d1, 1, "first delay");
    assert.ok(d2 >= 2 && d2 < 4, `second delay ${d2} in [2, 4)`);
    console.log(`backoff: delays ${d1} s, ${d2} s; gaps between AI calls ${gap1} ms, ${gap2} ms`);
    assert.ok(d2 > d1, `logged delays grow: ${d1} then ${d2}`);
    // The queue honoured the delays, so the gaps between calls grow too.
    assert.ok(gap1 >= d1 * 1000 - 50, `gap1 ${gap1} ms >= delay ${d1} s`);
    assert.ok(gap2 >= d2 * 1000 - 50, `gap2 ${gap2} ms >= delay ${d2} s`);
    assert.ok(gap2 > gap1, `gaps between AI calls grow: ${gap1} ms then ${gap2} ms`);
  });
});

// 2 ──────────────────────────────────────────────────────────────────────────────────────────
test("a message whose retries run out reaches the DLQ and is recorded as retries_exhausted", async () => {
  const maxRetries = 2;
  await withPipeline(
    { queue: { maxBatchTimeout: 1, maxRetries }, taggerVars: { MAX_RETRIES: String(maxRetries) } },
    async (p) => {
      const image = png(512);
      p.ai.script(image, { error: errors.capacity }, { error: errors.rateLimited });
      const imageId = await upload(p, image);

      const failed = await waitForStatus(p, imageId, TERMINAL, { timeoutMs: 25_000 });
      assert.equal(failed.status, "failed", JSON.stringify(failed));
      assert.equal(failed.error?.code, "retries_exhausted");
      assert.equal(failed.attempts, maxRetries + 1);
      assert.deepEqual(failed.tags, []);
      assert.equal(p.ai.callsFor(image).length, maxRetries + 1, "one call per delivery");

      const lines = await linesUntil(p, imageId, "failed", DEAD_LETTER_QUEUE);
      assert.deepEqual(
        lines.map((o) => [o.queue, o.outcome, o.attempt]),
        [
          ["image-processing-queue", "retry", 1],
          ["image-processing-queue", "retry", 2],
          ["image-processing-queue", "dead_letter", 3],
          [DEAD_LETTER_QUEUE, "failed", 1],
        ],
      );
      assert.equal(lines.at(-1).errorCode, "retries_exhausted");
      // The DLQ consumer does not call the model.
      assert.equal(p.ai.callsFor(image).length, maxRetries + 1);
    },
  );
});

// 3 ──────────────────────────────────────────────────────────────────────────────────────────
test("an image the model rejects fails at once as invalid_image", async () => {
  await withPipeline({ queue: { maxBatchTimeout: 1 } }, async (p) => {
    const image = png(512);
    p.ai.script(image, { error: errors.invalidImage }, { labels: LABELS });
    const imageId = await upload(p, image);

    const failed = await waitForStatus(p, imageId, TERMINAL);
    assert.equal(failed.status, "failed", JSON.stringify(failed));
    assert.equal(failed.error?.code, "invalid_image");
    assert.match(failed.error.message, /5006/);
    assert.equal(failed.attempts, 1);

    await linesUntil(p, imageId, "failed");
    await barrier(p);
    const lines = outcomesFor(p, imageId);
    assert.deepEqual(
      lines.map((o) => [o.outcome, o.attempt, o.errorCode]),
      [["failed", 1, "invalid_image"]],
    );
    assert.ok(!lines.some((o) => o.outcome === "retry"), "no retry");
    assert.equal(p.ai.callsFor(image).length, 1, "exactly one AI call");
  });
});

// 4 ──────────────────────────────────────────────────────────────────────────────────────────
test("a message whose R2 object is missing fails as object_missing without calling the model", async () => {
  await withPipeline({ queue: { maxBatchTimeout: 1 } }, async (p) => {
    const message = imageMessage();
    await (await p.queue()).send(message);

    const failed = await waitForStatus(p, message.imageId, TERMINAL);
    assert.equal(failed.status, "failed", JSON.stringify(failed));
    assert.equal(failed.error?.code, "object_missing");
    assert.equal(failed.r2Key, message.r2Key);
    assert.equal(failed.attempts, 1);

    await linesUntil(p, message.imageId, "failed");
    await barrier(p);
    const lines = outcomesFor(p, message.imageId);
    assert.deepEqual(
      lines.map((o) => [o.outcome, o.attempt, o.errorCode]),
      [["failed", 1, "object_missing"]],
      "exactly one outcome: not retried",
    );
    assert.equal(p.ai.calls.length, 0, "no AI call");
  });
});

// 5 ──────────────────────────────────────────────────────────────────────────────────────────
test("poison messages are kept in KV and acked while good ones in the same batch are tagged", async () => {
  await withPipeline({ queue: { maxBatchTimeout: 1, maxBatchSize: 6 } }, async (p) => {
    const good = [await storedMessage(p), await storedMessage(p)];
    const future = { ...imageMessage(), schemaVersion: 99 };
    // `text`: what the poison record must keep of the body.
    const bad = [
      { send: { body: "not json" }, text: "not json", code: "malformed_message" },
      { send: { body: { hello: 1 } }, text: '{"hello":1}', code: "malformed_message" },
      { send: { body: future }, text: JSON.stringify(future), code: "unsupported_schema_version" },
      {
        send: { body: new TextEncoder().encode("<binary, not json>"), contentType: "bytes" },
        text: "<binary, not json>",
        code: "malformed_message",
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
      const done = await waitForStatus(p, message.imageId, TERMINAL);
      assert.equal(done.status, "done", JSON.stringify(done));
    }

    const kv = await p.kv();
    const keys = await waitFor(
      async () => {
        const { keys } = await kv.list({ prefix: "poison:" });
        return keys.length >= bad.length && keys;
      },
      { what: "a poison record per bad message" },
    );
    assert.equal(keys.length, bad.length, "one poison record per bad message");
    const records = await Promise.all(keys.map(async ({ name }) => [name, JSON.parse(await kv.get(name))]));

    for (const message of good) await linesUntil(p, message.imageId, "done");
    const poisonLines = await waitFor(
      () => {
        const lines = p.outcomes().filter((o) => o.outcome === "poison");
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
      assert.equal(key, `poison:${r.messageId}`);
      assert.equal(r.queue, "image-processing-queue");
      const line = poisonLines.find((o) => o.messageId === r.messageId);
      assert.ok(line, `poison outcome logged for ${text}`);
      assert.equal(line.errorCode, code);
    }
    // Acked, not retried: after a barrier there is still one poison line per bad message.
    await barrier(p);
    assert.equal(p.outcomes().filter((o) => o.outcome === "poison").length, bad.length);
    // The future-version body still names its image in the log.
    assert.ok(poisonLines.some((o) => o.imageId === future.imageId));
    // No bad message was retried or tagged.
    assert.ok(!p.outcomes().some((o) => o.outcome === "retry"), "nothing retried");
    assert.equal(p.ai.calls.length, good.length, "only the good images reached the model");
  });
});

// 6 ──────────────────────────────────────────────────────────────────────────────────────────
test("duplicates in a batch and a redelivery after done cost one AI call", async () => {
  await withPipeline({ queue: { maxBatchTimeout: 1 } }, async (p) => {
    const bytes = png(256);
    const message = await storedMessage(p, bytes);
    const queue = await p.queue();
    await queue.sendBatch([{ body: message }, { body: message }]);

    const done = await waitForStatus(p, message.imageId, TERMINAL);
    assert.equal(done.status, "done", JSON.stringify(done));
    await waitFor(() => outcomesFor(p, message.imageId).length >= 2, { what: "both first-batch outcomes" });
    assert.deepEqual(outcomesFor(p, message.imageId).map((o) => o.outcome).sort(), ["done", "duplicate"]);

    await queue.send(message);
    await waitFor(() => outcomesFor(p, message.imageId).some((o) => o.outcome === "skipped"), {
      what: "the redelivery to be skipped",
    });
    await barrier(p);
    const outcomes = outcomesFor(p, message.imageId).map((o) => o.outcome);
    assert.deepEqual(outcomes.sort(), ["done", "duplicate", "skipped"]);
    assert.equal(p.ai.callsFor(bytes).length, 1, "exactly one AI call for the image");
    assert.deepEqual(await record(p, message.imageId), done, "the skip did not rewrite the record");
  });
});

// 7 ──────────────────────────────────────────────────────────────────────────────────────────

/** mulberry32: a small seeded PRNG. */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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

test("load: 200 uploads against a flaky model all end done or failed, as the model decided", async () => {
  const COUNT = 200;
  const SEED = 20261128;
  const MAX_RETRIES = 3;
  await withPipeline(
    { queue: { maxBatchTimeout: 1, maxRetries: MAX_RETRIES }, taggerVars: { MAX_RETRIES: String(MAX_RETRIES) } },
    async (p) => {
      const images = Array.from({ length: COUNT }, () => png(200));
      const indexOf = new Map(images.map((bytes, i) => [imageKey(bytes), i]));
      assert.equal(indexOf.size, COUNT, "images are unique");

      // Each call's fate depends only on (seed, image number, call number): reproducible
      // whatever order the tagger makes the calls in.
      const callsSoFar = new Map();
      p.ai.setDefault((call) => {
        const n = (callsSoFar.get(call.key) ?? 0) + 1;
        callsSoFar.set(call.key, n);
        const i = indexOf.get(call.key) ?? -1;
        const r = mulberry32(SEED ^ Math.imul(i + 1, 0x9e3779b1) ^ Math.imul(n, 0x85ebca77))();
        if (r < 0.05) return { error: errors.invalidImage };
        if (r < 0.25) return { error: (i + n) % 2 ? errors.capacity : errors.rateLimited };
        return { labels: LABELS };
      });

      const started = Date.now();
      const ids = new Array(COUNT);
      await eachLimited(images, 8, async (bytes, i) => {
        ids[i] = await upload(p, bytes);
      });

      const kv = await p.kv();
      const pending = new Set(ids);
      await waitFor(
        async () => {
          await Promise.all(
            [...pending].map(async (id) => {
              const text = await kv.get(`tags:${id}`);
              if (text && TERMINAL.includes(JSON.parse(text).status)) pending.delete(id);
            }),
          );
          return pending.size === 0;
        },
        { timeoutMs: 90_000, intervalMs: 250, what: "every image to be done or failed" },
      ).catch((e) => {
        throw new Error(`${e.message}; still pending: ${pending.size} of ${COUNT}`);
      });
      const seconds = (Date.now() - started) / 1000;

      // What the API reports, for every image.
      const statuses = new Array(COUNT);
      await eachLimited(ids, 8, async (id, i) => {
        statuses[i] = await (await p.fetch(`/images/${id}`)).json();
      });
      const byStatus = (s) => statuses.filter((r) => r.status === s).length;
      assert.equal(byStatus("queued"), 0, "none left queued");
      assert.equal(byStatus("done") + byStatus("failed"), COUNT, "every image terminal");

      // What the model did, per image.
      const callsByImage = images.map((bytes) => p.ai.callsFor(bytes));
      const fate = (call) => {
        // Re-derive each call's answer from the same PRNG.
        const i = indexOf.get(call.key);
        const n = callsByImage[i].indexOf(call) + 1;
        const r = mulberry32(SEED ^ Math.imul(i + 1, 0x9e3779b1) ^ Math.imul(n, 0x85ebca77))();
        return r < 0.05 ? "invalid" : r < 0.25 ? "retryable" : "ok";
      };
      const expected = callsByImage.map((calls) => {
        const fates = calls.map(fate);
        const last = fates.at(-1);
        if (last === "ok") return "done";
        if (last === "invalid") return "failed_invalid";
        if (fates.length === MAX_RETRIES + 1 && fates.every((f) => f === "retryable")) return "failed_exhausted";
        return `unexpected (${fates.join(",") || "no calls"})`;
      });
      const unexpected = expected.map((e, i) => [ids[i], e]).filter(([, e]) => e.startsWith("unexpected"));
      assert.deepEqual(unexpected, [], "every image's calls end in success, rejection or exhaustion");

      const count = (what) => expected.filter((e) => e === what).length;
      const done = count("done");
      const failedInvalid = count("failed_invalid");
      const failedExhausted = count("failed_exhausted");
      assert.equal(byStatus("done"), done, "#done == #images whose last call succeeded");
      assert.equal(byStatus("failed"), failedInvalid + failedExhausted, "#failed == rejected + exhausted");
      // And image by image, with the right reason.
      statuses.forEach((s, i) => {
        const want = expected[i];
        if (want === "done") assert.equal(s.status, "done", ids[i]);
        else {
          assert.equal(s.status, "failed", ids[i]);
          assert.equal(s.error.code, want === "failed_invalid" ? "invalid_image" : "retries_exhausted", ids[i]);
        }
      });

      const outcomes = p.outcomes();
      const retries = outcomes.filter((o) => o.outcome === "retry").length;
      const deadLettered = outcomes.filter((o) => o.outcome === "dead_letter").length;
      // Every retryable answer was retried, or sent to the DLQ after the last attempt.
      const retryableCalls = callsByImage.flat().filter((c) => fate(c) === "retryable").length;
      assert.equal(retries + deadLettered, retryableCalls, "one outcome per retryable AI answer");
      assert.equal(deadLettered, failedExhausted, "one dead_letter outcome per exhausted image");
      console.log(
        `load: done=${done} failed_invalid=${failedInvalid} failed_exhausted=${failedExhausted} ` +
          `retries=${retries} ai_calls=${p.ai.calls.length} images=${COUNT} seconds=${seconds.toFixed(1)}`,
      );
    },
  );
});

// 8 ──────────────────────────────────────────────────────────────────────────────────────────
test("a batch's messages are classified concurrently", async () => {
  const LATENCY = 200;
  const N = 5;
  await withPipeline({ queue: { maxBatchTimeout: 1, maxBatchSize: N } }, async (p) => {
    p.ai.setLatency(LATENCY);
    const images = Array.from({ length: N }, () => png(256));
    const messages = [];
    for (const bytes of images) messages.push(await storedMessage(p, bytes));
    await (await p.queue()).sendBatch(messages.map((body) => ({ body })));

    for (const m of messages) {
      const r = await waitForStatus(p, m.imageId, TERMINAL);
      assert.equal(r.status, "done", JSON.stringify(r));
    }
    const calls = p.ai.calls;
    assert.equal(calls.length, N);
    for (const m of messages) await linesUntil(p, m.imageId, "done");
    const lines = p.outcomes();
    assert.equal(lines.length, N);
    assert.ok(lines.every((o) => o.outcome === "done" && o.attempt === 1), JSON.stringify(lines));

    const first = Math.min(...calls.map((c) => c.at));
    const last = Math.max(...calls.map((c) => c.doneAt));
    const wall = last - first;
    const serial = N * LATENCY;
    const sumOfDurations = lines.reduce((s, o) => s + o.durationMs, 0);
    console.log(
      `concurrency: ${N} calls of ${LATENCY} ms took ${wall} ms wall ` +
        `(ratio ${(wall / serial).toFixed(2)} of serial ${serial} ms; ` +
        `logged durations sum ${Math.round(sumOfDurations)} ms)`,
    );
    assert.ok(wall < 3 * LATENCY, `batch took ${wall} ms; serial would be ${serial} ms`);
    // All calls were in flight together: each started before the first one finished.
    const firstDone = Math.min(...calls.map((c) => c.doneAt));
    assert.ok(calls.every((c) => c.at < firstDone), "all 5 calls overlapped");
  });
});
