// The launcher's own parts, without a runtime where possible: the AI stub, the `Ai` binding,
// fault controls, the log reader; and that the launcher leaves nothing running.

import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { PassThrough } from "node:stream";

import { FaultControl, createLogReader, startPipeline, waitFor } from "../local/pipeline.mjs";
import { LABELS, RATE_LIMIT_CODE, aiError, answer, createAiStub, documentedAiError, imageKey, workersAiErrors } from "../local/ai-stub.mjs";
import { Ai } from "../local/ai-binding.mjs";
import { model } from "../local/contract.mjs";
import { workerdChildren } from "../bench/lib/proc.mjs";
import { png } from "../local/images.mjs";

/** The stub on a loopback port, and an `Ai` binding in this process that calls it. */
async function stubbedAi(options) {
  const stub = createAiStub(options);
  const server = http.createServer(stub.handle);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const backend = { fetch: (_url, init) => fetch(`http://127.0.0.1:${server.address().port}/run`, init) };
  return { stub, ai: new Ai({ AI_BACKEND: backend }), close: () => new Promise((r) => server.close(r)) };
}

const run = (ai, bytes) => ai.run(model, { image: [...bytes] });

test("the Ai binding answers the model's output, and throws InferenceUpstreamError(\"<code>: <description>\") like workerd's", async () => {
  const { stub, ai, close } = await stubbedAi();
  try {
    const image = png(100);
    assert.deepEqual(await run(ai, image), LABELS);
    // Every documented error, with the page's status and description.
    for (const { code, description, httpStatus } of workersAiErrors.errors) {
      stub.script(image, aiError(code));
      const error = await run(ai, image).then(
        () => assert.fail("no error"),
        (e) => e,
      );
      assert.ok(error instanceof Error);
      assert.equal(error.name, "InferenceUpstreamError");
      assert.equal(error.message, `${code}: ${description}`);
      assert.equal(aiError(code).error.status, httpStatus);
    }
    // A backend whose message already leads with its code (the local classifier's) is passed
    // on as it is; one without a JSON error gets its HTTP status as the code.
    const reply = (response) => new Ai({ AI_BACKEND: { fetch: async () => response } });
    const local = reply(Response.json({ errors: [{ code: 5006, message: "5006: Invalid image: x" }] }, { status: 400 }));
    await assert.rejects(local.run(model, { image: [1] }), { name: "InferenceUpstreamError", message: "5006: Invalid image: x" });
    const crash = reply(new Response("upstream broke", { status: 502 }));
    await assert.rejects(crash.run(model, { image: [1] }), { name: "InferenceUpstreamError", message: "502: upstream broke" });
  } finally {
    await close();
  }
});

test("the AI stub: scripts by image hash (the last step repeats), a default answer, and a record of every call", async () => {
  const { stub, ai, close } = await stubbedAi();
  try {
    const a = png(100);
    const b = png(100);
    stub.script(a, aiError(3040), answer([{ label: "A", score: 1 }]));
    stub.setDefault(() => answer([{ label: "DEFAULT", score: 1 }]));
    await assert.rejects(run(ai, a), /^InferenceUpstreamError: 3040: /);
    assert.deepEqual(await run(ai, a), [{ label: "A", score: 1 }]);
    assert.deepEqual(await run(ai, a), [{ label: "A", score: 1 }], "the last step repeats");
    assert.deepEqual(await run(ai, b), [{ label: "DEFAULT", score: 1 }]);
    assert.equal(stub.callsFor(a).length, 3);
    const [call] = stub.callsFor(b);
    assert.equal(call.key, imageKey(b));
    assert.equal(call.length, b.length);
    assert.ok(call.image.equals(b));
    assert.equal(call.model, model);
    assert.ok(call.doneAt >= call.at);
    assert.deepEqual(stub.calls.map((c) => c.by), ["script", "script", "script", "default"]);
  } finally {
    await close();
  }
});

test("the AI stub refuses calls over its token bucket with 3040, and every call during an outage", async () => {
  // One token a second: the four calls below arrive well within a second of each other even
  // on a loaded machine, so no token comes back between them.
  const { stub, ai, close } = await stubbedAi({ rateLimit: { perSecond: 1, burst: 2 } });
  try {
    const image = png(100);
    const results = await Promise.allSettled(Array.from({ length: 4 }, () => run(ai, image)));
    assert.deepEqual(results.map((r) => r.status), ["fulfilled", "fulfilled", "rejected", "rejected"]);
    assert.equal(results[2].reason.message, `${RATE_LIMIT_CODE}: ${documentedAiError(RATE_LIMIT_CODE).description}`);
    assert.deepEqual(stub.calls.map((c) => c.by), ["default", "default", "rate", "rate"]);
    // A token comes back with time: a call succeeds again (a bounded wait, not a sleep).
    await waitFor(() => run(ai, image).then(() => true, () => false), { timeoutMs: 5000, intervalMs: 200, what: "a token back" });

    stub.setRateLimit(null);
    const window = stub.outage(60_000, { code: 3007 });
    await assert.rejects(run(ai, image), /^InferenceUpstreamError: 3007: /);
    assert.equal(stub.calls.at(-1).by, "outage");
    stub.endOutages();
    assert.ok(window.until <= Date.now());
    assert.deepEqual(await run(ai, image), LABELS);
    assert.throws(() => stub.outage(1000, { code: 1234 }), /documents no error 1234/);
  } finally {
    await close();
  }
});

