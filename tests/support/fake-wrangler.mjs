#!/usr/bin/env node
// A fake `wrangler` for testing the deploy scripts offline. It keeps a pretend Cloudflare
// account in a JSON file (FAKE_WRANGLER_STATE), records every call, and answers the commands
// scripts/deploy.mjs and scripts/teardown.mjs use the way wrangler 4.86 does: JSON where
// wrangler prints JSON (`whoami --json`, `kv namespace list`, `d1 list --json`, `secret list`,
// `deployments status --json`), its text elsewhere, and its errors (`✘ [ERROR] ...` on stderr,
// exit 1) for a missing login, a resource that already exists or does not exist, a binding to
// something that is not there, a worker that is not deployed. The formats follow wrangler's
// source (node_modules/wrangler/wrangler-dist/cli.js).
//
// The state file also scripts failures: `failures: [{ match, times, message }]` makes the
// next `times` calls whose arguments (joined by spaces) contain `match` fail with `message`.
// `urls: { <worker name>: <url> }` is what `deploy` prints as a worker's URL.
//
// Use: write a `wrangler` shell script that runs this file, put its folder first on PATH.

import { randomBytes, randomUUID } from "node:crypto";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";

const STATE = process.env.FAKE_WRANGLER_STATE;
if (!STATE) {
  console.error("fake wrangler: FAKE_WRANGLER_STATE is not set");
  process.exit(2);
}

/** A fresh account: logged in, nothing in it. */
function emptyAccount(overrides = {}) {
  return {
    loggedIn: true,
    email: "operator@example.com",
    accounts: [{ id: "0123456789abcdef0123456789abcdef", name: "Example Account" }],
    buckets: {},
    queues: {},
    kv: {},
    d1: {},
    workers: {},
    urls: {},
    failures: [],
    calls: [],
    ...overrides,
  };
}

const state = { ...emptyAccount(), ...(existsSync(STATE) ? JSON.parse(readFileSync(STATE, "utf8")) : {}) };
const args = process.argv.slice(2);
state.calls.push(args);
const save = () => writeFileSync(STATE, JSON.stringify(state, null, 2));
const accountId = () => state.accounts[0]?.id ?? "0";
const out = [];
const log = (...lines) => out.push(...lines);

class Failure extends Error {}
/** wrangler's UserError: `✘ [ERROR] <first line>`, further lines indented. */
const fail = (message) => {
  throw new Failure(message);
};
/** wrangler's APIError for a failed Cloudflare API request. */
const apiFail = (route, message, code) =>
  fail(`A request to the Cloudflare API (/accounts/${accountId()}${route}) failed.\n\n${message} [code: ${code}]\n\nIf you think this is a bug, please open an issue at: https://github.com/cloudflare/workers-sdk/issues/new/choose`);

function option(name) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}
/** The positional arguments after the command words. */
function positionals(skip) {
  const rest = [];
  for (let i = skip; i < args.length; i++) {
    if (args[i].startsWith("-")) {
      if (!["--json", "--remote", "--force", "--skip-confirmation", "-y", "--yes", "--local"].includes(args[i])) i++;
      continue;
    }
    rest.push(args[i]);
  }
  return rest;
}
const readConfig = () => {
  const file = option("-c") ?? option("--config");
  if (!file) fail("Missing a config file (the deploy always passes -c)");
  const absolute = path.resolve(file);
  // JSONC as the deploy writes it: whole-line comments, then JSON.
  const text = readFileSync(absolute, "utf8").replace(/^\s*\/\/.*$/gm, "");
  return { config: JSON.parse(text), dir: path.dirname(absolute) };
};
const now = () => new Date().toISOString();

function run() {
  const joined = args.join(" ");
  const failure = state.failures.find((f) => f.times > 0 && joined.includes(f.match));
  if (failure) {
    failure.times--;
    fail(failure.message ?? `injected failure of \`wrangler ${joined}\``);
  }
  if (args[0] === "--version" || args[0] === "-v") return log("4.86.0");
  const [a, b, c] = args;
  if (a === "whoami") return whoami();
  if (!state.loggedIn) {
    fail(
      "In a non-interactive environment, it's necessary to set a CLOUDFLARE_API_TOKEN environment variable for wrangler to work. Please go to https://developers.cloudflare.com/fundamentals/api/get-started/create-token/ for instructions on how to create an api token, and assign its value to CLOUDFLARE_API_TOKEN.",
    );
  }
  if (a === "r2" && b === "bucket") return r2(c, positionals(3)[0]);
  if (a === "queues") return queues(b, positionals(2)[0]);
  if (a === "kv" && b === "namespace") return kv(c, positionals(3)[0]);
  if (a === "d1" && b === "migrations") return migrations(c, positionals(3)[0]);
  if (a === "d1") return d1(b, positionals(2)[0]);
  if (a === "secret" && b === "list") return secretList();
  if (a === "deployments" && b === "status") return deploymentStatus();
  if (a === "deploy") return deploy();
  if (a === "delete") return deleteWorker(positionals(1)[0] ?? option("--name"));
  fail(`Unknown arguments: ${joined} (the fake wrangler does not know this command)`);
}

