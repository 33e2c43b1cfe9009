// Starts crates/local-ai (the offline classifier) as a child process on a free loopback
// port, for the local run and the tests.

import { spawn } from "node:child_process";

/**
 * Starts `bin serve` and resolves once it listens, to `{ url, close }` where `url` is the
 * endpoint the `Ai` binding forwards to. `onOutput` receives the server's stdout.
 */
export async function startLocalAi(bin, modelDir, { args = [], onOutput = () => {} } = {}) {
  const child = spawn(bin, ["serve", "--addr", "127.0.0.1:0", "--model-dir", modelDir, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const base = await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`local-ai exited with ${code}`)));
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (text) => {
      onOutput(text);
      const match = text.match(/listening on (http:\/\/\S+)/);
      if (match) resolve(match[1]);
    });
  });
  // However this process ends (Miniflare's own exit hook may end it first), stop the child.
  const stop = () => child.kill("SIGTERM");
  process.on("exit", stop);
  return { url: `${base}/run`, close: async () => stop() };
}
