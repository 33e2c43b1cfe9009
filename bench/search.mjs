// Search benchmark: seeds the local D1 with many images and Zipf-distributed tags, then
// times the search routes of the real upload worker over a real socket. One command:
//
//   node bench/search.mjs [--images 100000] [--labels 1000] [--samples 500] [--zipf 1]
//
// What is timed: one HTTP request to the upload worker (the built Rust worker in workerd,
// run by the launcher) over a loopback socket, from sending it to reading the whole body:
// routing, the bearer check, query parsing, the cursor's HMAC check and new cursor
// (WebCrypto), the D1 query in Miniflare's local D1 (SQLite), and the JSON answer. Requests
// are sequential (one in flight), round-robin over the scenarios, after a warm-up. Prints
// a table and writes
// bench/search-results.json; BENCHMARKS.md ("Search") has the latest run.

import { execFileSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";

import { startPipeline, ROOT } from "../local/pipeline.mjs";
import { keys, model, sql } from "../local/contract.mjs";
import { mulberry32 } from "../local/util.mjs";

process.env.WRANGLER_LOG ??= "error";

const argv = process.argv.slice(2);
const option = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? Number(argv[i + 1]) : fallback;
};
const IMAGES = option("images", 100_000);
const LABELS = option("labels", 1000);
const SAMPLES = option("samples", 500);
const ZIPF = option("zipf", 1);
const WARMUP = 20;
const TOKEN = "bench-search-token";
const AUTH = { authorization: `Bearer ${TOKEN}` };
const DAY_MS = 86_400_000;

const random = mulberry32(20261129);

/** Label names that look like classifier labels: one or two words, mixed case. */
const SYLLABLES = ["ka", "lo", "mi", "ner", "tab", "by", "sea", "shore", "vol", "can", "o", "dai", "sy", "har", "bour", "pel", "ican", "ter", "rier", "gold"];
function labelName(i) {
  const word = (n) => {
    let s = "";
    for (let k = 0; k < 2 + (n % 3); k++) s += SYLLABLES[(n * 7 + k * 13 + (n >> k)) % SYLLABLES.length];
    return s;
  };
  const name = i % 3 === 0 ? `${word(i)} ${word(i * 31 + 5)}` : word(i);
  return `${i % 2 ? name.toUpperCase() : name} ${i}`; // the number keeps names distinct
}
const labels = Array.from({ length: LABELS }, (_, i) => labelName(i + 1));

/**
 * Categories (issue 23), as the tagger indexes them beside the tags. Each label has a chain of
 * three, from specific to general, in a hierarchy of 200 names (130 specific, 50 in the middle,
 * 20 general; the real table has 197), so the general ones are on many images, as `animal`
 * is. Every done image gets its first tag's chain: more category rows than the tagger writes
 * (it stores a category only when its labels sum above MIN_SCORE, about a third of real
 * photos at 0.8), so the index is larger than it would be.
 */
const CATEGORY_LEVELS = [130, 50, 20];
const categoryName = (n) => `category ${n}`; // lower case, as the tagger stores category names
function categoriesOf(label) {
  const i = labels.indexOf(label);
  const specific = i % CATEGORY_LEVELS[0];
  const middle = CATEGORY_LEVELS[0] + (specific % CATEGORY_LEVELS[1]);
  const general = CATEGORY_LEVELS[0] + CATEGORY_LEVELS[1] + (specific % CATEGORY_LEVELS[2]);
  return [specific, middle, general].map(categoryName);
}

