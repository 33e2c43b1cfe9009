// Reference upload worker in TypeScript, following Cloudflare's tutorial design: buffer the
// request body with `request.arrayBuffer()`, put it into R2, send a message to the queue,
// answer 202. Same HTTP contract, bindings, message and record shapes as the Rust upload
// worker, so that the two can be benchmarked against each other (bench/run.mjs). It leaves
// out what the benchmark does not exercise: bearer auth, CORS, idempotency keys and
// multipart uploads.

/// <reference path="./workers-types.d.ts" />

import type { ImageMessage } from "./types";
import { enqueue, readImage, route, uploadLimit } from "./common";

export interface Env {
  IMAGE_BUCKET: R2Bucket;
  IMAGE_QUEUE: Queue<ImageMessage>;
  RESULTS_KV: KVNamespace;
  MAX_UPLOAD_BYTES?: string;
}

async function upload(request: Request, env: Env): Promise<Response> {
  const read = await readImage(request, uploadLimit(env));
  if (read instanceof Response) return read;
  const { bytes, type } = read;

  const imageId = crypto.randomUUID();
  const r2Key = `images/${imageId}.${type.ext}`;
  const uploadedAt = new Date().toISOString();
  await env.IMAGE_BUCKET.put(r2Key, bytes, {
    httpMetadata: { contentType: type.mime },
    customMetadata: { uploadedAt },
  });

  return enqueue(env.IMAGE_QUEUE, { imageId, r2Key, contentType: type.mime, size: bytes.byteLength, uploadedAt }, () =>
    env.IMAGE_BUCKET.delete(r2Key),
  );
}

export default {
  fetch: (request, env) => route(request, env, "ts-upload-worker", upload),
} satisfies ExportedHandler<Env>;