test("the AI stub in light mode keeps no image, and counts calls, bytes and calls in flight", async () => {
  const { stub, ai, close } = await stubbedAi({ light: true, latencyMs: 100 });
  try {
    await Promise.all([run(ai, png(1000)), run(ai, png(1000)), run(ai, png(1000))]);
    assert.equal(stub.calls.length, 0, "no copies");
    assert.equal(stub.stats.calls, 3);
    assert.equal(stub.stats.maxInFlight, 3);
    assert.equal(stub.stats.badCalls, 0);
    assert.ok(stub.stats.bytes > 3000);
  } finally {
    await close();
  }
});

test("fault controls: rules by operation, worker and key, with a number of uses", () => {
  const c = new FaultControl("X");
  c.fail({ op: "get", worker: "tagger", key: /^a/, times: 1, message: "boom" });
  c.slow({ op: "put", ms: 30 });
  assert.deepEqual(c.decide({ worker: "upload", op: "get", key: "a1" }), {}, "other worker");
  assert.deepEqual(c.decide({ worker: "tagger", op: "get", key: "b1" }), {}, "other key");
  assert.deepEqual(c.decide({ worker: "tagger", op: "get", key: "a1" }), { fail: "boom" });
  assert.deepEqual(c.decide({ worker: "tagger", op: "get", key: "a1" }), {}, "used up");
  assert.deepEqual(c.decide({ worker: "upload", op: "put", key: "z" }), { delayMs: 30 });
  assert.equal(c.opsMatching({ op: "get" }).length, 4);
  assert.equal(c.ops.filter((o) => o.failed).length, 1);
  c.clear();
  assert.deepEqual(c.decide({ worker: "tagger", op: "put", key: "z" }), {});
});

test("fault controls: stale KV serves the value from before a write until the lag passes, and caches misses", async () => {
  const c = new FaultControl("KV");
  c.stale({ lagMs: 200 });
  // A read before any write goes to KV; its miss is then cached.
  assert.deepEqual(c.decide({ worker: "upload", op: "get", key: "k" }), { cacheMisses: true });
  c.decide({ worker: "upload", op: "missed", key: "k" });
  assert.deepEqual(c.decide({ worker: "upload", op: "put", key: "k" }), { snapshot: true });
  c.decide({ worker: "tagger", op: "wrote", key: "k", previous: null });
  assert.deepEqual(c.decide({ worker: "upload", op: "get", key: "k" }).stale, { value: null, metadata: null });
  await new Promise((r) => setTimeout(r, 220));
  assert.deepEqual(c.decide({ worker: "upload", op: "get", key: "k" }), { cacheMisses: true }, "fresh after the lag");
  // A second write: the value before it is served during its lag.
  c.decide({ worker: "tagger", op: "wrote", key: "k", previous: "v1", metadata: { m: 1 } });
  assert.deepEqual(c.decide({ worker: "upload", op: "get", key: "k" }).stale, { value: "v1", metadata: { m: 1 } });
});

test("the log reader keeps a line that straddles chunks whole, and its waits are bounded", async () => {
  const reader = createLogReader();
  const stream = new PassThrough();
  reader.attach(stream);
  const waiting = reader.waitForLine((l) => l.includes('"outcome":"done"'), { timeoutMs: 2000 });
  stream.write('before\n{"event":"tagger.message","out');
  stream.write('come":"done"}\nafter');
  stream.write("\n");
  assert.equal(await waiting, '{"event":"tagger.message","outcome":"done"}');
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(reader.lines, ["before", '{"event":"tagger.message","outcome":"done"}', "after"]);
  await assert.rejects(reader.waitForLine(() => false, { timeoutMs: 50, what: "nothing" }), /timed out after 50 ms waiting for nothing/);
  reader.close();
});

test("the launcher leaves nothing running: after close, and when it fails to start", async () => {
  const before = workerdChildren();
  const p = await startPipeline({ persist: "temp" });
  assert.ok(workerdChildren().length > before.length, "workerd runs");
  const state = p.stateDir;
  await p.close();
  assert.deepEqual(workerdChildren(), before, "no workerd after close");
  const { existsSync } = await import("node:fs");
  assert.ok(!existsSync(state), "the temporary state is removed");

  await assert.rejects(
    startPipeline({ workerOverrides: { tagger: { scriptPath: "/nonexistent/index.js" } } }),
    /nonexistent/,
  );
  assert.deepEqual(workerdChildren(), before, "no workerd after a failed start");
  await assert.rejects(startPipeline({ faults: ["NO_SUCH_BINDING"] }), /NO_SUCH_BINDING/);
  await assert.rejects(startPipeline({ queues: { "no-such-queue": {} } }), /no worker has a consumer for no-such-queue/);
});
