import { Hono, type Context } from "hono";
import * as v from "valibot";
import type { Env } from "../env";
import { limiterStub } from "../stubs";
import { accountRouter, shardingOf } from "../router/shards";
import { getConfig } from "../config";
import { authenticateDevicePassword, authenticateToken, type AuthResult, type Identity } from "../auth/identity";
import type { PublishAllowance } from "../limits/connection-limiter";
import { canPublish } from "../topics/acl";
import { validateTopicName } from "../topics/topic";
import type { ForwardedProps, Message, Routed } from "../router/messages";
import { payloadFormatValid } from "../session/properties";
import { errorMessage, log } from "../log";
import { readAtMost } from "../streams";
import type { Limits } from "../config";
import { jsonError } from "./errors";
import { doc, query } from "./api-doc";

/** `Authorization: Basic base64(deviceId:password)` or `Bearer <JWT>`; null when absent or unreadable. */
async function authenticateRequest(env: Env, header: string | undefined): Promise<AuthResult | null> {
  if (!header) return null;
  const space = header.indexOf(" ");
  if (space < 0) return null;
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (scheme === "bearer") return authenticateToken(env, value);
  if (scheme !== "basic") return null;
  let decoded: string;
  try {
    decoded = new TextDecoder().decode(Uint8Array.from(atob(value), (ch) => ch.charCodeAt(0)));
  } catch {
    return null;
  }
  const colon = decoded.indexOf(":");
  if (colon < 0) return null;
  return authenticateDevicePassword(env, decoded.slice(0, colon), decoded.slice(colon + 1));
}

const PublishQuery = v.object({
  topic: v.pipe(v.string(), v.description("the topic name (no wildcards), within the identity's ACL")),
  qos: v.optional(v.pipe(v.picklist(["0", "1", "2"]), v.description("default 0"))),
  retain: v.optional(v.pipe(v.picklist(["true", "false"]), v.description("default false"))),
});
const Published = v.object({ topic: v.string(), qos: v.picklist([0, 1, 2]), retain: v.boolean(), bytes: v.number() });

/** The HTTP publish API; the Worker's app mounts it at `/api/v1`. */
export const publishApi = new Hono<{ Bindings: Env; Variables: { identity: Identity } }>();

/**
 * `POST /api/v1/messages?topic=&qos=0|1|2&retain=`: the same credentials, ACL, limits and
 * QoS semantics as an MQTT PUBLISH. QoS 1/2 answer 201 only once every copy is durable.
 * Credentials first, then the query, then the identity's rate limit (one call to its limiter
 * object), then the body, read with a running count so an oversized one is never read whole.
 */
