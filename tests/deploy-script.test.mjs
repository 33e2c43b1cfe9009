// The one-command deploy (scripts/deploy.mjs) and teardown (scripts/teardown.mjs), offline:
// a fake `wrangler` first on PATH (tests/support/fake-wrangler.mjs) keeps a pretend account,
// records every call and answers as wrangler 4.86 does. The smoke test runs against the local
// pipeline (local/pipeline.mjs) as if it were the deployed URL. The generated configs are
// also checked by the real wrangler (`deploy --dry-run`).

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { ROOT, startPipeline } from "../local/pipeline.mjs";
import { ENVIRONMENTS, generateConfig, planFor, readRawConfig } from "../scripts/lib/deploy-plan.mjs";

const ENV = "staging";
const plan = planFor(ENV);
const tagger = plan.workers.find((w) => w.role === "tagger");
const upload = plan.workers.find((w) => w.role === "upload");
const MIGRATIONS = readdirSync(path.join(ROOT, "migrations")).filter((f) => f.endsWith(".sql")).sort();

/** A fresh fake account and a folder for the deploy's generated files. */
function sandbox(account = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "deploy-script-"));
  const bin = path.join(dir, "bin");
  mkdirSync(bin);
  const fake = path.join(bin, "wrangler");
  writeFileSync(fake, `#!/bin/sh\nexec "${process.execPath}" "${path.join(ROOT, "tests/support/fake-wrangler.mjs")}" "$@"\n`);
  chmodSync(fake, 0o755);
  const stateFile = path.join(dir, "account.json");
  writeFileSync(stateFile, JSON.stringify(account));
  const box = {
    dir,
    stateFile,
    env: {
      ...process.env,
      PATH: `${bin}${path.delimiter}${process.env.PATH}`,
      FAKE_WRANGLER_STATE: stateFile,
      DEPLOY_STATE_DIR: path.join(dir, "deploy"),
      API_TOKEN: "",
      WRANGLER: "",
    },
    account: () => JSON.parse(readFileSync(stateFile, "utf8")),
    /** Changes the fake account (failures to inject, URLs to print). */
    edit(change) {
      const state = box.account();
      change(state);
      writeFileSync(stateFile, JSON.stringify(state));
    },
    /** Runs a script; resolves to { code, stdout, stderr, calls } (calls: wrangler's, this run only). */
    async run(script, args, { env = {}, input } = {}) {
      const before = box.account().calls?.length ?? 0;
      const result = await new Promise((resolve) => {
        const child = execFile(
          process.execPath,
          [path.join(ROOT, "scripts", script), ...args],
          { cwd: ROOT, env: { ...box.env, ...env }, maxBuffer: 16 * 1024 * 1024, timeout: 300_000 },
          (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0, stdout, stderr }),
        );
        if (input !== undefined) child.stdin.end(input);
        else child.stdin.end();
      });
      return { ...result, calls: box.account().calls.slice(before).map((c) => c.join(" ")) };
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
  return box;
}

const CHANGING = /^(r2 bucket create|queues create|kv namespace create|d1 create|d1 migrations apply|deploy|secret (put|bulk)|delete|r2 bucket delete|queues delete|kv namespace delete|d1 delete)\b/;
const changingCalls = (calls) => calls.filter((c) => CHANGING.test(c));
const resourceNames = () => ({
  r2: plan.resources.r2.map((r) => r.name),
  queue: plan.resources.queue.map((r) => r.name),
  kv: plan.resources.kv.map((r) => r.name),
  d1: plan.resources.d1.map((r) => r.name),
});
const occurrences = (text, needle) => text.split(needle).length - 1;
/** A generated config, parsed (JSONC with whole-line comments). */
const readGenerated = (file) => JSON.parse(readFileSync(file, "utf8").replace(/^\s*\/\/.*$/gm, ""));
const show = (r) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

