// The OpenAPI document (docs/openapi.yaml) against the real worker, so that neither can drift:
// - every real response's status is documented for its path and method (a path the
//   document does not list must answer the documented 404 `not_found`);
// - every header the document marks required is present, every documented header that is
//   present matches its schema, and every non-generic header sent is documented;
// - the body has a documented media type and validates against its schema (JSON Schema
//   2020-12, with Ajv), and responses without content (204, HEAD) have no body;
// - every operation in the document is exercised at least once;
// - the error codes in the document are exactly those in the contract generated from Rust
//   (local/contract.json).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { parse as parseYaml } from "yaml";
import { Ajv2020 } from "ajv/dist/2020.js";

import { startPipeline, waitFor, ROOT } from "../local/pipeline.mjs";
import { aiError, aiErrorCode, answer } from "../local/ai-stub.mjs";
import { apiError, contract, status, tagError } from "../local/contract.mjs";
import { FAST_QUEUES } from "./support/helpers.mjs";
import { png, jpeg, gif } from "../local/images.mjs";
import { multipartBody } from "./support/requests.mjs";
import { openLive } from "../local/live-client.mjs";

const doc = parseYaml(readFileSync(path.join(ROOT, "docs/openapi.yaml"), "utf8"));
const LIMIT = 4096;
const TOKEN = "contract-token-0b6e";
const ORIGIN = "https://app.example";
const UNKNOWN_ID = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
const METHODS = ["get", "head", "post", "put", "patch", "delete", "options"];
/** Headers any HTTP response may carry, not part of the API. */
const GENERIC_HEADERS = new Set(["content-type", "content-length", "transfer-encoding", "date", "connection", "keep-alive", "content-encoding"]);

// ---------------------------------------------------------------------------------------
// The document, compiled.
// ---------------------------------------------------------------------------------------

const SCHEMA_BASE = "urn:image-tagger:openapi";

/** Rewrites `#/components/schemas/X` references to the registered `$defs`. */
function rebase(schema, prefix) {
  return JSON.parse(
    JSON.stringify(schema).replaceAll('"#/components/schemas/', `"${prefix}#/$defs/`),
  );
}

const ajv = new Ajv2020({ allErrors: true, strict: true, strictTypes: false, strictRequired: false });
ajv.addFormat("uuid", /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i);
ajv.addFormat("date-time", {
  type: "string",
  validate: (s) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s) && !Number.isNaN(Date.parse(s)),
});
ajv.addSchema({ $id: SCHEMA_BASE, $defs: rebase(doc.components.schemas, "") });

const validators = new Map();
function validator(schema) {
  const key = JSON.stringify(schema);
  if (!validators.has(key)) validators.set(key, ajv.compile(rebase(schema, SCHEMA_BASE)));
  return validators.get(key);
}

function validate(schema, value, what) {
  const check = validator(schema);
  assert.ok(check(value), `${what} does not match the document: ${ajv.errorsText(check.errors)}\n${JSON.stringify(value)}`);
}

/** Follows a local `$ref` (responses, headers, parameters) to its object. */
function deref(object) {
  let seen = 0;
  while (object?.$ref) {
    assert.ok(object.$ref.startsWith("#/"), `only local references: ${object.$ref}`);
    object = object.$ref.slice(2).split("/").reduce((o, key) => o?.[key], doc);
    assert.ok(object, "reference resolves");
    assert.ok(++seen < 10, "reference cycle");
  }
  return object;
}

