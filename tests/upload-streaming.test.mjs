// Large uploads through the upload worker alone (no tagger), over its own socket: multipart
// forms streamed into R2 (one put, or a multipart upload past one 5 MiB part), the pixel
// limit read from image headers before anything is stored, and the body's SHA-256.
//
// A small JS worker consumes the queue instead of the tagger, so that each test can read the
// message it caused.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import net from "node:net";
import { crc32, deflateSync } from "node:zlib";
import { Miniflare } from "miniflare";
import sharp from "sharp";

import { startPipeline, waitFor } from "../local/pipeline.mjs";
import { bindings, contract, queues, sql } from "../local/contract.mjs";
import { chunkedStream } from "../local/util.mjs";

const KiB = 1024;
const MiB = 1024 * KiB;
const BOUNDARY = "----streaming-test-b0undary";
const MULTIPART = `multipart/form-data; boundary=${BOUNDARY}`;
const LIMIT = 32 * MiB;
const MAX_PIXELS = 1_000_000;

let p;
let mf;
let base;

before(async () => {
  p = await startPipeline({
    vars: { upload: { MAX_UPLOAD_BYTES: String(LIMIT), MAX_PIXELS: String(MAX_PIXELS) } },
    // Wrapped (no faults are set) so that tests can see the multipart calls reach R2.
    faults: [bindings.imageBucket],
    workerOverrides: {
      upload: { unsafeDirectSockets: [{ host: "127.0.0.1", port: 0 }] },
      // The sink below takes the image queue instead of the tagger.
      tagger: { queueConsumers: {} },
    },
    extraWorkers: [
      {
        name: "queue-sink",
        modules: true,
        script: `const seen = [];
          export default {
            async queue(batch) { for (const m of batch.messages) { seen.push(m.body); m.ack(); } },
            async fetch() { return Response.json(seen); },
          };`,
        queueConsumers: { [queues.images]: { maxBatchSize: 10, maxBatchTimeout: 0.2 } },
      },
    ],
  });
  mf = p.mf;
  base = new URL(await mf.unsafeGetDirectURL(p.names.upload));
});

after(async () => {
  await p?.close();
});

// ---------------------------------------------------------------------------------------
// Helpers.

const bucket = () => p.bucket();

async function keys() {
  const listed = await (await bucket()).list();
  return listed.objects.map((o) => o.key).sort();
}

/** The queue message of an image, once the sink has it. */
async function message(imageId) {
  const deadline = Date.now() + 60_000; // a bound, not an expectation: a busy machine is slow
  while (Date.now() < deadline) {
    const sink = await mf.getWorker("queue-sink");
    const seen = await (await sink.fetch("http://sink/")).json();
    const found = seen.find((m) => m.imageId === imageId);
    if (found) return found;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`no queue message for ${imageId}`);
}

/**
 * POSTs to the worker's own socket, on a new connection each time (a kept-alive one is
 * sometimes closed by workerd as the next request arrives on it): a Buffer goes with
 * Content-Length, a stream chunked.
 */
function post(body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(new URL("/images", base), { method: "POST", headers, agent: false, timeout: 60_000 }, (res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        try {
          resolve({ status: res.statusCode, json: JSON.parse(Buffer.concat(chunks).toString("utf8")) });
        } catch (e) {
          reject(e);
        }
      });
      res.on("error", reject);
    });
    req.on("error", reject);
    req.on("timeout", () => req.destroy(new Error("no answer within 60 s")));
    if (!(body instanceof ReadableStream)) return req.end(body);
    (async () => {
      for await (const chunk of body) {
        if (!req.write(chunk)) await new Promise((r) => req.once("drain", r));
      }
      req.end();
    })().catch(reject);
  });
}

/** A form, byte for byte: `parts` are `{ name, filename?, type?, body }`. */
function form(parts, { close = true } = {}) {
  const out = [];
  for (const p of parts) {
    let head = `--${BOUNDARY}\r\nContent-Disposition: form-data; name="${p.name}"`;
    if (p.filename !== undefined) head += `; filename="${p.filename}"`;
    if (p.type) head += `\r\nContent-Type: ${p.type}`;
    out.push(Buffer.from(`${head}\r\n\r\n`), p.body, Buffer.from("\r\n"));
  }
  if (close) out.push(Buffer.from(`--${BOUNDARY}--\r\n`));
  return Buffer.concat(out);
}

const file = (body, type = "image/png", name = "image") => ({ name, filename: "photo", type, body });
const field = (name, body) => ({ name, body: Buffer.from(body) });