test("a fresh deploy creates every resource once, sets the secrets, deploys the tagger then the upload worker, and its smoke test passes against the pipeline; a second run changes nothing", async () => {
  const key = "test-operator-key-0123456789";
  const p = await startPipeline({ vars: { upload: { API_TOKEN: key } } });
  const box = sandbox({ urls: { [upload.name]: String(p.url).replace(/\/$/, "") } });
  try {
    const first = await box.run("deploy.mjs", ["--env", ENV, "--no-build"], { env: { API_TOKEN: key } });
    assert.equal(first.code, 0, show(first));
    const account = box.account();
    const names = resourceNames();

    // Every resource, once; the two workers share them (one KV namespace, one database).
    assert.deepEqual(Object.keys(account.buckets).sort(), names.r2.sort());
    assert.deepEqual(Object.keys(account.queues).sort(), names.queue.sort());
    assert.deepEqual(Object.values(account.kv).map((n) => n.title), names.kv);
    assert.deepEqual(Object.values(account.d1).map((d) => d.name), names.d1);
    for (const name of [...names.r2, ...names.queue, ...names.kv, ...names.d1]) {
      assert.equal(first.calls.filter((c) => / create /.test(` ${c} `) && c.endsWith(` ${name}`)).length, 1, `${name} created once`);
    }
    const configs = Object.fromEntries(
      plan.workers.map((w) => [w.role, readGenerated(path.join(box.dir, "deploy", ENV, `wrangler.${w.role}.jsonc`))]),
    );
    const kvId = Object.keys(account.kv)[0];
    const dbId = Object.keys(account.d1)[0];
    for (const c of Object.values(configs)) {
      for (const n of c.kv_namespaces ?? []) assert.equal(n.id, kvId, `${c.name}: the one KV namespace`);
      for (const d of c.d1_databases ?? []) assert.equal(d.database_id, dbId, `${c.name}: the one D1 database`);
    }
    assert.equal(configs.upload.durable_objects.bindings[0].script_name, tagger.name, "the upload worker binds the staging tagger's pacer");

    // Migrations, remotely; secrets; the tagger deployed before the upload worker.
    assert.deepEqual(account.d1[dbId].applied, MIGRATIONS);
    assert.ok(first.calls.some((c) => /^d1 migrations apply \S+ --remote/.test(c)), first.calls.join("\n"));
    const deploys = first.calls.filter((c) => c.startsWith("deploy "));
    assert.equal(deploys.length, 2);
    assert.match(deploys[0], /wrangler\.tagger\.jsonc/);
    assert.match(deploys[1], /wrangler\.upload\.jsonc/);
    assert.deepEqual(account.workers[tagger.name].secrets, ["WEBHOOK_SECRET"]);
    assert.deepEqual(account.workers[upload.name].secrets.sort(), ["API_TOKEN", "CURSOR_SECRET"]);
    const webhookSecret = account.workers[tagger.name].secretValues.WEBHOOK_SECRET;
    assert.match(webhookSecret, /^whsec_[A-Za-z0-9+/]{43}=$/, "a Standard Webhooks secret of 32 random bytes");
    assert.equal(account.workers[upload.name].secretValues.API_TOKEN, key, "the operator key given in the environment");
    assert.ok(account.workers[upload.name].secretValues.CURSOR_SECRET.length >= 43);
    assert.equal(occurrences(first.stdout, webhookSecret), 1, "the webhook secret is printed once");
    assert.equal(occurrences(first.stdout, key), 0, "a key from the environment is not printed");
    assert.equal(occurrences(first.stdout, account.workers[upload.name].secretValues.CURSOR_SECRET), 0);

    // The smoke test ran against the pipeline: uploaded, tagged, deleted.
    assert.match(first.stdout, /POST .*\/images: /);
    assert.match(first.stdout, /done after [\d.]+ s: tags \[/);
    assert.match(first.stdout, /smoke test passed/);
    const rows = await (await p.db()).prepare("SELECT COUNT(*) AS n FROM images").first();
    assert.equal(rows.n, 0, "the smoke test's image is deleted");
    assert.ok(p.ai.calls.length >= 1, "the image went through the AI");

    // The same command again: nothing created, applied, set or deployed, and it says so.
    const again = await box.run("deploy.mjs", ["--env", ENV, "--no-build"], { env: { API_TOKEN: key } });
    assert.equal(again.code, 0, show(again));
    assert.deepEqual(changingCalls(again.calls), [], "no call that changes the account");
    assert.ok(!again.calls.some((c) => c.includes("--secrets-file")), "no secret set");
    assert.match(again.stdout, /Nothing changed/);
    assert.match(again.stdout, /smoke test passed/, "the smoke test runs on every deploy");
    const after = box.account();
    for (const field of ["buckets", "queues", "kv", "d1"]) assert.deepEqual(after[field], account[field], field);
    assert.equal(after.workers[tagger.name].deployments.length, 1);
    assert.equal(after.workers[upload.name].deployments.length, 1);
  } finally {
    await p.close();
    box.close();
  }
});

test("a deploy that fails half-way completes when run again, creating nothing twice; the operator key is generated and printed once", async () => {
  const box = sandbox();
  try {
    const dlq = plan.resources.queue.at(-1).name;
    box.edit((s) => {
      s.failures = [
        { match: `queues create ${dlq}`, times: 1, message: "A request to the Cloudflare API (/accounts/0/queues) failed.\n\nInternal error [code: 10013]" },
        { match: "wrangler.upload.jsonc --message", times: 1, message: "A request to the Cloudflare API (/accounts/0/workers/scripts) failed.\n\nService unavailable [code: 10013]" },
      ];
    });
    const args = ["--env", ENV, "--no-build", "--no-smoke"];

    const one = await box.run("deploy.mjs", args);
    assert.equal(one.code, 1, show(one));
    assert.match(one.stderr, /could not create queue .*Internal error/s);
    assert.ok(!one.calls.some((c) => c.startsWith("deploy ")), "nothing deployed before every resource exists");

    const two = await box.run("deploy.mjs", args);
    assert.equal(two.code, 1, show(two));
    assert.match(two.stderr, /Service unavailable/);
    assert.ok(box.account().workers[tagger.name], "the tagger was deployed before the failure");
    assert.ok(!box.account().workers[upload.name], "the upload worker was not");
    assert.match(two.stdout, /WEBHOOK_SECRET, the webhook signing secret/);

    const three = await box.run("deploy.mjs", args);
    assert.equal(three.code, 0, show(three));
    const all = [...one.calls, ...two.calls, ...three.calls];
    for (const name of [...plan.resources.r2, ...plan.resources.queue, ...plan.resources.kv, ...plan.resources.d1].map((r) => r.name)) {
      assert.ok(box.account().buckets[name] || box.account().queues[name] || Object.values(box.account().kv).some((n) => n.title === name) || Object.values(box.account().d1).some((d) => d.name === name), `${name} exists`);
      const creates = all.filter((c) => / create /.test(` ${c} `) && c.endsWith(` ${name}`)).length;
      assert.equal(creates, name === dlq ? 2 : 1, `${name}: created once (the failed attempt aside)`);
    }
    assert.equal(all.filter((c) => c.startsWith("d1 migrations apply")).length, 1, "migrations applied once");
    assert.equal(box.account().workers[tagger.name].deployments.length, 1, "the tagger, already deployed, is left alone");
    assert.equal(box.account().workers[upload.name].deployments.length, 1);
    assert.doesNotMatch(three.stdout, /WEBHOOK_SECRET, the webhook/, "the webhook secret was printed by the run that set it");
    const operatorKey = box.account().workers[upload.name].secretValues.API_TOKEN;
    assert.match(operatorKey, /^[A-Za-z0-9_-]{43}$/, "a generated key of 32 random bytes");
    assert.equal(occurrences(three.stdout, operatorKey), 1, "the operator key is printed once");
    assert.match(three.stdout, /smoke test\n\s+skipped \(--no-smoke\)/);
  } finally {
    box.close();
  }
});

test("without a login the deploy stops before it touches anything, and says how to log in", async () => {
  const box = sandbox({ loggedIn: false });
  try {
    const r = await box.run("deploy.mjs", ["--env", ENV, "--no-build", "--no-smoke"]);
    assert.equal(r.code, 1, show(r));
    assert.match(r.stderr, /not logged in: run `npx wrangler login`/);
    assert.deepEqual(r.calls, [["--version"], ["whoami", "--json"]].map((c) => c.join(" ")));
  } finally {
    box.close();
  }
});

test("teardown asks first, then removes every worker and resource of the environment; run again, it finds nothing", async () => {
  const box = sandbox();
  try {
    const production = planFor("production");
    const deployed = await box.run("deploy.mjs", ["--env", ENV, "--no-build", "--no-smoke"]);
    assert.equal(deployed.code, 0, show(deployed));
    const other = await box.run("deploy.mjs", ["--env", "production", "--no-build", "--no-smoke"]);
    assert.equal(other.code, 0, show(other));
    assert.ok(box.account().workers[production.workers[0].name], "production deployed next to staging");

    const refused = await box.run("teardown.mjs", ["--env", ENV], { input: "no\n" });
    assert.equal(refused.code, 1, show(refused));
    assert.match(refused.stdout, /Not confirmed: nothing deleted/);
    assert.deepEqual(changingCalls(refused.calls), []);

    const removed = await box.run("teardown.mjs", ["--env", ENV], { input: `${ENV}\n` });
    assert.equal(removed.code, 0, show(removed));
    const account = box.account();
    const left = [
      ...Object.keys(account.buckets),
      ...Object.keys(account.queues),
      ...Object.values(account.kv).map((n) => n.title),
      ...Object.values(account.d1).map((d) => d.name),
      ...Object.keys(account.workers),
    ];
    const productionNames = [...production.workers.map((w) => w.name), ...Object.values(resourceNamesOf(production)).flat()];
    assert.deepEqual(left.sort(), productionNames.sort(), "only production is left");
    const deletes = removed.calls.filter((c) => c.startsWith("delete "));
    assert.deepEqual(deletes, [upload.name, tagger.name].map((n) => `delete --name ${n} --force`), "the upload worker, then the tagger");

    const again = await box.run("teardown.mjs", ["--env", ENV, "--yes"]);
    assert.equal(again.code, 0, show(again));
    assert.match(again.stdout, /Nothing of it exists/);
    assert.deepEqual(changingCalls(again.calls), []);
  } finally {
    box.close();
  }
});

function resourceNamesOf(p) {
  return Object.fromEntries(Object.entries(p.resources).map(([kind, list]) => [kind, list.map((r) => r.name)]));
}

test("each environment counts uploads in a rate-limit namespace of its own; production's is the committed one", () => {
  const committed = readRawConfig("upload").ratelimits.map((r) => r.namespace_id);
  const ids = ENVIRONMENTS.map((env) => {
    const p = planFor(env);
    const ids = {
      kv: Object.fromEntries(p.resources.kv.map((r) => [r.base, `kv-${env}`])),
      d1: Object.fromEntries(p.resources.d1.map((r) => [r.base, `d1-${env}`])),
    };
    const config = generateConfig(p, p.workers.find((w) => w.role === "upload"), ids);
    return config.ratelimits.map((r) => r.namespace_id);
  });
  assert.ok(committed.length > 0, "the upload worker has a rate limit");
  assert.equal(new Set(ids.flat()).size, ids.flat().length, `no namespace shared: ${JSON.stringify(ids)}`);
  assert.deepEqual(ids[ENVIRONMENTS.indexOf("production")], committed);
  for (const id of ids.flat()) assert.match(id, /^[1-9][0-9]*$/, "a positive integer");
});

test("the generated configs are valid for the real wrangler: `wrangler deploy --dry-run` bundles both with every binding", async () => {
  const box = sandbox();
  try {
    const r = await box.run("deploy.mjs", ["--env", ENV, "--no-build", "--no-smoke"]);
    assert.equal(r.code, 0, show(r));
    for (const worker of plan.workers) {
      const config = path.join(box.dir, "deploy", ENV, `wrangler.${worker.role}.jsonc`);
      const outdir = path.join(box.dir, `out-${worker.role}`);
      const run = spawnSync(path.join(ROOT, "node_modules/.bin/wrangler"), ["deploy", "--dry-run", "--outdir", outdir, "-c", config], {
        cwd: ROOT,
        encoding: "utf8",
        env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_LOG: "log", FORCE_COLOR: "0" },
      });
      const output = run.stdout;
      assert.equal(run.status, 0, `${run.stdout}\n${run.stderr}`);
      assert.match(output, /--dry-run: exiting now/);
      assert.doesNotMatch(`${run.stdout}${run.stderr}`, /Unexpected fields|\[ERROR\]/, "wrangler takes the config as it is");
      const generated = readGenerated(config);
      for (const q of generated.queues?.producers ?? []) assert.match(output, new RegExp(`env\\.${q.binding}\\s+\\(${q.queue}\\)`), q.queue);
      for (const d of generated.d1_databases ?? []) assert.ok(output.includes(d.database_id) || output.includes(d.database_name), d.database_name);
    }
  } finally {
    box.close();
  }
});
