// Webhooks end to end: real Node HTTP receivers that verify every delivery with the
// Standard Webhooks reference library (`standardwebhooks`), against both workers in
// Miniflare with the D1 outbox, the notification queue and its consumer.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { Webhook } from "standardwebhooks";
import { parse as parseYaml } from "yaml";
import { Ajv2020 } from "ajv/dist/2020.js";

import { ROOT, startPipeline, waitFor } from "../local/pipeline.mjs";
import { aiError, aiErrorCode } from "../local/ai-stub.mjs";
import { apiError, apiStatus, bindings, contract, namesOf, queues, status, tagError } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { FAST_QUEUES, bucketKeys, upload, withPipeline } from "./support/helpers.mjs";

const hooks = contract.webhooks;
const [TAGGED, FAILED] = hooks.events;
const [PENDING, DELIVERED, GAVE_UP] = hooks.deliveryStates;
const CALLBACK = hooks.callbackHeader;
/** The `outcome` of the tagger's delivery log lines: `delivered`, `retry`, `failed`, ... */
const delivery = namesOf(hooks.outcomes, "delivery outcome");
/**
 * Deliveries are retried until this long after the event: short, for the horizon test, but
 * longer than one attempt's 10 s time limit, for the time-out test.
 */
const HORIZON_S = 15;
/** The callback policy both workers get (local receivers are plain http on 127.0.0.1). */
const CALLBACK_POLICY = Object.freeze({
  ALLOW_INSECURE_CALLBACKS: "true",
  WEBHOOK_ALLOWED_HOSTS: "127.0.0.1, localhost, hooks.example.com",
});

const secret = () => `whsec_${randomBytes(32).toString("base64")}`;
const NEW_SECRET = secret();
const OLD_SECRET = secret();

/**
 * A webhook receiver on 127.0.0.1. Every request is recorded with the result of verifying it
 * against `secrets` (it verifies if any one of them does, as a receiver mid-rotation would);
 * `respond(n)` gives the answer to the n-th request (from 1): a status, or
 * `{ status, body, headers }`, or `{ hang: true }` to never answer.
 */
async function startReceiver({ secrets = [NEW_SECRET], respond = () => 200 } = {}) {
  const deliveries = [];
  const hanging = new Set();
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      let payload = null;
      const errors = [];
      for (const s of secrets) {
        try {
          payload = new Webhook(s).verify(body, req.headers);
          break;
        } catch (e) {
          errors.push(e.message);
        }
      }
      const n = deliveries.length + 1;
      const answer = respond(n);
      const { status: code = 200, body: text, headers = {}, hang = false } = typeof answer === "number" ? { status: answer } : answer;
      deliveries.push({ n, at: Date.now(), method: req.method, url: req.url, headers: req.headers, body, payload, errors, status: hang ? null : code });
      if (hang) {
        hanging.add(res);
        return;
      }
      res.writeHead(code, { "content-type": "text/plain", ...headers });
      res.end(text ?? (code < 300 ? "thanks" : `no thanks (${code})`));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}/hooks/images?source=test`,
    deliveries,
    close: () => {
      for (const res of hanging) res.destroy();
      server.closeAllConnections?.();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A URL where nothing listens: a port that was free a moment ago. */
async function deadUrl() {
  const server = http.createServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return `http://127.0.0.1:${port}/hook`;
}

/** Polls `GET /images/{id}` until its delivery record is in one of `states`. */
async function waitForDelivery(p, id, states = [DELIVERED, GAVE_UP], timeoutMs = 30_000) {
  return waitFor(
    async () => {
      const record = await (await p.fetch(`/images/${id}`)).json();
      return states.includes(record.notification?.state) ? record : null;
    },
    { timeoutMs, what: `the webhook of ${id} to be ${states.join(" or ")}` },
  );
}

/** The tagger's delivery log lines so far, parsed. */
function notifyLines(p) {
  return p.lines
    .filter((l) => l.includes(`"${contract.logEvents.notify}"`))
    .map((l) => JSON.parse(l.slice(l.indexOf("{"))));
}

