// The operator dashboard (issue 22): real uploads through the pipeline (done, failed, one
// still queued, webhooks delivered, retrying and given up), then GET /admin/stats as the
// operator must count exactly what was made; client keys and anonymous callers are refused.
// Then the page in headless Chromium (playwright-core, Debian's chromium): it asks for the
// key, shows the figures and the chart, and a screenshot is saved (test-output/).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { chromium } from "playwright-core";

import { startPipeline, waitFor, ROOT } from "../local/pipeline.mjs";
import { answer } from "../local/ai-stub.mjs";
import { apiError, contract, status, tagError } from "../local/contract.mjs";
import { png, garbagePng } from "../local/images.mjs";
import { FAST_QUEUES, upload } from "./support/helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const OUTPUT = path.join(ROOT, "test-output");
const TOKEN = "dashboard-operator-token";
const OP = { authorization: `Bearer ${TOKEN}` };
const BUDGET = 40;
const [PENDING, DELIVERED, GAVE_UP] = contract.webhooks.deliveryStates;
const CALLBACK_POLICY = { ALLOW_INSECURE_CALLBACKS: "true", WEBHOOK_ALLOWED_HOSTS: "127.0.0.1" };

/** A receiver on 127.0.0.1: `/ok` answers 200, `/down` 500 (retried), `/gone` 404 (given up). */
async function startReceiver() {
  const hits = [];
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      hits.push(req.url);
      res.writeHead(req.url === "/ok" ? 200 : req.url === "/down" ? 500 : 404).end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${server.address().port}`;
  return { hits, url: (p) => `${base}${p}`, close: () => new Promise((r) => (server.closeAllConnections?.(), server.close(r))) };
}

let p;
let receiver;
let release;
const made = {};

before(async () => {
  receiver = await startReceiver();
  p = await startPipeline({
    queues: FAST_QUEUES,
    vars: {
      upload: { API_TOKEN: TOKEN, AI_DAILY_BUDGET: String(BUDGET), ...CALLBACK_POLICY },
      tagger: { AI_DAILY_BUDGET: String(BUDGET), WEBHOOK_SECRET: `whsec_${randomBytes(32).toString("base64")}`, ...CALLBACK_POLICY },
    },
  });
});
after(async () => {
  release?.();
  await p?.close();
  await receiver?.close();
});

const record = async (id) => (await p.fetch(`/images/${id}`, { headers: OP })).json();
const final = (id) => waitFor(async () => ((r) => (r.status !== status.queued ? r : null))(await record(id)), { what: `${id} final`, timeoutMs: 60_000 });
async function delivery(id) {
  const db = await p.db();
  return db.prepare("SELECT state, attempts FROM notifications WHERE image_id = ?1").bind(id).first();
}
async function stats(headers = OP) {
  const res = await p.fetch("/admin/stats", { headers });
  return { status: res.status, headers: res.headers, json: await res.json() };
}
const sum = (hours, key) => hours.reduce((n, h) => n + h[key], 0);
/** The nearest-rank percentile, as the dashboard computes it. */
const nearestRank = (sorted, pct) => sorted[Math.max(1, Math.ceil((sorted.length * pct) / 100)) - 1];

test("GET /admin/stats counts what the pipeline made", async () => {
  const cb = (path) => ({ "callback-url": receiver.url(path) });
  // Three done (webhooks: one delivered, one retrying), two failed (one webhook given up).
  made.delivered = await upload(p, png(300), { ...OP, ...cb("/ok") });
  made.retrying = await upload(p, png(301), { ...OP, ...cb("/down") });
  made.plain = await upload(p, png(302), OP);
  made.gone = await upload(p, garbagePng(600), { ...OP, ...cb("/gone") });
  made.broken = await upload(p, garbagePng(601), OP);
  const records = {};
  for (const [name, id] of Object.entries(made)) records[name] = await final(id);
  for (const name of ["delivered", "retrying", "plain"]) assert.equal(records[name].status, status.done, name);
  for (const name of ["gone", "broken"]) {
    assert.equal(records[name].status, status.failed, name);
    assert.equal(records[name].error.code, tagError.invalid_image);
  }
  await waitFor(async () => (await delivery(made.delivered))?.state === DELIVERED, { what: "delivered" });
  await waitFor(async () => (await delivery(made.gone))?.state === GAVE_UP, { what: "given up" });
  await waitFor(async () => {
    const d = await delivery(made.retrying);
    return d?.state === PENDING && d.attempts >= 1;
  }, { what: "a failed attempt" });

  // One more image, whose AI call is held: it stays queued until released.
  const held = png(303);
  let gate;
  const gated = new Promise((resolve) => (gate = resolve));
  release = gate;
  p.ai.script(held, { ...answer(), gate: gated });
  made.queued = await upload(p, held, OP);
  await waitFor(() => p.ai.callsFor(held).length === 1, { what: "the held call" });
  const queuedView = await record(made.queued);
  assert.equal(queuedView.status, status.queued);

  const before = await stats();
  assert.equal(before.status, 200);
  assert.match(before.headers.get("content-type"), /application\/json/);
  assert.equal(before.headers.get("cache-control"), "no-store");
  const d = before.json;
  assert.equal(d.windowHours, 24);
  assert.equal(d.uploadsPerHour.length, 24);
  assert.deepEqual(["done", "failed", "queued"].map((k) => sum(d.uploadsPerHour, k)), [3, 2, 1]);
  const lastHour = d.uploadsPerHour.at(-1).hour;
  assert.ok(Date.parse(lastHour) <= Date.now() && Date.now() - Date.parse(lastHour) < 3_600_000, lastHour);

  const ms = ["delivered", "retrying", "plain"].map((n) => Date.parse(records[n].processedAt) - Date.parse(records[n].uploadedAt)).sort((a, b) => a - b);
  assert.deepEqual(d.timeToDone, { samples: 3, medianMs: nearestRank(ms, 50), p95Ms: nearestRank(ms, 95) });
  assert.deepEqual(d.failures, [{ code: tagError.invalid_image, count: 2 }]);
  assert.equal(d.backlog.queued, 1);
  assert.equal(d.backlog.atLeast, false);
  assert.equal(d.backlog.oldestUploadedAt, queuedView.uploadedAt);
  assert.ok(d.backlog.oldestAgeSeconds >= 0 && d.backlog.oldestAgeSeconds < 600, String(d.backlog.oldestAgeSeconds));
  assert.equal(d.ai.calls, 3);
  assert.equal(d.ai.dailyBudget, BUDGET);
  assert.equal(d.ai.budgetUsedPercent, 7.5);
  assert.equal(d.ai.day, new Date().toISOString().slice(0, 10));
  assert.deepEqual(d.webhooks, { delivered: 1, retrying: 1, waiting: 0, givenUp: 1 });
  // Every done image has the stub's first label as a tag.
  const standIn = (await (await p.fetch("/tags?limit=100", { headers: OP })).json()).tags;
  assert.deepEqual(d.topTags, standIn.slice(0, 10).map(({ tag, count }) => ({ tag, count })));
  assert.equal(d.topTags[0].count, 3);

  // The held call answers: the image is done, and the figures move with it.
  release();
  await final(made.queued);
  const after = (await stats()).json;
  assert.deepEqual(["done", "failed", "queued"].map((k) => sum(after.uploadsPerHour, k)), [4, 2, 0]);
  assert.equal(after.backlog.queued, 0);
  assert.equal(after.backlog.oldestUploadedAt, null);
  assert.equal(after.ai.calls, 4);
  assert.equal(after.timeToDone.samples, 4);
});

test("only the operator reads the figures; the page itself is public and holds none", async () => {
  const made = await p.fetch("/admin/keys", { method: "POST", headers: { ...OP, "content-type": "application/json" }, body: JSON.stringify({ name: "client" }) });
  assert.equal(made.status, 201);
  const { key } = await made.json();
  const client = await stats({ authorization: `Bearer ${key}` });
  assert.equal(client.status, 403);
  assert.equal(client.json.error.code, apiError.insufficient_scope);
  for (const headers of [{}, { authorization: "Bearer wrong" }]) {
    const res = await stats(headers);
    assert.equal(res.status, 401);
    assert.equal(res.json.error.code, apiError.unauthorized);
  }
  const post = await p.fetch("/admin/stats", { method: "POST", headers: OP });
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("allow"), "GET, HEAD, OPTIONS");

  const page = await p.fetch("/admin");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /text\/html/);
  assert.match(page.headers.get("content-security-policy"), /default-src 'none'/);
  assert.equal(page.headers.get("x-frame-options"), "DENY");
  const html = await page.text();
  assert.ok(html.includes("/admin/stats") && html.includes("sessionStorage"));
  assert.ok(!/https?:\/\//.test(html.replace("http://www.w3.org/2000/svg", "")), "no external assets");
});

test("the page in Chromium asks for the key, then shows the figures and the chart", async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/test.sh installs Debian's chromium`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-gpu", "--no-first-run"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1000, height: 760 } });
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(new URL("/admin", p.url).href);
    assert.equal(await page.locator("#board").isVisible(), false);

    // A wrong key: the API's error, and the key is not kept.
    await page.getByLabel("Operator key").fill("wrong");
    await page.getByRole("button", { name: "Show" }).click();
    await page.locator("#error", { hasText: apiError.unauthorized }).waitFor({ timeout: 30_000 });
    assert.equal(await page.evaluate(() => sessionStorage.length), 0);

    await page.getByLabel("Operator key").fill(TOKEN);
    await page.getByRole("button", { name: "Show" }).click();
    await page.locator("body[data-loaded]").waitFor({ timeout: 30_000 });
    assert.equal(await page.locator("#error").textContent(), "");
    assert.equal(await page.locator("#calls").textContent(), "4");
    assert.equal(await page.locator("#queued").textContent(), "0");
    assert.match(await page.locator("#budget").textContent(), new RegExp(`of ${BUDGET} \\(10 %\\)`));
    assert.match(await page.locator("#failures").textContent(), /invalid_image\s*2/);
    assert.match(await page.locator("#webhooks").textContent(), /delivered1retrying1waiting0given up1/);
    // The chart: one bar segment per hour and status with uploads (here, all this hour or the last).
    const bars = await page.locator("#chart rect").count();
    assert.ok(bars >= 2 && bars <= 4, `${bars} bars`);
    assert.equal(await page.locator("#chart rect.done").count() >= 1, true);

    // The key is kept for the session: a reload shows the figures without asking.
    await page.reload();
    await page.locator("body[data-loaded]").waitFor({ timeout: 30_000 });
    const timings = await page.evaluate(() => window.dashboardTimings);
    console.log(`dashboard: request ${timings.fetchMs.toFixed(1)} ms, render ${timings.renderMs.toFixed(1)} ms`);

    mkdirSync(OUTPUT, { recursive: true });
    const shot = path.join(OUTPUT, "dashboard.png");
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`screenshot: ${path.relative(ROOT, shot)}`);
    assert.deepEqual(errors, []);
  } finally {
    await browser.close();
  }
});
