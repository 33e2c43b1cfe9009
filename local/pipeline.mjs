// The one way to run the pipeline locally: both workers in one Miniflare (the real workerd)
// from their real wrangler configs, with local R2, KV, Queues, D1 and Durable Objects, the
// D1 migrations applied, and `AI` answered locally. The run command (scripts/dev.mjs), every
// test and the benchmark (bench/run.mjs) start it through `startPipeline`.
//
// What comes from where:
// - workers, bindings, vars and queue consumer settings (batch size and timeout, retries,
//   dead letter queue): the wrangler configs in WORKERS, read by wrangler itself;
// - names (bindings, queues, model, keys, outcomes, error codes): local/contract.mjs;
// - overrides: only what the caller passes (`vars`, `queues`, `workerOverrides`).
// A new worker is one entry in WORKERS; a new binding, queue or var is a change to a
// wrangler config (and the contract), not to this file.

import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { Miniflare } from "miniflare";

import { bindings as BINDINGS, contract, queues as QUEUES, imageMessage, terminalStatuses, keys, logEvents, varName } from "./contract.mjs";
import { createAiStub } from "./ai-stub.mjs";

// wrangler warns on every config read that AI bindings are remote: the launcher replaces AI.
process.env.WRANGLER_LOG ??= "error";
process.env.WRANGLER_SEND_METRICS ??= "false";
const { unstable_getMiniflareWorkerOptions, unstable_readConfig, unstable_splitSqlQuery } = await import("wrangler");

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
/** The workers of the pipeline, by role, and their wrangler configs. */
export const WORKERS = Object.freeze({
  upload: path.join(ROOT, "wrangler.upload.toml"),
  tagger: path.join(ROOT, "wrangler.tagger.toml"),
});
/** Script name of the worker that provides the `Ai` wrapped binding (for extra workers). */
export const AI_BINDING_SCRIPT = "ai-binding";
const HELPER = "pipeline-helper";
const DEFAULT_WAIT_MS = 30_000;

// ---------------------------------------------------------------------------------------
// Workers from their configs.

/** The wrangler config of a role, as wrangler reads it. */
export function readWorkerConfig(role) {
  const configPath = WORKERS[role];
  if (!configPath) throw new Error(`no worker ${role} (known: ${Object.keys(WORKERS).join(", ")})`);
  return unstable_readConfig({ config: configPath });
}

/**
 * Miniflare options for one worker from its wrangler config: bindings, vars (with `vars`
 * over them), Durable Objects, queue producers and consumers (each consumer's settings with
 * `queues[name]` or `queues["*"]` over them). `AI` is the local `Ai` wrapped binding.
 * `overrides` are Miniflare worker options set last. Fails if the worker is not built.
 */
export function workerOptions(role, { vars = {}, queues = {}, overrides = {} } = {}) {
  const configPath = WORKERS[role];
  const config = readWorkerConfig(role);
  const { workerOptions: fromConfig, main } = unstable_getMiniflareWorkerOptions(configPath);
  if (!existsSync(main)) throw new Error(`${path.relative(ROOT, main)} is missing: build first (npm run build)`);
  const { ai, ...rest } = fromConfig;
  const local = LOCAL_DEFAULTS[role] ?? {};
  const consumers = Object.fromEntries(
    Object.entries(rest.queueConsumers ?? {}).map(([queue, settings]) => [
      queue,
      { ...settings, ...queues["*"], ...queues[queue] },
    ]),
  );
  return {
    ...rest,
    name: config.name,
    modules: true,
    scriptPath: main,
    bindings: { ...rest.bindings, ...local.vars, ...vars },
    ...(rest.ratelimits ? { ratelimits: { ...rest.ratelimits, ...local.ratelimits } } : {}),
    queueConsumers: consumers,
    // Workers AI has no local implementation: `Ai` comes from local/ai-binding.mjs.
    wrappedBindings: { ...rest.wrappedBindings, ...(ai ? { [ai.binding]: { scriptName: AI_BINDING_SCRIPT } } : {}) },
    ...overrides,
  };
}

/**
 * What a local run changes of a worker's config (callers' `vars` and `overrides` still go
 * over it): the upload worker lets anonymous callers in (`ALLOW_ANONYMOUS`: the demo, the
 * gallery, tests and benchmarks that do not set `API_TOKEN`), and its upload rate limit is
 * high enough for tests and benchmarks that upload in bulk. A test of the limit sets its own
 * (`overrides: { ratelimits }`); one of the closed API sets `ALLOW_ANONYMOUS: "false"`.
 */
