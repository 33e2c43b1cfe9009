// Live updates over a WebSocket (issue 24), against both workers in Miniflare: `GET /events`
// with a key or a ticket, one Durable Object per client holding hibernatable sockets, an
// event after each committed transition (the webhook's JSON plus its id), nothing of another
// client's images, a replay from D1 on reconnect, `image.deleted`, and tagging that goes on
// when the object fails. Latency is measured in bench/live-load.mjs, not asserted here.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startPipeline } from "../local/pipeline.mjs";
import { answer } from "../local/ai-stub.mjs";
import { apiError, contract, logEvents, status } from "../local/contract.mjs";
import { openLive } from "../local/live-client.mjs";
import { png } from "../local/images.mjs";
import { FAST_QUEUES, withPipeline } from "./support/helpers.mjs";

const TOKEN = "operator-key-of-the-live-test";
const OP = { authorization: `Bearer ${TOKEN}` };
const { live } = contract;
const [QUEUED, TAGGED, , DELETED] = live.events;

let p;
let keyA;
let keyB;
before(async () => {
  p = await startPipeline({ queues: FAST_QUEUES, vars: { upload: { API_TOKEN: TOKEN } } });
  const make = async (name) => {
    const res = await p.fetch("/admin/keys", { method: "POST", headers: { ...OP, "content-type": "application/json" }, body: JSON.stringify({ name }) });
    assert.equal(res.status, 201);
    return res.json();
  };
  [keyA, keyB] = [await make("live A"), await make("live B")];
});
after(async () => {
  await p?.close();
});

const bearer = (key) => ({ authorization: `Bearer ${key.key}` });

async function uploadAs(key, bytes) {
  const res = await p.fetch("/images", { method: "POST", headers: bearer(key), body: bytes });
  assert.equal(res.status, 202, await res.clone().text());
  return (await res.json()).imageId;
}

/** The image's D1 row. */
async function row(id) {
  return (await p.db()).prepare("SELECT status, uploaded_at, processed_at, updated_at FROM images WHERE id = ?1").bind(id).first();
}

async function ticketFor(key) {
  const res = await p.fetch(live.routes.ticket, { method: "POST", headers: bearer(key) });
  assert.equal(res.status, 200, await res.clone().text());
  return res.json();
}

/** Expects `GET /events` to be refused before any upgrade. */
async function refused(options, expected) {
  const error = await openLive(p.url, options).then(
    () => assert.fail("the socket opened"),
    (e) => e,
  );
  assert.equal(error.status, expected.status, error.message);
  assert.equal(error.body?.error?.code, expected.code, error.message);
}

test("a client sees queued and done for its upload, after the D1 commit; another client sees nothing of it", async () => {
  const a = await openLive(p.url, { headers: bearer(keyA) });
  const b = await openLive(p.url, { headers: bearer(keyB) });
  assert.equal(a.ws.protocol, live.protocol, "the server answers with the protocol offered");
  assert.deepEqual(a.ready, { type: "live.ready", replayed: 0, complete: true, receivedAt: a.ready.receivedAt });

  const bytes = png();
  p.ai.script(bytes, answer([{ label: "TABBY", score: 0.93 }, { label: "TIGER CAT", score: 0.05 }]));
  const id = await uploadAs(keyA, bytes);
  const tagged = await a.eventOf(id, TAGGED);
  // Committed before it was sent: D1 already says done when the event arrives.
  const committed = await row(id);
  assert.equal(committed.status, status.done);
  const queued = await a.eventOf(id, QUEUED);
  // Each once. Not in a set order: the upload worker holds `queued` up to 50 ms, and a
  // terminal event wins over it whatever order they arrive in (README, live updates).
  assert.deepEqual(
    a.events().filter((e) => e.data.imageId === id).map((e) => e.type).sort(),
    [QUEUED, TAGGED].sort(),
    "queued and done, once each",
  );
  console.log(
    `# delivery after the D1 commit: queued ${queued.receivedAt - committed.uploaded_at} ms (from uploaded_at), ` +
      `done ${tagged.receivedAt - committed.processed_at} ms (from processed_at)`,
  );
  assert.ok(tagged.receivedAt >= committed.processed_at, "never before the commit");

  // The webhook's JSON, plus the id: the same tags and categories the API shows.
  const record = await (await p.fetch(`/images/${id}`, { headers: bearer(keyA) })).json();
  assert.equal(tagged.id, `msg_${id.replaceAll("-", "")}_tagged`);
  assert.equal(tagged.timestamp, record.processedAt);
  assert.deepEqual(tagged.data.tags, record.tags);
  assert.deepEqual(tagged.data.categories, record.categories);
  assert.deepEqual(tagged.data.labels, record.labels);
  assert.equal(tagged.data.status, status.done);
  assert.equal(tagged.data.statusUrl, `/images/${id}`);
  assert.equal(queued.id, `msg_${id.replaceAll("-", "")}_queued`);
  assert.equal(queued.data.status, status.queued);

  // The proof that B got nothing of A's: B's own upload comes to B after A's events were
  // published (each object sends in order), and it is all B ever received.
  const own = await uploadAs(keyB, png());
  await b.eventOf(own, TAGGED);
  assert.deepEqual(new Set(b.events().map((e) => e.data.imageId)), new Set([own]));
  assert.ok(!a.events().some((e) => e.data.imageId === own), "nor A of B's");
  await Promise.all([a.close(), b.close()]);
});

