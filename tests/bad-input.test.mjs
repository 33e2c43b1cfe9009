// Bad input against the real upload worker: one table of requests, each with the status and
// error code a client really gets. For every case the suite checks that
// - an error body is exactly `{"error":{"code","message"}}` with the expected code and a
//   message free of internal detail;
// - nothing new is in R2 unless the case is meant to be accepted (then exactly one object,
//   with the sniffed content type and the expected size);
// - the worker still serves afterwards (GET of a known image after every case, and a good
//   upload every few cases).
// At the end, the tagger's outcome log and the AI stub prove that only accepted uploads were
// ever enqueued (after a queue barrier, so that a stray message would have been seen).
// Error codes come from the contract, and every error's status is the contract's.
//
// Some requests cannot be expressed with fetch (a wrong, negative or non-numeric
// Content-Length, an empty header, a literal `..` segment): those go over a raw socket to
// the Miniflare URL, and the expectation is what such a client actually gets from workerd,
// which is the HTTP layer in front of the worker locally (see the comments on each case).

import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";

import { startPipeline, waitFor } from "../local/pipeline.mjs";
import { apiError, apiStatus, contract, extensionOf, keys, outcome, queues, status, tagError } from "../local/contract.mjs";
import { FAST_QUEUES, bucketKeys } from "./support/helpers.mjs";
import { png, jpeg, gif, webp, garbagePng, garbageJpeg } from "../local/images.mjs";
import { bombPng } from "../local/photos.mjs";
import { multipartBody, chunkedStream, chunk, LAST_CHUNK, rawRequest } from "./support/requests.mjs";

const LIMIT = 4096;
const TOKEN = "bad-input-token-5c1f9e";
const ALLOWED_ORIGIN = "https://app.example";
const OTHER_ORIGIN = "https://evil.example";
const UNKNOWN_ID = "3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f";
const BOUNDARY = "----bad-input-7MA4YWxkTrZu0gW";
const MULTIPART = `multipart/form-data; boundary=${BOUNDARY}`;
const BEARER = { authorization: `Bearer ${TOKEN}` };
const ALLOW = {
  root: "GET, HEAD, POST, OPTIONS",
  images: "GET, HEAD, POST, OPTIONS",
  image: "GET, HEAD, DELETE, OPTIONS",
  /** `/images/{id}/tags`, `/images/{id}/content`, `/tags`. */
  readOnly: "GET, HEAD, OPTIONS",
};
/** Run a good upload after every this many cases, on top of the GET after each case. */
const UPLOAD_EVERY = 8;

const text = (s) => Buffer.from(s, "utf8");
/** A 16×16 greyscale progressive JPEG header (SOF2) followed by `n` tiny scans, then EOI. */
const manyScans = (n) =>
  Buffer.concat([
    Buffer.from([0xff, 0xd8, 0xff, 0xc2, 0, 11, 8, 0, 16, 0, 16, 1, 1, 0x11, 0]),
    ...Array(n).fill(Buffer.from([0xff, 0xda, 0, 8, 1, 1, 0, 0, 63, 0, 0x12, 0x34])),
    Buffer.from([0xff, 0xd9]),
  ]);
const mp = (parts, options) => multipartBody(BOUNDARY, parts, options);
const filePart = (name, body, type = "image/png", filename = "photo.png") => ({ name, filename, type, body });
const post = (body, headers = {}, path = "/images") => ({ method: "POST", path, headers, body });
const get = (path, headers = {}) => ({ method: "GET", path, headers });
const knownPath = (tail = "") => (ctx) => `/images/${ctx.known}${tail}`;

