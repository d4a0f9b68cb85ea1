
/** The vars the config reads (strings, as wrangler passes them; a subset of the Worker's bindings). */
export interface ConfigVars {
  ALLOW_CONTROL_CHARACTERS?: string;
  ANONYMOUS_ACCOUNT?: string;
  HTTP_PUBLISH_BURST?: string;
  HTTP_PUBLISH_RATE_PER_SECOND?: string;
  KEEPALIVE_MAX_SECONDS?: string;
  KEEPALIVE_MIN_SECONDS?: string;
  MAX_CLIENT_ID_BYTES?: string;
  MAX_FILTERS_PER_SUBSCRIBE?: string;
  MAX_INFLIGHT?: string;
  MAX_MULTI_CONNECTIONS?: string;
  MAX_PAYLOAD_BYTES?: string;
  MAX_QUEUED_MESSAGES?: string;
  MAX_QUEUED_BYTES?: string;
  MAX_MONITOR_RETAINED?: string;
  MONITOR_RETAIN_SECONDS?: string;
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
  SESSION_EXPIRY_SECONDS?: string;
}

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
  maxQueuedMessages: number;
  /** Bytes of messages an offline session may queue (payload and topic), besides the count. */
  maxQueuedBytes: number;
  /** Retained `$SYS/mon` events per account, at most (oldest evicted). */
  maxMonitorRetained: number;
  /** How long the retained Disconnect event of a client id the client chose freely (multi mode, anonymous) stays, in seconds. */
  monitorRetainSeconds: number;
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
  maxQueuedMessages: 1000,
  maxQueuedBytes: 8 * 1024 * 1024,
  maxMonitorRetained: 10_000,
  monitorRetainSeconds: 86_400,
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

let cached: { env: ConfigVars; config: Config } | undefined;

/** Reads the config from env vars; cached per env object (one per isolate). */
export function getConfig(env: ConfigVars): Config {
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
    packetRatePerSecond: int(env.PACKET_RATE_PER_SECOND, DEFAULT_LIMITS.packetRatePerSecond, 1),
    packetBurst: int(env.PACKET_BURST, DEFAULT_LIMITS.packetBurst, 1),
    maxPacketsPerFrame: int(env.MAX_PACKETS_PER_FRAME, DEFAULT_LIMITS.maxPacketsPerFrame, 1),
    connectRatePerClient: int(env.CONNECT_RATE_PER_CLIENT, DEFAULT_LIMITS.connectRatePerClient, 1),
    connectBurstPerClient: int(env.CONNECT_BURST_PER_CLIENT, DEFAULT_LIMITS.connectBurstPerClient, 1),
    connectRatePerAccount: int(env.CONNECT_RATE_PER_ACCOUNT, DEFAULT_LIMITS.connectRatePerAccount, 1),
    connectBurstPerAccount: int(env.CONNECT_BURST_PER_ACCOUNT, DEFAULT_LIMITS.connectBurstPerAccount, 1),
    httpPublishRatePerSecond: int(env.HTTP_PUBLISH_RATE_PER_SECOND, DEFAULT_LIMITS.httpPublishRatePerSecond, 1),
    httpPublishBurst: int(env.HTTP_PUBLISH_BURST, DEFAULT_LIMITS.httpPublishBurst, 1),
    keepAliveMinSeconds: int(env.KEEPALIVE_MIN_SECONDS, DEFAULT_LIMITS.keepAliveMinSeconds),
    keepAliveMaxSeconds: int(env.KEEPALIVE_MAX_SECONDS, DEFAULT_LIMITS.keepAliveMaxSeconds, 1),
    maxQueuedMessages: int(env.MAX_QUEUED_MESSAGES, DEFAULT_LIMITS.maxQueuedMessages, 1),
    maxQueuedBytes: int(env.MAX_QUEUED_BYTES, DEFAULT_LIMITS.maxQueuedBytes, 1),
    maxMonitorRetained: int(env.MAX_MONITOR_RETAINED, DEFAULT_LIMITS.maxMonitorRetained, 1),
    monitorRetainSeconds: int(env.MONITOR_RETAIN_SECONDS, DEFAULT_LIMITS.monitorRetainSeconds, 1),
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
