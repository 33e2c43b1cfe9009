// A small HTTP load generator on node:http with keep-alive, so that the client costs as
// little CPU as possible on the machine it shares with workerd.

import http from "node:http";
import { randomBytes } from "node:crypto";

const PNG_MAGIC = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG-signed body of exactly `size` bytes: 64×64 in its header (the upload checks the pixel
 *  count there), then random content. */
export function pngBody(size) {
  const ihdr = Buffer.from("\0\0\0\rIHDR\0\0\0\x40\0\0\0\x40", "latin1");
  return Buffer.concat([PNG_MAGIC, ihdr, randomBytes(size - 24)]);
}

/** One request; resolves with status, headers, body text and latency in ms. */
export function request(url, { method = "GET", body, headers = {}, agent } = {}) {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const req = http.request(
      url,
      {
        method,
        agent,
        headers: body ? { "content-length": body.length, ...headers } : headers,
      },
      (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode,
            headers: res.headers,
            text: Buffer.concat(chunks).toString("utf8"),
            ms: performance.now() - started,
            started,
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(body);
  });
}

/** POSTs `body` to `url` `count` times with `concurrency` requests in flight, with `headers`
 *  added to each request's `content-type`. */
export async function load(url, body, { count, concurrency, headers = {} }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: concurrency });
  const latencies = [];
  let errors = 0;
  let firstError;
  let next = 0;
  const started = performance.now();
  async function lane() {
    while (next < count) {
      next++;
      try {
        const res = await request(url, {
          method: "POST",
          body,
          agent,
          headers: { "content-type": "image/png", ...headers },
        });
        if (res.status !== 202) {
          errors++;
          firstError ??= `${res.status} ${res.text.slice(0, 200)}`;
        }
        latencies.push(res.ms);
      } catch (e) {
        errors++;
        firstError ??= String(e);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  const seconds = (performance.now() - started) / 1000;
  agent.destroy();
  return {
    count,
    concurrency,
    seconds,
    throughput: count / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    errors,
    ...(firstError ? { firstError } : {}),
  };
}

/** Nearest-rank percentile. */
export function percentile(values, p) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}

/** Median; the mean of the middle two for an even count. */
export function median(values) {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
