// What the Rust upload worker's D1 write costs workerd here: the upload path records each
// image in D1 (`INSERT` of its queued row) before storing it, which the TS reference does
// not. Two trivial JS workers in one workerd take the same POSTs of 100 KiB: one reads the
// body and answers 202, the other also runs the upload worker's insert (the contract's
// statement, on the real migrations). The difference in workerd CPU per request is the cost
// of one D1 insert in Miniflare (its SQLite runs in the same process). Median of 3
// interleaved runs per cell.
//
//   node bench/d1-insert.mjs [--count 200]

import path from "node:path";
import { Miniflare } from "miniflare";

import { ROOT, applyMigrations } from "../local/pipeline.mjs";
import { sql } from "../local/contract.mjs";
import { load, median, pngBody } from "./lib/http.mjs";
import { cpuMs, newWorkerd, workerdChildren } from "./lib/proc.mjs";

const argv = process.argv.slice(2);
const count = Number(argv.includes("--count") ? argv[argv.indexOf("--count") + 1] : 200);
const CONCURRENCIES = [1, 16, 64];
const REPS = 3;

const worker = (name, insert) => ({
  name,
  modules: true,
  script: `export default {
    async fetch(request, env) {
      const bytes = await request.arrayBuffer();
      ${insert ? `await env.DB.prepare(${JSON.stringify(sql.insertQueued)})
        .bind(crypto.randomUUID(), "images/x.png", "image/png", bytes.byteLength, Date.now(), "operator").run();` : ""}
      return new Response(null, { status: 202 });
    },
  };`,
  d1Databases: { DB: "bench-d1" },
  unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }],
});

const before = workerdChildren();
const mf = new Miniflare({
  handleRuntimeStdio(stdout, stderr) {
    stdout.resume();
    stderr.resume();
  },
  workers: [worker("plain", false), worker("d1-insert", true)],
});
try {
  await mf.ready;
  await applyMigrations(await mf.getD1Database("DB", "plain"), path.join(ROOT, "migrations"));
  const pid = newWorkerd(before);
  const body = pngBody(100 * 1024);
  const urls = {};
  for (const name of ["plain", "d1-insert"]) {
    urls[name] = new URL("/images", await mf.unsafeGetDirectURL(name));
    await load(urls[name], body, { count: 50, concurrency: 4 });
  }
  console.log(`${count} POSTs of 100 KiB per run; workerd CPU ms per request, median of ${REPS}`);
  for (const concurrency of CONCURRENCIES) {
    const cpu = { plain: [], "d1-insert": [] };
    for (let rep = 0; rep < REPS; rep++) {
      for (const name of rep % 2 ? ["d1-insert", "plain"] : ["plain", "d1-insert"]) {
        const c0 = cpuMs(pid);
        const run = await load(urls[name], body, { count, concurrency });
        if (run.errors) throw new Error(`${name}: ${run.firstError}`);
        cpu[name].push((cpuMs(pid) - c0) / count);
      }
    }
    const plain = median(cpu.plain);
    const d1 = median(cpu["d1-insert"]);
    console.log(`c=${concurrency}: plain ${plain.toFixed(2)}, with the D1 insert ${d1.toFixed(2)}: +${(d1 - plain).toFixed(2)} ms`);
  }
} finally {
  await mf.dispose();
}
