// Benchmarks the Rust workers against a TypeScript reference that follows Cloudflare's
// tutorial design (bench/reference). One command:
//
//   node bench/run.mjs [--quick] [--only upload,e2e,memory,size]
//
// Both implementations run in the same Miniflare instance (the real workerd), one after
// the other, interleaved, so that their ratios are measured under the same conditions.
// Prints tables and writes each phase's raw results to bench/run-<phase>.json (a --quick run
// to bench/.build/ instead), from which bench/tables.mjs writes BENCHMARKS.md's tables.
// Figures are reported, never asserted. BENCHMARKS.md explains each figure.

import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import path from "node:path";
import { Miniflare } from "miniflare";

import { startPipeline } from "../local/pipeline.mjs";
import { bindings, status } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { load, median, pngBody, request, sleep } from "./lib/http.mjs";
import { measureUploadMemory } from "./lib/memory.mjs";
import { BatchLog } from "./lib/batch-log.mjs";
import { cpuMs, newWorkerd, workerdChildren } from "./lib/proc.mjs";
import {
  BENCH,
  BUILD,
  IMPLS,
  NAMES,
  ROOT,
  RUST,
  TS,
  bundleReference,
  configuredConsumer,
  rustWranglerConfig,
  staleBuild,
  taggerWorker,
  trivialLike,
  tsWranglerConfig,
  uploadWorker,
} from "./lib/reference.mjs";

// wrangler warns that AI bindings are remote each time a config is read; it is replaced here.
process.env.WRANGLER_LOG ??= "error";
process.env.WRANGLER_SEND_METRICS = "false";

const KiB = 1024;
const MiB = 1024 * KiB;
const argv = process.argv.slice(2);
const quick = argv.includes("--quick");
const only = argv.includes("--only") ? argv[argv.indexOf("--only") + 1].split(",") : ["upload", "e2e", "memory", "size"];
if (argv.includes("--help")) {
  console.log("usage: node bench/run.mjs [--quick] [--only upload,e2e,memory,size] | --print");
  console.log("  --print  print the tables of the committed runs (bench/run-<phase>.json) without running");
  process.exit(0);
}

const PLAN = {
  upload: {
    sizes: [
      { label: "100 KiB", bytes: 100 * KiB, count: quick ? 50 : 200 },
      { label: "5 MiB", bytes: 5 * MiB, count: quick ? 10 : 40 },
    ],
    concurrencies: [1, 16, 64],
    reps: quick ? 1 : 3,
    warmup: quick ? 5 : 20,
    maxUploadBytes: 64 * MiB,
  },
  e2e: {
    images: quick ? 20 : 100,
    imageBytes: 100 * KiB,
    aiLatencyMs: 100,
    uploadConcurrency: 8,
    reps: quick ? 1 : 2,
  },
  memory: { imageBytes: 8 * MiB, uploads: quick ? 5 : 20, reps: quick ? 1 : 2 },
  startup: { reps: quick ? 1 : 5 },
};

// Miniflare's workerd output (the Rust tagger logs a line per message) is drained, not shown.
const quiet = {
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.resume();
  },
};

const results = {
  date: new Date().toISOString(),
  commit: git(["rev-parse", "--short", "HEAD"]),
  uncommittedCrateChanges: git([
    "status",
    "--porcelain",
    "--",
    "crates/upload-worker",
    "crates/tagger-worker",
    "crates/shared",
    "crates/imaging",
    "Cargo.toml",
    "Cargo.lock",
  ])
    .split("\n")
    .filter(Boolean),
  machine: {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    miniflare: packageVersion("miniflare"),
    wrangler: packageVersion("wrangler"),
    loadAverageAtStart: os.loadavg(),
  },
  plan: PLAN,
  notes: [],
};

function git(args) {
  try {
    return execFileSync("git", args, { cwd: ROOT, encoding: "utf8" }).trim();
  } catch {
    return "";
  }
}

function packageVersion(name) {
  return JSON.parse(readFileSync(path.join(ROOT, "node_modules", name, "package.json"), "utf8")).version;
}

