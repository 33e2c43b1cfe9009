// The two implementations as Miniflare worker options: the Rust workers from their real
// wrangler configs (local/workers.mjs), and the TypeScript reference (bench/reference),
// bundled here with esbuild and given wrangler-style options of its own.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import {
  ROOT,
  UPLOAD_CONFIG,
  TAGGER_CONFIG,
  MAIN_QUEUE,
  DEAD_LETTER_QUEUE,
  workerFromConfig,
} from "../../local/workers.mjs";

export { ROOT, UPLOAD_CONFIG, TAGGER_CONFIG, MAIN_QUEUE, DEAD_LETTER_QUEUE };

export const BENCH = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
export const BUILD = path.join(BENCH, ".build");
export const COMPATIBILITY_DATE = "2026-04-01"; // as in both wrangler configs

export const RUST = "rust";
export const TS = "ts";
export const IMPLS = [RUST, TS];
/** Ablation for bench/profile.mjs only: the TS upload worker streaming like the Rust one. */
export const TS_STREAM = "ts-stream";

/** Worker and queue names per implementation. */
export const NAMES = {
  [RUST]: {
    upload: "image-upload-worker",
    tagger: "image-tagger-worker",
    queue: MAIN_QUEUE,
    dlq: DEAD_LETTER_QUEUE,
  },
  [TS]: {
    upload: "ts-upload-worker",
    tagger: "ts-tagger-worker",
    queue: "ts-image-processing-queue",
    dlq: "ts-image-processing-dlq",
  },
  [TS_STREAM]: {
    upload: "ts-streaming-upload-worker",
    queue: "ts-image-processing-queue",
  },
};

/** Queue consumer settings of the benchmark, read from wrangler.tagger.toml. */
export function configuredConsumer() {
  const consumers = workerFromConfig(TAGGER_CONFIG).queueConsumers;
  const { maxBatchSize, maxBatchTimeout, maxRetries } = consumers[MAIN_QUEUE];
  return { maxBatchSize, maxBatchTimeout, maxRetries };
}

/** Bundles the TypeScript reference into bench/.build/{upload,tagger,upload-streaming}.js. */
export function bundleReference() {
  mkdirSync(BUILD, { recursive: true });
  const esbuild = path.join(ROOT, "node_modules/.bin/esbuild");
  for (const name of ["upload", "tagger", "upload-streaming"]) {
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
    return workerFromConfig(UPLOAD_CONFIG, {
      ...sockets,
      ...(queue ? { queueProducers: { IMAGE_QUEUE: { queueName: queue } } } : {}),
      bindings: vars,
    });
  }
  return {
    name: names.upload,
    modules: true,
    scriptPath: path.join(BUILD, impl === TS_STREAM ? "upload-streaming.js" : "upload.js"),
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: { MAX_UPLOAD_BYTES: "10485760", ...vars },
    r2Buckets: { IMAGE_BUCKET: "ts-image-uploads" },
    kvNamespaces: { RESULTS_KV: "ts-results-kv" },
    queueProducers: { IMAGE_QUEUE: { queueName: queue ?? names.queue } },
    ...sockets,
  };
}

/** The tagger of `impl`, consuming its queue with `consumer` settings, `AI` from `aiUrl`. */
export function taggerWorker(impl, { consumer, aiUrl, vars = {} }) {
  const names = NAMES[impl];
  const wrappedBindings = { AI: { scriptName: "ai-binding", bindings: { AI_ENDPOINT: aiUrl } } };
  const consumers = {
    [names.queue]: { ...consumer, deadLetterQueue: names.dlq },
  };
  if (impl === RUST) {
    return workerFromConfig(TAGGER_CONFIG, {
      // The dead letter consumer stays as configured; it sees no traffic here.
      queueConsumers: { ...workerFromConfig(TAGGER_CONFIG).queueConsumers, ...consumers },
      wrappedBindings,
      bindings: vars,
    });
  }
  return {
    name: names.tagger,
    modules: true,
    scriptPath: path.join(BUILD, "tagger.js"),
    compatibilityDate: COMPATIBILITY_DATE,
    bindings: { MIN_SCORE: "0.8", ...vars },
    r2Buckets: { IMAGE_BUCKET: "ts-image-uploads" },
    kvNamespaces: { RESULTS_KV: "ts-results-kv" },
    queueConsumers: consumers,
    wrappedBindings,
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
  const common = `compatibility_date = "${COMPATIBILITY_DATE}"

[[r2_buckets]]
binding = "IMAGE_BUCKET"
bucket_name = "my-image-uploads"
preview_bucket_name = "my-image-uploads-preview"

[[kv_namespaces]]
binding = "RESULTS_KV"
id = "00000000000000000000000000000000"
`;
  if (kind === "upload") {
    return `name = "${names.upload}"
main = "${mainRelative}"
${common}
[vars]
MAX_UPLOAD_BYTES = "10485760"

[[queues.producers]]
binding = "IMAGE_QUEUE"
queue = "${names.queue}"
`;
  }
  return `name = "${names.tagger}"
main = "${mainRelative}"
${common}
[vars]
MIN_SCORE = "0.8"

[ai]
binding = "AI"

[[queues.consumers]]
queue = "${names.queue}"
max_batch_size = 5
max_batch_timeout = 5
max_retries = 3
dead_letter_queue = "${names.dlq}"
`;
}

/** Text of one of our wrangler configs without its [build] step and with `main` moved. */
export function rustWranglerConfig(configPath, mainRelative) {
  return readFileSync(configPath, "utf8")
    .replace(/^\[build\][\s\S]*?(?=^\[)/m, "")
    .replace(/^main = .*$/m, `main = "${mainRelative}"`);
}
