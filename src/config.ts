import { isValidAccountId } from "./auth/passwords";
import { LOG_LEVELS, log, setLogLevel, type LogLevel } from "./log";

/** The vars the config reads (strings, as wrangler passes them; a subset of the Worker's bindings). */
export interface ConfigVars {
  ANONYMOUS_ACCOUNT?: string;
  KEEPALIVE_MAX_SECONDS?: string;
  KEEPALIVE_MIN_SECONDS?: string;
  KEEPALIVE_CHECK_SECONDS?: string;
  KEEPALIVE_CLOCK?: string;
  CONNECT_TIMEOUT_SECONDS?: string;
  MAX_CLIENT_ID_BYTES?: string;
  MAX_FILTERS_PER_SUBSCRIBE?: string;
  MAX_INFLIGHT?: string;
  MAX_MULTI_CONNECTIONS?: string;
  MAX_PAYLOAD_BYTES?: string;
  MAX_QUEUED_MESSAGES?: string;
  MAX_SUBSCRIPTIONS?: string;
  MAX_TOPIC_BYTES?: string;
  MAX_TOPIC_LEVELS?: string;
  PUBLISH_BURST?: string;
  PUBLISH_RATE_PER_SECOND?: string;
  PACKET_RATE_PER_SECOND?: string;
  PACKET_BURST?: string;
  MAX_PACKETS_PER_FRAME?: string;
  CONNECT_RATE_PER_CLIENT?: string;
  CONNECT_BURST_PER_CLIENT?: string;
  CONNECT_RATE_PER_ACCOUNT?: string;
  CONNECT_BURST_PER_ACCOUNT?: string;
  HTTP_PUBLISH_RATE_PER_SECOND?: string;
  HTTP_PUBLISH_BURST?: string;
  MAX_QUEUED_BYTES?: string;
  MAX_OUTBOX_MESSAGES?: string;
  OUTBOX_HOLD_MS?: string;
  MAX_MONITOR_RETAINED?: string;
  MONITOR_RETAIN_SECONDS?: string;
  MAX_RETAINED_MESSAGES?: string;
  MAX_RETAINED_BYTES?: string;
  ROUTER_SHARDS?: string;
  ROUTER_SHARD_LEVEL?: string;
  ALLOW_CONTROL_CHARACTERS?: string;
  JWT_ISSUER?: string;
  JWT_AUDIENCE?: string;
  JWT_MAX_TTL_SECONDS?: string;
  SESSION_EXPIRY_SECONDS?: string;
  LOG_LEVEL?: string;
  BENCH_COUNTERS?: string;
}

/**
 * How one var is read. Unset or empty (blanks only) means the default; anything else must
 * parse, or the whole config is invalid (`ConfigError`): no value silently becomes the default.
 * - `int`: a whole number in decimal digits, at least `min` (a JSON number in wrangler.toml counts too);
 * - `choice`: one of `values`;
 * - `account`: an account id (1 to 64 of A-Z a-z 0-9 _ . -); empty turns the feature off;
 * - `jwt`: read and checked by the JWT configuration (src/auth/jwt.ts), so a bad value refuses JWT
 *   logins only (CONNACK 3 / HTTP 500 `config_invalid`), not devices; listed here so every file
 *   that documents vars follows one table.
 */
export type VarSpec =
  | { readonly kind: "int"; readonly default: number; readonly min: number; readonly max?: number }
  | { readonly kind: "choice"; readonly default: string; readonly values: readonly string[] }
  | { readonly kind: "account"; readonly default: "" }
  | { readonly kind: "jwt"; readonly default: string };

/**
 * Every var the broker reads, in one table: `getConfig` parses with it, `npm start` checks
 * wrangler.toml and .dev.vars with it (scripts/config-check.mjs), and the unit tests hold
 * the configuration table of docs/configuration.md, wrangler.toml and .dev.vars.example to it.
 */
