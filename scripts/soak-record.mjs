// Adds the runs of one soak (scripts/soak.sh) to a committed record, so that the runs behind a
// "no test failed" claim can be listed: each run's start, commit, duration, load and the
// tests that failed in it. scripts/soak.sh calls it with `--record FILE`.
//
// Usage: node scripts/soak-record.mjs SOAK_DIR FILE
//   SOAK_DIR  the soak's log folder: its runs.txt (one line per run, written by soak.sh) and
//             failures.txt (run, file and test of each failure)
//   FILE      the record (JSON), created if missing, e.g. bench/soak-results.json

import { existsSync, readFileSync, writeFileSync } from "node:fs";

const [dir, file] = process.argv.slice(2);
if (!dir || !file) {
  console.error("usage: node scripts/soak-record.mjs SOAK_DIR FILE");
  process.exit(2);
}

/** runs.txt: `run<TAB>started (ISO)<TAB>commit<TAB>hogs<TAB>seconds<TAB>load average<TAB>failed files<TAB>files`. */
const runs = readFileSync(`${dir}/runs.txt`, "utf8")
  .split("\n")
  .filter(Boolean)
  .map((line) => {
    const [run, started, commit, hogs, seconds, load, failedFiles, files] = line.split("\t");
    return {
      run: Number(run),
      started,
      commit,
      hogs: Number(hogs),
      durationSeconds: Number(seconds),
      loadAverageAtStart: load.split(" ").map(Number),
      files: Number(files),
      failedFiles: Number(failedFiles),
    };
  });
const failures = existsSync(`${dir}/failures.txt`)
  ? readFileSync(`${dir}/failures.txt`, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => line.split("\t"))
  : [];
for (const run of runs) {
  run.failures = failures.filter(([r]) => Number(r) === run.run).map(([, f, test]) => ({ file: f, test }));
}

const record = existsSync(file)
  ? JSON.parse(readFileSync(file, "utf8"))
  : {
      description:
        "Soak runs of the Miniflare tests (scripts/soak.sh --record): each run is every tests/*.test.mjs file, one after the other, " +
        "while busy loops keep the cores loaded; a run passes when no test failed.",
      soaks: [],
    };
// SOAK_NOTE: anything a reader of the record should know (a run stopped early, say).
record.soaks.push({ command: process.env.SOAK_COMMAND || "scripts/soak.sh", ...(process.env.SOAK_NOTE ? { note: process.env.SOAK_NOTE } : {}), runs });
writeFileSync(file, JSON.stringify(record, null, 2) + "\n");
const failed = runs.filter((r) => r.failures.length || r.failedFiles).length;
console.log(`soak-record: ${runs.length} run(s), ${failed} with failures, added to ${file}`);
