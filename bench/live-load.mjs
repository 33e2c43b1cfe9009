// Live-updates load: many sockets on one client's object (issue 24). One command:
//
//   node bench/live-load.mjs [--sockets 1000] [--images 20] [--idle 15]
//
// Runs both workers in Miniflare (the built Rust workers in the real workerd, the AI stub),
// opens `--sockets` WebSockets as one client (the anonymous one of a local run, so all of
// them are on one Durable Object), then uploads `--images` images one after another. Each
// image raises `image.queued` (after its 202) and `image.tagged` (after the tagger's D1
// commit), and every socket must get both. What is measured:
// - delivery latency of `image.tagged` from its D1 commit (`processed_at`, the time the
//   tagger's transition ran) to its arrival at each socket, and of `image.queued` from the
//   upload's 202 arriving to its arrival at each socket (its D1 commit is just before the
//   202; the row does not keep that time); p50, p99 and max over every (event, socket) pair,
//   and the time until the last socket had each event;
// - memory per socket: workerd's RSS (the whole process: every worker of the run, Miniflare's
//   entry worker the sockets come through, and every connection's buffers) after the first
//   socket and after all of them, divided by the sockets added; and the JS heap of the
//   isolate the object runs in (the tagger's), after a full GC, the same way: what counts
//   against an isolate's 128 MB;
// - hibernation: a `ping` answers with the object's start time. The run pings, leaves every
//   socket idle for `--idle` seconds (no message either way), pings again: a new start time
//   under the same open sockets means workerd evicted the object and built it again for the
//   ping (the hibernation API kept the sockets). Then one more image must reach every socket.
// The clients are this Node process (the `ws` package), so their own event loop is part of
// the latency; it timestamps each message on arrival and parses nothing until the end.
// Writes bench/live-results.json; `node bench/tables.mjs` puts it in BENCHMARKS.md.

import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import WebSocket from "ws";

import { startPipeline, waitFor, ROOT } from "../local/pipeline.mjs";
import { contract } from "../local/contract.mjs";
import { eventsUrl, openLive } from "../local/live-client.mjs";
import { png } from "../local/images.mjs";
import { Inspector } from "./lib/inspector.mjs";
import { memoryOf, newWorkerd, workerdChildren } from "./lib/proc.mjs";

process.env.WRANGLER_LOG ??= "error";

const argv = process.argv.slice(2);
const option = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const SOCKETS = option("sockets", 1000);
const IMAGES = option("images", 20);
const IDLE_S = option("idle", 15);
const WAVE = 50;
const [QUEUED, TAGGED] = contract.live.events;
const MiB = 1024 * 1024;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const stats = (xs) => ({ n: xs.length, p50: pct(xs, 0.5), p99: pct(xs, 0.99), max: Math.max(...xs) });

/** A bare socket: raw messages with their arrival time, parsed later. */
function bareSocket(base) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(eventsUrl(base), [contract.live.protocol]);
    const socket = { ws, raw: [], tagged: 0, queued: 0 };
    ws.on("message", (data) => {
      const text = data.toString();
      socket.raw.push([Date.now(), text]);
      if (text.includes(`"${TAGGED}"`)) socket.tagged += 1;
      if (text.includes(`"${QUEUED}"`)) socket.queued += 1;
    });
    ws.once("open", () => resolve(socket));
    ws.once("error", reject);
    ws.once("unexpected-response", (_q, res) => reject(new Error(`GET /events answered ${res.statusCode}`)));
  });
}

async function gcSettle() {
  await sleep(2000);
}