const fmt = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "n/a");
const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? a / b : NaN);
const log = (...a) => console.error(...a); // progress on stderr, tables on stdout

function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => "| " + cells.map((c, i) => String(c).padEnd(widths[i])).join(" | ") + " |";
  return [line(headers), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...rows.map(line)].join("\n");
}

async function directUrl(mf, impl) {
  return mf.unsafeGetDirectURL(NAMES[impl].upload);
}

/** Deletes every object an upload worker stored, so that R2 does not grow across cells. */
async function emptyBucket(mf, impl) {
  const bucket = await mf.getR2Bucket(bindings.imageBucket, NAMES[impl].upload);
  for (;;) {
    const listed = await bucket.list({ limit: 1000 });
    if (!listed.objects.length) return;
    await bucket.delete(listed.objects.map((o) => o.key));
  }
}

// ---------------------------------------------------------------------------------------
// a. Upload path: throughput and latency, interleaved Rust/TS per cell.

async function uploadPhase() {
  const plan = PLAN.upload;
  log(`\n[upload] ${plan.reps} interleaved runs per cell; queue sends go to a queue without a consumer`);
  const vars = { MAX_UPLOAD_BYTES: String(plan.maxUploadBytes) };
  const before = workerdChildren();
  // The Rust upload worker as the launcher runs it, alone (no tagger), and the TS one.
  const sink = (impl) => ({ queueProducers: { [bindings.imageQueue]: { queueName: `bench-sink-${impl}` } } });
  const p = await startPipeline({
    roles: ["upload"],
    vars: { upload: vars },
    // Without its binding to the tagger's AI pacer (GET /admin/usage only): no tagger runs here.
    workerOverrides: { upload: { unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }], ...sink(RUST), durableObjects: {} } },
    extraWorkers: [uploadWorker(TS, { queue: `bench-sink-${TS}`, vars })],
  });
  const { mf } = p;
  const pid = newWorkerd(before);
  const urls = {};
  for (const impl of IMPLS) urls[impl] = new URL("/images", await directUrl(mf, impl));

  for (const size of plan.sizes) {
    const body = pngBody(size.bytes);
    for (const impl of IMPLS) await load(urls[impl], body, { count: plan.warmup, concurrency: 4 });
  }
  for (const impl of IMPLS) await emptyBucket(mf, impl);

  const cells = [];
  let cellIndex = 0;
  for (const size of plan.sizes) {
    const body = pngBody(size.bytes);
    for (const concurrency of plan.concurrencies) {
      const runs = { [RUST]: [], [TS]: [] };
      for (let rep = 0; rep < plan.reps; rep++) {
        const order = (rep + cellIndex) % 2 === 0 ? [RUST, TS] : [TS, RUST];
        for (const impl of order) {
          const cpuBefore = cpuMs(pid);
          const run = await load(urls[impl], body, { count: size.count, concurrency });
          run.cpuMsPerRequest = (cpuMs(pid) - cpuBefore) / size.count;
          runs[impl].push(run);
          await emptyBucket(mf, impl);
        }
      }
      cellIndex++;
      const summary = {};
      for (const impl of IMPLS) {
        summary[impl] = {
          throughput: median(runs[impl].map((r) => r.throughput)),
          p50: median(runs[impl].map((r) => r.p50)),
          p99: median(runs[impl].map((r) => r.p99)),
          cpuMsPerRequest: median(runs[impl].map((r) => r.cpuMsPerRequest)),
          errors: runs[impl].reduce((n, r) => n + r.errors, 0),
        };
      }
      const cell = { size: size.label, bytes: size.bytes, count: size.count, concurrency, median: summary, runs };
      cells.push(cell);
      log(
        `[upload] ${size.label} c=${concurrency}: rust ${fmt(summary[RUST].throughput)} req/s, ` +
          `ts ${fmt(summary[TS].throughput)} req/s` +
          (summary[RUST].errors + summary[TS].errors ? ` (errors: rust ${summary[RUST].errors}, ts ${summary[TS].errors}: ${runs[RUST].concat(runs[TS]).find((r) => r.firstError)?.firstError})` : ""),
      );
    }
  }
  await p.close();
  results.upload = {
    transport: "HTTP/1.1 keep-alive from node:http to each upload worker's own workerd socket",
    cpu: "CPU time of all workerd threads during the run, per request (includes Miniflare's R2 and queue simulators)",
    cells,
  };
}

