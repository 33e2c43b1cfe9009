// The local run: the pipeline launcher (local/pipeline.mjs) with state kept in
// .local/state (wrangler's layout, so `wrangler d1 ... --local --persist-to .local/state`
// sees the same database) and `AI` served locally. No Cloudflare account.
//
//   node scripts/dev.mjs [--port 8787] [--local-ai BIN --model-dir DIR]
//
// With --local-ai, `AI` is the real offline classifier (crates/local-ai, EfficientNet-Lite0
// standing in for resnet-50); without it, the AI stub, whose fixed labels say that they are
// not a real classification.
// Prints the URL, then one line per finished image with all its labels.

import path from "node:path";

import { ROOT, parseOutcome, startPipeline } from "../local/pipeline.mjs";
import { startLocalAi } from "../local/local-ai.mjs";
import { outcome, status } from "../local/contract.mjs";

const port = Number(process.env.PORT ?? argValue("--port") ?? 8787);

function argValue(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const localAiBin = argValue("--local-ai");
const localAi = localAiBin
  ? await startLocalAi(localAiBin, argValue("--model-dir"), { onOutput: (line) => console.log(`AI: ${line}`) })
  : null;
if (!localAi) console.log("AI: the stub (fixed labels; it is NOT a real classifier)");

let p;
const seen = new Set();
const mark = (score, min) => (score > min ? "✔" : " ");

async function report(line) {
  const event = parseOutcome(line);
  if (!event || ![outcome.done, outcome.failed].includes(event.outcome) || seen.has(event.imageId)) return;
  seen.add(event.imageId);
  const record = await p?.record(event.imageId);
  if (!record) return;
  if (record.status === status.failed) {
    console.log(`✗ ${record.imageId} failed: ${record.error.code}: ${record.error.message}`);
    return;
  }
  const tags = record.tags.map((t) => t.label ?? t).join(", ");
  console.log(`✓ ${record.imageId} done in ${Math.round(event.durationMs)} ms; tagged: ${tags || "(none above MIN_SCORE)"}`);
  for (const l of record.labels) {
    console.log(`    ${mark(l.score, record.minScore)} ${l.score.toFixed(3)}  ${l.label}`);
  }
}

async function stop() {
  console.log("\nstopping…");
  await p?.close().catch(() => {});
  await localAi?.close().catch(() => {});
  process.exit(0);
}
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, stop);

try {
  p = await startPipeline({
    port,
    persist: path.join(ROOT, ".local", "state"),
    // A batch is taken after 1 s instead of the configured 5 s, so an upload shows quickly;
    // every other queue setting is the configured one.
    queues: { "*": { maxBatchTimeout: 1 } },
    ai: localAi ? { url: localAi.url } : {},
    onLine(line) {
      if (process.env.VERBOSE) console.log(line);
      report(line).catch(() => {});
    },
  });
} catch (error) {
  await localAi?.close();
  throw error;
}

const { url } = p;
console.log(`\nImage tagger running at ${url}`);
console.log(`  page:    ${url}`);
console.log(`  upload:  curl -sS --data-binary @photo.jpg ${url}images`);
console.log(`  status:  curl -sS ${url}images/<imageId>`);
console.log(`State is kept in .local/state. Ctrl-C stops everything.\n`);