const templates = Object.keys(doc.paths).map((template) => ({
  template,
  pattern: new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`),
}));

/** The documented path template of a concrete path, if any. */
function templateOf(pathname) {
  return templates.find((t) => t.pattern.test(pathname))?.template;
}

const exercised = new Set();

/** Checks one real exchange against the document. */
function assertConforms(method, pathname, reply) {
  const what = `${method} ${pathname} → ${reply.status}`;
  const template = templateOf(pathname.split("?")[0]);
  let response;
  if (template === undefined) {
    assert.equal(reply.status, 404, `${what}: an unlisted path answers 404`);
    response = deref(doc.components.responses.NotFound);
  } else {
    const operation = doc.paths[template][method.toLowerCase()];
    assert.ok(operation, `${what}: ${method} is not documented for ${template}`);
    exercised.add(`${method.toLowerCase()} ${template}`);
    const documented = operation.responses[String(reply.status)];
    assert.ok(documented, `${what}: status ${reply.status} is not documented for ${method} ${template}`);
    response = deref(documented);
  }

  const headers = new Map(Object.entries(response.headers ?? {}).map(([name, h]) => [name.toLowerCase(), deref(h)]));
  for (const [name, header] of headers) {
    const value = reply.headers.get(name);
    if (header.required) assert.notEqual(value, null, `${what}: required header ${name} is missing`);
    if (value !== null && header.schema) validate(header.schema, value, `${what}: header ${name}`);
  }
  for (const [name] of reply.headers) {
    if (GENERIC_HEADERS.has(name) || name.startsWith("mf-")) continue;
    assert.ok(headers.has(name), `${what}: header ${name} is sent but not documented`);
  }

  if (method === "HEAD" || !response.content) {
    assert.equal(reply.body.length, 0, `${what}: no body expected`);
    return;
  }
  const type = (reply.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
  const media = response.content[type];
  assert.ok(media, `${what}: content type ${type} is not documented (${Object.keys(response.content)})`);
  if (type === "application/json") {
    validate(media.schema, JSON.parse(reply.body.toString("utf8")), `${what}: body`);
  } else {
    assert.equal(media.schema?.type, "string");
    assert.ok(reply.body.length > 0, `${what}: a body`);
  }
}

// ---------------------------------------------------------------------------------------
// The document on its own.
// ---------------------------------------------------------------------------------------

test("the document is OpenAPI 3.1 and all its schemas and references resolve", () => {
  assert.match(doc.openapi, /^3\.1\.\d+$/);
  assert.equal(doc.jsonSchemaDialect, "https://json-schema.org/draft/2020-12/schema");
  for (const name of Object.keys(doc.components.schemas)) {
    assert.ok(ajv.getSchema(`${SCHEMA_BASE}#/$defs/${name}`), `schema ${name} compiles`);
  }
  const ids = new Set();
  for (const [template, item] of Object.entries(doc.paths)) {
    for (const parameter of item.parameters ?? []) deref(parameter);
    for (const method of METHODS.filter((m) => item[m])) {
      const operation = item[method];
      assert.ok(operation.operationId && !ids.has(operation.operationId), `${method} ${template}: unique operationId`);
      ids.add(operation.operationId);
      for (const parameter of operation.parameters ?? []) validator(deref(parameter).schema);
      if (operation.requestBody) {
        for (const media of Object.values(deref(operation.requestBody).content)) validator(media.schema);
      }
      for (const [status, r] of Object.entries(operation.responses)) {
        assert.match(status, /^[1-5]\d\d$/);
        const response = deref(r);
        assert.ok(response.description, `${method} ${template} ${status}: a description`);
        for (const h of Object.values(response.headers ?? {})) validator(deref(h).schema);
        for (const media of Object.values(response.content ?? {})) validator(media.schema);
      }
    }
  }
});

test("the documented error codes are exactly the contract's", () => {
  const sorted = (list) => [...list].sort();
  assert.deepEqual(
    sorted(doc.components.schemas.ErrorCode.enum),
    sorted(contract.apiErrors.map((e) => e.code)),
    "ErrorCode (API errors) against the contract's apiErrors",
  );
  assert.deepEqual(
    sorted(doc.components.schemas.ErrorInfo.properties.code.enum),
    sorted(contract.tagErrors.filter((e) => !e.retryable).map((e) => e.code)),
    "ErrorInfo.code (a failed record's reason) against the contract's permanent tagErrors",
  );
});

// ---------------------------------------------------------------------------------------
// Real exchanges.
// ---------------------------------------------------------------------------------------

let p;
before(async () => {
  p = await startPipeline({ queues: FAST_QUEUES, vars: { upload: { MAX_UPLOAD_BYTES: String(LIMIT), API_TOKEN: TOKEN, ALLOWED_ORIGINS: ORIGIN } } });
});
after(async () => {
  await p?.close();
});

const AUTH = { authorization: `Bearer ${TOKEN}`, origin: ORIGIN };

/** Sends a request (with the token and an allowed Origin unless `headers` says otherwise),
 * checks the status it is meant to get, then checks the exchange against the document. */
