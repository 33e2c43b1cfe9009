// The message and record shapes both reference workers share: the same JSON as the Rust
// pipeline's (crates/shared/src/{message,record}.rs).

/// <reference path="./workers-types.d.ts" />

export const SCHEMA_VERSION = 1;
export const MODEL = "@cf/microsoft/resnet-50";

/** Body of a message on the image queue. */
export interface ImageMessage {
  schemaVersion: number;
  imageId: string;
  r2Key: string;
  contentType: string;
  size: number;
  uploadedAt: string;
}

export interface Label {
  label: string;
  score: number;
}

/** The value of `tags:{imageId}` in KV. */
export interface TagRecord {
  imageId: string;
  status: "done" | "failed";
  tags: Label[];
  labels: Label[];
  model: string;
  minScore: number;
  processedAt: string;
  r2Key: string;
  error?: { code: string; message: string };
  attempts?: number;
}

export const recordKey = (imageId: string) => `tags:${imageId}`;
