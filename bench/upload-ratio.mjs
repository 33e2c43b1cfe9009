// The upload CPU and throughput ratios of issue 25: the Rust upload worker against the fair
// TypeScript reference (bench/reference/upload-d1.ts: the operator key checked, the image's
// row recorded in D1 with our INSERT before the 202) and against the plain seed design
// (bench/reference/upload.ts, no D1), all three in one workerd, interleaved.
//
//   node bench/upload-ratio.mjs [--quick] [--reps 3] [--no-save] [--save-profiles DIR]
//                               [--earlier DIR --earlier-commit SHA]
//   npm run bench:upload
//
// --earlier adds a copy of crates/upload-worker/build made at commit SHA (before a change)
// to the same runs, interleaved with the rest, and records a run of its own for that commit
// (with the same TS figures): the history's row for the commit before the change.
//
// Cells: 100 KiB at c = 1, 16, 64 and 5 MiB at c = 4. Every request carries the operator key
// (`Authorization: Bearer`): the operator is the caller with no rate limit, no quota and no
// key lookup, so the auth check is a constant-time compare on both sides. The Rust worker is
// also called with a client key (`rust-client`, issue 20), interleaved with the rest: the
// cost of a client's key lookup (its SHA-256, the isolate's cache, the Rate Limiting call).
//
// Two figures per request, each the median of the interleaved runs:
// - workerd CPU: every thread of the workerd process (from /proc), so it includes
//   Miniflare's local R2, Queues and D1, which run in the same process. Measured in a
//   Miniflare without the inspector, with throughput and latency.
// - isolate CPU: the upload worker's own isolate, from the V8 CPU profiler over the
//   inspector (a second Miniflare with `inspectorPort`, the same runs again): the samples in
//   the isolate's own JS and wasm, GC included (its garbage is its own), as a share of all
//   its samples, times the CPU time of workerd's main thread (from /proc) in that run.
//   Left out: `(idle)` (the isolate waits: workerd's event loop, and the other isolates on
//   the same thread, Miniflare's R2, Queues and D1 among them) and `(program)` (native code
//   that cannot be told apart; reported on its own as programMs). The scaling is needed
//   because V8 spaces samples in wall time: on a busy machine the thread is off the CPU for
//   part of every state, and the raw sampled time (sampledOwnMs) can exceed the CPU time
//   of the whole process. The profiler samples every 100 µs and slows what it measures:
//   compare within one run.
//
// Writes the run into bench/upload-results.json (`runs`, one entry per run, newest last:
// the history by commit), unless --no-save or --quick; bench/tables.mjs makes BENCHMARKS.md's
// upload tables from it.

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { Miniflare } from "miniflare";

import { workerOptions } from "../local/pipeline.mjs";
import { load, median, pngBody } from "./lib/http.mjs";
import { Inspector } from "./lib/inspector.mjs";
import { cpuMs, newWorkerd, workerdChildren } from "./lib/proc.mjs";
import { NAMES, ROOT, RUST, TS, TS_D1, bundleReference, migrateD1, staleBuild, taggerObjectHost, uploadWorker } from "./lib/reference.mjs";
import { bindings, logEvents } from "../local/contract.mjs";

process.env.WRANGLER_LOG ??= "error";

const argv = process.argv.slice(2);
const arg = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const quick = argv.includes("--quick");
const reps = Number(arg("--reps", quick ? 1 : 3));
const save = !argv.includes("--no-save") && !quick;
const profilesDir = arg("--save-profiles", null);
const RESULTS = path.join(ROOT, "bench", "upload-results.json");
const earlierDir = arg("--earlier", null);
const earlierCommit = arg("--earlier-commit", null);
if (Boolean(earlierDir) !== Boolean(earlierCommit)) throw new Error("--earlier and --earlier-commit go together");
/** The Rust build of an earlier commit, when given. */
const EARLIER = "rust-earlier";
/** The same Rust worker, called with a client key (issue 20): its cost over the operator's. */
const CLIENT = "rust-client";
const KiB = 1024;
const MiB = 1024 * KiB;
const CELLS = [
  { size: 100 * KiB, label: "100 KiB", concurrency: 1, count: quick ? 60 : 200 },
  { size: 100 * KiB, label: "100 KiB", concurrency: 16, count: quick ? 100 : 256 },
  { size: 100 * KiB, label: "100 KiB", concurrency: 64, count: quick ? 128 : 256 },
  { size: 5 * MiB, label: "5 MiB", concurrency: 4, count: quick ? 12 : 32 },
];
const IMPLS = [RUST, CLIENT, ...(earlierDir ? [EARLIER] : []), TS_D1, TS];
/** The implementations that are workers of their own (the client calls the Rust one). */
const WORKERS = IMPLS.filter((impl) => impl !== CLIENT);
const NAME = {
  ...Object.fromEntries(IMPLS.map((impl) => [impl, NAMES[impl]?.upload])),
  [EARLIER]: "image-upload-worker-earlier",
  [CLIENT]: NAMES[RUST].upload,
};
const TOKEN = "bench-operator-token-0123456789abcdef";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const VARS = { MAX_UPLOAD_BYTES: String(64 * MiB), API_TOKEN: TOKEN, ALLOW_ANONYMOUS: "false" };
const SAMPLING_US = 100;
/** `live.publish_failed` lines the Rust workers wrote (each upload publishes one event). */
let livePublishFailures = 0;

