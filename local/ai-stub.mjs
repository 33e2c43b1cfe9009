// The one stand-in for Workers AI, for tests, the benchmark and the local run without the
// real classifier. The `Ai` binding (local/ai-binding.mjs) sends each `run` here as
// `{"model": ..., "image": [bytes]}`; the stub answers in the resnet-50 output shape, or
// refuses the way Workers AI does: an HTTP status and `{"errors":[{code, message}]}` with the
// message `"<code>: <description>"`, both from Cloudflare's documented table of Workers AI
// errors (local/workers-ai-errors.json), never from the Rust table: what the stub says comes
// from the platform, and the tests check that the implementation understands it.
//
// What it answers, in order of precedence:
// 1. an outage window in progress refuses every call (`outage()`);
// 2. the token bucket refuses calls over the rate (`setRateLimit()`), with 3040 like the
//    real service's per-account limit;
// 3. the image's script (`script(bytes, ...steps)`), keyed by the sha256 of its bytes;
// 4. the default answer, a function of the call (`setDefault()`).
// It records every call. In light mode (for the benchmark) it keeps no copy of an image and
// does not even parse it: only counts, sizes and how many calls were in flight.
//
// The stub is a Node request handler (`handle(req, res)`): the launcher plugs it into
// Miniflare as a service binding of the `Ai` binding, so no port of its own is needed.

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

import { model as MODEL } from "./contract.mjs";

/**
 * Workers AI's documented errors (`{ name, code, httpStatus, description }`), with the page
 * they were copied from: `{ source, pageLastUpdated, errors }`.
 */
export const workersAiErrors = Object.freeze(JSON.parse(readFileSync(new URL("./workers-ai-errors.json", import.meta.url), "utf8")));

/** A documented Workers AI error by its code; throws for a code the page does not list. */
export function documentedAiError(code) {
  const entry = workersAiErrors.errors.find((e) => e.code === code);
  if (!entry) throw new Error(`Workers AI documents no error ${code} (${workersAiErrors.source})`);
  return entry;
}

/** The code of the documented Workers AI error named `name` on the page, e.g. "Invalid data". */
export function aiErrorCode(name) {
  const found = workersAiErrors.errors.filter((e) => e.name === name);
  if (found.length !== 1) throw new Error(`Workers AI documents ${found.length} errors named ${name}`);
  return found[0].code;
}

/**
 * The default answer: five labels in the resnet-50 shape. It does not look at the image and
 * says so in its first label: this is NOT a real classification. With the default
 * MIN_SCORE (0.8, strictly above) only the first label becomes a tag; 0.5 makes two.
 */
export const LABELS = Object.freeze([
  { label: "STAND-IN: NOT A REAL CLASSIFICATION", score: 0.91 },
  { label: "TABBY", score: 0.8 },
  { label: "TIGER CAT", score: 0.05 },
  { label: "EGYPTIAN CAT", score: 0.02 },
  { label: "LYNX", score: 0.01 },
]);

/** The key the stub files an image under: the sha256 of its bytes, hex. */
export function imageKey(bytes) {
  return createHash("sha256").update(bytes).digest("hex");
}

/** A step that refuses with a documented Workers AI error, e.g. `aiError(3040)`. */
export function aiError(code, { latencyMs } = {}) {
  const { httpStatus, description } = documentedAiError(code);
  return { error: { code, status: httpStatus, message: `${code}: ${description}` }, ...(latencyMs ? { latencyMs } : {}) };
}

/** A step that answers `labels` (default: LABELS). */
export function answer(labels = LABELS, { latencyMs } = {}) {
  return { labels, ...(latencyMs ? { latencyMs } : {}) };
}

/** The code the stub refuses calls over its rate with, like Workers AI (429). */
export const RATE_LIMIT_CODE = aiErrorCode("Out of capacity");

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Creates a stub. Options: `light` (no copies, no scripts), `latencyMs`, `defaultAnswer`
 * (a function of the call returning a step), `rateLimit` (see `setRateLimit`).
 */
