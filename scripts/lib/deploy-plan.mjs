// What a deployment of the pipeline consists of, read from the wrangler configs: the workers
// (in the order they must be deployed), the resources they bind (R2 buckets, queues with their
// dead letter queues, KV namespaces, D1 databases), each named per environment, and the
// generated per-environment configs that carry the resources' ids. Shared by
// scripts/deploy.mjs and scripts/teardown.mjs; nothing here calls Cloudflare except through
// `wrangler()`, the one way the scripts run wrangler.
//
// Names per environment: production uses the names in the configs; any other environment
// appends `-<env>` to every worker and resource name, so staging and production can live in
// one account without sharing a byte. A resource two workers bind (the bucket, the KV
// namespace, the D1 database, a queue) is one resource: it is keyed by its name (KV by its
// binding), created once, and both generated configs get its id.

import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
/** The committed wrangler configs, one per worker, by role. */
export const CONFIGS = Object.freeze({
  upload: "wrangler.upload.toml",
  tagger: "wrangler.tagger.toml",
});
export const ENVIRONMENTS = Object.freeze(["staging", "production"]);
/** Where the generated configs and the deploy's notes live (git-ignored; DEPLOY_STATE_DIR moves it). */
export const STATE_DIR = process.env.DEPLOY_STATE_DIR ?? ".deploy";

process.env.WRANGLER_LOG ??= "error";
process.env.WRANGLER_SEND_METRICS ??= "false";
const { experimental_readRawConfig } = await import("wrangler");

/**
 * What each environment adds to a rate limit's `namespace_id`: a namespace holds its counters,
 * so staging's uploads must not count against production's clients (none in production, so
 * the committed id is production's).
 */
export const RATELIMIT_NAMESPACE_OFFSET = Object.freeze({ staging: 1_000_000, production: 0 });

/** The suffix of every name in `env`: none in production. */
export function suffixOf(env) {
  if (!ENVIRONMENTS.includes(env)) throw new Error(`unknown environment ${env} (known: ${ENVIRONMENTS.join(", ")})`);
  return env === "production" ? "" : `-${env}`;
}

/** A config as written (no defaults filled in), by role. */
export function readRawConfig(role) {
  return experimental_readRawConfig({ config: path.join(ROOT, CONFIGS[role]) }).rawConfig;
}

/**
 * The deployment of `env`: its workers in deploy order (a worker another one binds to, by a
 * Durable Object's `script_name` or a service binding, goes first), and every resource they
 * bind, named for `env`.
 */
export function planFor(env) {
  const suffix = suffixOf(env);
  const workers = Object.keys(CONFIGS).map((role) => {
    const raw = readRawConfig(role);
    return { role, raw, baseName: raw.name, name: raw.name + suffix };
  });
  const byBase = new Map(workers.map((w) => [w.baseName, w]));
  const dependsOn = (w) =>
    [
      ...(w.raw.durable_objects?.bindings ?? []).map((b) => b.script_name),
      ...(w.raw.services ?? []).map((s) => s.service),
    ].filter((name) => name && name !== w.baseName && byBase.has(name));
  const ordered = [];
  const visit = (w, seen = new Set()) => {
    if (ordered.includes(w)) return;
    if (seen.has(w)) throw new Error(`the workers depend on each other in a cycle: ${[...seen].map((x) => x.name).join(", ")}`);
    seen.add(w);
    for (const dep of dependsOn(w)) visit(byBase.get(dep), seen);
    ordered.push(w);
  };
  for (const w of workers) visit(w);

  const buckets = new Map();
  const queues = new Map();
  const kv = new Map();
  const d1 = new Map();
  for (const { raw } of workers) {
    for (const b of raw.r2_buckets ?? []) buckets.set(b.bucket_name, { kind: "r2", base: b.bucket_name, name: b.bucket_name + suffix });
    for (const q of [...(raw.queues?.producers ?? []), ...(raw.queues?.consumers ?? [])]) {
      for (const name of [q.queue, q.dead_letter_queue].filter(Boolean)) {
        queues.set(name, { kind: "queue", base: name, name: name + suffix });
      }
    }
    // A KV namespace is known by its binding: both workers bind RESULTS_KV, so there is one.
    for (const n of raw.kv_namespaces ?? []) kv.set(n.binding, { kind: "kv", base: n.binding, name: n.binding + suffix });
    for (const db of raw.d1_databases ?? []) {
      const known = d1.get(db.database_name);
      const migrations = path.resolve(ROOT, db.migrations_dir ?? "migrations");
      if (known && known.migrations !== migrations) throw new Error(`D1 ${db.database_name}: the configs disagree on its migrations`);
      d1.set(db.database_name, { kind: "d1", base: db.database_name, name: db.database_name + suffix, binding: db.binding, migrations });
    }
  }
  return {
    env,
    suffix,
    dir: path.resolve(ROOT, STATE_DIR, env),
    workers: ordered,
    resources: { r2: [...buckets.values()], queue: [...queues.values()], kv: [...kv.values()], d1: [...d1.values()] },
    /** The deployed name of a worker named `base` in the configs. */
    workerName: (base) => (byBase.has(base) ? base + suffix : base),
  };
}

