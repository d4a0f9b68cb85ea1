import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { join, resolve } from "node:path";

const ROOT = resolve(import.meta.dirname, "../..");
export const BRIDGE_CLI = join(ROOT, "bridge/cli.mjs");

export interface BridgeProcess {
  child: ChildProcess;
  port: number;
  /** Every JSON log line so far. */
  logs: () => Record<string, unknown>[];
  /** stdout + stderr, for failure messages. */
  output: () => string;
  /** SIGTERM, then SIGKILL after `ms`; resolves with the exit code. */
  stop: (ms?: number) => Promise<number | null>;
}

/**
 * Starts `node bridge/cli.mjs ARGS` (the same file `npm run bridge` and the `bin` run) and
 * waits for its `listening` log line. Use `--listen 127.0.0.1:0` to get a free port.
 */
export async function startBridge(args: string[], env: NodeJS.ProcessEnv = {}): Promise<BridgeProcess> {
  const child = spawn(process.execPath, [BRIDGE_CLI, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let partial = "";
  const logs: Record<string, unknown>[] = [];
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
    partial += d.toString();
    const lines = partial.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // not a log line
      }
    }
  });
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((ok) => child.once("exit", (code) => ok(code)));
  const deadline = Date.now() + 10_000;
  let port = 0;
  for (;;) {
    const l = logs.find((r) => r.event === "listening");
    if (l) {
      port = Number(l.port);
      break;
    }
    if (child.exitCode !== null) throw new Error(`the bridge exited (${child.exitCode}) before listening:\n${out}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`the bridge did not log "listening" within 10 s:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    child,
    port,
    logs: () => logs,
    output: () => out,
    stop: async (ms = 5_000) => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), ms);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

/** The package that brings each native tool the bridge tests run, per package manager. */
const TOOL_PACKAGES: Record<string, { debian: string; fedora: string; alpine: string; brew: string }> = {
  mosquitto_pub: { debian: "mosquitto-clients", fedora: "mosquitto", alpine: "mosquitto-clients", brew: "mosquitto" },
  mosquitto_sub: { debian: "mosquitto-clients", fedora: "mosquitto", alpine: "mosquitto-clients", brew: "mosquitto" },
  openssl: { debian: "openssl", fedora: "openssl", alpine: "openssl", brew: "openssl" },
};

/**
 * Fails with a clear message when a native tool the tests need is missing (no silent skip),
 * naming the package to install. `.ci/run` installs them with apt-get.
 */
export function requireTool(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { stdio: "ignore" });
  if (!r.error) return;
  const code = "code" in r.error ? String(r.error.code) : r.error.message;
  const pkg = TOOL_PACKAGES[cmd];
  const how = pkg
    ? `Debian/Ubuntu: apt-get install ${pkg.debian} (.ci/run does); Fedora: dnf install ${pkg.fedora}; ` +
      `Alpine: apk add ${pkg.alpine}; macOS: brew install ${pkg.brew}`
    : "install it and put it on PATH";
  throw new Error(`${cmd} is not installed (${code}): these tests run it. ${how}`);
}