function whoami() {
  if (!args.includes("--json")) fail("the fake wrangler answers `whoami --json` only");
  if (!state.loggedIn) {
    // wrangler: createFatalError({ loggedIn: false }, true), printed as JSON, exit 1.
    log(JSON.stringify({ loggedIn: false }));
    throw new Failure(null);
  }
  log(
    JSON.stringify(
      { loggedIn: true, authType: "OAuth Token", email: state.email, accounts: state.accounts, tokenPermissions: ["account:read", "workers_scripts:write", "d1:write"] },
      null,
      2,
    ),
  );
}

function r2(command, name) {
  if (command === "list") {
    log("Listing buckets...");
    log(
      Object.entries(state.buckets)
        .map(([n, bucket]) => `name:           ${n}\ncreation_date:  ${bucket.created}`)
        .join("\n\n"),
    );
    return;
  }
  if (command === "create") {
    log(`Creating bucket '${name}'...`);
    if (state.buckets[name]) apiFail("/r2/buckets", "The bucket you tried to create already exists, and you own it.", 10004);
    state.buckets[name] = { created: now(), objects: 0 };
    log(`✅ Created bucket '${name}' with default storage class of Standard.`, "", "To access your new R2 Bucket in your Worker, add the following snippet to your configuration file:");
    return;
  }
  if (command === "delete") {
    log(`Deleting bucket ${name}.`);
    if (!state.buckets[name]) apiFail(`/r2/buckets/${name}`, "The specified bucket does not exist.", 10006);
    if (state.buckets[name].objects > 0) apiFail(`/r2/buckets/${name}`, "The bucket you tried to delete is not empty.", 10008);
    delete state.buckets[name];
    log(`Deleted bucket ${name}.`);
    return;
  }
  fail(`fake wrangler: r2 bucket ${command} is not implemented`);
}

function queues(command, name) {
  const q = state.queues[name];
  if (command === "info") {
    if (!q) fail(`Queue "${name}" does not exist. To create it, run: wrangler queues create ${name}`);
    log(`Queue Name: ${name}`, `Queue ID: ${q.id}`, `Created On: ${q.created}`, `Last Modified: ${q.created}`);
    log(`Number of Producers: ${q.producers.length}`);
    if (q.producers.length) log(`Producers:${q.producers.map((p) => ` worker:${p}`).toString()}`);
    log(`Number of Consumers: ${q.consumer ? 1 : 0}`);
    if (q.consumer) log(`Consumers: worker:${q.consumer}`);
    return;
  }
  if (command === "create") {
    log(`🌀 Creating queue '${name}'`);
    if (q) apiFail("/queues", "Queue name already taken", 11009);
    state.queues[name] = { id: randomBytes(16).toString("hex"), created: now(), producers: [], consumer: null };
    log(`✅ Created queue '${name}'`, "", "Configure your Worker to send messages to this queue:");
    return;
  }
  if (command === "delete") {
    log(`Deleting queue ${name}.`);
    if (!q) fail(`Queue "${name}" does not exist. To create it, run: wrangler queues create ${name}`);
    delete state.queues[name];
    log(`Deleted queue ${name}.`);
    return;
  }
  fail(`fake wrangler: queues ${command} is not implemented`);
}

function kv(command, title) {
  if (command === "list") {
    const list = Object.values(state.kv).sort((x, y) => x.title.localeCompare(y.title));
    log(JSON.stringify(list.map((n) => ({ id: n.id, title: n.title, supports_url_encoding: true })), null, "  "));
    return;
  }
  if (command === "create") {
    log("Resource location: remote", `🌀 Creating namespace with title "${title}"`);
    if (Object.values(state.kv).some((n) => n.title === title)) {
      fail(`A KV namespace with the title "${title}" already exists.\n\nYou can list existing namespaces with their IDs by running:\n  wrangler kv namespace list\n\nOr choose a different namespace name.`);
    }
    const id = randomBytes(16).toString("hex");
    state.kv[id] = { id, title };
    log("✨ Success!", "To access your new KV Namespace in your Worker, add the following snippet to your configuration file:");
    log(JSON.stringify({ kv_namespaces: [{ binding: title, id }] }, null, 2));
    return;
  }
  if (command === "delete") {
    const id = option("--namespace-id");
    log("Resource location: remote");
    if (!state.kv[id]) fail(`Not able to delete namespace.\nNo namespace with id ${id}`);
    log(`About to delete remote KV namespace '${state.kv[id].title} (${id})'.\nThis action is irreversible and will permanently delete all data in the KV namespace.\n`);
    log(`Deleting KV namespace ${id}.`);
    delete state.kv[id];
    log(`Deleted KV namespace ${id}.`);
    return;
  }
  fail(`fake wrangler: kv namespace ${command} is not implemented`);
}

