// Tagging large photos, the Rust tagger against the TS reference: workerd's memory and CPU
// while one batch of N 4000×3000 JPEGs (about 7 MiB each) is tagged. One command:
//
//   node bench/photos.mjs [--counts 1,5] [--reps 3] [--interval-ms 10] [--var NAME=VALUE]...
//                         [--warmup 640x480] [--photo 4000x3000] [--quality 92] [--impls rust,ts]
//
//   node bench/photos.mjs --exif [--counts 1,5] [--reps 3]
//
// `--exif` measures what applying the EXIF orientation costs: the Rust tagger alone, the same
// photos stored once with EXIF orientation 1 (upright) and once with 6 (stored sideways, as a
// phone held upright writes them), byte for byte the same but for that one value, interleaved;
// it writes bench/photos-exif-results.json.
// `--var` sets a var of the Rust tagger (e.g. BYTES_IN_FLIGHT) to try a setting, `--warmup`
// another warm-up photo, `--photo` and `--quality` other photos (`--photo 8640x5760` is the
// largest MAX_PIXELS admits), `--impls rust` leaves out the TS reference (it cannot hold
// photos that large); such a trial writes bench/.build/photos-results.trial.json instead of
// bench/photos-results.json.
//
// Each run starts a fresh workerd (the launcher, local/pipeline.mjs) with one tagger only:
// the Rust tagger from wrangler.tagger.toml (with its D1, KV, R2, queues and AI pacer), or
// the TS reference (bench/reference/tagger.ts, with its R2, KV and queue). Both get the same
// AI stand-in: the launcher's `Ai` binding, which serialises each call to JSON inside workerd
// as Workers AI's binding does, and the AI stub in light mode, which only counts the bytes
// it receives, in this Node process. The photos (made at run time with sharp, never stored)
// and, for Rust, their D1 rows are put in first by another workerd on the same persisted
// state, so the measured one has never held them. Then a warm-up batch of one small photo
// (640×480, which the Rust tagger sends on as it is), and two measured batches of N photos,
// each sent at once: the first large photos the isolate handles, then N more. For each,
// workerd's RSS is sampled every 10 ms (and its peak read from VmHWM, reset at the
// baseline) until 500 ms after Miniflare reports the batch done; CPU is utime + stime of
// workerd until the batch is done. Rust and TS are interleaved; each cell is the median of
// the runs. Prints a table and writes bench/photos-results.json.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { startPipeline } from "../local/pipeline.mjs";
import { bindings, contract, imageMessage, keys, queues, sql, status } from "../local/contract.mjs";
import { largeJpeg } from "../local/photos.mjs";
import { median, request, sleep } from "./lib/http.mjs";
import { Inspector } from "./lib/inspector.mjs";
import { cpuMs, memoryOf, processCpuMs, resetPeak, workerdChildren } from "./lib/proc.mjs";
import { BatchLog } from "./lib/batch-log.mjs";
import { BENCH, IMPLS, NAMES, ROOT, RUST, TS, bundleReference, configuredConsumer, staleBuild, taggerWorker } from "./lib/reference.mjs";

process.env.WRANGLER_LOG ??= "error";
process.env.WRANGLER_SEND_METRICS = "false";

