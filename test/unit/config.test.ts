// The config schema (src/config.ts): strict parsing, the defaults, and the files that must agree
// with it (wrangler.toml, the configuration table of docs/configuration.md, .dev.vars.example, src/env.ts).
import { afterEach, describe, expect, it, vi } from "vitest";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  CONFIG_SCHEMA,
  ConfigError,
  DEFAULT_LIMITS,
  expectedForm,
  getConfig,
  loadConfig,
  parseConfig,
  type ConfigResult,
  type ConfigVars,
} from "../../src/config";
import { log, setLogLevel } from "../../src/log";
import { interfaceMembers } from "../../scripts/env-types.mjs";

const ROOT = resolve(import.meta.dirname, "../..");
const read = (file: string): string => readFileSync(join(ROOT, file), "utf8");
const NAMES = Object.keys(CONFIG_SCHEMA);

function issues(result: ConfigResult): string[] {
  return result.ok ? [] : result.error.issues.map((i) => i.message);
}

/**
 * The members of `interface Env` in src/env.ts, by whether they are optional (the env-types
 * check's reader). Optional strings are vars and secrets; an optional binding of another type
 * (the Analytics Engine dataset) is neither.
 */
function envMembers(): { required: string[]; optional: string[] } {
  const members = [...interfaceMembers(read("src/env.ts"), "Env")];
  return {
    required: members.filter(([, m]) => !m.optional).map(([n]) => n),
    optional: members.filter(([, m]) => m.optional && m.type === "string").map(([n]) => n),
  };
}

afterEach(() => {
  setLogLevel("info");
  vi.restoreAllMocks();
});

