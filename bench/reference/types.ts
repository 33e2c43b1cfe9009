// The message and record shapes both reference workers share: the same JSON as the Rust
// pipeline's (crates/shared/src/wire/{message,record}.rs).

/// <reference path="./workers-types.d.ts" />

// The names come from the contract the Rust crates generate, as a TS service sharing a
// schema with another would take them (esbuild bundles only the fields named here).
import { keys, message, model } from "../../local/contract.json";

export const SCHEMA_VERSION: number = message.schemaVersion;
export const MODEL: string = model;

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

/** The value of the record key (`keys.record` of the contract) in KV. */
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

export const recordKey = (imageId: string) => keys.record.replace("{id}", imageId);
