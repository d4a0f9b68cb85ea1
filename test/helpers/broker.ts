import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createServer } from "node:net";

const ROOT = resolve(import.meta.dirname, "../..");
const WRANGLER = join(ROOT, "node_modules/.bin/wrangler");

/**
 * The shared broker's settings: anonymous access on (account `anon`) for the protocol
 * tests, fixed secrets for the identity tests, a small offline queue for the bound test.
 */
export const TEST_VARS = {
  ANONYMOUS_ACCOUNT: "anon",
  ADMIN_TOKEN: "e2e-admin-token",
  JWT_SECRET: "e2e-jwt-secret-0123456789abcdef0123456789abcdef",
  DEVICE_PEPPER: "e2e-device-pepper",
  KEEPALIVE_MIN_SECONDS: "0",
  MAX_QUEUED_MESSAGES: "50",
  /** Retained bytes per account: the quota test (test/e2e/hostile.test.ts) fills one account's. */
  MAX_RETAINED_BYTES: "16777216",
  /** The TCP bridge's shared secret (test/e2e/bridge.test.ts). */
  BRIDGE_TOKEN: "e2e-bridge-token-0123456789",
};

export interface Broker {
  port: number;
  url: string;
  wsUrl: string;
  persistDir: string;
  child: ChildProcess;
  /** Collected stdout+stderr, for diagnosing failures. */
  output: () => string;
}

export interface BrokerOptions {
  port?: number;
  persistDir?: string;
  vars?: Record<string, string>;
}

/** A free TCP port on 127.0.0.1. */
export function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => ok(port));
    });
  });
}

const quietEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  CLOUDFLARE_CF_FETCH_ENABLED: "false",
  WRANGLER_SEND_METRICS: "false",
  XDG_CONFIG_HOME: join(ROOT, ".wrangler/config"),
  NO_COLOR: "1",
});

/** Applies the D1 migrations to a local persisted state directory. */
export function applyMigrations(persistDir: string): void {
  const r = spawnSync(WRANGLER, ["d1", "migrations", "apply", "DB", "--local", "--persist-to", persistDir], {
    cwd: ROOT,
    env: { ...quietEnv(), CI: "true" },
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`migrations failed: ${r.stdout}\n${r.stderr}`);
}

/**
 * Starts `wrangler dev` on 127.0.0.1 in its own process group, waits until /health
 * answers, and returns a handle; stop it with stopBroker (SIGTERM) or killBroker (SIGKILL).
 */
export async function startBroker(opts: BrokerOptions = {}): Promise<Broker> {
  const port = opts.port ?? (await freePort());
  const persistDir = opts.persistDir ?? mkdtempSync(join(tmpdir(), "mqtt-broker-"));
  applyMigrations(persistDir);
  // A free inspector port too: two brokers (or two test runs) must not fight over 9229.
  const inspectorPort = await freePort();
  const args = ["dev", "--ip", "127.0.0.1", "--port", String(port), "--inspector-port", String(inspectorPort), "--persist-to", persistDir, "--show-interactive-dev-session=false"];
  for (const [k, v] of Object.entries(opts.vars ?? {})) args.push("--var", `${k}:${v}`);
  const child = spawn(WRANGLER, args, { cwd: ROOT, env: quietEnv(), detached: true, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`wrangler dev exited early (${child.exitCode}):\n${out}`);
    try {
      const res = await fetch(`${url}/health`);
      if (res.ok) break;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) {
      stopProcessGroup(child, "SIGKILL");
      throw new Error(`wrangler dev did not answer /health within 60 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return { port, url, wsUrl: `ws://127.0.0.1:${port}/mqtt`, persistDir, child, output: () => out };
}

function stopProcessGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

async function waitExit(child: ChildProcess, ms: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((ok) => {
    const t = setTimeout(ok, ms);
    child.once("exit", () => {
      clearTimeout(t);
      ok();
    });
  });
}

/** Graceful stop of the whole process group (npm, node, esbuild, workerd). */
export async function stopBroker(b: Broker): Promise<void> {
  stopProcessGroup(b.child, "SIGTERM");
  await waitExit(b.child, 5_000);
  stopProcessGroup(b.child, "SIGKILL");
}

/** Simulates a crash of the runtime: SIGKILL to the whole process group. */
export async function killBroker(b: Broker): Promise<void> {
  stopProcessGroup(b.child, "SIGKILL");
  await waitExit(b.child, 5_000);
}
