// Both wrangler configs deploy: `wrangler deploy --dry-run` builds, bundles and checks the
// bindings offline. Prints each worker's size as wrangler counts it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { ROOT, WORKERS, readWorkerConfig } from "../local/pipeline.mjs";

for (const [role, configPath] of Object.entries(WORKERS)) {
  const config = path.relative(ROOT, configPath);
  test(`wrangler deploy --dry-run -c ${config}`, () => {
    const { name, r2_buckets = [], kv_namespaces = [], d1_databases = [], queues = {}, ai } = readWorkerConfig(role);
    const outdir = mkdtempSync(path.join(tmpdir(), "dry-run-"));
    try {
      const output = execFileSync(
        path.join(ROOT, "node_modules/.bin/wrangler"),
        ["deploy", "--dry-run", "--outdir", outdir, "-c", config],
        { cwd: ROOT, encoding: "utf8", env: { ...process.env, WRANGLER_SEND_METRICS: "false", WRANGLER_LOG: "log" } },
      );
      const size = output.match(/Total Upload: ([\d.]+) KiB \/ gzip: ([\d.]+) KiB/);
      assert.ok(size, `no size line in:\n${output}`);
      assert.match(output, /--dry-run: exiting now/);
      // Every binding of the config is in wrangler's list of the bindings it would deploy.
      const bindings = [...r2_buckets, ...kv_namespaces, ...d1_databases, ...(queues.producers ?? [])].map((b) => b.binding);
      if (ai) bindings.push(ai.binding);
      for (const binding of bindings) assert.match(output, new RegExp(`env\\.${binding}\\b`), `binding ${binding}`);
      console.log(`${name}: ${size[1]} KiB, gzip ${size[2]} KiB`);
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });
}
