// The local run's AI: the real offline classifier (crates/local-ai) behind the `Ai` binding,
// end to end through both workers. A cat photo comes back with cat labels; bytes that only
// look like an image fail as `invalid_image`, permanently, without retries.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import path from "node:path";

import { startPipeline, ROOT } from "../local/pipeline.mjs";
import { startLocalAi } from "../local/local-ai.mjs";
import { outcome, status, tagError } from "../local/contract.mjs";
import { garbagePng } from "../local/images.mjs";
import { FAST_QUEUES, upload } from "./support/helpers.mjs";

const BIN = path.join(ROOT, "target/debug/local-ai");
let modelDir;
let server;
let p;

before(async () => {
  assert.ok(existsSync(BIN), `${BIN} is missing: scripts/test.sh builds it (cargo build -p local-ai)`);
  modelDir = execFileSync(path.join(ROOT, "scripts/fetch-model.sh"), { encoding: "utf8" }).trim();
  server = await startLocalAi(BIN, modelDir, { args: ["--quiet"] });
  p = await startPipeline({ queues: FAST_QUEUES, ai: { url: server.url } });
});

after(async () => {
  await p?.close();
  await server?.close();
});

test("a real cat photo is tagged with cat classes", async () => {
  const photo = readFileSync(path.join(modelDir, "chelsea.png"));
  const imageId = await upload(p, photo);
  const record = await p.waitForStatus(imageId, undefined, { timeoutMs: 60_000 });
  assert.equal(record.status, status.done, JSON.stringify(record));
  assert.equal(record.labels.length, 5);
  const top3 = record.labels.slice(0, 3).map((l) => l.label);
  console.log(`chelsea.png top 3: ${record.labels.slice(0, 3).map((l) => `${l.label} ${l.score.toFixed(3)}`).join(", ")}`);
  assert.ok(top3.some((l) => /CAT|TABBY/.test(l)), `a cat class in the top 3: ${top3}`);
  const sorted = [...record.labels].sort((a, b) => b.score - a.score);
  assert.deepEqual(record.labels, sorted, "labels come sorted by score");
});

test("bytes that are not a decodable image fail as invalid_image before the model, without retries", async () => {
  const imageId = await upload(p, garbagePng(4096)); // the magic bytes pass the upload's sniffing
  const record = await p.waitForStatus(imageId, undefined, { timeoutMs: 30_000 });
  assert.equal(record.status, status.failed);
  assert.equal(record.error.code, tagError.invalid_image);
  assert.match(record.error.message, /not a usable image/, "the tagger's own decoder refused it");
  assert.equal(record.attempts, 1);
  // The tagger writes the record before it logs the outcome: wait for the line, then let a
  // barrier prove that no retry follows (a retry of attempt 1 would come within 4 s).
  await p.waitForOutcome({ imageId, outcome: outcome.failed });
  await p.barrier({ delaySeconds: 4 });
  const outcomes = p.outcomes().filter((o) => o.imageId === imageId).map((o) => o.outcome);
  assert.deepEqual(outcomes, [outcome.failed]);
});
