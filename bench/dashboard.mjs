// Dashboard benchmark (issue 22): seeds the local D1 with many images (1M by default), their
// webhook events and tag counts, then times GET /admin/stats on the real upload worker over
// a real socket, each of its aggregates on their own, and the page in headless Chromium.
// The method of bench/search.mjs, scaled up. One command:
//
//   node bench/dashboard.mjs [--images 1000000] [--days 7] [--samples 40]
//
// What is timed:
// - `GET /admin/stats`: one HTTP request to the upload worker (the built Rust worker in
//   workerd, run by the launcher) over a loopback socket, from sending it to reading the
//   whole body: routing, the bearer check, the seven aggregates in one D1 batch in
//   Miniflare's local D1 (SQLite), the shaping and the JSON. Sequential, after a warm-up.
// - Each aggregate alone, through Miniflare's D1 binding from Node (its proxy adds a fixed
//   cost: see the "D1 floor" row, `SELECT 1`).
// - The page: headless Chromium (CHROMIUM_PATH, default /usr/bin/chromium) loads /admin with
//   the key in session storage; the page measures its request and its drawing (up to the next
//   frame) and the benchmark the whole load, from navigation to figures shown.
// The data: images uploaded evenly over the last `--days` days (the dashboard's 24-hour window
// holds 1/days of them): 94% done (3% of those reused from a twin), 5% failed under six
// codes, 1% queued; one in five has a webhook event (90% delivered, 3% retrying, 2% waiting,
// 5% given up); 1000 tags with Zipf counts in tag_counts (the top tags read only that table,
// whose size is the number of distinct tags, not of images).
// Prints a table and writes bench/dashboard-results.json; BENCHMARKS.md ("Operator dashboard")
// has the latest run (bench/tables.mjs).

import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { chromium } from "playwright-core";

import { startPipeline, ROOT } from "../local/pipeline.mjs";
import { keys, model, sql } from "../local/contract.mjs";
import { mulberry32 } from "../local/util.mjs";

process.env.WRANGLER_LOG ??= "error";

const argv = process.argv.slice(2);
const option = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const IMAGES = option("images", 1_000_000);
const DAYS = option("days", 7);
const SAMPLES = option("samples", 40);
const WARMUP = 5;
const TOKEN = "bench-dashboard-token";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const DAY_MS = 86_400_000;
const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const CODES = ["invalid_image", "retries_exhausted", "object_missing", "image_too_large", "ai_misconfigured", "timed_out"];
const STATEMENT_NAMES = ["uploads per hour", "time to done", "failures by code", "queued backlog", "AI calls today", "webhook deliveries", "top tags"];

const random = mulberry32(20261206);

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
const summary = (ms) => {
  const s = [...ms].sort((a, b) => a - b);
  return { p50: percentile(s, 50), p99: percentile(s, 99), max: s.at(-1) };
};

