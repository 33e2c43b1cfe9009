// Memory of an upload worker alone in a fresh workerd: the process's RSS before and after
// large uploads, and the worker's wasm memory as it reports it (`x-wasm-memory-bytes`).

import { Miniflare } from "miniflare";

import { pngBody, request, sleep } from "./http.mjs";
import { memoryOf, newWorkerd, workerdChildren } from "./proc.mjs";

const KiB = 1024;

/**
 * `options`: Miniflare options of one upload worker with a direct socket, the var
 * `EXPOSE_WASM_MEMORY = "true"` and a `MAX_UPLOAD_BYTES` above `imageBytes`.
 */
export async function measureUploadMemory(options, { imageBytes, uploads }) {
  const before = workerdChildren();
  const mf = new Miniflare({
    handleRuntimeStdio(stdout, stderr) {
      stdout.resume();
      stderr.resume();
    },
    workers: [options],
  });
  await mf.ready;
  try {
    const pid = newWorkerd(before);
    const url = new URL("/images", await mf.unsafeGetDirectURL(options.name));
    const post = async (body) => {
      const res = await request(url, { method: "POST", body, headers: { "content-type": "image/png" } });
      if (res.status !== 202) throw new Error(`${options.name} upload: ${res.status} ${res.text}`);
      const wasm = res.headers["x-wasm-memory-bytes"];
      return wasm === undefined ? null : Number(wasm);
    };
    const settle = () => sleep(300);

    const small = pngBody(100 * KiB);
    for (let i = 0; i < 5; i++) await post(small); // warm the code paths
    await settle();
    const base = memoryOf(pid);
    const wasmSmall = await post(small);
    const big = pngBody(imageBytes);
    const wasmAfter1 = await post(big);
    await settle();
    const after1 = memoryOf(pid);
    let wasmAfterN = wasmAfter1;
    for (let i = 1; i < uploads; i++) wasmAfterN = await post(big);
    await settle();
    const afterN = memoryOf(pid);
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
    await mf.dispose();
  }
}