describe("parseConfig", () => {
  it("unset vars give the defaults, as before the schema", () => {
    const parsed = parseConfig({});
    expect(parsed.ok).toBe(true);
    expect(DEFAULT_LIMITS).toEqual({
      maxPacketBytes: 128 * 1024 + 256 + 9 + 8 * 1024,
      maxPayloadBytes: 128 * 1024,
      maxClientIdBytes: 128,
      maxTopicBytes: 256,
      maxTopicLevels: 16,
      maxSubscriptions: 100,
      maxFiltersPerSubscribe: 32,
      publishRatePerSecond: 100,
      publishBurst: 200,
      packetRatePerSecond: 500,
      packetBurst: 1000,
      maxPacketsPerFrame: 500,
      connectRatePerClient: 1,
      connectBurstPerClient: 10,
      connectRatePerAccount: 500,
      connectBurstPerAccount: 1000,
      httpPublishRatePerSecond: 100,
      httpPublishBurst: 200,
      keepAliveMinSeconds: 0,
      keepAliveMaxSeconds: 3600,
      keepAliveCheckSeconds: 0,
      keepAliveClock: "shared",
      connectTimeoutSeconds: 30,
      maxQueuedMessages: 1000,
      maxQueuedBytes: 8 * 1024 * 1024,
      maxOutboxMessages: 1000,
      outboxHoldMs: 10_000,
      maxMonitorRetained: 10_000,
      monitorRetainSeconds: 86_400,
      maxRetainedMessages: 100_000,
      maxRetainedBytes: 256 * 1024 * 1024,
      routerShards: 1,
      routerShardLevel: 5,
      maxInflight: 100,
      sessionExpirySeconds: 7 * 24 * 3600,
      allowControlCharacters: false,
    });
    if (parsed.ok) {
      expect(parsed.config.maxMultiConnections).toBe(100);
      expect(parsed.config.anonymousAccount).toBeUndefined();
      expect(parsed.logLevel).toBe("info");
    }
  });

  it("an empty or blank value is the default", () => {
    const parsed = parseConfig({ MAX_PAYLOAD_BYTES: "", MAX_INFLIGHT: "  ", LOG_LEVEL: "" });
    expect(parsed.ok && parsed.config.limits.maxPayloadBytes).toBe(128 * 1024);
    expect(parsed.ok && parsed.config.limits.maxInflight).toBe(100);
  });

  it("a value that does not parse is an error naming the var and the expected form, never the default", () => {
    expect(issues(parseConfig({ MAX_PAYLOAD_BYTES: "128k" }))).toEqual(['MAX_PAYLOAD_BYTES must be a whole number >= 1, got "128k"']);
  });

  it.each(["128k", "-1", "1.5", "1e3", "0x10", "12 34", "9007199254740993", "one"])("int: %j is refused", (value) => {
    expect(issues(parseConfig({ MAX_INFLIGHT: value }))).toEqual([`MAX_INFLIGHT must be a whole number >= 1, got ${JSON.stringify(value)}`]);
  });

  it("int: the minimum is the var's own (0 is a keep-alive minimum, not an inflight window)", () => {
    expect(parseConfig({ KEEPALIVE_MIN_SECONDS: "0" }).ok).toBe(true);
    expect(issues(parseConfig({ MAX_INFLIGHT: "0" }))).toEqual(['MAX_INFLIGHT must be a whole number >= 1, got "0"']);
  });

  it("int: surrounding blanks are trimmed; a whole JSON number (a var written unquoted in wrangler.toml) counts", () => {
    const vars: Record<string, unknown> = { MAX_INFLIGHT: " 7 ", MAX_SUBSCRIPTIONS: 9 };
    const parsed = parseConfig(vars);
    expect(parsed.ok && parsed.config.limits.maxInflight).toBe(7);
    expect(parsed.ok && parsed.config.limits.maxSubscriptions).toBe(9);
    const fraction: Record<string, unknown> = { MAX_SUBSCRIPTIONS: 2.5 };
    expect(issues(parseConfig(fraction))).toEqual(["MAX_SUBSCRIPTIONS must be a whole number >= 1, got 2.5"]);
    const flag: Record<string, unknown> = { MAX_SUBSCRIPTIONS: true };
    expect(issues(parseConfig(flag))).toEqual(["MAX_SUBSCRIPTIONS must be a whole number >= 1, got true"]);
  });

  it("the derived packet limit follows the payload and topic limits", () => {
    const parsed = parseConfig({ MAX_PAYLOAD_BYTES: "1024", MAX_TOPIC_BYTES: "32" });
    expect(parsed.ok && parsed.config.limits.maxPacketBytes).toBe(1024 + 32 + 9 + 8 * 1024);
  });

  it("LOG_LEVEL is one of debug, info, warn, error", () => {
    const parsed = parseConfig({ LOG_LEVEL: "debug" });
    expect(parsed.ok && parsed.logLevel).toBe("debug");
    expect(issues(parseConfig({ LOG_LEVEL: "verbose" }))).toEqual(['LOG_LEVEL must be one of debug, info, warn, error, got "verbose"']);
  });

  it("BENCH_COUNTERS is 0 or 1", () => {
    expect(parseConfig({ BENCH_COUNTERS: "1" }).ok).toBe(true);
    expect(issues(parseConfig({ BENCH_COUNTERS: "yes" }))).toEqual(['BENCH_COUNTERS must be one of 0, 1, got "yes"']);
  });

  it("ANONYMOUS_ACCOUNT is empty (off) or an account id", () => {
    const on = parseConfig({ ANONYMOUS_ACCOUNT: "anon" });
    expect(on.ok && on.config.anonymousAccount).toBe("anon");
    const off = parseConfig({ ANONYMOUS_ACCOUNT: "" });
    expect(off.ok && off.config.anonymousAccount).toBeUndefined();
    expect(issues(parseConfig({ ANONYMOUS_ACCOUNT: "no spaces" }))).toEqual([
      'ANONYMOUS_ACCOUNT must be empty (off) or an account id of 1 to 64 characters of A-Z a-z 0-9 _ . -, got "no spaces"',
    ]);
  });

  it("KEEPALIVE_CLOCK: the account's clock by default; KEEPALIVE_CHECK_SECONDS > 0 alone selects the connection's alarm; a set KEEPALIVE_CLOCK wins", () => {
    const clock = (vars: Record<string, string>) => {
      const parsed = parseConfig(vars);
      if (!parsed.ok) throw new Error("config refused");
      return parsed.config.limits.keepAliveClock;
    };
    expect(clock({})).toBe("shared");
    expect(clock({ KEEPALIVE_CHECK_SECONDS: "0" })).toBe("shared");
    expect(clock({ KEEPALIVE_CHECK_SECONDS: "300" })).toBe("alarm");
    expect(clock({ KEEPALIVE_CHECK_SECONDS: "300", KEEPALIVE_CLOCK: "shared" })).toBe("shared");
    expect(clock({ KEEPALIVE_CLOCK: "alarm" })).toBe("alarm");
    expect(clock({ KEEPALIVE_CLOCK: " " })).toBe("shared");
  });

  it("a keep-alive minimum above the maximum is refused", () => {
    expect(issues(parseConfig({ KEEPALIVE_MIN_SECONDS: "60", KEEPALIVE_MAX_SECONDS: "30" }))).toEqual([
      "KEEPALIVE_MIN_SECONDS must be <= KEEPALIVE_MAX_SECONDS, got 60 > 30",
    ]);
  });

  it("every bad var is reported, not only the first", () => {
    const parsed = parseConfig({ MAX_PAYLOAD_BYTES: "128k", PUBLISH_BURST: "-5", LOG_LEVEL: "loud" });
    expect(parsed.ok ? [] : parsed.error.issues.map((i) => i.name)).toEqual(["MAX_PAYLOAD_BYTES", "PUBLISH_BURST", "LOG_LEVEL"]);
    expect(parsed.ok ? "" : parsed.error.message).toBe(
      'MAX_PAYLOAD_BYTES must be a whole number >= 1, got "128k"; PUBLISH_BURST must be a whole number >= 1, got "-5"; LOG_LEVEL must be one of debug, info, warn, error, got "loud"',
    );
  });

  it("every var's default parses as a value of its own kind", () => {
    for (const [name, spec] of Object.entries(CONFIG_SCHEMA)) {
      const vars: Record<string, unknown> = { [name]: String(spec.default) };
      expect({ name, issues: issues(parseConfig(vars)) }).toEqual({ name, issues: [] });
      expect(expectedForm(spec).length).toBeGreaterThan(0);
    }
  });
});