/** A PNG signature and IHDR of `width`×`height`, then `size` bytes in all (random data). */
function pngOf(width, height, size = 1024) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  const head = Buffer.concat([Buffer.from("89504e470d0a1a0a", "hex"), pngChunk("IHDR", ihdr)]);
  return Buffer.concat([head, randomBytes(Math.max(0, size - head.length))]);
}

function pngChunk(type, data) {
  const typed = Buffer.concat([Buffer.from(type, "ascii"), data]);
  const out = Buffer.alloc(8 + typed.length);
  out.writeUInt32BE(data.length, 0);
  typed.copy(out, 4);
  out.writeUInt32BE(crc32(typed), 4 + typed.length);
  return out;
}

/** A whole, small PNG whose IHDR claims 30000×30000: a decompression bomb's header. */
function bomb() {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(30000, 0);
  ihdr.writeUInt32BE(30000, 4);
  ihdr[8] = 8;
  ihdr[9] = 2;
  // A few rows of zeros; a real bomb's IDAT would expand to 2.7 GB.
  const idat = deflateSync(Buffer.alloc(30000 * 3 + 1));
  return Buffer.concat([
    Buffer.from("89504e470d0a1a0a", "hex"),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", idat),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

/** A real JPEG of `width`×`height` with `appBytes` of APP1/APP2 segments before its frame header. */
async function jpegWithApp(width, height, appBytes) {
  const plain = await sharp({ create: { width, height, channels: 3, background: { r: 200, g: 90, b: 30 } } })
    .jpeg({ quality: 50 })
    .toBuffer();
  const segments = [];
  for (let left = appBytes, marker = 0xe1; left > 0; marker = marker === 0xe1 ? 0xe2 : 0xe1) {
    const n = Math.min(left, 65533);
    const seg = Buffer.alloc(4 + n, 0x45);
    seg[0] = 0xff;
    seg[1] = marker;
    seg.writeUInt16BE(n + 2, 2);
    segments.push(seg);
    left -= n;
  }
  return Buffer.concat([plain.subarray(0, 2), ...segments, plain.subarray(2)]);
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

/** The stored object's bytes and metadata. */
async function stored(imageId, ext) {
  const object = await (await bucket()).get(`images/${imageId}.${ext}`);
  assert.ok(object, `images/${imageId}.${ext} is stored`);
  return { bytes: Buffer.from(await object.arrayBuffer()), object };
}

async function assertStored(reply, bytes, { type = "image/png", ext = "png" } = {}) {
  assert.equal(reply.status, 202, JSON.stringify(reply.json));
  const { imageId } = reply.json;
  const { bytes: got, object } = await stored(imageId, ext);
  assert.equal(object.size, bytes.length, "size");
  assert.ok(got.equals(bytes), "stored byte for byte");
  assert.equal(object.httpMetadata.contentType, type);
  assert.ok(!Number.isNaN(Date.parse(object.customMetadata.uploadedAt)), "uploadedAt");
  const sent = await message(imageId);
  assert.equal(sent.size, bytes.length, "the queue message's size");
  assert.equal(sent.r2Key, `images/${imageId}.${ext}`);
  return imageId;
}

async function assertRefused(reply, status, code, before) {
  assert.equal(reply.status, status, JSON.stringify(reply.json));
  assert.equal(reply.json.error.code, code);
  assert.deepEqual(await keys(), before, "nothing stored");
}

// ---------------------------------------------------------------------------------------
// Forms.

test("a form with the file first and a 1 MiB text field after it: the file is stored intact", async () => {
  const image = pngOf(640, 480, 300 * KiB);
  const body = form([file(image), field("notes", "n".repeat(MiB)), field("tag", "cat")]);
  await assertStored(await post(body, { "content-type": MULTIPART }), image);
  // Chunked, in pieces that cut through delimiters and headers.
  await assertStored(await post(chunkedStream(body, 997), { "content-type": MULTIPART }), image);
});

test("a form larger than one R2 part goes up as a multipart upload, intact", async () => {
  const image = pngOf(1000, 1000, 12 * MiB + 333);
  const body = form([field("before", "x".repeat(70 * KiB)), file(image), field("after", "y".repeat(MiB))]);
  const id = await assertStored(await post(body, { "content-type": MULTIPART }), image);
  const { object } = await stored(id, "png");
  // A multipart upload's etag is `<md5 of the part md5s>-<parts>`: 5 + 5 + 2 MiB.
  assert.match(object.httpEtag ?? object.etag, /-3"?$/, "stored in three parts");
  await assertStored(await post(chunkedStream(body, 64 * KiB + 1), { "content-type": MULTIPART }), image);
});

test("a raw body without Content-Length larger than one part is stored intact", async () => {
  const image = pngOf(1000, 1000, 11 * MiB);
  await assertStored(await post(chunkedStream(image, 256 * KiB), { "content-type": "image/png" }), image);
});

test("a form found invalid after its file has streamed stores nothing", async () => {
  const before = await keys();
  for (const size of [100 * KiB, 6 * MiB]) {
    const image = pngOf(100, 100, size);
    const twoFiles = form([file(image), file(pngOf(10, 10), "image/png", "file")]);
    await assertRefused(await post(twoFiles, { "content-type": MULTIPART }), 400, "invalid_multipart", before);
    const notAFile = form([file(image), field("image", "text")]);
    await assertRefused(await post(notAFile, { "content-type": MULTIPART }), 400, "invalid_multipart", before);
    const unclosed = form([file(image)], { close: false });
    await assertRefused(await post(chunkedStream(unclosed, 100 * KiB), { "content-type": MULTIPART }), 400, "invalid_multipart", before);
  }
  // Past the limit, counted while streaming (no Content-Length).
  const huge = form([file(pngOf(100, 100, LIMIT))]);
  await assertRefused(await post(chunkedStream(huge, MiB), { "content-type": MULTIPART }), 413, "payload_too_large", before);
});

test("a client that disconnects in the middle of a large form leaves nothing stored", async () => {
  const before = await keys();
  const r2 = p.faults[bindings.imageBucket];
  const begun = r2.opsMatching({ op: "createMultipartUpload" }).length;
  const body = form([file(pngOf(100, 100, 9 * MiB))]);
  await new Promise((resolve, reject) => {
    const socket = net.connect(Number(base.port), base.hostname, () => {
      socket.write(
        `POST /images HTTP/1.1\r\nHost: ${base.host}\r\nContent-Type: ${MULTIPART}\r\n` +
          `Content-Length: ${body.length}\r\n\r\n`,
      );
      // Past the first part (5 MiB); the client leaves once the multipart upload has begun.
      socket.write(body.subarray(0, 7 * MiB), () => {
        waitFor(() => r2.opsMatching({ op: "createMultipartUpload" }).length > begun, { what: "the multipart upload to begin" })
          .then(() => socket.destroy(), (e) => socket.destroy(e));
      });
    });
    socket.on("close", resolve);
    socket.on("error", reject);
  });
  // The worker saw the body break off and aborted its multipart upload: it is done with it.
  const created = r2.opsMatching({ op: "createMultipartUpload" })[begun];
  await waitFor(() => r2.opsMatching({ op: "abortMultipartUpload", key: created.key }).length === 1, {
    what: "the multipart upload to be aborted",
  });
  assert.deepEqual(r2.opsMatching({ op: "completeMultipartUpload", key: created.key }), [], "never completed");
  assert.deepEqual(await keys(), before, "nothing stored");
  // The worker still serves.
  const image = pngOf(10, 10, 2 * KiB);
  await assertStored(await post(form([file(image)]), { "content-type": MULTIPART }), image);
});

// ---------------------------------------------------------------------------------------
// Pixels (MAX_PIXELS = 1,000,000 here).

test("a decompression bomb (a small PNG claiming 30000x30000) is refused with 413, nothing stored", async () => {
  const before = await keys();
  const png = bomb();
  assert.ok(png.length < 2 * KiB);
  const refused = await post(png, { "content-type": "image/png" });
  await assertRefused(refused, 413, "image_too_large", before);
  assert.match(refused.json.error.message, /30000x30000/);
  await assertRefused(await post(chunkedStream(png, 7)), 413, "image_too_large", before);
  await assertRefused(await post(form([file(png)]), { "content-type": MULTIPART }), 413, "image_too_large", before);
  // Streamed (over 1 MiB with a Content-Length): refused from the first chunk.
  const big = pngOf(30000, 30000, 3 * MiB);
  await assertRefused(await post(big, { "content-type": "image/png" }), 413, "image_too_large", before);
});

test("a large body refused from its head still gets its error response, not a reset", async () => {
  const before = await keys();
  const bomb = pngOf(30000, 30000, 4 * MiB);
  const html = Buffer.concat([Buffer.from("<html>"), Buffer.alloc(4 * MiB, "x")]);
  for (let i = 0; i < 5; i++) {
    await assertRefused(await post(bomb, { "content-type": "image/png" }), 413, "image_too_large", before);
    await assertRefused(await post(chunkedStream(html, 64 * KiB)), 415, "unsupported_media_type", before);
    const htmlForm = form([file(html, "text/html")]);
    await assertRefused(await post(htmlForm, { "content-type": MULTIPART }), 415, "unsupported_media_type", before);
  }
});

test("a JPEG whose frame header follows 100 KiB of APP segments is measured", async () => {
  const before = await keys();
  const tooBig = await jpegWithApp(1250, 1000, 100 * KiB);
  const refused = await post(tooBig, { "content-type": "image/jpeg" });
  await assertRefused(refused, 413, "image_too_large", before);
  assert.match(refused.json.error.message, /1250x1000/);
  await assertRefused(await post(chunkedStream(tooBig, 4 * KiB)), 413, "image_too_large", before);
  await assertRefused(await post(form([file(tooBig, "image/jpeg")]), { "content-type": MULTIPART }), 413, "image_too_large", before);

  const fits = await jpegWithApp(1000, 1000, 100 * KiB);
  await assertStored(await post(fits, { "content-type": "image/jpeg" }), fits, { type: "image/jpeg", ext: "jpg" });
  const form1 = form([file(fits, "image/jpeg"), field("n", "1")]);
  await assertStored(await post(chunkedStream(form1, 3000), { "content-type": MULTIPART }), fits, { type: "image/jpeg", ext: "jpg" });
  // Streamed, with the frame header past the first chunks.
  const large = Buffer.concat([await jpegWithApp(1000, 1000, 100 * KiB), randomBytes(2 * MiB)]);
  await assertStored(await post(large), large, { type: "image/jpeg", ext: "jpg" });
});

test("past 256 KiB of head the size is left to the tagger: such a JPEG is accepted", async () => {
  const jpeg = await jpegWithApp(1250, 1000, 300 * KiB);
  await assertStored(await post(jpeg, { "content-type": "image/jpeg" }), jpeg, { type: "image/jpeg", ext: "jpg" });
});

// ---------------------------------------------------------------------------------------
// The body's SHA-256, computed while streaming when an Idempotency-Key is sent, and what
// binds the key to the body.

test("the body's SHA-256 binds an Idempotency-Key, whatever the path", async () => {
  const image = pngOf(100, 100, 3 * MiB);
  const formFile = pngOf(100, 100, 6 * MiB);
  const multipart = form([file(formFile), field("n", "x".repeat(100 * KiB))]);
  const formDigested = Buffer.concat([Buffer.from(`${contract.idempotency.formDigestPrefix}image/png\n`), formFile]);
  const small = pngOf(10, 10, 200 * KiB);
  const cases = [
    { name: "buffered", body: () => small, file: small, headers: {} },
    { name: "streamed with Content-Length", body: () => image, file: image, headers: {} },
    { name: "chunked", body: () => chunkedStream(image, 100 * KiB), bytes: image, file: image, headers: {} },
    // A form's digest covers its file part's declared type and bytes only.
    { name: "form", body: () => multipart, bytes: formDigested, file: formFile, headers: { "content-type": MULTIPART } },
    { name: "chunked form", body: () => chunkedStream(multipart, 50 * KiB), bytes: formDigested, file: formFile, headers: { "content-type": MULTIPART } },
  ];
  const db = await p.db();
  for (const c of cases) {
    const key = `digest-${c.name.replaceAll(" ", "-")}-${Date.now()}`;
    const body = c.body();
    const first = await post(body, { ...c.headers, "idempotency-key": key }).catch((e) => {
      throw new Error(`${c.name}: ${e}`);
    });
    await assertStored(first, c.file);
    const row = await db.prepare(sql.selectKey).bind("anonymous", key).first();
    assert.equal(row?.body_sha256, sha256(c.bytes ?? body), `${c.name}: the key is bound to the body's digest`);
    // A repeat only hashes the body, and finds the same digest.
    const before = await keys();
    const again = await post(c.body(), { ...c.headers, "idempotency-key": key }).catch((e) => {
      throw new Error(`${c.name}, repeat: ${e}`);
    });
    assert.equal(again.status, 200, c.name);
    assert.equal(again.json.imageId, first.json.imageId);
    assert.deepEqual(await keys(), before, "a repeat stores nothing");
  }
});