async function exchange(method, pathname, { headers = AUTH, body, status } = {}) {
  const res = await p.fetch(pathname, { method, headers, body });
  const reply = { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
  if (status !== undefined) {
    assert.equal(reply.status, status, `${method} ${pathname}: ${reply.body.toString("utf8").slice(0, 200)}`);
  }
  assertConforms(method, pathname, reply);
  return reply.body.length && /json/.test(reply.headers.get("content-type") ?? "")
    ? JSON.parse(reply.body.toString("utf8"))
    : reply;
}

test("202 upload, queued, done and tags views conform", async () => {
  const image = png(1024);
  p.ai.script(image, answer(undefined, { latencyMs: 2000 }));
  const accepted = await exchange("POST", "/images", { body: image, headers: { ...AUTH, "content-type": "image/png" }, status: 202 });
  const id = accepted.imageId;
  assert.equal((await exchange("GET", `/images/${id}`, { status: 200 })).status, status.queued);
  assert.equal((await exchange("GET", `/images/${id}/tags`, { status: 200 })).status, status.queued);
  await exchange("HEAD", `/images/${id}`, { status: 200 });

  await p.waitForStatus(id, undefined, { headers: AUTH });
  const record = await exchange("GET", `/images/${id}`, { status: 200 });
  assert.equal(record.status, status.done);
  const tags = await exchange("GET", `/images/${id}/tags`, { status: 200 });
  assert.deepEqual(Object.keys(tags).sort(), ["imageId", "tags"]);
  await exchange("HEAD", `/images/${id}/tags`, { status: 200 });
});

test("a failed record, with its error, conforms", async () => {
  const image = png(900);
  p.ai.script(image, aiError(aiErrorCode("Invalid data")));
  const { imageId } = await exchange("POST", "/", { body: image, status: 202 });
  await p.waitForStatus(imageId, undefined, { headers: AUTH });
  const record = await exchange("GET", `/images/${imageId}`, { status: 200 });
  assert.equal(record.status, status.failed);
  assert.equal(record.error.code, tagError.invalid_image);
  assert.equal((await exchange("GET", `/images/${imageId}/tags`, { status: 200 })).status, status.failed);
});

test("multipart and idempotent uploads conform", async () => {
  const boundary = "contract-boundary";
  const form = multipartBody(boundary, [{ name: "file", filename: "a.gif", type: "image/gif", body: gif(200) }]);
  await exchange("POST", "/images", { body: form, headers: { ...AUTH, "content-type": `multipart/form-data; boundary=${boundary}` }, status: 202 });
  const headers = { ...AUTH, "idempotency-key": "contract-key-1" };
  const first = await exchange("POST", "/images", { body: jpeg(300), headers, status: 202 });
  const body = jpeg(300);
  const first2 = await exchange("POST", "/images", { body, headers: { ...headers, "idempotency-key": "contract-key-2" }, status: 202 });
  const again = await exchange("POST", "/images", { body, headers: { ...headers, "idempotency-key": "contract-key-2" }, status: 200 });
  assert.equal(again.imageId, first2.imageId);
  assert.notEqual(first.imageId, first2.imageId);
  const reused = await exchange("POST", "/images", { body: jpeg(300), headers, status: 422 });
  assert.equal(reused.error.code, apiError.idempotency_key_reused);
});

test("a request with an Idempotency-Key still running gets a documented 409", async () => {
  const headers = { ...AUTH, "idempotency-key": "contract-key-in-flight", "content-type": "image/png" };
  // The first request streams its body slowly, so the key stays reserved meanwhile.
  let release;
  const gate = new Promise((resolve) => (release = resolve));
  const slow = new ReadableStream({
    async start(controller) {
      controller.enqueue(new Uint8Array(png(200).subarray(0, 100)));
      await gate;
      controller.enqueue(new Uint8Array(png(200).subarray(100)));
      controller.close();
    },
  });
  const first = p.fetch("/images", { method: "POST", headers, body: slow, duplex: "half" });
  const second = await waitFor(
    async () => {
      const reply = await exchange("POST", "/images", { body: png(200), headers });
      return reply.error?.code === apiError.idempotency_key_in_flight && reply;
    },
    { what: "the second request to see the key in flight" },
  );
  assert.equal(second.error.code, apiError.idempotency_key_in_flight);
  release();
  assert.equal((await first).status, 202);
});

test("GET /admin/usage conforms and counts today's AI calls", async () => {
  const usage = await exchange("GET", "/admin/usage", { status: 200 });
  assert.ok(usage.usedToday >= 1, JSON.stringify(usage));
  assert.equal(usage.day, new Date().toISOString().slice(0, 10));
  await exchange("HEAD", "/admin/usage", { status: 200 });
  assert.equal((await exchange("GET", "/admin/usage", { headers: {}, status: 401 })).error.code, apiError.unauthorized);
  await exchange("POST", "/admin/usage", { body: "{}", status: 405 });
  await exchange("DELETE", "/admin/usage", { status: 405 });
  await exchange("OPTIONS", "/admin/usage", { headers: { origin: ORIGIN, "access-control-request-method": "GET" }, status: 204 });
});

test("the operator dashboard conforms: GET /admin (public page) and GET /admin/stats (operator only)", async () => {
  const stats = await exchange("GET", "/admin/stats", { status: 200 });
  assert.equal(stats.uploadsPerHour.length, stats.windowHours);
  assert.ok(stats.uploadsPerHour.reduce((n, h) => n + h.done + h.failed + h.queued, 0) >= 1, JSON.stringify(stats.uploadsPerHour.at(-1)));
  await exchange("HEAD", "/admin/stats", { status: 200 });
  assert.equal((await exchange("GET", "/admin/stats", { headers: {}, status: 401 })).error.code, apiError.unauthorized);
  await exchange("HEAD", "/admin/stats", { headers: {}, status: 401 });
  await exchange("POST", "/admin/stats", { body: "{}", status: 405 });
  await exchange("OPTIONS", "/admin/stats", { headers: { origin: ORIGIN, "access-control-request-method": "GET" }, status: 204 });
  await exchange("GET", "/admin", { headers: {}, status: 200 });
  await exchange("HEAD", "/admin", { headers: { origin: ORIGIN }, status: 200 });
  await exchange("POST", "/admin", { body: "{}", status: 405 });
  await exchange("POST", "/admin", { headers: {}, body: "{}", status: 401 });
  await exchange("OPTIONS", "/admin", { headers: { origin: ORIGIN, "access-control-request-method": "GET" }, status: 204 });
});

test("errors conform: 400, 401, 404, 405, 413, 415", async () => {
  const code = async (method, pathname, options) => (await exchange(method, pathname, options)).error.code;
  // 400
  assert.equal(await code("POST", "/images", { body: Buffer.alloc(0), status: 400 }), apiError.empty_body);
  assert.equal(await code("POST", "/images", { body: "nope", headers: { ...AUTH, "content-type": "multipart/form-data; boundary=x" }, status: 400 }), apiError.invalid_multipart);
  assert.equal(await code("POST", "/images", { body: png(100), headers: { ...AUTH, "idempotency-key": "two words" }, status: 400 }), apiError.invalid_idempotency_key);
  assert.equal(await code("GET", "/images/NOT-AN-ID", { status: 400 }), apiError.invalid_id);
  assert.equal(await code("GET", "/images/NOT-AN-ID/tags", { status: 400 }), apiError.invalid_id);
  assert.equal(await code("OPTIONS", "/images/NOT-AN-ID", { status: 400 }), apiError.invalid_id);
  assert.equal(await code("DELETE", "/images/NOT-AN-ID", { status: 400 }), apiError.invalid_id);
  assert.equal(await code("OPTIONS", "/images/NOT-AN-ID/content", { status: 400 }), apiError.invalid_id);
  await exchange("HEAD", "/images/NOT-AN-ID", { status: 400 });
  // 401, with and without CORS
  assert.equal(await code("POST", "/images", { body: png(100), headers: {}, status: 401 }), apiError.unauthorized);
  assert.equal(await code("GET", `/images/${UNKNOWN_ID}`, { headers: { authorization: "Bearer wrong", origin: ORIGIN }, status: 401 }), apiError.unauthorized);
  assert.equal(await code("PUT", "/images", { headers: { authorization: `Basic ${TOKEN}` }, status: 401 }), apiError.unauthorized);
  await exchange("HEAD", `/images/${UNKNOWN_ID}/tags`, { headers: {}, status: 401 });
  // 404
  assert.equal(await code("GET", `/images/${UNKNOWN_ID}`, { status: 404 }), apiError.image_not_found);
  assert.equal(await code("GET", `/images/${UNKNOWN_ID}/tags`, { status: 404 }), apiError.image_not_found);
  await exchange("HEAD", `/images/${UNKNOWN_ID}`, { status: 404 });
  assert.equal(await code("GET", "/nope", { status: 404 }), apiError.not_found);
  assert.equal(await code("POST", `/images/${UNKNOWN_ID}/labels`, { status: 404 }), apiError.not_found);
  // 413, 415
  assert.equal(await code("POST", "/images", { body: png(LIMIT + 1), status: 413 }), apiError.payload_too_large);
  assert.equal(await code("POST", "/", { body: "<html></html>", headers: { ...AUTH, "content-type": "text/html" }, status: 415 }), apiError.unsupported_media_type);
  assert.equal(await code("POST", "/images", { body: png(100), headers: { ...AUTH, "content-type": "image/jpeg" }, status: 415 }), apiError.unsupported_media_type);
});

test("search, tags, content and delete conform", async () => {
  const code = async (method, pathname, options) => (await exchange(method, pathname, options)).error.code;
  const images = [png(700), png(701)];
  for (const image of images) p.ai.script(image, answer([{ label: "Contract Tabby", score: 0.95 }, { label: "Contract Lynx", score: 0.9 }]));
  const ids = [];
  for (const image of images) ids.push((await exchange("POST", "/images", { body: image, status: 202 })).imageId);
  for (const id of ids) await p.waitForStatus(id, undefined, { headers: AUTH });

  // GET and HEAD /images, a page at a time.
  const query = "tag=contract+tabby&tag=CONTRACT%20LYNX&status=done";
  const first = await exchange("GET", `/images?${query}&limit=1`, { status: 200 });
  assert.equal(first.images.length, 1);
  assert.ok(first.nextCursor);
  const second = await exchange("GET", `/images?${query}&limit=1&cursor=${first.nextCursor}`, { status: 200 });
  assert.deepEqual([first.images[0].imageId, second.images[0].imageId].sort(), [...ids].sort());
  await exchange("GET", "/images", { status: 200 });
  await exchange("HEAD", `/images?${query}`, { status: 200 });
  assert.equal(await code("GET", "/images?tags=x", { status: 400 }), apiError.invalid_query);
  assert.equal(await code("GET", `/images?cursor=${first.nextCursor}`, { status: 400 }), apiError.invalid_cursor);
  await exchange("HEAD", "/images?limit=0", { status: 400 });
  assert.equal(await code("GET", "/images", { headers: {}, status: 401 }), apiError.unauthorized);
  await exchange("HEAD", "/images", { headers: {}, status: 401 });

  // GET and HEAD /tags.
  const cloud = await exchange("GET", "/tags?limit=1000", { status: 200 });
  assert.ok(cloud.tags.some((t) => t.tag === "contract tabby" && t.count >= 2));
  await exchange("HEAD", "/tags", { status: 200 });
  assert.equal(await code("GET", "/tags?limit=0", { status: 400 }), apiError.invalid_query);
  await exchange("HEAD", "/tags?x=1", { status: 400 });
  assert.equal(await code("GET", "/tags", { headers: {}, status: 401 }), apiError.unauthorized);
  await exchange("HEAD", "/tags", { headers: {}, status: 401 });

  // GET and HEAD /images/{id}/content: 200, 206, 304, 416, 404, 400, 401.
  const id = ids[0];
  const whole = await exchange("GET", `/images/${id}/content`, { status: 200 });
  assert.deepEqual(whole.body, images[0]);
  const part = await exchange("GET", `/images/${id}/content`, { headers: { ...AUTH, range: "bytes=1-3" }, status: 206 });
  assert.deepEqual(part.body, images[0].subarray(1, 4));
  const etag = whole.headers.get("etag");
  await exchange("GET", `/images/${id}/content`, { headers: { ...AUTH, "if-none-match": etag }, status: 304 });
  assert.equal(await code("GET", `/images/${id}/content`, { headers: { ...AUTH, range: "bytes=5000-" }, status: 416 }), apiError.range_not_satisfiable);
  await exchange("HEAD", `/images/${id}/content`, { status: 200 });
  await exchange("HEAD", `/images/${id}/content`, { headers: { ...AUTH, range: "bytes=-2" }, status: 206 });
  await exchange("HEAD", `/images/${id}/content`, { headers: { ...AUTH, "if-none-match": etag }, status: 304 });
  await exchange("HEAD", `/images/${id}/content`, { headers: { ...AUTH, range: "bytes=5000-" }, status: 416 });
  assert.equal(await code("GET", `/images/${UNKNOWN_ID}/content`, { status: 404 }), apiError.image_not_found);
  await exchange("HEAD", `/images/${UNKNOWN_ID}/content`, { status: 404 });
  assert.equal(await code("GET", "/images/NOT-AN-ID/content", { status: 400 }), apiError.invalid_id);
  await exchange("HEAD", "/images/NOT-AN-ID/content", { status: 400 });
  assert.equal(await code("GET", `/images/${id}/content`, { headers: {}, status: 401 }), apiError.unauthorized);
  await exchange("HEAD", `/images/${id}/content`, { headers: {}, status: 401 });

  // DELETE /images/{id}: 204, then 404; 401 without the token.
  assert.equal(await code("DELETE", `/images/${id}`, { headers: {}, status: 401 }), apiError.unauthorized);
  await exchange("DELETE", `/images/${id}`, { status: 204 });
  assert.equal(await code("DELETE", `/images/${id}`, { status: 404 }), apiError.image_not_found);
});

test("client keys conform: made, listed, scoped, metered and revoked", async () => {
  const code = async (method, pathname, options) => (await exchange(method, pathname, options)).error.code;
  const json = { ...AUTH, "content-type": "application/json" };
  const make = (request) => exchange("POST", "/admin/keys", { headers: json, body: JSON.stringify(request), status: 201 });
  const [write, read, delete_] = contract.auth.scopes;
  const metered = await make({ name: "contract client", dailyUploads: 1 });
  const reader = await make({ name: "contract reader", scopes: [read] });
  const writer = await make({ name: "contract writer", scopes: [write] });
  assert.deepEqual(reader.scopes, [read]);
  assert.equal(await code("POST", "/admin/keys", { headers: json, body: "{}", status: 400 }), apiError.invalid_key_request);
  const { keys } = await exchange("GET", "/admin/keys", { status: 200 });
  assert.ok(keys.some((k) => k.keyId === metered.keyId && k.dailyUploads === 1));
  await exchange("HEAD", "/admin/keys", { status: 200 });

  // 403: the operator's routes, and a scope the key lacks.
  const as = (key) => ({ authorization: `Bearer ${key.key}`, origin: ORIGIN });
  for (const [method, pathname] of [["GET", "/admin/keys"], ["HEAD", "/admin/keys"], ["POST", "/admin/keys"], ["GET", "/admin/usage"], ["HEAD", "/admin/usage"], ["GET", "/admin/stats"], ["HEAD", "/admin/stats"], ["DELETE", `/admin/keys/${reader.keyId}`]]) {
    await exchange(method, pathname, { headers: as(metered), body: method === "POST" ? "{}" : undefined, status: 403 });
  }
  for (const pathname of ["/images", "/"]) {
    assert.equal(await code("POST", pathname, { headers: as(reader), body: png(100), status: 403 }), apiError.insufficient_scope);
  }
  for (const method of ["GET", "HEAD"]) {
    for (const pathname of ["/images", "/tags", `/images/${UNKNOWN_ID}`, `/images/${UNKNOWN_ID}/tags`, `/images/${UNKNOWN_ID}/content`]) {
      await exchange(method, pathname, { headers: as(writer), status: 403 });
    }
  }
  assert.equal(await code("DELETE", `/images/${UNKNOWN_ID}`, { headers: as(reader), status: 403 }), apiError.insufficient_scope);
  assert.ok(contract.auth.scopes.includes(delete_));

  // 429: the daily quota, with Retry-After.
  await exchange("POST", "/images", { headers: as(metered), body: png(101), status: 202 });
  assert.equal(await code("POST", "/images", { headers: as(metered), body: png(102), status: 429 }), apiError.quota_exceeded);
  assert.equal(await code("POST", "/", { headers: as(metered), body: png(102), status: 429 }), apiError.quota_exceeded);

  // Revoked: 204 (again too), then 401; an unknown or malformed key id is 404.
  await exchange("DELETE", `/admin/keys/${metered.keyId}`, { status: 204 });
  await exchange("DELETE", `/admin/keys/${metered.keyId}`, { status: 204 });
  assert.equal(await code("GET", "/images", { headers: as(metered), status: 401 }), apiError.unauthorized);
  assert.equal(await code("DELETE", "/admin/keys/key_00000000000000000000", { status: 404 }), apiError.key_not_found);
  assert.equal(await code("DELETE", "/admin/keys/nope", { status: 404 }), apiError.key_not_found);
  assert.equal(await code("OPTIONS", "/admin/keys/nope", { status: 404 }), apiError.key_not_found);
  assert.equal(await code("GET", "/admin/keys/nope", { status: 404 }), apiError.key_not_found);
  assert.equal(await code("POST", "/admin/keys/nope", { body: "{}", status: 404 }), apiError.key_not_found);
  assert.equal(await code("GET", "/admin/keys", { headers: {}, status: 401 }), apiError.unauthorized);
  await exchange("HEAD", "/admin/keys", { headers: {}, status: 401 });
  await exchange("POST", "/admin/keys", { headers: {}, body: "{}", status: 401 });
  await exchange("DELETE", `/admin/keys/${reader.keyId}`, { headers: {}, status: 401 });
});

test("every other method on a listed path is a documented 405 with Allow", async () => {
  const id = UNKNOWN_ID;
  for (const [pathname, methods] of [
    ["/", ["PUT", "PATCH", "DELETE"]],
    ["/images", ["PUT", "PATCH", "DELETE"]],
    [`/images/${id}`, ["POST", "PUT", "PATCH"]],
    [`/images/${id}/tags`, ["POST", "PUT", "PATCH", "DELETE"]],
    [`/images/${id}/content`, ["POST", "PUT", "PATCH", "DELETE"]],
    ["/tags", ["POST", "PUT", "PATCH", "DELETE"]],
    ["/admin/keys", ["PUT", "DELETE"]],
    ["/admin/keys/key_00000000000000000000", ["GET", "POST"]],
    ["/events", ["POST", "PUT", "DELETE"]],
    ["/events/ticket", ["GET", "PUT", "DELETE"]],
  ]) {
    for (const method of methods) {
      const body = ["POST", "PUT", "PATCH"].includes(method) ? "{}" : undefined;
      await exchange(method, pathname, { body, status: 405 });
    }
  }
});

test("OPTIONS, GET / and HEAD / conform", async () => {
  for (const pathname of ["/", "/images", `/images/${UNKNOWN_ID}`, `/images/${UNKNOWN_ID}/tags`, `/images/${UNKNOWN_ID}/content`, "/tags", "/admin/keys", "/admin/keys/key_00000000000000000000", "/events", "/events/ticket"]) {
    await exchange("OPTIONS", pathname, { headers: { origin: ORIGIN, "access-control-request-method": "POST" }, status: 204 });
  }
  await exchange("GET", "/", { headers: {}, status: 200 });
  await exchange("HEAD", "/", { headers: { origin: ORIGIN }, status: 200 });
});

test("live updates conform: the ticket, the refusals before the upgrade, and every message on the socket", async () => {
  const issued = await exchange("POST", contract.live.routes.ticket, { status: 200 });
  await exchange("POST", contract.live.routes.ticket, { headers: {}, status: 401 });
  const refused = await exchange("GET", contract.live.routes.events, { status: 426 });
  assert.equal(refused.error.code, apiError.upgrade_required);
  // The messages (over the real socket, which fetch cannot open) match LiveEvent and LiveControl.
  const socket = await openLive(p.url, { protocols: issued.protocols });
  const image = png(1024);
  p.ai.script(image, answer([{ label: "Contract Owl", score: 0.97 }]));
  const id = (await exchange("POST", "/images", { body: image, status: 202 })).imageId;
  await socket.eventOf(id, contract.live.events[1]);
  assert.equal(await socket.ping().then((m) => m.type), "live.pong");
  const schemas = doc.components.schemas;
  for (const { receivedAt, ...message } of socket.messages) {
    const schema = message.type.startsWith("live.") ? schemas.LiveControl : schemas.LiveEvent;
    validate(schema, message, `the socket's ${message.type}`);
  }
  // The webhook's body is the event without its id: one parser serves both.
  const { id: eventId, ...body } = socket.events().find((m) => m.type === contract.live.events[1]);
  delete body.receivedAt;
  validate(schemas.WebhookEvent, body, "image.tagged without its id");
  assert.match(eventId, /^msg_/);
  await socket.close();
});

test("every documented operation was exercised", () => {
  const documented = Object.entries(doc.paths).flatMap(([template, item]) =>
    METHODS.filter((m) => item[m]).map((m) => `${m} ${template}`),
  );
  const missed = documented.filter((op) => !exercised.has(op));
  assert.deepEqual(missed, [], "operations no request reached");
});