export const LOCAL_DEFAULTS = Object.freeze({
  upload: {
    vars: { [varName.ALLOW_ANONYMOUS]: "true" },
    ratelimits: { [BINDINGS.uploadLimiter]: { simple: { limit: 1_000_000, period: 60 } } },
  },
});

/** Where each config's D1 migrations are: `{ id, dir }` per database, once each. */
function migrationSets(roles) {
  const sets = new Map();
  for (const role of roles) {
    const config = readWorkerConfig(role);
    for (const db of config.d1_databases ?? []) {
      const id = db.preview_database_id ?? db.database_id;
      const dir = path.resolve(path.dirname(WORKERS[role]), db.migrations_dir ?? "migrations");
      const table = db.migrations_table ?? "d1_migrations";
      const known = sets.get(id);
      if (known && (known.dir !== dir || known.table !== table)) {
        throw new Error(`D1 database ${id}: the configs disagree on its migrations`);
      }
      sets.set(id, { id, binding: db.binding, dir, table });
    }
  }
  return [...sets.values()];
}

/**
 * Applies the migrations in `dir` that are not yet recorded, the way
 * `wrangler d1 migrations apply` does: `*.sql` in name order, each in one batch together
 * with its row in the migrations table (same table, same columns), so a persisted state
 * stays usable by wrangler and the other way round. Resolves to `{ applied, skipped }`.
 */
export async function applyMigrations(db, dir, table = "d1_migrations") {
  await db.exec(
    `CREATE TABLE IF NOT EXISTS ${table}( id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE, applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL );`,
  );
  const { results } = await db.prepare(`SELECT name FROM ${table} ORDER BY id`).all();
  const done = new Set(results.map((r) => r.name));
  const files = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".sql")).sort() : [];
  const applied = [];
  for (const file of files.filter((f) => !done.has(f))) {
    const sql = readFileSync(path.join(dir, file), "utf8");
    const statements = unstable_splitSqlQuery(sql).map((q) => db.prepare(q));
    statements.push(db.prepare(`INSERT INTO ${table} (name) values (?)`).bind(file));
    try {
      await db.batch(statements);
    } catch (e) {
      throw new Error(`D1 migration ${file} failed: ${e?.cause?.message ?? e.message}`);
    }
    applied.push(file);
  }
  return { applied, skipped: files.filter((f) => done.has(f)) };
}

// ---------------------------------------------------------------------------------------
// Fault-injecting bindings (local/fault-bindings.mjs), controlled from this process.

/**
 * Binding kinds that can be wrapped: where Miniflare keeps them in worker options. Adding a
 * kind is one entry here and one class in local/fault-bindings.mjs.
 */
const FAULT_KINDS = {
  kv: "kvNamespaces",
  r2: "r2Buckets",
  queue: "queueProducers",
  d1: "d1Databases",
};

/**
 * What a test controls about one wrapped binding. Rules match an operation by `op` (e.g.
 * "get", "put", "send"), `worker` (a role: "upload", "tagger") and `key` (a string, RegExp or
 * function); unset means any. The first matching rule with uses left decides.
 */
export class FaultControl {
  constructor(binding) {
    this.binding = binding;
    this.rules = [];
    /** Every operation the wrapper asked about: `{ worker, op, key, at, failed }`. */
    this.ops = [];
    this.staleness = null;
    this.writes = new Map(); // key -> [{ at, previous, metadata }]
    this.misses = new Map(); // key -> cached until
    this.gates = []; // releases of held operations
  }

  /** Throw `message` from matching operations, `times` times (default: always). */
  fail({ op, worker, key, times = Infinity, message = `injected ${this.binding} failure` } = {}) {
    const rule = { op, worker, key, times, fail: message };
    this.rules.push(rule);
    return rule;
  }

  /** Delay matching operations by `ms`, `times` times (default: always). */
  slow({ op, worker, key, times = Infinity, ms }) {
    const rule = { op, worker, key, times, delayMs: ms };
    this.rules.push(rule);
    return rule;
  }