test("a burst of uploads gives one queued event each (the upload worker sends a window's events in one request)", async () => {
  const a = await openLive(p.url, { headers: bearer(keyA) });
  const ids = await Promise.all(Array.from({ length: 12 }, () => uploadAs(keyA, png())));
  for (const id of ids) await a.eventOf(id, QUEUED);
  for (const id of ids) {
    const queued = a.events().filter((e) => e.data.imageId === id && e.type === QUEUED);
    assert.equal(queued.length, 1, `one image.queued for ${id}`);
    assert.equal(queued[0].id, `msg_${id.replaceAll("-", "")}_queued`);
  }
  // Let them finish before the next test counts events.
  for (const id of ids) await a.eventOf(id, TAGGED);
  await a.close();
});

test("a browser's ticket opens the socket; bad tickets, no upgrade, no key and a bad lastEventId are refused before upgrading", async () => {
  const issued = await ticketFor(keyA);
  assert.deepEqual(issued.protocols, [live.protocol, `${live.ticketProtocolPrefix}${issued.ticket}`]);
  assert.equal(issued.url, live.routes.events);
  const left = Date.parse(issued.expiresAt) - Date.now();
  assert.ok(left > 0 && left <= live.ticketTtlMs, `${left} ms`);
  const a = await openLive(p.url, { protocols: issued.protocols });
  assert.equal(a.ws.protocol, live.protocol);
  const id = await uploadAs(keyA, png());
  await a.eventOf(id, TAGGED);
  await a.close();

  const [version, owner, expires, mac] = issued.ticket.split(".");
  assert.equal(owner, keyA.keyId, "bound to the caller's owner id");
  const forged = [
    // Another owner under A's MAC; a later expiry; a MAC cut short; garbage.
    [version, keyB.keyId, expires, mac].join("."),
    [version, owner, String(Number(expires) + 60_000), mac].join("."),
    [version, owner, expires, mac.slice(0, -2)].join("."),
    "not-a-ticket",
  ];
  // A search cursor is signed with the cursor key; tickets with a key of their own.
  const page = await (await p.fetch("/images?limit=1", { headers: bearer(keyA) })).json();
  assert.ok(page.nextCursor, "a cursor to try");
  forged.push(page.nextCursor);
  for (const ticket of forged) {
    await refused({ protocols: [live.protocol, `${live.ticketProtocolPrefix}${ticket}`] }, { status: 401, code: apiError.invalid_ticket });
  }
  await refused({}, { status: 401, code: apiError.unauthorized });
  await refused({ headers: { authorization: "Bearer itk_wrong" } }, { status: 401, code: apiError.unauthorized });
  await refused({ headers: bearer(keyA), lastEventId: "msg_../x" }, { status: 400, code: apiError.invalid_query });

  const plain = await p.fetch(live.routes.events, { headers: bearer(keyA) });
  assert.equal(plain.status, 426);
  assert.equal((await plain.json()).error.code, apiError.upgrade_required);
  const wrongMethod = await p.fetch(live.routes.ticket, { headers: bearer(keyA) });
  assert.equal(wrongMethod.status, 405);
  const noKey = await p.fetch(live.routes.ticket, { method: "POST" });
  assert.equal(noKey.status, 401);
});

