// The demo page in a real browser: headless Chromium (Debian's package) driven by
// playwright-core picks a file, the page uploads it, follows it (live updates over a
// WebSocket, polling only without one), and shows the tags; the gallery lists images with
// thumbnails fetched with the token, filters by tag and deletes, and changes as events come.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

import { startPipeline, readWorkerConfig, ROOT } from "../local/pipeline.mjs";
import { LABELS, answer } from "../local/ai-stub.mjs";
import { status } from "../local/contract.mjs";
import { encodePng } from "../local/png.mjs";
import { FAST_QUEUES } from "./support/helpers.mjs";

const CHROMIUM = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";
const OUTPUT = path.join(ROOT, "test-output");

let p;
let browser;
before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: scripts/test.sh installs Debian's chromium`);
  p = await startPipeline({ queues: FAST_QUEUES, vars: { upload: { API_TOKEN: "demo-token" } } });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
});
after(async () => {
  await browser?.close();
  await p?.close();
});

test("the demo page uploads an image and shows its tags", async () => {
  const page = await browser.newPage({ viewport: { width: 900, height: 720 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const res = await page.goto(p.url.href);
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-type"], /text\/html/);

  // Without the token the API refuses, and the page says so.
  const image = encodePng(64, 48, (x, y) => [x * 4, y * 5, 128]);
  await page.setInputFiles("#file", { name: "fixture.png", mimeType: "image/png", buffer: image });
  await page.locator("#detail", { hasText: "unauthorized" }).waitFor({ timeout: 10_000 });
  await page.locator("#gallery-status", { hasText: "unauthorized" }).waitFor({ timeout: 10_000 });

  // With it, the image is uploaded, queued, tagged and shown.
  await page.getByLabel("API token").fill("demo-token");
  await page.setInputFiles("#file", { name: "fixture.png", mimeType: "image/png", buffer: image });
  await page.locator("li.tag").first().waitFor({ timeout: 20_000 });
  const shown = await page.locator("#status").textContent();
  assert.equal(shown, status.done);
  const minScore = Number(readWorkerConfig("tagger").vars.MIN_SCORE);
  const tags = await page.locator("li.tag .name").allTextContents();
  assert.deepEqual(tags, LABELS.filter((l) => l.score > minScore).map((l) => l.label));
  const labels = await page.locator("ul.labels li").count();
  assert.equal(labels, LABELS.length);
  const id = await page.locator("#image-id").textContent();
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.deepEqual(p.ai.callsFor(image).map((c) => c.length), [image.length]);

  mkdirSync(OUTPUT, { recursive: true });
  const shot = path.join(OUTPUT, "demo-page.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${path.relative(ROOT, shot)}`);
  assert.deepEqual(errors, []);
});

/** A page with the token filled in, collecting page errors and console errors. */
async function galleryPage() {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Console errors include CSP violations; the 401s of the listing the page tries before the
  // token is filled in are expected.
  page.on("console", (m) => m.type() === "error" && !/status of 401/.test(m.text()) && errors.push(m.text()));
  await page.goto(p.url.href);
  await page.getByLabel("API token").fill("demo-token");
  return { page, errors };
}

/** Uploads through the page and waits until it shows the image done. */
async function uploadThroughPage(page, name, image) {
  await page.setInputFiles("#file", { name, mimeType: "image/png", buffer: image });
  await page.locator("#status", { hasText: status.done }).waitFor({ timeout: 20_000 });
  return page.locator("#image-id").textContent();
}

function cards(page) {
  return page.locator("#grid > li.item");
}

async function idsShown(page) {
  return cards(page).evaluateAll((items) => items.map((li) => li.dataset.id));
}

test("the gallery shows thumbnails, filters by tag and deletes after asking", async () => {
  const { page, errors } = await galleryPage();
  const meadow = encodePng(60, 40, (x, y) => [40, 160 + (x % 60), 60 + y]);
  const harbour = encodePng(60, 40, (x, y) => [30 + y, 90, 200 - x]);
  p.ai.script(meadow, answer([{ label: "Meadow", score: 0.95 }, { label: "Sheep", score: 0.9 }]));
  p.ai.script(harbour, answer([{ label: "Harbour", score: 0.97 }, { label: "Boat", score: 0.85 }]));
  // Two retrievers: no tag, but the category `dog` (0.9).
  const puppy = encodePng(60, 40, (x, y) => [200 - y, 150, 40 + x]);
  p.ai.script(puppy, answer([{ label: "GOLDEN RETRIEVER", score: 0.5 }, { label: "LABRADOR RETRIEVER", score: 0.4 }]));
  const puppyId = await uploadThroughPage(page, "puppy.png", puppy);
  const meadowId = await uploadThroughPage(page, "meadow.png", meadow);
  const harbourId = await uploadThroughPage(page, "harbour.png", harbour);

  // Both are listed, newest first, with thumbnails fetched with the token (blob URLs).
  await page.locator(`#grid > li[data-id="${meadowId}"]`).waitFor();
  const ids = await idsShown(page);
  assert.deepEqual(ids.slice(0, 2), [harbourId, meadowId]);
  const thumb = page.locator(`#grid > li[data-id="${harbourId}"] img`);
  await page.waitForFunction((id) => {
    const img = document.querySelector(`#grid > li[data-id="${id}"] img`);
    return img && img.src.startsWith("blob:") && img.complete && img.naturalWidth === 60;
  }, harbourId);
  assert.match(await thumb.getAttribute("alt"), /Harbour/);

  // The tag cloud counts tags; a chip filters by its tag.
  await page.locator("#cloud button", { hasText: "boat" }).click();
  await page.waitForFunction(() => document.querySelectorAll("#grid > li.item").length === 1);
  assert.deepEqual(await idsShown(page), [harbourId]);
  assert.equal(await page.inputValue("#q"), "boat");
  // Categories are offered as filters too (dashed chips): `dog` finds the retrievers.
  await page.locator("#cloud button.category", { hasText: /^dog\d+$/ }).click();
  await page.waitForFunction((id) => {
    const items = [...document.querySelectorAll("#grid > li.item")];
    return items.length === 1 && items[0].dataset.id === id;
  }, puppyId);
  assert.equal(await page.locator(`#grid > li[data-id="${puppyId}"] .chips button.category`, { hasText: /^retriever$/ }).count(), 1);
  // The search box takes tags, and finds the images with all of them, in any case.
  await page.fill("#q", "MEADOW, sheep");
  await page.press("#q", "Enter");
  await page.waitForFunction((id) => {
    const items = [...document.querySelectorAll("#grid > li.item")];
    return items.length === 1 && items[0].dataset.id === id;
  }, meadowId);
  await page.fill("#q", "meadow, boat");
  await page.press("#q", "Enter");
  await page.locator("#gallery-status", { hasText: "No image is tagged" }).waitFor();
  // A tag chip on a card filters too.
  await page.locator("#clear").click();
  await page.locator(`#grid > li[data-id="${meadowId}"] .chips button`, { hasText: "Sheep" }).click();
  await page.waitForFunction(() => document.querySelectorAll("#grid > li.item").length === 1);
  await page.locator("#clear").click();
  await page.locator(`#grid > li[data-id="${meadowId}"]`).waitFor();

  // Delete asks first: dismissed, nothing happens; accepted, the image is gone everywhere.
  const asked = [];
  // Wait for the dialog itself (not a fixed 200 ms), then see that nothing was deleted.
  const dismissed = page.waitForEvent("dialog").then((d) => {
    asked.push(d.message());
    return d.dismiss();
  });
  await page.locator(`#grid > li[data-id="${meadowId}"] button.delete`).click();
  await dismissed;
  assert.equal(asked.length, 1);
  assert.equal(await page.locator(`#grid > li[data-id="${meadowId}"]`).count(), 1);
  const kept = await p.fetch(`/images/${meadowId}`, { headers: { authorization: "Bearer demo-token" } });
  assert.equal(kept.status, 200, "not deleted");
  page.once("dialog", (d) => d.accept());
  await page.locator(`#grid > li[data-id="${meadowId}"] button.delete`).click();
  await page.locator(`#grid > li[data-id="${meadowId}"]`).waitFor({ state: "detached" });
  const res = await p.fetch(`/images/${meadowId}`, { headers: { authorization: "Bearer demo-token" } });
  assert.equal(res.status, 404);
  await page.locator("#cloud button", { hasText: "sheep" }).waitFor({ state: "detached" });

  mkdirSync(OUTPUT, { recursive: true });
  const shot = path.join(OUTPUT, "gallery.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot: ${path.relative(ROOT, shot)}`);
  assert.deepEqual(errors, []);
});

test("the gallery works from the keyboard", async () => {
  const { page, errors } = await galleryPage();
  const image = encodePng(30, 30, (x, y) => [200, x * 8, y * 8]);
  p.ai.script(image, answer([{ label: "Keyboard Cat", score: 0.96 }]));
  const id = await uploadThroughPage(page, "keys.png", image);
  await page.locator(`#grid > li[data-id="${id}"]`).waitFor();
  // Search: focus the box, type, Enter.
  await page.focus("#q");
  await page.keyboard.type("keyboard cat");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => document.querySelectorAll("#grid > li.item").length === 1);
  // Tab from the search box reaches the card's tag chip, then its delete button (past the
  // cloud's chips: categories first, then tags).
  const reached = [];
  for (let i = 0; i < 40; i++) {
    await page.keyboard.press("Tab");
    reached.push(await page.evaluate(() => document.activeElement?.className + ":" + document.activeElement?.textContent));
    if (reached.at(-1).startsWith("btn danger delete")) break;
  }
  assert.ok(reached.some((r) => r.startsWith("chip") && r.includes("Keyboard Cat")), reached.join(" | "));
  assert.ok(reached.at(-1).startsWith("btn danger delete"), reached.join(" | "));
  page.once("dialog", (d) => d.accept());
  await page.keyboard.press("Enter");
  await page.locator(`#grid > li[data-id="${id}"]`).waitFor({ state: "detached" });
  // Focus stays in the gallery.
  assert.equal(await page.evaluate(() => document.activeElement?.id), "gallery-title");
  assert.deepEqual(errors, []);
});

test("the page is usable from the keyboard", async () => {
  const page = await browser.newPage();
  await page.goto(p.url.href);
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.id);
  assert.equal(focused, "file", "the file picker is the first focus stop");
  assert.equal(await page.getByLabel("API token").count(), 1);
});

test("the gallery follows an image to done over the socket, with no GET /images/{id} after it opened", async () => {
  const { page, errors } = await galleryPage();
  // The socket opens with a ticket once the token is set (the page polls only until then).
  await page.waitForFunction(() => document.body.dataset.live === "open", null, { timeout: 20_000 });
  const polls = [];
  const sockets = [];
  page.on("request", (r) => {
    if (r.method() === "GET" && /\/images\/[0-9a-f-]{36}$/.test(new URL(r.url()).pathname)) polls.push(r.url());
  });
  page.on("websocket", (ws) => sockets.push(ws.url()));
  // Every status a card shows, in order, as the socket's events change the gallery.
  await page.evaluate(() => {
    window.cardStates = [];
    const seen = () => {
      for (const li of document.querySelectorAll("#grid > li.item")) {
        const entry = `${li.dataset.id}:${li.querySelector(".status")?.textContent}`;
        if (!window.cardStates.includes(entry)) window.cardStates.push(entry);
      }
    };
    new MutationObserver(seen).observe(document.getElementById("grid"), { childList: true, subtree: true });
  });
  const image = encodePng(40, 30, (x, y) => [x * 6, 90, y * 8]);
  p.ai.script(image, answer([{ label: "Lighthouse", score: 0.94 }]));
  await page.setInputFiles("#file", { name: "live.png", mimeType: "image/png", buffer: image });
  await page.locator("#status", { hasText: status.done }).waitFor({ timeout: 20_000 });
  const id = await page.locator("#image-id").textContent();
  assert.deepEqual(await page.locator("li.tag .name").allTextContents(), ["Lighthouse"]);
  // The gallery lists it as done (its listing is GET /images, not a poll of the image).
  await page.locator(`#grid > li[data-id="${id}"] .status.done`).waitFor({ timeout: 20_000 });
  const states = (await page.evaluate(() => window.cardStates)).filter((e) => e.startsWith(id));
  assert.deepEqual(states, [`${id}:${status.queued}`, `${id}:${status.done}`], "the card appeared queued, then turned done");
  assert.deepEqual(polls, [], "no poll of the image once the socket was open");
  assert.deepEqual(sockets, [], "the same socket throughout");
  console.log(`# GET /images/{id} after the socket opened: ${polls.length}`);
  assert.deepEqual(errors, []);
});
