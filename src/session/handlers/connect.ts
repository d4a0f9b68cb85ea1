/**
 * CONNECT, as named steps in the order of the spec [MQTT-3.1.4]: check the protocol level,
 * authenticate, settle the session parameters, claim a connection slot, attach the session
 * (takeover, queued messages), attach the router (delivery target, Connect event), CONNACK,
 * then resume the unfinished flows. Each refusal answers with its CONNACK code and closes.
 */
import type { Limits } from "../../config";
import type { IConnackPacket, IConnectPacket, ProtocolVersion } from "../../protocol/codec";
import { CLOSE_CAUSES, CONNACK_V5, ConnackCode, V5, type CloseCause } from "../../protocol/codes";
import { errorMessage, log } from "../../log";
import { connectEvent, failedConnectEvent, limitEvent, protocolName, type ConnectionFacts } from "../../monitoring/events";
import type { ConnectionMode, Identity } from "../../auth/identity";
import type { Message } from "../../router/messages";
import { clampKeepAlive } from "../keepalive";
import { TOPIC_ALIAS_MAXIMUM } from "../properties";
import { connectionFacts, type Attachment, type ConnMeta } from "../state";
import type { ConnectDecision } from "../authenticate";
import type { Link } from "../link";
import { sendPublish, transmit } from "./deliver";

export async function onConnect(link: Link, packet: IConnectPacket): Promise<void> {
  const att = link.att();
  if (!(await checkLevel(link, packet))) return;
  const version = att.protocolVersion;
  const decision = await authenticate(link, packet);
  if (!decision) return;
  const { identity, clientId, will } = decision;
  const account = identity.account;
  if (decision.willDenied) log("info", "mqtt.will_denied", { account, clientId, topic: packet.will?.topic });

  const params = sessionParameters(packet, version, link.config.limits);
  att.account = account;
  att.clientId = clientId;
  att.clean = params.expirySeconds === 0;
  att.expiresAt = identity.expiresAt;
  att.keepAlive = params.keepAlive;
  att.maxPacketOut = params.maxPacketOut;
  att.receiveMax = params.receiveMax;
  link.state.outbox.setWindow(att.receiveMax);
  link.state.outbox.setEphemeral(att.clean);
  const meta: ConnMeta = {
    account, clientId, cleanStart: params.cleanStart, expirySeconds: params.expirySeconds, will, protocolVersion: version, identity,
    addr: att.addr, transport: att.transport, connectedAt: link.now(),
    willDelaySeconds: version === 5 ? (packet.will?.properties?.willDelayInterval ?? 0) : 0,
  };
  if (!(await claimSlot(link, meta, decision.mode))) return;
  await link.holdMeta(meta);
  link.saveAttachment(att);

  const sessionPresent = await attachSession(link, meta, params);
  if (sessionPresent === null || link.state.closing || !link.attachment()) return;
  connack(link, ConnackCode.Accepted, sessionPresent, connackProperties(packet, clientId, params, link.config.limits));
  att.phase = "connected";
  att.lastSeen = link.now();
  link.saveAttachment(att);
  await link.scheduleFirstCheck(att);
  log("info", "mqtt.connect", {
    account, clientId, identity: identity.id, kind: identity.kind, version, cleanStart: params.cleanStart,
    expirySeconds: params.expirySeconds, sessionPresent, keepAlive: att.keepAlive, addr: att.addr,
  });
  await resumeFlows(link);
}

/** [MQTT-3.1.2-2]: an unsupported protocol level gets CONNACK 1, then the connection closes. */
async function checkLevel(link: Link, packet: IConnectPacket): Promise<boolean> {
  const att = link.att();
  const level = packet.protocolVersion;
  att.protocolVersion = level === 3 || level === 5 ? level : 4;
  if (level === 3 || level === 4 || level === 5) {
    att.problemInfo = level !== 5 || packet.properties?.requestProblemInformation !== false;
    return true;
  }
  connack(link, ConnackCode.UnacceptableProtocolVersion, false);
  await link.close("protocolError", { quiet: true });
  return false;
}

/** Credentials and the CONNECT's consistency (`authenticate.ts`); a refusal is answered here. */
async function authenticate(link: Link, packet: IConnectPacket): Promise<Extract<ConnectDecision, { ok: true }> | null> {
  const att = link.att();
  if (att.protocolVersion === 5 && packet.properties?.authenticationMethod !== undefined) {
    // Enhanced authentication (AUTH) is not offered.
    connack(link, ConnackCode.NotAuthorized, false, { reasonString: "enhanced authentication is not supported" }, V5.badAuthenticationMethod);
    await link.close("notAuthorized", { quiet: true });
    return null;
  }
  const decision = await link.services.authenticate(packet, await link.takeBrowserCredentials());
  if (decision.ok) return decision;
  log("info", "mqtt.connect_refused", { clientId: packet.clientId, code: decision.code, reason: decision.reason, addr: att.addr });
  if (decision.identity) {
    const facts: ConnectionFacts = {
      clientId: decision.clientId ?? "", user: decision.identity.id, addr: att.addr, protocol: protocolName(att.protocolVersion, att.transport), connectedAt: null,
    };
    await reportFailure(link, decision.identity, facts, decision.cause, decision.reason);
  }
  if (decision.code !== null) connack(link, decision.code, false, { reasonString: decision.reason });
  await link.close(decision.cause, { quiet: true });
  return null;
}

