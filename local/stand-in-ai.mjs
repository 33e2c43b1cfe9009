// A stand-in for Workers AI used when the local classifier is not available: it answers
// every image with the same five labels, in the resnet-50 output shape. It does not look at
// the image; it only lets the pipeline run end to end without a Cloudflare account.

import http from "node:http";

export const STAND_IN_LABELS = [
  { label: "STAND-IN (NOT A REAL CLASSIFICATION)", score: 0.9 },
  { label: "TABBY", score: 0.04 },
  { label: "TIGER CAT", score: 0.03 },
  { label: "EGYPTIAN CAT", score: 0.02 },
  { label: "LYNX", score: 0.01 },
];

/** Serves the stand-in on a free loopback port; resolves to `{ url, close }`. */
export async function startStandInAi() {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify(STAND_IN_LABELS));
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/run`,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