/** The generated config of `worker` for `plan`: its path, relative to the repository. */
export function generatedConfigPath(plan, worker) {
  return path.relative(ROOT, path.join(plan.dir, `wrangler.${worker.role}.jsonc`));
}

/**
 * The config wrangler deploys for `worker` in `plan`: the committed config with every name
 * made the environment's, the ids filled in (`ids.kv[binding]`, `ids.d1[database name]`),
 * paths made relative to the generated file, the preview-only fields and the `[build]`
 * command left out (the deploy script builds first).
 */
export function generateConfig(plan, worker, ids) {
  const { build, ...raw } = structuredClone(worker.raw);
  void build;
  const from = plan.dir;
  const rel = (p) => path.relative(from, path.resolve(ROOT, p)).split(path.sep).join("/");
  const named = (list, field, map) => list?.map((x) => ({ ...x, [field]: map(x[field]) }));
  const queueName = (name) => (name ? name + plan.suffix : name);
  const config = {
    ...raw,
    name: worker.name,
    main: rel(raw.main),
  };
  if (raw.r2_buckets) {
    config.r2_buckets = raw.r2_buckets.map(({ preview_bucket_name, ...b }) => ({ ...b, bucket_name: b.bucket_name + plan.suffix }));
  }
  if (raw.kv_namespaces) {
    config.kv_namespaces = raw.kv_namespaces.map(({ preview_id, ...n }) => ({ ...n, id: required(ids.kv, n.binding, "KV namespace") }));
  }
  if (raw.d1_databases) {
    config.d1_databases = raw.d1_databases.map(({ preview_database_id, ...db }) => ({
      ...db,
      database_name: db.database_name + plan.suffix,
      database_id: required(ids.d1, db.database_name, "D1 database"),
      migrations_dir: rel(db.migrations_dir ?? "migrations"),
    }));
  }
  if (raw.queues) {
    config.queues = {
      ...raw.queues,
      ...(raw.queues.producers && { producers: named(raw.queues.producers, "queue", queueName) }),
      ...(raw.queues.consumers && {
        consumers: raw.queues.consumers.map((c) => ({
          ...c,
          queue: queueName(c.queue),
          ...(c.dead_letter_queue && { dead_letter_queue: queueName(c.dead_letter_queue) }),
        })),
      }),
    };
  }
  if (raw.durable_objects?.bindings) {
    config.durable_objects = {
      ...raw.durable_objects,
      bindings: raw.durable_objects.bindings.map((b) => (b.script_name ? { ...b, script_name: plan.workerName(b.script_name) } : b)),
    };
  }
  if (raw.services) config.services = named(raw.services, "service", plan.workerName);
  if (raw.ratelimits) {
    config.ratelimits = raw.ratelimits.map((r) => ({
      ...r,
      namespace_id: String(Number(r.namespace_id) + RATELIMIT_NAMESPACE_OFFSET[plan.env]),
    }));
  }
  return config;
}

/** The text of a generated config: a comment saying where it comes from, then the JSON. */
export function configText(plan, worker, config) {
  return `// Generated by scripts/deploy.mjs from ${CONFIGS[worker.role]} for ${plan.env}: edit that file, not this one.\n${JSON.stringify(config, null, 2)}\n`;
}

function required(map, key, what) {
  const id = map[key];
  if (!id) throw new Error(`no id for ${what} ${key}`);
  return id;
}

/** Writes `content` to `file` unless it already holds exactly that; says whether it wrote. */
export function writeIfChanged(file, content) {
  const absolute = path.resolve(ROOT, file);
  if (existsSync(absolute) && readFileSync(absolute, "utf8") === content) return false;
  mkdirSync(path.dirname(absolute), { recursive: true });
  writeFileSync(absolute, content);
  return true;
}

/**
 * A fingerprint of what deploying `worker` would upload: its generated config and every file
 * of its build output (the folder of `main`). The deploy tags each deployment with it, so a
 * later run can tell that the deployed version is this one.
 */
export function fingerprint(configText, worker) {
  const hash = createHash("sha256").update(configText);
  const buildDir = path.dirname(path.resolve(ROOT, worker.raw.main));
  const walk = (dir) => {
    for (const entry of readdirSync(dir).sort()) {
      const file = path.join(dir, entry);
      if (statSync(file).isDirectory()) walk(file);
      else hash.update(path.relative(buildDir, file)).update("\0").update(readFileSync(file));
    }
  };
  if (existsSync(buildDir)) walk(buildDir);
  return hash.digest("hex").slice(0, 16);
}

// ---------------------------------------------------------------------------------------
// Running wrangler.

/**
 * Runs wrangler with `args` in the repository, without a terminal (so it never prompts: its
 * confirmations take their non-interactive answer). The first `wrangler` on PATH wins, then
 * the project's own (node_modules/.bin); `WRANGLER` names another binary. Resolves to
 * `{ code, stdout, stderr, out }` (`out`: both, for messages); never throws on an exit code.
 */