// ---------------------------------------------------------------------------------------
// b. End to end: POST to `done` for N images, AI at a fixed latency.

async function e2eRun(url, plan) {
  // Real PNGs (a decodable 2×2 image padded to size): the Rust tagger decodes what it tags.
  // Each upload's bytes are its own: the tagger reuses the labels of an image with the same
  // bytes (issue 23), which would measure reuse instead of the AI pipeline.
  const agent = new http.Agent({ keepAlive: true, maxSockets: plan.uploadConcurrency });
  const pollAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const ids = [];
  const postedAt = [];
  const doneAt = [];
  const statuses = [];
  const started = performance.now();
  let uploadedAt;
  let next = 0;
  let failedUpload;
  const waiters = [];
  const wake = () => waiters.splice(0).forEach((w) => w());

  async function lane() {
    while (next < plan.images) {
      const i = next++;
      const body = png(plan.imageBytes);
      postedAt[i] = performance.now();
      const res = await request(new URL("/images", url), {
        method: "POST",
        body,
        agent,
        headers: { "content-type": "image/png" },
      });
      if (res.status !== 202) failedUpload ??= `${res.status} ${res.text}`;
      ids[i] = JSON.parse(res.text).imageId;
      wake();
    }
  }
  const uploading = Promise.all(Array.from({ length: plan.uploadConcurrency }, lane)).then(() => {
    uploadedAt = performance.now();
    wake();
  });

  const deadline = started + 180_000;
  async function poll() {
    for (let i = 0; i < plan.images; i++) {
      while (ids[i] === undefined) {
        if (failedUpload) throw new Error(`upload failed: ${failedUpload}`);
        await new Promise((r) => waiters.push(r));
      }
      for (;;) {
        const res = await request(new URL(`/images/${ids[i]}`, url), { agent: pollAgent });
        const current = JSON.parse(res.text).status;
        if (current === status.done || current === status.failed) {
          doneAt[i] = performance.now();
          statuses[i] = current;
          break;
        }
        if (performance.now() > deadline) throw new Error(`image ${i} still ${current} after 180 s`);
        await sleep(20);
      }
    }
  }
  await Promise.all([uploading, poll()]);
  agent.destroy();
  pollAgent.destroy();
  const perImage = doneAt.map((t, i) => t - postedAt[i]);
  const record = JSON.parse((await request(new URL(`/images/${ids[0]}`, url))).text);
  return {
    totalSeconds: (Math.max(...doneAt) - started) / 1000,
    uploadSeconds: (uploadedAt - started) / 1000,
    perImageP50Ms: median(perImage),
    perImageMaxMs: Math.max(...perImage),
    done: statuses.filter((s) => s === status.done).length,
    failed: statuses.filter((s) => s === status.failed).length,
    recordKeys: Object.keys(record).sort(),
  };
}

/**
 * Why an end-to-end run does not count, or null: every image must end `done` (a `failed` one
 * finished, but its work was lost), with exactly one AI call each. The stub runs in light
 * mode (it keeps no image), so calls are counted in total: with every image done, and an
 * image done only after a call, `images` calls in all means one each.
 */
function e2eProblem(run, plan) {
  if (run.done !== plan.images || run.failed !== 0) {
    return `${run.done} of ${plan.images} images done, ${run.failed} failed: every image must end done`;
  }
  if (run.aiCalls !== plan.images) return `${run.aiCalls} AI calls for ${plan.images} images: exactly one each is expected`;
  if (run.aiBadCalls) return `${run.aiBadCalls} AI calls without the model's name and an image`;
  return null;
}

