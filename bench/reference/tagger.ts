// Reference tagger (queue consumer) in TypeScript, following Cloudflare's tutorial design:
// process the batch's messages one after the other; for each, read the image from R2, run
// Workers AI on its bytes, keep the labels above MIN_SCORE, write the record to KV, ack;
// retry the message on any error. Same bindings and record shape as the Rust tagger, for
// bench/run.mjs.

/// <reference path="./workers-types.d.ts" />

import { MODEL, recordKey, type ImageMessage, type Label, type TagRecord } from "./types";

export interface Env {
  IMAGE_BUCKET: R2Bucket;
  RESULTS_KV: KVNamespace;
  AI: Ai;
  MIN_SCORE?: string;
}

const DEFAULT_MIN_SCORE = 0.8;

export default {
  async queue(batch, env): Promise<void> {
    const minScore = Number(env.MIN_SCORE ?? DEFAULT_MIN_SCORE);
    for (const message of batch.messages) {
      const { imageId, r2Key } = message.body;
      try {
        const object = await env.IMAGE_BUCKET.get(r2Key);
        if (!object) {
          // Nothing to tag: retrying will not bring it back.
          console.error(`${imageId}: ${r2Key} is not in R2`);
          message.ack();
          continue;
        }
        const bytes = await object.arrayBuffer();
        const labels = (await env.AI.run(MODEL, { image: [...new Uint8Array(bytes)] })) as Label[];
        const tags = labels.filter((l) => l.score > minScore).sort((a, b) => b.score - a.score);
        const record: TagRecord = {
          imageId,
          status: "done",
          tags,
          labels,
          model: MODEL,
          minScore,
          processedAt: new Date().toISOString(),
          r2Key,
          attempts: message.attempts,
        };
        await env.RESULTS_KV.put(recordKey(imageId), JSON.stringify(record));
        message.ack();
      } catch (e) {
        console.error(`${imageId}: tagging failed, will retry`, e);
        message.retry();
      }
    }
  },
} satisfies ExportedHandler<Env, ImageMessage>;
