// The demo page in a real browser: headless Chromium (Debian's package) driven by
// playwright-core picks a file, the page uploads it, polls, and shows the tags.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

import { startPipeline, readWorkerConfig, ROOT } from "../local/pipeline.mjs";
import { LABELS } from "../local/ai-stub.mjs";
import { status } from "../local/contract.mjs";
import { encodePng } from "./support/png.mjs";
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
  await page.getByText("unauthorized", { exact: false }).waitFor({ timeout: 10_000 });

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

test("the page is usable from the keyboard", async () => {
  const page = await browser.newPage();
  await page.goto(p.url.href);
  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement?.id);
  assert.equal(focused, "file", "the file picker is the first focus stop");
  assert.equal(await page.getByLabel("API token").count(), 1);
});
