#!/usr/bin/env node
// `npm test`: typecheck, the deploy bundle (`wrangler deploy --dry-run`), the Env types check
// (scripts/env-types.mjs), then the vitest projects (`unit`, `local`, `worker`, `worker-alarm`, the four `e2e`), one after the other.
// Every step runs even if an earlier one failed. Extra arguments go to vitest, e.g.
// `npm test -- test/e2e/pubsub.test.ts`; a project that then matches no file is skipped, and so
// are the bundle and types steps. The last line printed is `N passed, N failed` (typecheck,
// bundle and types count as one test each); the exit code is 0 only if nothing failed and
// something passed.
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { checkEnvTypes } from "./env-types.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const BIN = join(ROOT, "node_modules/.bin");
const PROJECTS = ["unit", "local", "worker", "worker-alarm", "e2e", "e2e-v5", "e2e-v3", "e2e-shards"];
const extraArgs = process.argv.slice(2);

const env = {
  ...process.env,
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_SEND_METRICS: "false",
  XDG_CONFIG_HOME: join(ROOT, ".wrangler/config"),
};

/** Runs a command with inherited output; returns its exit code (non-zero if it could not start). */
function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: ROOT, env, stdio: ["ignore", "inherit", "inherit"] });
  if (r.error) {
    console.error(`test: could not run ${cmd}: ${r.error.message}`);
    return 1;
  }
  return r.status ?? 1;
}

const results = []; // { name, passed, failed, note, failures, flaky }
const tmp = mkdtempSync(join(tmpdir(), "mqtt-broker-test-"));

try {
  // 1. typecheck: one test.
  console.log("\n=== typecheck: tsc --noEmit -p tsconfig.json ===");
  const tscCode = run(join(BIN, "tsc"), ["--noEmit", "-p", "tsconfig.json"]);
  results.push({
    name: "typecheck",
    passed: tscCode === 0 ? 1 : 0,
    failed: tscCode === 0 ? 0 : 1,
    note: tscCode === 0 ? "ok" : `tsc exited ${tscCode}`,
  });

  // 2. the deploy bundle and the Env types: one test each (skipped when running chosen files).
  if (extraArgs.length === 0) {
    console.log("\n=== bundle: wrangler deploy --dry-run --outdir <tmp> ===");
    const bundleCode = run(join(BIN, "wrangler"), ["deploy", "--dry-run", "--outdir", join(tmp, "bundle")]);
    results.push({
      name: "bundle",
      passed: bundleCode === 0 ? 1 : 0,
      failed: bundleCode === 0 ? 0 : 1,
      note: bundleCode === 0 ? "ok" : `wrangler deploy --dry-run exited ${bundleCode}`,
    });

    console.log("\n=== env types: wrangler types vs src/env.ts ===");
    const types = checkEnvTypes(env);
    if (types.ok) console.log(`src/env.ts matches wrangler.toml (${types.names.length} bindings)`);
    else console.error(types.problems.join("\n"));
    results.push({
      name: "env types",
      passed: types.ok ? 1 : 0,
      failed: types.ok ? 0 : 1,
      note: types.ok ? "ok" : `${types.problems.length} difference(s)`,
    });
  }

  // 3. vitest projects.
  for (const project of PROJECTS) {
    const reportFile = join(tmp, `${project}.json`);
    const args = [
      "run",
      "--project",
      project,
      "--reporter=default",
      "--reporter=json",
      `--outputFile.json=${reportFile}`,
    ];
    if (extraArgs.length > 0) args.push("--passWithNoTests");
    args.push(...extraArgs);
    console.log(`\n=== ${project}: vitest ${args.join(" ")} ===`);
    const code = run(join(BIN, "vitest"), args);

    let report;
    if (existsSync(reportFile)) {
      try {
        report = JSON.parse(readFileSync(reportFile, "utf8"));
      } catch (err) {
        console.error(`test: cannot read the ${project} JSON report: ${err.message}`);
      }
    }
    let passed = 0;
    let failed = 0;
    let note = "";
    const failures = []; // "file > test: first line of the error", for the summary
    const flaky = []; // the same, for tests that passed on a retry
    if (report) {
      passed = report.numPassedTests ?? 0;
      failed = report.numFailedTests ?? 0;
      const files = Array.isArray(report.testResults) ? report.testResults : [];
      const unloaded = files.filter(
        (f) => f.status === "failed" && (!Array.isArray(f.assertionResults) || f.assertionResults.length === 0),
      );
      const fileName = (f) => (typeof f.name === "string" ? f.name.replace(`${ROOT}/`, "") : "?");
      const firstLine = (text) => String(text ?? "").split("\n")[0].slice(0, 300);
      for (const f of files) {
        for (const a of Array.isArray(f.assertionResults) ? f.assertionResults : []) {
          const line = `${fileName(f)} > ${a.fullName ?? a.title}: ${firstLine((a.failureMessages ?? [])[0])}`;
          if (a.status === "failed") failures.push(line);
          // Passed, but only on a retry (the e2e projects retry once): its first error is kept.
          else if (a.status === "passed" && (a.failureMessages ?? []).length > 0) flaky.push(line);
        }
      }
      for (const f of unloaded) failures.push(`${fileName(f)}: ${firstLine(f.message ?? "failed to load")}`);
      if (unloaded.length > 0) {
        failed += unloaded.length;
        note = `${unloaded.length} file(s) failed to load`;
      }
      if (code === 0 && files.length === 0 && (report.numTotalTests ?? 0) === 0 && extraArgs.length > 0) {
        results.push({ name: project, passed: 0, failed: 0, note: "skipped: no matching test files" });
        continue;
      }
    } else {
      note = "no JSON report";
    }
    if (code !== 0 && failed === 0) {
      failed = 1;
      note = [note, `vitest exited ${code} with no failed test`].filter(Boolean).join("; ");
    }
    results.push({ name: project, passed, failed, note, failures, flaky });
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

const passed = results.reduce((n, r) => n + r.passed, 0);
const failed = results.reduce((n, r) => n + r.failed, 0);
console.log("\n=== summary ===");
for (const r of results) {
  console.log(`  ${r.name.padEnd(10)} passed ${r.passed}, failed ${r.failed}${r.note ? `  (${r.note})` : ""}`);
  // Failed tests are named here too, so that the tail of the output says which ones.
  for (const f of r.failures ?? []) console.log(`    failed: ${f}`);
  for (const f of r.flaky ?? []) console.log(`    passed on retry: ${f}`);
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed === 0 && passed > 0 ? 0 : 1;