/** The first delivery log line (so far or to come) about image `id` with `outcome`. */
async function notifyLine(p, id, outcome, timeoutMs = 15_000) {
  const line = await p.waitForLine(
    (l) => l.includes(`"${contract.logEvents.notify}"`) && l.includes(id) && JSON.parse(l.slice(l.indexOf("{"))).outcome === outcome,
    { timeoutMs, what: `a delivery line ${outcome} about ${id}` },
  );
  return JSON.parse(line.slice(line.indexOf("{")));
}

/**
 * Proves that no delivery is on its way: every notification message sent so far, or retried
 * with a delay of at most `delaySeconds`, has been handled and logged. (The first retry of a
 * delivery comes after WEBHOOK_RETRY_BASE_SECONDS, 1 s here, with at most that much jitter.)
 */
const noMoreDeliveries = (p, delaySeconds = 3) => p.barrier({ queue: queues.notifications, delaySeconds });

// The OpenAPI document's schemas (docs/openapi.yaml), to check payloads and records against.
const doc = parseYaml(readFileSync(path.join(ROOT, "docs/openapi.yaml"), "utf8"));
const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
ajv.addFormat("uuid", /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
ajv.addFormat("date-time", { type: "string", validate: (t) => !Number.isNaN(Date.parse(t)) });
ajv.addSchema({
  $id: "urn:image-tagger:webhooks-openapi",
  $defs: JSON.parse(JSON.stringify(doc.components.schemas).replaceAll('"#/components/schemas/', '"#/$defs/')),
});
/** Asserts that `value` matches the document's schema `name`. */
function assertSchema(name, value) {
  const check = ajv.getSchema(`urn:image-tagger:webhooks-openapi#/$defs/${name}`);
  assert.ok(check(value), `${name}: ${ajv.errorsText(check.errors)}\n${JSON.stringify(value)}`);
}

let p;
let receiver;
before(async () => {
  receiver = await startReceiver();
  p = await startPipeline({
    queues: FAST_QUEUES,
    vars: {
      upload: CALLBACK_POLICY,
      tagger: {
        // The tagger checks each stored URL again, against the same policy.
        ...CALLBACK_POLICY,
        WEBHOOK_SECRET: NEW_SECRET,
        WEBHOOK_SECRET_PREVIOUS: OLD_SECRET,
        WEBHOOK_RETRY_BASE_SECONDS: "1",
        WEBHOOK_GIVE_UP_AFTER_SECONDS: String(HORIZON_S),
      },
    },
  });
});
after(async () => {
  await p?.close();
  await receiver?.close();
});

/** Uploads with a callback; returns the image id. */
async function uploadWithCallback(url, bytes = png(512)) {
  return upload(p, bytes, { [CALLBACK]: url });
}

test("a tagged image delivers one verified image.tagged event", async () => {
  const from = receiver.deliveries.length;
  const id = await uploadWithCallback(receiver.url);
  const record = await waitForDelivery(p, id);
  assert.equal(record.status, status.done);
  const mine = receiver.deliveries.slice(from);
  assert.equal(mine.length, 1, "one delivery");
  const [d] = mine;
  assert.deepEqual(d.errors, [], "verified with the current secret");
  assert.equal(d.method, "POST");
  assert.equal(d.headers["content-type"], "application/json");
  assert.match(d.headers["webhook-id"], /^msg_[A-Za-z0-9_]+$/);
  assert.match(d.headers["webhook-timestamp"], /^\d+$/);
  assert.ok(Math.abs(Number(d.headers["webhook-timestamp"]) - Date.now() / 1000) < 60, "signed now");
  // (Built field by field: tests/config.test.mjs allows the KV key prefix only in the contract.)
  const data = { imageId: id, status: status.done };
  data.tags = record.tags;
  data.categories = record.categories;
  data.labels = record.labels;
  data.statusUrl = `/images/${id}`;
  assert.deepEqual(d.payload, { type: TAGGED, timestamp: record.processedAt, data });
  assertSchema("WebhookEvent", d.payload);
  assertSchema("TagRecord", record);
  // The delivery record on GET.
  assert.equal(record.notification.eventId, d.headers["webhook-id"]);
  assert.equal(record.notification.type, TAGGED);
  assert.equal(record.notification.attempts, 1);
  assert.equal(record.notification.lastStatus, 200);
  assert.ok(Date.parse(record.notification.deliveredAt) >= Date.parse(record.processedAt));
  assert.equal(record.notification.lastError, undefined);
  // No second delivery turns up later: the delivery was logged, and a barrier on the
  // notification queue proves nothing else (a retry or a second message) is pending.
  await notifyLine(p, id, delivery.delivered);
  await noMoreDeliveries(p);
  assert.equal(receiver.deliveries.length, from + 1);
});

test("a failed image delivers one verified image.failed event", async () => {
  const from = receiver.deliveries.length;
  const image = png(600);
  p.ai.script(image, aiError(aiErrorCode("Invalid data")));
  const id = await uploadWithCallback(receiver.url, image);
  const record = await waitForDelivery(p, id);
  assert.equal(record.status, status.failed);
  const mine = receiver.deliveries.slice(from);
  assert.equal(mine.length, 1);
  assert.deepEqual(mine[0].errors, []);
  const data = { imageId: id, status: status.failed };
  data.tags = [];
  data.error = record.error;
  data.statusUrl = `/images/${id}`;
  assert.deepEqual(mine[0].payload, { type: FAILED, timestamp: record.processedAt, data });
  assert.equal(mine[0].payload.data.error.code, tagError.invalid_image);
  assertSchema("WebhookEvent", mine[0].payload);
  assertSchema("TagRecord", record);
  assert.equal(record.notification.type, FAILED);
  assert.equal(record.notification.state, DELIVERED);
});

test("503 twice then 200: the same webhook-id three times, 3 attempts, delivered", async () => {
  // The 503s come with a 64 KiB body, of which only the first KiB is read.
  const flaky = await startReceiver({ respond: (n) => (n <= 2 ? { status: 503, body: "e".repeat(64 * 1024) } : 200) });
  try {
    const id = await uploadWithCallback(flaky.url);
    // While it retries, GET shows the pending record with the last error.
    const pending = await waitFor(
      async () => {
        const r = await (await p.fetch(`/images/${id}`)).json();
        // (An attempt is counted when it starts; its answer is recorded when it ends.)
        return r.notification?.state === PENDING && r.notification.lastStatus ? r : null;
      },
      { what: "a pending delivery after a 503" },
    );
    assertSchema("TagRecord", pending);
    assert.equal(pending.notification.lastStatus, 503);
    // The status alone: the receiver's body (which could be an internal page) is never kept.
    assert.equal(pending.notification.lastError, "HTTP 503");
    assert.ok(pending.notification.nextAttemptAt);

    const record = await waitForDelivery(p, id);
    assert.equal(record.notification.state, DELIVERED);
    assert.equal(record.notification.attempts, 3);
    assert.equal(record.notification.lastStatus, 200);
    assert.deepEqual(flaky.deliveries.map((d) => d.status), [503, 503, 200]);
    const ids = new Set(flaky.deliveries.map((d) => d.headers["webhook-id"]));
    assert.equal(ids.size, 1, "the same webhook-id on every attempt");
    assert.deepEqual([...ids], [record.notification.eventId]);
    for (const d of flaky.deliveries) assert.deepEqual(d.errors, [], `attempt ${d.n} verifies`);
    assert.equal(new Set(flaky.deliveries.map((d) => d.body)).size, 1, "the same body on every attempt");
    // Growing backoff (base 1 s, doubling): at least 1 s, then at least 2 s.
    const [a, b, c] = flaky.deliveries.map((d) => d.at);
    assert.ok(b - a >= 900, `first wait ${b - a} ms`);
    assert.ok(c - b >= 1900, `second wait ${c - b} ms`);
  } finally {
    await flaky.close();
  }
});

test("410: exactly one attempt, recorded as failed; the image stays done", async () => {
  const gone = await startReceiver({ respond: () => 410 });
  try {
    const id = await uploadWithCallback(gone.url);
    const record = await waitForDelivery(p, id);
    assert.equal(record.status, status.done);
    assert.equal(record.notification.state, GAVE_UP);
    assert.equal(record.notification.attempts, 1);
    assert.equal(record.notification.lastStatus, 410);
    assert.equal(record.notification.lastError, "HTTP 410");
    assert.ok(!JSON.stringify(record).includes("no thanks"), "the receiver's body is never shown");
    await notifyLine(p, id, delivery.failed);
    await noMoreDeliveries(p);
    assert.equal(gone.deliveries.length, 1, "never retried");
  } finally {
    await gone.close();
  }
});

test("a redirect is not followed: one attempt, recorded as failed", async () => {
  const other = await startReceiver();
  const moved = await startReceiver({ respond: () => ({ status: 307, headers: { location: other.url } }) });
  try {
    const id = await uploadWithCallback(moved.url);
    const record = await waitForDelivery(p, id);
    assert.equal(record.notification.state, GAVE_UP);
    assert.equal(record.notification.attempts, 1);
    assert.equal(record.notification.lastStatus, 307);
    await notifyLine(p, id, delivery.failed);
    await noMoreDeliveries(p);
    assert.equal(moved.deliveries.length, 1);
    assert.equal(other.deliveries.length, 0, "the redirect was not followed");
  } finally {
    await moved.close();
    await other.close();
  }
});

test("a receiver that does not answer within 10 s is retried", async () => {
  const slow = await startReceiver({ respond: (n) => (n === 1 ? { hang: true } : 200) });
  try {
    const id = await uploadWithCallback(slow.url);
    const record = await waitForDelivery(p, id, [DELIVERED, GAVE_UP], 40_000);
    assert.equal(record.notification.state, DELIVERED);
    assert.equal(record.notification.attempts, 2);
    const [first, second] = slow.deliveries;
    assert.ok(second.at - first.at >= hooks.timeoutMs, `retried ${second.at - first.at} ms after the first attempt`);
    const retry = notifyLines(p).find((l) => l.imageId === id && l.outcome === delivery.retry);
    assert.match(retry.error, /no answer within 10 s/);
    // The attempt ended by its time limit (its message says so), not before it.
    assert.ok(retry.durationMs >= hooks.timeoutMs - 100, `${retry.durationMs} ms`);
  } finally {
    await slow.close();
  }
});

test("a receiver down until the horizon: the delivery fails, the image stays done", async () => {
  const started = Date.now();
  const id = await uploadWithCallback(await deadUrl());
  const record = await waitForDelivery(p, id, [DELIVERED, GAVE_UP], (HORIZON_S + 20) * 1000);
  assert.equal(record.status, status.done, "a failed delivery never fails the image");
  assert.equal(record.notification.state, GAVE_UP);
  assert.ok(record.notification.attempts >= 3, `attempts: ${record.notification.attempts}`);
  assert.equal(record.notification.lastStatus, undefined);
  assert.equal(record.notification.lastError, "could not connect to the receiver", "a fixed text, not the platform's");
  assertSchema("TagRecord", record);
  assert.ok(Date.now() - started >= HORIZON_S * 1000, "retried until the horizon");
  // The outbox records the end before the line is logged: wait for the line.
  await notifyLine(p, id, delivery.failed);
  const lines = notifyLines(p).filter((l) => l.imageId === id);
  assert.equal(lines.at(-1).outcome, delivery.failed);
  assert.ok(lines.slice(0, -1).every((l) => l.outcome === delivery.retry), JSON.stringify(lines));
});

test("two secrets: a receiver that knows only the old one still verifies", async () => {
  const old = await startReceiver({ secrets: [OLD_SECRET] });
  try {
    const id = await uploadWithCallback(old.url);
    await waitForDelivery(p, id);
    assert.equal(old.deliveries.length, 1);
    const [d] = old.deliveries;
    assert.deepEqual(d.errors, [], "verified with the old secret");
    assert.equal(d.payload.data.imageId, id);
    const signatures = d.headers["webhook-signature"].split(" ");
    assert.equal(signatures.length, 2, "one signature per secret");
    assert.ok(signatures.every((s) => s.startsWith("v1,")));
    // And verification means something: a third secret does not verify it.
    assert.throws(() => new Webhook(secret()).verify(d.body, d.headers));
    assert.throws(() => new Webhook(NEW_SECRET).verify(d.body.replace(id, "x"), d.headers));
  } finally {
    await old.close();
  }
});

test("an upload without a callback has no notification and keeps the KV fast path", async () => {
  const id = await upload(p, png(300));
  const record = await p.waitForStatus(id);
  assert.equal(record.status, status.done);
  assert.equal("notification" in record, false);
  // KV is written after D1, which the status may have come from: wait for it.
  const kv = await waitFor(() => p.record(id), { what: "the record in KV" });
  assert.equal("notification" in kv, false, "no marker in KV: GET needs no D1 read");
  const rows = await (await p.db()).prepare("SELECT count(*) AS n FROM notifications WHERE image_id = ?1").bind(id).first();
  assert.equal(rows.n, 0);
});

test("bad callback URLs are refused with 400 before anything is stored", async () => {
  const db = await p.db();
  const count = async () => (await db.prepare("SELECT count(*) AS n FROM images").first()).n;
  const imagesBefore = await count();
  const objectsBefore = await bucketKeys(p);
  const bad = {
    "plain http": "http://hooks.example.com/in",
    "ftp scheme": "ftp://hooks.example.com/in",
    credentials: "https://user:secret@hooks.example.com/in",
    "IPv4 literal": "https://93.184.216.34/in",
    "decimal IPv4": "https://2130706433/in",
    "hex IPv4 with a trailing dot": "https://0x7f.0.0.1./in",
    "IPv6 literal": "https://[::1]/in",
    "too long": `https://hooks.example.com/${"a".repeat(hooks.maxUrlLength)}`,
    "a host not on the allow-list": "https://other.example.net/in",
    "http to another local name": "http://localhost.example.com/in",
    "https to localhost on a service port": "https://localhost:6379/",
    "localhost in capitals with a trailing dot": "https://LocalHost./in",
    "a name under .localhost": "https://redis.localhost/in",
    "a single-label host": "https://intranet/in",
    "a .local name": "https://printer.local/in",
    "a .internal name": "https://db.internal/in",
    "a .home.arpa name": "https://nas.home.arpa/in",
    "a .test name": "https://hooks.test/in",
    "a port the allow-list does not name": "https://hooks.example.com:8443/in",
    empty: "",
  };
  for (const [what, url] of Object.entries(bad)) {
    const res = await p.fetch("/images", { method: "POST", body: png(200), headers: { [CALLBACK]: url } });
    const body = await res.json();
    assert.equal(res.status, apiStatus(apiError.invalid_callback_url), `${what}: ${JSON.stringify(body)}`);
    assert.equal(body.error.code, apiError.invalid_callback_url, what);
    assert.ok(body.error.message.length > 0);
  }
  assert.equal(await count(), imagesBefore, "no image recorded");
  assert.deepEqual(await bucketKeys(p), objectsBefore, "no object stored");
});

test("WEBHOOK_URL is the default callback; a delivery whose enqueue failed is sent by the reconciler", async () => {
  const hook = await startReceiver();
  try {
    await withPipeline(
      {
        faults: [bindings.notifyQueue],
        vars: {
          upload: { WEBHOOK_URL: hook.url, ALLOW_INSECURE_CALLBACKS: "true" },
          tagger: { WEBHOOK_SECRET: NEW_SECRET, WEBHOOK_RETRY_BASE_SECONDS: "1", STUCK_AFTER_SECONDS: "0", ALLOW_INSECURE_CALLBACKS: "true" },
        },
      },
      async (q) => {
        // The crash between the D1 transition and the enqueue, as the tagger sees it.
        q.faults[bindings.notifyQueue].fail({ op: "send", times: 1 });
        const id = await upload(q, png(400));
        const record = await q.waitForStatus(id);
        assert.equal(record.status, status.done);
        assert.equal(record.notification.state, PENDING, "recorded with the transition");
        assert.equal(record.notification.attempts, 0);
        // The injected failure happened, and nothing reached the notification queue.
        // (The tagger enqueues after writing the status: wait for the refused send.)
        const refused = () => q.faults[bindings.notifyQueue].opsMatching({ op: "send" }).filter((o) => o.failed).length;
        await waitFor(() => refused() === 1, { what: "the tagger's refused enqueue" });
        await q.barrier({ queue: queues.notifications });
        assert.equal(hook.deliveries.length, 0, "the message was never sent");

        await q.scheduled("tagger");
        const delivered = await waitForDelivery(q, id);
        assert.equal(delivered.notification.state, DELIVERED);
        assert.equal(hook.deliveries.length, 1);
        assert.deepEqual(hook.deliveries[0].errors, []);
        assert.equal(hook.deliveries[0].payload.data.imageId, id);
        assert.ok(q.lines.some((l) => l.includes(`"${contract.logEvents.reconcileNotification}"`) && l.includes(id)));
      },
    );
  } finally {
    await hook.close();
  }
});

test("a failure's record and webhook carry a fixed text, never the AI's own error text", async () => {
  const from = receiver.deliveries.length;
  const image = png(640);
  const distinctive = "internal-detail-9f1c at 10.0.0.7";
  const invalid = aiError(aiErrorCode("Invalid data"));
  const { code } = invalid.error;
  p.ai.script(image, { ...invalid, error: { ...invalid.error, message: `${code}: ${distinctive}` } });
  const id = await uploadWithCallback(receiver.url, image);
  const record = await waitForDelivery(p, id);
  assert.equal(record.error.code, tagError.invalid_image);
  assert.ok(!JSON.stringify(record).includes("internal-detail-9f1c"), JSON.stringify(record));
  const mine = receiver.deliveries.slice(from).filter((d) => d.payload?.data?.imageId === id);
  assert.equal(mine.length, 1);
  assert.deepEqual(mine[0].payload.data.error, record.error);
  assert.ok(!mine[0].body.includes("internal-detail-9f1c"), mine[0].body);
  // The detail is in the tagger's log, for the operator.
  assert.ok(p.lines.some((l) => l.includes("internal-detail-9f1c") && l.includes(id)), "logged");
});

test("a stored URL that the policy of delivery time refuses is given up without a request", async () => {
  const hook = await startReceiver();
  try {
    await withPipeline(
      {
        vars: {
          upload: CALLBACK_POLICY,
          // The tagger's policy no longer allows plain http to 127.0.0.1.
          tagger: { WEBHOOK_SECRET: NEW_SECRET, WEBHOOK_ALLOWED_HOSTS: "hooks.example.com" },
        },
      },
      async (q) => {
        const id = await upload(q, png(300), { [CALLBACK]: hook.url });
        const record = await waitForDelivery(q, id);
        assert.equal(record.status, status.done);
        assert.equal(record.notification.state, GAVE_UP);
        assert.equal(record.notification.lastStatus, undefined);
        assert.match(record.notification.lastError, /^not sent: the callback URL is refused/);
        assert.equal(hook.deliveries.length, 0, "never sent");
      },
    );
  } finally {
    await hook.close();
  }
});
