// Workers AI's limits and outages: a burst far above the rate, an outage, a permanent error
// in the middle of a rate-limit storm, and the give-up horizon. The AI stub refuses calls the
// way the real service does (3040 over its token bucket, every call during an outage); the
// tagger's fleet-wide pacer (the AiPacer Durable Object) is set to the same rate. Time
// constants are shrunk through vars; figures are printed, never asserted as timings.

import { test } from "node:test";
import assert from "node:assert/strict";

import { waitFor } from "../local/pipeline.mjs";
import { aiError, aiErrorCode, answer } from "../local/ai-stub.mjs";
import { outcome, status, tagError } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { upload, withPipeline } from "./support/helpers.mjs";

// Cloudflare documents it as 400 "Invalid data type for base64 input".
const INVALID = aiErrorCode("Invalid data");

/** Uploads `images`, `concurrency` at a time; resolves to their ids in order. */
async function uploadAll(p, images, concurrency = 8) {
  const ids = new Array(images.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < images.length) {
        const i = next++;
        ids[i] = await upload(p, images[i]);
      }
    }),
  );
  return ids;
}

/** Polls until every id is done or failed; resolves to their final views. */
async function allFinished(p, ids, timeoutMs) {
  const views = new Map();
  await waitFor(
    async () => {
      for (const id of ids) {
        if (views.has(id)) continue;
        const view = await (await p.fetch(`/images/${id}`)).json();
        if (view.status !== status.queued) views.set(id, view);
      }
      return views.size === ids.length;
    },
    { timeoutMs, intervalMs: 250, what: `all ${ids.length} images to finish` },
  );
  return ids.map((id) => views.get(id));
}

test("a burst far above the AI's rate is paced, not failed: 150 uploads against 5 calls a second", async () => {
  const N = 150;
  const RATE = 5;
  await withPipeline(
    { vars: { tagger: { AI_REQUESTS_PER_SECOND: String(RATE) } }, ai: { rateLimit: { perSecond: RATE } } },
    async (p) => {
      const images = Array.from({ length: N }, () => png(300));
      // A permanent error in the middle of the storm still fails at once.
      p.ai.script(images[N / 2], aiError(INVALID));
      const started = Date.now();
      const ids = await uploadAll(p, images);
      const views = await allFinished(p, ids, 180_000);
      const seconds = (Date.now() - started) / 1000;

      const failed = views.filter((v) => v.status === status.failed);
      assert.deepEqual(
        failed.map((v) => [v.imageId, v.error.code]),
        [[ids[N / 2], tagError.invalid_image]],
        "only the image the model rejects fails",
      );
      const answered = (bytes) => p.ai.callsFor(bytes).filter((c) => c.by !== "rate");
      assert.equal(answered(images[N / 2]).length, 1, "the rejected image got one answered call");
      for (const [i, bytes] of images.entries()) {
        assert.equal(answered(bytes).length, 1, `image ${i}: one answered call`);
      }
      const refused = p.ai.stats.refused;
      const bound = N / RATE;
      let deferrals = 0;
      for (const id of ids) {
        const lines = await p.outcomesOf(id, { until: (o) => [outcome.done, outcome.failed].includes(o.outcome) });
        deferrals += lines.filter((o) => o.outcome === outcome.deferred).length;
      }
      console.log(
        `burst: ${N} images at ${RATE}/s drained in ${seconds.toFixed(1)} s (bound ${bound} s, ` +
          `${(seconds / bound).toFixed(2)}x); refused AI calls ${refused} (${(refused / N).toFixed(2)} per image); ` +
          `deferrals ${deferrals}`,
      );
      assert.ok(refused / N <= 0.5, `refused calls per image ${refused / N} <= 0.5`);
    },
  );
});