export function createAiStub({ light = false, latencyMs = 0, defaultAnswer, rateLimit } = {}) {
  /** Every call, in arrival order (light mode: only counters). */
  const calls = [];
  const stats = { calls: 0, bytes: 0, inFlight: 0, maxInFlight: 0, badCalls: 0, refused: 0 };
  const scripts = new Map(); // imageKey -> steps (consumed in order; the last one repeats)
  let fallback = defaultAnswer ?? (() => answer());
  let latency = latencyMs;
  let bucket = null;
  const outages = [];
  let gate = null; // while set, every call waits for it before it is answered (`hold()`)

  function setRateLimit(limit) {
    // A token bucket: `perSecond` tokens a second, holding at most `burst` (default: one
    // second's worth). A call takes a token or is refused.
    bucket = limit ? { perSecond: limit.perSecond, burst: limit.burst ?? limit.perSecond, tokens: limit.burst ?? limit.perSecond, at: Date.now() } : null;
  }
  setRateLimit(rateLimit);

  function takeToken(now) {
    if (!bucket) return true;
    bucket.tokens = Math.min(bucket.burst, bucket.tokens + ((now - bucket.at) / 1000) * bucket.perSecond);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** The step for a call, and which rule chose it. */
  function decide(call) {
    const now = call.at;
    const outage = outages.find((o) => o.from <= now && now < o.until);
    if (outage) return { step: aiError(outage.code), by: "outage" };
    if (!takeToken(now)) return { step: aiError(RATE_LIMIT_CODE), by: "rate" };
    const steps = call.key && scripts.get(call.key);
    if (steps) return { step: steps.length > 1 ? steps.shift() : steps[0], by: "script" };
    return { step: fallback(call), by: "default" };
  }

  /** Reads the call from the request: parsed, or (light mode) only counted. */
  async function readCall(req) {
    const at = Date.now();
    if (light) {
      let bytes = 0;
      let head = "";
      for await (const chunk of req) {
        bytes += chunk.length;
        if (head.length < 64) head += chunk.toString("latin1", 0, 64);
      }
      stats.bytes += bytes;
      const ok = head.startsWith(`{"model":${JSON.stringify(MODEL)},"image":[`);
      if (!ok) stats.badCalls++;
      return { at, bytes, model: ok ? MODEL : undefined };
    }
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString("utf8");
    stats.bytes += text.length;
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = {};
    }
    const image = Array.isArray(body.image) ? Buffer.from(body.image) : null;
    if (!image || body.model !== MODEL) stats.badCalls++;
    return { at, bytes: text.length, model: body.model, image, key: image ? imageKey(image) : null, length: image?.length ?? 0 };
  }

  /** The Node request handler: one `Ai.run` per request. */
  async function handle(req, res) {
    stats.calls++;
    stats.inFlight++;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    let call;
    try {
      call = await readCall(req);
      call.inFlightAtStart = stats.inFlight;
      if (!light) calls.push(call);
      if (gate) await gate.promise;
      const { step, by } = decide(call);
      call.by = by;
      const delay = step.latencyMs ?? latency;
      if (delay) await sleep(delay);
      // A step may hold its answer until a test releases it (a promise).
      if (step.gate) await step.gate;
      call.doneAt = Date.now(); // when the answer went out: a call spans `at`..`doneAt`
      if (step.error) {
        stats.refused++;
        call.error = step.error.code;
        res.writeHead(step.error.status, { "content-type": "application/json" });
        res.end(JSON.stringify({ success: false, errors: [{ code: step.error.code, message: step.error.message }] }));
      } else {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(step.labels ?? LABELS));
      }
    } catch (e) {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" });
      res.end(`ai stub: ${e?.stack ?? e}`);
    } finally {
      stats.inFlight--;
    }
  }

  return {
    handle,
    calls,
    stats,
    /** Calls made for one image (by its bytes). */
    callsFor: (bytes) => calls.filter((c) => c.key === imageKey(bytes)),
    /**
     * Script the answers for one image: steps like `aiError(3040)`, `answer()`, `{ latencyMs }`,
     * or `{ ...answer(), gate }` to answer only once the promise `gate` settles.
     */
    script(bytes, ...steps) {
      if (!steps.length) throw new Error("script: at least one step");
      scripts.set(imageKey(bytes), steps.slice());
    },
    /** The answer for unscripted images: a function of the call returning a step. */
    setDefault(fn) {
      fallback = fn;
    },
    setLatency(ms) {
      latency = ms;
    },
    /** `{ perSecond, burst? }`, or null for no limit. */
    setRateLimit,
    /**
     * Refuses every call for `ms` from now (or from `from`) with `code` (default 3040), as
     * when Workers AI is down. Returns the window `{ from, until, code }`.
     */
    outage(ms, { code = RATE_LIMIT_CODE, from = Date.now() } = {}) {
      documentedAiError(code); // only documented codes
      const window = { from, until: from + ms, code };
      outages.push(window);
      return window;
    },
    /** Ends every outage now. */
    endOutages() {
      const now = Date.now();
      for (const o of outages) o.until = Math.min(o.until, now);
    },
    /** Largest number of calls in flight at once among `list` (default: all), from their spans. */
    maxOverlap(list = calls) {
      const events = list.flatMap((c) => [[c.at, 1], [c.doneAt ?? Infinity, -1]]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
      let now = 0;
      let most = 0;
      for (const [, d] of events) most = Math.max(most, (now += d));
      return most;
    },
    /**
     * Holds every call (those in flight and those to come) unanswered until `release()`:
     * with `stats.inFlight`, a test sees how many calls run at once without timing them.
     */
    hold() {
      if (gate) return;
      let open;
      gate = { promise: new Promise((resolve) => (open = resolve)) };
      gate.open = open;
    },
    /** Answers every held call, and holds no more. */
    release() {
      gate?.open();
      gate = null;
    },
    /** Forgets the calls and counters (not the scripts). */
    reset() {
      calls.length = 0;
      Object.assign(stats, { calls: 0, bytes: 0, inFlight: stats.inFlight, maxInFlight: stats.inFlight, badCalls: 0, refused: 0 });
    },
  };
}
