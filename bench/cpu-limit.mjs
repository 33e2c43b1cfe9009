// The tagger's CPU for the worst batch the configs allow, to size `[limits] cpu_ms`:
// 10 images (max_batch_size) of MAX_PIXELS each, within MAX_UPLOAD_BYTES. One command:
//
//   node bench/cpu-limit.mjs [--formats jpeg,png,webp] [--reps 3]
//
// For each format, a fresh workerd (the launcher, local/pipeline.mjs, with the tagger of
// wrangler.tagger.toml and its D1, KV, R2, queues and pacer; AI: a server in this process
// that answers one label). The photos and their queued D1 rows are put in first. Then a warm-up
// batch of one small photo, and two batches of 10 large ones, each sent at once: the first
// large photos the isolate decodes, then 10 more. CPU is workerd's utime + stime from the
// batch's send until the tagger has logged every image of it `done`: the tagger's CPU plus what Miniflare's
// local storage (D1, KV, R2) costs in the same process, so it errs high. Photos:
// - jpeg: 8640 × 5760 (49.8 MP, the most under MAX_PIXELS at 3:2), quality 58: 9.7 MiB,
//   under MAX_UPLOAD_BYTES, with noise so that it is as costly to decode as a photo can be;
// - png: the same size, a smooth gradient (a noisy one would not fit in 10 MiB): every row is
//   inflated and filtered, as PNGs are not scaled while decoding;
// - webp: 5400 × 3600 (19.4 MP), a lossy WebP of quality 60: WebPs are decoded at full size,
//   and the tagger refuses one whose decoding needs more memory than it allows (a 49.8 MP
//   WebP fails at once as image_too_large), so this is about the largest that is tagged.
// Four distinct photos per format; each batch cycles through them, each upload its own image.
// Prints a table and writes bench/cpu-limit-results.json (BENCHMARKS.md's table: `node bench/tables.mjs`).

import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import http from "node:http";
import os from "node:os";
import sharp from "sharp";

import { readWorkerConfig, startPipeline, waitFor, workerOptions } from "../local/pipeline.mjs";
import { bindings, imageMessage, outcome, queues, sql } from "../local/contract.mjs";
import { largeJpeg } from "../local/photos.mjs";
import { processCpuMs, workerdChildren } from "./lib/proc.mjs";
import { median, request } from "./lib/http.mjs";

process.env.WRANGLER_LOG ??= "error";
const argv = process.argv.slice(2);
const arg = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const FORMATS = arg("--formats", "jpeg,png,webp").split(",");
const REPS = Number(arg("--reps", 3));
const config = readWorkerConfig("tagger");
const BATCH = config.queues.consumers.find((c) => c.queue === queues.images).max_batch_size;
const MAX_PIXELS = Number(config.vars.MAX_PIXELS);
const MAX_UPLOAD_BYTES = Number(readWorkerConfig("upload").vars.MAX_UPLOAD_BYTES);
const [W, H] = [8640, 5760];
if (W * H > MAX_PIXELS) throw new Error(`${W}×${H} is over MAX_PIXELS ${MAX_PIXELS}`);
const log = (...a) => console.error(...a);
const MiB = 1024 * 1024;

/** A smooth 8640×5760 PNG, different per seed. */
async function gradientPng(seed) {
  const raw = Buffer.alloc(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const i = (y * W + x) * 3;
      raw[i] = (x * 255) / W + seed;
      raw[i + 1] = (y * 255) / H;
      raw[i + 2] = ((x + y) >> 5) + seed * 7;
    }
  }
  return sharp(raw, { raw: { width: W, height: H, channels: 3 } }).png({ compressionLevel: 9 }).toBuffer();
}

/**
 * Lossy WebPs are decoded at full size into a buffer the tagger caps (a 49.8 MP one needs
 * 92 MiB and fails at once as image_too_large): the largest that decodes is about 20 MP.
 */
