// A light stand-in for Workers AI for the end-to-end benchmark: answers every call with
// the same labels after a fixed latency, and counts calls and how many were in flight at
// once. Unlike the test stub (tests/support/ai-stub.mjs) it keeps no copy of the images,
// so that node's own memory and CPU stay out of the way of the figures.

import http from "node:http";

import { LABELS } from "../../tests/support/ai-stub.mjs";

export { LABELS };

export async function startBenchAi({ latencyMs }) {
  const stats = { calls: 0, bytes: 0, inFlight: 0, maxInFlight: 0, badCalls: 0 };
  const answer = JSON.stringify(LABELS);
  const server = http.createServer((req, res) => {
    stats.calls++;
    stats.inFlight++;
    stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
    let head = "";
    req.on("data", (chunk) => {
      stats.bytes += chunk.length;
      if (head.length < 64) head += chunk.toString("latin1", 0, 64);
    });
    req.on("end", () => {
      // Both implementations send {"model": ..., "image": [bytes...]} (via local/ai-binding.mjs).
      if (!head.startsWith('{"model":"@cf/microsoft/resnet-50","image":[')) stats.badCalls++;
      setTimeout(() => {
        stats.inFlight--;
        res.writeHead(200, { "content-type": "application/json" });
        res.end(answer);
      }, latencyMs);
    });
  });
  server.keepAliveTimeout = 60_000;
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/run`,
    stats,
    reset() {
      Object.assign(stats, { calls: 0, bytes: 0, inFlight: 0, maxInFlight: 0, badCalls: 0 });
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