async function e2ePhase() {
  const plan = PLAN.e2e;
  const consumer = configuredConsumer();
  log(
    `\n[e2e] ${plan.images} images of ${plan.imageBytes / KiB} KiB, AI latency ${plan.aiLatencyMs} ms, ` +
      `queue max_batch_size ${consumer.maxBatchSize}, max_batch_timeout ${consumer.maxBatchTimeout} s`,
  );
  const batchLog = new BatchLog();
  // The pipeline as the launcher runs it (configured queue settings, the AI stub in light
  // mode: no copies of images), with the TS reference's two workers added.
  const p = await startPipeline({
    log: batchLog,
    ai: { light: true, latencyMs: plan.aiLatencyMs },
    workerOverrides: { upload: { unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }] } },
    extraWorkers: [uploadWorker(TS), taggerWorker(TS, { consumer })],
  });
  const { mf, ai } = p;
  const urls = {};
  for (const impl of IMPLS) urls[impl] = await directUrl(mf, impl);

  const runs = { [RUST]: [], [TS]: [] };
  for (let rep = 0; rep < plan.reps; rep++) {
    for (const impl of rep % 2 === 0 ? [RUST, TS] : [TS, RUST]) {
      ai.reset();
      batchLog.batches = [];
      const run = await e2eRun(urls[impl], plan);
      const batches = batchLog.batches.filter((b) => b.queue === NAMES[impl].queue);
      Object.assign(run, {
        aiCalls: ai.stats.calls,
        aiMaxInFlight: ai.stats.maxInFlight,
        aiBadCalls: ai.stats.badCalls,
        batches: batches.length,
        batchSizes: [...new Set(batches.map((b) => b.size))],
        batchMsP50: median(batches.map((b) => b.ms)),
      });
      runs[impl].push(run);
      log(
        `[e2e] ${impl}: ${fmt(run.totalSeconds, 2)} s for ${plan.images} images ` +
          `(uploads ${fmt(run.uploadSeconds, 2)} s; ${run.done} done, ${run.failed} failed; ` +
          `AI calls ${run.aiCalls}, at most ${run.aiMaxInFlight} at once; ${run.batches} batches, ` +
          `p50 ${fmt(run.batchMsP50, 0)} ms each)`,
      );
      const wrong = e2eProblem(run, plan);
      if (wrong) {
        await p.close();
        throw new Error(`[e2e] ${impl}, run ${rep + 1}: ${wrong}; no figure is reported from a run that lost or repeated work`);
      }
    }
  }
  await p.close();
  const summary = {};
  for (const impl of IMPLS) {
    summary[impl] = {
      totalSeconds: median(runs[impl].map((r) => r.totalSeconds)),
      perImageP50Ms: median(runs[impl].map((r) => r.perImageP50Ms)),
      aiMaxInFlight: Math.max(...runs[impl].map((r) => r.aiMaxInFlight)),
      batchMsP50: median(runs[impl].map((r) => r.batchMsP50)),
      batches: median(runs[impl].map((r) => r.batches)),
    };
  }
  const sameShape = JSON.stringify(runs[RUST][0].recordKeys) === JSON.stringify(runs[TS][0].recordKeys);
  if (!sameShape) results.notes.push(`e2e: record keys differ: rust ${runs[RUST][0].recordKeys} ts ${runs[TS][0].recordKeys}`);
  results.e2e = { plan, consumer, summary, runs, sameRecordShape: sameShape };
}

// ---------------------------------------------------------------------------------------
// c. Memory: a fresh workerd per implementation, RSS and wasm memory around 8 MiB uploads.

function memoryRun(impl, plan) {
  const options = uploadWorker(impl, {
    queue: `bench-sink-${impl}`,
    vars: { MAX_UPLOAD_BYTES: String(64 * MiB) },
  });
  return measureUploadMemory(options, plan);
}

