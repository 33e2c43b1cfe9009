// The AI bill and the operator's mistakes: a daily budget defers images to the next UTC day,
// Workers AI's own daily allocation (3036) does the same, and a misconfigured account or
// model (5007) leaves images queued, logs `ai_misconfigured`, and lets them proceed once
// fixed. None of it ever fails an image.

import { test } from "node:test";
import assert from "node:assert/strict";

import { aiError, aiErrorCode, answer } from "../local/ai-stub.mjs";
import { outcome, status, tagError } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { upload, withPipeline } from "./support/helpers.mjs";

/** The start of the next UTC day after `ms`. */
const nextUtcDay = (ms) => (Math.floor(ms / 86_400_000) + 1) * 86_400_000;

test("with AI_DAILY_BUDGET=3, five uploads give three done and two queued until the next UTC day", async () => {
  // `/admin/usage` needs the operator key.
  const operator = { authorization: "Bearer ai-bill-operator-key" };
  const vars = { upload: { API_TOKEN: operator.authorization.slice("Bearer ".length) }, tagger: { AI_DAILY_BUDGET: "3" } };
  await withPipeline({ vars }, async (p) => {
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(await upload(p, png(300), operator));
    const done = [];
    const queued = [];
    // Every image is either done or has been deferred by the budget.
    for (const id of ids) {
      const line = await p.waitForOutcome((o) => o.imageId === id && [outcome.done, outcome.deferred].includes(o.outcome), {
        timeoutMs: 20_000,
      });
      (line.outcome === outcome.done ? done : queued).push({ id, line });
    }
    assert.equal(done.length, 3, "the budget's three calls");
    assert.equal(queued.length, 2);
    // Nothing else is on its way (the deferred messages wait for the next day).
    await p.barrier();
    assert.equal(p.ai.calls.length, 3, "no call past the budget");
    for (const { id, line } of queued) {
      assert.equal(line.errorCode, tagError.budget_spent);
      const view = await (await p.fetch(`/images/${id}`, { headers: operator })).json();
      assert.equal(view.status, status.queued, "never failed");
      const next = Date.parse(view.nextAttemptAt);
      const midnight = nextUtcDay(Date.now());
      assert.ok(next >= midnight && next < midnight + 3600_000, `deferred to the start of the next UTC day: ${view.nextAttemptAt}`);
    }
    const usage = await (await p.fetch("/admin/usage", { headers: operator })).json();
    assert.deepEqual([usage.usedToday, usage.dailyBudget], [3, 3], JSON.stringify(usage));
  });
});

test("Workers AI's daily allocation used up (3036) defers to the next UTC day", async () => {
  await withPipeline({}, async (p) => {
    const image = png(300);
    p.ai.script(image, aiError(aiErrorCode("Account limited")), answer());
    const id = await upload(p, image);
    const line = await p.waitForOutcome({ imageId: id, outcome: outcome.deferred });
    assert.equal(line.errorCode, tagError.ai_quota);
    const view = await (await p.fetch(`/images/${id}`)).json();
    assert.equal(view.status, status.queued);
    assert.ok(Date.parse(view.nextAttemptAt) >= nextUtcDay(Date.now()), `next attempt ${view.nextAttemptAt}`);
    // Fleet-wide: another image is not sent to the AI either until then.
    const other = await upload(p, png(300));
    const deferred = await p.waitForOutcome({ imageId: other, outcome: outcome.deferred });
    assert.equal(deferred.errorCode, tagError.ai_quota);
    assert.equal(p.ai.calls.length, 1, "one call found the allocation used up; none after it");
  });
});

test("a misconfigured AI (5007: no such model) leaves images queued, logs ai_misconfigured, and they proceed once fixed", async () => {
  const code = aiErrorCode("No such model");
  await withPipeline({ vars: { tagger: { RETRY_MAX_SECONDS: "2" } } }, async (p) => {
    const image = png(300);
    p.ai.script(image, aiError(code), aiError(code), answer());
    const id = await upload(p, image);
    const first = await p.waitForOutcome({ imageId: id, outcome: outcome.deferred });
    assert.equal(first.errorCode, tagError.ai_misconfigured);
    assert.ok(p.lines.some((l) => l.includes(`"errorCode":"${tagError.ai_misconfigured}"`)), "the log says so");
    assert.equal((await (await p.fetch(`/images/${id}`)).json()).status, status.queued, "not failed");
    // The operator fixes the model (here: the script's third answer); the image proceeds.
    const view = await p.waitForStatus(id, [status.done], { timeoutMs: 30_000 });
    assert.equal(view.attempts, 3);
    const lines = await p.outcomesOf(id, { until: outcome.done });
    assert.deepEqual(
      lines.map((o) => o.outcome),
      [outcome.deferred, outcome.deferred, outcome.done],
    );
    assert.ok(lines[0].delaySeconds >= 2, "the long back-off (RETRY_MAX_SECONDS)");
  });
});
