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
import type { ImageMessage } from "./types";
import { enqueue, error, readImage, uploadLimit } from "./common";

export interface Env {
  IMAGE_BUCKET: R2Bucket;
  IMAGE_QUEUE: Queue<ImageMessage>;
  DB: D1Database;
  API_TOKEN?: string;
  MAX_UPLOAD_BYTES?: string;
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
  const read = await readImage(request, uploadLimit(env));
  if (read instanceof Response) return read;
  const { bytes, type } = read;

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

  return enqueue(env.IMAGE_QUEUE, { imageId, r2Key, contentType: type.mime, size: bytes.byteLength, uploadedAt }, async () => {
    await env.IMAGE_BUCKET.delete(r2Key);
    await env.DB.prepare("DELETE FROM images WHERE id = ?1").bind(imageId).run();
  });
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
