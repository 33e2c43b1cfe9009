// Starts crates/local-ai (the offline classifier) as a child process on a free loopback
// port, for the local run and the tests.

import { spawn } from "node:child_process";
import readline from "node:readline";

/**
 * Starts `bin serve` and resolves once it listens, to `{ url, close }` where `url` is what
 * the launcher's `ai: { url }` takes. Fails if the server exits first or does not listen
 * within `timeoutMs`. `onOutput` receives each line of the server's stdout.
 */
export async function startLocalAi(bin, modelDir, { args = [], onOutput = () => {}, timeoutMs = 30_000 } = {}) {
  const child = spawn(bin, ["serve", "--addr", "127.0.0.1:0", "--model-dir", modelDir, ...args], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  const stop = () => child.kill("SIGTERM");
  // However this process ends (Miniflare's own exit hook may end it first), stop the child.
  process.on("exit", stop);
  const close = async () => {
    process.off("exit", stop);
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    stop();
    await exited;
  };
  try {
    const base = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`local-ai did not say "listening on" within ${timeoutMs} ms`)), timeoutMs);
      child.once("error", (e) => reject(new Error(`local-ai could not start: ${e.message}`)));
      child.once("exit", (code, signal) => reject(new Error(`local-ai exited with ${code ?? signal} before listening`)));
      readline.createInterface({ input: child.stdout, crlfDelay: Infinity }).on("line", (line) => {
        onOutput(line);
        const match = line.match(/listening on (http:\/\/\S+)/);
        if (match) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      });
    });
    return { url: `${base}/run`, close };
  } catch (error) {
    await close();
    throw error;
  }
}