test("a 20 s outage fails nothing, and every image is done soon after it ends", async () => {
  const N = 10;
  const OUTAGE_MS = 20_000;
  const COOLDOWN_MAX_S = 4;
  await withPipeline({ vars: { tagger: { AI_COOLDOWN_MAX_SECONDS: String(COOLDOWN_MAX_S) } } }, async (p) => {
    const window = p.ai.outage(OUTAGE_MS);
    const images = Array.from({ length: N }, () => png(300));
    const ids = await uploadAll(p, images);
    const views = await allFinished(p, ids, OUTAGE_MS + 60_000);
    const recovered = Math.max(...views.map((v) => Date.parse(v.processedAt))) - window.until;
    assert.deepEqual(
      views.filter((v) => v.status !== status.done).map((v) => v.imageId),
      [],
      "no image failed because the AI was down",
    );
    const refused = p.ai.calls.filter((c) => c.by === "outage").length;
    console.log(
      `outage: ${N} images through ${OUTAGE_MS / 1000} s of refusals: all done ${(recovered / 1000).toFixed(1)} s ` +
        `after it ended; ${refused} refused calls (${(refused / N).toFixed(1)} per image)`,
    );
    // The bound comes from the design, not from a quiet machine's timing: after a refusal the
    // fleet pauses 1 s, doubling up to the cap, so calls go out in rounds, one before the
    // first pause and one after each pause that ends within the outage (a loaded machine only
    // makes pauses longer and rounds fewer), and a round refuses at most one call per image.
    // Without the back-off every image would be retried on its own schedule instead.
    let pauses = 0;
    for (let waited = 0, pause = 1; waited < OUTAGE_MS / 1000; pause = Math.min(2 * pause, COOLDOWN_MAX_S)) {
      waited += pause;
      pauses++;
    }
    const bound = N * (pauses + 1);
    assert.ok(refused <= bound, `the pacer's back-off kept refused calls to ${refused}, at most one per image per round (${bound})`);
  });
});

test("the horizon is honoured: an image whose AI never recovers fails as timed_out", async () => {
  await withPipeline(
    { vars: { tagger: { GIVE_UP_AFTER_SECONDS: "4", AI_COOLDOWN_MAX_SECONDS: "1", RETRY_BASE_SECONDS: "1" } } },
    async (p) => {
      p.ai.outage(10 * 60_000);
      const id = await upload(p, png(300));
      const view = await p.waitForStatus(id, undefined, { timeoutMs: 30_000 });
      assert.equal(view.status, status.failed, JSON.stringify(view));
      assert.equal(view.error.code, tagError.timed_out);
      assert.match(view.error.message, /ai_busy/, "it says what kept failing");
      const lines = await p.outcomesOf(id, { until: outcome.failed });
      assert.ok(lines.slice(0, -1).every((o) => o.outcome === outcome.deferred), JSON.stringify(lines));
      assert.deepEqual([lines.at(-1).outcome, lines.at(-1).errorCode], [outcome.failed, tagError.timed_out]);
      const after = Date.parse(view.processedAt) - Date.parse(view.uploadedAt);
      assert.ok(after >= 4000, `gave up ${after} ms after the upload, not before the horizon`);
      p.ai.endOutages();
    },
  );
});

test("an error without the documented shape is never permanent: a timeout mentioning 5006 ms is retried and ends done", async () => {
  await withPipeline({ vars: { tagger: { AI_COOLDOWN_MAX_SECONDS: "1" } } }, async (p) => {
    const image = png(300);
    // 5006 was once read as "invalid image" from anywhere in a message.
    p.ai.script(image, { error: { status: 504, message: "upstream timed out after 5006 ms" } }, answer());
    const id = await upload(p, image);
    const view = await p.waitForStatus(id, undefined, { timeoutMs: 20_000 });
    assert.equal(view.status, status.done, JSON.stringify(view));
    // The log line comes after the status: wait for it (reading it at once was a race).
    const lines = await p.outcomesOf(id, { until: outcome.done });
    assert.deepEqual(
      lines.map((o) => [o.outcome, o.errorCode]),
      [
        [outcome.deferred, tagError.ai_unavailable],
        [outcome.done, undefined],
      ],
    );
  });
});
