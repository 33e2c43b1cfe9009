// From zero to a deployed, smoke-tested pipeline in one command (scripts/deploy.sh):
//
//   node scripts/deploy.mjs --env staging|production [--no-build] [--no-smoke]
//                           [--url URL] [--photo FILE] [--smoke-timeout SECONDS]
//
// 1. wrangler is logged in (one account, or CLOUDFLARE_ACCOUNT_ID), and what the plan must allow.
// 2. Every resource the configs bind exists: created if missing, found by name otherwise
//    (scripts/lib/deploy-plan.mjs names them per environment). Shared ones are created once.
// 3. The per-environment configs (.deploy/<env>/wrangler.<role>.json) carry the ids.
// 4. D1 migrations not yet applied remotely are applied.
// 5. Secrets a worker lacks are generated and go up with its deployment (`--secrets-file`),
//    so no version ever runs without them; the operator key and the webhook secret are
//    printed once, after the deployment that set them. A secret given in the environment
//    (e.g. API_TOKEN=...) is used instead of a generated one.
// 6. The workers are built and deployed in dependency order (the tagger, then the upload
//    worker); a worker whose deployed version already is this build and config is left alone.
// 7. A smoke test against the deployed URL: upload a photo, wait for its tags, delete it.
// A second run finds everything in place, changes nothing and says so.

import { randomBytes } from "node:crypto";
import { execSync } from "node:child_process";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import {
  ENVIRONMENTS,
  ROOT,
  allResources,
  configText,
  describe,
  errorLines,
  exists,
  fingerprint,
  generateConfig,
  generatedConfigPath,
  inventory,
  listD1,
  listKv,
  parseJson,
  planFor,
  wrangler,
  wranglerOk,
  writeIfChanged,
} from "./lib/deploy-plan.mjs";
import { status, varNames } from "../local/contract.mjs";

/** What the pipeline needs of the plan, with the pages that say what each plan allows. */
const PLAN_NEEDS = [
  "CPU per invocation: Workers Free allows 10 ms; one 4000 × 3000 JPEG costs the tagger 210–540 ms (BENCHMARKS.md).",
  "Subrequests per invocation: Free allows 50; a batch of 10 images makes about 65–70. Paid: 10,000.",
  "D1 queries per invocation: Free allows 50; Paid 1,000.",
];
const PLAN_DOCS = [
  "https://developers.cloudflare.com/workers/platform/limits/",
  "https://developers.cloudflare.com/d1/platform/limits/",
  "https://developers.cloudflare.com/workers/platform/pricing/",
];

/** Secrets the deploy makes when a worker lacks them; `show` ones are printed once. */
const SECRETS = {
  upload: [
    { name: "API_TOKEN", make: () => randomBytes(32).toString("base64url"), show: "operator key (send it as `Authorization: Bearer <key>`)" },
    { name: "CURSOR_SECRET", make: () => randomBytes(32).toString("base64url") },
  ],
  tagger: [
    { name: "WEBHOOK_SECRET", make: () => `whsec_${randomBytes(32).toString("base64")}`, show: "webhook signing secret (give it to your webhook receivers)" },
  ],
};
for (const s of Object.values(SECRETS).flat()) {
  if (!varNames.includes(s.name)) throw new Error(`secret ${s.name} is not a var of the contract`);
}

const argv = process.argv.slice(2);
// `npm run deploy --env staging --no-smoke` (without `--`) gives npm the flags: it keeps them as
// npm_config_* (`--env` alone as "true", its value left as an argument; `--no-x` as "").
const flag = (name) => argv.includes(name) || (name.startsWith("--no-") && process.env[`npm_config_${name.slice(5).replace(/-/g, "_")}`] === "");
const option = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const npmEnv = process.env.npm_config_env;
const env = option("--env") ?? (npmEnv === "true" ? argv.find((a) => !a.startsWith("-")) : npmEnv);
if (!ENVIRONMENTS.includes(env)) {
  console.error(`usage: scripts/deploy.sh --env ${ENVIRONMENTS.join("|")} [--no-build] [--no-smoke] [--url URL] [--photo FILE]`);
  process.exit(2);
}