const [WEBP_W, WEBP_H] = [5400, 3600];
const make = {
  jpeg: (seed) => largeJpeg({ width: W, height: H, quality: 58, seed }),
  png: gradientPng,
  webp: async (seed) => sharp(await largeJpeg({ width: WEBP_W, height: WEBP_H, quality: 58, seed })).webp({ quality: 60 }).toBuffer(),
};
const TYPES = { jpeg: "image/jpeg", png: "image/png", webp: "image/webp" };
const SIZES = { jpeg: `${W}×${H}`, png: `${W}×${H}`, webp: `${WEBP_W}×${WEBP_H}` };
/** How BENCHMARKS.md names each format's photos (bench/tables.mjs renders the table). */
const WHAT = {
  jpeg: `JPEG ${W} × ${H} (${((W * H) / 1e6).toFixed(1)} MP), quality 58, noisy`,
  png: `PNG ${W} × ${H}, a smooth gradient`,
  webp: `lossy WebP ${WEBP_W} × ${WEBP_H} (${((WEBP_W * WEBP_H) / 1e6).toFixed(1)} MP), quality 60`,
};
/** Distinct photos per format; the batches cycle through them (each upload is its own image). */
const DISTINCT = 4;

/**
 * The AI, answering every call with one label. Its own server, because a batch of large
 * photos leaves workerd's connection to the AI idle for seconds: Node's default keep-alive
 * timeout (5 s) then closes it under the tagger's next call ("Network connection lost").
 */
const aiServer = http.createServer((req, res) => {
  req.resume();
  req.on("end", () => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify([{ label: "TABBY", score: 0.9 }])));
});
aiServer.keepAliveTimeout = 600_000;
aiServer.headersTimeout = 601_000;
await new Promise((resolve) => aiServer.listen(0, "127.0.0.1", resolve));
const aiUrl = `http://127.0.0.1:${aiServer.address().port}`;

const SEEDER = "cpu-limit-seeder";
/** A worker on the tagger's bucket that stores each POST's body: photos go in over a socket. */
function seeder() {
  return {
    name: SEEDER,
    modules: true,
    script: `export default {
      async fetch(request, env) {
        const key = new URL(request.url).searchParams.get("key");
        await env.BUCKET.put(key, await request.arrayBuffer(), { httpMetadata: { contentType: request.headers.get("content-type") } });
        return new Response("ok");
      },
    };`,
    r2Buckets: { BUCKET: workerOptions("tagger").r2Buckets[bindings.imageBucket] },
    unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
  };
}

/** Stores a photo through the seeder; a busy machine can drop a connection, so a few tries. */
async function put(url, key, bytes, type) {
  for (let attempt = 1; ; attempt++) {
    try {
      const res = await request(new URL(`?key=${encodeURIComponent(key)}`, url), { method: "POST", body: bytes, headers: { "content-type": type } });
      if (res.status === 200) return;
      throw new Error(`${res.status} ${res.text}`);
    } catch (e) {
      if (attempt === 3) throw e;
      log(`  storing ${key}: ${e.message}; again`);
    }
  }
}