  /**
   * Holds matching operations, `times` times (default: once), until `release()` of the
   * returned handle: a test can then act while the operation is known to be under way.
   */
  hold({ op, worker, key, times = 1 } = {}) {
    let release;
    const gate = new Promise((resolve) => (release = resolve));
    this.rules.push({ op, worker, key, times, gate });
    this.gates.push(release);
    return { release };
  }

  /**
   * KV only: eventually consistent reads. A read within `lagMs` of a write gets the value
   * from before it; a read that misses is cached as a miss for `missTtlMs`.
   */
  stale({ lagMs, missTtlMs = lagMs }) {
    this.staleness = { lagMs, missTtlMs };
  }

  /** No more faults (recorded operations are kept). */
  clear() {
    for (const release of this.gates) release();
    this.gates = [];
    this.rules = [];
    this.staleness = null;
    this.writes.clear();
    this.misses.clear();
  }

  /** Operations matching `{ op, worker, key }`. */
  opsMatching(filter = {}) {
    return this.ops.filter((o) => matches(filter, o));
  }

  decide({ worker, op, key, previous = null, metadata = null }) {
    const now = Date.now();
    const s = this.staleness;
    if (op === "missed") {
      if (s) this.misses.set(key, now + s.missTtlMs);
      return {};
    }
    if (op === "wrote") {
      if (s) {
        const list = this.writes.get(key) ?? [];
        list.push({ at: now, previous, metadata });
        this.writes.set(key, list);
      }
      return {};
    }
    const record = { worker, op, key, at: now, failed: false };
    this.ops.push(record);
    const decision = {};
    const rule = this.rules.find((r) => r.times > 0 && matches(r, record));
    if (rule) {
      rule.times--;
      if (rule.delayMs) decision.delayMs = rule.delayMs;
      if (rule.gate) decision.gate = rule.gate;
      if (rule.fail) {
        decision.fail = rule.fail;
        record.failed = true;
        return decision;
      }
    }
    if (s && op === "get") {
      const pending = (this.writes.get(key) ?? []).find((w) => w.at + s.lagMs > now);
      if ((this.misses.get(key) ?? 0) > now) decision.stale = { value: null, metadata: null };
      else if (pending) decision.stale = { value: pending.previous, metadata: pending.metadata };
      else decision.cacheMisses = true;
    }
    if (s && (op === "put" || op === "delete")) decision.snapshot = true;
    return decision;
  }
}

function matches(filter, record) {
  if (filter.op !== undefined && filter.op !== record.op) return false;
  if (filter.worker !== undefined && filter.worker !== record.worker) return false;
  const k = filter.key;
  if (k === undefined) return true;
  if (typeof k === "function") return Boolean(k(record.key));
  if (k instanceof RegExp) return k.test(record.key ?? "");
  return k === record.key;
}

/** The fetch-style function behind every wrapper's `CONTROL` binding. */
function faultControlService(controls) {
  return async (request) => {
    try {
      const ask = await request.json();
      const control = controls[ask.binding];
      if (!control) return new Response(`no fault control for ${ask.binding}`, { status: 500 });
      const { gate, ...decision } = control.decide(ask);
      if (gate) await gate;
      return Response.json(decision);
    } catch (e) {
      return new Response(String(e?.stack ?? e), { status: 500 });
    }
  };
}

/**
 * Replaces each binding named in `faults` by its fault-injecting wrapper, in every worker
 * that has it. Returns the wrapper workers to add and the controls by binding name.
 */
function wrapFaults(workers, faults) {
  const controls = {};
  const wrappers = new Map();
  const module = readFileSync(path.join(ROOT, "local", "fault-bindings.mjs"), "utf8");
  const service = faultControlService(controls);
  for (const name of faults) {
    let found = false;
    for (const [role, options] of Object.entries(workers)) {
      for (const [kind, optionKey] of Object.entries(FAULT_KINDS)) {
        const value = options[optionKey]?.[name];
        if (value === undefined) continue;
        found = true;
        const scriptName = `fault-${kind}-${name}-${JSON.stringify(value).replace(/[^A-Za-z0-9]+/g, "-")}`.slice(0, 120);
        if (!wrappers.has(scriptName)) {
          wrappers.set(scriptName, {
            name: scriptName,
            modules: [{ type: "ESModule", path: "fault-bindings.mjs", contents: module }],
            [optionKey]: { INNER: value },
            serviceBindings: { CONTROL: service },
          });
        }
        const { [name]: _removed, ...others } = options[optionKey];
        options[optionKey] = others;
        options.wrappedBindings = {
          ...options.wrappedBindings,
          [name]: { scriptName, bindings: { KIND: kind, BINDING: name, WORKER: role } },
        };
      }
    }
    if (!found) throw new Error(`faults: no worker has a KV, R2, D1 or queue binding named ${name}`);
    controls[name] = new FaultControl(name);
  }
  return { controls, wrappers: [...wrappers.values()] };
}