function d1(command, name) {
  const byName = Object.values(state.d1).find((db) => db.name === name);
  if (command === "list") {
    if (!args.includes("--json")) fail("the fake wrangler answers `d1 list --json` only");
    const list = Object.values(state.d1).map((db) => ({
      uuid: db.uuid,
      name: db.name,
      created_at: db.created,
      version: "production",
      num_tables: db.applied.length ? db.applied.length + 1 : 0,
      file_size: 12288,
    }));
    log(JSON.stringify(list, null, 2));
    return;
  }
  if (command === "create") {
    if (byName) fail("A database with that name already exists");
    const uuid = randomUUID();
    state.d1[uuid] = { uuid, name, created: now(), applied: [] };
    log(`✅ Successfully created DB '${name}' in region WEUR`, "Created your new D1 database.", "");
    log(JSON.stringify({ d1_databases: [{ binding: "DB", database_name: name, database_id: uuid }] }, null, 2));
    return;
  }
  if (command === "delete") {
    if (!byName) fail(`Couldn't find DB with name '${name}'`);
    log(`About to delete remote database DB '${name}'.\nThis action is irreversible and will permanently delete all data in the database.\n`);
    delete state.d1[byName.uuid];
    log(`Deleted '${name}' successfully.`);
    return;
  }
  fail(`fake wrangler: d1 ${command} is not implemented`);
}

/** A box table as wrangler's logger.table prints it (cli-table3, no colour). */
function table(rows) {
  if (!rows.length) return "";
  const head = Object.keys(rows[0]);
  const widths = head.map((h) => Math.max(h.length, ...rows.map((r) => String(r[h]).length)) + 2);
  const line = (l, m, r) => l + widths.map((w) => "─".repeat(w)).join(m) + r;
  const row = (cells) => "│" + cells.map((c, i) => ` ${String(c).padEnd(widths[i] - 1)}`).join("│") + "│";
  return [line("┌", "┬", "┐"), row(head), line("├", "┼", "┤"), ...rows.map((r) => row(head.map((h) => r[h]))), line("└", "┴", "┘")].join("\n");
}

function migrations(command, binding) {
  if (!args.includes("--remote")) fail("the fake wrangler knows remote migrations only");
  const { config, dir } = readConfig();
  const entry = (config.d1_databases ?? []).find((d) => d.binding === binding || d.database_name === binding);
  if (!entry) fail(`Couldn't find a D1 DB with the name or binding '${binding}' in your wrangler.json file.`);
  const db = state.d1[entry.database_id];
  if (!db) apiFail(`/d1/database/${entry.database_id}`, "The database could not be found", 7404);
  const files = readdirSync(path.resolve(dir, entry.migrations_dir ?? "migrations")).filter((f) => f.endsWith(".sql")).sort();
  const pending = files.filter((f) => !db.applied.includes(f));
  if (!pending.length) return log("✅ No migrations to apply!");
  log("Migrations to be applied:", table(pending.map((name) => ({ name }))));
  if (command === "list") return;
  if (command !== "apply") fail(`fake wrangler: d1 migrations ${command} is not implemented`);
  log(`? About to apply ${pending.length} migration(s)\nYour database may not be available to serve requests during the migration, continue?`);
  log("🤖 Using fallback value in non-interactive context: yes");
  for (const f of pending) db.applied.push(f);
  log(table(pending.map((name) => ({ name, status: "✅" }))));
}

function workerFromConfig() {
  const name = option("--name") ?? readConfig().config.name;
  return { name, worker: state.workers[name] };
}

function secretList() {
  const { name, worker } = workerFromConfig();
  if (!worker) {
    fail(`Worker "${name}" not found.\nIf this is a new Worker, run \`wrangler deploy\` first to create it.\nOtherwise, check that the Worker name is correct and you're logged into the right account.`);
  }
  log(JSON.stringify(worker.secrets.map((s) => ({ name: s, type: "secret_text" })), null, "  "));
}

function deploymentStatus() {
  const { name, worker } = workerFromConfig();
  if (!worker) apiFail(`/workers/scripts/${name}/deployments`, "This Worker does not exist on your account.", 10007);
  const latest = worker.deployments.at(-1);
  log(
    JSON.stringify(
      {
        id: randomUUID(),
        source: "wrangler",
        strategy: "percentage",
        author_email: state.email,
        created_on: latest.created,
        annotations: { "workers/triggered_by": "deployment", ...(latest.message && { "workers/message": latest.message }) },
        versions: [{ version_id: latest.versionId, percentage: 100 }],
      },
      null,
      2,
    ),
  );
}

