// Where the upload isolate's CPU goes, by phase of the upload, from the .cpuprofile files
// that `node bench/upload-ratio.mjs --save-profiles DIR` writes (issue 25):
//
//   KEEP_WASM_NAMES=1 npm run build     # wasm function names, for the Rust frames
//   node bench/upload-ratio.mjs --quick --no-save --save-profiles DIR
//   node bench/upload-phases.mjs DIR/rust-100k-c1.cpuprofile [REQUESTS]
//
// Each sample goes to the first phase found walking up its stack from the leaf (the JS or
// wasm function it was in, then its callers), by function name (and for D1, the binding's
// own script): the phase of the nearest frame that names one. Samples in no phase's frame
// are the futures executor's (wasm-bindgen's microtasks, wakers and closures) when such a
// frame is on the stack, else "other". Printed: the share of the isolate's own samples
// (`(idle)`, `(program)` and GC apart) and the sampled ms per request (REQUESTS: the run's
// request count), which the profiler and the machine's load inflate alike: compare shares.
import { readFileSync } from "node:fs";
// The live publish runs after the response, under `waitUntil`: a sample with its frame
// anywhere on the stack is the publish's, whatever the leaf is (building its request, the
// stub's fetch, the timeout's timer).
const LIVE = ["live publish (after the response)", /edge::live|LiveEvent|durable_object|get_by_name|fetch_with_request|Delay/];
const PHASES = [
  ["D1 (binding's JS and our statements)", /d1-api|edge::d1|worker::d1|Store::(insert_queued|sent|set_size|mark_sent|run|open)|D1Database|D1Prepared/],
  ["R2 put", /r2::|R2Bucket|__wbg_put_|^put$|Env::bucket/],
  ["queue send", /handlers::enqueue|worker::queue|Queue::send|MessageBuilder|serde_wasm_bindgen|__wbg_send_|^send$|Env::queue/],
  ["body read, sniff, pixel check", /body::|admission|feed_head|arrayBuffer|Head::/],
  ["auth check", /auth::|constant_time/],
  ["settings", /settings::|Settings/],
  ["idempotency", /Idempotency|reserve_key|digest/],
  ["log line", /edge::log|__wbg_log_|console/],
  ["response (JSON, headers)", /http::|handlers::accepted|Response|Headers::set|serde_json::ser|ResponseBuilder|Accepted/],
  ["request (route, headers, entry)", /Route::parse|Method::parse|worker::request|Headers::get|_worker_fetch|handlers::header|__wbg_get_|Request|URL/],
  ["uuid, clock, time format", /uuid|getRandomValues|format_ms|Date|now_ms/],
  ["detach (waitUntil)", /detach|wait_until|waitUntil/],
  ["futures executor (microtasks, wakers, closures)", /js_sys::futures|wasm_bindgen_futures|queueMicrotask|closures|JsFuture|_wbg_cb_unref|Closure/],
];
const p = JSON.parse(readFileSync(process.argv[2], "utf8"));
const count = Number(process.argv[3] ?? 1);
if (!process.argv[2]) {
  console.error("usage: node bench/upload-phases.mjs FILE.cpuprofile [REQUESTS]");
  process.exit(2);
}
const byId = new Map(p.nodes.map((x) => [x.id, x]));
const parent = new Map();
for (const x of p.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
const out = new Map(); let total = 0;
p.samples.forEach((id, i) => {
  const dt = p.timeDeltas[i] / 1000;
  const f = byId.get(id).callFrame.functionName;
  if (f === "(idle)") return;
  let phase;
  if (f === "(program)") phase = "(program): outside this isolate's JS";
  else if (f === "(garbage collector)") phase = "GC";
  else {
    total += dt;
    for (let cur = id; cur !== undefined && !phase; cur = parent.get(cur)) {
      if (LIVE[1].test(byId.get(cur).callFrame.functionName)) phase = LIVE[0];
    }
    for (let cur = id; cur !== undefined && !phase; cur = parent.get(cur)) {
      const cf = byId.get(cur).callFrame;
      const name = cf.functionName;
      const url = cf.url;
      for (const [label, re] of PHASES) if (re.test(name) || (label.startsWith("D1") && re.test(url))) { phase = label; break; }
    }
    phase ??= "other (inlined Rust, glue)";
  }
  out.set(phase, (out.get(phase) ?? 0) + dt);
});
console.log(`own (no idle/program/GC) ${(total / count).toFixed(3)} ms/request`);
for (const [k, v] of [...out].sort((a, b) => b[1] - a[1])) console.log(`${(v / count).toFixed(3).padStart(7)} ms ${(100 * v / total).toFixed(1).padStart(5)} %  ${k}`);