const MiB = 1024 * 1024;
const argv = process.argv.slice(2);
const arg = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const COUNTS = arg("--counts", "1,5").split(",").map(Number);
const REPS = Number(arg("--reps", 3));
const INTERVAL_MS = Number(arg("--interval-ms", 10));
/** The warm-up photo's size: 640×480 is sent on as it is; a larger one is decoded too. */
const [WARM_W, WARM_H] = arg("--warmup", "640x480").split("x").map(Number);
/** The measured photos: size and JPEG quality. */
const [PHOTO_W, PHOTO_H] = arg("--photo", "4000x3000").split("x").map(Number);
const QUALITY = Number(arg("--quality", 92));
/** Which taggers run (the Rust one, the TS reference or both). */
const RUN_IMPLS = arg("--impls", IMPLS.join(",")).split(",").filter((impl) => IMPLS.includes(impl));
/** `--var NAME=VALUE` (repeatable): a var of the Rust tagger over its config's, to try a setting. */
const VARS = Object.fromEntries(
  argv.flatMap((a, i) => (a === "--var" ? [argv[i + 1].split(/=(.*)/s).slice(0, 2)] : [])),
);
/** `--exif`: upright against EXIF-rotated photos, the Rust tagger alone. */
const EXIF = argv.includes("--exif");
/** What is compared: the taggers, or (`--exif`) one photo set with two EXIF orientations. */
const VARIANTS = EXIF
  ? [
      { key: "upright", impl: RUST, orientation: 1 },
      { key: "rotated", impl: RUST, orientation: 6 },
    ]
  : RUN_IMPLS.map((impl) => ({ key: impl, impl }));
const PRODUCER = "bench-photo-producer";

/**
 * `jpeg` with an APP1 `Exif` segment holding only IFD0's Orientation (tag 0x0112, a SHORT),
 * right after SOI: 34 bytes, the same for every orientation but its value.
 */
function withOrientation(jpeg, orientation) {
  const app1 = Buffer.from([
    0xff, 0xe1, 0x00, 0x22, // APP1, length 34 (with these two bytes)
    0x45, 0x78, 0x69, 0x66, 0x00, 0x00, // "Exif\0\0"
    0x4d, 0x4d, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x08, // TIFF, big-endian, IFD0 at 8
    0x00, 0x01, // one entry
    0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01, 0x00, orientation, 0x00, 0x00, // Orientation
    0x00, 0x00, 0x00, 0x00, // no next IFD
  ]);
  if (jpeg[0] !== 0xff || jpeg[1] !== 0xd8) throw new Error("withOrientation: not a JPEG");
  return Buffer.concat([jpeg.subarray(0, 2), app1, jpeg.subarray(2)]);
}
const log = (...a) => console.error(...a); // progress on stderr, the table on stdout
const fmt = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : "n/a");
const mib = (bytes) => fmt(bytes / MiB);
const signed = (bytes) => (bytes < 0 ? "−" : "+") + mib(Math.abs(bytes));

/** A worker that sends the batch: a POST of a JSON array sends its items in one `sendBatch`. */
function producer(queueName) {
  return {
    name: PRODUCER,
    modules: true,
    script: `export default {
      async fetch(request, env) {
        if (request.method === "POST") await env.QUEUE.sendBatch((await request.json()).map((body) => ({ body })));
        return new Response("ok");
      },
    };`,
    queueProducers: { QUEUE: { queueName } },
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
  };
}

/** The launcher with one tagger: `impl`'s, with batches of `batchSize` taken after 1 s. */
function start(impl, persist, batchSize, extra = {}) {
  const consumer = { ...configuredConsumer(), maxBatchSize: batchSize, maxBatchTimeout: 1 };
  const queue = NAMES[impl].queue;
  const common = { persist, ai: { light: true }, extraWorkers: [producer(queue)], ...extra };
  if (impl === RUST) return startPipeline({ roles: ["tagger"], queues: { [queue]: consumer }, vars: { tagger: VARS }, ...common });
  return startPipeline({ roles: [], ...common, extraWorkers: [taggerWorker(TS, { consumer }), ...common.extraWorkers] });
}

/** Stores each photo in the tagger's R2 (and, for Rust, its queued D1 row, as the upload worker writes it). */
async function seed(impl, persist, photos) {
  const p = await start(impl, persist, 1);
  try {
    const bucket = await p.mf.getR2Bucket(bindings.imageBucket, NAMES[impl].tagger);
    const db = impl === RUST ? await p.db() : null;
    const messages = [];
    for (const bytes of photos) {
      const message = imageMessage({ contentType: "image/jpeg", size: bytes.length });
      if (db) {
        const uploaded = Date.parse(message.uploadedAt);
        await db.prepare(sql.insertQueued).bind(message.imageId, message.r2Key, message.contentType, message.size, uploaded, contract.auth.owners.anonymous).run();
      }
      await bucket.put(message.r2Key, new Uint8Array(bytes), { httpMetadata: { contentType: "image/jpeg" } });
      messages.push(impl === RUST ? message : { imageId: message.imageId, r2Key: message.r2Key });
    }
    return messages;
  } finally {
    await p.close();
  }
}