async function memoryPhase() {
  const plan = PLAN.memory;
  log(`\n[memory] fresh workerd per implementation; ${plan.uploads} uploads of ${plan.imageBytes / MiB} MiB`);
  const runs = { [RUST]: [], [TS]: [] };
  for (let rep = 0; rep < plan.reps; rep++) {
    for (const impl of rep % 2 === 0 ? [RUST, TS] : [TS, RUST]) {
      const run = await memoryRun(impl, plan);
      runs[impl].push(run);
      log(
        `[memory] ${impl}: RSS ${fmt(run.rssBase / MiB)} MiB, +${fmt(run.deltaAfter1 / MiB)} after 1, ` +
          `+${fmt(run.deltaAfterN / MiB)} after ${plan.uploads}; wasm ${run.wasmAfterN ?? "n/a"} B`,
      );
    }
  }
  const summary = {};
  for (const impl of IMPLS) {
    const pick = (k) => median(runs[impl].map((r) => r[k] ?? NaN));
    summary[impl] = Object.fromEntries(Object.keys(runs[impl][0]).map((k) => [k, pick(k)]));
  }
  results.memory = { plan, summary, runs };
}

// ---------------------------------------------------------------------------------------
// d. Bundle size (wrangler deploy --dry-run) and start-up.

const WORKERS = [
  { impl: RUST, kind: "upload", name: NAMES[RUST].upload },
  { impl: TS, kind: "upload", name: NAMES[TS].upload },
  { impl: RUST, kind: "tagger", name: NAMES[RUST].tagger },
  { impl: TS, kind: "tagger", name: NAMES[TS].tagger },
];

function writeWranglerConfigs() {
  const dir = path.join(BUILD, "wrangler");
  mkdirSync(dir, { recursive: true });
  const toRoot = path.relative(dir, ROOT).split(path.sep).join("/");
  const toBench = path.relative(dir, BENCH).split(path.sep).join("/");
  const files = {};
  for (const w of WORKERS) {
    const text =
      w.impl === RUST
        ? rustWranglerConfig(w.kind, `${toRoot}/crates/${w.kind}-worker/build/index.js`)
        : tsWranglerConfig(w.kind, `${toBench}/reference/${w.kind}.ts`);
    files[w.name] = `${w.name}.toml`;
    writeFileSync(path.join(dir, files[w.name]), text);
  }
  return { dir, files };
}