export const CONFIG_SCHEMA = {
  ANONYMOUS_ACCOUNT: { kind: "account", default: "" },
  MAX_PAYLOAD_BYTES: { kind: "int", default: 128 * 1024, min: 1 },
  MAX_CLIENT_ID_BYTES: { kind: "int", default: 128, min: 1 },
  MAX_TOPIC_BYTES: { kind: "int", default: 256, min: 1 },
  MAX_TOPIC_LEVELS: { kind: "int", default: 16, min: 1 },
  MAX_SUBSCRIPTIONS: { kind: "int", default: 100, min: 1 },
  KEEPALIVE_MIN_SECONDS: { kind: "int", default: 0, min: 0 },
  KEEPALIVE_MAX_SECONDS: { kind: "int", default: 3600, min: 1 },
  KEEPALIVE_CHECK_SECONDS: { kind: "int", default: 0, min: 0 },
  KEEPALIVE_CLOCK: { kind: "choice", default: "shared", values: ["alarm", "shared"] },
  CONNECT_TIMEOUT_SECONDS: { kind: "int", default: 30, min: 1 },
  MAX_QUEUED_MESSAGES: { kind: "int", default: 1000, min: 1 },
  MAX_INFLIGHT: { kind: "int", default: 100, min: 1 },
  SESSION_EXPIRY_SECONDS: { kind: "int", default: 7 * 24 * 3600, min: 1 },
  MAX_MULTI_CONNECTIONS: { kind: "int", default: 100, min: 1 },
  MAX_FILTERS_PER_SUBSCRIBE: { kind: "int", default: 32, min: 1 },
  PUBLISH_RATE_PER_SECOND: { kind: "int", default: 100, min: 1 },
  PUBLISH_BURST: { kind: "int", default: 200, min: 1 },
  PACKET_RATE_PER_SECOND: { kind: "int", default: 500, min: 1 },
  PACKET_BURST: { kind: "int", default: 1000, min: 1 },
  MAX_PACKETS_PER_FRAME: { kind: "int", default: 500, min: 1 },
  CONNECT_RATE_PER_CLIENT: { kind: "int", default: 1, min: 1 },
  CONNECT_BURST_PER_CLIENT: { kind: "int", default: 10, min: 1 },
  CONNECT_RATE_PER_ACCOUNT: { kind: "int", default: 500, min: 1 },
  CONNECT_BURST_PER_ACCOUNT: { kind: "int", default: 1000, min: 1 },
  HTTP_PUBLISH_RATE_PER_SECOND: { kind: "int", default: 100, min: 1 },
  HTTP_PUBLISH_BURST: { kind: "int", default: 200, min: 1 },
  MAX_QUEUED_BYTES: { kind: "int", default: 8 * 1024 * 1024, min: 1 },
  MAX_OUTBOX_MESSAGES: { kind: "int", default: 1000, min: 1 },
  OUTBOX_HOLD_MS: { kind: "int", default: 10_000, min: 0 },
  MAX_MONITOR_RETAINED: { kind: "int", default: 10_000, min: 1 },
  MONITOR_RETAIN_SECONDS: { kind: "int", default: 86_400, min: 1 },
  MAX_RETAINED_MESSAGES: { kind: "int", default: 100_000, min: 1 },
  MAX_RETAINED_BYTES: { kind: "int", default: 256 * 1024 * 1024, min: 1 },
  ROUTER_SHARDS: { kind: "int", default: 1, min: 1, max: 64 },
  ROUTER_SHARD_LEVEL: { kind: "int", default: 5, min: 0, max: 31 },
  ALLOW_CONTROL_CHARACTERS: { kind: "choice", default: "false", values: ["false", "true"] },
  JWT_ISSUER: { kind: "jwt", default: "" },
  JWT_AUDIENCE: { kind: "jwt", default: "" },
  JWT_MAX_TTL_SECONDS: { kind: "jwt", default: "2592000" },
  LOG_LEVEL: { kind: "choice", default: "info", values: LOG_LEVELS },
  BENCH_COUNTERS: { kind: "choice", default: "0", values: ["0", "1"] },
} as const satisfies Record<keyof ConfigVars, VarSpec>;

type Schema = typeof CONFIG_SCHEMA;
type VarName = keyof Schema;
type NamesOf<Kind extends VarSpec["kind"]> = { [K in VarName]: Schema[K]["kind"] extends Kind ? K : never }[VarName];

