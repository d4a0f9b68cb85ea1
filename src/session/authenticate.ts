import type { Config } from "../config";
import { ConnackCode, type CloseCause } from "../protocol/codes";
import type { IConnectPacket } from "../protocol/codec";
import { toBytes } from "../protocol/bytes";
import { forwardedProps } from "./properties";
import { hasControlCharacter, utf8ByteLength, validateTopicName } from "../topics/topic";
import { canPublish } from "../topics/acl";
import type { Message } from "../router/messages";
import {
  anonymousIdentity,
  authenticateDevicePassword,
  authenticateToken,
  looksLikeJwt,
  type AuthBindings,
  type AuthFailure,
  type AuthResult,
  type ConnectionMode,
  type Identity,
} from "../auth/identity";
import { timingSafeEqualString } from "../auth/passwords";

/** Browser flow (Xively seed): the JWT rides in a cookie, the CSRF token is the MQTT password. */
export interface BrowserCredentials {
  token: string;
  csrf: string;
}

export type ConnectDecision =
  | { ok: true; identity: Identity; clientId: string; mode: ConnectionMode; will: Message | null; willDenied: boolean }
  /**
   * `code` null: the CONNECT itself is malformed; close without CONNACK [MQTT-3.1.4-1].
   * `identity` is set when the refusal came after authentication (a FailedConnect event
   * can then go to that account's monitoring topic).
   */
  | { ok: false; code: ConnackCode | null; cause: CloseCause; reason: string; identity?: Identity; clientId?: string };

function refuse(code: ConnackCode | null, cause: CloseCause, reason: string, identity?: Identity, clientId?: string): ConnectDecision {
  return identity ? { ok: false, code, cause, reason, identity, clientId } : { ok: false, code, cause, reason };
}

const FAILURE_CODES: Record<AuthFailure, ConnackCode> = {
  bad_credentials: ConnackCode.BadUserNameOrPassword,
  expired: ConnackCode.NotAuthorized,
  disabled: ConnackCode.NotAuthorized,
  anonymous_disabled: ConnackCode.NotAuthorized,
  unavailable: ConnackCode.ServerUnavailable,
  misconfigured: ConnackCode.ServerUnavailable,
};

/**
 * Credentials per the identity table of the SPEC: device password, JWT, browser cookie + CSRF, or
 * none. No user name, or an empty one without a password, is no credentials (anonymous, when on);
 * any other user name is checked, and a wrong one is refused even while anonymous access is on:
 * the broker has authenticators, so a mistyped credential never lands in the anonymous account.
 */
async function authenticate(packet: IConnectPacket, env: AuthBindings, config: Config, browser: BrowserCredentials | null): Promise<AuthResult> {
  const username = packet.username;
  const password = packet.password === undefined ? "" : new TextDecoder().decode(packet.password);
  if (username === undefined || (username === "" && password === "")) return anonymousIdentity(config.anonymousAccount);
  if (browser && password !== "" && timingSafeEqualString(password, browser.csrf)) {
    return authenticateToken(env, browser.token, username);
  }
  if (looksLikeJwt(password)) return authenticateToken(env, password, username);
  return authenticateDevicePassword(env, username, password);
}

/**
 * The CONNECT steps that decide acceptance, in order: packet consistency, credentials,
 * client id, will. The connection object applies the decision.
 */
export async function authenticateConnect(
  packet: IConnectPacket,
  env: AuthBindings,
  config: Config,
  browser: BrowserCredentials | null,
): Promise<ConnectDecision> {
  // [MQTT-3.1.2-22]: a password without a user name is a malformed CONNECT.
  if (packet.username === undefined && packet.password !== undefined) {
    return refuse(null, "protocolError", "password without user name");
  }
  const clean = packet.clean !== false;
  let clientId = packet.clientId ?? "";
  // 3.1 §3.1: a client id is 1 to 23 characters; an empty one is rejected (mosquitto too). The upper
  // bound is MAX_CLIENT_ID_BYTES, as for 3.1.1 and 5.0.
  if (clientId === "" && packet.protocolVersion === 3) return refuse(ConnackCode.IdentifierRejected, "invalidClientId", "3.1 requires a client id");
  if (clientId === "" && !clean) {
    // [MQTT-3.1.3-8]: an empty client id needs clean session.
    return refuse(ConnackCode.IdentifierRejected, "invalidClientId", "empty client id requires clean session");
  }
  const controls = config.limits.allowControlCharacters;
  // §1.5.4: control characters SHOULD NOT be in a string; refused unless ALLOW_CONTROL_CHARACTERS.
  if (!controls && packet.username !== undefined && hasControlCharacter(packet.username)) {
    return refuse(ConnackCode.BadUserNameOrPassword, "notAuthorized", "control character in user name");
  }

  const auth = await authenticate(packet, env, config, browser);
  if (!auth.ok) {
    const serverSide = auth.failure === "unavailable" || auth.failure === "misconfigured";
    return refuse(FAILURE_CODES[auth.failure], serverSide ? "serverError" : "notAuthorized", auth.failure);
  }
  const { identity } = auth;

  if (identity.kind === "device") {
    // A device's client id is its device id (single-connection mode); empty means "the device id".
    if (clientId === "") clientId = identity.id;
    if (clientId !== identity.id) {
      return refuse(ConnackCode.IdentifierRejected, "invalidClientId", "device client id must be the device id", identity, clientId);
    }
  } else if (clientId === "") {
    clientId = `auto-${crypto.randomUUID()}`; // [MQTT-3.1.3-6]
  }
  if (utf8ByteLength(clientId) > config.limits.maxClientIdBytes) {
    return refuse(ConnackCode.IdentifierRejected, "invalidClientId", "client id too long", identity, clientId.slice(0, 64));
  }
  if (!controls && hasControlCharacter(clientId)) {
    return refuse(ConnackCode.IdentifierRejected, "invalidClientId", "control character in client id", identity, clientId.slice(0, 64));
  }
  const mode: ConnectionMode = identity.kind === "user" && clientId !== identity.id ? "multi" : "single";

  let will: Message | null = null;
  let willDenied = false;
  if (packet.will) {
    if (validateTopicName(packet.will.topic, config.limits) !== null) {
      return refuse(null, "invalidTopic", "invalid will topic", identity, clientId);
    }
    const payload = toBytes(packet.will.payload ?? "");
    if (payload.byteLength > config.limits.maxPayloadBytes) return refuse(null, "tooLarge", "will payload too large", identity, clientId);
    // A will the ACL would refuse is dropped at CONNECT: it could never be published.
    if (canPublish(identity.acl, packet.will.topic)) {
      const qos = packet.will.qos === 2 ? 2 : packet.will.qos === 1 ? 1 : 0;
      will = { topic: packet.will.topic, payload, qos, retain: packet.will.retain === true };
      // MQTT 5 will properties travel with the will message like a PUBLISH's.
      const wp = packet.protocolVersion === 5 ? packet.will.properties : undefined;
      if (wp) {
        const props = forwardedProps(wp);
        if (props) will.props = props;
        if (wp.messageExpiryInterval !== undefined) will.expiresAt = Date.now() + wp.messageExpiryInterval * 1000;
      }
    } else willDenied = true;
  }
  return { ok: true, identity, clientId, mode, will, willDenied };
}