function deploy() {
  const { config } = readConfig();
  const name = config.name;
  // What wrangler checks, or the API refuses, for the bindings of this config.
  for (const b of config.r2_buckets ?? []) {
    if (!state.buckets[b.bucket_name]) apiFail(`/workers/scripts/${name}`, `R2 bucket '${b.bucket_name}' not found. Please use a different name and try again.`, 10085);
  }
  for (const n of config.kv_namespaces ?? []) {
    if (!state.kv[n.id]) apiFail(`/workers/scripts/${name}`, `KV namespace '${n.id}' is not valid.`, 10041);
  }
  for (const d of config.d1_databases ?? []) {
    if (!state.d1[d.database_id]) apiFail(`/workers/scripts/${name}`, `D1 binding '${d.binding}' references database '${d.database_id}' which was not found.`, 10021);
  }
  for (const p of config.queues?.producers ?? []) {
    if (!state.queues[p.queue]) apiFail(`/workers/scripts/${name}`, `Queue "${p.queue}" does not exist.`, 11000);
  }
  for (const dob of config.durable_objects?.bindings ?? []) {
    if (dob.script_name && dob.script_name !== name && !state.workers[dob.script_name]) {
      apiFail(`/workers/scripts/${name}`, `Cannot create binding for class '${dob.class_name}' because script '${dob.script_name}' is not found.`, 10061);
    }
  }
  for (const c of config.queues?.consumers ?? []) {
    const q = state.queues[c.queue];
    if (!q) fail(`Queue "${c.queue}" does not exist. To create it, run: wrangler queues create ${c.queue}`);
    if (q.consumer && q.consumer !== name) apiFail(`/queues/${q.id}/consumers`, `Queue ${c.queue} already has a consumer: ${q.consumer}`, 11004);
    if (c.dead_letter_queue && !state.queues[c.dead_letter_queue]) fail(`Queue "${c.dead_letter_queue}" does not exist. To create it, run: wrangler queues create ${c.dead_letter_queue}`);
  }
  const secretsFile = option("--secrets-file");
  const secrets = secretsFile ? JSON.parse(readFileSync(secretsFile, "utf8")) : {};
  const worker = (state.workers[name] ??= { secrets: [], deployments: [], secretValues: {} });
  for (const [k, v] of Object.entries(secrets)) {
    if (!worker.secrets.includes(k)) worker.secrets.push(k);
    worker.secretValues[k] = v;
  }
  const versionId = randomUUID();
  worker.deployments.push({ versionId, message: option("--message") ?? null, created: now(), config });
  for (const p of config.queues?.producers ?? []) {
    const q = state.queues[p.queue];
    if (!q.producers.includes(name)) q.producers.push(name);
  }
  for (const c of config.queues?.consumers ?? []) state.queues[c.queue].consumer = name;

  log("Total Upload: 1024.00 KiB / gzip: 300.00 KiB", "Your Worker has access to the following bindings:");
  log(`Uploaded ${name} (1.23 sec)`);
  log(`Deployed ${name} triggers (0.45 sec)`);
  log(`  ${state.urls[name] ?? `https://${name}.example-account.workers.dev`}`);
  for (const cron of config.triggers?.crons ?? []) log(`  schedule: ${cron}`);
  for (const p of config.queues?.producers ?? []) log(`  Producer for ${p.queue}`);
  for (const c of config.queues?.consumers ?? []) log(`  Consumer for ${c.queue}`);
  log(`Current Version ID: ${versionId}`);
}

function deleteWorker(name) {
  const worker = state.workers[name];
  if (!worker) apiFail(`/workers/scripts/${name}`, "This Worker does not exist on your account.", 10007);
  for (const q of Object.values(state.queues)) {
    if (q.consumer === name) q.consumer = null;
    q.producers = q.producers.filter((p) => p !== name);
  }
  delete state.workers[name];
  log(`Successfully deleted ${name}`);
}

let code = 0;
try {
  run();
} catch (e) {
  if (!(e instanceof Failure)) throw e;
  code = 1;
  if (e.message && e.message !== "null") {
    const [first, ...rest] = e.message.split("\n");
    process.stderr.write(`\n✘ [ERROR] ${first}\n\n${rest.map((l) => (l ? `  ${l}` : "")).join("\n")}\n\n🪵  Logs were written to "/tmp/fake-wrangler.log"\n`);
  }
}
save();
if (out.length) process.stdout.write(`${out.join("\n")}\n`);
process.exit(code);