const say = (line = "") => console.log(line);
const step = (title) => say(`\n== ${title}`);
const changes = { created: [], configs: [], migrations: [], secrets: [], deployed: [] };

try {
  await main();
} catch (e) {
  console.error(`\n!! deploy of ${env} stopped: ${e.message}`);
  console.error("   Run the same command again once that is fixed: what is done stays done.");
  process.exit(1);
}

async function main() {
  const plan = planFor(env);
  say(`== image tagger: deploying ${env} (${plan.workers.map((w) => w.name).join(", ")})`);
  checkLogin();

  const cpuMs = plan.workers.map((w) => w.raw.limits?.cpu_ms).find(Boolean);
  step("the plan: Workers Paid is required");
  for (const line of PLAN_NEEDS) say(`  - ${line}`);
  if (cpuMs) say(`  - The tagger asks for up to ${cpuMs} ms of CPU per invocation ([limits] cpu_ms); Paid allows up to 300,000.`);
  say(`  On Workers Free the deploy succeeds, then every batch with a real photo runs out of CPU. See:`);
  for (const url of PLAN_DOCS) say(`    ${url}`);

  step("resources");
  const inv = inventory(plan);
  for (const resource of allResources(plan)) {
    if (exists(inv, resource)) {
      say(`  ${describe(resource)}: exists`);
      continue;
    }
    create(resource);
    changes.created.push(describe(resource));
    say(`  ${describe(resource)}: created`);
  }
  // Ids of what was just created: listed again, never parsed from a create command's prose.
  const kvIds = plan.resources.kv.length ? listKv() : new Map();
  const d1Ids = plan.resources.d1.length ? listD1() : new Map();
  const ids = {
    kv: Object.fromEntries(plan.resources.kv.map((r) => [r.base, kvIds.get(r.name)])),
    d1: Object.fromEntries(plan.resources.d1.map((r) => [r.base, d1Ids.get(r.name)])),
  };

  step("configs (wrangler reads the ids from these; generated, do not edit)");
  const configs = new Map();
  for (const worker of plan.workers) {
    const file = generatedConfigPath(plan, worker);
    const text = configText(plan, worker, generateConfig(plan, worker, ids));
    const written = writeIfChanged(file, text);
    if (written) changes.configs.push(file);
    configs.set(worker.role, { file, text });
    say(`  ${file}: ${written ? "written" : "unchanged"}`);
  }

  step("D1 migrations");
  for (const db of plan.resources.d1) {
    const worker = plan.workers.find((w) => (w.raw.d1_databases ?? []).some((d) => d.database_name === db.base));
    const config = configs.get(worker.role).file;
    const pending = wranglerOk(["d1", "migrations", "list", db.binding, "--remote", "-c", config]).stdout;
    const names = /No migrations to apply/.test(pending) ? [] : [...new Set(pending.match(/[\w.-]+\.sql/g) ?? [])];
    if (!names.length) {
      say(`  ${db.name}: up to date`);
      continue;
    }
    wranglerOk(["d1", "migrations", "apply", db.binding, "--remote", "-c", config]);
    changes.migrations.push(...names.map((n) => `${db.name}: ${n}`));
    say(`  ${db.name}: applied ${names.join(", ")}`);
  }

  step("build");
  if (flag("--no-build")) say("  skipped (--no-build): deploying what is in the build folders");
  for (const worker of plan.workers) {
    if (flag("--no-build")) break;
    const command = worker.raw.build?.command;
    if (!command) continue;
    say(`  ${worker.name}: ${command}`);
    execSync(command, { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"] });
  }

  step("secrets and deployments (in dependency order)");
  const shown = [];
  const urls = {};
  let smoke = null;
  try {
    deployAll(plan, configs, shown, urls);
    remember(plan, urls);

    step("smoke test");
    smoke = await smokeTest(plan, urls, shown);

    step("done");
    const total = Object.values(changes).reduce((n, list) => n + list.length, 0);
    if (!total) {
      say("  Nothing changed: every resource, config, migration and secret was already in place,");
      say("  and every worker already runs this build.");
    } else {
      say(`  created ${changes.created.length} resource(s), wrote ${changes.configs.length} config(s), applied ${changes.migrations.length} migration(s),`);
      say(`  set ${changes.secrets.length} secret(s), deployed ${changes.deployed.length} worker(s)${changes.deployed.length ? `: ${changes.deployed.join(", ")}` : ""}.`);
    }
    const api = urls.upload ?? known(plan).urls?.upload;
    if (api) say(`  API: ${api}`);
  } finally {
    // Printed even when a later step fails: these values are stored nowhere else.
    printSecrets(shown);
  }
  if (smoke === false) process.exitCode = 1;
}

/** Sets missing secrets and deploys each worker that does not already run this build. */
function deployAll(plan, configs, shown, urls) {
  for (const worker of plan.workers) {
    const { file, text } = configs.get(worker.role);
    const present = secretNames(file);
    const missing = (SECRETS[worker.role] ?? []).filter((s) => !present.has(s.name));
    const values = Object.fromEntries(missing.map((s) => [s.name, process.env[s.name] || s.make()]));
    const print = (n) => (n.length ? n.join(", ") : "none");
    say(`  ${worker.name}: secrets present: ${print([...present])}; to set: ${print(missing.map((s) => s.name))}`);

    const fp = fingerprint(text, worker);
    const current = deployedFingerprint(file);
    if (current === fp && !missing.length) {
      say(`  ${worker.name}: unchanged (the deployed version is build ${fp}); not deployed`);
      continue;
    }
    const args = ["deploy", "-c", file, "--message", `scripts/deploy.mjs build ${fp}`];
    const secretsFile = path.join(os.tmpdir(), `deploy-secrets-${process.pid}-${worker.role}.json`);
    if (missing.length) {
      writeFileSync(secretsFile, JSON.stringify(values), { mode: 0o600 });
      args.push("--secrets-file", secretsFile);
    }
    let out;
    try {
      out = wranglerOk(args).stdout;
    } finally {
      rmSync(secretsFile, { force: true });
    }
    const version = out.match(/Current Version ID:\s*(\S+)/)?.[1] ?? "?";
    const targets = deployedTargets(out);
    if (targets.url) urls[worker.role] = targets.url;
    changes.deployed.push(worker.name);
    changes.secrets.push(...missing.map((s) => `${worker.name}: ${s.name}`));
    say(`  ${worker.name}: deployed (version ${version}, build ${fp})${missing.length ? `, with ${missing.map((s) => s.name).join(", ")}` : ""}`);
    for (const t of targets.lines) say(`      ${t}`);
    for (const s of missing.filter((x) => x.show)) {
      shown.push({ ...s, worker: worker.name, value: values[s.name], fromEnv: Boolean(process.env[s.name]) });
    }
  }
}

/** The secrets this run generated and set, each printed this once. */
function printSecrets(shown) {
  for (const s of shown) {
    if (s.fromEnv) {
      say(`  ${s.name} of ${s.worker}: set from your environment (not printed).`);
      continue;
    }
    say(`\n  ${s.name}, the ${s.show}, shown this once (it is not stored anywhere else):`);
    say(`    ${s.value}`);
  }
}

function checkLogin() {
  const version = wrangler(["--version"]).stdout.match(/\d+\.\d+\.\d+/)?.[0];
  if (!version) throw new Error("wrangler did not answer `wrangler --version`: is it installed (npm ci)?");
  const who = wrangler(["whoami", "--json"]);
  let info;
  try {
    info = parseJson(who.stdout, "whoami");
  } catch {
    throw new Error(`\`wrangler whoami --json\` gave no answer:\n${errorLines(who.out)}`);
  }
  if (!info.loggedIn) {
    throw new Error("wrangler is not logged in: run `npx wrangler login` (or set CLOUDFLARE_API_TOKEN), then this again.");
  }
  const accounts = info.accounts ?? [];
  const chosen = process.env.CLOUDFLARE_ACCOUNT_ID;
  const account = chosen ? accounts.find((a) => a.id === chosen) : accounts[0];
  if (chosen && !account && accounts.length) {
    throw new Error(`CLOUDFLARE_ACCOUNT_ID=${chosen} is not one of your accounts: ${accounts.map((a) => `${a.name} (${a.id})`).join(", ")}`);
  }
  if (!chosen && accounts.length > 1) {
    throw new Error(`your login has ${accounts.length} accounts; choose one with CLOUDFLARE_ACCOUNT_ID=<id>: ${accounts.map((a) => `${a.name} (${a.id})`).join(", ")}`);
  }
  say(`wrangler ${version}, logged in${info.email ? ` as ${info.email}` : ""} (${info.authType ?? "?"})${account ? `, account ${account.name} (${account.id})` : ""}`);
}

/** Creates one resource; if wrangler says it exists (another run got there first), so be it. */
function create(resource) {
  const args = {
    r2: ["r2", "bucket", "create", resource.name],
    queue: ["queues", "create", resource.name],
    kv: ["kv", "namespace", "create", resource.name],
    d1: ["d1", "create", resource.name],
  }[resource.kind];
  const r = wrangler(args);
  if (r.code === 0) return;
  if (/already (exists|taken|owned)|already in use/i.test(r.out)) return;
  throw new Error(`could not create ${describe(resource)}:\n${errorLines(r.out)}`);
}

/** Names of the secrets a deployed worker has; none if it is not deployed yet. */
function secretNames(config) {
  const r = wrangler(["secret", "list", "-c", config]);
  if (r.code !== 0) {
    if (/not found|does not exist/i.test(r.out)) return new Set();
    throw new Error(`could not list the secrets (\`wrangler secret list -c ${config}\`):\n${errorLines(r.out)}`);
  }
  return new Set(parseJson(r.stdout, "secret list").map((s) => s.name));
}

/** The build fingerprint of a worker's current deployment (from its message), if any. */
function deployedFingerprint(config) {
  const r = wrangler(["deployments", "status", "--json", "-c", config]);
  if (r.code !== 0) return null; // never deployed
  try {
    const deployment = parseJson(r.stdout, "deployments status");
    // One version at 100 %: a gradual rollout in progress is never "unchanged".
    if ((deployment.versions ?? []).length !== 1) return null;
    return deployment.annotations?.["workers/message"]?.match(/build ([0-9a-f]{16})/)?.[1] ?? null;
  } catch {
    return null;
  }
}

/** The triggers `wrangler deploy` printed (URLs, schedules, queues), and the first URL. */
function deployedTargets(out) {
  const lines = out.split("\n");
  const start = lines.findIndex((l) => /^Deployed .* triggers/.test(l));
  const targets = [];
  for (const l of start >= 0 ? lines.slice(start + 1) : []) {
    if (!/^\s+\S/.test(l)) break;
    targets.push(l.trim());
  }
  return { lines: targets, url: targets.find((t) => /^https?:\/\//.test(t)) };
}

/** What earlier runs learnt (the URLs): .deploy/<env>/state.json. */
function known(plan) {
  const file = path.join(plan.dir, "state.json");
  return existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
}

function remember(plan, urls) {
  const state = known(plan);
  writeIfChanged(path.join(plan.dir, "state.json"), `${JSON.stringify({ ...state, urls: { ...state.urls, ...urls } }, null, 2)}\n`);
}

/**
 * Upload a photo to the deployed API, wait for its tags, delete it. Resolves to true (passed),
 * false (failed) or null (skipped: no URL or no operator key).
 */
async function smokeTest(plan, urls, shown) {
  if (flag("--no-smoke")) {
    say("  skipped (--no-smoke)");
    return null;
  }
  const base = option("--url") ?? urls.upload ?? known(plan).urls?.upload;
  if (!base) {
    say("  skipped: no URL of the upload worker (no workers.dev URL in wrangler's output); pass --url https://...");
    return null;
  }
  const key = shown.find((s) => s.name === "API_TOKEN")?.value ?? process.env.API_TOKEN;
  if (!key) {
    say("  skipped: the operator key was set by an earlier run and is not stored here;");
    say("  run again with API_TOKEN=<operator key> in the environment to smoke-test.");
    return null;
  }
  const photo = await smokePhoto();
  const auth = { authorization: `Bearer ${key}` };
  const timeoutS = Number(option("--smoke-timeout", 120));
  const url = (p) => new URL(p, base);
  try {
    say(`  POST ${url("/images")}: ${photo.name} (${(photo.bytes.length / 1024).toFixed(0)} KiB)`);
    const started = Date.now();
    const res = await fetch(url("/images"), { method: "POST", headers: { ...auth, "content-type": photo.type }, body: photo.bytes });
    const accepted = await res.json().catch(() => ({}));
    if (res.status !== 202 || !accepted.imageId) throw new Error(`upload answered ${res.status}: ${JSON.stringify(accepted)}`);
    say(`    ${res.status}: image ${accepted.imageId} ${accepted.status}`);
    let record;
    for (;;) {
      const r = await fetch(url(`/images/${accepted.imageId}`), { headers: auth });
      record = await r.json().catch(() => ({}));
      if (r.status !== 200) throw new Error(`GET /images/${accepted.imageId} answered ${r.status}: ${JSON.stringify(record)}`);
      if (record.status !== status.queued) break;
      if (Date.now() - started > timeoutS * 1000) throw new Error(`still queued after ${timeoutS} s: ${JSON.stringify(record)}`);
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    if (record.status !== status.done) throw new Error(`the image ended ${record.status} after ${seconds} s: ${JSON.stringify(record.error ?? record)}`);
    const labels = (record.labels ?? []).map((l) => `${l.label} ${Number(l.score).toFixed(2)}`).join(", ");
    say(`    done after ${seconds} s: tags [${(record.tags ?? []).join(", ")}]; labels: ${labels || "none"}`);
    const del = await fetch(url(`/images/${accepted.imageId}`), { method: "DELETE", headers: auth });
    if (del.status !== 204) throw new Error(`DELETE answered ${del.status}: ${await del.text()}`);
    const gone = await fetch(url(`/images/${accepted.imageId}`), { headers: auth });
    await gone.body?.cancel();
    if (gone.status !== 404) throw new Error(`after DELETE, GET answered ${gone.status}`);
    say(`    deleted (204; GET is now 404)`);
    say("  smoke test passed");
    return true;
  } catch (e) {
    say(`  smoke test FAILED: ${e.message}`);
    say(`  The workers are deployed; read their logs with \`npx wrangler tail -c ${generatedConfigPath(plan, plan.workers[0])}\`.`);
    return false;
  }
}

/** The photo to upload: --photo, else the cat photo scripts/fetch-model.sh keeps, else one made now. */
async function smokePhoto() {
  const types = { ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif", ".webp": "image/webp" };
  const cache = process.env.IMAGE_TAGGER_CACHE ?? path.join(os.homedir(), ".cache", "image-tagger");
  const file = option("--photo") ?? [path.join(cache, "model", "chelsea.png")].find((f) => existsSync(f));
  if (file) {
    const type = types[path.extname(file).toLowerCase()];
    if (!type) throw new Error(`--photo ${file}: not a JPEG, PNG, GIF or WebP file name`);
    return { name: path.basename(file), type, bytes: readFileSync(file) };
  }
  const { largeJpeg } = await import("../local/photos.mjs");
  return { name: "a 640×480 JPEG made now (local/photos.mjs)", type: "image/jpeg", bytes: await largeJpeg({ width: 640, height: 480, seed: 7 }) };
}
