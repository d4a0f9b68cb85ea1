import type { MqttConnection } from "./session/connection";
import type { MqttSession } from "./session/session-store";
import type { TopicRouter } from "./router/router";
import type { ConnectionLimiter } from "./limits/connection-limiter";
import type { KeepAliveClock } from "./session/clock";

/** Bindings and vars from wrangler.toml (vars arrive as strings; config.ts parses them). */
export interface Env {
  CONNECTION: DurableObjectNamespace<MqttConnection>;
  SESSION: DurableObjectNamespace<MqttSession>;
  ROUTER: DurableObjectNamespace<TopicRouter>;
  LIMITER: DurableObjectNamespace<ConnectionLimiter>;
  CLOCK: DurableObjectNamespace<KeepAliveClock>;
  DB: D1Database;
  /** The deployed Worker version (`[version_metadata]`), reported by GET /health. */
  CF_VERSION_METADATA: WorkerVersionMetadata;
  /** Optional Workers Analytics Engine dataset (src/monitoring/analytics.ts); absent unless configured. */
  ANALYTICS?: AnalyticsEngineDataset;

  /** Secrets (wrangler secret put / .dev.vars). */
  ADMIN_TOKEN?: string;
  /** HS256 key; at least 32 bytes, or JWT authentication answers "server unavailable". */
  JWT_SECRET?: string;
  /** Server-side key of the device password HMAC. */
  DEVICE_PEPPER?: string;
  /** A JWKS document (JSON) for RS256/ES256 tokens, or its URL (https:// only; http:// for localhost). */
  JWT_JWKS?: string;
  JWT_JWKS_URL?: string;
  /** Required `iss` / `aud` of every JWT when set; the longest token lifetime (0 = no limit). */
  JWT_ISSUER?: string;
  JWT_AUDIENCE?: string;
  JWT_MAX_TTL_SECONDS?: string;
  /** Shared secret of the TCP bridge (bridge/): lets it forward the device's address. */
  BRIDGE_TOKEN?: string;

  ANONYMOUS_ACCOUNT?: string;
  MAX_PAYLOAD_BYTES?: string;
  MAX_CLIENT_ID_BYTES?: string;
  MAX_TOPIC_BYTES?: string;
  MAX_TOPIC_LEVELS?: string;
  MAX_SUBSCRIPTIONS?: string;
  KEEPALIVE_MIN_SECONDS?: string;
  KEEPALIVE_MAX_SECONDS?: string;
  KEEPALIVE_CHECK_SECONDS?: string;
  KEEPALIVE_CLOCK?: string;
  CONNECT_TIMEOUT_SECONDS?: string;
  MAX_QUEUED_MESSAGES?: string;
  MAX_QUEUED_BYTES?: string;
  MAX_OUTBOX_MESSAGES?: string;
  OUTBOX_HOLD_MS?: string;
  MAX_MONITOR_RETAINED?: string;
  MONITOR_RETAIN_SECONDS?: string;
  MAX_RETAINED_MESSAGES?: string;
  MAX_RETAINED_BYTES?: string;
  ROUTER_SHARDS?: string;
  ROUTER_SHARD_LEVEL?: string;
  MAX_INFLIGHT?: string;
  SESSION_EXPIRY_SECONDS?: string;
  /** "1": count billable units for `npm run bench` (src/metrics.ts, GET /__bench/counters). */
  BENCH_COUNTERS?: string;
  MAX_MULTI_CONNECTIONS?: string;
  MAX_FILTERS_PER_SUBSCRIBE?: string;
  PUBLISH_RATE_PER_SECOND?: string;
  PUBLISH_BURST?: string;
  PACKET_RATE_PER_SECOND?: string;
  PACKET_BURST?: string;
  MAX_PACKETS_PER_FRAME?: string;
  CONNECT_RATE_PER_CLIENT?: string;
  CONNECT_BURST_PER_CLIENT?: string;
  CONNECT_RATE_PER_ACCOUNT?: string;
  CONNECT_BURST_PER_ACCOUNT?: string;
  HTTP_PUBLISH_RATE_PER_SECOND?: string;
  HTTP_PUBLISH_BURST?: string;
  ALLOW_CONTROL_CHARACTERS?: string;
  /** debug | info | warn | error (src/log.ts). */
  LOG_LEVEL?: string;
}
