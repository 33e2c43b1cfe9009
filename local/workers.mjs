// How both workers are loaded into Miniflare from their real wrangler configs. Shared by
// the local run (scripts/dev.mjs), the tests and the benchmarks.

import { readFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { unstable_getMiniflareWorkerOptions } from "wrangler";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
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
  // Workers AI has no local implementation: callers supply `AI` as a wrapped binding.
  const { ai: _remoteAi, ...rest } = workerOptions;
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


/** The tagger's structured outcome in a runtime log line, or null for any other line. */
export function parseOutcome(line) {
  const start = line.indexOf("{");
  if (start < 0 || !line.includes('"tagger.message"')) return null;
  try {
    return JSON.parse(line.slice(start));
  } catch {
    return null;
  }
}
