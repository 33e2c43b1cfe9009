// Removes what scripts/deploy.mjs created for one environment (scripts/teardown.sh):
//
//   node scripts/teardown.mjs --env staging|production [--yes]
//
// Lists what exists of the environment's workers and resources (named as the deploy names
// them, from the wrangler configs), asks for the environment's name as confirmation (`--yes`
// skips the question), then deletes: the workers in reverse deploy order (the upload worker,
// then the tagger), the queues, the KV namespace, the D1 database (with every image record),
// the R2 bucket (R2 deletes only an empty bucket: empty it first, see the README), and the
// generated configs in .deploy/<env>. Deletes only what exists, so it can be run again after
// a failure.

import { existsSync, rmSync } from "node:fs";
import readline from "node:readline/promises";

import { ENVIRONMENTS, allResources, describe, errorLines, exists, inventory, planFor, wrangler } from "./lib/deploy-plan.mjs";

const argv = process.argv.slice(2);
// `npm run teardown --env staging --yes` (without `--`): npm keeps the flags as npm_config_*
// (`--env` alone as "true", its value left as an argument).
const npmEnv = process.env.npm_config_env;
const env = argv.includes("--env") ? argv[argv.indexOf("--env") + 1] : npmEnv === "true" ? argv.find((a) => !a.startsWith("-")) : npmEnv;
const yes = argv.includes("--yes") || process.env.npm_config_yes === "true";
if (!ENVIRONMENTS.includes(env)) {
  console.error(`usage: scripts/teardown.sh --env ${ENVIRONMENTS.join("|")} [--yes]`);
  process.exit(2);
}
const say = (line = "") => console.log(line);

const plan = planFor(env);
const who = wrangler(["whoami", "--json"]);
if (who.code !== 0 || !/"loggedIn":\s*true/.test(who.stdout)) {
  console.error("!! wrangler is not logged in: run `npx wrangler login` (or set CLOUDFLARE_API_TOKEN), then this again.");
  process.exit(1);
}

const workers = [...plan.workers].reverse().filter((w) => workerExists(w.name));
const inv = inventory(plan);
// Consumers go with their workers; then queues, KV, D1, and the bucket last (it may refuse).
const order = { queue: 0, kv: 1, d1: 2, r2: 3 };
const resources = allResources(plan)
  .filter((r) => exists(inv, r))
  .sort((a, b) => order[a.kind] - order[b.kind]);

say(`== image tagger: teardown of ${env}`);
if (!workers.length && !resources.length) {
  say("  Nothing of it exists: nothing to remove.");
  rmSync(plan.dir, { recursive: true, force: true });
  process.exit(0);
}
say("  This deletes, with all their data:");
for (const w of workers) say(`    worker ${w.name}`);
for (const r of resources) say(`    ${describe(r)}`);

if (!yes) {
  const rl = readline.createInterface({ input: process.stdin, output: process.stdout });
  const answer = await rl.question(`  Type "${env}" to delete all of it: `);
  rl.close();
  if (answer.trim() !== env) {
    say("  Not confirmed: nothing deleted.");
    process.exit(1);
  }
}

const failed = [];
const run = (what, args) => {
  const r = wrangler(args);
  if (r.code === 0) {
    say(`  ${what}: deleted`);
    return;
  }
  failed.push(what);
  say(`  ${what}: NOT deleted:\n${errorLines(r.out)}`);
  if (/not empty/i.test(r.out)) say("    Empty the bucket first (dashboard: R2 → the bucket → Settings → Delete objects), then run this again.");
};
for (const w of workers) run(`worker ${w.name}`, ["delete", "--name", w.name, "--force"]);
for (const r of resources) {
  const args = {
    queue: ["queues", "delete", r.name],
    kv: ["kv", "namespace", "delete", "--namespace-id", inv.kv.get(r.name), "--skip-confirmation"],
    d1: ["d1", "delete", r.name, "--skip-confirmation"],
    r2: ["r2", "bucket", "delete", r.name],
  }[r.kind];
  run(describe(r), args);
}
if (failed.length) {
  say(`\n!! ${failed.length} not deleted (above); run the teardown again once that is fixed.`);
  process.exit(1);
}
if (existsSync(plan.dir)) rmSync(plan.dir, { recursive: true, force: true });
say(`  ${env} is gone (and its generated configs).`);

/** Whether a worker is deployed: `wrangler deployments status` fails for one that is not. */
function workerExists(name) {
  const r = wrangler(["deployments", "status", "--json", "--name", name]);
  if (r.code === 0) return true;
  if (/not found|does not exist|no deployments/i.test(r.out)) return false;
  throw new Error(`could not tell whether worker ${name} exists:\n${errorLines(r.out)}`);
}
