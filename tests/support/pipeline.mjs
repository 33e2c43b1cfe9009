// Starts both workers in one Miniflare instance from the real wrangler configs, with the
// `AI` binding wired to a scriptable stub, and offers helpers to drive and observe them.

import { readFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { Miniflare } from "miniflare";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

import { startAiStub } from "./ai-stub.mjs";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const UPLOAD_CONFIG = path.join(ROOT, "wrangler.upload.toml");
export const TAGGER_CONFIG = path.join(ROOT, "wrangler.tagger.toml");
export const MAIN_QUEUE = "image-processing-queue";
export const DEAD_LETTER_QUEUE = "image-processing-dlq";
export const MODEL = "@cf/microsoft/resnet-50";

/** Miniflare options for one worker, from its wrangler config. Fails if it is not built. */
export function workerFromConfig(configPath, overrides = {}) {
  const { workerOptions, main } = unstable_getMiniflareWorkerOptions(configPath);
  if (!existsSync(main)) {
    throw new Error(`${main} is missing: build first (npm run build)`);
  }
  const { ai, ...rest } = workerOptions;
  return {
    ...rest,
    name: readName(configPath),
    modules: true,
    scriptPath: main,
    ...overrides,
    bindings: { ...rest.bindings, ...overrides.bindings },
  };
}

function readName(configPath) {
  const match = readFileSync(configPath, "utf8").match(/^name\s*=\s*"([^"]+)"/m);
  if (!match) throw new Error(`no name in ${configPath}`);
  return match[1];
}

/** The wrapped-binding worker that provides `AI`, forwarding to `endpoint`. */
export function aiBindingWorker() {
  return {
    name: "ai-binding",
    modules: [
      {
        type: "ESModule",
        path: "ai-binding.mjs",
        contents: readFileSync(path.join(ROOT, "local/ai-binding.mjs"), "utf8"),
      },
    ],
  };
}

/** Queue consumer settings as in wrangler.tagger.toml, made explicit, with overrides. */
export function consumers({ maxBatchTimeout = 1, maxBatchSize = 5, maxRetries = 3 } = {}) {
  return {
    [MAIN_QUEUE]: { maxBatchSize, maxBatchTimeout, maxRetries, deadLetterQueue: DEAD_LETTER_QUEUE },
    [DEAD_LETTER_QUEUE]: { maxBatchSize, maxBatchTimeout, maxRetries },
  };
}

/**
 * Starts the pipeline. Options:
 * - `taggerVars`, `uploadVars`: var overrides;
 * - `queue`: consumer settings for `consumers()`;
 * - `persist`: a folder to keep state in (default: in memory).
 */
export async function startPipeline({ taggerVars = {}, uploadVars = {}, queue = {}, persist } = {}) {
  const ai = await startAiStub();
  const persistence = persist
    ? { kvPersist: persist, r2Persist: persist, cachePersist: persist, defaultPersistRoot: persist }
    : {};
  const logs = [];
  const mf = new Miniflare({
    ...persistence,
    handleRuntimeStdio(stdout, stderr) {
      for (const stream of [stdout, stderr]) {
        stream.setEncoding("utf8");
        stream.on("data", (chunk) => logs.push(...chunk.split("\n").filter(Boolean)));
      }
    },
    workers: [
      workerFromConfig(UPLOAD_CONFIG, { bindings: { RETRY_BASE_SECONDS: "1", ...uploadVars } }),
      workerFromConfig(TAGGER_CONFIG, {
        bindings: { RETRY_BASE_SECONDS: "1", ...taggerVars },
        queueConsumers: consumers(queue),
        wrappedBindings: {
          AI: { scriptName: "ai-binding", bindings: { AI_ENDPOINT: ai.url } },
        },
      }),
      aiBindingWorker(),
    ],
  });
  const url = await mf.ready;
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
    outcomes: () =>
      logs
        .map((line) => line.slice(line.indexOf("{")))
        .filter((line) => line.includes('"tagger.message"'))
        .map((line) => {
          try {
            return JSON.parse(line);
          } catch {
            return null;
          }
        })
        .filter(Boolean),
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
