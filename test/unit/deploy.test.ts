// deploy/: the bridge's Dockerfile, compose file and systemd unit start bridge/cli.mjs with
// arguments and environment that the bridge's own parser (bridge/config.mjs) accepts.
import { describe, expect, it } from "vitest";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";
import { parseConfig } from "../../bridge/config.mjs";
import { isRecord, isStringArray } from "../../src/guards";

const ROOT = resolve(import.meta.dirname, "../..");
const DEPLOY = join(ROOT, "deploy");
const read = (file: string): string => readFileSync(join(ROOT, file), "utf8");

/** A Dockerfile's instructions (continuation lines joined, comments dropped), in order. */
function dockerInstructions(text: string): { op: string; args: string }[] {
  const joined = text.replace(/\\\r?\n/g, " ");
  return joined
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const m = /^(\S+)\s+(.*)$/.exec(l);
      return { op: (m?.[1] ?? l).toUpperCase(), args: m?.[2] ?? "" };
    });
}

/** An exec-form instruction's argument list (`["node", "x"]`); the shell form is refused. */
function execForm(args: string): string[] {
  const parsed: unknown = JSON.parse(args);
  if (!isStringArray(parsed)) throw new Error(`not an exec-form list: ${args}`);
  return parsed;
}

function dockerfile(): { from: string; env: Record<string, string>; argv: string[]; copies: string[]; workdir: string } {
  const steps = dockerInstructions(read("deploy/Dockerfile"));
  const env: Record<string, string> = {};
  let entrypoint: string[] = [];
  let cmd: string[] = [];
  for (const s of steps) {
    if (s.op === "ENV") {
      for (const m of s.args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)) if (m[1]) env[m[1]] = (m[2] ?? "").replace(/^"(.*)"$/, "$1");
    }
    if (s.op === "ENTRYPOINT") entrypoint = execForm(s.args);
    if (s.op === "CMD") cmd = execForm(s.args);
  }
  return {
    from: steps.find((s) => s.op === "FROM")?.args ?? "",
    env,
    argv: [...entrypoint, ...cmd],
    copies: steps.filter((s) => s.op === "COPY").map((s) => s.args),
    workdir: steps.filter((s) => s.op === "WORKDIR").at(-1)?.args ?? "/",
  };
}

/** The compose file's bridge service. */
function composeService(): Record<string, unknown> {
  const doc: unknown = parseYaml(read("deploy/compose.yaml"));
  if (!isRecord(doc) || !isRecord(doc.services)) throw new Error("compose.yaml has no services");
  const service = doc.services["mqtt-bridge"];
  if (!isRecord(service)) throw new Error("compose.yaml has no mqtt-bridge service");
  return service;
}

function stringMap(v: unknown): Record<string, string> {
  if (!isRecord(v)) throw new Error(`not a map: ${JSON.stringify(v)}`);
  return Object.fromEntries(Object.entries(v).map(([k, value]) => [k, String(value)]));
}

/** A systemd unit: section -> key -> values (a key may repeat). */
function systemdUnit(text: string): Map<string, Map<string, string[]>> {
  const sections = new Map<string, Map<string, string[]>>();
  let current: Map<string, string[]> | undefined;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header?.[1]) {
      current = new Map();
      sections.set(header[1], current);
      continue;
    }
    const kv = /^([A-Za-z]+)=(.*)$/.exec(line);
    if (!kv?.[1] || !current) throw new Error(`not a unit line: ${line}`);
    current.set(kv[1], [...(current.get(kv[1]) ?? []), kv[2] ?? ""]);
  }
  return sections;
}

