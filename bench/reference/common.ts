// What the TS upload variants (upload.ts, upload-streaming.ts, upload-d1.ts) share besides
// `sniff`: the JSON answers, the buffered body read, the queue send with its undo and its
// 202, and the status routes. Each variant keeps only what makes it a variant.

/// <reference path="./workers-types.d.ts" />

import { SCHEMA_VERSION, recordKey, type ImageMessage, type TagRecord } from "./types";
import { sniff, type ImageType } from "./sniff";

const DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024;
const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** The largest upload `MAX_UPLOAD_BYTES` allows. */
export function uploadLimit(env: { MAX_UPLOAD_BYTES?: string }): number {
  return Number(env.MAX_UPLOAD_BYTES) || DEFAULT_MAX_UPLOAD_BYTES;
}

export function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return Response.json(body, { status, headers });
}

export function error(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return json({ error: { code, message } }, status, headers);
}

/** The body, buffered (`arrayBuffer()`, the tutorial's way) and checked; or the error answer. */
export async function readImage(request: Request, limit: number): Promise<{ bytes: ArrayBuffer; type: ImageType } | Response> {
  const declared = Number(request.headers.get("content-length") ?? 0);
  if (declared > limit) return error(413, "payload_too_large", `the image is larger than ${limit} bytes`);
  const bytes = await request.arrayBuffer();
  if (bytes.byteLength === 0) return error(400, "empty_body", "the request has no body; send the image bytes");
  if (bytes.byteLength > limit) return error(413, "payload_too_large", `the image is larger than ${limit} bytes`);
  const type = sniff(new Uint8Array(bytes, 0, Math.min(12, bytes.byteLength)));
  if (!type) return error(415, "unsupported_media_type", "only JPEG, PNG, GIF and WebP images are accepted");
  return { bytes, type };
}

/**
 * Sends the stored image's message and answers `202`; if the send fails, `undo` removes what
 * was stored (nothing must stay that no message will ever tag) and the answer is `503`.
 */
export async function enqueue(
  queue: Queue<ImageMessage>,
  image: Omit<ImageMessage, "schemaVersion">,
  undo: () => Promise<unknown>,
): Promise<Response> {
  try {
    await queue.send({ schemaVersion: SCHEMA_VERSION, ...image });
  } catch (e) {
    await undo();
    console.error(`queue send failed for ${image.imageId}`, e);
    return error(503, "unavailable", "a storage service is unavailable; try again");
  }
  const statusUrl = `/images/${image.imageId}`;
  return json({ imageId: image.imageId, status: "queued", statusUrl }, 202, { location: statusUrl });
}

export interface StatusEnv {
  IMAGE_BUCKET: R2Bucket;
  RESULTS_KV: KVNamespace;
}

async function status(env: StatusEnv, imageId: string, tagsOnly: boolean): Promise<Response> {
  const record = await env.RESULTS_KV.get<TagRecord>(recordKey(imageId), "json");
  if (record) {
    if (tagsOnly && record.status === "done") return json({ imageId, tags: record.tags });
    return json(record);
  }
  const stored = await env.IMAGE_BUCKET.list({ prefix: `images/${imageId}.`, limit: 1 });
  if (stored.objects.length > 0) return json({ imageId, status: "queued" });
  return error(404, "image_not_found", "no image with this id");
}

/**
 * The tutorial worker's routes: `POST /images` (and `/`) to `upload`, `GET /` describing the
 * service, `GET /images/{id}` and `/images/{id}/tags` from KV.
 */
export function route<E extends StatusEnv>(
  request: Request,
  env: E,
  service: string,
  upload: (request: Request, env: E) => Promise<Response>,
): Promise<Response> | Response {
  const { pathname } = new URL(request.url);
  const method = request.method;

  if (pathname === "/" || pathname === "/images" || pathname === "/images/") {
    if (method === "POST") return upload(request, env);
    if (pathname === "/" && (method === "GET" || method === "HEAD")) {
      return json({
        service,
        upload: "POST /images with the image bytes as the body",
        status: "GET /images/{id}",
        tags: "GET /images/{id}/tags",
      });
    }
    const allow = pathname === "/" ? "GET, HEAD, POST" : "POST";
    return error(405, "method_not_allowed", `method not allowed; use one of: ${allow}`, { allow });
  }

  const match = pathname.match(/^\/images\/([^/]+)(\/tags)?\/?$/);
  if (!match) return error(404, "not_found", "no such route");
  const [, imageId, tags] = match;
  if (!ID.test(imageId)) {
    return error(400, "invalid_id", "image ids are lowercase version 4 UUIDs");
  }
  if (method !== "GET" && method !== "HEAD") {
    return error(405, "method_not_allowed", "method not allowed; use one of: GET, HEAD", { allow: "GET, HEAD" });
  }
  return status(env, imageId, Boolean(tags));
}
