// Both wrangler configs deploy: `wrangler deploy --dry-run` builds, bundles and checks the
// bindings offline. Prints each worker's size as wrangler counts it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import { ROOT } from "../local/workers.mjs";

for (const [config, name] of [
  ["wrangler.upload.toml", "image-upload-worker"],
  ["wrangler.tagger.toml", "image-tagger-worker"],
]) {
  test(`wrangler deploy --dry-run -c ${config}`, () => {
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
      for (const binding of ["IMAGE_BUCKET", "RESULTS_KV"]) assert.match(output, new RegExp(`env\\.${binding}`));
      console.log(`${name}: ${size[1]} KiB, gzip ${size[2]} KiB`);
    } finally {
      rmSync(outdir, { recursive: true, force: true });
    }
  });
}
