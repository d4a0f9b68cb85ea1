#!/usr/bin/env node
// Start-up time to the first `GET /health` 200, each run in a fresh process:
//   local (cold)    startLocalBroker() with an empty bundle cache (bundle + Miniflare)
//   local (cached)  startLocalBroker() again (Miniflare only)
//   npm start       node scripts/start.mjs (.dev.vars, D1 migrations via wrangler, wrangler dev)
//   wrangler dev    the e2e helper's way: `wrangler d1 migrations apply --local`, then `wrangler dev`
// Usage: node scripts/startup-times.mjs [runs=5]. Prints each run, the medians and the minimums (ms).
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "../bench/lib/servers.mjs";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");
const runs = Number(process.argv[2] ?? 5);
const env = {
  ...process.env,
  CI: "true",
  NO_COLOR: "1",
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_SEND_METRICS: "false",
  XDG_CONFIG_HOME: join(ROOT, ".wrangler/config"),
};

/**
 * Spawns `cmd args` in its own process group, polls /health every 20 ms, then ends the group.
 * @param {string} cmd
 * @param {string[]} args
 * @param {number} port
 * @param {NodeJS.ProcessEnv} [extraEnv]
 * @returns {Promise<number>} ms from spawn to the first 200
 */
async function timeToHealth(cmd, args, port, extraEnv = {}) {
  const t0 = performance.now();
  const child = spawn(cmd, args, { cwd: ROOT, env: { ...env, ...extraEnv }, detached: true, stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err += String(d)));
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`${cmd} exited ${child.exitCode}: ${err}`);
      try {
        if ((await fetch(`http://127.0.0.1:${port}/health`)).ok) return performance.now() - t0;
      } catch {
        // not up yet
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    const exited = new Promise((r) => child.once("exit", r));
    if (child.pid !== undefined && child.exitCode === null) process.kill(-child.pid, "SIGTERM");
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(-child.pid, "SIGKILL");
      } catch {
        // gone
      }
    }
  }
}

/** The in-process start, from `import()` to /health, in a child node (it stays up until SIGTERM). */
const LOCAL_CHILD = `
const { startLocalBroker } = await import("edge-mqtt-broker/local");
const b = await startLocalBroker({ port: Number(process.env.PORT), cacheDir: process.env.CACHE_DIR || undefined });
process.on("SIGTERM", () => b.stop().then(() => process.exit(0)));
`;

/** @param {number[]} xs */
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

/** @type {Record<string, number[]>} */
const results = { "local (cold)": [], "local (cached)": [], "npm start": [], "wrangler dev": [] };
for (let i = 0; i < runs; i++) {
  const cacheDir = mkdtempSync(join(tmpdir(), "local-broker-cache-"));
  try {
    const local = ["--input-type=module", "-e", LOCAL_CHILD];
    let port = await freePort();
    results["local (cold)"]?.push(await timeToHealth(process.execPath, local, port, { PORT: String(port), CACHE_DIR: cacheDir }));
    port = await freePort();
    results["local (cached)"]?.push(await timeToHealth(process.execPath, local, port, { PORT: String(port), CACHE_DIR: cacheDir }));
  } finally {
    rmSync(cacheDir, { recursive: true, force: true });
  }

  let port = await freePort();
  results["npm start"]?.push(await timeToHealth(process.execPath, [join(ROOT, "scripts/start.mjs")], port, { PORT: String(port) }));

  const persist = mkdtempSync(join(tmpdir(), "startup-wrangler-"));
  try {
    port = await freePort();
    const inspector = await freePort();
    const t0 = performance.now();
    const m = spawnSync(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", persist], { cwd: ROOT, env, encoding: "utf8" });
    if (m.status !== 0) throw new Error(`migrations failed: ${m.stderr}`);
    const migrate = performance.now() - t0;
    const args = ["dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(inspector), "--persist-to", persist, "--show-interactive-dev-session=false"];
    results["wrangler dev"]?.push(migrate + (await timeToHealth(WRANGLER, args, port)));
  } finally {
    rmSync(persist, { recursive: true, force: true });
  }
  console.log(`run ${i + 1}: ${Object.entries(results).map(([k, v]) => `${k} ${Math.round(v[i] ?? NaN)}`).join(", ")}`);
}
console.log(`medians of ${runs} (ms): ${Object.entries(results).map(([k, v]) => `${k} ${Math.round(median(v))}`).join(", ")}`);
console.log(`minimums of ${runs} (ms): ${Object.entries(results).map(([k, v]) => `${k} ${Math.round(Math.min(...v))}`).join(", ")}`);
