// BENCHMARKS.md's generated tables are what bench/tables.mjs makes of the committed raw JSON:
// a table edited by hand, or JSON replaced without regenerating, fails here.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import { DOC, TABLES, generate } from "../bench/tables.mjs";

test("every generated table in BENCHMARKS.md is what bench/tables.mjs makes of its JSON", () => {
  const doc = readFileSync(DOC, "utf8");
  const fresh = generate(doc);
  if (fresh !== doc) {
    const a = doc.split("\n");
    const b = fresh.split("\n");
    const line = a.findIndex((l, i) => l !== b[i]);
    assert.fail(`BENCHMARKS.md line ${line + 1} differs: run node bench/tables.mjs\n  has:    ${a[line]}\n  should: ${b[line]}`);
  }
});

test("each generated table names its raw file, its run's commit and the command behind it", () => {
  const doc = readFileSync(DOC, "utf8");
  for (const table of TABLES) {
    const block = doc.slice(doc.indexOf(`bench/tables.mjs: ${table.name} -->`), doc.indexOf(`generated table: ${table.name} -->`));
    assert.ok(block.includes(table.source), `${table.name}: names ${table.source}`);
    assert.match(block, /commit `[0-9a-f]{7,}`/, `${table.name}: names its commit`);
    assert.ok(block.includes(`\`${table.command}\``), `${table.name}: names its command`);
  }
});
