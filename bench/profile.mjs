// Where the upload workers spend their CPU: loads both upload workers into one Miniflare
// with the V8 inspector on, runs the same uploads against each while its CPU profiler
// samples, and prints the functions with the most self time, plus the workerd process's
// CPU time per request (all threads, from /proc).
//
//   node bench/profile.mjs [--size-kib 100] [--count 300] [--concurrency 1] [--top 25]
//                          [--save DIR]     also write the .cpuprofile files, for DevTools
//                          [--no-profile]   no profiler: CPU per request only, median of 5
//
// Sampled profiles attribute time to the JS/wasm function on the stack; time in the
// runtime's native code (streams, R2 and queue clients) shows as "(program)".

import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { Miniflare } from "miniflare";

import { load, median, pngBody } from "./lib/http.mjs";
import { Inspector } from "./lib/inspector.mjs";
import { cpuMs, newWorkerd, workerdChildren } from "./lib/proc.mjs";
import { IMPLS, NAMES, TS_STREAM, bundleReference, migrateD1, uploadWorker } from "./lib/reference.mjs";

process.env.WRANGLER_LOG ??= "error";

const argv = process.argv.slice(2);
const arg = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const sizeKiB = Number(arg("--size-kib", 100));
const count = Number(arg("--count", 300));
const concurrency = Number(arg("--concurrency", 1));
const top = Number(arg("--top", 25));
const saveDir = arg("--save", null);
const noProfile = argv.includes("--no-profile");
// The Rust and TS upload workers, and the TS one streaming like the Rust one (an ablation).
const VARIANTS = [...IMPLS, TS_STREAM];

/** Self time per function (and per category) from a V8 CPU profile. */
function summarise(profile) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const categories = new Map();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const node = byId.get(id);
    const dt = profile.timeDeltas[i] / 1000;
    const { functionName, url } = node.callFrame;
    if (functionName === "(idle)") return;
    total += dt;
    const name = `${functionName || "(anonymous)"}${url ? ` [${url.startsWith("wasm://") ? "wasm" : path.basename(url)}]` : ""}`;
    self.set(name, (self.get(name) ?? 0) + dt);
    const category = url.startsWith("wasm://")
      ? "wasm"
      : url
        ? "worker's own JS (for Rust: wasm-bindgen glue and shim)"
        : functionName === "(garbage collector)"
          ? "GC"
          : functionName === "(program)"
            ? "runtime native"
            : functionName.startsWith("wasm-to-js") || functionName.startsWith("js-to-wasm")
              ? "wasm<->JS transitions"
              : "runtime builtins (streams, bindings, Response)";
    categories.set(category, (categories.get(category) ?? 0) + dt);
  });
  const rows = [...self.entries()].sort((a, b) => b[1] - a[1]);
  return { total, rows, categories: [...categories.entries()].sort((a, b) => b[1] - a[1]) };
}

bundleReference();
const before = workerdChildren();
const workers = VARIANTS.map((impl) =>
  uploadWorker(impl, { queue: `bench-sink-${impl}`, vars: { MAX_UPLOAD_BYTES: String(64 * 1024 * 1024) } }),
);
const mf = new Miniflare({
  ...(noProfile ? {} : { inspectorPort: 0 }),
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.resume();
  },
  workers,
});
await mf.ready;
await migrateD1(mf, workers);
const pid = newWorkerd(before);
const inspectorUrl = noProfile ? null : await mf.getInspectorURL();
const body = pngBody(sizeKiB * 1024);
console.log(`${count} uploads of ${sizeKiB} KiB at concurrency ${concurrency} per worker\n`);

const urls = {};
for (const impl of VARIANTS) {
  urls[impl] = new URL("/images", await mf.unsafeGetDirectURL(NAMES[impl].upload));
  await load(urls[impl], body, { count: 30, concurrency }); // warm up
}

if (noProfile) {
  // No profiler attached: workerd CPU per request and latency, interleaved, median of 5.
  const runs = Object.fromEntries(VARIANTS.map((v) => [v, []]));
  for (let rep = 0; rep < 5; rep++) {
    for (const impl of rep % 2 ? [...VARIANTS].reverse() : VARIANTS) {
      const cpu0 = cpuMs(pid);
      const run = await load(urls[impl], body, { count, concurrency });
      runs[impl].push({ ...run, cpu: (cpuMs(pid) - cpu0) / count });
    }
  }
  for (const impl of VARIANTS) {
    const m = (k) => median(runs[impl].map((r) => r[k]));
    console.log(
      `${NAMES[impl].upload.padEnd(28)} workerd CPU ${m("cpu").toFixed(2)} ms/request, ` +
        `${m("throughput").toFixed(1)} req/s, p50 ${m("p50").toFixed(2)} ms, p99 ${m("p99").toFixed(2)} ms`,
    );
  }
} else {
  for (const impl of VARIANTS) {
    const name = NAMES[impl].upload;
    const inspector = await Inspector.open(new URL(`/core:user:${name}`, inspectorUrl));
    await inspector.send("Profiler.enable");
    await inspector.send("Profiler.setSamplingInterval", { interval: 50 });
    await inspector.send("Profiler.start");
    const cpu0 = cpuMs(pid);
    const run = await load(urls[impl], body, { count, concurrency });
    const cpu1 = cpuMs(pid);
    const { profile } = await inspector.send("Profiler.stop");
    inspector.close();
    if (saveDir) {
      mkdirSync(saveDir, { recursive: true });
      writeFileSync(path.join(saveDir, `${name}.cpuprofile`), JSON.stringify(profile));
    }
    const s = summarise(profile);
    console.log(
      `== ${name}: ${run.throughput.toFixed(1)} req/s, p50 ${run.p50.toFixed(2)} ms; ` +
        `workerd CPU ${((cpu1 - cpu0) / count).toFixed(2)} ms/request (all threads, profiler on); ` +
        `isolate busy (sampled) ${(s.total / count).toFixed(2)} ms/request`,
    );
    console.log(
    "   by category, µs/request: " +
      s.categories.map(([c, ms]) => `${c} ${((1000 * ms) / count).toFixed(0)}`).join("; "),
  );
    for (const [fn, ms] of s.rows.slice(0, top)) {
      console.log(`   ${((1000 * ms) / count).toFixed(1).padStart(7)} µs/req  ${((100 * ms) / s.total).toFixed(1).padStart(5)}%  ${fn}`);
    }
    console.log();
  }
}
await mf.dispose();
