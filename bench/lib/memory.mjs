// Memory of an upload worker alone in a fresh workerd: the process's RSS before and after
// large uploads, and the worker's wasm memory, read over the V8 inspector.

import { Miniflare } from "miniflare";

import { pngBody, request, sleep } from "./http.mjs";
import { Inspector } from "./inspector.mjs";
import { memoryOf, newWorkerd, workerdChildren } from "./proc.mjs";
import { migrateD1 } from "./reference.mjs";

const KiB = 1024;

/**
 * Starts one upload worker alone in a fresh workerd, with the inspector on and its D1
 * migrations applied (if it has D1). `options`: its Miniflare options, with a direct socket.
 * Resolves to `{ mf, pid, url, wasm() }`, `wasm()` being the bytes of its wasm memory (null
 * for a worker without one).
 */
export async function startAlone(options, miniflareOptions = {}) {
  const before = workerdChildren();
  const mf = new Miniflare({
    inspectorPort: 0,
    handleRuntimeStdio(stdout, stderr) {
      stdout.resume();
      stderr.resume();
    },
    ...miniflareOptions,
    workers: [options],
  });
  try {
    await mf.ready;
    await migrateD1(mf, [options]);
    const inspector = await Inspector.forWorker(mf, options.name);
    return {
      mf,
      pid: newWorkerd(before),
      url: new URL("/images", await mf.unsafeGetDirectURL(options.name)),
      wasm: async () => (await inspector.wasmMemoryBytes())[0] ?? null,
      async dispose() {
        inspector.close();
        await mf.dispose();
      },
    };
  } catch (e) {
    await mf.dispose();
    throw e;
  }
}

/**
 * `options`: Miniflare options of one upload worker with a direct socket and a
 * `MAX_UPLOAD_BYTES` above `imageBytes`.
 */
export async function measureUploadMemory(options, { imageBytes, uploads }) {
  const w = await startAlone(options);
  try {
    const post = async (body) => {
      const res = await request(w.url, { method: "POST", body, headers: { "content-type": "image/png" } });
      if (res.status !== 202) throw new Error(`${options.name} upload: ${res.status} ${res.text}`);
    };
    const settle = () => sleep(300);

    const small = pngBody(100 * KiB);
    for (let i = 0; i < 5; i++) await post(small); // warm the code paths
    await settle();
    const base = memoryOf(w.pid);
    await post(small);
    const wasmSmall = await w.wasm();
    const big = pngBody(imageBytes);
    await post(big);
    const wasmAfter1 = await w.wasm();
    await settle();
    const after1 = memoryOf(w.pid);
    for (let i = 1; i < uploads; i++) await post(big);
    const wasmAfterN = await w.wasm();
    await settle();
    const afterN = memoryOf(w.pid);
    return {
      rssBase: base.rss,
      rssAfter1: after1.rss,
      rssAfterN: afterN.rss,
      peakRss: afterN.hwm,
      deltaAfter1: after1.rss - base.rss,
      deltaAfterN: afterN.rss - base.rss,
      peakDelta: afterN.hwm - base.rss,
      wasmAfterSmall: wasmSmall,
      wasmAfter1,
      wasmAfterN,
    };
  } finally {
    await w.dispose();
  }
}