/** The session parameters a CONNECT asks for, within the configured limits. Pure. */
export interface SessionParameters {
  cleanStart: boolean;
  requestedExpiry: number;
  /** How long the session outlives the connection (0 = it ends with it). */
  expirySeconds: number;
  requestedKeepAlive: number;
  keepAlive: number;
  /** MQTT 5: the client's Maximum Packet Size (0 = none). */
  maxPacketOut: number;
  /** The in-flight window toward the client. */
  receiveMax: number;
}

export function sessionParameters(packet: IConnectPacket, version: ProtocolVersion, limits: Limits): SessionParameters {
  const props = version === 5 ? packet.properties : undefined;
  const cleanStart = packet.clean !== false;
  // MQTT 5: the session expiry interval says how long the session outlives the connection
  // (0 = it ends with it), capped by the configured maximum. 3.1.1: clean session = 0, else the maximum.
  const requestedExpiry = version === 5 ? (props?.sessionExpiryInterval ?? 0) : cleanStart ? 0 : limits.sessionExpirySeconds;
  const requestedKeepAlive = packet.keepalive ?? 0;
  return {
    cleanStart,
    requestedExpiry,
    expirySeconds: Math.min(requestedExpiry, limits.sessionExpirySeconds),
    requestedKeepAlive,
    keepAlive: clampKeepAlive(requestedKeepAlive, limits),
    maxPacketOut: props?.maximumPacketSize ?? 0,
    receiveMax: Math.min(limits.maxInflight, props?.receiveMaximum ?? 65535),
  };
}

/**
 * JWT identities pass the connection-limit object (single/multi mode rules). Devices are
 * single-mode by construction (client id = device id = session key): the session object's
 * takeover is their limit. Anonymous clients are not limited.
 */
async function claimSlot(link: Link, meta: ConnMeta, mode: ConnectionMode): Promise<boolean> {
  const { identity, account, clientId } = meta;
  if (identity.kind !== "user") return true;
  const claim = await link.services
    .limiter(account, identity.id)
    .claim(link.connId, clientId, mode, link.config.maxMultiConnections)
    .catch((err: unknown) => {
      log("error", "mqtt.limiter_failed", { clientId, error: errorMessage(err) });
      return null;
    });
  if (claim?.ok) return true;
  const cause: CloseCause = !claim ? "serverError" : claim.reason === "full" ? "tooManyConnections" : "notAuthorized";
  const mixed = claim?.ok === false && claim.reason === "mixed";
  const full = claim?.ok === false && claim.reason === "full";
  const code = mixed ? ConnackCode.NotAuthorized : ConnackCode.ServerUnavailable;
  const reason = !claim ? "connection limiter unavailable" : full ? "too many connections" : "identity connected in the other connection mode";
  log("info", "mqtt.connect_refused", { account, clientId, identity: identity.id, code, reason });
  await reportFailure(link, identity, connectionFacts(meta), cause, reason);
  connack(link, code, false, { reasonString: reason }, full ? V5.quotaExceeded : undefined);
  await link.close(cause, { quiet: true });
  return false;
}

/**
 * Claims the session from its session object (which takes it over from an earlier
 * connection and hands over its queued messages), then becomes the router's delivery
 * target. Returns whether a session was present, or null after answering a failure.
 */
async function attachSession(link: Link, meta: ConnMeta, params: SessionParameters): Promise<boolean | null> {
  const att = link.att();
  const { account, clientId, identity } = meta;
  try {
    const attached = await link.services
      .session(account, clientId)
      .attach(link.connId, { cleanStart: params.cleanStart, expirySeconds: params.expirySeconds, identity: { kind: identity.kind, id: identity.id } });
    if (!attached.ok) {
      await refuseAttach(link, meta, attached.reason);
      return null;
    }
    if (attached.buckets) {
      // A reconnect carries on with the limiters its previous connection left.
      att.bucket = attached.buckets.publish;
      att.packets = attached.buckets.packets;
    }
    await link.state.inboundQos2.add(attached.inboundQos2);
    // Taken over while the session answered: a closing connection must not become the delivery target.
    if (link.state.closing) return null;
    const facts = connectionFacts(meta);
    const announce: Message[] = [];
    if (att.keepAlive !== params.requestedKeepAlive) {
      const raised = att.keepAlive > params.requestedKeepAlive || params.requestedKeepAlive === 0;
      announce.push(limitEvent(facts, meta.connectedAt, raised ? "KEEPALIVE_MIN_SECONDS" : "KEEPALIVE_MAX_SECONDS", `keep alive ${params.requestedKeepAlive} s clamped to ${att.keepAlive} s`));
    }
    // The session object decides whether a session was present; the router follows it.
    const routed = await link.services.router(account).attach(clientId, link.connId, {
      cleanStart: params.cleanStart || !attached.sessionPresent, persistent: params.expirySeconds > 0, presence: connectEvent(facts, meta.connectedAt), announce, acl: identity.acl,
    });
    if (!routed.ok) {
      // The account connects too often. The session was attached: the close detaches it again
      // (never connected: no will, no Disconnect event).
      const reason = "connection rate exceeded";
      log("warn", "mqtt.connect_refused", { account, clientId, identity: identity.id, code: ConnackCode.ServerUnavailable, reason });
      await reportFailure(link, identity, { ...connectionFacts(meta), connectedAt: null }, "connectRateExceeded", reason);
      connack(link, ConnackCode.ServerUnavailable, false, { reasonString: reason }, V5.connectionRateExceeded);
      await link.close("connectRateExceeded", { quiet: true });
      return null;
    }
    return attached.sessionPresent;
  } catch (err) {
    log("error", "mqtt.connect_failed", { clientId, error: errorMessage(err) });
    connack(link, ConnackCode.ServerUnavailable, false, { reasonString: "server unavailable" });
    await link.close("serverError", { quiet: true });
    return null;
  }
}