/** Zipf: rank k (0-based) with probability ∝ 1 / (k + 1)^s. */
const cumulative = [];
{
  let sum = 0;
  for (let k = 1; k <= LABELS; k++) cumulative.push((sum += 1 / k ** ZIPF));
  for (let k = 0; k < LABELS; k++) cumulative[k] /= sum;
}
function zipfRank() {
  const u = random();
  let lo = 0;
  let hi = LABELS - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cumulative[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The images: 95% done with 1 to 5 distinct Zipf tags, the rest queued or failed. */
function makeImages(now) {
  const images = [];
  for (let i = 0; i < IMAGES; i++) {
    const id = crypto.randomUUID();
    // Over the last year, newest last; about one in twenty shares its millisecond.
    const uploadedAt = now - 365 * DAY_MS + Math.floor((i / IMAGES) * 365 * DAY_MS) - (random() < 0.05 ? 1 : 0);
    const roll = random();
    const status = roll < 0.95 ? "done" : roll < 0.98 ? "queued" : "failed";
    const tags = [];
    if (status === "done") {
      const n = 1 + Math.floor(random() * 5);
      while (tags.length < n) {
        const t = labels[zipfRank()];
        if (!tags.includes(t)) tags.push(t);
      }
    }
    const categories = status === "done" ? categoriesOf(tags[0]) : [];
    images.push({ id, uploadedAt, status, tags, categories });
  }
  return images;
}

async function seed(db, images) {
  const CHUNK = 1000;
  const insertImages = `INSERT INTO images (id, status, r2_key, content_type, size, uploaded_at, updated_at,
      tags, categories, labels, model, min_score, processed_at)
    SELECT json_extract(j.value, '$.id'), json_extract(j.value, '$.status'), json_extract(j.value, '$.key'),
      'image/jpeg', 123456, json_extract(j.value, '$.at'), json_extract(j.value, '$.at'),
      json_extract(j.value, '$.tagList'), json_extract(j.value, '$.categoryList'), '[]', ?2, 0.8,
      CASE WHEN json_extract(j.value, '$.status') = 'queued' THEN NULL ELSE json_extract(j.value, '$.at') + 900 END
    FROM json_each(?1) j`;
  // As the tagger's INDEX_TAGS does: lower case; the triggers count them.
  const insertTags = `INSERT OR IGNORE INTO image_tags (tag, uploaded_at, image_id)
    SELECT lower(json_extract(j.value, '$[0]')), json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]')
    FROM json_each(?1) j`;
  for (let i = 0; i < images.length; i += CHUNK) {
    const chunk = images.slice(i, i + CHUNK);
    const rows = chunk.map((m) => ({
      id: m.id,
      status: m.status,
      key: keys.object(m.id, "jpg"),
      at: m.uploadedAt,
      tagList: m.status === "done" ? JSON.stringify(m.tags) : null,
      categoryList: m.status === "done" ? JSON.stringify(m.categories.map((name) => ({ name, score: 0.9 }))) : null,
    }));
    // Tags, then category names, as INDEX_TAGS adds them (a name that is both counts once).
    const tagRows = chunk.flatMap((m) => [...m.tags, ...m.categories].map((t) => [t, m.uploadedAt, m.id]));
    await db.batch([db.prepare(insertImages).bind(JSON.stringify(rows), model), db.prepare(insertTags).bind(JSON.stringify(tagRows))]);
  }
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

/** One timed request: from sending it to having read the whole body. */
async function once(p, scenario) {
  const target = scenario.next();
  const start = performance.now();
  const res = await p.fetch(target, { method: scenario.method ?? "GET", headers: AUTH });
  const body = await res.text();
  const elapsed = performance.now() - start;
  if (res.status !== (scenario.status ?? 200)) throw new Error(`${target}: ${res.status} ${body.slice(0, 200)}`);
  const json = body ? JSON.parse(body) : {};
  return { elapsed, results: (json.images ?? json.tags ?? []).length };
}

/**
 * Times every scenario `SAMPLES` times after a warm-up, round-robin (one request of each in
 * turn), so that a burst of load on the machine falls on all of them alike.
 */
async function timeAll(p, scenarios) {
  const ms = scenarios.map(() => []);
  const results = scenarios.map(() => 0);
  for (let i = 0; i < WARMUP + SAMPLES; i++) {
    for (const [k, s] of scenarios.entries()) {
      const r = await once(p, s);
      if (i >= WARMUP) {
        ms[k].push(r.elapsed);
        results[k] += r.results;
      }
    }
  }
  return scenarios.map((s, k) => {
    const sorted = ms[k].sort((a, b) => a - b);
    return { p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1), meanResults: results[k] / SAMPLES };
  });
}

async function follow(p, query, pages) {
  let cursor = null;
  for (let i = 0; i < pages; i++) {
    const res = await p.fetch(`/images?${query}${cursor ? `&cursor=${cursor}` : ""}`, { headers: AUTH });
    const page = await res.json();
    if (!page.nextCursor) throw new Error(`${query}: only ${i + 1} pages`);
    cursor = page.nextCursor;
  }
  return cursor;
}

const enc = encodeURIComponent;

async function main() {
  const started = Date.now();
  const p = await startPipeline({ persist: "temp", vars: { upload: { API_TOKEN: TOKEN } } });
  try {
    const images = makeImages(Date.now());
    const db = await p.db();
    const seedStart = performance.now();
    await seed(db, images);
    const seedMs = performance.now() - seedStart;
    const counts = (await db.prepare("SELECT (SELECT count(*) FROM images) AS images, (SELECT count(*) FROM image_tags) AS tagRows, (SELECT count(*) FROM tag_counts) AS labels").first());
    const top = (await db.prepare("SELECT tag, count FROM tag_counts ORDER BY count DESC LIMIT 1").first());
    console.log(`seeded ${counts.images} images, ${counts.tagRows} tag rows, ${counts.labels} labels in ${(seedMs / 1000).toFixed(1)} s; top tag "${top.tag}" on ${top.count} images`);

    // D1's own plans on the seeded data (workerd's SQLite), one example of each shape.
    const plans = [];
    for (const shape of [...sql.searchShapes, { sql: sql.tagCloud, params: [100] }]) {
      const plan = (await db.prepare(`EXPLAIN QUERY PLAN ${shape.sql}`).bind(...shape.params).all()).results;
      plans.push({ sql: shape.sql, plan: plan.map((n) => n.detail) });
      console.log(`plan: ${plan.map((n) => n.detail).join(" | ")}`);
    }

    const multi = images.filter((m) => m.tags.length >= 2);
    const done = images.filter((m) => m.categories.length);
    const scenarios = [
      {
        name: "one-tag search",
        what: "GET /images?tag=T (limit 50); T drawn by Zipf rank (popular tags most often)",
        next: () => `/images?tag=${enc(labels[zipfRank()])}`,
      },
      {
        name: "category search",
        what: "GET /images?tag=C (limit 50); C a category of a random done image (general ones most often)",
        next: () => {
          const m = done[Math.floor(random() * done.length)];
          return `/images?tag=${enc(m.categories[Math.floor(random() * m.categories.length)])}`;
        },
      },
      {
        name: "two-tag search",
        what: "GET /images?tag=A&tag=B (limit 50); A, B two tags of a random image, so never empty",
        next: () => {
          const m = multi[Math.floor(random() * multi.length)];
          return `/images?tag=${enc(m.tags[0])}&tag=${enc(m.tags[1])}`;
        },
      },
    ];
    // Deep pages: the cursor after many pages; keyset pagination makes depth free.
    // Half-way through the listing, and half-way through the top tag's images.
    const allPages = Math.max(1, Math.floor(counts.images / 2 / 200));
    const deepAll = await follow(p, "limit=200", allPages);
    scenarios.push({
      name: "deep page, no filter",
      what: `GET /images?limit=50&cursor=C, C after ${allPages * 200} images (${allPages} pages of 200)`,
      next: () => `/images?limit=50&cursor=${deepAll}`,
    });
    const topTag = top.tag;
    const tagPages = Math.max(1, Math.floor(top.count / 2 / 200));
    const deepTag = await follow(p, `tag=${enc(topTag)}&limit=200`, tagPages);
    scenarios.push({
      name: "deep page, top tag",
      what: `GET /images?tag=<top tag>&limit=50&cursor=C, C after ${tagPages * 200} of its ${top.count} images`,
      next: () => `/images?tag=${enc(topTag)}&limit=50&cursor=${deepTag}`,
    });
    scenarios.push({ name: "GET /tags", what: "GET /tags (the 100 most used, of all labels and categories)", next: () => "/tags" });
    // Two floors: one tiny D1 read through the same route code, and no storage at all.
    scenarios.push({
      name: "D1 floor: /tags?limit=1",
      what: "GET /tags?limit=1: auth, one D1 read of one index entry, JSON: the fixed cost of a D1 query",
      next: () => "/tags?limit=1",
    });
    scenarios.push({
      name: "floor: OPTIONS /tags",
      // The same socket and worker, no auth, no storage.
      what: "OPTIONS /tags, routing and headers only (no auth, no D1): the cost of the HTTP round trip",
      method: "OPTIONS",
      status: 204,
      next: () => "/tags",
    });

    const loadBefore = os.loadavg()[0];
    const timed = await timeAll(p, scenarios);
    const loadAfter = os.loadavg()[0];
    const results = scenarios.map((s, k) => ({ name: s.name, what: s.what, ...timed[k] }));
    for (const r of results) {
      console.log(`${r.name.padEnd(22)} p50 ${r.p50.toFixed(2).padStart(6)} ms   p99 ${r.p99.toFixed(2).padStart(6)} ms   max ${r.max.toFixed(1).padStart(6)} ms   (${r.meanResults.toFixed(1)} results on average)`);
    }
    console.log(`load average (1 min) ${loadBefore.toFixed(1)} before, ${loadAfter.toFixed(1)} after, on ${os.cpus().length} cores`);
    const out = {
      date: new Date().toISOString(),
      // The table in BENCHMARKS.md names it (bench/tables.mjs).
      commit: execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim(),
      images: counts.images,
      tagRows: counts.tagRows,
      labels: counts.labels,
      categories: CATEGORY_LEVELS,
      zipf: ZIPF,
      samples: SAMPLES,
      seedSeconds: seedMs / 1000,
      loadAverage: { before: loadBefore, after: loadAfter, cores: os.cpus().length },
      plans,
      results,
      durationSeconds: (Date.now() - started) / 1000,
    };
    writeFileSync(path.join(ROOT, "bench/search-results.json"), `${JSON.stringify(out, null, 2)}\n`);
    console.log("\n| request | p50 (ms) | p99 (ms) |\n| --- | ---: | ---: |");
    for (const r of results) console.log(`| ${r.name} | ${r.p50.toFixed(1)} | ${r.p99.toFixed(1)} |`);
  } finally {
    await p.close();
  }
}

await main();