async function run(format, photos, warmup) {
  const before = workerdChildren();
  const p = await startPipeline({
    roles: ["tagger"],
    ai: { url: aiUrl },
    queues: { [queues.images]: { maxBatchSize: BATCH, maxBatchTimeout: 1 } },
    extraWorkers: [seeder()],
  });
  try {
    const pids = workerdChildren().filter((pid) => !before.includes(pid));
    const cpu = () => pids.reduce((sum, pid) => sum + processCpuMs(pid), 0);
    const seedUrl = await p.mf.unsafeGetDirectURL(SEEDER);
    const db = await p.db();
    const messages = [];
    for (const [bytes, type] of [[warmup, "image/jpeg"], ...photos.map((b) => [b, TYPES[format]])]) {
      const m = imageMessage({ contentType: type, size: bytes.length });
      await db.prepare(sql.insertQueued).bind(m.imageId, m.r2Key, m.contentType, m.size, Date.parse(m.uploadedAt)).run();
      await put(seedUrl, m.r2Key, bytes, type);
      messages.push(m);
    }
    const queue = await p.queue();
    const batch = async (list) => {
      const cpu0 = cpu();
      const t0 = performance.now();
      await queue.sendBatch(list.map((body) => ({ body })));
      // Waits on the tagger's log lines, not on requests: workerd is busy with the batch.
      const ids = new Set(list.map((m) => m.imageId));
      const finished = () => p.outcomes().filter((o) => ids.has(o.imageId));
      await waitFor(() => new Set(finished().map((o) => o.imageId)).size === ids.size, { timeoutMs: 300_000, intervalMs: 50, what: `${format}: a batch of ${list.length} tagged` });
      const cpuMs = cpu() - cpu0;
      const notDone = finished().filter((o) => o.outcome !== outcome.done);
      if (notDone.length) throw new Error(`${format}: ${notDone.length} images not done: ${JSON.stringify(notDone)}`);
      return { cpuMs, wallMs: performance.now() - t0 };
    };
    await batch(messages.slice(0, 1));
    const first = await batch(messages.slice(1, 1 + BATCH));
    const next = await batch(messages.slice(1 + BATCH));
    return { first, next };
  } finally {
    await p.close();
  }
}

const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
const results = { date: new Date().toISOString(), commit, command: "node bench/cpu-limit.mjs", batch: BATCH, loadAverageAtStart: os.loadavg(), formats: {} };
const warmup = await largeJpeg({ width: 640, height: 480, seed: 99 });
for (const format of FORMATS) {
  const photos = [];
  const distinct = [];
  for (let i = 0; i < DISTINCT; i++) distinct.push(await make[format](i + 1));
  for (let i = 0; i < 2 * BATCH; i++) photos.push(distinct[i % DISTINCT]);
  const sizes = photos.map((b) => b.length);
  if (Math.max(...sizes) > MAX_UPLOAD_BYTES) throw new Error(`${format}: a photo of ${Math.max(...sizes)} bytes is over MAX_UPLOAD_BYTES`);
  log(`${format}: ${BATCH} × ${SIZES[format]}, ${(median(sizes) / MiB).toFixed(1)} MiB each`);
  const runs = [];
  for (let rep = 0; rep < REPS; rep++) {
    const r = await run(format, photos, warmup);
    log(`  run ${rep + 1}: first batch ${r.first.cpuMs.toFixed(0)} ms CPU (${r.first.wallMs.toFixed(0)} ms wall), next ${r.next.cpuMs.toFixed(0)} ms CPU`);
    runs.push(r);
  }
  results.formats[format] = {
    photo: SIZES[format],
    what: WHAT[format],
    mibEach: median(sizes) / MiB,
    runs,
    firstCpuMs: median(runs.map((r) => r.first.cpuMs)),
    nextCpuMs: median(runs.map((r) => r.next.cpuMs)),
  };
}
results.loadAverageAtEnd = os.loadavg();
console.log(`\nworst batches: ${BATCH} photos each; workerd CPU per batch (median of ${REPS})\n`);
console.log("| format | photo | MiB each | first batch of an isolate | next batch | per photo (first) |");
console.log("| --- | --- | ---: | ---: | ---: | ---: |");
for (const [format, r] of Object.entries(results.formats)) {
  console.log(`| ${format} | ${r.photo} | ${r.mibEach.toFixed(1)} | ${r.firstCpuMs.toFixed(0)} ms | ${r.nextCpuMs.toFixed(0)} ms | ${(r.firstCpuMs / BATCH).toFixed(0)} ms |`);
}
writeFileSync(new URL("./cpu-limit-results.json", import.meta.url), JSON.stringify(results, null, 2) + "\n");
aiServer.close();