/**
 * One run: a fresh workerd with `impl`'s tagger; after a warm-up, a first batch of
 * `photos.length / 2` large photos (the first the isolate decodes), then a second.
 */
async function run(impl, photos, warmup) {
  const n = photos.length / 2;
  const persist = mkdtempSync(path.join(os.tmpdir(), "bench-photos-"));
  try {
    const [warm, ...messages] = await seed(impl, persist, [warmup, ...photos]);
    const batchLog = new BatchLog();
    const before = workerdChildren();
    const p = await start(impl, persist, n, { log: batchLog, inspect: true });
    try {
      const pids = workerdChildren().filter((pid) => !before.includes(pid));
      const rss = () => pids.reduce((sum, pid) => sum + memoryOf(pid).rss, 0);
      const hwm = () => pids.reduce((sum, pid) => sum + memoryOf(pid).hwm, 0);
      const cpu = () => pids.reduce((sum, pid) => sum + processCpuMs(pid), 0);
      const threadCpu = () => pids.reduce((sum, pid) => sum + cpuMs(pid), 0);
      // One inspector session per run (workerd serves one at a time), for the Rust tagger.
      const inspector = impl === RUST ? await Inspector.forWorker(p.mf, NAMES[impl].tagger) : null;
      const wasm = async () => (inspector ? ((await inspector.wasmMemoryBytes())[0] ?? null) : null);
      const url = await p.mf.unsafeGetDirectURL(PRODUCER);
      const send = async (list) => {
        const res = await request(url, { method: "POST", body: Buffer.from(JSON.stringify(list)) });
        if (res.status !== 200) throw new Error(`producer: ${res.status} ${res.text}`);
      };
      const batchDone = async (size, from, timeoutMs) => {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const b = batchLog.batches.slice(from).find((x) => x.queue === NAMES[impl].queue && x.size === size);
          if (b) return b;
          if (Date.now() > deadline) throw new Error(`${impl}: no batch of ${size} after ${timeoutMs} ms`);
          await sleep(2);
        }
      };

      /** Sends one batch and measures workerd from just before it until 500 ms after it. */
      const measure = async (batchMessages) => {
        const wasmBefore = await wasm();
        await sleep(500);
        p.ai.reset();
        const from = batchLog.batches.length;
        const base = rss();
        for (const pid of pids) resetPeak(pid);
        const cpu0 = cpu();
        const threadCpu0 = threadCpu();
        let sampledMax = base;
        let samples = 0;
        const sampler = setInterval(() => {
          sampledMax = Math.max(sampledMax, rss());
          samples++;
        }, INTERVAL_MS);
        await send(batchMessages);
        const batch = await batchDone(n, from, 180_000);
        const cpuMsTotal = cpu() - cpu0;
        const threadCpuMsTotal = threadCpu() - threadCpu0;
        // Sampled for another 500 ms: what the batch leaves behind (writes that complete
        // after the handler returned, garbage not yet collected) counts towards the peak too.
        await sleep(500);
        clearInterval(sampler);
        const settled = rss();
        const peak = Math.max(sampledMax, hwm(), settled);
        const kv = await p.mf.getKVNamespace(bindings.resultsKv, NAMES[impl].tagger);
        const records = await Promise.all(batchMessages.map((m) => kv.get(keys.record(m.imageId), "json")));
        const done = records.filter((r) => r?.status === status.done).length;
        if (done !== n) {
          const ids = new Set(batchMessages.map((m) => m.imageId));
          const lines = impl === RUST ? p.outcomes().filter((o) => ids.has(o.imageId)) : [];
          throw new Error(`${impl}: ${done} of ${n} images done: ${JSON.stringify(records.map((r) => r?.status))} ${JSON.stringify(lines)}`);
        }
        const ai = { ...p.ai.stats };
        if (ai.calls !== n || ai.badCalls) throw new Error(`${impl}: ${ai.calls} AI calls (${ai.badCalls} bad) for ${n} photos`);
        return {
          rssBase: base,
          peakGrowth: peak - base,
          sampledPeakGrowth: sampledMax - base,
          settledGrowth: settled - base,
          samples,
          cpuMsPerPhoto: cpuMsTotal / n,
          threadCpuMsPerPhoto: threadCpuMsTotal / n,
          batchMs: batch.ms,
          aiBytesPerPhoto: ai.bytes / n,
          aiMaxInFlight: ai.maxInFlight,
          wasmBefore,
          wasmAfter: await wasm(),
        };
      };

      // Warm-up with a small photo (640×480, sent to the model as it is): the bindings, the
      // pacer, the AI binding and the tagger's own code have been used once.
      await send([warm]);
      await batchDone(1, 0, 30_000);
      const first = await measure(messages.slice(0, n));
      const next = await measure(messages.slice(n));
      inspector?.close();
      return { photos: n, photoBytes: photos.slice(0, n).reduce((sum, b) => sum + b.length, 0), first, next };
    } finally {
      await p.close();
    }
  } finally {
    rmSync(persist, { recursive: true, force: true });
  }
}

