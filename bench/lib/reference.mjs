// The TypeScript reference (bench/reference) as Miniflare worker options, next to the Rust
// workers as the launcher loads them (local/pipeline.mjs `workerOptions`, from the real
// wrangler configs): bundled here with esbuild, with wrangler-style options of its own.
// Binding names come from the contract, as in the Rust configs.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { AI_BINDING_SCRIPT, ROOT, WORKERS, applyMigrations, readWorkerConfig, workerOptions } from "../../local/pipeline.mjs";
import { bindings, queues } from "../../local/contract.mjs";

export { ROOT };

export const BENCH = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const BUILD = path.join(BENCH, ".build");
/** As in the Rust workers' configs. */
export const COMPATIBILITY_DATE = readWorkerConfig("upload").compatibility_date;

/** The vars of the Rust workers' configs, which the TS reference gets the same values of. */
const RUST_VARS = { upload: readWorkerConfig("upload").vars, tagger: readWorkerConfig("tagger").vars };

export const RUST = "rust";
export const TS = "ts";
export const IMPLS = [RUST, TS];
/** Ablation for bench/profile.mjs only: the TS upload worker streaming like the Rust one. */
export const TS_STREAM = "ts-stream";
/** The fair upload reference (issue 25): the TS upload that also checks the operator key and
 *  records the image's row in D1 with our statement before the 202 (upload-d1.ts). */
export const TS_D1 = "ts-d1";

/** Worker and queue names per implementation. */
export const NAMES = {
  [RUST]: {
    upload: readWorkerConfig("upload").name,
    tagger: readWorkerConfig("tagger").name,
    queue: queues.images,
    dlq: queues.imagesDeadLetter,
  },
  [TS]: {
    upload: "ts-upload-worker",
    tagger: "ts-tagger-worker",
    queue: `ts-${queues.images}`,
    dlq: `ts-${queues.imagesDeadLetter}`,
  },
  [TS_STREAM]: {
    upload: "ts-streaming-upload-worker",
    queue: `ts-${queues.images}`,
  },
  [TS_D1]: {
    upload: "ts-d1-upload-worker",
    queue: `ts-${queues.images}`,
  },
};

/** The script each TS upload variant is bundled into. */
const TS_UPLOAD_SCRIPT = { [TS]: "upload.js", [TS_STREAM]: "upload-streaming.js", [TS_D1]: "upload-d1.js" };

/** Queue consumer settings of the benchmark, read from wrangler.tagger.toml. */
export function configuredConsumer() {
  const { maxBatchSize, maxBatchTimeout, maxRetries } = workerOptions("tagger").queueConsumers[queues.images];
  return { maxBatchSize, maxBatchTimeout, maxRetries };
}

/** Bundles the TypeScript reference into bench/.build/{upload,tagger,upload-streaming,upload-d1}.js. */
export function bundleReference() {
  mkdirSync(BUILD, { recursive: true });
  const esbuild = path.join(ROOT, "node_modules/.bin/esbuild");
  for (const name of ["upload", "tagger", "upload-streaming", "upload-d1"]) {
    execFileSync(
      esbuild,
      [
        path.join(BENCH, "reference", `${name}.ts`),
        "--bundle",
        "--format=esm",
        "--target=es2022",
        "--log-level=warning",
        `--outfile=${path.join(BUILD, `${name}.js`)}`,
      ],
      { cwd: ROOT, stdio: ["ignore", "inherit", "inherit"] },
    );
  }
}

/** Whether a Rust worker's build output is older than the sources it is built from. */
export function staleBuild(crate) {
  const wasm = path.join(ROOT, "crates", crate, "build", "index_bg.wasm");
  if (!existsSync(wasm)) return `crates/${crate}/build is missing`;
  const built = statSync(wasm).mtimeMs;
  const sources = [
    path.join(ROOT, "Cargo.toml"),
    path.join(ROOT, "Cargo.lock"),
    path.join(ROOT, "crates", crate, "Cargo.toml"),
    ...rsFiles(path.join(ROOT, "crates", crate, "src")),
    ...rsFiles(path.join(ROOT, "crates", "shared", "src")),
  ];
  const newer = sources.filter((f) => existsSync(f) && statSync(f).mtimeMs > built);
  return newer.length ? `older than ${newer.map((f) => path.relative(ROOT, f)).join(", ")}` : null;
}

function rsFiles(dir) {
  if (!existsSync(dir)) return [];
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? rsFiles(path.join(dir, e.name)) : e.name.endsWith(".rs") ? [path.join(dir, e.name)] : [],
  );
}

/**
 * The upload worker of `impl`. `queue` overrides the queue it produces to; `vars` add vars;
 * `socket` gives it a direct HTTP socket of its own (see `directUrl`).
 */
