import { DurableObject } from "cloudflare:workers";
import { limiterStub, routerStub, sessionStub, type Env } from "../env";
import type { ClaimResult } from "../limits/connection-limiter";
import { connectEvent, disconnectEvent, failedConnectEvent, limitEvent, protocolName, type ConnectionFacts } from "../monitoring/events";
import { getConfig, type Config } from "../config";
import { errorMessage, log } from "../log";
import {
  concatBytes,
  decodePacket,
  encodePacket,
  readFrames,
  type IConnackPacket,
  type IConnectPacket,
  type IDisconnectPacket,
  type IPublishPacket,
  type ISubscribePacket,
  type IUnsubscribePacket,
  type Packet,
  type ProtocolVersion,
} from "../protocol/codec";
import { CLOSE_CAUSES, ConnackCode, SUBACK_FAILURE, type CloseCause } from "../protocol/codes";
import { toBytes } from "../protocol/bytes";
import { validateTopicFilter, validateTopicName } from "../topics/topic";
import { canPublish, canSubscribe } from "../topics/acl";
import { readCookie } from "../auth/jwt";
import { CSRF_COOKIE, TOKEN_COOKIE } from "../auth/cookies";
import { ADDR_HEADER, TRANSPORT_HEADER } from "../http/mqtt-upgrade";
import type { DeliverResult, Handover, Message, QoS, SubscriptionRequest } from "../router/messages";
import { InboundQos2, Outbox, type OutAction } from "./outbox";
import { CONNACK_V5, TOPIC_ALIAS_MAXIMUM, V5, forwardedProps, payloadFormatValid, publishProperties } from "./v5";
import { authenticateConnect } from "./connect";
import { fullBucket, take } from "./rate";
import { planSubscribe, subackFailure } from "./subscribe";
import { PartialPacket } from "./partial";
import { TopicAliases } from "./aliases";
import { count, meterStorage } from "../metrics";
import { keepAliveDeadline, clampKeepAlive } from "./keepalive";
import {
  ATTACHMENT_RX_MAX,
  LIVENESS_CHECK_MS,
  CONNECT_TIMEOUT_MS,
  readAttachment,
  readConnMeta,
  readBrowserCredentials,
  type Attachment,
  type ConnMeta,
} from "./state";

interface PendingPublish {
  /** null: denied by the ACL or a QoS 2 retransmission: acknowledged without routing. */
  message: Message | null;
  packetId: number | undefined;
  qos: QoS;
  /** MQTT 5 reason code for the acknowledgement of a refused publish. */
  reason: number | undefined;
}

/**
 * One object per WebSocket (a unique id per upgrade): it is the only code that reads from
 * or writes to the socket. Standard clients connect to the plain URL, so the client id is
 * unknown when the socket is routed here; after CONNECT this object claims the session
 * from the session object (`session-store.ts`) and registers itself with the account's
 * router as the session's delivery target, so an online delivery costs one hop from the
 * router to here.
 *
 * State that must outlive an event: the socket attachment (phase, identity, keep-alive
 * clock, a small partial packet), and storage (`meta`: identity and will; `o:<seq>`: QoS 1
 * messages not yet acknowledged by the client; `rx`: a large partial packet).
 */
