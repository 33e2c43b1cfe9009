// Workers AI's errors come from Cloudflare, not from us. The AI stub's catalogue is a copy of
// Cloudflare's documented table (local/workers-ai-errors.json, with its page named); the
// Rust table (crates/shared, through local/contract.json) is what the tagger understands.
// These checks keep the two apart and honest: every documented code is classified by the
// Rust table, the two agree where the page says something (the HTTP status; 408 and 429
// are transient by definition), and the stub never sends a code the page does not list.

import { test } from "node:test";
import assert from "node:assert/strict";

import { aiError, aiErrorCode, workersAiErrors } from "../local/ai-stub.mjs";
import { contract, isRetryable, tagError } from "../local/contract.mjs";

const PAGE = "https://developers.cloudflare.com/workers-ai/platform/errors/";
const documented = workersAiErrors.errors;
const rust = new Map(contract.aiErrors.map((e) => [e.code, e]));

/** Codes the Rust table classifies that the page does not list, each with why it is kept. */
const NOT_ON_THE_PAGE = {
  3010: "seen as 'invalid or incomplete input' in older reports; kept as invalid input by our own choice, unverified",
};

test("the catalogue is Cloudflare's page: named, every code once, every status a 4xx", () => {
  assert.equal(workersAiErrors.source, PAGE);
  const codes = documented.map((e) => e.code);
  assert.equal(new Set(codes).size, codes.length, "each code once");
  assert.ok(codes.length >= 16, `the page's table has 16 rows: ${codes.length}`);
  for (const e of documented) {
    assert.ok(Number.isInteger(e.code) && e.code >= 1000, JSON.stringify(e));
    assert.ok(e.httpStatus >= 400 && e.httpStatus < 500, JSON.stringify(e));
    assert.ok(e.name && e.description, JSON.stringify(e));
  }
});

test("every documented code is classified by the Rust table, with the page's HTTP status", () => {
  const missing = documented.filter((e) => !rust.has(e.code)).map((e) => `${e.code} ${e.name}`);
  assert.deepEqual(missing, [], "documented codes the Rust table does not classify");
  for (const e of documented) {
    const r = rust.get(e.code);
    assert.equal(r.httpStatus, e.httpStatus, `${e.code} ${e.name}: the page says ${e.httpStatus}`);
    assert.ok(Object.values(tagError).includes(r.tagError), `${e.code}: ${r.tagError} is a tag error`);
  }
});

test("what 408 and 429 mean by definition holds in Rust: timeouts and too many requests are retried", () => {
  for (const e of documented.filter((e) => e.httpStatus === 408 || e.httpStatus === 429)) {
    const r = rust.get(e.code);
    assert.ok(isRetryable(r.tagError), `${e.code} ${e.name} (${e.httpStatus}) is classified ${r.tagError}, which is not retried`);
  }
});

test("the Rust table adds to the page only what is named here, with a reason", () => {
  const extra = [...rust.keys()].filter((code) => !documented.some((e) => e.code === code));
  assert.deepEqual(extra.map(String).sort(), Object.keys(NOT_ON_THE_PAGE).sort());
});

test("the stub speaks only the page: documented status and message, and no code the page lacks", () => {
  for (const e of documented) {
    assert.deepEqual(aiError(e.code).error, { code: e.code, status: e.httpStatus, message: `${e.code}: ${e.description}` });
  }
  for (const code of Object.keys(NOT_ON_THE_PAGE)) {
    assert.throws(() => aiError(Number(code)), /documents no error/, `${code} is not sent by the stub`);
  }
  // The "model refuses the image" tests use a documented code, not the Rust table's own.
  assert.equal(aiErrorCode("Invalid data"), 5004);
  assert.equal(rust.get(5004).tagError, tagError.invalid_image);
});