export function uploadWorker(impl, { queue, vars = {}, socket = true } = {}) {
  const names = NAMES[impl];
  const sockets = socket ? { unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }] } : {};
  if (impl === RUST) {
    const producers = queue ? { queueProducers: { [bindings.imageQueue]: { queueName: queue } } } : {};
    return withoutForeignObjects(workerOptions("upload", { vars, overrides: { ...sockets, ...producers } }));
  }
  return {
    name: names.upload,
    modules: true,
    scriptPath: path.join(BUILD, TS_UPLOAD_SCRIPT[impl]),
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: { MAX_UPLOAD_BYTES: RUST_VARS.upload.MAX_UPLOAD_BYTES, ...vars },
    r2Buckets: { [bindings.imageBucket]: "ts-image-uploads" },
    kvNamespaces: { [bindings.resultsKv]: "ts-results-kv" },
    // Its own database, on the same migrations as ours (`migrateD1`).
    ...(impl === TS_D1 ? { d1Databases: { [bindings.db]: "ts-image-tagger" } } : {}),
    queueProducers: { [bindings.imageQueue]: { queueName: queue ?? names.queue } },
    ...sockets,
  };
}

/**
 * The Rust tagger as the host of its Durable Objects only, for an upload benchmark: each Rust
 * upload publishes a `queued` event to its owner's `LiveEvents` object, which lives in the
 * tagger. It consumes no queue and has no AI: it tags nothing.
 */
export function taggerObjectHost(vars = {}) {
  const { queueConsumers: _q, wrappedBindings: _w, ...rest } = workerOptions("tagger", { vars });
  return rest;
}

/**
 * The options without Durable Object bindings to another script: the Rust upload worker's
 * `AI_PACER` (read by `GET /admin/usage` only) names the tagger, which a benchmark of the
 * upload path does not run, and workerd refuses to start with a binding to a missing script.
 */
export function withoutForeignObjects(options) {
  const own = Object.entries(options.durableObjects ?? {}).filter(
    ([, o]) => typeof o !== "object" || !o.scriptName || o.scriptName === options.name,
  );
  return { ...options, durableObjects: Object.fromEntries(own) };
}

/**
 * Applies the D1 migrations to each D1 database bound by the workers of `options` (a list of
 * Miniflare worker options) in a started Miniflare `mf`, once per database.
 */
export async function migrateD1(mf, options) {
  const done = new Set();
  for (const o of options) {
    for (const [binding, id] of Object.entries(o.d1Databases ?? {})) {
      const key = JSON.stringify(id);
      if (done.has(key)) continue;
      done.add(key);
      await applyMigrations(await mf.getD1Database(binding, o.name), path.join(ROOT, "migrations"));
    }
  }
}

/**
 * The tagger of `impl`. The Rust one is as configured; the TS one consumes its own queue
 * with `consumer` settings. `AI` is the launcher's `Ai` binding either way.
 */
export function taggerWorker(impl, { consumer = configuredConsumer(), vars = {} } = {}) {
  if (impl === RUST) return workerOptions("tagger", { vars });
  const names = NAMES[impl];
  return {
    name: names.tagger,
    modules: true,
    scriptPath: path.join(BUILD, "tagger.js"),
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: { MIN_SCORE: RUST_VARS.tagger.MIN_SCORE, ...vars },
    r2Buckets: { [bindings.imageBucket]: "ts-image-uploads" },
    kvNamespaces: { [bindings.resultsKv]: "ts-results-kv" },
    queueConsumers: { [names.queue]: { ...consumer, deadLetterQueue: names.dlq } },
    wrappedBindings: { [bindings.ai]: { scriptName: AI_BINDING_SCRIPT } },
  };
}

/** The same options with the script replaced by a trivial one: a start-up baseline. */
export function trivialLike(options) {
  const { scriptPath: _s, modulesRules: _m, queueConsumers: _q, wrappedBindings: _w, ...rest } = options;
  return {
    ...rest,
    name: `${options.name}-baseline`,
    modules: true,
    script: "export default { fetch() { return new Response('ok'); } };",
  };
}

/** Text of a wrangler config for a TS reference worker, mirroring ours. */
export function tsWranglerConfig(kind, mainRelative) {
  const names = NAMES[TS];
  const consumer = configuredConsumer();
  const common = `compatibility_date = "${COMPATIBILITY_DATE}"

[[r2_buckets]]
binding = "${bindings.imageBucket}"
bucket_name = "my-image-uploads"
preview_bucket_name = "my-image-uploads-preview"

[[kv_namespaces]]
binding = "${bindings.resultsKv}"
id = "00000000000000000000000000000000"
`;
  if (kind === "upload") {
    return `name = "${names.upload}"
main = "${mainRelative}"
${common}
[vars]
MAX_UPLOAD_BYTES = "${RUST_VARS.upload.MAX_UPLOAD_BYTES}"

[[queues.producers]]
binding = "${bindings.imageQueue}"
queue = "${names.queue}"
`;
  }
  return `name = "${names.tagger}"
main = "${mainRelative}"
${common}
[vars]
MIN_SCORE = "${RUST_VARS.tagger.MIN_SCORE}"

[ai]
binding = "${bindings.ai}"

[[queues.consumers]]
queue = "${names.queue}"
max_batch_size = ${consumer.maxBatchSize}
max_batch_timeout = ${consumer.maxBatchTimeout}
max_retries = ${consumer.maxRetries}
dead_letter_queue = "${names.dlq}"
`;
}

/** Text of one of our wrangler configs (by role) without its [build] step and with `main` moved. */
export function rustWranglerConfig(role, mainRelative) {
  return readFileSync(WORKERS[role], "utf8")
    .replace(/^\[build\][\s\S]*?(?=^\[)/m, "")
    .replace(/^main = .*$/m, `main = "${mainRelative}"`);
}