function wrangler(args, cwd) {
  return execFileSync(path.join(ROOT, "node_modules/.bin/wrangler"), args, {
    cwd,
    encoding: "utf8",
    env: { ...process.env, WRANGLER_LOG: "log", FORCE_COLOR: "0" },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Non-idle sampled time in a V8 CPU profile (how DevTools counts "self time"). */
function profileFigures(file) {
  const profile = JSON.parse(readFileSync(file, "utf8"));
  const idle = new Set(profile.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));
  let busyUs = 0;
  profile.samples.forEach((node, i) => {
    if (!idle.has(node)) busyUs += profile.timeDeltas[i];
  });
  return {
    wallMs: (profile.endTime - profile.startTime) / 1000,
    busyMs: busyUs / 1000,
    samples: profile.samples.length,
  };
}

/** A worker on its own, for start-up: no queue consumer, no AI (neither runs at start-up). */
function standalone(w) {
  const options = w.kind === "upload" ? uploadWorker(w.impl, { socket: false }) : taggerWorker(w.impl);
  const { queueConsumers: _q, wrappedBindings: _w, ...rest } = options;
  return rest;
}

/**
 * Starts one worker alone in a fresh workerd and measures, from /proc, the CPU time workerd
 * spent until it was ready, then on a first and a second request; and the wall time.
 */
async function timeStartup(options, withRequest) {
  const before = workerdChildren();
  const started = performance.now();
  const mf = new Miniflare({ ...quiet, workers: [options] });
  const url = await mf.ready;
  const readyMs = performance.now() - started;
  const pid = newWorkerd(before);
  const startCpuMs = cpuMs(pid);
  let firstCpuMs = NaN;
  let secondCpuMs = NaN;
  let firstMs = NaN;
  if (withRequest) {
    firstMs = (await request(url)).ms;
    const afterFirst = cpuMs(pid);
    await request(url);
    firstCpuMs = afterFirst - startCpuMs;
    secondCpuMs = cpuMs(pid) - afterFirst;
  }
  await mf.dispose();
  return { readyMs, startCpuMs, firstMs, firstCpuMs, secondCpuMs };
}

async function sizePhase() {
  log("\n[size] wrangler deploy --dry-run and start-up");
  const { dir, files } = writeWranglerConfigs();
  const sizes = {};
  const checkStartup = {};
  for (const w of WORKERS) {
    const out = mkdtempSync(path.join(os.tmpdir(), "bench-dry-run-"));
    try {
      const text = wrangler(["deploy", "--dry-run", "--outdir", out, "-c", files[w.name]], dir);
      const m = text.match(/Total Upload: ([\d.]+) KiB \/ gzip: ([\d.]+) KiB/);
      sizes[w.name] = m ? { totalKiB: Number(m[1]), gzipKiB: Number(m[2]) } : { error: text.slice(-500) };
    } catch (e) {
      sizes[w.name] = { error: String(e.stderr || e).slice(-500) };
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
    // `wrangler check startup` profiles the import of the bundle in a local workerd.
    const tmp = mkdtempSync(path.join(os.tmpdir(), "bench-startup-"));
    try {
      const profile = path.join(tmp, "startup.cpuprofile");
      wrangler(["check", "startup", "-c", files[w.name], `--args=-c ${files[w.name]}`, "--outfile", profile], dir);
      checkStartup[w.name] = profileFigures(profile);
    } catch (e) {
      checkStartup[w.name] = { error: String(e.stderr || e).slice(-500) };
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
    log(`[size] ${w.name}: ${JSON.stringify(sizes[w.name])}; check startup ${JSON.stringify(checkStartup[w.name])}`);
  }

  // Start-up in Miniflare: each worker alone against a trivial script with the same bindings.
  const startup = Object.fromEntries(WORKERS.map((w) => [w.name, { runs: [], baseline: [] }]));
  for (let rep = 0; rep < PLAN.startup.reps; rep++) {
    for (const w of rep % 2 === 0 ? WORKERS : [...WORKERS].reverse()) {
      const options = standalone(w);
      const withRequest = w.kind === "upload";
      startup[w.name].baseline.push(await timeStartup(trivialLike(options), withRequest));
      startup[w.name].runs.push(await timeStartup(options, withRequest));
    }
  }
  for (const w of WORKERS) {
    const s = startup[w.name];
    const m = (list, k) => median(list.map((r) => r[k]));
    Object.assign(s, {
      startCpuMs: m(s.runs, "startCpuMs"),
      baselineStartCpuMs: m(s.baseline, "startCpuMs"),
      firstRequestCpuMs: m(s.runs, "firstCpuMs"),
      baselineFirstRequestCpuMs: m(s.baseline, "firstCpuMs"),
      secondRequestCpuMs: m(s.runs, "secondCpuMs"),
      readyMs: m(s.runs, "readyMs"),
      baselineReadyMs: m(s.baseline, "readyMs"),
      firstRequestMs: m(s.runs, "firstMs"),
    });
    s.startCpuOverBaselineMs = s.startCpuMs - s.baselineStartCpuMs;
    log(
      `[startup] ${w.name}: start-up CPU ${fmt(s.startCpuMs)} ms (trivial worker ${fmt(s.baselineStartCpuMs)}), ` +
        `first request CPU ${fmt(s.firstRequestCpuMs)} ms (trivial ${fmt(s.baselineFirstRequestCpuMs)})`,
    );
  }
  results.size = { sizes, checkStartup, startup };
}

// ---------------------------------------------------------------------------------------
// Report.

function report() {
  const out = [];
  const c =
    results.commit + (results.uncommittedCrateChanges.length ? " (+ uncommitted changes to the workers' crates)" : "");
  out.push(`Benchmarks: Rust workers vs TypeScript reference — ${results.date}, commit ${c}`);
  out.push(
    `${results.machine.cpus} × ${results.machine.cpuModel}, ${results.machine.memoryGiB} GiB, node ${results.machine.node}, ` +
      `miniflare ${results.machine.miniflare}, wrangler ${results.machine.wrangler}; ` +
      `load average ${results.machine.loadAverageAtStart.map((x) => x.toFixed(2)).join(" ")} at start, ` +
      `${results.machine.loadAverageAtEnd.map((x) => x.toFixed(2)).join(" ")} at end`,
  );
  if (results.upload) {
    const u = results.plan.upload;
    out.push(
      `\n### Upload path (median of ${u.reps} interleaved runs per cell; ${u.sizes.map((s) => `${s.count} × ${s.label}`).join(", ")} per run)\n`,
    );
    out.push(
      table(
        ["size", "conc", "Rust req/s", "TS req/s", "Rust/TS req/s", "Rust p50 ms", "TS p50 ms", "Rust p99 ms", "TS p99 ms", "Rust/TS p99", "Rust CPU ms/req", "TS CPU ms/req"],
        results.upload.cells.map((cell) => {
          const r = cell.median[RUST];
          const t = cell.median[TS];
          return [
            cell.size,
            cell.concurrency,
            fmt(r.throughput),
            fmt(t.throughput),
            fmt(ratio(r.throughput, t.throughput), 2) + "×",
            fmt(r.p50),
            fmt(t.p50),
            fmt(r.p99),
            fmt(t.p99),
            fmt(ratio(r.p99, t.p99), 2) + "×",
            fmt(r.cpuMsPerRequest, 2),
            fmt(t.cpuMsPerRequest, 2),
          ];
        }),
      ),
    );
    const errors = results.upload.cells.reduce((n, cell) => n + cell.median[RUST].errors + cell.median[TS].errors, 0);
    if (errors) out.push(`\n${errors} requests failed (see bench/run-upload.json).`);
  }
  if (results.e2e) {
    const e = results.e2e;
    out.push(
      `\n### End to end (${e.plan.images} images of ${e.plan.imageBytes / KiB} KiB, AI ${e.plan.aiLatencyMs} ms per call, ` +
        `max_batch_size ${e.consumer.maxBatchSize}, max_batch_timeout ${e.consumer.maxBatchTimeout} s; median of ${e.plan.reps})\n`,
    );
    const r = e.summary[RUST];
    const t = e.summary[TS];
    out.push(
      table(
        ["", "Rust (concurrent batch)", "TS (sequential)", "TS/Rust"],
        [
          ["first POST → last done, s", fmt(r.totalSeconds, 2), fmt(t.totalSeconds, 2), fmt(ratio(t.totalSeconds, r.totalSeconds), 2) + "×"],
          ["per image POST → done, p50 ms", fmt(r.perImageP50Ms, 0), fmt(t.perImageP50Ms, 0), fmt(ratio(t.perImageP50Ms, r.perImageP50Ms), 2) + "×"],
          [`one batch of ${e.consumer.maxBatchSize}, consumer time p50 ms`, fmt(r.batchMsP50, 0), fmt(t.batchMsP50, 0), fmt(ratio(t.batchMsP50, r.batchMsP50), 2) + "×"],
          ["AI calls in flight, max", r.aiMaxInFlight, t.aiMaxInFlight, ""],
        ],
      ),
    );
  }
  if (results.memory) {
    const m = results.memory;
    const mib = (x) => fmt(x / MiB, 1);
    out.push(`\n### Memory (fresh workerd per implementation, ${m.plan.uploads} sequential uploads of ${m.plan.imageBytes / MiB} MiB; median of ${m.plan.reps})\n`);
    out.push(
      table(
        ["", "workerd RSS MiB", "Δ after 1", `Δ after ${m.plan.uploads}`, "peak Δ", "wasm after 100 KiB", "wasm after 1 × 8 MiB", `wasm after ${m.plan.uploads} × 8 MiB`],
        IMPLS.map((impl) => {
          const s = m.summary[impl];
          const w = (x) => (Number.isFinite(x) ? `${mib(x)} MiB` : "no wasm");
          return [impl === RUST ? "Rust" : "TS", mib(s.rssBase), "+" + mib(s.deltaAfter1), "+" + mib(s.deltaAfterN), "+" + mib(s.peakDelta), w(s.wasmAfterSmall), w(s.wasmAfter1), w(s.wasmAfterN)];
        }),
      ),
    );
  }
  if (results.size) {
    const s = results.size;
    out.push("\n### Bundle size and start-up\n");
    out.push(
      table(
        ["worker", "upload KiB", "gzip KiB", "start-up CPU ms over trivial", "1st request CPU ms", "2nd request CPU ms", "check startup: sampled ms (samples)"],
        WORKERS.map((w) => {
          const size = s.sizes[w.name];
          const st = s.startup[w.name];
          const cs = s.checkStartup[w.name];
          return [
            w.name,
            size.totalKiB === undefined ? "error" : fmt(size.totalKiB, 2),
            size.gzipKiB === undefined ? "error" : fmt(size.gzipKiB, 2),
            fmt(st.startCpuOverBaselineMs),
            fmt(st.firstRequestCpuMs),
            fmt(st.secondRequestCpuMs),
            cs.error ? "error" : `${fmt(cs.busyMs)} (${cs.samples})`,
          ];
        }),
      ),
    );
    const trivialStart = median(WORKERS.map((w) => s.startup[w.name].baselineStartCpuMs));
    const trivialFirst = median(WORKERS.map((w) => s.startup[w.name].baselineFirstRequestCpuMs));
    out.push(
      `\nStart-up CPU: workerd's CPU time (all threads) from launch to ready with the worker alone, ` +
        `minus the same with a trivial script and the same bindings (${fmt(trivialStart)} ms). ` +
        `Requests: GET / right after start (trivial worker: ${fmt(trivialFirst)} ms). ` +
        `Median of ${results.plan.startup.reps}.`,
    );
  }
  if (results.notes.length) out.push("\nNotes:\n" + results.notes.map((n) => `- ${n}`).join("\n"));
  return out.join("\n");
}

// ---------------------------------------------------------------------------------------

/** The committed raw results of one phase: a run's header (date, commit, machine) and its figures. */
const phaseFile = (phase, dir = BENCH) => path.join(dir, `run-${phase}.json`);
const PHASES = ["upload", "e2e", "memory", "size"];

if (argv.includes("--print")) {
  for (const phase of PHASES) {
    let run;
    try {
      run = JSON.parse(readFileSync(phaseFile(phase), "utf8"));
    } catch {
      continue;
    }
    Object.assign(results, run, { plan: { ...results.plan, ...run.plan } });
    results[phase] = run[phase];
    console.log(report() + "\n");
    delete results[phase];
  }
  process.exit(0);
}

for (const crate of ["upload-worker", "tagger-worker"]) {
  const stale = staleBuild(crate);
  if (stale) {
    const note = `crates/${crate}/build is ${stale}: run \`npm run build\` first to benchmark the current code`;
    log(`warning: ${note}`);
    results.notes.push(note);
  }
}
bundleReference();
const durations = {};
for (const [phase, run] of [
  ["upload", uploadPhase],
  ["e2e", e2ePhase],
  ["memory", memoryPhase],
  ["size", sizePhase],
]) {
  if (!only.includes(phase)) continue;
  const started = performance.now();
  await run();
  durations[phase] = (performance.now() - started) / 1000;
}
results.machine.loadAverageAtEnd = os.loadavg();
results.durationSeconds = Object.values(durations).reduce((a, b) => a + b, 0);

const text = report();
console.log("\n" + text);
// One file per phase: a run of some phases replaces only theirs.
const command = `node bench/run.mjs${quick ? " --quick" : ""}${argv.includes("--only") ? ` --only ${only.join(",")}` : ""}`;
const dir = quick ? BUILD : BENCH;
mkdirSync(dir, { recursive: true });
for (const phase of PHASES.filter((p) => results[p])) {
  const { upload: _u, e2e: _e, memory: _m, size: _s, plan, ...header } = results;
  const raw = { ...header, command, plan: phase === "size" ? { startup: plan.startup } : { [phase]: plan[phase] }, durationSeconds: durations[phase], [phase]: results[phase] };
  writeFileSync(phaseFile(phase, dir), JSON.stringify(raw, null, 2) + "\n");
  log(`wrote ${path.relative(ROOT, phaseFile(phase, dir))} (${fmt(durations[phase], 0)} s)${quick ? ": a --quick run is not committed" : ""}`);
}