/** Broker limits, parsed once per isolate from wrangler vars. */
export interface Limits {
  /** Largest MQTT packet accepted, header included (payload limit plus room for topic and header). */
  maxPacketBytes: number;
  maxPayloadBytes: number;
  maxClientIdBytes: number;
  maxTopicBytes: number;
  maxTopicLevels: number;
  maxSubscriptions: number;
  /** Topic filters in one SUBSCRIBE; the ones past it get SUBACK 0x80. */
  maxFiltersPerSubscribe: number;
  /** Sustained PUBLISH packets per second per connection (token bucket refill rate). */
  publishRatePerSecond: number;
  /** Token bucket size: how many publishes may arrive at once after a quiet period. */
  publishBurst: number;
  /** Packets of any type the client starts (all but PUBACK/PUBREC/PUBCOMP) per second per connection, and the bucket size. */
  packetRatePerSecond: number;
  packetBurst: number;
  /** MQTT packets in one WebSocket frame, at most. */
  maxPacketsPerFrame: number;
  /** CONNECTs per second for one client id, and how many may come at once. */
  connectRatePerClient: number;
  connectBurstPerClient: number;
  /** CONNECTs per second for one account, and how many may come at once. */
  connectRatePerAccount: number;
  connectBurstPerAccount: number;
  /** Sustained HTTP publishes per second per identity (account + device id or JWT subject), across every request. */
  httpPublishRatePerSecond: number;
  /** HTTP publishes one identity may make at once after a quiet period. */
  httpPublishBurst: number;
  keepAliveMinSeconds: number;
  keepAliveMaxSeconds: number;
  /**
   * Keep-alive enforcement granularity: the connection's alarm runs at most this often (0 =
   * exactly at each deadline, 1.5 × keep alive + 1 s after the last packet). A silent client is
   * then closed up to this much later than its deadline.
   */
  keepAliveCheckSeconds: number;
  /**
   * Who keeps the exact keep-alive deadlines: each connection's own alarm ("alarm"), or the
   * account's keep-alive clock object ("shared": one request per period instead of an alarm run
   * and a row; the connection keeps no keep-alive alarm).
   */
  keepAliveClock: "alarm" | "shared";
  /** A socket that sends no CONNECT within this time is closed. */
  connectTimeoutSeconds: number;
  maxQueuedMessages: number;
  /** Bytes of messages an offline session may queue (payload and topic), besides the count. */
  maxQueuedBytes: number;
  /** QoS 1/2 messages waiting for a connection's in-flight window, at most (oldest dropped, counted). */
  maxOutboxMessages: number;
  /** How long a clean session's QoS 1 messages waiting for the window stay in memory only, in ms (then written). */
  outboxHoldMs: number;
  /** Retained `$SYS/mon` events per account, at most (oldest evicted). */
  maxMonitorRetained: number;
  /** How long the retained Disconnect event of a client id the client chose freely (multi mode, anonymous) stays, in seconds. */
  monitorRetainSeconds: number;
  /** Retained messages per account, at most (monitoring events not counted): past it a retained publish is refused (PUBACK 0x97). */
  maxRetainedMessages: number;
  /** Retained bytes (payload + topic) per account, at most, likewise. */
  maxRetainedBytes: number;
  /** Router objects per account (src/router/shards.ts). */
  routerShards: number;
  /** The topic level (0-based) whose value picks the shard. */
  routerShardLevel: number;
  maxInflight: number;
  sessionExpirySeconds: number;
  /** Control characters (U+0001..U+001F, U+007F..U+009F) allowed in client ids, user names, topics and filters (§1.5.4 says SHOULD NOT). */
  allowControlCharacters: boolean;
}

export interface Config {
  limits: Limits;
  /** Simultaneous multi-connection-mode connections per JWT identity. */
  maxMultiConnections: number;
  /** Account that anonymous clients land in; undefined when anonymous access is off. */
  anonymousAccount: string | undefined;
}

/** One var that did not parse (or two that contradict each other), in words an operator can act on. */
export interface ConfigIssue {
  name: VarName;
  message: string;
}

/** The vars do not make a config: every issue, each naming its var and the expected form. */
export class ConfigError extends Error {
  readonly issues: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[]) {
    super(issues.map((i) => i.message).join("; "));
    this.name = "ConfigError";
    this.issues = issues;
  }
}

export type ConfigResult = { ok: true; config: Config; logLevel: LogLevel } | { ok: false; error: ConfigError };

/** What a var of this spec must look like, for error messages and docs. */
export function expectedForm(spec: VarSpec): string {
  switch (spec.kind) {
    case "int":
      return spec.max === undefined ? `a whole number >= ${spec.min}` : `a whole number from ${spec.min} to ${spec.max}`;
    case "choice":
      return `one of ${spec.values.join(", ")}`;
    case "account":
      return "empty (off) or an account id of 1 to 64 characters of A-Z a-z 0-9 _ . -";
    case "jwt":
      return "what the JWT configuration accepts (src/auth/jwt.ts)";
  }
}

