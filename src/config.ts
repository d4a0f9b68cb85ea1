import type { Env } from "./env";

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
  keepAliveMinSeconds: number;
  keepAliveMaxSeconds: number;
  maxQueuedMessages: number;
  maxInflight: number;
  sessionExpirySeconds: number;
  /** Accept control characters (U+0001..U+001F, U+007F..U+009F) in client ids, user names, topics and filters. */
  allowControlCharacters: boolean;
}

export interface Config {
  limits: Limits;
  /** Simultaneous multi-connection-mode connections per JWT identity. */
  maxMultiConnections: number;
  /** Account that anonymous clients land in; undefined when anonymous access is off. */
  anonymousAccount: string | undefined;
}

export const DEFAULT_LIMITS: Limits = {
  maxPacketBytes: 128 * 1024 + 64 * 1024,
  maxPayloadBytes: 128 * 1024,
  maxClientIdBytes: 128,
  maxTopicBytes: 256,
  maxTopicLevels: 16,
  maxSubscriptions: 100,
  maxFiltersPerSubscribe: 32,
  publishRatePerSecond: 100,
  publishBurst: 200,
  keepAliveMinSeconds: 0,
  keepAliveMaxSeconds: 3600,
  maxQueuedMessages: 1000,
  maxInflight: 100,
  sessionExpirySeconds: 7 * 24 * 3600,
  allowControlCharacters: false,
};

function int(value: string | undefined, fallback: number, min = 0): number {
  if (value === undefined || value.trim() === "") return fallback;
  const n = Number(value);
  return Number.isInteger(n) && n >= min ? n : fallback;
}

/** "true" or "false" (any case); anything else is the fallback. */
function bool(value: string | undefined, fallback: boolean): boolean {
  const v = value?.trim().toLowerCase();
  return v === "true" ? true : v === "false" ? false : fallback;
}

let cached: { env: Env; config: Config } | undefined;

/** Reads the config from env vars; cached per env object (one per isolate). */
export function getConfig(env: Env): Config {
  if (cached && cached.env === env) return cached.config;
  const maxPayloadBytes = int(env.MAX_PAYLOAD_BYTES, DEFAULT_LIMITS.maxPayloadBytes, 1);
  const maxTopicBytes = int(env.MAX_TOPIC_BYTES, DEFAULT_LIMITS.maxTopicBytes, 1);
  const limits: Limits = {
    maxPayloadBytes,
    maxTopicBytes,
    // Fixed header (5) + topic length prefix (2) + topic + packet id (2) + MQTT 5 properties headroom.
    maxPacketBytes: maxPayloadBytes + maxTopicBytes + 5 + 2 + 2 + 8 * 1024,
    maxClientIdBytes: int(env.MAX_CLIENT_ID_BYTES, DEFAULT_LIMITS.maxClientIdBytes, 1),
    maxTopicLevels: int(env.MAX_TOPIC_LEVELS, DEFAULT_LIMITS.maxTopicLevels, 1),
    maxSubscriptions: int(env.MAX_SUBSCRIPTIONS, DEFAULT_LIMITS.maxSubscriptions, 1),
    maxFiltersPerSubscribe: int(env.MAX_FILTERS_PER_SUBSCRIBE, DEFAULT_LIMITS.maxFiltersPerSubscribe, 1),
    publishRatePerSecond: int(env.PUBLISH_RATE_PER_SECOND, DEFAULT_LIMITS.publishRatePerSecond, 1),
    publishBurst: int(env.PUBLISH_BURST, DEFAULT_LIMITS.publishBurst, 1),
    keepAliveMinSeconds: int(env.KEEPALIVE_MIN_SECONDS, DEFAULT_LIMITS.keepAliveMinSeconds),
    keepAliveMaxSeconds: int(env.KEEPALIVE_MAX_SECONDS, DEFAULT_LIMITS.keepAliveMaxSeconds, 1),
    maxQueuedMessages: int(env.MAX_QUEUED_MESSAGES, DEFAULT_LIMITS.maxQueuedMessages, 1),
    maxInflight: int(env.MAX_INFLIGHT, DEFAULT_LIMITS.maxInflight, 1),
    sessionExpirySeconds: int(env.SESSION_EXPIRY_SECONDS, DEFAULT_LIMITS.sessionExpirySeconds, 1),
    allowControlCharacters: bool(env.ALLOW_CONTROL_CHARACTERS, DEFAULT_LIMITS.allowControlCharacters),
  };
  const anon = env.ANONYMOUS_ACCOUNT?.trim();
  const config: Config = {
    limits,
    maxMultiConnections: int(env.MAX_MULTI_CONNECTIONS, 100, 1),
    anonymousAccount: anon ? anon : undefined,
  };
  cached = { env, config };
  return config;
}
