// Starts both workers in one Miniflare instance from the real wrangler configs, with the
// `AI` binding wired to a scriptable stub, and offers helpers to drive and observe them.

import { Miniflare } from "miniflare";

import { startAiStub } from "./ai-stub.mjs";

export {
  ROOT,
  UPLOAD_CONFIG,
  TAGGER_CONFIG,
  MAIN_QUEUE,
  DEAD_LETTER_QUEUE,
  MODEL,
  workerFromConfig,
  aiBindingWorker,
  consumers,
} from "../../local/workers.mjs";
import {
  UPLOAD_CONFIG,
  TAGGER_CONFIG,
  workerFromConfig,
  aiBindingWorker,
  consumers,
  parseOutcome,
} from "../../local/workers.mjs";

/**
 * Starts the pipeline. Options:
 * - `taggerVars`, `uploadVars`: var overrides;
 * - `queue`: consumer settings for `consumers()`;
 * - `persist`: a folder to keep state in (default: in memory);
 * - `aiEndpoint`: where `AI` forwards to (default: a scriptable stub, `p.ai`).
 */
export async function startPipeline({
  taggerVars = {},
  uploadVars = {},
  queue = {},
  persist,
  aiEndpoint,
} = {}) {
  // `aiEndpoint` points AI at another service (the real local classifier) instead of the stub.
  const ai = aiEndpoint ? { url: aiEndpoint, close: async () => {} } : await startAiStub();
  const persistence = persist
    ? { kvPersist: persist, r2Persist: persist, cachePersist: persist, defaultPersistRoot: persist }
    : {};
  const logs = [];
  let mf;
  let url;
  try {
    const options = {
      ...persistence,
      handleRuntimeStdio(stdout, stderr) {
        for (const stream of [stdout, stderr]) {
          stream.setEncoding("utf8");
          stream.on("data", (chunk) => logs.push(...chunk.split("\n").filter(Boolean)));
        }
      },
      workers: [
        workerFromConfig(UPLOAD_CONFIG, { bindings: uploadVars }),
        workerFromConfig(TAGGER_CONFIG, {
          bindings: { RETRY_BASE_SECONDS: "1", ...taggerVars },
          queueConsumers: consumers(queue),
          wrappedBindings: {
            AI: { scriptName: "ai-binding", bindings: { AI_ENDPOINT: ai.url } },
          },
        }),
        aiBindingWorker(),
      ],
    };
    mf = new Miniflare(options);
    url = await mf.ready;
  } catch (error) {
    // Leave nothing running, or the test runner would wait forever.
    await mf?.dispose().catch(() => {});
    await ai.close();
    throw error;
  }
  const base = new URL(url);
  return {
    mf,
    ai,
    logs,
    url: base,
    /** fetch against the upload worker. */
    fetch: (p, init) => mf.dispatchFetch(new URL(p, base), init),
    kv: () => mf.getKVNamespace("RESULTS_KV", "image-upload-worker"),
    bucket: () => mf.getR2Bucket("IMAGE_BUCKET", "image-upload-worker"),
    queue: () => mf.getQueueProducer("IMAGE_QUEUE", "image-upload-worker"),
    /** The tagger's structured outcome lines. */
    outcomes: () => logs.map(parseOutcome).filter(Boolean),
    async close() {
      await mf.dispose();
      await ai.close();
    },
  };
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = 20_000, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    last = await check();
    if (last) return last;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
}

/** Polls `GET /images/{id}` until its status is one of `statuses`. */
export async function waitForStatus(p, id, statuses = ["done", "failed"], opts = {}) {
  return waitFor(
    async () => {
      const res = await p.fetch(`/images/${id}`);
      const body = await res.json();
      return statuses.includes(body.status) ? body : null;
    },
    { what: `${id} to be ${statuses.join(" or ")}`, ...opts },
  );
}