publishApi.post(
  "/messages",
  doc({
    summary: "Publish a message",
    description:
      "The body is the raw payload. MQTT 5 properties travel as headers: `MQTT-Content-Type`, `MQTT-Message-Expiry` (seconds), " +
      "`MQTT-Response-Topic`, `MQTT-Correlation-Data` (base64), `MQTT-Payload-Format` (`utf-8` or `bytes`), `MQTT-User-Property: name=value` (repeatable).",
    tags: ["publish"],
    access: "client",
    body: { schema: v.pipe(v.string(), v.description("the payload, any bytes")), required: false, mediaType: "application/octet-stream" },
    ok: { 201: { description: "QoS 1 or 2: every copy is durable", schema: Published }, 202: { description: "QoS 0: accepted", schema: Published } },
    errors: {
      400: ["missing_topic", "invalid_topic", "invalid_qos", "invalid_retain", "invalid_property", "invalid_payload_format"],
      401: ["unauthorized", "token_expired"],
      403: ["forbidden", "device_disabled"],
      413: ["payload_too_large", "retained_quota_exceeded"],
      429: ["rate_limited"],
      503: ["auth_unavailable", "unavailable", "server_unavailable"],
    },
  }),
  async (c, next) => {
    const auth = await authenticateRequest(c.env, c.req.header("authorization"));
    if (!auth) {
      c.header("WWW-Authenticate", 'Basic realm="mqtt", Bearer');
      return jsonError(c, 401, "unauthorized", "Authorization: Basic (device) or Bearer (JWT) required");
    }
    if (!auth.ok) return authFailure(c, auth);
    c.set("identity", auth.identity);
    await next();
  },
  query(PublishQuery, {
    topic: ["missing_topic", "query parameter topic is required"],
    qos: ["invalid_qos", "qos must be 0, 1 or 2"],
    retain: ["invalid_retain", "retain must be true or false"],
  }),
  async (c) => {
    const { limits } = getConfig(c.env);
    const identity = c.get("identity");
    const q = c.req.valid("query");
    const topic = q.topic;
    const topicError = validateTopicName(topic, limits);
    if (topicError) return jsonError(c, 400, "invalid_topic", `invalid topic: ${topicError}`);

    const declared = Number(c.req.header("content-length") ?? "0");
    if (declared > limits.maxPayloadBytes) return tooLarge(c, limits.maxPayloadBytes);
    if (!canPublish(identity.acl, topic)) {
      log("info", "http.publish_denied", { account: identity.account, identity: identity.id, topic });
      return jsonError(c, 403, "forbidden", "the ACL does not allow publishing to this topic");
    }
    const limited = await rateLimit(c, identity, limits);
    if (limited) return limited;
    const payload = await readAtMost(c.req.raw.body, limits.maxPayloadBytes);
    if (payload === null) return tooLarge(c, limits.maxPayloadBytes);

    const qos = q.qos === "2" ? 2 : q.qos === "1" ? 1 : 0;
    const message: Message = { topic, payload, qos, retain: q.retain === "true", from: identity.id };
    const extras = messageProperties(c.req.raw.headers);
    if ("error" in extras) return jsonError(c, 400, "invalid_property", extras.error);
    if (extras.props) message.props = extras.props;
    if (!payloadFormatValid(payload, extras.props?.payloadFormatIndicator)) {
      return jsonError(c, 400, "invalid_payload_format", "the payload is marked UTF-8 but is not valid UTF-8");
    }
    if (extras.expirySeconds !== undefined) message.expiresAt = Date.now() + extras.expirySeconds * 1000;
    let outcome: Routed | undefined;
    try {
      [outcome] = await accountRouter(c.env, identity.account, shardingOf(limits)).publish([message]);
    } catch (err) {
      // The router could not take it (overloaded, being reset, a refused shard count): nothing
      // was acknowledged, so the client may retry; a QoS 1 message is at least once either way.
      log("error", "http.route_failed", { account: identity.account, topic, error: errorMessage(err) });
      c.header("Retry-After", String(UNAVAILABLE_RETRY_SECONDS));
      return jsonError(c, 503, "server_unavailable", "the message could not be routed now; retry shortly");
    }
    if (outcome === "quota") {
      log("warn", "http.retained_quota_exceeded", { account: identity.account, identity: identity.id, topic });
      return jsonError(c, 413, "retained_quota_exceeded", "the account's retained quota (MAX_RETAINED_MESSAGES, MAX_RETAINED_BYTES) is full: the message was neither retained nor delivered");
    }
    return c.json({ topic, qos, retain: message.retain, bytes: payload.byteLength }, qos > 0 ? 201 : 202);
  },
);

function authFailure(c: Context, auth: Extract<AuthResult, { ok: false }>): Response {
  switch (auth.failure) {
    case "disabled":
      return jsonError(c, 403, "device_disabled", "the device is disabled");
    case "expired":
      return jsonError(c, 401, "token_expired", "the token has expired");
    case "unavailable":
      c.header("Retry-After", String(UNAVAILABLE_RETRY_SECONDS));
      return jsonError(c, 503, "auth_unavailable", "the token's signing keys cannot be fetched now; try again later");
    case "misconfigured":
      return jsonError(c, 500, "config_invalid", `JWT authentication is misconfigured: ${auth.problem?.message ?? "invalid configuration"}`);
    default:
      return jsonError(c, 401, "unauthorized", "invalid credentials");
  }
}

/** What a client refused with 503 `auth_unavailable` is told to wait (the JWKS is retried every 30 s). */
const UNAVAILABLE_RETRY_SECONDS = 30;