export class MqttConnection extends DurableObject<Env> {
  private readonly config: Config;
  private readonly id: string;
  /** Cached attachment of the one socket; reloaded after a wake. */
  private att: Attachment | null = null;
  /** Bytes of a packet not fully arrived yet. */
  private readonly partial: PartialPacket;
  /** Serializes packet processing: a CONNECT awaiting its RPCs holds the packets behind it. */
  private chain: Promise<void> = Promise.resolve();
  /** Outbound QoS 1/2 flows; storage-backed, loaded lazily. */
  private readonly outbox: Outbox;
  /** Inbound QoS 2 packet ids between PUBREC and PUBREL. */
  private readonly inboundQos2: InboundQos2;
  /** Inbound QoS 2 ids on their way to the router (not yet in inboundQos2). */
  private readonly qos2Routing = new Set<number>();
  /** Inbound QoS > 0 publishes not yet acknowledged (MQTT 5 receive maximum). */
  private inboundPending = 0;
  private readonly aliases: TopicAliases;
  /** QoS 0 messages delivered before CONNACK went out. */
  private early: Message[] = [];
  /** Publishes waiting for the router call in flight; they travel together in the next one. */
  private publishQueue: PendingPublish[] = [];
  private routing = false;
  private ending: Promise<Handover> | null = null;
  /** Identity and will from CONNECT; loaded lazily after a wake. */
  private meta: ConnMeta | null = null;
  private willSuppressed = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    meterStorage(ctx, env, "connection");
    this.config = getConfig(env);
    this.id = ctx.id.toString();
    this.outbox = new Outbox(ctx.storage, this.config.limits.maxInflight);
    this.inboundQos2 = new InboundQos2(ctx.storage);
    this.aliases = new TopicAliases(ctx.storage);
    this.partial = new PartialPacket(ctx.storage);
  }

  // ---------------------------------------------------------------- entry points

  /** The WebSocket upgrade, forwarded by the Worker from `GET /mqtt`. */
  override async fetch(request: Request): Promise<Response> {
    count(this.env, "doFetch", "connection.fetch");
    const pair = new WebSocketPair();
    const [client, server] = [pair[0], pair[1]];
    this.ctx.acceptWebSocket(server);
    const now = Date.now();
    const att: Attachment = {
      v: 1,
      phase: "connecting",
      account: "",
      clientId: "",
      clean: true,
      keepAlive: 0,
      protocolVersion: 4,
      openedAt: now,
      lastSeen: now,
      addr: request.headers.get(ADDR_HEADER) ?? "",
      transport: request.headers.get(TRANSPORT_HEADER) === "tcp" ? "tcp" : "ws",
      rx: null,
      rxStored: false,
      expiresAt: null,
      traffic: { readBytes: 0, readMsg: 0, writeBytes: 0, writeMsg: 0 },
      bucket: fullBucket(this.config.limits.publishBurst, now),
      maxPacketOut: 0,
      receiveMax: this.config.limits.maxInflight,
      problemInfo: true,
    };
    this.saveAttachment(server, att);
    const cookies = request.headers.get("cookie");
    const token = readCookie(cookies, TOKEN_COOKIE);
    const csrf = readCookie(cookies, CSRF_COOKIE);
    if (token && csrf) await this.ctx.storage.put("browser", { token, csrf });
    await this.ctx.storage.setAlarm(now + CONNECT_TIMEOUT_MS);
    const headers = new Headers();
    const protocol = request.headers.get("x-mqtt-subprotocol");
    if (protocol) headers.set("Sec-WebSocket-Protocol", protocol);
    return new Response(null, { status: 101, webSocket: client, headers });
  }

  override async webSocketMessage(ws: WebSocket, data: ArrayBuffer | string): Promise<void> {
    count(this.env, "wsIn", "connection");
    const step = this.chain.then(() => this.onData(ws, data));
    this.chain = step.catch((err: unknown) => this.fail(ws, "MqttConnection:webSocketMessage", err));
    return this.chain;
  }

  override async webSocketClose(ws: WebSocket, code: number): Promise<void> {
    try {
      ws.close(code === 1005 || code === 1006 ? 1000 : code);
    } catch {
      // already closed
    }
    try {
      await this.end(code === 1006 ? "networkLost" : "clientClosed");
    } catch (err) {
      log("error", "MqttConnection:webSocketClose", { error: errorMessage(err) });
    }
  }

  override async webSocketError(_ws: WebSocket, error: unknown): Promise<void> {
    try {
      await this.end("networkLost");
    } catch (err) {
      log("error", "MqttConnection:webSocketError", { error: errorMessage(err), cause: errorMessage(error) });
    }
  }

  /** Keep-alive and liveness clock: the one alarm of this object. */
  override async alarm(): Promise<void> {
    count(this.env, "alarmRun", "connection");
    try {
      const ws = this.socket();
      if (!ws) {
        // The socket is gone without a close event (runtime restart, eviction): end the session here.
        await this.end("networkLost");
        return;
      }
      const att = this.attachment(ws);
      const now = Date.now();
      if (att.phase === "connecting") {
        if (now - att.openedAt >= CONNECT_TIMEOUT_MS) await this.close(ws, "protocolError");
        else await this.ctx.storage.setAlarm(att.openedAt + CONNECT_TIMEOUT_MS);
        return;
      }
      const deadline = keepAliveDeadline(att.lastSeen, att.keepAlive);
      if (deadline !== null && now >= deadline) {
        await this.close(ws, "keepAliveTimeout");
        return;
      }
      if (att.expiresAt !== null && now >= att.expiresAt) {
        // The token this connection authenticated with has expired.
        await this.close(ws, "notAuthorized");
        return;
      }
      await this.scheduleAlarm(att);
    } catch (err) {
      log("error", "MqttConnection:alarm", { error: errorMessage(err) });
    }
  }

  // ---------------------------------------------------------------- RPC API

  /**
   * Messages for this connection's session from the router (or the session object).
   * Resolves once every QoS 1 message is durable here; "gone" when the connection has
   * ended, so the caller hands them to the session object instead.
   */
  async deliver(clientId: string, messages: Message[]): Promise<DeliverResult> {
    const ws = this.socket();
    if (!ws || this.ending) {
      if (!ws && !this.ending) await this.ctx.storage.setAlarm(Date.now());
      return "gone";
    }
    const att = this.attachment(ws);
    if (att.phase === "closing" || att.clientId !== clientId) return "gone";
    await this.accept(ws, att, messages);
    this.saveAttachment(ws, att); // traffic counters
    return "ok";
  }

  /**
   * Another connection claimed this session [MQTT-3.1.4-2]: close, publish the will, and
   * return the session state this connection held (unfinished outbound messages with their
   * packet ids, inbound QoS 2 ids) so the new connection carries on.
   */
  async takeover(clientId: string): Promise<Handover> {
    const meta = await readConnMeta(this.ctx.storage);
    if (!meta || meta.clientId !== clientId) return { messages: [], inboundQos2: [] };
    return this.end("takenOver", { handBack: false });
  }

  /**
   * Closes this connection now for `cause` (admin kick, disabled device, expired token).
   * Returns false when there was no live connection.
   */
  async kick(cause: CloseCause, publishWill = true): Promise<boolean> {
    if (!this.socket() || this.ending) return false;
    if (!publishWill) this.willSuppressed = true;
    await this.end(cause);
    return true;
  }

  /** For the connection limiter: does this object still hold the socket of `clientId`? */
  async isAlive(clientId: string): Promise<boolean> {
    const ws = this.socket();
    if (!ws || this.ending) {
      // Socket gone without a close event (runtime restart): end the session now.
      if (!ws && !this.ending) await this.ctx.storage.setAlarm(Date.now());
      return false;
    }
    return this.attachment(ws).clientId === clientId;
  }

  // ---------------------------------------------------------------- inbound bytes

  private async onData(ws: WebSocket, data: ArrayBuffer | string): Promise<void> {
    if (this.ending) return;
    const att = this.attachment(ws);
    if (typeof data === "string") {
      // MQTT over WebSocket is binary only [MQTT-6.0.0-1].
      await this.close(ws, "invalidData");
      return;
    }
    const prev = await this.partial.load(att);
    const bytes = concatBytes(prev, new Uint8Array(data));
    const { frames, rest, error } = readFrames(bytes, this.config.limits.maxPacketBytes);
    att.lastSeen = Date.now();
    att.traffic.readBytes += data.byteLength;
    att.traffic.readMsg += frames.length;
    if (error === undefined && (rest.byteLength > 0 || prev.byteLength > 0)) await this.partial.save(att, rest);
    // The attachment carries the keep-alive clock and the counters across hibernation.
    this.saveAttachment(ws, att);

    for (const frame of frames) {
      if (this.ending || att.phase === "closing") return;
      const decoded = decodePacket(frame, att.protocolVersion);
      if (!decoded.ok && decoded.unsupportedLevel && att.phase === "connecting") {
        // [MQTT-3.1.2-2]: an unsupported protocol level gets CONNACK 1, then the connection closes.
        this.send(ws, att, { cmd: "connack", returnCode: ConnackCode.UnacceptableProtocolVersion, sessionPresent: false });
        await this.close(ws, "protocolError", { quiet: true });
        return;
      }
      if (!decoded.ok) {
        log("warn", "mqtt.malformed", { clientId: att.clientId, error: decoded.error });
        await this.close(ws, "invalidData");
        return;
      }
      await this.dispatch(ws, att, decoded.packet);
    }
    if (error) {
      log("warn", "mqtt.frame_error", { clientId: att.clientId, error: error.message });
      await this.close(ws, error.kind === "too-large" ? "tooLarge" : "invalidData");
    }
  }

  /** One dispatch on the packet type. */
  private async dispatch(ws: WebSocket, att: Attachment, packet: Packet): Promise<void> {
    if (att.phase === "connecting") {
      // [MQTT-3.1.0-1]: the first packet must be CONNECT.
      if (packet.cmd !== "connect") return this.close(ws, "protocolError");
      return this.onConnect(ws, att, packet);
    }
    switch (packet.cmd) {
      case "connect":
        return this.close(ws, "protocolError"); // [MQTT-3.1.0-2]: a second CONNECT
      case "publish":
        return this.onPublish(ws, att, packet);
      case "puback":
        return this.perform(ws, att, await this.outbox.complete(packet.messageId ?? 0, "puback"));
      case "pubrec":
        // [MQTT-4.3.3-4]: answer PUBREC with PUBREL, after the state change is durable.
        if (await this.outbox.received(packet.messageId ?? 0)) this.send(ws, att, { cmd: "pubrel", messageId: packet.messageId });
        return;
      case "pubcomp":
        return this.perform(ws, att, await this.outbox.complete(packet.messageId ?? 0, "pubcomp"));
      case "pubrel":
        // Inbound QoS 2 ends here; the message was routed on PUBLISH. PUBCOMP even for an
        // unknown id: the client may be resending after our PUBCOMP was lost [MQTT-4.3.3-?].
        await this.inboundQos2.release(packet.messageId ?? 0);
        this.send(ws, att, { cmd: "pubcomp", messageId: packet.messageId });
        return;
      case "subscribe":
        return this.onSubscribe(ws, att, packet);
      case "unsubscribe":
        return this.onUnsubscribe(ws, att, packet);
      case "pingreq":
        this.send(ws, att, { cmd: "pingresp" });
        return;
      case "disconnect":
        return this.onDisconnect(ws, att, packet);
      default:
        // Server-to-client packet types from a client are a protocol violation.
        return this.close(ws, "protocolError");
    }
  }

  // ---------------------------------------------------------------- CONNECT

  private async onConnect(ws: WebSocket, att: Attachment, packet: IConnectPacket): Promise<void> {
    const version = packet.protocolVersion === 3 || packet.protocolVersion === 5 ? packet.protocolVersion : 4;
    att.protocolVersion = version;
    const props = version === 5 ? packet.properties : undefined;
    if (packet.protocolVersion !== 3 && packet.protocolVersion !== 4 && packet.protocolVersion !== 5) {
      // [MQTT-3.1.2-2]: an unsupported level gets CONNACK 1, then the connection closes.
      this.connack(ws, att, ConnackCode.UnacceptableProtocolVersion, false);
      return this.close(ws, "protocolError", { quiet: true });
    }
    att.problemInfo = props?.requestProblemInformation !== false;
    if (props?.authenticationMethod !== undefined) {
      // Enhanced authentication (AUTH) is not offered.
      this.connack(ws, att, ConnackCode.NotAuthorized, false, { reasonString: "enhanced authentication is not supported" }, V5.badAuthenticationMethod);
      return this.close(ws, "notAuthorized", { quiet: true });
    }
    const browser = readBrowserCredentials(await this.ctx.storage.get("browser"));
    if (browser) await this.ctx.storage.delete("browser");
    const decision = await authenticateConnect(packet, this.env, this.config, browser);
    if (!decision.ok) {
      log("info", "mqtt.connect_refused", { clientId: packet.clientId, code: decision.code, reason: decision.reason, addr: att.addr });
      if (decision.identity) {
        const { identity } = decision;
        const facts: ConnectionFacts = {
          clientId: decision.clientId ?? "", user: identity.id, addr: att.addr, protocol: protocolName(version, att.transport), connectedAt: null,
        };
        await routerStub(this.env, identity.account)
          .publish(identity.account, [failedConnectEvent(facts, Date.now(), CLOSE_CAUSES[decision.cause].monitorCode, decision.reason)])
          .catch(() => undefined);
      }
      if (decision.code !== null) this.connack(ws, att, decision.code, false, { reasonString: decision.reason });
      return this.close(ws, decision.cause, { quiet: true });
    }
    const { identity, clientId, will } = decision;
    const account = identity.account;
    if (decision.willDenied) log("info", "mqtt.will_denied", { account, clientId, topic: packet.will?.topic });
    const limits = this.config.limits;
    const cleanStart = packet.clean !== false;
    // MQTT 5: the session expiry interval says how long the session outlives the connection
    // (0 = it ends with it), capped by the configured maximum. 3.1.1: clean session = 0, else the maximum.
    const requestedExpiry = version === 5 ? (props?.sessionExpiryInterval ?? 0) : cleanStart ? 0 : limits.sessionExpirySeconds;
    const expirySeconds = Math.min(requestedExpiry, limits.sessionExpirySeconds);
    att.account = account;
    att.clientId = clientId;
    att.clean = expirySeconds === 0;
    att.expiresAt = identity.expiresAt;
    const requestedKeepAlive = packet.keepalive ?? 0;
    att.keepAlive = clampKeepAlive(requestedKeepAlive, limits);
    att.maxPacketOut = props?.maximumPacketSize ?? 0;
    att.receiveMax = Math.min(limits.maxInflight, props?.receiveMaximum ?? 65535);
    this.outbox.setWindow(att.receiveMax);
    this.outbox.setEphemeral(expirySeconds === 0);
    const meta: ConnMeta = {
      account, clientId, cleanStart, expirySeconds, will, protocolVersion: version, identity,
      addr: att.addr, transport: att.transport, connectedAt: Date.now(),
      willDelaySeconds: version === 5 ? (packet.will?.properties?.willDelayInterval ?? 0) : 0,
    };
    const facts = connectionFacts(meta);

    // JWT identities pass the connection-limit object (single/multi mode rules). Devices are
    // single-mode by construction (client id = device id = session key): the session
    // object's takeover is their limit. Anonymous clients are not limited.
    if (identity.kind === "user") {
      const claim = await limiterStub(this.env, account, identity.id)
        .claim(this.id, clientId, decision.mode, this.config.maxMultiConnections)
        .catch((err: unknown): ClaimResult | null => {
          log("error", "mqtt.limiter_failed", { clientId, error: errorMessage(err) });
          return null;
        });
      if (!claim || !claim.ok) {
        const cause: CloseCause = !claim ? "serverError" : claim.reason === "full" ? "tooManyConnections" : "notAuthorized";
        const code = claim?.ok === false && claim.reason === "mixed" ? ConnackCode.NotAuthorized : ConnackCode.ServerUnavailable;
        const reason = !claim ? "connection limiter unavailable" : claim.reason === "full" ? "too many connections" : "identity connected in the other connection mode";
        log("info", "mqtt.connect_refused", { account, clientId, identity: identity.id, code, reason });
        await routerStub(this.env, account)
          .publish(account, [failedConnectEvent(facts, Date.now(), CLOSE_CAUSES[cause].monitorCode, reason)])
          .catch(() => undefined);
        this.connack(ws, att, code, false, { reasonString: reason }, claim?.ok === false && claim.reason === "full" ? V5.quotaExceeded : undefined);
        return this.close(ws, cause, { quiet: true });
      }
    }
    this.meta = meta;
    await this.ctx.storage.put("meta", meta);
    this.saveAttachment(ws, att);

    let sessionPresent: boolean;
    try {
      const attached = await sessionStub(this.env, account, clientId).attach(account, clientId, this.id, cleanStart, expirySeconds);
      sessionPresent = attached.sessionPresent;
      await this.inboundQos2.add(attached.inboundQos2);
      const announce = [connectEvent(facts, meta.connectedAt)];
      if (att.keepAlive !== requestedKeepAlive) {
        announce.push(limitEvent(facts, meta.connectedAt, att.keepAlive > requestedKeepAlive || requestedKeepAlive === 0 ? "KEEPALIVE_MIN_SECONDS" : "KEEPALIVE_MAX_SECONDS", `keep alive ${requestedKeepAlive} s clamped to ${att.keepAlive} s`));
      }
      await routerStub(this.env, account).attach(account, clientId, this.id, cleanStart, expirySeconds > 0, announce);
    } catch (err) {
      log("error", "mqtt.connect_failed", { clientId, error: errorMessage(err) });
      this.connack(ws, att, ConnackCode.ServerUnavailable, false, { reasonString: "server unavailable" });
      return this.close(ws, "serverError", { quiet: true });
    }
    if (this.ending || !this.socket()) return;
    const connackProps: NonNullable<IConnackPacket["properties"]> = {
      receiveMaximum: limits.maxInflight,
      maximumPacketSize: limits.maxPacketBytes,
      topicAliasMaximum: TOPIC_ALIAS_MAXIMUM,
      retainAvailable: true,
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: true,
      sharedSubscriptionAvailable: true,
    };
    if (requestedExpiry !== expirySeconds) connackProps.sessionExpiryInterval = expirySeconds;
    if (packet.clientId === "" || packet.clientId === undefined) connackProps.assignedClientIdentifier = clientId;
    // MQTT 5 tells the client the keep alive the server enforces instead of clamping silently.
    if (att.keepAlive !== requestedKeepAlive) connackProps.serverKeepAlive = att.keepAlive;
    this.connack(ws, att, ConnackCode.Accepted, sessionPresent, connackProps);
    att.phase = "connected";
    att.lastSeen = Date.now();
    this.saveAttachment(ws, att);
    await this.scheduleAlarm(att);
    log("info", "mqtt.connect", { account, clientId, identity: identity.id, kind: identity.kind, version, cleanStart, expirySeconds, sessionPresent, keepAlive: att.keepAlive, addr: att.addr });

    // Messages that arrived during the handshake (offline queue, takeover hand-over) go out now.
    const early = this.early;
    this.early = [];
    for (const m of early) this.sendPublish(ws, att, m, 0, false);
    // [MQTT-4.4.0-1]: unfinished flows resume with their original packet ids.
    await this.perform(ws, att, await this.outbox.resend());
    await this.perform(ws, att, await this.outbox.admit());
  }

  /** CONNACK in the client's protocol version; MQTT 5 gets the reason code and properties. */
  private connack(
    ws: WebSocket,
    att: Attachment,
    code: ConnackCode,
    sessionPresent: boolean,
    props: NonNullable<IConnackPacket["properties"]> = {},
    v5Reason?: number,
  ): void {
    if (att.protocolVersion !== 5) {
      this.send(ws, att, { cmd: "connack", returnCode: code, sessionPresent });
      return;
    }
    const properties = { ...props };
    // [MQTT-3.2.2-19]: a reason string only when the client did not turn problem information off.
    if (!att.problemInfo || code === ConnackCode.Accepted) delete properties.reasonString;
    this.send(ws, att, { cmd: "connack", reasonCode: v5Reason ?? CONNACK_V5[code], sessionPresent, properties });
  }

  // ---------------------------------------------------------------- PUBLISH (inbound)

  private async onPublish(ws: WebSocket, att: Attachment, packet: IPublishPacket): Promise<void> {
    const limits = this.config.limits;
    if (!take(att.bucket, limits.publishRatePerSecond, limits.publishBurst, Date.now())) {
      log("warn", "mqtt.rate_exceeded", { account: att.account, clientId: att.clientId, rate: limits.publishRatePerSecond });
      return this.close(ws, "rateExceeded");
    }
    const props = att.protocolVersion === 5 ? packet.properties : undefined;
    let topic = packet.topic;
    if (props?.topicAlias !== undefined) {
      const resolved = await this.aliases.resolve(props.topicAlias, topic);
      if (resolved === null) return this.close(ws, "topicAliasInvalid");
      topic = resolved;
    }
    const topicError = validateTopicName(topic, limits);
    if (topicError) {
      log("warn", "mqtt.invalid_topic", { clientId: att.clientId, error: topicError });
      return this.close(ws, "invalidTopic");
    }
    const payload = toBytes(packet.payload);
    if (payload.byteLength > limits.maxPayloadBytes) return this.close(ws, "tooLarge");
    if (packet.qos > 0 && !packet.messageId) return this.close(ws, "protocolError"); // [MQTT-2.3.1-1]
    const packetId = packet.qos > 0 ? packet.messageId : undefined;
    if (packetId !== undefined && this.inboundPending >= limits.maxInflight && att.protocolVersion === 5) {
      // [MQTT-3.3.4-7]: more unacknowledged QoS > 0 publishes than the Receive Maximum we announced.
      return this.close(ws, "receiveMaximumExceeded");
    }
    const { identity } = await this.loadMeta();
    let message: Message | null = { topic, payload, qos: packet.qos, retain: packet.retain, from: att.clientId };
    let reason: number | undefined;
    if (props) {
      const forwarded = forwardedProps(props);
      if (forwarded) message.props = forwarded;
      if (props.messageExpiryInterval !== undefined) message.expiresAt = Date.now() + props.messageExpiryInterval * 1000;
    }
    if (!payloadFormatValid(payload, props?.payloadFormatIndicator)) {
      log("info", "mqtt.payload_format_invalid", { account: att.account, clientId: att.clientId, topic });
      message = null;
      reason = V5.payloadFormatInvalid;
    } else if (!canPublish(identity.acl, topic)) {
      // 3.1.1 has no negative PUBACK: a denied QoS 1/2 publish is acknowledged and dropped,
      // in order with the others [MQTT-4.6.0-2]; MQTT 5 gets 0x87.
      log("info", "mqtt.publish_denied", { account: att.account, clientId: att.clientId, topic });
      message = null;
      reason = V5.notAuthorized;
    }
    if (packet.qos === 2 && packetId !== undefined) {
      // A retransmission of a QoS 2 message already received is answered, not routed again
      // [MQTT-4.3.3-2]: exactly once.
      if (this.qos2Routing.has(packetId) || (await this.inboundQos2.has(packetId))) message = null;
      else if (message) this.qos2Routing.add(packetId);
    }
    if (packetId !== undefined) this.inboundPending++;
    this.publishQueue.push({ message, packetId, qos: packet.qos, reason });
    if (!this.routing) void this.flushPublishes(ws, att);
  }

  /**
   * Sends queued publishes to the router, one call at a time: publishes arriving while a
   * call is in flight travel together in the next one, in order. Acknowledgements go out
   * only after the router has made each QoS 1 copy durable.
   */
  private async flushPublishes(ws: WebSocket, att: Attachment): Promise<void> {
    this.routing = true;
    try {
      while (this.publishQueue.length > 0 && !this.ending) {
        const batch = this.publishQueue;
        this.publishQueue = [];
        const messages = batch.flatMap((p) => (p.message ? [p.message] : []));
        if (messages.length > 0) await routerStub(this.env, att.account).publish(att.account, messages);
        // QoS 2 ids are durable before PUBREC goes out, so a retransmission after a crash is still recognized.
        const qos2 = batch.flatMap((p) => (p.qos === 2 && p.packetId !== undefined ? [p.packetId] : []));
        await this.inboundQos2.add(qos2);
        for (const pid of qos2) this.qos2Routing.delete(pid);
        for (const { packetId, qos, reason } of batch) {
          if (packetId === undefined) continue;
          this.inboundPending--;
          if (att.protocolVersion === 5 && reason !== undefined) {
            // A QoS 2 refused with a reason code >= 0x80 ends its exchange here [MQTT-4.3.3-?].
            this.send(ws, att, { cmd: qos === 2 ? "pubrec" : "puback", messageId: packetId, reasonCode: reason });
            if (qos === 2) await this.inboundQos2.release(packetId);
          } else this.send(ws, att, { cmd: qos === 2 ? "pubrec" : "puback", messageId: packetId });
        }
      }
    } catch (err) {
      // No acknowledgement went out for this batch: the client retransmits after reconnecting.
      log("error", "mqtt.route_failed", { clientId: att.clientId, error: errorMessage(err) });
      await this.close(ws, "serverError");
    } finally {
      this.routing = false;
    }
  }

  // ---------------------------------------------------------------- SUBSCRIBE / UNSUBSCRIBE

  private async onSubscribe(ws: WebSocket, att: Attachment, packet: ISubscribePacket): Promise<void> {
    if (!packet.messageId) return this.close(ws, "protocolError");
    const meta = await this.loadMeta();
    const plan = planSubscribe(packet, meta.identity.acl, this.config.limits, att.protocolVersion);
    if (!plan.ok) return this.close(ws, "protocolError");
    const { codes, requests, slots } = plan;
    for (const filter of plan.denied) log("info", "mqtt.subscribe_denied", { account: att.account, clientId: att.clientId, filter });
    let retained: Message[] = [];
    const limitEvents: Message[] = [];
    if (packet.subscriptions.length > this.config.limits.maxFiltersPerSubscribe) {
      limitEvents.push(limitEvent(connectionFacts(meta), Date.now(), "MAX_FILTERS_PER_SUBSCRIBE", `${packet.subscriptions.length - this.config.limits.maxFiltersPerSubscribe} filter(s) past the limit refused`));
    }
    if (requests.length > 0) {
      const result = await routerStub(this.env, att.account).subscribe(att.clientId, requests, this.config.limits.maxSubscriptions);
      let refused = 0;
      result.granted.forEach((ok, i) => {
        const at = slots[i];
        if (!ok && at !== undefined) {
          codes[at] = subackFailure(att.protocolVersion, V5.quotaExceeded);
          refused++;
        }
      });
      if (refused > 0) limitEvents.push(limitEvent(connectionFacts(meta), Date.now(), "MAX_SUBSCRIPTIONS", `${refused} subscription(s) past the limit refused`));
      retained = result.retained;
    }
    this.send(ws, att, { cmd: "suback", messageId: packet.messageId, granted: codes });
    if (limitEvents.length > 0) await routerStub(this.env, att.account).publish(att.account, limitEvents);
    if (retained.length > 0) await this.accept(ws, att, retained);
  }

  private async onUnsubscribe(ws: WebSocket, att: Attachment, packet: IUnsubscribePacket): Promise<void> {
    if (!packet.messageId) return this.close(ws, "protocolError");
    const existed = await routerStub(this.env, att.account).unsubscribe(att.clientId, packet.unsubscriptions);
    const granted = att.protocolVersion === 5 ? existed.map((e) => (e ? V5.success : V5.noSubscriptionExisted)) : [];
    this.send(ws, att, { cmd: "unsuback", messageId: packet.messageId, granted });
  }

  /**
   * DISCONNECT from the client. MQTT 5: reason 0x04 asks for the will to be published, and
   * the session expiry may change (not from 0 to more [MQTT-3.14.2-2]).
   */
  private async onDisconnect(ws: WebSocket, att: Attachment, packet: IDisconnectPacket): Promise<void> {
    if (att.protocolVersion === 5) {
      const meta = await this.loadMeta();
      const expiry = packet.properties?.sessionExpiryInterval;
      if (expiry !== undefined) {
        if (meta.expirySeconds === 0 && expiry > 0) return this.close(ws, "protocolError");
        meta.expirySeconds = Math.min(expiry, this.config.limits.sessionExpirySeconds);
        await this.ctx.storage.put("meta", meta);
      }
      if (packet.reasonCode === 0x04) return this.close(ws, "clientDisconnectWithWill");
    }
    return this.close(ws, "clientDisconnect");
  }

  // ---------------------------------------------------------------- outbound messages

  /** Takes messages for the client: QoS 0 goes out now; QoS 1/2 are stored, then sent within the window. */
  private async accept(ws: WebSocket, att: Attachment, messages: Message[]): Promise<void> {
    const durable: Message[] = [];
    for (const m of messages) {
      if (m.qos === 0) {
        if (att.phase === "connected") this.sendPublish(ws, att, m, 0, false);
        else this.early.push(m);
      } else durable.push(m);
    }
    if (durable.length === 0) return;
    const actions = await this.outbox.add(durable);
    // Before CONNACK nothing is sent: onConnect resends every flow in order afterwards.
    if (att.phase === "connected") await this.perform(ws, att, actions);
  }

  /** Puts outbox decisions on the wire; a message that cannot be sent (expired, too large) is done. */
  private async perform(ws: WebSocket, att: Attachment, actions: OutAction[]): Promise<void> {
    let next = actions;
    while (next.length > 0) {
      const dropped: number[] = [];
      for (const action of next) {
        if (action.kind === "pubrel") this.send(ws, att, { cmd: "pubrel", messageId: action.pid });
        else if (!this.sendPublish(ws, att, action.record.message, action.record.pid, action.record.dup)) dropped.push(action.record.pid);
      }
      next = [];
      for (const pid of dropped) next.push(...(await this.outbox.drop(pid)));
    }
  }

  /**
   * Sends one PUBLISH. Returns false when it was not sent: expired (MQTT 5 message expiry
   * [MQTT-3.3.2-5]) or larger than the client's Maximum Packet Size [MQTT-3.1.2-25]; the
   * caller then treats a QoS > 0 message as done.
   */
  private sendPublish(ws: WebSocket, att: Attachment, m: Message, pid: number, dup: boolean): boolean {
    const now = Date.now();
    if (m.expiresAt !== undefined && m.expiresAt <= now) return false;
    const packet: IPublishPacket = {
      cmd: "publish",
      topic: m.topic,
      payload: m.payload instanceof Buffer ? m.payload : Buffer.from(m.payload.buffer, m.payload.byteOffset, m.payload.byteLength),
      qos: pid === 0 ? 0 : m.qos,
      retain: m.retain,
      dup: dup && pid !== 0, // [MQTT-3.3.1-2]: DUP only on a redelivery of QoS > 0
      messageId: pid === 0 ? undefined : pid,
    };
    if (att.protocolVersion === 5) {
      const properties = publishProperties(m, now);
      if (properties) packet.properties = properties;
    }
    const bytes = encodePacket(packet, att.protocolVersion);
    if (att.maxPacketOut > 0 && bytes.byteLength > att.maxPacketOut) {
      log("info", "mqtt.too_large_for_client", { clientId: att.clientId, topic: m.topic, bytes: bytes.byteLength, max: att.maxPacketOut });
      return false;
    }
    this.sendBytes(ws, att, bytes);
    return true;
  }

  // ---------------------------------------------------------------- closing

  /** Closes the socket for `cause` and ends the session side of this connection. */
  private async close(ws: WebSocket, cause: CloseCause, opts: { quiet?: boolean } = {}): Promise<void> {
    const info = CLOSE_CAUSES[cause];
    const att = this.attachment(ws);
    if (!opts.quiet && cause !== "clientDisconnect") {
      log("info", "mqtt.close", { clientId: att.clientId, cause, code: info.monitorCode, reason: info.reason });
    }
    await this.end(cause);
  }

  /**
   * Ends this connection exactly once: closes the socket, publishes the will when the cause
   * calls for it [MQTT-3.1.2-8], detaches from the router and the session object (handing
   * unacknowledged QoS 1 messages back to a persistent session), and clears storage.
   */
  private end(cause: CloseCause, opts: { handBack?: boolean } = {}): Promise<Handover> {
    if (this.ending) return this.ending;
    this.ending = this.finish(cause, opts.handBack !== false);
    return this.ending;
  }

  private async finish(cause: CloseCause, handBack: boolean): Promise<Handover> {
    const info = CLOSE_CAUSES[cause];
    const ws = this.socket();
    if (ws) {
      const att = this.attachment(ws);
      // MQTT 5: the server says why before it closes a connection it decided to close [MQTT-3.14].
      // Those are exactly the causes with an error reason (>= 0x80); the client's own ends are 0x00/0x04.
      if (att.protocolVersion === 5 && att.phase === "connected" && info.v5Reason >= 0x80) {
        const properties = att.problemInfo ? { reasonString: info.reason } : undefined;
        this.send(ws, att, { cmd: "disconnect", reasonCode: info.v5Reason, ...(properties ? { properties } : {}) });
      }
      att.phase = "closing";
      this.saveAttachment(ws, att);
      try {
        ws.close(info.wsCode, info.reason);
      } catch {
        // already closing
      }
    }
    const meta = await readConnMeta(this.ctx.storage);
    const handover: Handover = { messages: [], inboundQos2: [] };
    if (meta) {
      const { account, clientId, identity, expirySeconds } = meta;
      const clean = expirySeconds === 0;
      // The will first [MQTT-3.1.2-8], then the monitoring event, in the detach call. An MQTT 5
      // will delay hands the will to the session object, which publishes it when the delay
      // (or the session) ends unless the session reconnects first [MQTT-3.1.3-9].
      const announce: Message[] = [];
      let delayedWill: { message: Message; delaySeconds: number } | undefined;
      if (info.publishWill && meta.will && !this.willSuppressed) {
        const delay = Math.min(meta.willDelaySeconds, expirySeconds);
        if (delay > 0 && handBack) delayedWill = { message: meta.will, delaySeconds: delay };
        else announce.push(meta.will);
      }
      const traffic = ws ? this.attachment(ws).traffic : { readBytes: 0, readMsg: 0, writeBytes: 0, writeMsg: 0 };
      announce.push(disconnectEvent(connectionFacts(meta), Date.now(), info.monitorCode, info.reason, traffic));
      // A persistent session keeps its unfinished messages; a clean one gives its unfinished
      // shared-subscription messages back to their groups (not the QoS 2 ones already received).
      const unfinished = await this.outbox.handover();
      const orphans = clean ? unfinished.filter((m) => m.share !== undefined && !m.released) : [];
      if (!clean) {
        handover.messages = unfinished;
        handover.inboundQos2 = await this.inboundQos2.all();
      }
      await routerStub(this.env, account)
        .detach(account, clientId, this.id, !clean, announce, orphans)
        .catch((err: unknown) => log("error", "mqtt.detach_failed", { clientId, error: errorMessage(err) }));
      if (identity.kind === "user") {
        await limiterStub(this.env, account, identity.id)
          .release(this.id, clientId)
          .catch((err: unknown) => log("error", "mqtt.release_failed", { clientId, error: errorMessage(err) }));
      }
      if (handBack) {
        await sessionStub(this.env, account, clientId)
          .detach(this.id, handover, expirySeconds, delayedWill)
          .catch((err: unknown) => log("error", "mqtt.session_detach_failed", { clientId, error: errorMessage(err) }));
      }
      log("info", "mqtt.disconnect", { account, clientId, cause, code: info.monitorCode });
    }
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
    this.outbox.reset();
    this.inboundQos2.reset();
    return handover;
  }

  private async fail(ws: WebSocket, where: string, err: unknown): Promise<void> {
    log("error", where, { error: errorMessage(err) });
    try {
      await this.end("serverError");
    } catch (inner) {
      log("error", `${where}:end`, { error: errorMessage(inner) });
      try {
        ws.close(1011, "internal error");
      } catch {
        // already closed
      }
    }
  }

  // ---------------------------------------------------------------- socket state

  private async loadMeta(): Promise<ConnMeta> {
    if (this.meta) return this.meta;
    const meta = await readConnMeta(this.ctx.storage);
    if (!meta) throw new Error("connected socket without identity in storage");
    this.meta = meta;
    return meta;
  }

  private socket(): WebSocket | undefined {
    return this.ctx.getWebSockets()[0];
  }

  private attachment(ws: WebSocket): Attachment {
    if (this.att) return this.att;
    const att = readAttachment(ws.deserializeAttachment());
    if (!att) throw new Error("socket without a valid attachment");
    this.att = att;
    this.outbox.setWindow(att.receiveMax);
    this.outbox.setEphemeral(att.clean);
    return att;
  }

  private saveAttachment(ws: WebSocket, att: Attachment): void {
    this.att = att;
    ws.serializeAttachment(att);
  }

  private send(ws: WebSocket, att: Attachment, packet: Packet): void {
    this.sendBytes(ws, att, encodePacket(packet, att.protocolVersion));
  }

  private sendBytes(ws: WebSocket, att: Attachment, bytes: Uint8Array): void {
    try {
      att.traffic.writeBytes += bytes.byteLength;
      att.traffic.writeMsg++;
      ws.send(bytes);
    } catch (err) {
      log("warn", "mqtt.send_failed", { clientId: att.clientId, error: errorMessage(err) });
    }
  }

  private async scheduleAlarm(att: Attachment): Promise<void> {
    let next = Date.now() + LIVENESS_CHECK_MS;
    const deadline = keepAliveDeadline(att.lastSeen, att.keepAlive);
    if (deadline !== null) next = Math.min(next, deadline);
    if (att.expiresAt !== null) next = Math.min(next, att.expiresAt);
    await this.ctx.storage.setAlarm(next);
  }
}

function connectionFacts(meta: ConnMeta): ConnectionFacts {
  return {
    clientId: meta.clientId,
    user: meta.identity.id,
    addr: meta.addr,
    protocol: protocolName(meta.protocolVersion, meta.transport),
    connectedAt: meta.connectedAt,
  };
}