const stale = staleBuild("upload-worker");
if (stale) console.warn(`warning: crates/upload-worker/build is ${stale}`);
bundleReference();

function workers() {
  const uploads = WORKERS.map((impl) => {
    if (impl !== RUST && impl !== EARLIER) return uploadWorker(impl, { queue: `bench-sink-${impl}`, vars: VARS });
    // As the launcher runs it, with the tagger's objects bound; its sends go to a queue
    // without a consumer.
    return workerOptions("upload", {
      vars: VARS,
      overrides: {
        unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
        queueProducers: { [bindings.imageQueue]: { queueName: `bench-sink-${impl}` } },
        ...(impl === EARLIER
          ? { name: NAME[EARLIER], scriptPath: path.join(path.resolve(earlierDir), "index.js"), modulesRoot: path.resolve(earlierDir) }
          : {}),
      },
    });
  });
  return [...uploads, taggerObjectHost(VARS)];
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
  for (const impl of WORKERS) {
    const bucket = await mf.getR2Bucket(bindings.imageBucket, NAME[impl]);
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
      // A publish that fails costs less than one that succeeds: count them, so that a run
      // that did not measure the live publish says so.
      createInterface({ input: stdout }).on("line", (line) => {
        if (line.includes(`"${logEvents.livePublishFailed}"`)) livePublishFailures++;
      });
      stderr.resume();
    },
    workers: options,
  });
  try {
    await mf.ready;
    await migrateD1(mf, options);
    const pid = newWorkerd(before);
    const urls = {};
    const headers = {};
    const inspectors = {};
    for (const impl of IMPLS) {
      urls[impl] = new URL("/images", await mf.unsafeGetDirectURL(NAME[impl]));
      if (impl === CLIENT) {
        // Its key, made by the operator: every call then costs the key's SHA-256, the
        // isolate's key cache (D1 once per cacheTtlMs) and the Rate Limiting binding's call.
        const made = await fetch(new URL("/admin/keys", urls[impl]), {
          method: "POST",
          headers: { ...AUTH, "content-type": "application/json" },
          body: JSON.stringify({ name: "bench client" }),
        });
        if (made.status !== 201) throw new Error(`POST /admin/keys: ${made.status} ${await made.text()}`);
        headers[impl] = { authorization: `Bearer ${(await made.json()).key}` };
      } else headers[impl] = AUTH;
      // The client's calls run in the Rust worker's isolate (RUST comes first in IMPLS).
      if (profiled && impl === CLIENT) inspectors[impl] = inspectors[RUST];
      else if (profiled) {
        const inspector = await Inspector.forWorker(mf, NAME[impl]);
        await inspector.send("Profiler.enable");
        await inspector.send("Profiler.setSamplingInterval", { interval: SAMPLING_US });
        inspectors[impl] = inspector;
      }
    }
    for (const [c, cell] of CELLS.entries()) {
      const body = pngBody(cell.size);
      for (const impl of IMPLS) {
        const warm = await load(urls[impl], body, { count: 20, concurrency: cell.concurrency, headers: headers[impl] });
        if (warm.errors) throw new Error(`${impl}: ${warm.firstError}`);
      }
      for (let rep = 0; rep < reps; rep++) {
        // Alternating order, so that neither side always runs after the other.
        for (const impl of rep % 2 ? [...IMPLS].reverse() : IMPLS) {
          // A run with failed requests (here, at c = 64 on a busy machine, now and then a
          // connection reset by workerd, to any of the workers) is made again, twice at most.
          let run, cpu, main0;
          for (let attempt = 1; ; attempt++) {
            if (profiled) await inspectors[impl].send("Profiler.start");
            const cpu0 = cpuMs(pid);
            main0 = threadMs(pid, pid);
            run = await load(urls[impl], body, { count: cell.count, concurrency: cell.concurrency, headers: headers[impl] });
            cpu = (cpuMs(pid) - cpu0) / cell.count;
            if (!run.errors) break;
            const failed = `${impl} ${cell.label} c=${cell.concurrency}: ${run.errors} errors, ${run.firstError}`;
            if (attempt === 3) throw new Error(failed);
            log(`${failed}; again`);
            if (profiled) await inspectors[impl].send("Profiler.stop");
            await emptyBuckets(mf);
          }
          const out = results[c].runs[impl];
          if (profiled) {
            const { profile } = await inspectors[impl].send("Profiler.stop");
            const t = selfTime(profile);
            const mainThreadMs = (threadMs(pid, pid) - main0) / cell.count;
            // Samples are spaced in wall time, and on a busy machine the thread is off the
            // CPU for part of it, whatever it runs: the isolate's share of the samples times
            // the CPU time of the thread that runs every isolate.
            const share = (ms) => (ms / (t.own + t.program + t.idle)) * mainThreadMs;
            Object.assign(out[rep], {
              isolateMs: share(t.own),
              programMs: share(t.program),
              gcMs: share(t.gc),
              sampledOwnMs: t.own / cell.count,
              sampledIdleMs: t.idle / cell.count,
              mainThreadMs,
              profiledWorkerdMs: cpu,
            });
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
    for (const i of new Set(Object.values(inspectors))) i.close();
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

const KEYS = ["workerdMs", "isolateMs", "programMs", "gcMs", "sampledOwnMs", "sampledIdleMs", "mainThreadMs", "profiledWorkerdMs", "throughput", "p50", "p99"];
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
  livePublishFailures,
  plan: { reps, samplingIntervalUs: SAMPLING_US, token: "operator key (API_TOKEN)", reference: NAMES[TS_D1].upload },
  cells: results,
};

const f = (x, d = 2) => x.toFixed(d);
if (livePublishFailures) console.warn(`warning: ${livePublishFailures} live publishes failed; the Rust figures do not include them`);
console.log(`Upload ratios at ${run.commit}${run.dirty ? " (uncommitted changes)" : ""}, median of ${reps} interleaved runs, load ${load0[0].toFixed(2)} → ${load1[0].toFixed(2)}`);
for (const cell of results) {
  const m = cell.median;
  const ratio = (ref, k) => f(m[RUST][k] / m[ref][k]);
  console.log(
    `${cell.size.padEnd(7)} c=${String(cell.concurrency).padEnd(3)} ` +
      `vs TS with D1: workerd CPU ${ratio(TS_D1, "workerdMs")}×, isolate CPU ${ratio(TS_D1, "isolateMs")}×, throughput ${ratio(TS_D1, "throughput")}×   ` +
      `vs seed TS: ${ratio(TS, "workerdMs")}×, ${ratio(TS, "isolateMs")}×, ${ratio(TS, "throughput")}×`,
  );
  console.log(
    `        a client key instead of the operator's: workerd CPU ${f(m[CLIENT].workerdMs / m[RUST].workerdMs)}×, ` +
      `isolate CPU ${f(m[CLIENT].isolateMs / m[RUST].isolateMs)}×, throughput ${f(m[CLIENT].throughput / m[RUST].throughput)}×`,
  );
  if (earlierDir) {
    const was = (ref, k) => f(m[EARLIER][k] / m[ref][k]);
    console.log(
      `        ${earlierCommit}: vs TS with D1: workerd CPU ${was(TS_D1, "workerdMs")}×, isolate CPU ${was(TS_D1, "isolateMs")}×, ` +
        `throughput ${was(TS_D1, "throughput")}×`,
    );
  }
  console.log(
    "        " +
      IMPLS.map((impl) => `${impl} ${f(m[impl].workerdMs)}/${f(m[impl].isolateMs)} ms, ${f(m[impl].throughput, 1)} req/s`).join("; "),
  );
}

if (save) {
  const json = existsSync(RESULTS) ? JSON.parse(readFileSync(RESULTS, "utf8")) : { runs: [] };
  if (earlierDir) {
    // The earlier build's own entry, from the same runs: its figures in the `rust` slot.
    const cells = run.cells.map(({ runs, median: m, ...cell }) => ({
      ...cell,
      runs: { rust: runs[EARLIER], "ts-d1": runs[TS_D1], ts: runs[TS] },
      median: { rust: m[EARLIER], "ts-d1": m[TS_D1], ts: m[TS] },
    }));
    json.runs.push({
      ...run,
      commit: earlierCommit,
      dirty: false,
      command: `node bench/upload-ratio.mjs --earlier <build of ${earlierCommit}> --earlier-commit ${earlierCommit}`,
      cells,
    });
  }
  json.runs.push({
    ...run,
    cells: run.cells.map(({ runs, median: m, ...cell }) => ({
      ...cell,
      runs: { rust: runs[RUST], [CLIENT]: runs[CLIENT], "ts-d1": runs[TS_D1], ts: runs[TS] },
      median: { rust: m[RUST], [CLIENT]: m[CLIENT], "ts-d1": m[TS_D1], ts: m[TS] },
    })),
  });
  writeFileSync(RESULTS, `${JSON.stringify(json, null, 2)}\n`);
  console.log(`written to ${path.relative(ROOT, RESULTS)} (run ${json.runs.length}); then: node bench/tables.mjs`);
}
