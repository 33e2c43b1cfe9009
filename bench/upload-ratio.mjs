// The upload CPU and throughput ratios of issue 25: the Rust upload worker against the fair
// TypeScript reference (bench/reference/upload-d1.ts: the operator key checked, the image's
// row recorded in D1 with our INSERT before the 202) and against the plain seed design
// (bench/reference/upload.ts, no D1), all three in one workerd, interleaved.
//
//   node bench/upload-ratio.mjs [--quick] [--reps 3] [--no-save] [--save-profiles DIR]
//   npm run bench:upload
//
// Cells: 100 KiB at c = 1, 16, 64 and 5 MiB at c = 4. Every request carries the operator key
// (`Authorization: Bearer`): the operator is the caller with no rate limit, no quota and no
// key lookup, so the auth check is a constant-time compare on both sides.
//
// Two figures per request, each the median of the interleaved runs:
// - workerd CPU: every thread of the workerd process (from /proc), so it includes
//   Miniflare's local R2, Queues and D1, which run in the same process. Measured in a
//   Miniflare without the inspector, with throughput and latency.
// - isolate CPU: the upload worker's own isolate, from the V8 CPU profiler over the
//   inspector (a second Miniflare with `inspectorPort`, same runs), the self time of every
//   sample but `(idle)` and `(program)`. `(program)` is time the isolate's thread spends
//   outside any JS or wasm of this isolate: workerd's event loop, socket I/O and the other
//   isolates on the same thread (Miniflare's R2, Queues and D1 services), which cannot be
//   told apart; it is reported on its own. GC is kept: the isolate's garbage is its own.
//   The profiler samples every 100 µs and inflates what it measures: compare within it.
//
// Writes the run into bench/upload-results.json (`runs`, one entry per run, newest last:
// the history by commit), unless --no-save or --quick; bench/tables.mjs makes BENCHMARKS.md's
// upload tables from it.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Miniflare } from "miniflare";

import { workerOptions } from "../local/pipeline.mjs";
import { load, median, pngBody } from "./lib/http.mjs";
import { Inspector } from "./lib/inspector.mjs";
import { cpuMs, newWorkerd, workerdChildren } from "./lib/proc.mjs";
import { NAMES, ROOT, RUST, TS, TS_D1, bundleReference, migrateD1, staleBuild, uploadWorker, withoutForeignObjects } from "./lib/reference.mjs";
import { bindings } from "../local/contract.mjs";

process.env.WRANGLER_LOG ??= "error";

const argv = process.argv.slice(2);
const arg = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const quick = argv.includes("--quick");
const reps = Number(arg("--reps", quick ? 1 : 3));
const save = !argv.includes("--no-save") && !quick;
const profilesDir = arg("--save-profiles", null);
const RESULTS = path.join(ROOT, "bench", "upload-results.json");
const KiB = 1024;
const MiB = 1024 * KiB;
const CELLS = [
  { size: 100 * KiB, label: "100 KiB", concurrency: 1, count: quick ? 60 : 200 },
  { size: 100 * KiB, label: "100 KiB", concurrency: 16, count: quick ? 100 : 320 },
  { size: 100 * KiB, label: "100 KiB", concurrency: 64, count: quick ? 128 : 384 },
  { size: 5 * MiB, label: "5 MiB", concurrency: 4, count: quick ? 12 : 40 },
];
const IMPLS = [RUST, TS_D1, TS];
const TOKEN = "bench-operator-token-0123456789abcdef";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const VARS = { MAX_UPLOAD_BYTES: String(64 * MiB), API_TOKEN: TOKEN, ALLOW_ANONYMOUS: "false" };
const SAMPLING_US = 100;

const stale = staleBuild("upload-worker");
if (stale) console.warn(`warning: crates/upload-worker/build is ${stale}`);
bundleReference();

function workers() {
  return IMPLS.map((impl) => {
    if (impl !== RUST) return uploadWorker(impl, { queue: `bench-sink-${impl}`, vars: VARS });
    // As the launcher runs it, alone (no tagger: its AI_PACER binding goes), its sends to a
    // queue without a consumer.
    const options = workerOptions("upload", {
      vars: VARS,
      overrides: {
        unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
        queueProducers: { [bindings.imageQueue]: { queueName: `bench-sink-${impl}` } },
      },
    });
    return withoutForeignObjects(options);
  });
}