/**
 * The session object refused: the client id belongs to another identity's session (or is a
 * device's: CONNACK 2 / 0x85, no takeover), or it connects too often (CONNACK 3 / 0x9F).
 * Nothing was attached, so the stored meta goes before the close (no detach, no Disconnect
 * event), and a JWT identity's slot is given back here.
 */
async function refuseAttach(link: Link, meta: ConnMeta, why: "not_owner" | "rate"): Promise<void> {
  const { account, clientId, identity } = meta;
  const rate = why === "rate";
  const reason = rate ? "connection rate exceeded" : "client id in use by another identity";
  const code = rate ? ConnackCode.ServerUnavailable : ConnackCode.IdentifierRejected;
  log("warn", "mqtt.connect_refused", { account, clientId, identity: identity.id, code, reason });
  await link.forgetMeta();
  if (identity.kind === "user") {
    await link.services.limiter(account, identity.id).release(link.connId, clientId).catch(() => undefined);
  }
  const cause: CloseCause = rate ? "connectRateExceeded" : "invalidClientId";
  await reportFailure(link, identity, { ...connectionFacts(meta), connectedAt: null }, cause, reason);
  connack(link, code, false, { reasonString: reason }, rate ? V5.connectionRateExceeded : undefined);
  await link.close(cause, { quiet: true });
}

/** What an MQTT 5 CONNACK tells the client about the server and its session. Pure. */
export function connackProperties(packet: IConnectPacket, clientId: string, params: SessionParameters, limits: Limits): NonNullable<IConnackPacket["properties"]> {
  const props: NonNullable<IConnackPacket["properties"]> = {
    receiveMaximum: limits.maxInflight,
    maximumPacketSize: limits.maxPacketBytes,
    topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
    retainAvailable: true,
    wildcardSubscriptionAvailable: true,
    subscriptionIdentifiersAvailable: true,
    sharedSubscriptionAvailable: true,
  };
  if (params.requestedExpiry !== params.expirySeconds) props.sessionExpiryInterval = params.expirySeconds;
  if (packet.clientId === "" || packet.clientId === undefined) props.assignedClientIdentifier = clientId;
  // MQTT 5 tells the client the keep alive the server enforces instead of clamping silently.
  if (params.keepAlive !== params.requestedKeepAlive) props.serverKeepAlive = params.keepAlive;
  return props;
}

/** Messages that arrived during the handshake go out now; unfinished flows resume with their original packet ids [MQTT-4.4.0-1]. */
async function resumeFlows(link: Link): Promise<void> {
  const early = link.state.early;
  link.state.early = [];
  for (const m of early) sendPublish(link, m, 0, false);
  await transmit(link, await link.state.outbox.resend());
  await transmit(link, await link.state.outbox.admit());
}

/** A FailedConnect event on the account's monitoring topic; its own failure is not the client's problem. */
async function reportFailure(link: Link, identity: Identity, facts: ConnectionFacts, cause: CloseCause, reason: string): Promise<void> {
  await link.services
    .router(identity.account)
    .publish([failedConnectEvent(facts, link.now(), CLOSE_CAUSES[cause].monitorCode, reason)])
    .catch(() => undefined);
}

/** CONNACK in the client's protocol version; MQTT 5 gets the reason code and properties. */
export function connack(link: Link, code: ConnackCode, sessionPresent: boolean, props: NonNullable<IConnackPacket["properties"]> = {}, v5Reason?: number): void {
  const att: Attachment = link.att();
  if (att.protocolVersion !== 5) {
    link.send({ cmd: "connack", returnCode: code, sessionPresent });
    return;
  }
  const properties = { ...props };
  // [MQTT-3.2.2-19]: a reason string only when the client did not turn problem information off.
  if (!att.problemInfo || code === ConnackCode.Accepted) delete properties.reasonString;
  link.send({ cmd: "connack", reasonCode: v5Reason ?? CONNACK_V5[code], sessionPresent, properties });
}
