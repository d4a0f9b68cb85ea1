import type { Context } from "hono";
import type { Env } from "../env";
import { routerStub } from "../env";
import { getConfig } from "../config";
import { authenticateDevicePassword, authenticateToken, type AuthResult } from "../auth/identity";
import { canPublish } from "../topics/acl";
import { validateTopicName } from "../topics/topic";
import type { Message } from "../router/messages";
import { log } from "../log";
import { jsonError } from "./errors";

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

/**
 * `POST /api/v1/messages?topic=&qos=0|1|2&retain=`: the same credentials, ACL, limits and
 * QoS semantics as an MQTT PUBLISH. QoS 1/2 answer 201 only once every copy is durable.
 */
export async function httpPublish(c: Context<{ Bindings: Env }>): Promise<Response> {
  const { limits } = getConfig(c.env);
  const auth = await authenticateRequest(c.env, c.req.header("authorization"));
  if (!auth) {
    c.header("WWW-Authenticate", 'Basic realm="mqtt", Bearer');
    return jsonError(c, 401, "unauthorized", "Authorization: Basic (device) or Bearer (JWT) required");
  }
  if (!auth.ok) {
    if (auth.failure === "disabled") return jsonError(c, 403, "device_disabled", "the device is disabled");
    if (auth.failure === "expired") return jsonError(c, 401, "token_expired", "the token has expired");
    return jsonError(c, 401, "unauthorized", "invalid credentials");
  }
  const { identity } = auth;

  const topic = c.req.query("topic");
  if (topic === undefined) return jsonError(c, 400, "missing_topic", "query parameter topic is required");
  const topicError = validateTopicName(topic, limits);
  if (topicError) return jsonError(c, 400, "invalid_topic", `invalid topic: ${topicError}`);
  const qosParam = c.req.query("qos") ?? "0";
  if (qosParam !== "0" && qosParam !== "1" && qosParam !== "2") return jsonError(c, 400, "invalid_qos", "qos must be 0, 1 or 2");
  const retainParam = c.req.query("retain") ?? "false";
  if (retainParam !== "true" && retainParam !== "false") return jsonError(c, 400, "invalid_retain", "retain must be true or false");

  const declared = Number(c.req.header("content-length") ?? "0");
  if (declared > limits.maxPayloadBytes) return tooLarge(c, limits.maxPayloadBytes);
  const payload = new Uint8Array(await c.req.arrayBuffer());
  if (payload.byteLength > limits.maxPayloadBytes) return tooLarge(c, limits.maxPayloadBytes);

  if (!canPublish(identity.acl, topic)) {
    log("info", "http.publish_denied", { account: identity.account, identity: identity.id, topic });
    return jsonError(c, 403, "forbidden", "the ACL does not allow publishing to this topic");
  }
  const qos = qosParam === "2" ? 2 : qosParam === "1" ? 1 : 0;
  const message: Message = { topic, payload, qos, retain: retainParam === "true" };
  await routerStub(c.env, identity.account).publish(identity.account, [message]);
  return c.json({ topic, qos, retain: message.retain, bytes: payload.byteLength }, qos > 0 ? 201 : 202);
}

function tooLarge(c: Context<{ Bindings: Env }>, max: number): Response {
  return jsonError(c, 413, "payload_too_large", `payload exceeds ${max} bytes`);
}