/** Seeds `IMAGES` images (and events) in chunks, each chunk one D1 batch of two inserts. */
async function seed(db, now) {
  const CHUNK = 2000;
  const insertImages = `INSERT INTO images (id, status, r2_key, content_type, size, uploaded_at, updated_at,
      tags, labels, model, min_score, processed_at, error_code, reused_from, callback_url)
    SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]'), 'images/' || json_extract(j.value, '$[0]') || '.jpg',
      'image/jpeg', 123456, json_extract(j.value, '$[2]'), json_extract(j.value, '$[2]'),
      '[]', '[]', ?2, 0.8, json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]'),
      json_extract(j.value, '$[5]'), json_extract(j.value, '$[6]')
    FROM json_each(?1) j`;
  const insertEvents = `INSERT INTO notifications (event_id, image_id, type, url, payload, state, created_at,
      attempts, updated_at)
    SELECT 'evt_' || json_extract(j.value, '$[0]'), json_extract(j.value, '$[0]'), 'image.tagged', 'https://hooks.example.com/in',
      '{}', json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]'), json_extract(j.value, '$[3]'), json_extract(j.value, '$[2]')
    FROM json_each(?1) j`;
  const start = now - DAYS * DAY_MS;
  let previous = null;
  for (let i = 0; i < IMAGES; i += CHUNK) {
    const rows = [];
    const events = [];
    for (let k = i; k < Math.min(IMAGES, i + CHUNK); k++) {
      const id = crypto.randomUUID();
      const uploadedAt = start + Math.floor((k / IMAGES) * DAYS * DAY_MS);
      const roll = random();
      // 1% queued, spread over the days like the rest: a backlog as old as the data.
      const status = roll < 0.94 ? "done" : roll < 0.99 ? "failed" : "queued";
      // 1 to ~60 s, skewed to the fast end.
      const latency = Math.floor(1000 + 59_000 * random() ** 3);
      const processedAt = status === "queued" ? null : Math.min(now, uploadedAt + latency);
      const code = status === "failed" ? CODES[Math.floor(random() ** 2 * CODES.length)] : null;
      const reused = status === "done" && random() < 0.03 && previous ? previous : null;
      const webhook = status !== "queued" && random() < 0.2;
      rows.push([id, status, uploadedAt, processedAt, code, reused, webhook ? "https://hooks.example.com/in" : null]);
      if (webhook) {
        const w = random();
        const [state, attempts] = w < 0.9 ? ["delivered", 1] : w < 0.93 ? ["pending", 3] : w < 0.95 ? ["pending", 0] : ["failed", 9];
        events.push([id, state, processedAt, attempts]);
      }
      if (status === "done") previous = id;
    }
    const batch = [db.prepare(insertImages).bind(JSON.stringify(rows), model)];
    if (events.length) batch.push(db.prepare(insertEvents).bind(JSON.stringify(events)));
    await db.batch(batch);
    if ((i / CHUNK) % 50 === 0) process.stdout.write(`\rseeded ${i.toLocaleString("en")} images`);
  }
  process.stdout.write("\n");
  // Tag counts: 1000 tags, Zipf counts over about three tags per done image.
  const tags = Array.from({ length: 1000 }, (_, k) => [`tag ${k + 1}`, Math.max(1, Math.round((IMAGES * 3 * 0.134) / (k + 1)))]);
  await db.prepare("INSERT INTO tag_counts (tag, count) SELECT json_extract(j.value, '$[0]'), json_extract(j.value, '$[1]') FROM json_each(?1) j").bind(JSON.stringify(tags)).run();
}

/** The page in Chromium: `loads` reloads with the key in session storage. */
async function timePage(url, loads) {
  if (!existsSync(CHROMIUM)) {
    console.log(`no Chromium at ${CHROMIUM}: the page is not timed`);
    return null;
  }
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(new URL("/admin", url).href);
    await page.evaluate((token) => sessionStorage.setItem("image-tagger.operator-key", token), TOKEN);
    const total = [];
    const request = [];
    const render = [];
    for (let i = 0; i < WARMUP + loads; i++) {
      const start = performance.now();
      await page.reload();
      await page.locator("body[data-loaded]").waitFor({ timeout: 30_000 });
      const elapsed = performance.now() - start;
      const t = await page.evaluate(() => window.dashboardTimings);
      if (i >= WARMUP) {
        total.push(elapsed);
        request.push(t.fetchMs);
        render.push(t.renderMs);
      }
    }
    mkdirSync(path.join(ROOT, "test-output"), { recursive: true });
    await page.screenshot({ path: path.join(ROOT, "test-output", "dashboard-1m.png"), fullPage: true });
    if (errors.length) throw new Error(`page errors: ${errors.join("; ")}`);
    return { loads, total: summary(total), request: summary(request), render: summary(render) };
  } finally {
    await browser.close();
  }
}