describe("getConfig and loadConfig", () => {
  it("getConfig throws a ConfigError; loadConfig does not, and logs config.invalid once for that env", () => {
    const lines: string[] = [];
    vi.spyOn(console, "error").mockImplementation((line: unknown) => void lines.push(String(line)));
    const env: ConfigVars = { MAX_PAYLOAD_BYTES: "128k" };
    expect(() => getConfig(env)).toThrow(ConfigError);
    expect(loadConfig(env).ok).toBe(false);
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      { level: "error", event: "config.invalid", vars: ["MAX_PAYLOAD_BYTES"], message: 'MAX_PAYLOAD_BYTES must be a whole number >= 1, got "128k"' },
    ]);
  });

  it("LOG_LEVEL decides which lines src/log.ts writes", () => {
    const lines: string[] = [];
    const keep = (line: unknown): void => void lines.push(String(line));
    vi.spyOn(console, "log").mockImplementation(keep);
    vi.spyOn(console, "warn").mockImplementation(keep);
    vi.spyOn(console, "error").mockImplementation(keep);
    const write = (): void => {
      log("debug", "d");
      log("info", "i");
      log("warn", "w");
      log("error", "e");
    };
    write();
    loadConfig({ LOG_LEVEL: "warn" });
    write();
    loadConfig({ LOG_LEVEL: "debug" });
    write();
    expect(lines.map((l) => String(JSON.parse(l).event)).join("")).toBe("iwe" + "we" + "diwe");
  });
});