/** Self time of a V8 CPU profile, in ms: `{ own, program, idle }`; `own` includes GC. */
function selfTime(profile) {
  const kind = new Map(profile.nodes.map((n) => [n.id, n.callFrame.functionName]));
  const t = { own: 0, program: 0, idle: 0, gc: 0 };
  profile.samples.forEach((id, i) => {
    const dt = profile.timeDeltas[i] / 1000;
    const name = kind.get(id);
    if (name === "(idle)") t.idle += dt;
    else if (name === "(program)") t.program += dt;
    else {
      t.own += dt;
      if (name === "(garbage collector)") t.gc += dt;
    }
  });
  return t;
}

async function emptyBuckets(mf) {
  for (const impl of IMPLS) {
    const bucket = await mf.getR2Bucket(bindings.imageBucket, NAMES[impl].upload);
    for (let listed; (listed = await bucket.list({ limit: 1000 })).objects.length; ) {
      await bucket.delete(listed.objects.map((o) => o.key));
    }
  }
}

/** One Miniflare; with `profiled`, the inspector is on and each run is profiled. */
async function phase(profiled, results) {
  const options = workers();
  const before = workerdChildren();
  const mf = new Miniflare({
    ...(profiled ? { inspectorPort: 0 } : {}),
    handleRuntimeStdio(stdout, stderr) {
      stdout.resume();
      stderr.resume();
    },
    workers: options,
  });
  try {
    await mf.ready;
    await migrateD1(mf, options);
    const pid = newWorkerd(before);
    const urls = {};
    const inspectors = {};
    for (const impl of IMPLS) {
      urls[impl] = new URL("/images", await mf.unsafeGetDirectURL(NAMES[impl].upload));
      if (profiled) {
        const inspector = await Inspector.forWorker(mf, NAMES[impl].upload);
        await inspector.send("Profiler.enable");
        await inspector.send("Profiler.setSamplingInterval", { interval: SAMPLING_US });
        inspectors[impl] = inspector;
      }
    }
    for (const [c, cell] of CELLS.entries()) {
      const body = pngBody(cell.size);
      for (const impl of IMPLS) {
        const warm = await load(urls[impl], body, { count: 20, concurrency: cell.concurrency, headers: AUTH });
        if (warm.errors) throw new Error(`${impl}: ${warm.firstError}`);
      }
      for (let rep = 0; rep < reps; rep++) {
        // Alternating order, so that neither side always runs after the other.
        for (const impl of rep % 2 ? [...IMPLS].reverse() : IMPLS) {
          if (profiled) await inspectors[impl].send("Profiler.start");
          const cpu0 = cpuMs(pid);
          const main0 = threadMs(pid, pid);
          const run = await load(urls[impl], body, { count: cell.count, concurrency: cell.concurrency, headers: AUTH });
          const cpu = (cpuMs(pid) - cpu0) / cell.count;
          if (run.errors) throw new Error(`${impl} ${cell.label} c=${cell.concurrency}: ${run.errors} errors, ${run.firstError}`);
          const out = results[c].runs[impl];
          if (profiled) {
            const { profile } = await inspectors[impl].send("Profiler.stop");
            const t = selfTime(profile);
            out[rep].isolateMs = t.own / cell.count;
            out[rep].programMs = t.program / cell.count;
            out[rep].gcMs = t.gc / cell.count;
            out[rep].profiledWorkerdMs = cpu;
            out[rep].idleMs = t.idle / cell.count;
            out[rep].mainThreadMs = (threadMs(pid, pid) - main0) / cell.count;
            if (profilesDir && rep === reps - 1) {
              mkdirSync(profilesDir, { recursive: true });
              const file = `${impl}-${cell.size / KiB}k-c${cell.concurrency}.cpuprofile`;
              writeFileSync(path.join(profilesDir, file), JSON.stringify(profile));
            }
          } else {
            out[rep] = {
              workerdMs: cpu,
              throughput: run.throughput,
              p50: run.p50,
              p99: run.p99,
            };
          }
          await emptyBuckets(mf);
        }
        log(`${profiled ? "profiled" : "measured"} ${cell.label} c=${cell.concurrency} run ${rep + 1}/${reps}`);
      }
    }
    for (const i of Object.values(inspectors)) i.close();
  } finally {
    await mf.dispose();
  }
}