function table(headers, rows) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)));
  const line = (cells) => "| " + cells.map((c, i) => String(c).padEnd(widths[i])).join(" | ") + " |";
  return [line(headers), "|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|", ...rows.map(line)].join("\n");
}

const git = (args) => execFileSync("git", args, { cwd: ROOT, encoding: "utf8" }).trim();
const packageVersion = (name) => JSON.parse(readFileSync(path.join(ROOT, "node_modules", name, "package.json"), "utf8")).version;

const stale = staleBuild("tagger-worker");
if (stale) log(`warning: crates/tagger-worker/build is ${stale}: run \`npm run build\` first`);
bundleReference();
const results = {
  date: new Date().toISOString(),
  commit: git(["rev-parse", "--short", "HEAD"]),
  ...(stale ? { staleBuild: stale } : {}),
  machine: {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    node: process.version,
    miniflare: packageVersion("miniflare"),
    loadAverageAtStart: os.loadavg(),
  },
  plan: {
    counts: COUNTS,
    reps: REPS,
    intervalMs: INTERVAL_MS,
    rustTaggerVars: VARS,
    warmup: `${WARM_W}x${WARM_H}`,
    photo: `${PHOTO_W}x${PHOTO_H} JPEG, quality ${QUALITY} (local/photos.mjs)`,
    impls: RUN_IMPLS,
    ...(EXIF ? { variants: VARIANTS } : {}),
  },
  cells: [],
};
const photos = await Promise.all(Array.from({ length: 2 * Math.max(...COUNTS) }, (_, i) => largeJpeg({ width: PHOTO_W, height: PHOTO_H, quality: QUALITY, seed: i + 1 })));
const warmup = await largeJpeg({ width: WARM_W, height: WARM_H, seed: 99 });
log(`photos: ${photos.map((p) => mib(p.length)).join(", ")} MiB; warm-up photo ${fmt(warmup.length / 1024, 0)} KiB`);
const started = performance.now();

const BATCHES = ["first", "next"];

