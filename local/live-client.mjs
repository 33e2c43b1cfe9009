// A client of live updates (`GET /events`, a WebSocket) for tests and benchmarks, on the
// `ws` package (Node 20 has no global WebSocket). It records every message with the time it
// arrived, and offers bounded waits on what it received.

import WebSocket from "ws";

import { contract } from "./contract.mjs";
import { waitFor } from "./pipeline.mjs";

const { live } = contract;

/** The `ws:` URL of `/events` at `base`, with `lastEventId` if given. */
export function eventsUrl(base, lastEventId) {
  const url = new URL(live.routes.events, base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  if (lastEventId) url.searchParams.set(live.lastEventIdParam, lastEventId);
  return url;
}

/**
 * Opens a socket and waits for its `live.ready` message. `headers` (an `Authorization`, for
 * a Node client), `protocols` (a browser's way: `[protocol, "ticket.<t>"]`, by default just
 * the protocol), `lastEventId` (a reconnect). Rejects with `{ status, body }` when the
 * server refuses the upgrade.
 */
export async function openLive(base, { headers = {}, protocols = [live.protocol], lastEventId, timeoutMs = 30_000 } = {}) {
  const ws = new WebSocket(eventsUrl(base, lastEventId), protocols, { headers });
  const messages = [];
  ws.on("message", (data) => {
    const receivedAt = Date.now();
    messages.push({ ...JSON.parse(data.toString()), receivedAt });
  });
  await new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("unexpected-response", (_req, res) => {
      const chunks = [];
      res.on("data", (c) => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let body = null;
        try {
          body = JSON.parse(text);
        } catch {
          body = text;
        }
        const error = new Error(`GET /events answered ${res.statusCode}: ${text}`);
        Object.assign(error, { status: res.statusCode, body });
        reject(error);
      });
    });
    ws.once("error", reject);
  });
  const client = {
    ws,
    messages,
    /** The events received so far (not the socket's own `live.*` messages). */
    events: () => messages.filter((m) => !m.type.startsWith("live.")),
    /** The first message (so far or to come) that matches, within a bound. */
    next: (match, opts = {}) =>
      waitFor(() => messages.find(match) ?? null, { what: "a live message", timeoutMs, ...opts }),
    /** The event of `imageId` of `type` (`image.tagged`, ...). */
    eventOf: (imageId, type, opts = {}) =>
      client.next((m) => m.type === type && m.data?.imageId === imageId, { what: `${type} of ${imageId}`, ...opts }),
    /** Sends `ping` and waits for its `live.pong`. */
    async ping() {
      const seen = messages.length;
      ws.send(live.ping);
      return waitFor(() => messages.slice(seen).find((m) => m.type === "live.pong") ?? null, { what: "a pong", timeoutMs });
    },
    close: () =>
      new Promise((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve();
        ws.once("close", resolve);
        ws.close(1000);
      }),
  };
  client.ready = await client.next((m) => m.type === "live.ready", { what: "live.ready" });
  return client;
}
