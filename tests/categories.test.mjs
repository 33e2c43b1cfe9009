// Categories (issue 23), end to end through the launcher (real workerd, local D1, R2, KV and
// Queues over a real socket; only Workers AI is the stub): the WordNet categories an answer
// adds up to are stored with the record, found by `?tag=`, counted by GET /tags and listed
// with each image, while `tags` keeps its meaning (labels above MIN_SCORE only).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startPipeline } from "../local/pipeline.mjs";
import { answer } from "../local/ai-stub.mjs";
import { keys, status } from "../local/contract.mjs";
import { encodePng } from "../local/png.mjs";
import { FAST_QUEUES, upload } from "./support/helpers.mjs";

let serial = 0;
/** A real, unique PNG. */
function photo() {
  const n = ++serial;
  return encodePng(8, 6, (x, y) => [(x * 29 + n) & 255, (y * 13 + n * 5) & 255, (n * 11) & 255]);
}

const label = (label, score) => ({ label, score });
const byName = (categories, name) => categories.find((c) => c.name === name)?.score;

async function json(p, path) {
  const res = await p.fetch(path);
  assert.equal(res.status, 200, `${path}: ${res.status}`);
  return res.json();
}

/** The ids `GET /images?<query>` finds (one page is enough here). */
async function found(p, query) {
  return (await json(p, `/images?${query}&limit=200`)).images.map((i) => i.imageId).sort();
}

let p;
const ids = {};
before(async () => {
  p = await startPipeline({ queues: FAST_QUEUES });
  const answers = {
    // Two retrievers: neither label passes 0.8, together they are a dog (0.94 with the other breeds).
    dog: [label("GOLDEN RETRIEVER", 0.5), label("LABRADOR RETRIEVER", 0.4), label("KUVASZ", 0.03), label("TENNIS BALL", 0.02), label("CLUMBER", 0.01)],
    // The README's cat: no label above 0.8, a cat at 0.887.
    cat: [label("EGYPTIAN CAT", 0.389), label("TIGER CAT", 0.326), label("TABBY", 0.172), label("LYNX", 0.034), label("CARTON", 0.01)],
    // One confident label: a tag, and its categories too.
    tabby: [label("TABBY", 0.91), label("TIGER CAT", 0.05), label("EGYPTIAN CAT", 0.02), label("LYNX", 0.01), label("CARTON", 0.01)],
    // Nothing adds up: no tag, no category.
    unsure: [label("ESPRESSO", 0.3), label("TABBY", 0.3), label("CARTON", 0.2), label("PIZZA", 0.1), label("CANOE", 0.1)],
  };
  for (const [name, labels] of Object.entries(answers)) {
    const bytes = photo();
    p.ai.script(bytes, answer(labels));
    ids[name] = await upload(p, bytes);
  }
  for (const id of Object.values(ids)) await p.waitForStatus(id);
});
after(async () => {
  await p?.close();
});

test("dog breeds add up to a dog that ?tag=dog finds", async () => {
  const record = await json(p, `/images/${ids.dog}`);
  assert.equal(record.status, status.done);
  assert.deepEqual(record.tags, [], "no label passes 0.8");
  assert.equal(byName(record.categories, "dog"), 0.94, "two retrievers, a kuvasz and a clumber");
  assert.equal(byName(record.categories, "retriever"), 0.9);
  assert.equal(byName(record.categories, "animal"), 0.94);
  assert.equal(byName(record.categories, "cat"), undefined);
  assert.deepEqual(await found(p, "tag=dog"), [ids.dog]);
  assert.deepEqual(await found(p, "tag=DOG"), [ids.dog], "any case");
  assert.deepEqual(await found(p, "tag=golden%20retriever"), [], "labels below 0.8 are not indexed");
});

test("the README's cat gets `cat` at 0.887 and keeps its empty tags, in KV and in D1", async () => {
  const record = await json(p, `/images/${ids.cat}`);
  assert.deepEqual(record.tags, [], "tags unchanged: no label above minScore");
  assert.equal(record.minScore, 0.8);
  assert.ok(byName(record.categories, "cat") >= 0.8);
  assert.equal(byName(record.categories, "cat"), 0.887);
  assert.equal(byName(record.categories, "feline"), 0.921, "the lynx is a feline too");
  assert.deepEqual(
    record.categories.map((c) => c.name),
    ["feline", "carnivore", "mammal", "animal", "cat"],
    "best first; ties the more specific first",
  );
  assert.ok(record.categories.every((c) => c.score > 0.8));
  // D1 has them too: without the KV record, the answer comes from the row.
  await (await p.kv()).delete(keys.record(ids.cat));
  const fromD1 = await json(p, `/images/${ids.cat}`);
  assert.deepEqual(fromD1.categories, record.categories);
  assert.deepEqual(fromD1.tags, []);
});

test("a confident label is a tag and its categories are found too", async () => {
  const record = await json(p, `/images/${ids.tabby}`);
  assert.deepEqual(record.tags, ["TABBY"]);
  assert.equal(byName(record.categories, "cat"), 0.98);
  assert.deepEqual(await found(p, "tag=cat"), [ids.cat, ids.tabby].sort());
  assert.deepEqual(await found(p, "tag=tabby"), [ids.tabby]);
  assert.deepEqual(await found(p, "tag=cat&tag=tabby"), [ids.tabby], "a tag and a category together");
  assert.deepEqual(await found(p, "tag=animal"), [ids.cat, ids.dog, ids.tabby].sort());
});

test("an answer that adds up to nothing gets no category", async () => {
  const record = await json(p, `/images/${ids.unsure}`);
  assert.deepEqual(record.tags, []);
  assert.deepEqual(record.categories, []);
});

test("list items carry category names and GET /tags counts categories", async () => {
  const item = (await json(p, "/images?tag=dog")).images[0];
  assert.equal(item.imageId, ids.dog);
  assert.ok(item.categories.includes("dog") && item.categories.includes("animal"), JSON.stringify(item));
  assert.deepEqual(item.tags, []);
  const cloud = (await json(p, "/tags?limit=1000")).tags;
  const count = (tag) => cloud.find((t) => t.tag === tag);
  assert.deepEqual(count("animal"), { tag: "animal", count: 3, category: true });
  assert.deepEqual(count("cat"), { tag: "cat", count: 2, category: true });
  assert.deepEqual(count("dog"), { tag: "dog", count: 1, category: true });
  assert.deepEqual(count("tabby"), { tag: "tabby", count: 1, category: false });
  assert.equal(count("golden retriever"), undefined);
});