// ---------------------------------------------------------------------------------------
// The runtime's log.

/** The tagger's structured outcome in a runtime log line, or null for any other line. */
export function parseOutcome(line) {
  const start = line.indexOf("{");
  if (start < 0 || !line.includes(`"${logEvents.message}"`)) return null;
  try {
    const event = JSON.parse(line.slice(start));
    return event?.event === logEvents.message ? event : null;
  } catch {
    return null;
  }
}

/** Reads streams line by line (readline: a line split across chunks stays whole). */
export function createLogReader(onLine) {
  const lines = [];
  const waiters = new Set();
  const interfaces = [];
  let closed = false;

  function push(line) {
    lines.push(line);
    for (const w of waiters) {
      if (w.test(line)) w.resolve(line);
    }
    onLine?.(line);
  }

  return {
    lines,
    attach(stream) {
      const rl = readline.createInterface({ input: stream, crlfDelay: Infinity });
      rl.on("line", push);
      interfaces.push(rl);
    },
    /**
     * The first line (already read, or still to come) for which `predicate(line)` is truthy.
     * Fails after `timeoutMs` with `what` and the last lines read.
     */
    waitForLine(predicate, { timeoutMs = DEFAULT_WAIT_MS, what = "a log line", from = 0 } = {}) {
      const found = lines.slice(from).find(predicate);
      if (found !== undefined) return Promise.resolve(found);
      if (closed) return Promise.reject(new Error(`waiting for ${what}: the pipeline is closed`));
      return new Promise((resolve, reject) => {
        const waiter = {
          test: predicate,
          resolve: (line) => {
            waiters.delete(waiter);
            clearTimeout(waiter.timer);
            resolve(line);
          },
          reject: (error) => {
            waiters.delete(waiter);
            clearTimeout(waiter.timer);
            reject(error);
          },
        };
        waiter.timer = setTimeout(
          () => waiter.reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last lines:\n${lines.slice(-8).join("\n")}`)),
          timeoutMs,
        );
        waiters.add(waiter);
      });
    },
    close() {
      closed = true;
      for (const w of [...waiters]) w.reject(new Error("the pipeline closed while a wait was pending"));
      for (const rl of interfaces) rl.close();
    },
  };
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor(check, { timeoutMs = DEFAULT_WAIT_MS, intervalMs = 50, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await check();
    if (last) return last;
    if (Date.now() >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${JSON.stringify(last)}`);
}

// ---------------------------------------------------------------------------------------
// The pipeline.

/**
 * Starts the pipeline and resolves once it serves, on a real socket, with its D1 migrations
 * applied. Options (all optional):
 * - `vars`: `{ upload: {...}, tagger: {...} }` var overrides per worker;
 * - `queues`: consumer setting overrides, `{ "*": {...}, [queueName]: {...} }`, e.g.
 *   `{ "*": { maxBatchTimeout: 1 } }`; everything else comes from the configs;
 * - `ai`: the AI stub's options (`createAiStub`: `light`, `latencyMs`, `defaultAnswer`,
 *   `rateLimit`), or `{ url }` of another AI service (the local classifier);
 * - `faults`: binding names to replace by fault-injecting wrappers (`p.faults[name]`);
 * - `persist`: a folder to keep state in (wrangler's layout, `<dir>/v3/...`), `"temp"` for a
 *   fresh folder removed on close, or nothing for memory;
 * - `port` (default 0: any free one) and `host` (default 127.0.0.1);
 * - `workerOverrides`: `{ [role]: {...} }` Miniflare worker options set last;
 * - `extraWorkers`: more Miniflare worker options (the benchmark's reference workers);
 * - `onLine(line)`: each runtime log line; `log`: a Miniflare `Log`;
 * - `roles`: which of WORKERS to run (default: all);
 * - `inspect`: turn on workerd's V8 inspector (`mf.getInspectorURL()`), for benchmarks;
 * - `secondTagger`: also run a second tagger from the same bundle, consuming its own queue
 *   (`SECOND_QUEUE`, `p.queue(SECOND_QUEUE)`) and sharing D1, R2, KV and the pacer, so two
 *   batches run at once as they do in production (see `secondTaggerOptions`);
 * - `pacerDown`: the tagger's pacer binding leads to an object that fails every request;
 * - `liveDown`: so do both workers' live-updates bindings (`LIVE_EVENTS`).
 */
export async function startPipeline(options = {}) {
  const {
    vars = {},
    queues = {},
    ai: aiOptions = {},
    faults = [],
    persist,
    port = 0,
    host = "127.0.0.1",
    workerOverrides = {},
    extraWorkers = [],
    onLine,
    log,
    roles = Object.keys(WORKERS),
    inspect = false,
    secondTagger = false,
    pacerDown = false,
    liveDown = false,
  } = options;

  const workers = Object.fromEntries(
    roles.map((role) => [
      role,
      workerOptions(role, { vars: vars[role], queues, overrides: workerOverrides[role] }),
    ]),
  );
  if (secondTagger) {
    if (!workers.tagger) throw new Error("secondTagger needs the tagger role");
    workers[SECOND_TAGGER] = secondTaggerOptions(workers.tagger);
  }
  const downPacers = [];
  if (pacerDown) {
    if (!workers.tagger) throw new Error("pacerDown needs the tagger role");
    for (const options of Object.values(workers)) {
      if (options.durableObjects?.[BINDINGS.aiPacer]) {
        options.durableObjects = { ...options.durableObjects, [BINDINGS.aiPacer]: { className: "DownPacer", scriptName: DOWN_PACER } };
      }
    }
    downPacers.push(downPacerWorker());
  }
  if (liveDown) {
    for (const options of Object.values(workers)) {
      if (options.durableObjects?.[BINDINGS.liveEvents]) {
        options.durableObjects = { ...options.durableObjects, [BINDINGS.liveEvents]: { className: "DownLive", scriptName: DOWN_LIVE } };
      }
    }
    downPacers.push(downLiveWorker());
  }
  for (const role of Object.keys(vars)) if (!workers[role]) throw new Error(`vars for unknown worker ${role}`);
  for (const queue of Object.keys(queues)) {
    if (queue !== "*" && !Object.values(workers).some((w) => w.queueConsumers[queue])) {
      throw new Error(`queues: no worker has a consumer for ${queue}`);
    }
  }
  const names = Object.fromEntries(Object.entries(workers).map(([role, o]) => [role, o.name]));
  // The helper binds the real resources: take them before any binding is wrapped.
  const helper = helperWorker(Object.values(workers), secondTagger ? [SECOND_QUEUE] : []);
  const { controls, wrappers } = wrapFaults(workers, faults);

  const ai = aiOptions.url ? null : createAiStub(aiOptions);
  const backend = ai ? { node: ai.handle } : { external: { address: new URL(aiOptions.url).host, http: {} } };

  let root;
  let removeRoot = false;
  if (persist === "temp") {
    root = mkdtempSync(path.join(tmpdir(), "pipeline-state-"));
    removeRoot = true;
  } else if (persist) {
    root = path.resolve(persist);
  }

  const logReader = createLogReader(onLine);
  let mf;
  let url;
  const migrations = {};
  try {
    mf = new Miniflare({
      host,
      port,
      ...(root ? { defaultPersistRoot: path.join(root, "v3") } : {}),
      ...(log ? { log } : {}),
      ...(inspect ? { inspectorPort: 0 } : {}),
      handleRuntimeStdio(stdout, stderr) {
        logReader.attach(stdout);
        logReader.attach(stderr);
      },
      // The first worker is Miniflare's entry point: a role's, else an extra worker (the AI
      // binding's script cannot be one).
      workers: [
        ...Object.values(workers),
        ...extraWorkers,
        {
          name: AI_BINDING_SCRIPT,
          modules: [{ type: "ESModule", path: "ai-binding.mjs", contents: readFileSync(path.join(ROOT, "local", "ai-binding.mjs"), "utf8") }],
          serviceBindings: { AI_BACKEND: backend },
        },
        ...wrappers,
        ...downPacers,
        helper.options,
      ],
    });
    url = new URL(await mf.ready);
    for (const set of migrationSets(roles)) {
      const db = await mf.getD1Database(helper.d1[set.id], HELPER);
      migrations[set.binding] = await applyMigrations(db, set.dir, set.table);
    }
  } catch (error) {
    // Leave nothing running, or the caller (a test runner) would wait forever.
    logReader.close();
    await mf?.dispose().catch(() => {});
    if (removeRoot) rmSync(root, { recursive: true, force: true });
    throw error;
  }

  const markers = new Set();
  const outcomes = () => logReader.lines.map(parseOutcome).filter((o) => o && !markers.has(o.imageId));
  const outcomeMatcher = (match) =>
    typeof match === "function" ? match : (o) => Object.entries(match).every(([k, v]) => o[k] === v);
  const queueBinding = (queue) => {
    const binding = helper.queues[queue];
    if (!binding) throw new Error(`no queue ${queue} (known: ${Object.keys(helper.queues).join(", ")})`);
    return binding;
  };
  let closed = false;

  const p = {
    mf,
    /** The URL of the first role's worker (the upload worker) on a real socket. */
    url,
    /** Worker names by role. */
    names,
    /** The AI stub (null with `ai.url`). */
    ai,
    /** Fault controls by binding name (see FaultControl). */
    faults: controls,
    /** D1 migrations per binding: `{ applied, skipped }`. */
    migrations,
    /** State folder, if any. */
    stateDir: root ?? null,
    /** fetch over the real socket; `path` is resolved against `url`. */
    fetch: (target, init) => fetch(new URL(target, url), init),
    /** fetch through Miniflare's dispatchFetch (no socket). */
    dispatchFetch: (target, init) => mf.dispatchFetch(new URL(target, url), init),
    /** Handles on the real (never wrapped) resources, by binding name or queue name. */
    kv: (name = BINDINGS.resultsKv) => mf.getKVNamespace(name, HELPER),
    bucket: (name = BINDINGS.imageBucket) => mf.getR2Bucket(name, HELPER),
    db: (name = BINDINGS.db) => mf.getD1Database(name, HELPER),
    queue: (name = QUEUES.images) => mf.getQueueProducer(queueBinding(name), HELPER),
    /** Every runtime log line so far. */
    lines: logReader.lines,
    waitForLine: logReader.waitForLine,
    /** The tagger's outcome lines so far, parsed (barrier markers left out). */
    outcomes,
    /** The first outcome (so far or to come) matching a predicate or `{ field: value }`. */
    async waitForOutcome(match, opts = {}) {
      const test = outcomeMatcher(match);
      const line = await logReader.waitForLine(
        (l) => {
          const o = parseOutcome(l);
          return o !== null && test(o);
        },
        { what: `a tagger outcome ${typeof match === "function" ? "matching" : JSON.stringify(match)}`, ...opts },
      );
      return parseOutcome(line);
    },
    /**
     * One image's outcome lines in log order, up to and including the first that matches
     * `until` (`{ field: value }`, a predicate, or an outcome name; default: any final
     * outcome), once that line has arrived (bounded by `timeoutMs`). The tagger writes D1,
     * then KV, then logs, and the log reaches this process later still: after a status wait,
     * read an image's outcomes through this, never through `outcomes()` directly.
     */
    async outcomesOf(imageId, { until, ...opts } = {}) {
      const test =
        until === undefined
          ? (o) => contract.finalOutcomes.includes(o.outcome)
          : typeof until === "string"
            ? (o) => o.outcome === until
            : outcomeMatcher(until);
      const mine = (o) => o.imageId === imageId;
      await p.waitForOutcome((o) => mine(o) && test(o), {
        what: `an outcome of ${imageId} ${typeof until === "object" ? JSON.stringify(until) : (until ?? "that is final")}`,
        ...opts,
      });
      const lines = outcomes().filter(mine);
      return lines.slice(0, lines.findIndex(test) + 1);
    },
    /** Polls `GET /images/{id}` until its status is one of `statuses` (default: terminal). */
    async waitForStatus(id, statuses = terminalStatuses, opts = {}) {
      const { headers, ...waitOpts } = opts;
      let last;
      try {
        return await waitFor(
          async () => {
            let res;
            try {
              res = await p.fetch(`/images/${id}`, { headers });
            } catch (error) {
              // A connection workerd dropped under load is not an answer: ask again, within
              // the same bound.
              if (error?.name !== "TypeError") throw error;
              last = `no answer (${error.message})`;
              return null;
            }
            last = `${res.status} ${await res.text()}`;
            const body = JSON.parse(last.slice(last.indexOf(" ") + 1));
            return statuses.includes(body.status) ? body : null;
          },
          { what: `${id} to be ${statuses.join(" or ")}`, ...waitOpts },
        );
      } catch (error) {
        error.message += `; last answer: ${last}`;
        throw error;
      }
    },
    /** The image's record straight from KV, or null. */
    async record(id) {
      return (await p.kv()).get(keys.record(id), "json");
    },
    /**
     * A queue barrier: once it resolves, every message sent to `queue` before it (and not
     * retried with a delay longer than `delaySeconds`) has been processed and logged. It
     * sends a marker (a message for an image that does not exist) after `delaySeconds`, waits
     * for its outcome, then sends a second marker and waits for that too: the second one is
     * in a later batch than the first, and a queue runs one batch at a time, so the first
     * marker's whole batch has finished. Markers are left out of `outcomes()`. On the
     * notification queue the marker is a delivery of an event that does not exist, which
     * the consumer logs as gone.
     */
    async barrier({ queue = QUEUES.images, delaySeconds = 0, timeoutMs = DEFAULT_WAIT_MS + delaySeconds * 1000 } = {}) {
      const producer = await p.queue(queue);
      for (const delay of [delaySeconds, 0]) {
        const what = `the barrier marker on ${queue}`;
        const options = delay ? { delaySeconds: delay } : {};
        if (queue === QUEUES.notifications) {
          // A delivery of an event that does not exist: the consumer logs it as gone.
          const eventId = `msg_${randomUUID().replaceAll("-", "")}_barrier`;
          await producer.send({ schemaVersion: contract.webhooks.message.schemaVersion, eventId }, options);
          await logReader.waitForLine((l) => l.includes(`"${logEvents.notify}"`) && l.includes(`"${eventId}"`), { timeoutMs, what });
          continue;
        }
        const marker = imageMessage();
        markers.add(marker.imageId);
        await producer.send(marker, options);
        await p.waitForOutcome({ imageId: marker.imageId }, { timeoutMs, what });
      }
    },
    /**
     * Runs a worker's scheduled handler once, as its cron trigger would (Miniflare does not
     * fire crons by itself). Resolves to the runtime's result; fails unless it is "ok".
     */
    async scheduled(role = "tagger", { cron = "* * * * *", scheduledTime = new Date() } = {}) {
      const result = await (await mf.getWorker(names[role])).scheduled({ cron, scheduledTime });
      if (result.outcome !== "ok") throw new Error(`${names[role]}: scheduled handler ended with ${result.outcome}`);
      return result;
    },
    /** Stops everything (idempotent). */
    async close() {
      if (closed) return;
      closed = true;
      logReader.close();
      await mf.dispose();
      if (removeRoot) rmSync(root, { recursive: true, force: true });
    },
  };
  return p;
}

/**
 * A worker of the launcher's own with a direct binding to every KV namespace, R2 bucket and
 * D1 database of the pipeline's workers, and a producer for every queue in the contract, so
 * handles and barriers reach the real resources even when a worker's binding is wrapped.
 */
function helperWorker(workerList, extraQueues = []) {
  const merged = { kvNamespaces: {}, r2Buckets: {}, d1Databases: {} };
  for (const options of workerList) {
    for (const key of Object.keys(merged)) {
      for (const [name, value] of Object.entries(options[key] ?? {})) {
        const known = merged[key][name];
        if (known && JSON.stringify(known) !== JSON.stringify(value)) {
          throw new Error(`${name}: the workers bind it to different resources`);
        }
        merged[key][name] = value;
      }
    }
  }
  const queues = Object.fromEntries([...Object.values(QUEUES), ...extraQueues].map((q, i) => [q, `QUEUE_${i}`]));
  const d1 = Object.fromEntries(Object.entries(merged.d1Databases).map(([name, v]) => [v.id ?? v, name]));
  return {
    queues,
    d1,
    options: {
      name: HELPER,
      modules: true,
      script: "export default { fetch() { return new Response(null, { status: 404 }); } };",
      ...merged,
      queueProducers: Object.fromEntries(Object.entries(queues).map(([queueName, binding]) => [binding, { queueName }])),
    },
  };
}

// ---------------------------------------------------------------------------------------
// Concurrent invocations: a second tagger.

/** The role name of the second tagger (`secondTagger`). */
export const SECOND_TAGGER = "tagger2";
/** The queue the second tagger consumes: the image queue's settings, under another name. */
export const SECOND_QUEUE = `${QUEUES.images}-2`;

/**
 * Miniflare runs one batch at a time per queue, so one tagger never overlaps with itself.
 * The second tagger is the same bundle (the same JS and wasm files) under another name, with
 * the same bindings (so the same D1, R2 and KV), its pacer binding pointing at the first
 * tagger's `AiPacer` (so the same object), and only one consumer: `SECOND_QUEUE`, with the
 * image queue's settings. Its entry module is the bundle's own with one change: a batch
 * from `SECOND_QUEUE` is handed to the tagger as a batch of the image queue (the tagger
 * picks its handler by queue name), its messages, acks and retries untouched.
 */
function secondTaggerOptions(first) {
  const dir = path.dirname(first.scriptPath);
  const main = path.basename(first.scriptPath);
  const entry = `second-tagger-entry.mjs`;
  const contents = [
    `import Tagger from "./${main}";`,
    `export * from "./${main}";`,
    `const AS = ${JSON.stringify(QUEUES.images)};`,
    "export default class SecondTagger extends Tagger {",
    "  queue(batch) {",
    "    const renamed = new Proxy(batch, {",
    "      get(target, key) {",
    "        if (key === \"queue\") return AS;",
    "        const value = Reflect.get(target, key);",
    "        return typeof value === \"function\" ? value.bind(target) : value;",
    "      },",
    "    });",
    "    return super.queue(renamed);",
    "  }",
    "}",
  ].join("\n");
  const { scriptPath: _scriptPath, modulesRules: _rules, ...rest } = first;
  const consumer = first.queueConsumers[QUEUES.images];
  if (!consumer) throw new Error(`the tagger has no consumer for ${QUEUES.images}`);
  const pacer = first.durableObjects?.[BINDINGS.aiPacer];
  const live = first.durableObjects?.[BINDINGS.liveEvents];
  // The first tagger's objects, not new ones of this worker's: one pacer, one object per client.
  const objects = {
    ...(pacer ? { [BINDINGS.aiPacer]: { ...pacer, scriptName: pacer.scriptName ?? first.name } } : {}),
    ...(live ? { [BINDINGS.liveEvents]: { ...live, scriptName: live.scriptName ?? first.name } } : {}),
  };
  return {
    ...rest,
    name: `${first.name}-2`,
    modules: [
      { type: "ESModule", path: path.join(dir, entry), contents },
      { type: "ESModule", path: first.scriptPath },
      ...readdirSync(dir)
        .filter((f) => f.endsWith(".wasm"))
        .map((f) => ({ type: "CompiledWasm", path: path.join(dir, f) })),
    ],
    modulesRoot: dir,
    queueConsumers: { [SECOND_QUEUE]: { ...consumer } },
    durableObjects: objects,
  };
}

// ---------------------------------------------------------------------------------------
// An unavailable pacer (`pacerDown`).

const DOWN_PACER = "pacer-down";

/** A worker whose Durable Object class fails every request, as an overloaded object would. */
function downPacerWorker() {
  return {
    name: DOWN_PACER,
    modules: true,
    script: [
      "import { DurableObject } from \"cloudflare:workers\";",
      "export class DownPacer extends DurableObject {",
      "  fetch() { throw new Error(\"Durable Object is overloaded (injected by the test launcher)\"); }",
      "}",
      "export default { fetch() { return new Response(null, { status: 404 }); } };",
    ].join("\n"),
    durableObjects: { PACER: { className: "DownPacer", useSQLite: true } },
  };
}

const DOWN_LIVE = "live-down";

/** A worker whose live-updates class fails every request (`liveDown`). */
function downLiveWorker() {
  return {
    name: DOWN_LIVE,
    modules: true,
    script: [
      "import { DurableObject } from \"cloudflare:workers\";",
      "export class DownLive extends DurableObject {",
      "  fetch() { throw new Error(\"Durable Object is overloaded (injected by the test launcher)\"); }",
      "}",
      "export default { fetch() { return new Response(null, { status: 404 }); } };",
    ].join("\n"),
    durableObjects: { LIVE: { className: "DownLive", useSQLite: true } },
  };
}
