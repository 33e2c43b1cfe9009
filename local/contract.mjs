// The contract between the Rust workers and everything in JavaScript (the launcher, the
// tests, the benchmark): binding names, queue names, the model, storage keys, image types,
// the queue message's schema version, statuses, outcomes and every error code, and the vars
// with their defaults. It is generated from Rust (`crates/shared/src/wire/contract.rs`, by
// `UPDATE_CONTRACT=1 cargo test -p shared contract`) into local/contract.json; this module
// only reads it and offers helpers. No JS file spells out any of these names itself.
//
// Read with readFileSync + JSON.parse (not an import attribute) so it loads on Node 20.3+.

import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";

/** The contract as generated, frozen. */
export const contract = deepFreeze(JSON.parse(readFileSync(new URL("./contract.json", import.meta.url), "utf8")));

export const { bindings, queues, model, databaseName, aiPacerClass } = contract;
export const schemaVersion = contract.message.schemaVersion;

/**
 * An object whose properties are the given names, each equal to itself, that throws on any
 * other name: `outcome.done` is `"done"`, `outcome.dead_letter` throws if the contract has no
 * such outcome. Tests name contract values this way, so a renamed value fails loudly.
 */
export function namesOf(list, what) {
  const names = Object.fromEntries(list.map((name) => [name, name]));
  return new Proxy(Object.freeze(names), {
    get(target, name) {
      if (typeof name === "symbol" || name in target) return target[name];
      throw new Error(`the contract has no ${what} ${String(name)} (it has: ${list.join(", ")})`);
    },
  });
}

/** Tagger log outcomes: `outcome.done`, `outcome.retry`, ... */
export const outcome = namesOf(contract.outcomes, "outcome");
/** Image statuses: `status.queued`, `status.done`, `status.failed`. */
export const status = namesOf(contract.statuses, "status");
/** API error codes: `apiError.not_found`, ... */
export const apiError = namesOf(contract.apiErrors.map((e) => e.code), "API error code");
/** Tag error codes (a failed record's `error.code`, a log line's `errorCode`). */
export const tagError = namesOf(contract.tagErrors.map((e) => e.code), "tag error code");
/** Every status that ends an image's processing. */
export const terminalStatuses = contract.statuses.filter((s) => s !== status.queued);

/** The HTTP status of an API error code. */
export function apiStatus(code) {
  const entry = contract.apiErrors.find((e) => e.code === code);
  if (!entry) throw new Error(`the contract has no API error code ${code}`);
  return entry.status;
}

/** Whether a tag error code is retryable, per the contract. */
export function isRetryable(code) {
  const entry = contract.tagErrors.find((e) => e.code === code);
  if (!entry) throw new Error(`the contract has no tag error code ${code}`);
  return entry.retryable;
}

/** A documented Workers AI error: `{ code, meaning, httpStatus, kind }`. */
export function aiErrorInfo(code) {
  const entry = contract.aiErrors.find((e) => e.code === code);
  if (!entry) throw new Error(`the contract has no Workers AI error ${code}`);
  return entry;
}

/** The documented Workers AI errors of one kind (`busy`, `invalid_input`, ...). */
export function aiErrorsOfKind(kind) {
  const found = contract.aiErrors.filter((e) => e.kind === kind);
  if (!found.length) throw new Error(`the contract has no Workers AI error of kind ${kind}`);
  return found;
}

/** A var's documented default (a string, or null when unset by default). */
export function varDefault(name) {
  const entry = contract.vars.find((v) => v.name === name);
  if (!entry) throw new Error(`the contract has no var ${name}`);
  return entry.default;
}

/** The names of every var the contract documents. */
export const varNames = contract.vars.map((v) => v.name);
/** Var names by name, checked: `varName.API_TOKEN` throws if the contract has no such var. */
export const varName = namesOf(varNames, "var");

/** Fills a `{name}` template; every placeholder must be given. */
function fill(template, values) {
  return template.replace(/\{(\w+)\}/g, (_, name) => {
    if (values[name] === undefined) throw new Error(`${template}: no value for {${name}}`);
    return String(values[name]);
  });
}

/** The part of a key template before its first placeholder: a prefix to list keys by. */
function prefixOf(template) {
  return template.slice(0, template.indexOf("{"));
}

/** Storage keys, from the contract's templates. */
export const keys = Object.freeze({
  /** R2 key of an image's bytes. */
  object: (id, ext) => fill(contract.keys.object, { id, ext }),
  /** KV key of an image's record. */
  record: (id) => fill(contract.keys.record, { id }),
  /** KV key of a poison message. */
  poison: (messageId) => fill(contract.keys.poison, { messageId }),
  /** List prefixes: `prefix.object`, `prefix.record`, `prefix.poison`. */
  prefix: Object.freeze(Object.fromEntries(Object.entries(contract.keys).map(([k, t]) => [k, prefixOf(t)]))),
});

/** The key extension of an accepted MIME type (`image/png` → `png`). */
export function extensionOf(mime) {
  const entry = contract.imageTypes.find((t) => t.mime === mime);
  if (!entry) throw new Error(`${mime} is not an accepted image type`);
  return entry.ext;
}

/** The MIME type of a key extension (`jpg` → `image/jpeg`). */
export function mimeOf(ext) {
  const entry = contract.imageTypes.find((t) => t.ext === ext);
  if (!entry) throw new Error(`${ext} is not an accepted image extension`);
  return entry.mime;
}

/**
 * A queue message for an image, as the upload worker sends it. Every field can be given;
 * the rest is made up: a fresh id, `image/png`, the object key for that id and type, now.
 * The field names are those of `ImageMessage` (crates/shared/src/wire/message.rs).
 */
export function imageMessage({
  imageId = randomUUID(),
  contentType = "image/png",
  size = 0,
  uploadedAt = new Date().toISOString(),
  r2Key = keys.object(imageId, extensionOf(contentType)),
  ...rest
} = {}) {
  return { schemaVersion, imageId, r2Key, contentType, size, uploadedAt, ...rest };
}

// The fields above are those of the contract's example message, no more and no fewer.
{
  const made = Object.keys(imageMessage()).sort().join();
  const expected = Object.keys(contract.message.example).sort().join();
  if (made !== expected) throw new Error(`imageMessage() has fields ${made}; the contract's message has ${expected}`);
}

/** The event names of the workers' JSON log lines. */
export const logEvents = contract.logEvents;

/** D1 statements the tests use to set up state exactly as the workers would. */
export const sql = contract.sql;

function deepFreeze(value) {
  if (value && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
