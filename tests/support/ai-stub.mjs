// A scriptable stand-in for Workers AI, served over HTTP on loopback: the `Ai` binding
// (local/ai-binding.mjs) forwards each `run` here. It records every call and answers from a
// script: per image (keyed by its first bytes' hex digest) or by default.

import http from "node:http";
import { createHash } from "node:crypto";

export const LABELS = [
  { label: "TABBY", score: 0.91 },
  { label: "TIGER CAT", score: 0.8 },
  { label: "EGYPTIAN CAT", score: 0.05 },
  { label: "LYNX", score: 0.02 },
  { label: "PERSIAN CAT", score: 0.01 },
];

/** The key the stub uses for an image: sha256 of its bytes, hex. */
export function imageKey(bytes) {
  return createHash("sha256").update(Buffer.from(bytes)).digest("hex");
}

/** Workers AI style failures. */
export const errors = {
  capacity: { status: 429, code: 3040, message: "Capacity temporarily exceeded, please try again." },
  rateLimited: { status: 429, code: 3021, message: "Rate limited" },
  invalidImage: { status: 400, code: 5006, message: "Invalid image: could not decode" },
};

export async function startAiStub() {
  const calls = [];
  const scripts = new Map(); // imageKey -> array of steps (consumed in order; last repeats)
  let fallback = (/* call */) => ({ labels: LABELS });
  let latencyMs = 0;

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", async () => {
      let body;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        res.writeHead(400).end();
        return;
      }
      const image = Array.isArray(body.image) ? body.image : [];
      const key = imageKey(image);
      const call = { model: body.model, image, key, at: Date.now() };
      calls.push(call);
      const steps = scripts.get(key);
      const step = steps ? (steps.length > 1 ? steps.shift() : steps[0]) : fallback(call);
      const delay = step.latencyMs ?? latencyMs;
      if (delay) await new Promise((r) => setTimeout(r, delay));
      call.doneAt = Date.now(); // when the answer went out: call spans are `at`..`doneAt`
      if (step.error) {
        res.writeHead(step.error.status, { "content-type": "application/json" });
        res.end(JSON.stringify({ errors: [{ code: step.error.code, message: step.error.message }] }));
      } else {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(step.labels ?? LABELS));
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/run`,
    calls,
    /** Calls made for one image. */
    callsFor: (bytes) => calls.filter((c) => c.key === imageKey(bytes)),
    /** Script the answers for one image: steps like `{ error }`, `{ labels }`, `{ latencyMs }`. */
    script(bytes, ...steps) {
      scripts.set(imageKey(bytes), steps);
    },
    /** The answer for unscripted images: a function of the call. */
    setDefault(fn) {
      fallback = fn;
    },
    setLatency(ms) {
      latencyMs = ms;
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