for (const [c, n] of COUNTS.entries()) {
  const runs = Object.fromEntries(VARIANTS.map((v) => [v.key, []]));
  for (let rep = 0; rep < REPS; rep++) {
    const order = (rep + c) % 2 === 0 ? VARIANTS : [...VARIANTS].reverse();
    for (const v of order.filter((x) => RUN_IMPLS.includes(x.impl))) {
      const set = [...photos.slice(0, n), ...photos.slice(n, 2 * n)].map((b) => (v.orientation ? withOrientation(b, v.orientation) : b));
      const r = await run(v.impl, set, warmup);
      runs[v.key].push(r);
      for (const which of BATCHES) {
        const b = r[which];
        log(
          `[${n} photo${n > 1 ? "s" : ""}, ${which} batch] ${v.key}: RSS ${mib(b.rssBase)} MiB, peak +${mib(b.peakGrowth)} ` +
            `(sampled +${mib(b.sampledPeakGrowth)}, ${b.samples} samples), after ${signed(b.settledGrowth)}; ` +
            `CPU ${fmt(b.cpuMsPerPhoto, 0)} ms/photo; batch ${b.batchMs} ms; AI got ${mib(b.aiBytesPerPhoto)} MiB/photo` +
            (b.wasmAfter ? `; wasm ${mib(b.wasmBefore)} -> ${mib(b.wasmAfter)} MiB` : ""),
        );
      }
    }
  }
  const summary = {};
  for (const v of VARIANTS.filter((x) => runs[x.key].length)) {
    summary[v.key] = {};
    for (const which of BATCHES) {
      const list = runs[v.key].map((r) => r[which]);
      summary[v.key][which] = Object.fromEntries(Object.keys(list[0]).map((k) => [k, median(list.map((b) => b[k] ?? NaN))]));
    }
  }
  results.cells.push({ photos: n, median: summary, runs });
}
results.machine.loadAverageAtEnd = os.loadavg();
results.durationSeconds = (performance.now() - started) / 1000;

const rows = results.cells.flatMap((cell) =>
  BATCHES.flatMap((which) =>
    Object.keys(cell.median).map((key) => {
      const s = cell.median[key][which];
      const ts = cell.median[TS]?.[which] ?? { cpuMsPerPhoto: NaN };
      return [
        cell.photos,
        which,
        { [RUST]: "Rust", [TS]: "TS" }[key] ?? key,
        mib(s.rssBase),
        signed(s.peakGrowth),
        signed(s.settledGrowth),
        fmt(s.cpuMsPerPhoto, 0),
        key === RUST ? fmt(s.cpuMsPerPhoto / ts.cpuMsPerPhoto, 2) + "×" : "",
        fmt(s.batchMs, 0),
        mib(s.aiBytesPerPhoto),
        Number.isFinite(s.wasmAfter) ? `${mib(s.wasmBefore)} → ${mib(s.wasmAfter)}` : "no wasm",
      ];
    }),
  ),
);
const text = [
  `Tagging large photos — ${results.date}, commit ${results.commit}; ${results.machine.cpus} × ${results.machine.cpuModel}, ` +
    `node ${results.machine.node}, miniflare ${results.machine.miniflare}; load average ` +
    `${results.machine.loadAverageAtStart.map((x) => x.toFixed(2)).join(" ")} at start, ` +
    `${results.machine.loadAverageAtEnd.map((x) => x.toFixed(2)).join(" ")} at end; median of ${REPS}`,
  "",
  table(
    ["photos", "batch", "tagger", "workerd RSS MiB", "peak Δ MiB", "Δ after MiB", "CPU ms/photo", "Rust/TS CPU", "batch ms", "sent to AI MiB/photo", "wasm MiB before → after"],
    rows,
  ),
].join("\n");
console.log("\n" + text);
results.table = text;
const trial =
  Object.keys(VARS).length || WARM_W !== 640 || WARM_H !== 480 || PHOTO_W !== 4000 || PHOTO_H !== 3000 || QUALITY !== 92 || (!EXIF && RUN_IMPLS.length !== IMPLS.length);
const file = trial
  ? path.join(BENCH, ".build", `photos${EXIF ? "-exif" : ""}-results.trial.json`)
  : path.join(BENCH, EXIF ? "photos-exif-results.json" : "photos-results.json");
writeFileSync(file, JSON.stringify(results, null, 2) + "\n");
log(`\nwrote ${path.relative(ROOT, file)} (${fmt(results.durationSeconds, 0)} s)`);