describe("deploy/Dockerfile", () => {
  it("runs bridge/cli.mjs with node, with flags the bridge accepts once BRIDGE_TO is given", () => {
    const d = dockerfile();
    expect(d.from).toMatch(/^node:(\d+)-slim$/);
    expect(Number(/^node:(\d+)/.exec(d.from)?.[1])).toBeGreaterThanOrEqual(20);
    expect(d.copies).toContain("bridge ./bridge");
    expect(d.argv.slice(0, 2)).toEqual(["node", "bridge/cli.mjs"]);
    expect(existsSync(join(ROOT, "bridge/cli.mjs"))).toBe(true);
    const config = parseConfig(d.argv.slice(2), { ...d.env, BRIDGE_TO: "wss://broker.example.com/mqtt" });
    expect(config).toMatchObject({ help: false, host: "0.0.0.0", port: 1883, shutdownGraceMs: 10_000 });
    // with TLS the default port moves to 8883
    expect(parseConfig(d.argv.slice(2), { BRIDGE_TO: "wss://b/mqtt", BRIDGE_TLS_CERT: "c.pem", BRIDGE_TLS_KEY: "k.pem" }).port).toBe(8883);
  });

  it("exposes the ports the bridge listens on", () => {
    const expose = dockerInstructions(read("deploy/Dockerfile")).filter((s) => s.op === "EXPOSE").flatMap((s) => s.args.split(/\s+/));
    expect(expose).toEqual(["1883", "8883"]);
  });
});

describe("deploy/compose.yaml", () => {
  it("is YAML with the mqtt-bridge service, built from deploy/Dockerfile with the repository as context", () => {
    const service = composeService();
    const build = service.build;
    if (!isRecord(build) || typeof build.context !== "string") throw new Error("no build context");
    expect(resolve(DEPLOY, build.context)).toBe(ROOT);
    expect(build.dockerfile).toBe("deploy/Dockerfile");
    expect(existsSync(join(ROOT, String(build.dockerfile)))).toBe(true);
  });

  it("publishes the port its environment makes the bridge listen on, and the bridge accepts that environment", () => {
    const service = composeService();
    const env = { ...dockerfile().env, ...stringMap(service.environment) };
    const config = parseConfig(dockerfile().argv.slice(2), env);
    expect(config).toMatchObject({ to: "wss://broker.example.com/mqtt", port: 8883, tlsCert: "/etc/mqtt-bridge/fullchain.pem" });
    const ports = service.ports;
    if (!isStringArray(ports)) throw new Error("ports is not a list of strings");
    expect(ports).toContain(`${config.port}:${config.port}`);
    // the files the environment names are in the mounted folder
    const volumes = service.volumes;
    if (!isStringArray(volumes)) throw new Error("volumes is not a list of strings");
    const mounts = volumes.map((v) => v.split(":")[1] ?? "");
    for (const file of [config.tlsCert, config.tlsKey, config.tokenFile]) {
      expect(mounts.some((m) => String(file).startsWith(`${m}/`)), String(file)).toBe(true);
    }
  });
});

describe("deploy/mqtt-bridge.service", () => {
  it("starts bridge/cli.mjs with node and flags and environment the bridge accepts; reload is SIGHUP", () => {
    const unit = systemdUnit(read("deploy/mqtt-bridge.service"));
    const service = unit.get("Service");
    if (!service) throw new Error("no [Service] section");
    const [exec = "", ...extra] = service.get("ExecStart") ?? [];
    expect(extra).toEqual([]);
    const [node = "", cli = "", ...flags] = exec.split(/\s+/);
    expect(node).toMatch(/^\/.*\/node$/);
    expect(cli).toMatch(/^\/.+\/bridge\/cli\.mjs$/);
    const env: Record<string, string> = {};
    for (const assignment of service.get("Environment") ?? []) {
      const [k = "", ...v] = assignment.split("=");
      env[k] = v.join("=");
    }
    expect(parseConfig(flags, env)).toMatchObject({ to: "wss://broker.example.com/mqtt", port: 8883, shutdownGraceMs: 10_000 });
    expect(service.get("ExecReload")).toEqual(["/bin/kill -HUP $MAINPID"]);
    // systemd's stop timeout outlasts the bridge's own shutdown grace
    expect(Number(service.get("TimeoutStopSec")?.[0])).toBeGreaterThan(parseConfig(flags, env).shutdownGraceMs / 1000);
    expect(unit.get("Install")?.get("WantedBy")).toEqual(["multi-user.target"]);
  });
});

describe("the bridge's documentation", () => {
  it("points at the deploy files instead of copies of them", () => {
    const readme = read("docs/bridge.md");
    for (const file of ["deploy/Dockerfile", "deploy/compose.yaml", "deploy/mqtt-bridge.service"]) expect(readme).toContain(file);
    expect(readme).not.toContain("```dockerfile");
    expect(readme).not.toContain("# /etc/systemd/system/mqtt-bridge.service");
  });
});
