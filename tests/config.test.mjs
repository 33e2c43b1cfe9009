// One source of truth: the wrangler configs, the contract generated from Rust
// (local/contract.json) and the JavaScript around the workers agree, and the launcher's
// local D1 state is the one wrangler keeps.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { ROOT, WORKERS, readWorkerConfig, startPipeline, workerOptions } from "../local/pipeline.mjs";
import { bindings, contract, databaseName, keys, model, queues, varDefault, varName, varNames } from "../local/contract.mjs";

const tagger = workerOptions("tagger");
const upload = workerOptions("upload");

test("the image queue dead-letters into the DLQ, which the tagger consumes too", () => {
  assert.equal(upload.queueProducers[bindings.imageQueue]?.queueName, queues.images, "the upload worker produces to the image queue");
  const main = tagger.queueConsumers[queues.images];
  assert.ok(main, "the tagger consumes the image queue");
  assert.equal(main.deadLetterQueue, queues.imagesDeadLetter, "its dead letter queue");
  const dlq = tagger.queueConsumers[queues.imagesDeadLetter];
  assert.ok(dlq, "the tagger consumes the dead letter queue");
  assert.notEqual(dlq.deadLetterQueue, queues.images, "dead letters never loop back");
  assert.notEqual(dlq.deadLetterQueue, queues.imagesDeadLetter, "nor into themselves");
  // The launcher passes on exactly what the config says (Miniflare's defaults differ).
  for (const c of readWorkerConfig("tagger").queues.consumers) {
    const loaded = tagger.queueConsumers[c.queue];
    assert.equal(loaded.maxBatchSize, c.max_batch_size, `${c.queue} max_batch_size`);
    assert.equal(loaded.maxBatchTimeout, c.max_batch_timeout, `${c.queue} max_batch_timeout`);
    assert.equal(loaded.maxRetries, c.max_retries, `${c.queue} max_retries`);
    assert.equal(loaded.deadLetterQueue, c.dead_letter_queue, `${c.queue} dead_letter_queue`);
  }
});

test("vars that mirror a config value equal it: MAX_RETRIES is the image queue's max_retries", () => {
  assert.equal(tagger.bindings.MAX_RETRIES, String(tagger.queueConsumers[queues.images].maxRetries));
});

test("UPLOAD_RATE_PERIOD_SECONDS is the period of the upload rate limit; the config never opens the API", () => {
  const config = readWorkerConfig("upload");
  const limiter = (config.ratelimits ?? []).find((r) => r.name === bindings.uploadLimiter);
  assert.ok(limiter, "the upload worker has the rate limit binding");
  assert.ok([10, 60].includes(limiter.simple.period), "a period the platform allows");
  assert.equal(config.vars[varName.UPLOAD_RATE_PERIOD_SECONDS], String(limiter.simple.period));
  assert.equal(config.vars[varName.ALLOW_ANONYMOUS], undefined, "ALLOW_ANONYMOUS is for local runs only");
  assert.equal(config.vars[varName.API_TOKEN], undefined, "the operator key is a secret, never a var");
});

test("the configs use the contract's names: bindings, vars, queues, D1 database", () => {
  const known = new Set(Object.values(bindings));
  for (const role of Object.keys(WORKERS)) {
    const config = readWorkerConfig(role);
    const names = [
      ...(config.r2_buckets ?? []).map((b) => b.binding),
      ...(config.kv_namespaces ?? []).map((b) => b.binding),
      ...(config.d1_databases ?? []).map((b) => b.binding),
      ...(config.queues?.producers ?? []).map((b) => b.binding),
      ...(config.durable_objects?.bindings ?? []).map((b) => b.name),
      ...(config.ai ? [config.ai.binding] : []),
      ...(config.ratelimits ?? []).map((b) => b.name),
    ];
    for (const name of names) assert.ok(known.has(name), `${role}: binding ${name} is not in the contract`);
    for (const name of Object.keys(config.vars ?? {})) {
      assert.ok(varNames.includes(name), `${role}: var ${name} is not documented in the contract`);
    }
    const queueNames = new Set(Object.values(queues));
    for (const q of [...(config.queues?.producers ?? []), ...(config.queues?.consumers ?? [])]) {
      assert.ok(queueNames.has(q.queue), `${role}: queue ${q.queue} is not in the contract`);
      if (q.dead_letter_queue) assert.ok(queueNames.has(q.dead_letter_queue), `${role}: ${q.dead_letter_queue}`);
    }
    for (const db of config.d1_databases ?? []) assert.equal(db.database_name, databaseName, `${role}: D1 database name`);
  }
  assert.equal(readWorkerConfig("tagger").ai?.binding, bindings.ai);
});