// ---------------------------------------------------------------------------------------
// The table. `req` goes through `p.fetch` (fetch over the socket), `raw` is written to the
// socket byte for byte.
// Expectations: `status`; `code` (an error body with that code); `headers` (value, RegExp,
// or null for absent); `empty` (no body); `sameAsGet` (HEAD: status equals the GET's);
// `stored` (202: one new object of that type and size); `platform` (refused by workerd
// before the worker runs: its plain-text 500, not our JSON). `on: "auth"` runs against the
// instance with API_TOKEN set; every other case runs against the anonymous one (the launcher sets ALLOW_ANONYMOUS).
// ---------------------------------------------------------------------------------------
const CASES = [
  // Rejected types: only JPEG, PNG, GIF and WebP, recognised by their magic bytes.
  { name: "HTML", req: post(text("<!DOCTYPE html><html><body>hi</body></html>"), { "content-type": "text/html" }), status: 415, code: apiError.unsupported_media_type },
  { name: "SVG", req: post(text('<svg xmlns="http://www.w3.org/2000/svg"><rect/></svg>'), { "content-type": "image/svg+xml" }), status: 415, code: apiError.unsupported_media_type },
  { name: "XML-prologue SVG", req: post(text('<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>'), { "content-type": "image/png" }), status: 415, code: apiError.unsupported_media_type },
  { name: "plain text", req: post(text("hello, world"), { "content-type": "text/plain" }), status: 415, code: apiError.unsupported_media_type },
  { name: "PDF", req: post(Buffer.concat([text("%PDF-1.7\n%"), Buffer.alloc(200, 0x41)]), { "content-type": "application/pdf" }), status: 415, code: apiError.unsupported_media_type },
  { name: "truncated PNG signature", req: post(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a])), status: 415, code: apiError.unsupported_media_type },
  { name: "truncated JPEG signature", req: post(Buffer.from([0xff, 0xd8])), status: 415, code: apiError.unsupported_media_type },
  { name: "truncated GIF signature", req: post(text("GIF8")), status: 415, code: apiError.unsupported_media_type },
  { name: "truncated WebP header", req: post(Buffer.concat([text("RIFF"), Buffer.alloc(4), text("WEB")])), status: 415, code: apiError.unsupported_media_type },
  { name: "RIFF but WAVE, not WebP", req: post(Buffer.concat([text("RIFF"), Buffer.alloc(4), text("WAVEfmt "), Buffer.alloc(64)])), status: 415, code: apiError.unsupported_media_type },
  { name: "BMP", req: post(Buffer.concat([text("BM6\0\0\0\0\0\0\x006\0\0\0"), Buffer.alloc(100)]), { "content-type": "image/bmp" }), status: 415, code: apiError.unsupported_media_type },
  { name: "empty body (Content-Length: 0)", req: post(Buffer.alloc(0), { "content-type": "image/png" }), status: 400, code: apiError.empty_body },
  { name: "no body at all", req: { method: "POST", path: "/images" }, status: 400, code: apiError.empty_body },
  { name: "declared image/jpeg on PNG bytes", req: post(png(300), { "content-type": "image/jpeg" }), status: 415, code: apiError.unsupported_media_type },
  { name: "declared image/svg+xml on PNG bytes", req: post(png(300), { "content-type": "image/svg+xml" }), status: 415, code: apiError.unsupported_media_type },

  // Magic bytes followed by garbage are accepted: sniffing only promises the type. The tagger
  // then finds they do not decode and fails them as invalid_image, without an AI call.
  { name: "PNG magic + garbage", req: post(garbagePng(600), { "content-type": "image/png" }), status: 202, stored: { type: "image/png", size: 600 }, undecodable: true },
  { name: "JPEG magic + garbage, declared image/jpg", req: post(garbageJpeg(600), { "content-type": "image/jpg" }), status: 202, stored: { type: "image/jpeg", size: 600 }, undecodable: true },
  { name: "a real GIF, no Content-Type", req: post(gif(100)), status: 202, stored: { type: "image/gif", size: 100 } },
  { name: "a real WebP, declared octet-stream", req: post(webp(100), { "content-type": "application/octet-stream" }), status: 202, stored: { type: "image/webp", size: 100 } },
  { name: "a real JPEG, declared image/jpg", req: post(jpeg(600), { "content-type": "image/jpg" }), status: 202, stored: { type: "image/jpeg", size: 600 } },
  { name: "smallest JPEG prefix (3 bytes)", req: post(Buffer.from([0xff, 0xd8, 0xff])), status: 202, stored: { type: "image/jpeg", size: 3 }, undecodable: true },

  // Sizes, with MAX_UPLOAD_BYTES = 4096.
  { name: "exactly the limit", req: post(png(LIMIT)), status: 202, stored: { type: "image/png", size: LIMIT } },
  { name: "the limit plus one", req: post(png(LIMIT + 1)), status: 413, code: apiError.payload_too_large },
  // A decompression bomb: a small file whose header claims 900 megapixels.
  { name: "a PNG whose header claims 30000x30000", req: post(bombPng(), { "content-type": "image/png" }), status: 413, code: apiError.image_too_large },
  { name: "chunked (no Content-Length), small", req: post(() => chunkedStream(png(3000), 500)), status: 202, stored: { type: "image/png", size: 3000 } },
  { name: "chunked, exactly the limit", req: post(() => chunkedStream(png(LIMIT), 1000)), status: 202, stored: { type: "image/png", size: LIMIT } },
  { name: "chunked, past the limit", req: post(() => chunkedStream(png(3 * LIMIT), 1024)), status: 413, code: apiError.payload_too_large },
  { name: "chunked, empty stream", req: post(() => chunkedStream(Buffer.alloc(0))), status: 400, code: apiError.empty_body },
  { name: "chunked HTML", req: post(() => chunkedStream(text("<html>" + "x".repeat(2000)), 256)), status: 415, code: apiError.unsupported_media_type },
  {
    name: "raw chunked, one chunk past the limit",
    raw: { head: "POST /images HTTP/1.1\r\nTransfer-Encoding: chunked", body: Buffer.concat([chunk(png(LIMIT + 100)), LAST_CHUNK]) },
    status: 413,
    code: apiError.payload_too_large,
  },
  {
    // The client hangs up in the middle of a chunk.
    name: "raw chunked, truncated",
    raw: { head: "POST /images HTTP/1.1\r\nTransfer-Encoding: chunked", body: Buffer.concat([Buffer.from("c8\r\n"), png(100)]) },
    status: 400,
    code: apiError.incomplete_body,
  },
  {
    // Differs from the ideal 400: HTTP framing ends the body after Content-Length bytes, so
    // neither workerd nor the worker can know more bytes followed. The first 100 bytes are
    // a valid PNG prefix and are what is stored. (fetch refuses to send this; see below.)
    name: "raw Content-Length shorter than the body",
    raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 100", body: png(200) },
    status: 202,
    stored: { type: "image/png", size: 100 },
    undecodable: true,
  },
  {
    // The client half-closes after 200 of the 300 announced bytes.
    name: "raw Content-Length longer than the body",
    raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 300", body: png(200) },
    status: 400,
    code: apiError.incomplete_body,
  },
  {
    // Differs from the ideal 400 invalid_content_length: workerd's HTTP parser (kj) refuses
    // the request before the worker runs and answers a plain-text 500. On Cloudflare the
    // edge rejects it with a 400 of its own. Either way the worker never sees it.
    name: "raw Content-Length negative",
    raw: { head: "POST /images HTTP/1.1\r\nContent-Length: -1", body: png(200) },
    status: 500,
    platform: true,
  },
  { name: "raw Content-Length non-numeric", raw: { head: "POST /images HTTP/1.1\r\nContent-Length: abc", body: png(200) }, status: 500, platform: true },
  { name: "raw Content-Length in exponent form", raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 1e3", body: png(200) }, status: 500, platform: true },
  { name: "raw conflicting Content-Length headers", raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 200\r\nContent-Length: 300", body: png(200) }, status: 500, platform: true },
  // A huge length is refused from the header alone, before any byte of the body is read.
  { name: "raw Content-Length huge (10^10)", raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 10000000000", body: png(200) }, status: 413, code: apiError.payload_too_large },
  { name: "raw Content-Length beyond u64", raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 99999999999999999999", body: png(200) }, status: 413, code: apiError.payload_too_large },
  {
    // Ambiguous framing (request smuggling shape): workerd reads the chunked body, the
    // worker holds it to the 10 bytes announced, the lengths disagree, nothing is stored.
    name: "raw Content-Length and Transfer-Encoding together",
    raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 10\r\nTransfer-Encoding: chunked", body: Buffer.concat([chunk(png(200)), LAST_CHUNK]) },
    status: 400,
    code: apiError.incomplete_body,
  },
  {
    // Without Content-Length or Transfer-Encoding an HTTP/1.1 request has no body; the
    // bytes that follow are not part of it.
    name: "raw POST with neither Content-Length nor Transfer-Encoding",
    raw: { head: "POST /images HTTP/1.1", body: png(200) },
    status: 400,
    code: apiError.empty_body,
  },

  // Live updates: GET /events is refused before any upgrade.
  { name: "GET /events without Upgrade", req: get("/events"), status: 426, code: apiError.upgrade_required },
  {
    // A forged ticket (the anonymous client's, with a MAC of zeros), offered as a browser does.
    name: "raw GET /events with a forged ticket",
    raw: {
      head:
        "GET /events HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
        `Sec-WebSocket-Protocol: ${contract.live.protocol}, ${contract.live.ticketProtocolPrefix}v1.anonymous.99999999999999.${"A".repeat(43)}`,
    },
    status: 401,
    code: apiError.invalid_ticket,
  },
  {
    name: "raw GET /events with a malformed ticket",
    raw: { head: `GET /events HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: ${contract.live.ticketProtocolPrefix}${"x".repeat(500)}` },
    status: 401,
    code: apiError.invalid_ticket,
  },

  // Multipart bodies, built by hand.
  { name: "multipart, zero-length body", req: post(Buffer.alloc(0), { "content-type": MULTIPART }), status: 400, code: apiError.empty_body },
  { name: "multipart, no parts", req: post(text(`--${BOUNDARY}--\r\n`), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, garbage body", req: post(text("this is not multipart"), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, other boundary in body", req: post(multipartBody("other-boundary", [filePart("image", png(100))]), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, no closing delimiter", req: post(mp([filePart("image", png(100))], { close: false }), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, part without Content-Disposition", req: post(text(`--${BOUNDARY}\r\nContent-Type: image/png\r\n\r\nxx\r\n--${BOUNDARY}--\r\n`), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, missing boundary parameter", req: post(mp([filePart("image", png(100))]), { "content-type": "multipart/form-data" }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, boundary with forbidden characters", req: post(mp([filePart("image", png(100))]), { "content-type": "multipart/form-data; boundary=a<b>" }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, boundary longer than 70", req: post(multipartBody("b".repeat(71), [filePart("image", png(100))]), { "content-type": `multipart/form-data; boundary=${"b".repeat(71)}` }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, no file (text field only)", req: post(mp([{ name: "note", body: "hello" }]), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, two files (image and file)", req: post(mp([filePart("image", png(100)), filePart("file", png(100))]), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, two files in `image`", req: post(mp([filePart("image", png(100)), filePart("image", jpeg(200), "image/jpeg", "b.jpg")]), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, file in the wrong field", req: post(mp([filePart("photo", png(100))]), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, `image` is not a file", req: post(mp([{ name: "image", body: png(100) }]), { "content-type": MULTIPART }), status: 400, code: apiError.invalid_multipart },
  { name: "multipart, part declares image/jpeg on PNG bytes", req: post(mp([filePart("image", png(200), "image/jpeg", "a.jpg")]), { "content-type": MULTIPART }), status: 415, code: apiError.unsupported_media_type },
  { name: "multipart, HTML file", req: post(mp([filePart("file", text("<html><body>x</body></html>"), "text/html", "a.html")]), { "content-type": MULTIPART }), status: 415, code: apiError.unsupported_media_type },
  // An empty file is reported as an empty body, not as a malformed form (both are 400).
  { name: "multipart, empty file", req: post(mp([filePart("image", Buffer.alloc(0))]), { "content-type": MULTIPART }), status: 400, code: apiError.empty_body },
  { name: "multipart, past the limit (Content-Length)", req: post(mp([filePart("image", png(LIMIT))]), { "content-type": MULTIPART }), status: 413, code: apiError.payload_too_large },
  { name: "multipart, past the limit (chunked)", req: post(() => chunkedStream(mp([filePart("image", png(2 * LIMIT))]), 1024), { "content-type": MULTIPART }), status: 413, code: apiError.payload_too_large },
  { name: "multipart, good, field `image`", req: post(mp([filePart("image", png(500))]), { "content-type": MULTIPART }), status: 202, stored: { type: "image/png", size: 500 } },
  {
    name: "multipart, good, field `file`, part type octet-stream",
    req: post(mp([{ name: "note", body: "a cat" }, filePart("file", gif(300), "application/octet-stream", "cat.bin")]), { "content-type": MULTIPART }),
    status: 202,
    stored: { type: "image/gif", size: 300 },
  },
  { name: "multipart, good, chunked, quoted boundary", req: post(() => chunkedStream(mp([filePart("image", jpeg(700), "image/jpeg", "a.jpg")]), 300), { "content-type": `multipart/form-data; boundary="${BOUNDARY}"` }), status: 202, stored: { type: "image/jpeg", size: 700 } },

  // Ids: canonical lowercase v4 UUIDs only.
  { name: "id too long", req: get(`/images/${UNKNOWN_ID}0`), status: 400, code: apiError.invalid_id },
  { name: "id too short", req: get(`/images/${UNKNOWN_ID.slice(1)}`), status: 400, code: apiError.invalid_id },
  { name: "id in upper case", req: get(`/images/${UNKNOWN_ID.toUpperCase()}`), status: 400, code: apiError.invalid_id },
  { name: "id with an encoded path separator", req: get(`/images/3f2b8c1e-9d4a-4b7e-8c2d%2F1a2b3c4d5e6f`), status: 400, code: apiError.invalid_id },
  { name: "id percent-encoded", req: get(`/images/%33f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6f`), status: 400, code: apiError.invalid_id },
  { name: "id with Unicode", req: get(`/images/3f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5é6f`), status: 400, code: apiError.invalid_id },
  { name: "id with full-width digits", req: get(`/images/３f2b8c1e-9d4a-4b7e-8c2d-1a2b3c4d5e6`), status: 400, code: apiError.invalid_id },
  { name: "id `..%2F..%2Fetc%2Fpasswd`", req: get(`/images/..%2F..%2Fetc%2Fpasswd`), status: 400, code: apiError.invalid_id },
  { name: "id `...`", req: get(`/images/.../tags`), status: 400, code: apiError.invalid_id },
  { name: "id in braces", req: get(`/images/%7B${UNKNOWN_ID}%7D`), status: 400, code: apiError.invalid_id },
  { name: "id of a version 1 UUID", req: get(`/images/3f2b8c1e-9d4a-1b7e-8c2d-1a2b3c4d5e6f`), status: 400, code: apiError.invalid_id },
  { name: "nil UUID", req: get(`/images/00000000-0000-0000-0000-000000000000/tags`), status: 400, code: apiError.invalid_id },
  { name: "bad id on a POST", req: post(png(100), {}, "/images/not-an-id"), status: 400, code: apiError.invalid_id },
  {
    // Differs from the ideal 400 invalid_id: a literal `..` segment is resolved by URL
    // parsing (in workerd, and in any fetch client) before routing, so the worker sees
    // `/secret`, an unknown path. It can never reach the id parser or a storage key.
    name: "raw literal `..` segment",
    raw: { head: "GET /images/../secret HTTP/1.1" },
    status: 404,
    code: apiError.not_found,
  },
  { name: "raw `%2e%2e` segment (resolved like `..`)", raw: { head: "GET /images/%2e%2e/secret HTTP/1.1" }, status: 404, code: apiError.not_found },

  // Routes.
  { name: "unknown path", req: get("/nope"), status: 404, code: apiError.not_found },
  { name: "paths are case-sensitive", req: get("/IMAGES"), status: 404, code: apiError.not_found },
  { name: "good id, unknown tail", req: get(knownPath("/labels")), status: 404, code: apiError.not_found },
  { name: "unknown well-formed id", req: get(`/images/${UNKNOWN_ID}`), status: 404, code: apiError.image_not_found },
  { name: "unknown well-formed id, tags", req: get(`/images/${UNKNOWN_ID}/tags`), status: 404, code: apiError.image_not_found },

  // Methods.
  { name: "PATCH /images", req: { method: "PATCH", path: "/images", body: text("{}") }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.images } },
  { name: "PUT /images", req: { method: "PUT", path: "/images", body: png(100) }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.images } },
  { name: "DELETE /images", req: { method: "DELETE", path: "/images" }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.images } },
  { name: "PUT /images/{id}", req: { method: "PUT", path: knownPath(), body: png(100) }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.image } },
  { name: "DELETE /images/{id}/content", req: { method: "DELETE", path: knownPath("/content") }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.readOnly } },
  { name: "POST /tags", req: post(png(100), {}, "/tags"), status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.readOnly } },
  { name: "POST /images/{id}", req: post(png(100), {}, `/images/${UNKNOWN_ID}`), status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.image } },
  { name: "PATCH /images/{id}/tags", req: { method: "PATCH", path: knownPath("/tags"), body: text("{}") }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.readOnly } },
  { name: "DELETE /", req: { method: "DELETE", path: "/" }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.root } },
  { name: "raw TRACE /images", raw: { head: "TRACE /images HTTP/1.1" }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.images } },
  // Methods workers-rs does not know were once answered as GET.
  { name: "raw PROPFIND /images/{id}", raw: { head: (ctx) => `PROPFIND /images/${ctx.known} HTTP/1.1` }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.image } },
  { name: "PATCH /images/{id}", req: { method: "PATCH", path: knownPath(), body: text("{}") }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.image } },
  { name: "raw PURGE /images/{id}", raw: { head: (ctx) => `PURGE /images/${ctx.known} HTTP/1.1` }, status: 405, code: apiError.method_not_allowed, headers: { allow: ALLOW.image } },
  {
    // A method HTTP does not define never reaches the worker: workerd's parser answers 501
    // itself (so does Cloudflare's edge, with its own page). Nothing is read or stored.
    name: "raw made-up method BREW /images/{id}",
    raw: { head: (ctx) => `BREW /images/${ctx.known} HTTP/1.1` },
    status: 501,
    platform: true,
  },
  { name: "raw lower-case get /images/{id}", raw: { head: (ctx) => `get /images/${ctx.known} HTTP/1.1` }, status: 501, platform: true },

  // HEAD answers like GET, without a body; OPTIONS lists the methods.
  { name: "HEAD /", req: { method: "HEAD", path: "/" }, status: 200, empty: true, sameAsGet: true },
  { name: "HEAD known image", req: { method: "HEAD", path: knownPath() }, status: 200, empty: true, sameAsGet: true },
  { name: "HEAD known image tags", req: { method: "HEAD", path: knownPath("/tags") }, status: 200, empty: true, sameAsGet: true },
  { name: "HEAD unknown image", req: { method: "HEAD", path: `/images/${UNKNOWN_ID}` }, status: 404, empty: true, sameAsGet: true },
  { name: "HEAD bad id", req: { method: "HEAD", path: "/images/NOPE" }, status: 400, empty: true, sameAsGet: true },
  { name: "HEAD /images", req: { method: "HEAD", path: "/images" }, status: 200, empty: true, sameAsGet: true },
  { name: "HEAD known image content", req: { method: "HEAD", path: knownPath("/content") }, status: 200, empty: true, sameAsGet: true },
  { name: "HEAD /tags", req: { method: "HEAD", path: "/tags" }, status: 200, empty: true, sameAsGet: true },
  { name: "OPTIONS /", req: { method: "OPTIONS", path: "/" }, status: 204, empty: true, headers: { allow: ALLOW.root } },
  { name: "OPTIONS /images", req: { method: "OPTIONS", path: "/images" }, status: 204, empty: true, headers: { allow: ALLOW.images, "access-control-allow-methods": ALLOW.images } },
  { name: "OPTIONS /images/{id}", req: { method: "OPTIONS", path: knownPath() }, status: 204, empty: true, headers: { allow: ALLOW.image } },
  { name: "OPTIONS /images/{id}/tags", req: { method: "OPTIONS", path: knownPath("/tags") }, status: 204, empty: true, headers: { allow: ALLOW.readOnly } },

  // Search (GET /images) and the tag cloud: unknown, repeated or malformed parameters.
  ...[
    ["search: unknown parameter", "/images?tags=cat"],
    ["search: limit 0", "/images?limit=0"],
    ["search: limit 201", "/images?limit=201"],
    ["search: limit not a number", "/images?limit=ten"],
    ["search: repeated limit", "/images?limit=1&limit=2"],
    ["search: unknown status", "/images?status=DONE"],
    ["search: since not RFC 3339", "/images?since=2026-11-29"],
    ["search: since after until", "/images?since=2026-11-29T00:00:01Z&until=2026-11-29T00:00:00Z"],
    ["search: empty tag", "/images?tag="],
    ["search: tag of 101 bytes", `/images?tag=${"a".repeat(101)}`],
    ["search: 11 tags", `/images?${Array.from({ length: 11 }, (_, i) => `tag=t${i}`).join("&")}`],
    ["search: bad percent-encoding", "/images?tag=%ZZ"],
    ["search: not UTF-8", "/images?tag=%FF"],
    ["tag cloud: limit 1001", "/tags?limit=1001"],
    ["tag cloud: unknown parameter", "/tags?tag=cat"],
  ].map(([name, path]) => ({ name, req: get(path), status: 400, code: apiError.invalid_query })),
  ...[
    ["search: malformed cursor", "/images?cursor=abc"],
    ["search: cursor with padding", `/images?cursor=${"A".repeat(54)}%3D`],
    ["search: forged cursor", `/images?cursor=${Buffer.concat([Buffer.from([1]), Buffer.alloc(8), Buffer.from("3f2b8c1e9d4a4b7e8c2d1a2b3c4d5e6f", "hex"), Buffer.alloc(16)]).toString("base64url")}`],
  ].map(([name, path]) => ({ name, req: get(path), status: 400, code: apiError.invalid_cursor })),

  // Content and delete of bad or unknown ids; ranges.
  { name: "content: bad id", req: get("/images/NOPE/content"), status: 400, code: apiError.invalid_id },
  { name: "content: unknown image", req: get(`/images/${UNKNOWN_ID}/content`), status: 404, code: apiError.image_not_found },
  { name: "content: range past the end", req: get(knownPath("/content"), { range: "bytes=999999-" }), status: 416, code: apiError.range_not_satisfiable, headers: { "content-range": /^bytes \*\/\d+$/ } },
  { name: "content: malformed range is ignored", req: get(knownPath("/content"), { range: "bytes=9-1" }), status: 200, headers: { "content-range": null } },
  { name: "content: several ranges are served whole", req: get(knownPath("/content"), { range: "bytes=0-1,3-4" }), status: 200 },
  { name: "DELETE bad id", req: { method: "DELETE", path: "/images/NOPE" }, status: 400, code: apiError.invalid_id },
  { name: "DELETE unknown image", req: { method: "DELETE", path: `/images/${UNKNOWN_ID}` }, status: 404, code: apiError.image_not_found },

  // CORS, with ALLOWED_ORIGINS = https://app.example.
  {
    name: "CORS preflight, allowed origin",
    req: { method: "OPTIONS", path: "/images", headers: { origin: ALLOWED_ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": "content-type, idempotency-key" } },
    status: 204,
    empty: true,
    headers: {
      "access-control-allow-origin": ALLOWED_ORIGIN,
      "access-control-allow-methods": ALLOW.images,
      "access-control-allow-headers": /Idempotency-Key/,
      vary: /Origin/,
    },
  },
  { name: "CORS preflight, other origin", req: { method: "OPTIONS", path: "/images", headers: { origin: OTHER_ORIGIN } }, status: 204, empty: true, headers: { allow: ALLOW.images, "access-control-allow-origin": null } },
  { name: "CORS GET, allowed origin", req: get(knownPath(), { origin: ALLOWED_ORIGIN }), status: 200, headers: { "access-control-allow-origin": ALLOWED_ORIGIN, "access-control-expose-headers": /Location/ } },
  { name: "CORS GET, other origin", req: get(knownPath(), { origin: OTHER_ORIGIN }), status: 200, headers: { "access-control-allow-origin": null, "access-control-expose-headers": null, vary: /Origin/ } },
  { name: "CORS on an error, allowed origin", req: post(text("<html>"), { origin: ALLOWED_ORIGIN }), status: 415, code: apiError.unsupported_media_type, headers: { "access-control-allow-origin": ALLOWED_ORIGIN } },
  { name: "CORS on an error, other origin", req: get("/nope", { origin: OTHER_ORIGIN }), status: 404, code: apiError.not_found, headers: { "access-control-allow-origin": null } },

  // Idempotency keys: 1 to 255 visible ASCII characters.
  { name: "Idempotency-Key with a space", req: post(png(100), { "idempotency-key": "two words" }), status: 400, code: apiError.invalid_idempotency_key },
  { name: "Idempotency-Key of 256 characters", req: post(png(100), { "idempotency-key": "k".repeat(256) }), status: 400, code: apiError.invalid_idempotency_key },
  {
    // Over a raw socket: Miniflare's dispatchFetch drops headers with an empty value.
    name: "raw empty Idempotency-Key",
    raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 100\r\nIdempotency-Key: ", body: png(100) },
    status: 400,
    code: apiError.invalid_idempotency_key,
  },
  { name: "raw non-ASCII Idempotency-Key", raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 100\r\nIdempotency-Key: cl\u00e9", body: png(100) }, status: 400, code: apiError.invalid_idempotency_key },

  // A JPEG whose head shows more scans than any encoder writes (64 progressive): each would
  // cost the decoder a walk over every block. tests/hostile-input.test.mjs has the real bomb.
  { name: "a progressive JPEG with 65 scans", req: post(manyScans(65), { "content-type": "image/jpeg" }), status: 422, code: apiError.invalid_image },
  { name: "a progressive JPEG with 64 scans", req: post(manyScans(64), { "content-type": "image/jpeg" }), status: 202, stored: { type: "image/jpeg", size: manyScans(64).length }, undecodable: true },

  // Callback-Url (webhooks): refused before anything is stored. tests/webhooks.test.mjs has
  // the rest of the rules; crates/shared/src/webhook/url.rs all of them.
  { name: "Callback-Url over plain http", req: post(png(100), { "callback-url": "http://hooks.example.com/in" }), status: 400, code: apiError.invalid_callback_url },
  { name: "Callback-Url with an IP-literal host", req: post(png(100), { "callback-url": "https://0x7f.0.0.1/in" }), status: 400, code: apiError.invalid_callback_url },
  { name: "Callback-Url with credentials", req: post(png(100), { "callback-url": "https://user:pw@hooks.example.com/" }), status: 400, code: apiError.invalid_callback_url },
  { name: "raw non-ASCII Callback-Url", raw: { head: "POST /images HTTP/1.1\r\nContent-Length: 100\r\nCallback-Url: https://h\u00f6oks.example/", body: png(100) }, status: 400, code: apiError.invalid_callback_url },

  // Bearer auth, with API_TOKEN set.
  { on: "auth", name: "auth: no token", req: post(png(100)), status: 401, code: apiError.unauthorized, headers: { "www-authenticate": /^Bearer / } },
  { on: "auth", name: "auth: wrong token", req: post(png(100), { authorization: `Bearer ${TOKEN}x` }), status: 401, code: apiError.unauthorized, headers: { "www-authenticate": /^Bearer / } },
  { on: "auth", name: "auth: token prefix", req: post(png(100), { authorization: `Bearer ${TOKEN.slice(0, -1)}` }), status: 401, code: apiError.unauthorized, headers: { "www-authenticate": /^Bearer / } },
  { on: "auth", name: "auth: wrong scheme", req: post(png(100), { authorization: `Basic ${TOKEN}` }), status: 401, code: apiError.unauthorized, headers: { "www-authenticate": /^Bearer / } },
  { on: "auth", name: "auth: scheme only", req: post(png(100), { authorization: "Bearer" }), status: 401, code: apiError.unauthorized, headers: { "www-authenticate": /^Bearer / } },
  { on: "auth", name: "auth: token without scheme", req: post(png(100), { authorization: TOKEN }), status: 401, code: apiError.unauthorized, headers: { "www-authenticate": /^Bearer / } },
  { on: "auth", name: "auth: GET without token", req: get(knownPath()), status: 401, code: apiError.unauthorized, headers: { "www-authenticate": /^Bearer / } },
  // Auth comes before the method check, so nothing about the API leaks without a token.
  { on: "auth", name: "auth: wrong method without token", req: { method: "PATCH", path: knownPath(), body: text("{}") }, status: 401, code: apiError.unauthorized },
  { on: "auth", name: "auth: DELETE without token", req: { method: "DELETE", path: knownPath() }, status: 401, code: apiError.unauthorized },
  { on: "auth", name: "auth: search without token", req: get("/images?tag=cat"), status: 401, code: apiError.unauthorized },
  { on: "auth", name: "auth: content without token", req: get(knownPath("/content")), status: 401, code: apiError.unauthorized },
  { on: "auth", name: "auth: tags without token", req: get("/tags"), status: 401, code: apiError.unauthorized },
  // A CORS preflight never carries credentials, so OPTIONS is open.
  { on: "auth", name: "auth: OPTIONS without token", req: { method: "OPTIONS", path: "/images" }, status: 204, empty: true, headers: { allow: ALLOW.images } },
  { on: "auth", name: "auth: right token, upload", req: post(png(300), BEARER), status: 202, stored: { type: "image/png", size: 300 } },
  // Client keys (tests/api-keys.test.mjs has the rest): one never made is refused like a wrong token.
  { on: "auth", name: "auth: unknown client key", req: get("/images", { authorization: `Bearer ${contract.auth.keyPrefix}${"k".repeat(contract.auth.keyLength - contract.auth.keyPrefix.length)}` }), status: 401, code: apiError.unauthorized, headers: { "www-authenticate": /^Bearer / } },
  { on: "auth", name: "admin: key request without a token", req: post(text('{"name":"x"}'), {}, "/admin/keys"), status: 401, code: apiError.unauthorized },
  { on: "auth", name: "admin: key request that is not JSON", req: post(text("name=x"), BEARER, "/admin/keys"), status: 400, code: apiError.invalid_key_request },
  { on: "auth", name: "admin: key request with an unknown scope", req: post(text('{"name":"x","scopes":["root"]}'), BEARER, "/admin/keys"), status: 400, code: apiError.invalid_key_request },
  { on: "auth", name: "admin: key request over 4 KiB", req: post(text(`{"name":"${"x".repeat(5000)}"}`), BEARER, "/admin/keys"), status: 400, code: apiError.invalid_key_request },
  { on: "auth", name: "admin: revoking a malformed key id", req: { method: "DELETE", path: "/admin/keys/..%2F..%2Fetc", headers: BEARER }, status: 404, code: apiError.key_not_found },
  { on: "auth", name: "admin: revoking an unknown key", req: { method: "DELETE", path: "/admin/keys/key_0123456789abcdef0123", headers: BEARER }, status: 404, code: apiError.key_not_found },
  { on: "auth", name: "auth: right token, lower-case scheme", req: post(jpeg(300), { authorization: `bearer ${TOKEN}` }), status: 202, stored: { type: "image/jpeg", size: 300 } },
  { on: "auth", name: "auth: right token, GET", req: get(knownPath(), BEARER), status: 200 },
  { on: "auth", name: "auth: right token, bad input still checked", req: post(text("<svg/>"), BEARER), status: 415, code: apiError.unsupported_media_type },
];

// ---------------------------------------------------------------------------------------
// The runner.
// ---------------------------------------------------------------------------------------

/** One pipeline and what the suite knows about it. */
class Instance {
  constructor(p, { auth = false } = {}) {
    this.p = p;
    this.auth = auth ? BEARER : {};
    /** Accepted image ids, each with the outcome its tagging must end in. */
    this.accepted = new Map();
    this.known = null;
    this.cases = 0;
  }

  keys() {
    return bucketKeys(this.p);
  }

  /** A good upload; returns its id. */
  async upload(bytes = png(256)) {
    const res = await this.p.fetch("/images", { method: "POST", body: bytes, headers: this.auth });
    assert.equal(res.status, 202, `a good upload answered ${res.status}: ${await res.clone().text()}`);
    const { imageId } = await res.json();
    this.accepted.set(imageId, outcome.done);
    return imageId;
  }

  /** The worker still serves: the known image reads back, and now and then an upload works. */
  async healthy() {
    const res = await this.p.fetch(`/images/${this.known}`, { headers: this.auth });
    assert.equal(res.status, 200, "GET of the known image after the case");
    assert.equal((await res.json()).imageId, this.known);
    if (++this.cases % UPLOAD_EVERY === 0) await this.upload();
  }
}

/** Names of the cases that ran. */
const ran = new Set();

const resolve = (value, ctx) => (typeof value === "function" ? value(ctx) : value);

/** Sends a case's request; resolves with `{ status, headers, body }`. */
async function send(inst, req, raw) {
  if (raw) return rawRequest(inst.p.url, resolve(raw.head, inst), raw.body);
  const init = { method: req.method ?? "GET", headers: req.headers ?? {} };
  if (req.body !== undefined) {
    init.body = resolve(req.body, inst);
    if (init.body instanceof ReadableStream) init.duplex = "half";
  }
  const res = await inst.p.fetch(resolve(req.path, inst), init);
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

/** `{"error":{"code","message"}}`, exactly, with a message fit for clients. */
function assertErrorBody(reply, code) {
  assert.match(reply.headers.get("content-type") ?? "", /^application\/json\b/);
  const json = JSON.parse(reply.body.toString("utf8"));
  assert.deepEqual(Object.keys(json), ["error"]);
  assert.deepEqual(Object.keys(json.error).sort(), ["code", "message"]);
  assert.equal(json.error.code, code);
  assert.equal(typeof json.error.message, "string");
  assert.ok(json.error.message.length > 0, "a message");
  assert.doesNotMatch(json.error.message, /JsValue|TypeError|\n|\bat .+:\d+/, "no internal detail in the message");
}

function assertHeaders(reply, expected = {}) {
  for (const [name, want] of Object.entries(expected)) {
    const got = reply.headers.get(name);
    if (want === null) assert.equal(got, null, `no ${name} header`);
    else if (want instanceof RegExp) assert.match(got ?? "", want, `${name} header`);
    else assert.equal(got, want, `${name} header`);
  }
}

async function runCase(inst, c) {
  const before = await inst.keys();
  const reply = await send(inst, c.req, c.raw);
  const shown = reply.body.toString("utf8").slice(0, 300);
  assert.equal(reply.status, c.status, `status (body: ${shown})`);
  if (c.code) assert.equal(c.status, apiStatus(c.code), `the contract's status for ${c.code}`);
  assertHeaders(reply, c.headers);
  ran.add(c.name);

  if (c.platform) {
    // workerd's own refusal: the worker never ran, so this is not our JSON.
    assert.doesNotMatch(reply.headers.get("content-type") ?? "", /json/);
  } else if (c.empty) {
    assert.equal(reply.body.length, 0, "no body");
  } else if (c.code) {
    assertErrorBody(reply, c.code);
  }
  if (c.sameAsGet) {
    const getReply = await send(inst, { ...c.req, method: "GET" });
    assert.equal(reply.status, getReply.status, "HEAD answers like GET");
    assert.ok(getReply.body.length > 0, "GET has a body");
  }

  const after = await inst.keys();
  if (c.stored) {
    const accepted = JSON.parse(reply.body.toString("utf8"));
    assert.equal(accepted.status, status.queued);
    assert.equal(accepted.statusUrl, `/images/${accepted.imageId}`);
    assert.equal(reply.headers.get("location"), accepted.statusUrl);
    inst.accepted.set(accepted.imageId, c.undecodable ? outcome.failed : outcome.done);
    const added = after.filter((k) => !before.includes(k));
    assert.deepEqual(added, [keys.object(accepted.imageId, extensionOf(c.stored.type))], "exactly one new object");
    const object = await (await inst.p.bucket()).head(added[0]);
    assert.equal(object.httpMetadata.contentType, c.stored.type, "sniffed content type");
    assert.equal(object.size, c.stored.size);
  } else {
    assert.deepEqual(after, before, "nothing written to R2");
  }
  await inst.healthy();
}

/** Every message the tagger ever saw is an accepted upload's, and each was tagged once. */
async function assertOnlyAcceptedWereEnqueued(inst) {
  const { p, accepted } = inst;
  const seen = () => new Set(p.outcomes().filter((o) => o.queue === queues.images).map((o) => o.imageId));
  await waitFor(() => [...accepted.keys()].every((id) => seen().has(id)), { what: "every accepted upload to be tagged" });
  // Everything sent before this point has been processed and logged.
  await p.barrier();
  const outcomes = p.outcomes().filter((o) => o.queue === queues.images);
  const strays = outcomes.filter((o) => !accepted.has(o.imageId));
  assert.deepEqual(strays, [], "no message for a rejected request");
  assert.equal(outcomes.length, accepted.size, "one message per accepted upload");
  const wrong = outcomes.filter((o) => o.outcome !== accepted.get(o.imageId));
  assert.deepEqual(wrong, [], "each ended as planned: done, or failed if its bytes do not decode");
  for (const o of outcomes.filter((o) => o.outcome === outcome.failed)) assert.equal(o.errorCode, tagError.invalid_image);
  // Only images that decode reached the model, once each.
  const decodable = [...accepted.values()].filter((o) => o === outcome.done).length;
  assert.equal(p.ai.calls.length, decodable, "one AI call per accepted upload that decodes");
}

const open = { inst: null };
const auth = { inst: null };
const started = Date.now();

before(async () => {
  const [p1, p2] = await Promise.all([
    startPipeline({ queues: FAST_QUEUES, vars: { upload: { MAX_UPLOAD_BYTES: String(LIMIT), ALLOWED_ORIGINS: ALLOWED_ORIGIN } } }),
    startPipeline({ queues: FAST_QUEUES, vars: { upload: { MAX_UPLOAD_BYTES: String(LIMIT), API_TOKEN: TOKEN } } }),
  ]);
  open.inst = new Instance(p1);
  auth.inst = new Instance(p2, { auth: true });
  for (const inst of [open.inst, auth.inst]) {
    inst.known = await inst.upload(png(512));
    await waitFor(
      async () => (await (await inst.p.fetch(`/images/${inst.known}`, { headers: inst.auth })).json()).status === status.done,
      { what: "the known image to be tagged" },
    );
  }
});

after(async () => {
  await Promise.all([open.inst?.p.close(), auth.inst?.p.close()]);
});

describe("bad input, anonymous API (MAX_UPLOAD_BYTES=4096, ALLOWED_ORIGINS set)", () => {
  for (const c of CASES.filter((c) => c.on !== "auth")) {
    test(c.name, () => runCase(open.inst, c));
  }

  test("a repeated Idempotency-Key answers 200 with the same id for the same body, 422 for another; one object, one AI call", async () => {
    const inst = open.inst;
    const key = `bad-input-${Date.now()}`;
    const image = png(700);
    const other = png(700);
    const before = await inst.keys();
    const send = (bytes) =>
      inst.p.fetch("/images", { method: "POST", body: bytes, headers: { "idempotency-key": key, "content-type": "image/png" } });

    const first = await send(image);
    assert.equal(first.status, 202);
    const { imageId } = await first.json();
    inst.accepted.set(imageId, outcome.done);
    const again = await send(image);
    assert.equal(again.status, 200, "a repeat is answered 200");
    assert.deepEqual(await again.json(), { imageId, status: status.queued, statusUrl: `/images/${imageId}` });
    assert.equal(again.headers.get("location"), `/images/${imageId}`);
    const reused = await send(other);
    assert.equal(reused.status, apiStatus(apiError.idempotency_key_reused));
    assert.equal((await reused.json()).error.code, apiError.idempotency_key_reused);
    assert.deepEqual(await inst.keys(), [...before, keys.object(imageId, extensionOf("image/png"))].sort(), "one object");
    await waitFor(() => inst.p.ai.callsFor(image).length > 0, { what: "the AI call" });
    // After a queue barrier, a duplicate message would have been tagged.
    await inst.p.barrier();
    assert.equal(inst.p.ai.callsFor(image).length, 1, "one AI call");
    assert.equal(inst.p.ai.callsFor(other).length, 0, "the second body was never enqueued");
    await inst.healthy();
  });

  test("only accepted uploads were ever enqueued", () => assertOnlyAcceptedWereEnqueued(open.inst));
});

describe("bad input, with API_TOKEN", () => {
  for (const c of CASES.filter((c) => c.on === "auth")) {
    test(c.name, () => runCase(auth.inst, c));
  }

  test("only accepted uploads were ever enqueued", () => assertOnlyAcceptedWereEnqueued(auth.inst));
});

/**
 * API error codes no bad-input case can bring about, and why. Every other code in the
 * contract must be what some case in the table expects, so a new code needs a case.
 */
const NOT_FROM_BAD_INPUT = {
  [apiError.internal_error]: "a bug in the worker, not something input can cause",
  [apiError.unavailable]: "a failing dependency: tests/faults.test.mjs",
  [apiError.invalid_content_length]: "workerd refuses such requests before the worker runs (the `platform` cases)",
  [apiError.idempotency_key_in_flight]: "needs two requests at once: tests/system-of-record.test.mjs",
  [apiError.idempotency_key_reused]: "needs an earlier request: the Idempotency-Key test below",
  [apiError.auth_not_configured]: "needs a deployment without API_TOKEN and ALLOW_ANONYMOUS: tests/api-keys.test.mjs",
  [apiError.insufficient_scope]: "needs a client key made first: tests/api-keys.test.mjs",
  [apiError.rate_limited]: "needs many earlier uploads: tests/api-keys.test.mjs",
  [apiError.quota_exceeded]: "needs earlier uploads of a key with a quota: tests/api-keys.test.mjs",
  [apiError.image_deleted]: "needs a DELETE during the upload: tests/state-races.test.mjs",
};

test("every case ran once, and every API error code a request can cause has a case", (t) => {
  const names = CASES.map((c) => c.name);
  assert.equal(new Set(names).size, names.length, "case names are unique");
  assert.deepEqual(names.filter((n) => !ran.has(n)), [], "cases that never ran");
  assert.ok(CASES.every((c) => c.on === undefined || c.on === "auth"), "`on` is unset or auth");
  const covered = new Set(CASES.map((c) => c.code).filter(Boolean));
  const missing = Object.values(apiError).filter((code) => !covered.has(code) && !(code in NOT_FROM_BAD_INPUT));
  assert.deepEqual(missing, [], "API error codes no case expects");
  const line = `${CASES.length} bad-input cases (${CASES.filter((c) => c.on === "auth").length} with API_TOKEN) in ${((Date.now() - started) / 1000).toFixed(1)} s`;
  t.diagnostic(line);
});