export function wrangler(args, { input } = {}) {
  const bin = process.env.WRANGLER || "wrangler";
  const env = {
    ...process.env,
    PATH: `${process.env.PATH}${path.delimiter}${path.join(ROOT, "node_modules", ".bin")}`,
    WRANGLER_SEND_METRICS: "false",
    FORCE_COLOR: "0",
    NO_COLOR: "1",
  };
  delete env.WRANGLER_LOG; // wrangler's own level: its answers are what we parse
  const r = spawnSync(bin, args, {
    cwd: ROOT,
    env,
    input,
    encoding: "utf8",
    stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.error) throw new Error(`could not run ${bin}: ${r.error.message}`);
  const stdout = r.stdout ?? "";
  const stderr = r.stderr ?? "";
  return { code: r.status ?? 1, stdout, stderr, out: `${stdout}\n${stderr}` };
}

/** Like `wrangler()`, but fails with wrangler's own error message on a non-zero exit. */
export function wranglerOk(args, options) {
  const r = wrangler(args, options);
  if (r.code !== 0) throw new WranglerError(args, r);
  return r;
}

/** A wrangler command that failed: the command and wrangler's error lines. */
export class WranglerError extends Error {
  constructor(args, result) {
    super(`\`wrangler ${args.join(" ")}\` failed (exit ${result.code}):\n${errorLines(result.out)}`);
    this.result = result;
  }
}

/** wrangler's `✘ [ERROR] ...` block (the lines that explain a failure), or its last lines. */
export function errorLines(out) {
  const lines = out.split("\n");
  const start = lines.findIndex((l) => /\[ERROR\]/.test(l));
  const picked = start >= 0 ? lines.slice(start) : lines.slice(-8);
  return picked
    .filter((l) => l.trim() && !/Logs were written to/.test(l))
    .map((l) => `    ${l.trim()}`)
    .join("\n");
}

/** The first JSON value in wrangler's stdout (it may print a banner or notes around it). */
export function parseJson(stdout, what) {
  const start = stdout.search(/[[{]/);
  if (start < 0) throw new Error(`${what}: no JSON in wrangler's answer:\n${stdout}`);
  try {
    return JSON.parse(stdout.slice(start));
  } catch {
    // Trailing text after the JSON: cut at the last closing bracket of the same kind.
    const end = stdout.lastIndexOf(stdout[start] === "[" ? "]" : "}");
    try {
      return JSON.parse(stdout.slice(start, end + 1));
    } catch (e) {
      throw new Error(`${what}: wrangler's answer is not JSON (${e.message}):\n${stdout}`);
    }
  }
}

// ---------------------------------------------------------------------------------------
// What exists in the account.

/** Names of the account's R2 buckets (`wrangler r2 bucket list`: `name:` lines). */
export function listBuckets() {
  const { stdout } = wranglerOk(["r2", "bucket", "list"]);
  return new Set([...stdout.matchAll(/^name:\s+(\S+)\s*$/gm)].map((m) => m[1]));
}

/** The account's KV namespaces, title → id (`wrangler kv namespace list`, JSON). */
export function listKv() {
  const list = parseJson(wranglerOk(["kv", "namespace", "list"]).stdout, "kv namespace list");
  return new Map(list.map((n) => [n.title, n.id]));
}

/** The account's D1 databases, name → uuid (`wrangler d1 list --json`). */
export function listD1() {
  const list = parseJson(wranglerOk(["d1", "list", "--json"]).stdout, "d1 list");
  return new Map(list.map((db) => [db.name, db.uuid]));
}

/** Whether a queue exists (`wrangler queues info NAME`; a missing one is an error that says so). */
export function queueExists(name) {
  const r = wrangler(["queues", "info", name]);
  if (r.code === 0) return true;
  if (/does not exist/i.test(r.out)) return false;
  throw new WranglerError(["queues", "info", name], r);
}

/** What exists of `plan`'s resources: `{ r2: Set, queue: Set, kv: Map title→id, d1: Map name→uuid }`. */
export function inventory(plan) {
  return {
    r2: plan.resources.r2.length ? listBuckets() : new Set(),
    queue: new Set(plan.resources.queue.filter((q) => queueExists(q.name)).map((q) => q.name)),
    kv: plan.resources.kv.length ? listKv() : new Map(),
    d1: plan.resources.d1.length ? listD1() : new Map(),
  };
}

/** Whether `resource` is in `inv`. */
export function exists(inv, resource) {
  return inv[resource.kind].has(resource.name);
}

/** A resource as printed: `R2 bucket my-image-uploads-staging`. */
export function describe(resource) {
  const kinds = { r2: "R2 bucket", queue: "queue", kv: "KV namespace", d1: "D1 database" };
  return `${kinds[resource.kind]} ${resource.name}`;
}

/** The resources of `plan`, in the order they are created (and the reverse of teardown's). */
export function allResources(plan) {
  const { r2, queue, kv, d1 } = plan.resources;
  return [...r2, ...queue, ...kv, ...d1];
}