test("a reconnect with the last event id gets what it missed, from D1", async () => {
  const a = await openLive(p.url, { headers: bearer(keyA) });
  const seen = await uploadAs(keyA, png());
  const last = await a.eventOf(seen, TAGGED);
  await a.close();

  // Missed while away: an image uploaded and tagged.
  const missed = await uploadAs(keyA, png());
  await p.waitForStatus(missed, [status.done], { headers: bearer(keyA) });
  const again = await openLive(p.url, { headers: bearer(keyA), lastEventId: last.id });
  assert.equal(again.ready.complete, true, "the anchor is known and recent");
  const replayed = again.messages.slice(0, again.messages.indexOf(again.ready));
  assert.deepEqual(
    replayed.map((e) => [e.data.imageId, e.type]),
    [
      [missed, QUEUED],
      [missed, TAGGED],
    ],
    "the missed events in order, nothing already seen",
  );
  assert.equal(again.ready.replayed, 2);
  // The live stream goes on after the replay.
  const next = await uploadAs(keyA, png());
  await again.eventOf(next, TAGGED);
  await again.close();

  // An id the client never had (another owner's image): the whole window, not complete.
  const other = await uploadAs(keyB, png());
  await p.waitForStatus(other, [status.done], { headers: bearer(keyB) });
  const stranger = await openLive(p.url, { headers: bearer(keyA), lastEventId: `msg_${other.replaceAll("-", "")}_tagged` });
  assert.equal(stranger.ready.complete, false);
  assert.ok(!stranger.events().some((e) => e.data.imageId === other), "never another owner's events");
  await stranger.close();
});

test("DELETE sends image.deleted to the owner's sockets", async () => {
  const a = await openLive(p.url, { headers: bearer(keyA) });
  const id = await uploadAs(keyA, png());
  await a.eventOf(id, TAGGED);
  // The operator deletes it: the event still goes to the image's owner.
  const res = await p.fetch(`/images/${id}`, { method: "DELETE", headers: OP });
  assert.equal(res.status, 204);
  const deleted = await a.eventOf(id, DELETED);
  assert.equal(deleted.id, `msg_${id.replaceAll("-", "")}_deleted`);
  assert.equal(deleted.data.status, "deleted");
  assert.equal(await row(id), null, "gone from D1 first");
  await a.close();
});

test("a ping is answered by the object, with its socket count", async () => {
  const a = await openLive(p.url, { headers: bearer(keyB) });
  const b = await openLive(p.url, { headers: bearer(keyB) });
  const pong = await a.ping();
  assert.equal(pong.sockets, 2);
  assert.ok(pong.objectStarted > 0);
  await Promise.all([a.close(), b.close()]);
});

test("a failing live object never stops tagging: a warning, and the image is done", async () => {
  await withPipeline({ queues: FAST_QUEUES, liveDown: true }, async (q) => {
    const res = await q.fetch("/images", { method: "POST", body: png() });
    assert.equal(res.status, 202, "the upload does not wait for the object");
    const { imageId } = await res.json();
    await q.waitForStatus(imageId, [status.done]);
    const tagged = `msg_${imageId.replaceAll("-", "")}_tagged`;
    const line = await q.waitForLine((l) => l.includes(`"${logEvents.livePublishFailed}"`) && l.includes(tagged), {
      what: "the tagger's warning",
    });
    assert.match(line, /"level":"warn"/);
    await q.waitForLine((l) => l.includes(`"${logEvents.livePublishFailed}"`) && l.includes(`${imageId.replaceAll("-", "")}_queued`), {
      what: "the upload worker's warning",
    });
  });
});
