// Ablation for bench/profile.mjs, not part of the benchmark proper: the reference upload
// worker (upload.ts) with its POST path changed to stream the body the way the Rust worker
// does (tee, sniff a prefix, FixedLengthStream into R2), everything else equal. Profiling
// it tells the cost of the streaming design apart from the cost of Rust/wasm.

/// <reference path="./workers-types.d.ts" />

import type { ImageMessage } from "./types";
import { sniff } from "./sniff";
import { enqueue, error, route, uploadLimit } from "./common";

export interface Env {
  IMAGE_BUCKET: R2Bucket;
  IMAGE_QUEUE: Queue<ImageMessage>;
  RESULTS_KV: KVNamespace;
  MAX_UPLOAD_BYTES?: string;
}

async function upload(request: Request, env: Env): Promise<Response> {
  const limit = uploadLimit(env);
  const size = Number(request.headers.get("content-length") ?? 0);
  if (size > limit) return error(413, "payload_too_large", `the image is larger than ${limit} bytes`);
  if (!request.body || size === 0) return error(400, "empty_body", "the request has no body; send the image bytes");

  // As the Rust worker does: tee the body, sniff the first bytes of one branch, and stream
  // the other through a FixedLengthStream into R2.
  const [sniffer, rest] = request.body.tee();
  const reader = sniffer.getReader();
  const head = new Uint8Array(12);
  let filled = 0;
  while (filled < head.length) {
    const { done, value } = await reader.read();
    if (done) break;
    const take = Math.min(head.length - filled, value.byteLength);
    head.set(value.subarray(0, take), filled);
    filled += take;
  }
  reader.cancel().catch(() => {});
  const type = sniff(head.subarray(0, filled));
  if (!type) return error(415, "unsupported_media_type", "only JPEG, PNG, GIF and WebP images are accepted");

  const imageId = crypto.randomUUID();
  const r2Key = `images/${imageId}.${type.ext}`;
  const uploadedAt = new Date().toISOString();
  const fixed = new FixedLengthStream(size);
  const feeding = rest.pipeTo(fixed.writable);
  await env.IMAGE_BUCKET.put(r2Key, fixed.readable, {
    httpMetadata: { contentType: type.mime },
    customMetadata: { uploadedAt },
  });
  await feeding;

  return enqueue(env.IMAGE_QUEUE, { imageId, r2Key, contentType: type.mime, size, uploadedAt }, () =>
    env.IMAGE_BUCKET.delete(r2Key),
  );
}

export default {
  fetch: (request, env) => route(request, env, "ts-streaming-upload-worker", upload),
} satisfies ExportedHandler<Env>;
