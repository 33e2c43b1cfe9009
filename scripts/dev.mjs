// The local run: the pipeline launcher (local/pipeline.mjs) with state kept in
// .local/state (wrangler's layout, so `wrangler d1 ... --local --persist-to .local/state`
// sees the same database) and `AI` served locally. No Cloudflare account.
//
//   node scripts/dev.mjs [--port 8787] [--local-ai BIN --model-dir DIR] [--callback URL|local]
//
// With --local-ai, `AI` is the real offline classifier (crates/local-ai, EfficientNet-Lite0
// standing in for resnet-50); without it, the AI stub, whose fixed labels say that they are
// not a real classification.
// Prints the URL, then one line per finished image with all its labels.
//
// With --callback, every upload without a Callback-Url header gets that URL as its webhook
// (WEBHOOK_URL; plain http to localhost is allowed in local runs), signed with the
// WEBHOOK_SECRET from the environment or a fresh one (printed), and each delivery attempt's
// outcome is printed. `--callback local` starts a receiver here that verifies and prints
// every event. Without --callback nothing is sent (the demo page needs no webhook).

import http from "node:http";
import path from "node:path";
import { randomBytes } from "node:crypto";

import { ROOT, parseOutcome, startPipeline } from "../local/pipeline.mjs";
import { startLocalAi } from "../local/local-ai.mjs";
import { contract, namesOf, outcome, status } from "../local/contract.mjs";

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

const callbackArg = argValue("--callback");
const webhookSecret = process.env.WEBHOOK_SECRET || `whsec_${randomBytes(32).toString("base64")}`;
const receiver = callbackArg === "local" ? await startLocalReceiver(webhookSecret) : null;
const callback = receiver?.url ?? callbackArg;

/** A receiver on 127.0.0.1 that verifies each webhook (standardwebhooks) and prints it. */
async function startLocalReceiver(secret) {
  const { Webhook } = await import("standardwebhooks");
  const verifier = new Webhook(secret);
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      try {
        const event = verifier.verify(body, req.headers);
        const tags = event.data.tags?.join(", ") || event.data.error?.code || "";
        console.log(`  ⇢ receiver: verified ${event.type} for ${event.data.imageId} (${req.headers["webhook-id"]}) ${tags}`);
        res.writeHead(204).end();
      } catch (e) {
        console.log(`  ⇢ receiver: REFUSED a delivery: ${e.message}`);
        res.writeHead(400).end();
      }
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${server.address().port}/webhook`, close: () => server.close() };
}

const delivery = namesOf(contract.webhooks.outcomes, "delivery outcome");

/** Prints a webhook delivery attempt's outcome from the tagger's delivery log line. */
function reportDelivery(line) {
  if (line.includes('"invalid_webhook_url"')) {
    const { detail } = JSON.parse(line.slice(line.indexOf("{")));
    console.log(`!! ${detail}`);
    return;
  }
  if (!line.includes(`"${contract.logEvents.notify}"`)) return;
  const d = JSON.parse(line.slice(line.indexOf("{")));
  if (![delivery.delivered, delivery.retry, delivery.failed].includes(d.outcome)) return;
  const answer = d.status ? `HTTP ${d.status}` : d.error;
  const next = d.outcome === delivery.retry ? `, next attempt in ${d.delaySeconds} s` : "";
  const why = d.outcome !== delivery.delivered && d.status && d.error ? ` (${d.error})` : "";
  console.log(`↪ webhook ${d.type} of ${d.imageId} to ${d.host}: ${d.outcome} after attempt ${d.attempt}: ${answer}${why}${next}`);
}

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
  const categories = (record.categories ?? []).map((c) => `${c.name} ${c.score.toFixed(3)}`).join(", ");
  console.log(`    categories: ${categories || "(none above MIN_SCORE)"}`);
  for (const l of record.labels) {
    console.log(`    ${mark(l.score, record.minScore)} ${l.score.toFixed(3)}  ${l.label}`);
  }
}

async function stop() {
  console.log("\nstopping…");
  await p?.close().catch(() => {});
  await localAi?.close().catch(() => {});
  receiver?.close();
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
    vars: callback
      ? {
          upload: { WEBHOOK_URL: callback, ALLOW_INSECURE_CALLBACKS: "true" },
          // The tagger checks the stored URL again before each delivery, with the same policy.
          tagger: { WEBHOOK_SECRET: webhookSecret, ALLOW_INSECURE_CALLBACKS: "true" },
        }
      : {},
    onLine(line) {
      if (process.env.VERBOSE) console.log(line);
      report(line).catch(() => {});
      try {
        reportDelivery(line);
      } catch {
        // not a JSON line
      }
    },
  });
} catch (error) {
  await localAi?.close();
  receiver?.close();
  throw error;
}

const { url } = p;
console.log(`\nImage tagger running at ${url}`);
console.log(`  page:    ${url}`);
console.log(`  upload:  curl -sS --data-binary @photo.jpg ${url}images`);
console.log(`  status:  curl -sS ${url}images/<imageId>`);
if (callback) {
  console.log(`  webhook: every upload is reported to ${callback}${receiver ? " (a local receiver that verifies and prints each event)" : ""}`);
  console.log(`           (or send a Callback-Url header); signed with WEBHOOK_SECRET=${webhookSecret}`);
}
console.log(`State is kept in .local/state. Ctrl-C stops everything.\n`);
