// The fair reference for the upload path (issue 25): the tutorial design of upload.ts, doing
// the work the Rust upload worker does that the benchmark exercises. It checks the operator
// key (`Authorization: Bearer <API_TOKEN>`, compared in constant time), and records the
// image's row in D1 before storing it, with the Rust worker's own statement (`INSERT_QUEUED`
// of crates/shared/src/storage/images.rs, read from the generated contract) on the same
// migrations, so the row exists before the 202. Then R2 put, queue send, 202, as upload.ts.
// Like upload.ts it leaves out what the benchmark does not exercise: client keys, CORS,
// idempotency keys, callbacks, multipart, the pixel check.

/// <reference path="./workers-types.d.ts" />

import { auth, sql } from "../../local/contract.json";
import { SCHEMA_VERSION, type ImageMessage } from "./types";
import { sniff } from "./sniff";

export interface Env {
  IMAGE_BUCKET: R2Bucket;
  IMAGE_QUEUE: Queue<ImageMessage>;
  DB: D1Database;
  API_TOKEN?: string;
  MAX_UPLOAD_BYTES?: string;
}

const DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024;

function error(status: number, code: string, message: string): Response {
  return Response.json({ error: { code, message } }, { status });
}

const encoder = new TextEncoder();

/** Whether the request carries the operator key. */
function authorized(request: Request, env: Env): boolean {
  const header = request.headers.get("authorization") ?? "";
  if (!env.API_TOKEN || !header.startsWith("Bearer ")) return false;
  const given = encoder.encode(header.slice(7));
  const token = encoder.encode(env.API_TOKEN);
  return given.byteLength === token.byteLength && crypto.subtle.timingSafeEqual(given, token);
}

async function upload(request: Request, env: Env): Promise<Response> {
  const limit = Number(env.MAX_UPLOAD_BYTES) || DEFAULT_MAX_UPLOAD_BYTES;
  const declared = Number(request.headers.get("content-length") ?? 0);
  if (declared > limit) return error(413, "payload_too_large", `the image is larger than ${limit} bytes`);

  const bytes = await request.arrayBuffer();
  if (bytes.byteLength === 0) return error(400, "empty_body", "the request has no body; send the image bytes");
  if (bytes.byteLength > limit) return error(413, "payload_too_large", `the image is larger than ${limit} bytes`);
  const type = sniff(new Uint8Array(bytes, 0, Math.min(12, bytes.byteLength)));
  if (!type) return error(415, "unsupported_media_type", "only JPEG, PNG, GIF and WebP images are accepted");

  const imageId = crypto.randomUUID();
  const r2Key = `images/${imageId}.${type.ext}`;
  const now = Date.now();
  const uploadedAt = new Date(now).toISOString();
  // The row first: the image exists in the system of record before its bytes do.
  await env.DB.prepare(sql.insertQueued)
    .bind(imageId, r2Key, type.mime, bytes.byteLength, now, auth.owners.operator)
    .run();
  await env.IMAGE_BUCKET.put(r2Key, bytes, {
    httpMetadata: { contentType: type.mime },
    customMetadata: { uploadedAt },
  });

  const message: ImageMessage = {
    schemaVersion: SCHEMA_VERSION,
    imageId,
    r2Key,
    contentType: type.mime,
    size: bytes.byteLength,
    uploadedAt,
  };
  try {
    await env.IMAGE_QUEUE.send(message);
  } catch (e) {
    // Nothing must stay recorded or stored that no message will ever tag.
    await env.IMAGE_BUCKET.delete(r2Key);
    await env.DB.prepare("DELETE FROM images WHERE id = ?1").bind(imageId).run();
    console.error(`queue send failed for ${imageId}`, e);
    return error(503, "unavailable", "a storage service is unavailable; try again");
  }

  const statusUrl = `/images/${imageId}`;
  return Response.json({ imageId, status: "queued", statusUrl }, { status: 202, headers: { location: statusUrl } });
}

export default {
  async fetch(request, env): Promise<Response> {
    const { pathname } = new URL(request.url);
    if (pathname !== "/images" && pathname !== "/images/") return error(404, "not_found", "no such route");
    if (request.method !== "POST") return error(405, "method_not_allowed", "method not allowed; use one of: POST");
    if (!authorized(request, env)) return error(401, "unauthorized", "a valid bearer token is required");
    return upload(request, env);
  },
} satisfies ExportedHandler<Env>;