/** Reads vars by their schema entry and collects every problem instead of stopping at the first. */
class VarReader {
  readonly issues: ConfigIssue[] = [];

  constructor(private readonly vars: ConfigVars) {}

  /** The var's value as wrangler passed it (a string, or a JSON value from wrangler.toml); undefined when unset or blank. */
  private raw(name: VarName): unknown {
    const value: unknown = this.vars[name];
    return typeof value === "string" && value.trim() === "" ? undefined : value;
  }

  /** Whether the var is set (not blank). */
  isSet(name: VarName): boolean {
    return this.raw(name) !== undefined;
  }

  private invalid(name: VarName, raw: unknown): void {
    this.issues.push({ name, message: `${name} must be ${expectedForm(CONFIG_SCHEMA[name])}, got ${JSON.stringify(raw)}` });
  }

  int(name: NamesOf<"int">): number {
    const spec = CONFIG_SCHEMA[name];
    const raw = this.raw(name);
    if (raw === undefined) return spec.default;
    const text = typeof raw === "string" ? raw.trim() : typeof raw === "number" ? String(raw) : "";
    const n = /^[0-9]+$/.test(text) ? Number(text) : Number.NaN;
    const max: number | undefined = (spec as Extract<VarSpec, { kind: "int" }>).max;
    if (Number.isSafeInteger(n) && n >= spec.min && (max === undefined || n <= max)) return n;
    this.invalid(name, raw);
    return spec.default;
  }

  choice<K extends NamesOf<"choice">>(name: K): Schema[K]["values"][number] {
    const spec: Schema[K] = CONFIG_SCHEMA[name];
    const raw = this.raw(name);
    if (raw === undefined) return spec.default;
    const text = typeof raw === "string" ? raw.trim() : undefined;
    const found = spec.values.find((v) => v === text);
    if (found !== undefined) return found;
    this.invalid(name, raw);
    return spec.default;
  }

  account(name: NamesOf<"account">): string | undefined {
    const raw = this.raw(name);
    if (raw === undefined) return undefined;
    const text = typeof raw === "string" ? raw.trim() : "";
    if (isValidAccountId(text)) return text;
    this.invalid(name, raw);
    return undefined;
  }

  /** Two vars that each parse but contradict each other. */
  conflict(name: VarName, message: string): void {
    this.issues.push({ name, message });
  }
}