const before = workerdChildren();
const p = await startPipeline({ queues: { "*": { maxBatchTimeout: 1, maxBatchSize: 1 } }, ai: { light: true }, inspect: true });
const pid = newWorkerd(before);
// The object lives in the tagger's isolate: its JS heap, after a full GC, over the inspector.
const inspector = await Inspector.forWorker(p.mf, p.names.tagger);
async function isolateHeap() {
  await inspector.send("HeapProfiler.enable");
  await inspector.send("HeapProfiler.collectGarbage", {}, 10_000).catch(() => {});
  await inspector.send("HeapProfiler.disable");
  return (await inspector.heapUsage()).usedSize;
}
try {
  // One socket and one image first: the workers and the object are warm, D1 is migrated.
  const first = await openLive(p.url);
  const warm = await p.fetch("/images", { method: "POST", body: png() });
  const warmId = (await warm.json()).imageId;
  await first.eventOf(warmId, TAGGED, { timeoutMs: 60_000 });
  const pong0 = await first.ping();
  await gcSettle();
  const rssOne = memoryOf(pid).rss;
  const heapOne = await isolateHeap();

  const sockets = [];
  const opening = Date.now();
  for (let i = 0; i < SOCKETS; i += WAVE) {
    sockets.push(...(await Promise.all(Array.from({ length: Math.min(WAVE, SOCKETS - i) }, () => bareSocket(p.url)))));
  }
  // Each socket's first message is its live.ready: then it is subscribed.
  await waitFor(() => sockets.every((s) => s.raw.length >= 1), { what: "every socket ready", timeoutMs: 120_000 });
  const openMs = Date.now() - opening;
  await gcSettle();
  const rssAll = memoryOf(pid).rss;
  const heapAll = await isolateHeap();
  const pong1 = await first.ping();
  console.log(`${SOCKETS} sockets open in ${openMs} ms; the object holds ${pong1.sockets}; workerd RSS ${(rssOne / MiB).toFixed(1)} → ${(rssAll / MiB).toFixed(1)} MiB`);

  let taggedSoFar = 0;
  /**
   * Uploads one image and waits until every socket has both its events (`image.queued` may
   * come after `image.tagged`: the upload worker holds it up to 50 ms, and with batches of
   * one the tagger can be quicker); returns its times.
   */
  async function oneImage() {
    const res = await p.fetch("/images", { method: "POST", body: png() });
    const accepted = Date.now();
    if (res.status !== 202) throw new Error(`upload: ${res.status} ${await res.text()}`);
    const id = (await res.json()).imageId;
    const count = ++taggedSoFar;
    // Cheap while messages arrive: a counter per socket (the raw texts are read at the end).
    await waitFor(() => sockets.every((s) => s.tagged >= count && s.queued >= count), {
      what: `${id} at every socket`,
      timeoutMs: 120_000,
      intervalMs: 20,
    });
    const row = await (await p.db()).prepare("SELECT processed_at FROM images WHERE id = ?1").bind(id).first();
    return { id, accepted, processedAt: row.processed_at };
  }

  const images = [];
  for (let i = 0; i < IMAGES; i++) images.push(await oneImage());

  // Every (event, socket) pair, from the raw messages.
  const tagged = [];
  const queued = [];
  const lastTagged = [];
  const lastQueued = [];
  let missing = 0;
  for (const image of images) {
    const needle = `"imageId":"${image.id}"`;
    const at = (type) =>
      sockets.map((s) => s.raw.find(([, text]) => text.includes(needle) && text.includes(`"${type}"`))?.[0]);
    const t = at(TAGGED);
    const q = at(QUEUED);
    missing += [...t, ...q].filter((x) => x === undefined).length;
    const tl = t.filter(Boolean).map((x) => x - image.processedAt);
    const ql = q.filter(Boolean).map((x) => x - image.accepted);
    tagged.push(...tl);
    queued.push(...ql);
    lastTagged.push(Math.max(...tl));
    lastQueued.push(Math.max(...ql));
  }
  const duplicates = sockets.reduce((n, s) => n + s.raw.length - new Set(s.raw.map(([, t]) => t)).size, 0);

  // Hibernation: everything idle, then a ping from the first socket.
  const pongBeforeIdle = await first.ping();
  await sleep(IDLE_S * 1000);
  const rssIdle = memoryOf(pid).rss;
  // Read before the ping wakes the object (the inspector does not count as a request to it).
  const heapIdle = await isolateHeap();
  const pongAfterIdle = await first.ping();
  const hibernated = pongAfterIdle.objectStarted !== pongBeforeIdle.objectStarted;
  const afterWake = await oneImage();
  console.log(
    `hibernation: object started ${pongBeforeIdle.objectStarted} before ${IDLE_S} s idle, ${pongAfterIdle.objectStarted} after ` +
      `(${hibernated ? "evicted and rebuilt: hibernated" : "the same instance: not evicted"}), ${pongAfterIdle.sockets} sockets still open; ` +
      `an image after it reached all ${SOCKETS}`,
  );

  const result = {
    date: new Date().toISOString(),
    commit: execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim(),
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? "", node: process.version },
    sockets: SOCKETS,
    images: IMAGES,
    openMs,
    objectSockets: pong1.sockets,
    deliveries: tagged.length + queued.length,
    missing,
    duplicates,
    latencyMs: {
      tagged: stats(tagged),
      queued: stats(queued),
      taggedLastSocket: stats(lastTagged),
      queuedLastSocket: stats(lastQueued),
    },
    memory: {
      rssOneSocket: rssOne,
      rssAllSockets: rssAll,
      bytesPerSocket: Math.round((rssAll - rssOne) / SOCKETS),
      rssAfterIdle: rssIdle,
      heapOneSocket: heapOne,
      heapAllSockets: heapAll,
      heapBytesPerSocket: Math.round((heapAll - heapOne) / SOCKETS),
      heapAfterIdle: heapIdle,
    },
    hibernation: {
      idleSeconds: IDLE_S,
      objectStartedFirst: pong0.objectStarted,
      objectStartedBeforeIdle: pongBeforeIdle.objectStarted,
      objectStartedAfterIdle: pongAfterIdle.objectStarted,
      hibernated,
      socketsAfterIdle: pongAfterIdle.sockets,
      deliveredAfterWake: afterWake.id !== undefined,
    },
  };
  console.log(JSON.stringify(result.latencyMs, null, 1));
  console.log(
    `memory: ${(result.memory.bytesPerSocket / 1024).toFixed(1)} KiB per socket (workerd RSS), ` +
      `${(result.memory.heapBytesPerSocket / 1024).toFixed(2)} KiB per socket (the object's isolate heap: ` +
      `${(heapOne / MiB).toFixed(1)} → ${(heapAll / MiB).toFixed(1)} MiB, ${(heapIdle / MiB).toFixed(1)} MiB after ${IDLE_S} s idle)`,
  );
  writeFileSync(path.join(ROOT, "bench", "live-results.json"), `${JSON.stringify(result, null, 2)}\n`);
  for (const s of sockets) s.ws.terminate();
  await first.close();
} finally {
  inspector.close();
  await p.close();
}