test("no JavaScript file spells out a queue name, key prefix or the model: only the contract has them", () => {
  // local/, scripts/, tests/ and bench/, as git sees them (tracked, or new and not ignored),
  // without bench/reference (a self-contained TypeScript reference with names of its own).
  // JavaScript and JSON only: shell scripts are not part of the JS tree.
  const files = execFileSync("git", ["ls-files", "--cached", "--others", "--exclude-standard", "local", "scripts", "tests", "bench"], {
    cwd: ROOT,
    encoding: "utf8",
  })
    .split("\n")
    .filter((f) => /\.(m?js|cjs|json)$/.test(f) && !f.startsWith("bench/reference/"));
  assert.ok(files.includes("local/contract.json") && files.includes("tests/config.test.mjs"), "the search sees the tree");
  const literals = [keys.prefix.record, queues.images, model];
  const found = [];
  for (const file of files) {
    let text;
    try {
      text = readFileSync(path.join(ROOT, file), "utf8");
    } catch {
      continue; // listed by git but deleted in the working tree
    }
    for (const literal of literals) if (text.includes(literal)) found.push(`${file}: ${literal}`);
  }
  assert.deepEqual(
    found.filter((f) => !f.startsWith("local/contract.json:")).sort(),
    [],
    "only local/contract.json may name these",
  );
  assert.equal(found.length, literals.length, "local/contract.json has each of them");
});

test("the contract lists each name once", () => {
  const unique = (list, what) => assert.equal(new Set(list).size, list.length, `${what} are unique`);
  unique(contract.apiErrors.map((e) => e.code), "API error codes");
  unique(contract.tagErrors.map((e) => e.code), "tag error codes");
  unique(contract.aiErrors.map((e) => e.code), "AI error codes");
  unique(contract.outcomes, "outcomes");
  unique(contract.vars.map((v) => v.name), "vars");
  unique(Object.values(queues), "queue names");
  for (const e of contract.aiErrors) assert.ok(e.httpStatus >= 400 && e.httpStatus < 600, `${e.code} has an HTTP error status`);
});

/** Runs the wrangler CLI in the repository; returns its output. */
function wrangler(args) {
  return execFileSync(path.join(ROOT, "node_modules/.bin/wrangler"), args, {
    cwd: ROOT,
    encoding: "utf8",
    env: { ...process.env, WRANGLER_LOG: "log", WRANGLER_SEND_METRICS: "false", CI: "true", FORCE_COLOR: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

test("D1 migrations: the launcher and `wrangler d1 migrations apply --local` agree on what is applied", async () => {
  const config = path.relative(ROOT, WORKERS.tagger);
  const db = bindings.db;
  const byWrangler = mkdtempSync(path.join(tmpdir(), "migrations-wrangler-"));
  const byLauncher = mkdtempSync(path.join(tmpdir(), "migrations-launcher-"));
  try {
    // wrangler first: the launcher finds everything applied and the schema in place.
    wrangler(["d1", "migrations", "apply", db, "--local", "--persist-to", byWrangler, "-c", config]);
    const p = await startPipeline({ persist: byWrangler, ai: {} });
    try {
      assert.deepEqual(p.migrations[db].applied, [], "nothing left to apply");
      assert.ok(p.migrations[db].skipped.length > 0, "wrangler's migrations are recorded as applied");
      const tables = await (await p.db()).prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all();
      assert.ok(tables.results.length > 2, "the schema is there");
    } finally {
      await p.close();
    }

    // The launcher first: wrangler has nothing to apply.
    const q = await startPipeline({ persist: byLauncher });
    const applied = q.migrations[db].applied;
    await q.close();
    assert.ok(applied.length > 0, "the launcher applied the migrations");
    const output = wrangler(["d1", "migrations", "list", db, "--local", "--persist-to", byLauncher, "-c", config]);
    assert.match(output, /No migrations to apply/, output);
  } finally {
    rmSync(byWrangler, { recursive: true, force: true });
    rmSync(byLauncher, { recursive: true, force: true });
  }
});

test("the README's configuration table lists every var the code reads, with its default", () => {
  const readme = readFileSync(path.join(ROOT, "README.md"), "utf8");
  const section = readme.slice(readme.indexOf("## Configuration"), readme.indexOf("### What the tagger sends"));
  const rows = new Map(
    [...section.matchAll(/^\| `([A-Z_]+)`(?: \(secret\))? \| \w+ \| ([^|]+) \|/gm)].map(([, name, value]) => [name, value.trim()]),
  );
  const documented = (v) => (v.default == null ? "unset" : v.default === "" ? "empty" : `\`${v.default}\``);
  assert.deepEqual(
    [...rows.keys()].sort(),
    contract.vars.map((v) => v.name).sort(),
    "one row per var of the contract, and no other",
  );
  for (const v of contract.vars) assert.equal(rows.get(v.name), documented(v), `default of ${v.name}`);
});

test("the image queue's retry_delay covers LEASE_SECONDS, and the tagger sets its CPU limit", () => {
  const config = readWorkerConfig("tagger");
  const consumer = config.queues.consumers.find((c) => c.queue === queues.images);
  const lease = Number(config.vars.LEASE_SECONDS ?? varDefault("LEASE_SECONDS"));
  // A crashed invocation's messages come back after the leases it left behind have expired,
  // instead of each spending an attempt on waiting for one.
  assert.ok(consumer.retry_delay >= lease, `retry_delay ${consumer.retry_delay} s < LEASE_SECONDS ${lease} s`);
  assert.equal(tagger.queueConsumers[queues.images].retryDelay, consumer.retry_delay, "the launcher passes it on");
  // Workers Paid allows 30 s by default and at most 5 minutes (BENCHMARKS.md, "CPU limit").
  assert.ok(config.limits?.cpu_ms > 0 && config.limits.cpu_ms <= 300_000, `cpu_ms ${config.limits?.cpu_ms}`);
});