/**
 * One token from the identity's HTTP publish bucket, held by its limiter object so every
 * isolate and request shares it. A refusal is the response to send (429 with
 * `Retry-After`, or 503 when the limiter cannot be reached); null means go on.
 */
async function rateLimit(c: Context<{ Bindings: Env; Variables: { identity: Identity } }>, identity: Identity, limits: Limits): Promise<Response | null> {
  const rate = { ratePerSecond: limits.httpPublishRatePerSecond, burst: limits.httpPublishBurst };
  let allowance: PublishAllowance;
  try {
    allowance = await limiterStub(c.env, identity.account, identity.id).takePublish(identity.kind, rate);
  } catch (err) {
    log("error", "http.limiter_failed", { account: identity.account, identity: identity.id, error: errorMessage(err) });
    return jsonError(c, 503, "unavailable", "the rate limiter cannot be reached; try again later");
  }
  if (allowance.ok) return null;
  log("info", "http.rate_limited", { account: identity.account, identity: identity.id, rate: rate.ratePerSecond });
  c.header("Retry-After", String(Math.max(1, Math.ceil(allowance.retryAfterMs / 1000))));
  return jsonError(
    c,
    429,
    "rate_limited",
    `more than ${rate.ratePerSecond} HTTP publishes per second (bursts of ${rate.burst}) for this identity; retry after ${allowance.retryAfterMs} ms`,
  );
}

/**
 * MQTT 5 message properties over HTTP, one header each (case-insensitive):
 * `MQTT-Content-Type`, `MQTT-Message-Expiry` (seconds), `MQTT-Response-Topic`,
 * `MQTT-Correlation-Data` (base64), `MQTT-Payload-Format` (`utf-8` or `bytes`), and
 * `MQTT-User-Property: name=value`, repeatable (comma-separated values are split), in order.
 */
function messageProperties(headers: Headers): { props?: ForwardedProps; expirySeconds?: number } | { error: string } {
  const props: ForwardedProps = {};
  let any = false;
  const contentType = headers.get("mqtt-content-type");
  if (contentType !== null) {
    props.contentType = contentType;
    any = true;
  }
  const responseTopic = headers.get("mqtt-response-topic");
  if (responseTopic !== null) {
    if (validateTopicName(responseTopic, { maxTopicBytes: 65535, maxTopicLevels: 1024 })) return { error: "MQTT-Response-Topic is not a valid topic name" };
    props.responseTopic = responseTopic;
    any = true;
  }
  const correlation = headers.get("mqtt-correlation-data");
  if (correlation !== null) {
    try {
      props.correlationData = Uint8Array.from(atob(correlation), (ch) => ch.charCodeAt(0));
    } catch {
      return { error: "MQTT-Correlation-Data must be base64" };
    }
    any = true;
  }
  const format = headers.get("mqtt-payload-format");
  if (format !== null) {
    if (format !== "utf-8" && format !== "bytes") return { error: "MQTT-Payload-Format must be utf-8 or bytes" };
    props.payloadFormatIndicator = format === "utf-8";
    any = true;
  }
  const userProps = headers.get("mqtt-user-property");
  if (userProps !== null) {
    const pairs: Array<{ key: string; value: string }> = [];
    for (const item of userProps.split(",")) {
      const eq = item.indexOf("=");
      if (eq <= 0) return { error: "MQTT-User-Property must be name=value" };
      pairs.push({ key: item.slice(0, eq).trim(), value: item.slice(eq + 1).trim() });
    }
    props.userProperties = pairs;
    any = true;
  }
  const expiry = headers.get("mqtt-message-expiry");
  let expirySeconds: number | undefined;
  if (expiry !== null) {
    expirySeconds = Number(expiry);
    if (!Number.isInteger(expirySeconds) || expirySeconds < 0 || expirySeconds > 0xffffffff) return { error: "MQTT-Message-Expiry must be whole seconds" };
  }
  return { ...(any ? { props } : {}), ...(expirySeconds !== undefined ? { expirySeconds } : {}) };
}

function tooLarge(c: Context, max: number): Response {
  return jsonError(c, 413, "payload_too_large", `payload exceeds ${max} bytes`);
}