describe("the files that follow the schema", () => {
  it("src/env.ts declares every var of the schema as an optional string", () => {
    const { optional } = envMembers();
    expect(NAMES.filter((n) => !optional.includes(n))).toEqual([]);
  });

  it("wrangler.toml's vars all parse and are all known (npm run check:config, without .dev.vars)", () => {
    const r = spawnSync(process.execPath, ["scripts/config-check.mjs", "--no-dev-vars"], { cwd: ROOT, encoding: "utf8" });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: "" });
    expect(r.stdout).toContain("the vars parse");
  }, 60_000);

  it("docs/configuration.md's table lists every var with its default", () => {
    const page = read("docs/configuration.md");
    const start = page.indexOf("\n## Vars and secrets\n");
    expect(start).toBeGreaterThan(0);
    const end = page.indexOf("\n## ", start + 1);
    const section = page.slice(start, end < 0 ? undefined : end);
    const rows = section.split("\n").filter((line) => /^\| `[A-Z_]+`/.test(line));
    const documented = new Map<string, string>();
    for (const row of rows) {
      const [, names = "", defaults = ""] = row.split("|").map((cell) => cell.trim());
      const varNames = [...names.matchAll(/`([A-Z_]+)`/g)].flatMap((m) => (m[1] ? [m[1]] : []));
      const values = defaults.split(" / ");
      varNames.forEach((name, i) => documented.set(name, values[i] ?? ""));
    }
    const want = new Map(Object.entries(CONFIG_SCHEMA).map(([name, spec]) => [name, spec.default === "" ? "empty (off)" : String(spec.default)]));
    expect(Object.fromEntries(documented)).toEqual(Object.fromEntries(want));
  });

  it(".dev.vars.example lists every secret and every var, each under a comment, vars with their defaults", () => {
    const lines = read(".dev.vars.example").split("\n");
    const entries = new Map<string, string>();
    lines.forEach((line, i) => {
      const m = /^(?:# )?([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
      if (!m?.[1]) return;
      const above = lines[i - 1] ?? "";
      expect({ name: m[1], commented: above.startsWith("# ") && !/^# [A-Z][A-Z0-9_]*=/.test(above) }).toEqual({ name: m[1], commented: true });
      entries.set(m[1], m[2] ?? "");
    });
    const secrets = envMembers().optional.filter((n) => !NAMES.includes(n));
    expect(secrets.length).toBeGreaterThan(0);
    expect([...secrets, ...NAMES].filter((n) => !entries.has(n))).toEqual([]);
    for (const [name, spec] of Object.entries(CONFIG_SCHEMA)) expect({ name, value: entries.get(name) }).toEqual({ name, value: String(spec.default) });
  });
});

describe("npm start's config check", () => {
  it("refuses to start on a var that does not parse, and says which and why", () => {
    // PORT=0 is refused too, but only after the config check: if the check let the var through, nothing starts either.
    const r = spawnSync(process.execPath, ["scripts/start.mjs", "--var", "MAX_PAYLOAD_BYTES:128k"], {
      cwd: ROOT,
      encoding: "utf8",
      env: { ...process.env, PORT: "0" },
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("start: not starting, the config is invalid:");
    expect(r.stderr).toContain('MAX_PAYLOAD_BYTES must be a whole number >= 1, got "128k" (--var)');
    expect(r.stdout).not.toContain("applying local D1 migrations");
  }, 60_000);

  it("npm run check:config refuses the same var, naming where it was set", () => {
    const r = spawnSync(process.execPath, ["scripts/config-check.mjs", "--no-dev-vars", "--var", "LOG_LEVEL:verbose", "--var", "MAX_PAYLOAD_BYTE:1"], {
      cwd: ROOT,
      encoding: "utf8",
    });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('LOG_LEVEL must be one of debug, info, warn, error, got "verbose" (--var)');
    expect(r.stderr).toContain("MAX_PAYLOAD_BYTE (--var) is not a var the broker reads; ignored");
  }, 60_000);
});