/** Parses the vars with the schema; pure (no cache, no logging). */
export function parseConfig(vars: ConfigVars): ConfigResult {
  const r = new VarReader(vars);
  const maxPayloadBytes = r.int("MAX_PAYLOAD_BYTES");
  const maxTopicBytes = r.int("MAX_TOPIC_BYTES");
  const keepAliveCheckSeconds = r.int("KEEPALIVE_CHECK_SECONDS");
  const limits: Limits = {
    maxPayloadBytes,
    maxTopicBytes,
    // Fixed header (5) + topic length prefix (2) + topic + packet id (2) + MQTT 5 properties headroom.
    maxPacketBytes: maxPayloadBytes + maxTopicBytes + 5 + 2 + 2 + 8 * 1024,
    maxClientIdBytes: r.int("MAX_CLIENT_ID_BYTES"),
    maxTopicLevels: r.int("MAX_TOPIC_LEVELS"),
    maxSubscriptions: r.int("MAX_SUBSCRIPTIONS"),
    maxFiltersPerSubscribe: r.int("MAX_FILTERS_PER_SUBSCRIBE"),
    publishRatePerSecond: r.int("PUBLISH_RATE_PER_SECOND"),
    publishBurst: r.int("PUBLISH_BURST"),
    packetRatePerSecond: r.int("PACKET_RATE_PER_SECOND"),
    packetBurst: r.int("PACKET_BURST"),
    maxPacketsPerFrame: r.int("MAX_PACKETS_PER_FRAME"),
    connectRatePerClient: r.int("CONNECT_RATE_PER_CLIENT"),
    connectBurstPerClient: r.int("CONNECT_BURST_PER_CLIENT"),
    connectRatePerAccount: r.int("CONNECT_RATE_PER_ACCOUNT"),
    connectBurstPerAccount: r.int("CONNECT_BURST_PER_ACCOUNT"),
    httpPublishRatePerSecond: r.int("HTTP_PUBLISH_RATE_PER_SECOND"),
    httpPublishBurst: r.int("HTTP_PUBLISH_BURST"),
    keepAliveMinSeconds: r.int("KEEPALIVE_MIN_SECONDS"),
    keepAliveMaxSeconds: r.int("KEEPALIVE_MAX_SECONDS"),
    keepAliveCheckSeconds,
    // The account's clock, unless asked for the alarm; a coarser check (KEEPALIVE_CHECK_SECONDS > 0) is the alarm's, so without KEEPALIVE_CLOCK it selects the alarm.
    keepAliveClock: (r.isSet("KEEPALIVE_CLOCK") ? r.choice("KEEPALIVE_CLOCK") : keepAliveCheckSeconds > 0 ? "alarm" : "shared") === "alarm" ? "alarm" : "shared",
    connectTimeoutSeconds: r.int("CONNECT_TIMEOUT_SECONDS"),
    maxQueuedMessages: r.int("MAX_QUEUED_MESSAGES"),
    maxQueuedBytes: r.int("MAX_QUEUED_BYTES"),
    maxOutboxMessages: r.int("MAX_OUTBOX_MESSAGES"),
    outboxHoldMs: r.int("OUTBOX_HOLD_MS"),
    maxMonitorRetained: r.int("MAX_MONITOR_RETAINED"),
    monitorRetainSeconds: r.int("MONITOR_RETAIN_SECONDS"),
    maxRetainedMessages: r.int("MAX_RETAINED_MESSAGES"),
    maxRetainedBytes: r.int("MAX_RETAINED_BYTES"),
    routerShards: r.int("ROUTER_SHARDS"),
    routerShardLevel: r.int("ROUTER_SHARD_LEVEL"),
    maxInflight: r.int("MAX_INFLIGHT"),
    sessionExpirySeconds: r.int("SESSION_EXPIRY_SECONDS"),
    allowControlCharacters: r.choice("ALLOW_CONTROL_CHARACTERS") === "true",
  };
  if (limits.keepAliveMinSeconds > limits.keepAliveMaxSeconds) {
    r.conflict(
      "KEEPALIVE_MIN_SECONDS",
      `KEEPALIVE_MIN_SECONDS must be <= KEEPALIVE_MAX_SECONDS, got ${limits.keepAliveMinSeconds} > ${limits.keepAliveMaxSeconds}`,
    );
  }
  const config: Config = {
    limits,
    maxMultiConnections: r.int("MAX_MULTI_CONNECTIONS"),
    anonymousAccount: r.account("ANONYMOUS_ACCOUNT"),
  };
  const logLevel = r.choice("LOG_LEVEL");
  // metrics.ts reads BENCH_COUNTERS itself; parsed here so a typo is reported like any other var.
  r.choice("BENCH_COUNTERS");
  if (r.issues.length > 0) return { ok: false, error: new ConfigError(r.issues) };
  return { ok: true, config, logLevel };
}

function defaults(): Config {
  const parsed = parseConfig({});
  if (!parsed.ok) throw parsed.error; // the schema's own defaults always parse (unit-tested)
  return parsed.config;
}

/** The config with every var unset. */
export const DEFAULT_CONFIG: Config = defaults();
export const DEFAULT_LIMITS: Limits = DEFAULT_CONFIG.limits;

let cached: { env: ConfigVars; result: ConfigResult } | undefined;

/**
 * Parses the vars once per env object (one per isolate), applies LOG_LEVEL, and logs
 * `config.invalid` when they do not parse. Never throws: Durable Object constructors call
 * it, and a constructor that throws fails every request and alarm of the object.
 */
export function loadConfig(env: ConfigVars): ConfigResult {
  if (cached && cached.env === env) return cached.result;
  const result = parseConfig(env);
  if (result.ok) setLogLevel(result.logLevel);
  else log("error", "config.invalid", { vars: result.error.issues.map((i) => i.name), message: result.error.message });
  cached = { env, result };
  return result;
}

/** The config from the env vars; throws ConfigError when they do not parse. */
export function getConfig(env: ConfigVars): Config {
  const result = loadConfig(env);
  if (!result.ok) throw result.error;
  return result.config;
}