/** CPU time of one thread of a process so far, in ms (its schedstat). */
function threadMs(pid, tid) {
  return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]) / 1e6;
}

function log(line) {
  process.stderr.write(`[upload-ratio] ${line}\n`);
}

const git = (...args) => execFileSync("git", args, { cwd: ROOT, encoding: "utf8" }).trim();
const load0 = os.loadavg();
const started = new Date();
const results = CELLS.map((cell) => ({
  size: cell.label,
  bytes: cell.size,
  concurrency: cell.concurrency,
  count: cell.count,
  runs: Object.fromEntries(IMPLS.map((impl) => [impl, []])),
}));
await phase(false, results);
await phase(true, results);
const load1 = os.loadavg();

const KEYS = ["workerdMs", "isolateMs", "programMs", "idleMs", "mainThreadMs", "profiledWorkerdMs", "throughput", "p50", "p99"];
for (const cell of results) {
  cell.median = Object.fromEntries(
    IMPLS.map((impl) => [impl, Object.fromEntries(KEYS.map((k) => [k, median(cell.runs[impl].map((r) => r[k]))]))]),
  );
}

const run = {
  commit: git("rev-parse", "--short", "HEAD"),
  // Uncommitted changes to the workers' sources: the figures are not quite the commit's.
  dirty: git("status", "--porcelain", "--", "crates", "Cargo.toml", "Cargo.lock") !== "",
  date: started.toISOString(),
  command: "node bench/upload-ratio.mjs",
  machine: {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model ?? "unknown",
    node: process.version,
    loadAverage: { before: load0.map((x) => +x.toFixed(2)), after: load1.map((x) => +x.toFixed(2)) },
  },
  plan: { reps, samplingIntervalUs: SAMPLING_US, token: "operator key (API_TOKEN)", reference: NAMES[TS_D1].upload },
  cells: results,
};

const f = (x, d = 2) => x.toFixed(d);
console.log(`Upload ratios at ${run.commit}${run.dirty ? " (uncommitted changes)" : ""}, median of ${reps} interleaved runs, load ${load0[0].toFixed(2)} → ${load1[0].toFixed(2)}`);
for (const cell of results) {
  const m = cell.median;
  const ratio = (ref, k) => f(m[RUST][k] / m[ref][k]);
  console.log(
    `${cell.size.padEnd(7)} c=${String(cell.concurrency).padEnd(3)} ` +
      `vs TS with D1: workerd CPU ${ratio(TS_D1, "workerdMs")}×, isolate CPU ${ratio(TS_D1, "isolateMs")}×, throughput ${ratio(TS_D1, "throughput")}×   ` +
      `vs seed TS: ${ratio(TS, "workerdMs")}×, ${ratio(TS, "isolateMs")}×, ${ratio(TS, "throughput")}×`,
  );
  console.log("        " + IMPLS.map((impl) => `${impl} own ${f(m[impl].isolateMs)} program ${f(m[impl].programMs)} idle ${f(m[impl].idleMs)} main thread ${f(m[impl].mainThreadMs)} workerd ${f(m[impl].profiledWorkerdMs)}`).join("; "));
  console.log(
    "        " +
      IMPLS.map((impl) => `${impl} ${f(m[impl].workerdMs)}/${f(m[impl].isolateMs)} ms, ${f(m[impl].throughput, 1)} req/s`).join("; "),
  );
}

if (save) {
  const json = existsSync(RESULTS) ? JSON.parse(readFileSync(RESULTS, "utf8")) : { runs: [] };
  json.runs.push(run);
  writeFileSync(RESULTS, `${JSON.stringify(json, null, 2)}\n`);
  console.log(`written to ${path.relative(ROOT, RESULTS)} (run ${json.runs.length}); then: node bench/tables.mjs`);
}
