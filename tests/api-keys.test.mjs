// Several clients, one deployment (issue 20), against both workers in Miniflare: an operator
// key and client keys made over the API; each client sees only its own images through every
// route (another's is a 404 exactly as one that does not exist) and gets webhooks only for
// them; scopes, revocation, the per-client rate limit (the Rate Limiting binding, which
// Miniflare runs), daily quotas, Idempotency-Keys per client, and the API closed without an
// operator key.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHash, randomBytes } from "node:crypto";

import { startPipeline, waitFor } from "../local/pipeline.mjs";
import { answer } from "../local/ai-stub.mjs";
import { apiError, bindings, contract, status, varName } from "../local/contract.mjs";
import { png } from "../local/images.mjs";
import { FAST_QUEUES, withPipeline } from "./support/helpers.mjs";

const TOKEN = "operator-key-of-the-api-keys-test";
const OP = { authorization: `Bearer ${TOKEN}` };
/** Uploads per client and minute: small, so that the rate-limit test reaches it quickly. */
const RATE_LIMIT = 6;
const UNKNOWN_ID = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
const [WRITE, READ, DELETE] = contract.auth.scopes;

/** A receiver of webhooks on 127.0.0.1 that records every body. */
async function startReceiver() {
  const bodies = [];
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      bodies.push(Buffer.concat(chunks).toString("utf8"));
      res.writeHead(200).end("thanks");
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/hook`,
    bodies,
    close: () => {
      server.closeAllConnections?.();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

let p;
let hookA;
let hookB;
before(async () => {
  [hookA, hookB] = await Promise.all([startReceiver(), startReceiver()]);
  p = await startPipeline({
    queues: FAST_QUEUES,
    vars: {
      upload: { API_TOKEN: TOKEN, ALLOW_INSECURE_CALLBACKS: "true" },
      // The tagger checks each stored callback URL again, with the same policy.
      tagger: { WEBHOOK_SECRET: `whsec_${randomBytes(32).toString("base64")}`, ALLOW_INSECURE_CALLBACKS: "true" },
    },
    workerOverrides: {
      upload: { ratelimits: { [bindings.uploadLimiter]: { simple: { limit: RATE_LIMIT, period: 60 } } } },
    },
  });
});
after(async () => {
  await p?.close();
  await hookA?.close();
  await hookB?.close();
});

/** A request's status, headers and raw body. */
async function call(method, path, { headers = {}, body } = {}) {
  const res = await p.fetch(path, { method, headers, body });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: text && /json/.test(res.headers.get("content-type") ?? "") ? JSON.parse(text) : null };
}

/** Makes a client key as the operator; returns the `201` answer. */
async function makeKey(request) {
  const res = await call("POST", "/admin/keys", { headers: { ...OP, "content-type": "application/json" }, body: JSON.stringify(request) });
  assert.equal(res.status, 201, res.text);
  return res.json;
}

const bearer = (key) => ({ authorization: `Bearer ${key.key}` });

/** Uploads as `headers`' caller; returns the image id (asserting 202). */
async function uploadAs(headers, bytes, extra = {}) {
  const res = await call("POST", "/images", { headers: { ...headers, ...extra }, body: bytes });
  assert.equal(res.status, 202, res.text);
  return res.json.imageId;
}

test("the operator makes, lists and revokes keys; the secret is shown once and D1 keeps only its SHA-256", async () => {
  const made = await makeKey({ name: "app A" });
  assert.ok(made.key.startsWith(contract.auth.keyPrefix) && made.key.length === contract.auth.keyLength, made.key);
  assert.ok(made.keyId.startsWith(contract.auth.keyIdPrefix));
  assert.deepEqual(made.scopes, contract.auth.scopes, "all scopes by default");
  assert.ok(Math.abs(Date.parse(made.createdAt) - Date.now()) < 60_000);

  const listed = await call("GET", "/admin/keys", { headers: OP });
  assert.equal(listed.status, 200);
  const entry = listed.json.keys.find((k) => k.keyId === made.keyId);
  assert.deepEqual(entry, { keyId: made.keyId, name: "app A", scopes: made.scopes, createdAt: made.createdAt });
  assert.ok(!listed.text.includes(made.key), "the listing never shows a secret");

  const rows = (await (await p.db()).prepare("SELECT * FROM api_keys WHERE key_id = ?1").bind(made.keyId).all()).results;
  assert.equal(rows.length, 1);
  assert.equal(rows[0].key_hash, createHash("sha256").update(made.key).digest("hex"));
  assert.ok(!JSON.stringify(rows).includes(made.key.slice(contract.auth.keyPrefix.length)), "the secret is not stored");

  // Only the operator manages keys and reads the usage: a client key gets 403, no key 401.
  for (const [method, path] of [["POST", "/admin/keys"], ["GET", "/admin/keys"], ["GET", "/admin/usage"], ["DELETE", `/admin/keys/${made.keyId}`]]) {
    const res = await call(method, path, { headers: bearer(made), body: method === "POST" ? "{}" : undefined });
    assert.equal(res.status, 403, `${method} ${path}: ${res.text}`);
    assert.equal(res.json.error.code, apiError.insufficient_scope);
    assert.equal((await call(method, path)).status, 401, `${method} ${path} without a key`);
  }

  // Bad requests.
  for (const body of ['{"name": ""}', '{"name": "x", "scopes": ["images:admin"]}', '{"name": "x", "dailyUploads": 0}', "not json", "x".repeat(5000)]) {
    const res = await call("POST", "/admin/keys", { headers: OP, body });
    assert.equal(res.status, 400, body.slice(0, 40));
    assert.equal(res.json.error.code, apiError.invalid_key_request);
  }
  for (const path of ["/admin/keys/key_00000000000000000000", "/admin/keys/nope"]) {
    const res = await call("DELETE", path, { headers: OP });
    assert.equal(res.status, 404, path);
    assert.equal(res.json.error.code, apiError.key_not_found);
  }
});

test("B never sees A's image through any route or webhook; A and the operator do", async () => {
  const a = await makeKey({ name: "client A" });
  const b = await makeKey({ name: "client B" });
  const imageA = png(331);
  const imageB = png(332);
  p.ai.script(imageA, answer([{ label: "Secret Ocelot A", score: 0.97 }]));
  p.ai.script(imageB, answer([{ label: "Open Beagle B", score: 0.96 }]));
  const idA = await uploadAs(bearer(a), imageA, { "callback-url": hookA.url });
  const idB = await uploadAs(bearer(b), imageB, { "callback-url": hookB.url });
  await p.waitForStatus(idA, undefined, { headers: bearer(a) });
  await p.waitForStatus(idB, undefined, { headers: bearer(b) });

  // Every route answers B exactly as for an image that does not exist.
  const asB = bearer(b);
  for (const [method, suffix] of [["GET", ""], ["HEAD", ""], ["GET", "/tags"], ["HEAD", "/tags"], ["GET", "/content"], ["HEAD", "/content"], ["DELETE", ""]]) {
    const theirs = await call(method, `/images/${idA}${suffix}`, { headers: asB });
    const none = await call(method, `/images/${UNKNOWN_ID}${suffix}`, { headers: asB });
    assert.equal(theirs.status, 404, `${method} ${suffix}: ${theirs.text}`);
    assert.equal(theirs.text, none.text, `${method} ${suffix}: the same body as a missing image`);
    assert.equal(theirs.headers.get("content-type"), none.headers.get("content-type"));
  }
  const searchB = await call("GET", "/images?limit=100", { headers: asB });
  assert.deepEqual(searchB.json.images.map((i) => i.imageId), [idB]);
  assert.deepEqual((await call("GET", "/images?tag=secret+ocelot+a", { headers: asB })).json.images, []);
  const counted = (tags) => tags.map(({ tag, count }) => ({ tag, count }));
  const tagsB = (await call("GET", "/tags?limit=1000", { headers: asB })).json.tags;
  assert.deepEqual(counted(tagsB), [{ tag: "open beagle b", count: 1 }]);

  // A sees its image everywhere, and the operator sees both.
  const asA = bearer(a);
  assert.equal((await call("GET", `/images/${idA}`, { headers: asA })).json.status, status.done);
  assert.equal((await call("GET", `/images/${idA}/content`, { headers: asA })).text.length > 0, true);
  const content = await p.fetch(`/images/${idA}/content`, { headers: asA });
  assert.deepEqual(Buffer.from(await content.arrayBuffer()), imageA);
  assert.deepEqual((await call("GET", "/images?tag=secret+ocelot+a", { headers: asA })).json.images.map((i) => i.imageId), [idA]);
  assert.deepEqual(counted((await call("GET", "/tags", { headers: asA })).json.tags), [{ tag: "secret ocelot a", count: 1 }]);
  const all = (await call("GET", "/images?limit=100", { headers: OP })).json.images.map((i) => i.imageId);
  assert.ok(all.includes(idA) && all.includes(idB));
  const cloud = (await call("GET", "/tags?limit=1000", { headers: OP })).json.tags.map((t) => t.tag);
  assert.ok(cloud.includes("secret ocelot a") && cloud.includes("open beagle b"));
  assert.equal((await call("GET", `/images/${idB}`, { headers: OP })).status, 200);

  // Webhooks: each client's receiver gets its own image's event, and nothing of the other's.
  await waitFor(() => hookA.bodies.some((b) => b.includes(idA)) && hookB.bodies.some((b) => b.includes(idB)), { what: "both webhooks" });
  assert.ok(hookB.bodies.every((body) => !body.includes(idA)), "B's receiver never hears of A's image");
  assert.ok(hookA.bodies.every((body) => !body.includes(idB)));

  // B's DELETE above did nothing: A's image is whole, and A may delete it.
  assert.equal((await call("GET", `/images/${idA}`, { headers: asA })).status, 200);
  assert.equal((await call("DELETE", `/images/${idA}`, { headers: asA })).status, 204);
  assert.equal((await call("GET", `/images/${idA}`, { headers: OP })).status, 404);
  assert.equal((await call("GET", `/images/${idB}`, { headers: asB })).status, 200);
});

test("scopes: a read-only key gets 403 on POST, a write-only key on reads and deletes", async () => {
  const reader = await makeKey({ name: "reader", scopes: [READ] });
  const writer = await makeKey({ name: "writer", scopes: [WRITE] });
  assert.deepEqual(reader.scopes, [READ]);
  const refused = await call("POST", "/images", { headers: bearer(reader), body: png(333) });
  assert.equal(refused.status, 403, refused.text);
  assert.equal(refused.json.error.code, apiError.insufficient_scope);
  assert.match(refused.json.error.message, new RegExp(WRITE));
  assert.equal((await call("GET", "/images", { headers: bearer(reader) })).status, 200);
  const id = await uploadAs(bearer(writer), png(334));
  for (const [method, path, scope] of [["GET", `/images/${id}`, READ], ["GET", "/tags", READ], ["DELETE", `/images/${id}`, DELETE]]) {
    const res = await call(method, path, { headers: bearer(writer) });
    assert.equal(res.status, 403, `${method} ${path}`);
    assert.match(res.json.error.message, new RegExp(scope));
  }
});

test("a revoked key gets 401 (in this isolate at once), and revoking is idempotent", async () => {
  const key = await makeKey({ name: "short-lived" });
  assert.equal((await call("GET", "/images", { headers: bearer(key) })).status, 200, "looked up and cached");
  assert.equal((await call("DELETE", `/admin/keys/${key.keyId}`, { headers: OP })).status, 204);
  const res = await call("GET", "/images", { headers: bearer(key) });
  assert.equal(res.status, 401);
  assert.equal(res.json.error.code, apiError.unauthorized);
  assert.equal((await call("POST", "/images", { headers: bearer(key), body: png(335) })).status, 401);
  assert.equal((await call("DELETE", `/admin/keys/${key.keyId}`, { headers: OP })).status, 204);
  const listed = (await call("GET", "/admin/keys", { headers: OP })).json.keys.find((k) => k.keyId === key.keyId);
  assert.ok(listed.revokedAt, JSON.stringify(listed));
  // A key-shaped credential that was never made is no better.
  const forged = `${contract.auth.keyPrefix}${"A".repeat(contract.auth.keyLength - contract.auth.keyPrefix.length)}`;
  assert.equal((await call("GET", "/images", { headers: { authorization: `Bearer ${forged}` } })).status, 401);
});

test("a client over its rate limit gets 429 with Retry-After, while another client is not slowed", async () => {
  const busy = await makeKey({ name: "busy" });
  const calm = await makeKey({ name: "calm" });
  // The binding counts per fixed minute: a count may restart once at a minute's turn.
  let limited;
  let accepted = 0;
  for (let i = 0; i < 3 * RATE_LIMIT && !limited; i++) {
    const res = await call("POST", "/images", { headers: bearer(busy), body: png(400 + i) });
    if (res.status === 429) limited = res;
    else {
      assert.equal(res.status, 202, res.text);
      accepted++;
    }
  }
  assert.ok(limited, "the busy client was limited");
  assert.ok(accepted >= RATE_LIMIT, `${accepted} uploads went through first`);
  assert.equal(limited.json.error.code, apiError.rate_limited);
  assert.equal(limited.headers.get("retry-after"), String(60));
  // The other client, right after: not limited.
  await uploadAs(bearer(calm), png(450));
  // Reading is not limited either.
  assert.equal((await call("GET", "/images", { headers: bearer(busy) })).status, 200);
});

test("a key over its dailyUploads gets 429 quota_exceeded until the next UTC day", async () => {
  const quota = await makeKey({ name: "metered", dailyUploads: 2 });
  assert.equal(quota.dailyUploads, 2);
  // Yesterday's count (used up) neither carries over nor stays behind.
  const db = await p.db();
  const today = Math.floor(Date.now() / 86_400_000);
  await db.prepare("INSERT INTO key_usage (owner, day, uploads) VALUES (?1, ?2, 2)").bind(quota.keyId, today - 1).run();
  await uploadAs(bearer(quota), png(501));
  const days = (await db.prepare("SELECT day FROM key_usage WHERE owner = ?1").bind(quota.keyId).all()).results.map((r) => r.day);
  assert.ok(days.every((d) => d >= today) && days.length === 1, JSON.stringify(days));
  await uploadAs(bearer(quota), png(502));
  const res = await call("POST", "/images", { headers: bearer(quota), body: png(503) });
  assert.equal(res.status, 429, res.text);
  assert.equal(res.json.error.code, apiError.quota_exceeded);
  const midnight = Date.UTC(new Date().getUTCFullYear(), new Date().getUTCMonth(), new Date().getUTCDate() + 1);
  const retryAfter = Number(res.headers.get("retry-after"));
  assert.ok(retryAfter > 0 && retryAfter <= 86_400, String(retryAfter));
  assert.ok(Math.abs(retryAfter - (midnight - Date.now()) / 1000) < 120, `${retryAfter} s to the next UTC day`);
  // Another key is not affected.
  await uploadAs(bearer(await makeKey({ name: "unmetered" })), png(504));
});

test("Idempotency-Keys are per client: the same key names each client's own image", async () => {
  const a = await makeKey({ name: "idem A" });
  const b = await makeKey({ name: "idem B" });
  const body = png(601);
  const headers = { "idempotency-key": "order-42" };
  const idA = await uploadAs(bearer(a), body, headers);
  const idB = await uploadAs(bearer(b), body, headers);
  assert.notEqual(idA, idB);
  const again = await call("POST", "/images", { headers: { ...bearer(a), ...headers }, body });
  assert.equal(again.status, 200);
  assert.equal(again.json.imageId, idA);
});

test("with no API_TOKEN and no ALLOW_ANONYMOUS, every API route is 401 and says how to configure it", async () => {
  await withPipeline({ vars: { upload: { [varName.ALLOW_ANONYMOUS]: "false" } } }, async (closed) => {
    const routes = [
      ["POST", "/images"], ["POST", "/"], ["GET", "/images"], ["HEAD", "/images"],
      ["GET", `/images/${UNKNOWN_ID}`], ["HEAD", `/images/${UNKNOWN_ID}`], ["DELETE", `/images/${UNKNOWN_ID}`],
      ["GET", `/images/${UNKNOWN_ID}/tags`], ["GET", `/images/${UNKNOWN_ID}/content`], ["GET", "/tags"],
      ["GET", "/admin/usage"], ["GET", "/admin/keys"], ["POST", "/admin/keys"], ["DELETE", "/admin/keys/key_00000000000000000000"],
      ["GET", "/admin/stats"], ["POST", "/events/ticket"], ["PUT", "/images"],
    ];
    for (const [method, path] of routes) {
      for (const headers of [{}, { authorization: "Bearer anything" }, { authorization: `Bearer ${contract.auth.keyPrefix}${"A".repeat(43)}` }]) {
        const res = await closed.fetch(path, { method, headers, body: ["POST", "PUT"].includes(method) ? png(100) : undefined });
        assert.equal(res.status, 401, `${method} ${path}`);
        assert.ok(res.headers.get("www-authenticate"), `${method} ${path}: WWW-Authenticate`);
        if (method !== "HEAD") {
          const { error } = await res.json();
          assert.equal(error.code, apiError.auth_not_configured);
          assert.match(error.message, new RegExp(`${varName.API_TOKEN}.*${varName.ALLOW_ANONYMOUS}`, "s"));
        }
      }
    }
    // The demo page is not an API route: it still loads (and says why its calls fail).
    assert.equal((await closed.fetch("/")).status, 200);
  });
});
