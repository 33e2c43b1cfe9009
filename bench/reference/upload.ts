// Reference upload worker in TypeScript, following Cloudflare's tutorial design: buffer the
// request body with `request.arrayBuffer()`, put it into R2, send a message to the queue,
// answer 202. Same HTTP contract, bindings, message and record shapes as the Rust upload
// worker, so that the two can be benchmarked against each other (bench/run.mjs). It leaves
// out what the benchmark does not exercise: bearer auth, CORS, idempotency keys and
// multipart uploads.

/// <reference path="./workers-types.d.ts" />

import { SCHEMA_VERSION, recordKey, type ImageMessage, type TagRecord } from "./types";
import { sniff } from "./sniff";

export interface Env {
  IMAGE_BUCKET: R2Bucket;
  IMAGE_QUEUE: Queue<ImageMessage>;
  RESULTS_KV: KVNamespace;
  MAX_UPLOAD_BYTES?: string;
}

const DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024;
const ID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return Response.json(body, { status, headers });
}

function error(status: number, code: string, message: string, headers: Record<string, string> = {}): Response {
  return json({ error: { code, message } }, status, headers);
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
  const uploadedAt = new Date().toISOString();
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
    // Nothing must stay in R2 that no message will ever tag.
    await env.IMAGE_BUCKET.delete(r2Key);
    console.error(`queue send failed for ${imageId}`, e);
    return error(503, "unavailable", "a storage service is unavailable; try again");
  }

  const statusUrl = `/images/${imageId}`;
  return json({ imageId, status: "queued", statusUrl }, 202, { location: statusUrl });
}

async function status(env: Env, imageId: string, tagsOnly: boolean): Promise<Response> {
  const record = await env.RESULTS_KV.get<TagRecord>(recordKey(imageId), "json");
  if (record) {
    if (tagsOnly && record.status === "done") return json({ imageId, tags: record.tags });
    return json(record);
  }
  const stored = await env.IMAGE_BUCKET.list({ prefix: `images/${imageId}.`, limit: 1 });
  if (stored.objects.length > 0) return json({ imageId, status: "queued" });
  return error(404, "image_not_found", "no image with this id");
}

export default {
  async fetch(request, env): Promise<Response> {
    const { pathname } = new URL(request.url);
    const method = request.method;

    if (pathname === "/" || pathname === "/images" || pathname === "/images/") {
      if (method === "POST") return upload(request, env);
      if (pathname === "/" && (method === "GET" || method === "HEAD")) {
        return json({
          service: "ts-upload-worker",
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
  },
} satisfies ExportedHandler<Env>;