async function main() {
  const started = Date.now();
  const p = await startPipeline({ persist: "temp", vars: { upload: { API_TOKEN: TOKEN, AI_DAILY_BUDGET: "100000" } } });
  try {
    const db = await p.db();
    const seedStart = performance.now();
    await seed(db, Date.now());
    const seedMs = performance.now() - seedStart;
    const counts = await db
      .prepare(
        "SELECT (SELECT count(*) FROM images) AS images, (SELECT count(*) FROM notifications) AS events, " +
          "(SELECT count(*) FROM images WHERE uploaded_at >= ?1) AS inWindow",
      )
      .bind(Date.now() - DAY_MS)
      .first();
    console.log(`seeded ${counts.images} images (${counts.inWindow} in the last 24 h), ${counts.events} webhook events in ${(seedMs / 1000).toFixed(1)} s`);

    // D1's own plans on the seeded data (workerd's SQLite), and each aggregate alone.
    const statements = [];
    for (const [k, st] of sql.dashboard.entries()) {
      const plan = (await db.prepare(`EXPLAIN QUERY PLAN ${st.sql}`).bind(...st.params).all()).results.map((n) => n.detail);
      console.log(`plan of ${STATEMENT_NAMES[k]}: ${plan.join(" | ")}`);
      statements.push({ name: STATEMENT_NAMES[k], sql: st.sql, plan });
    }
    const now = Date.now();
    // The contract's parameters are of a fixed past window: shift its times to now.
    const shift = (st) => st.params.map((v) => (v > 1e12 ? v + (now - 1_796_000_000_000) : v));
    const alone = [...sql.dashboard.map((st) => ({ sql: st.sql, params: shift(st) })), { sql: "SELECT 1 AS one", params: [] }];
    const aloneMs = alone.map(() => []);
    for (let i = 0; i < WARMUP + SAMPLES; i++) {
      for (const [k, st] of alone.entries()) {
        const t = performance.now();
        await db.prepare(st.sql).bind(...st.params).all();
        if (i >= WARMUP) aloneMs[k].push(performance.now() - t);
      }
    }
    for (const [k, s] of statements.entries()) Object.assign(s, summary(aloneMs[k]));
    const floor = summary(aloneMs.at(-1));

    const loadBefore = os.loadavg()[0];
    const endpoint = [];
    let body;
    for (let i = 0; i < WARMUP + SAMPLES; i++) {
      const t = performance.now();
      const res = await p.fetch("/admin/stats", { headers: AUTH });
      const text = await res.text();
      const elapsed = performance.now() - t;
      if (res.status !== 200) throw new Error(`/admin/stats: ${res.status} ${text.slice(0, 200)}`);
      if (i >= WARMUP) endpoint.push(elapsed);
      body = JSON.parse(text);
    }
    const page = await timePage(p.url, Math.max(5, Math.floor(SAMPLES / 4)));
    const loadAfter = os.loadavg()[0];

    const e = summary(endpoint);
    for (const s of statements) console.log(`${s.name.padEnd(20)} p50 ${s.p50.toFixed(2).padStart(7)} ms   p99 ${s.p99.toFixed(2).padStart(7)} ms`);
    console.log(`${"D1 floor (SELECT 1)".padEnd(20)} p50 ${floor.p50.toFixed(2).padStart(7)} ms`);
    console.log(`GET /admin/stats     p50 ${e.p50.toFixed(2).padStart(7)} ms   p99 ${e.p99.toFixed(2).padStart(7)} ms   max ${e.max.toFixed(1)} ms`);
    if (page) {
      console.log(`page in Chromium: load to figures p50 ${page.total.p50.toFixed(1)} ms (max ${page.total.max.toFixed(1)}); ` +
        `its request p50 ${page.request.p50.toFixed(1)} ms, drawing p50 ${page.render.p50.toFixed(1)} ms`);
    }
    console.log(`figures: ${body.uploadsPerHour.reduce((n, h) => n + h.done + h.failed + h.queued, 0)} uploads in the chart, ` +
      `time to done p50 ${body.timeToDone.medianMs} ms p95 ${body.timeToDone.p95Ms} ms over ${body.timeToDone.samples}, backlog ${body.backlog.queued}, ` +
      `AI calls today ${body.ai.calls}`);
    console.log(`load average (1 min) ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after, on ${os.cpus().length} cores`);
    const out = {
      date: new Date().toISOString(),
      commit: execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim(),
      images: counts.images,
      imagesInWindow: counts.inWindow,
      webhookEvents: counts.events,
      days: DAYS,
      samples: SAMPLES,
      seedSeconds: seedMs / 1000,
      loadAverage: { before: loadBefore, after: loadAfter, cores: os.cpus().length },
      statements,
      d1Floor: floor,
      endpoint: e,
      page,
      figures: {
        chartUploads: body.uploadsPerHour.reduce((n, h) => n + h.done + h.failed + h.queued, 0),
        timeToDone: body.timeToDone,
        backlog: body.backlog.queued,
        aiCallsToday: body.ai.calls,
        webhooks: body.webhooks,
      },
      durationSeconds: (Date.now() - started) / 1000,
    };
    writeFileSync(path.join(ROOT, "bench/dashboard-results.json"), `${JSON.stringify(out, null, 2)}\n`);
  } finally {
    await p.close();
  }
}

await main();
