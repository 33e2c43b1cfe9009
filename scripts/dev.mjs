// The local run: both workers in one Miniflare (the real workerd) with local R2, KV and
// Queues, state kept in .local/state, and `AI` served locally. No Cloudflare account.
//
//   node scripts/dev.mjs [--port 8787] [--local-ai BIN --model-dir DIR]
//
// With --local-ai, `AI` is the real offline classifier (crates/local-ai, EfficientNet-Lite0
// standing in for resnet-50); without it, a stand-in that answers fixed labels.
// Prints the URL, then one line per finished image with all its labels.

import { mkdirSync } from "node:fs";
import path from "node:path";
import { Miniflare } from "miniflare";

import {
  ROOT,
  UPLOAD_CONFIG,
  TAGGER_CONFIG,
  workerFromConfig,
  aiBindingWorker,
  consumers,
  parseOutcome,
} from "../local/workers.mjs";
import { startStandInAi } from "../local/stand-in-ai.mjs";
import { startLocalAi } from "../local/local-ai.mjs";

const port = Number(process.env.PORT ?? argValue("--port") ?? 8787);
const state = path.join(ROOT, ".local", "state");
mkdirSync(state, { recursive: true });

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const localAi = argValue("--local-ai");
const ai = localAi
  ? await startLocalAi(localAi, argValue("--model-dir"), {
      onOutput: (text) => process.stdout.write(`AI: ${text}`),
    })
  : await startStandInAi();
if (!localAi) {
  console.log(`AI: stand-in at ${ai.url} (answers fixed labels; it is NOT a real classifier)`);
}

let mf;
const seen = new Set();
const mark = (score, min) => (score > min ? "✔" : " ");

async function report(line) {
  const event = parseOutcome(line);
  if (!event || !["done", "failed"].includes(event.outcome) || seen.has(event.imageId)) return;
  seen.add(event.imageId);
  const kv = await mf.getKVNamespace("RESULTS_KV", "image-upload-worker");
  const record = await kv.get(`tags:${event.imageId}`, "json");
  if (!record) return;
  if (record.status === "failed") {
    console.log(`✗ ${record.imageId} failed: ${record.error.code}: ${record.error.message}`);
    return;
  }
  console.log(`✓ ${record.imageId} done in ${Math.round(event.durationMs)} ms; tags: ${
    record.tags.map((t) => t.label).join(", ") || "(none above MIN_SCORE)"}`);
  for (const l of record.labels) {
    console.log(`    ${mark(l.score, record.minScore)} ${l.score.toFixed(3)}  ${l.label}`);
  }
}

// Ctrl-C: exiting runs the exit hooks, which stop workerd (Miniflare's) and local-ai (ours).
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    console.log("\nstopping…");
    process.exit(0);
  });
}

mf = new Miniflare({
  host: "127.0.0.1",
  port,
  kvPersist: path.join(state, "kv"),
  r2Persist: path.join(state, "r2"),
  cachePersist: path.join(state, "cache"),
  defaultPersistRoot: state,
  handleRuntimeStdio(stdout, stderr) {
    for (const stream of [stdout, stderr]) {
      stream.setEncoding("utf8");
      stream.on("data", (chunk) => {
        for (const line of chunk.split("\n").filter(Boolean)) {
          report(line).catch(() => {});
          if (process.env.VERBOSE) console.log(line);
        }
      });
    }
  },
  workers: [
    workerFromConfig(UPLOAD_CONFIG),
    workerFromConfig(TAGGER_CONFIG, {
      queueConsumers: consumers({ maxBatchTimeout: 1 }),
      wrappedBindings: { AI: { scriptName: "ai-binding", bindings: { AI_ENDPOINT: ai.url } } },
    }),
    aiBindingWorker(),
  ],
});

const url = await mf.ready;
console.log(`\nImage tagger running at ${url}`);
console.log(`  page:    ${url}`);
console.log(`  upload:  curl -sS --data-binary @photo.jpg ${url}images`);
console.log(`  status:  curl -sS ${url}images/<imageId>`);
console.log(`State is kept in .local/state. Ctrl-C stops everything.\n`);
