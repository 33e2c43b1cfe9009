// Memory of the Rust upload worker alone in a fresh workerd over sequential large uploads:
// workerd's RSS (and its peak) and the worker's wasm memory (read over the V8 inspector), as
// `multipart/form-data` forms (the default) or raw bodies. R2 is persisted to a temporary
// folder, so that stored objects do not count in workerd's RSS. Figures are printed, never
// asserted.
//
//   node bench/upload-memory.mjs [--uploads 20] [--mib 8] [--concurrency 1] [--raw] [--chunked]
//                                [--build DIR]
//
// `--build DIR` runs another build of the worker (a folder like crates/upload-worker/build),
// to compare with an earlier commit.

import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { chunkedStream } from "../local/util.mjs";
import { pngBody, request, sleep } from "./lib/http.mjs";
import { startAlone } from "./lib/memory.mjs";
import { memoryOf } from "./lib/proc.mjs";
import { RUST, uploadWorker } from "./lib/reference.mjs";

process.env.WRANGLER_LOG ??= "error";

const argv = process.argv.slice(2);
const arg = (name, fallback) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : fallback);
const uploads = Number(arg("--uploads", 20));
const mib = Number(arg("--mib", 8));
const concurrency = Number(arg("--concurrency", 1));
const raw = argv.includes("--raw");
const chunkedBody = argv.includes("--chunked");
const build = arg("--build", null);
const MiB = 1024 * 1024;
const BOUNDARY = "----memory-bench-boundary";

const runtimeErrors = [];
const persist = mkdtempSync(path.join(os.tmpdir(), "upload-memory-"));
const options = {
  ...uploadWorker(RUST, { queue: "bench-sink", vars: { MAX_UPLOAD_BYTES: String(64 * MiB) } }),
  ...(build ? { scriptPath: path.resolve(build, "index.js"), modulesRoot: path.resolve(build) } : {}),
};
const w = await startAlone(options, {
  r2Persist: persist,
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    // Kept for the report of a failed run.
    stderr.setEncoding("utf8");
    stderr.on("data", (chunk) => runtimeErrors.push(chunk));
  },
});

function body(size) {
  const image = pngBody(size);
  if (raw) return { bytes: image, type: "image/png" };
  const head = `--${BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\nContent-Type: image/png\r\n\r\n`;
  const bytes = Buffer.concat([Buffer.from(head), image, Buffer.from(`\r\n--${BOUNDARY}--\r\n`)]);
  return { bytes, type: `multipart/form-data; boundary=${BOUNDARY}` };
}

try {
  const { pid, url } = w;
  // A new connection per upload: under load, workerd sometimes closes a kept-alive connection
  // as the next request arrives on it (seen with every build).
  const agent = false;
  const post = async ({ bytes, type }) => {
    if (!chunkedBody) {
      const res = await request(url, { method: "POST", body: bytes, agent, headers: { "content-type": type } });
      if (res.status !== 202) throw new Error(`upload: ${res.status} ${res.text}`);
      return;
    }
    const init = { method: "POST", headers: { "content-type": type }, body: chunkedStream(bytes), duplex: "half" };
    const res = await fetch(url, init);
    const text = await res.text();
    if (res.status !== 202) throw new Error(`upload: ${res.status} ${text}`);
  };
  const small = body(100 * 1024);
  for (let i = 0; i < 5; i++) await post(small);
  await sleep(300);
  const base = memoryOf(pid);
  const big = body(mib * MiB);
  const wasm = [];
  const rss = [];
  let next = 0;
  const lane = async () => {
    while (next++ < uploads) {
      await post(big);
      rss.push(memoryOf(pid).rss);
      if (wasm.length === 0) wasm.push(await w.wasm());
    }
  };
  await Promise.all(Array.from({ length: concurrency }, lane));
  wasm.push(await w.wasm());
  await sleep(300);
  const end = memoryOf(pid);
  const fmt = (bytes) => `${(bytes / MiB).toFixed(1)} MiB`;
  console.log(
    `${build ?? "crates/upload-worker/build"}: ${uploads} ${mib} MiB ${raw ? "raw" : "multipart"} uploads, ${concurrency} at a time` +
      `${chunkedBody ? " (chunked)" : " (with Content-Length)"}`,
  );
  console.log(`  workerd RSS before: ${fmt(base.rss)}`);
  console.log(`  after 1: +${fmt(rss[0] - base.rss)}; after ${uploads}: +${fmt(end.rss - base.rss)}; max during: +${fmt(Math.max(...rss) - base.rss)}`);
  console.log(`  peak RSS (VmHWM): +${fmt(end.hwm - base.rss)}`);
  console.log(`  wasm memory: ${fmt(wasm[0])} after 1, ${fmt(wasm.at(-1))} after ${uploads}`);
} catch (e) {
  console.error(runtimeErrors.join("").slice(-4000));
  throw e;
} finally {
  await w.dispose();
  rmSync(persist, { recursive: true, force: true });
}
