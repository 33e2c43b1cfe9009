// Compares upload-worker builds against each other and against the TypeScript references,
// to judge a change to the Rust upload path before it is merged:
//
//   node bench/compare.mjs [--size-kib 100] [--count 300] [--concurrency 1] [--reps 5]
//                          [--memory] BUILD_DIR...
//
// Each BUILD_DIR is a crates/upload-worker/build directory (index.js and index_bg.wasm),
// e.g. a copy of the current build and one made from a branch. The builds, the TS reference
// (buffering), the fair one that also writes D1 (upload-d1.ts) and the streaming ablation
// run in one Miniflare, interleaved, every request with the operator key; printed are the
// workerd CPU time per request (all threads), throughput and latency, median of the runs.
// With --memory, each build and the TS reference also get the memory measurement of
// bench/run.mjs (a fresh workerd each, 20 uploads of 8 MiB).

import path from "node:path";
import { Miniflare } from "miniflare";

import { workerOptions } from "../local/pipeline.mjs";
import { bindings } from "../local/contract.mjs";
import { load, median, pngBody } from "./lib/http.mjs";
import { measureUploadMemory } from "./lib/memory.mjs";
import { cpuMs, newWorkerd, workerdChildren } from "./lib/proc.mjs";
import { NAMES, TS, TS_D1, TS_STREAM, bundleReference, migrateD1, taggerObjectHost, uploadWorker, withoutForeignObjects } from "./lib/reference.mjs";

process.env.WRANGLER_LOG ??= "error";

const argv = process.argv.slice(2);
const options = {};
const builds = [];
for (let i = 0; i < argv.length; i++) {
  if (argv[i] === "--memory") options.memory = true;
  else if (argv[i].startsWith("--")) options[argv[i].slice(2)] = Number(argv[++i]);
  else builds.push(path.resolve(argv[i]));
}
if (!builds.length) {
  console.error("usage: node bench/compare.mjs [--size-kib N] [--count N] [--concurrency N] [--reps N] [--memory] BUILD_DIR...");
  process.exit(2);
}
const sizeKiB = options["size-kib"] ?? 100;
const count = options.count ?? 300;
const concurrency = options.concurrency ?? 1;
const reps = options.reps ?? 5;
const MAX = String(64 * 1024 * 1024);
// Every request carries the operator key, as in bench/upload-ratio.mjs.
const TOKEN = "bench-operator-token-0123456789abcdef";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const VARS = { MAX_UPLOAD_BYTES: MAX, API_TOKEN: TOKEN, ALLOW_ANONYMOUS: "false" };

bundleReference();

function buildWorker(dir, i, vars) {
  const options = workerOptions("upload", {
    vars,
    overrides: {
      name: `build-${i}`,
      scriptPath: path.join(dir, "index.js"),
      modulesRoot: dir,
      queueProducers: { [bindings.imageQueue]: { queueName: `bench-sink-build-${i}` } },
      unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
    },
  });
  return options;
}

const variants = [
  ...builds.map((dir, i) => ({ label: dir, options: (vars) => buildWorker(dir, i, vars) })),
  ...[TS_D1, TS, TS_STREAM].map((impl) => ({
    label: NAMES[impl].upload,
    options: (vars) => uploadWorker(impl, { queue: `bench-sink-${impl}`, vars }),
  })),
];

const before = workerdChildren();
const mf = new Miniflare({
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.resume();
  },
  // The tagger hosts the builds' `LiveEvents` objects: each upload publishes to one.
  workers: [...variants.map((v) => v.options(VARS)), taggerObjectHost(VARS)],
});
await mf.ready;
await migrateD1(mf, variants.map((v) => v.options({})));
const pid = newWorkerd(before);
const body = pngBody(sizeKiB * 1024);
for (const v of variants) {
  v.name = v.options({}).name;
  v.url = new URL("/images", await mf.unsafeGetDirectURL(v.name));
  v.runs = [];
  await load(v.url, body, { count: 20, concurrency, headers: AUTH }); // warm up
}
for (let rep = 0; rep < reps; rep++) {
  for (const v of rep % 2 ? [...variants].reverse() : variants) {
    const cpu0 = cpuMs(pid);
    const run = await load(v.url, body, { count, concurrency, headers: AUTH });
    v.runs.push({ ...run, cpu: (cpuMs(pid) - cpu0) / count });
    const bucket = await mf.getR2Bucket(bindings.imageBucket, v.name);
    for (let listed; (listed = await bucket.list({ limit: 1000 })).objects.length; ) {
      await bucket.delete(listed.objects.map((o) => o.key));
    }
  }
}
await mf.dispose();

console.log(`${count} uploads of ${sizeKiB} KiB at concurrency ${concurrency}, median of ${reps} interleaved runs`);
for (const v of variants) {
  const m = (k) => median(v.runs.map((r) => r[k]));
  const errors = v.runs.reduce((n, r) => n + r.errors, 0);
  console.log(
    `  ${v.label}\n      workerd CPU ${m("cpu").toFixed(2)} ms/request, ${m("throughput").toFixed(1)} req/s, ` +
      `p50 ${m("p50").toFixed(2)} ms, p99 ${m("p99").toFixed(2)} ms${errors ? `, ${errors} errors` : ""}`,
  );
}

if (options.memory) {
  console.log("\nMemory: fresh workerd each, 20 sequential uploads of 8 MiB");
  for (const v of variants.filter((v) => v.label !== NAMES[TS_STREAM].upload && v.label !== NAMES[TS_D1].upload)) {
    const m = await measureUploadMemory(withoutForeignObjects(v.options({ MAX_UPLOAD_BYTES: MAX })), {
      imageBytes: 8 * 1024 * 1024,
      uploads: 20,
    });
    const mib = (x) => (x / 2 ** 20).toFixed(1);
    console.log(
      `  ${v.label}\n      RSS ${mib(m.rssBase)} MiB, +${mib(m.deltaAfter1)} after 1, +${mib(m.deltaAfterN)} after 20, ` +
        `peak +${mib(m.peakDelta)}; wasm ${m.wasmAfterN === null ? "none" : `${mib(m.wasmAfterN)} MiB`}`,
    );
  }
}
