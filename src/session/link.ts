/**
 * The port between the connection object and its packet handlers (`handlers/`): everything
 * a handler may touch, and nothing else. The object implements it over the socket and its
 * storage (`connection.ts`); unit tests implement it in memory (test/unit/session/).
 */
import type { Config } from "../config";
import type { ClaimResult } from "../limits/connection-limiter";
import { encodePacket, type IConnectPacket, type Packet } from "../protocol/codec";
import { CLOSE_CAUSES, type CloseCause } from "../protocol/codes";
import { errorMessage, log } from "../log";
import type { ConnectionMode } from "../auth/identity";
import type { Handover, Message, RouterAttach, RouterDetach, SubscriptionRequest } from "../router/messages";
import type { SessionAttach, SessionDetach } from "./session-store";
import type { ConnectDecision, BrowserCredentials } from "./authenticate";
import { InboundQos2, Outbox } from "./outbox";
import { TopicAliases } from "./aliases";
import { PartialPacket } from "./partial";
import { readAttachment, readBrowserCredentials, readConnMeta, type Attachment, type ConnMeta } from "./state";
import { BROWSER_KEY, META_KEY } from "./keys";
import { nextAlarm } from "./keepalive";
import { closeConnection } from "./handlers/teardown";

/** The account's router, as a connection sees it (the account is bound). */
export interface RouterPort {
  /** Routes messages in order; for each, whether any subscription matched it. */
  publish(messages: Message[]): Promise<boolean[]>;
  subscribe(clientId: string, requests: SubscriptionRequest[], maxSubscriptions: number): Promise<{ granted: boolean[]; retained: Message[] }>;
  unsubscribe(clientId: string, filters: string[]): Promise<boolean[]>;
  attach(clientId: string, conn: string, opts: RouterAttach): Promise<void>;
  detach(clientId: string, conn: string, opts: RouterDetach): Promise<void>;
}

/** The session object of one client id. */
export interface SessionPort {
  attach(conn: string, opts: SessionAttach): Promise<{ sessionPresent: boolean; inboundQos2: number[] }>;
  detach(conn: string, opts: SessionDetach): Promise<void>;
}

/** The connection-limit object of one JWT identity. */
export interface LimiterPort {
  claim(conn: string, clientId: string, mode: ConnectionMode, max: number): Promise<ClaimResult>;
  release(conn: string, clientId: string): Promise<void>;
}

/** The other objects a connection talks to, and the credential check. */
export interface Services {
  router(account: string): RouterPort;
  session(account: string, clientId: string): SessionPort;
  limiter(account: string, identity: string): LimiterPort;
  authenticate(packet: IConnectPacket, browser: BrowserCredentials | null): Promise<ConnectDecision>;
}

/**
 * A publish waiting for the router call in flight, or a PUBREL whose stored QoS 2 message goes
 * with the next call (`message` null: claimed from the inbound store when the call goes out).
 */
export interface PendingPublish {
  /** null: nothing to route (denied by the ACL, refused, or a PUBREL). */
  message: Message | null;
  /** The acknowledgement once the call resolved: PUBACK (QoS 1), PUBCOMP (a PUBREL); none for QoS 0. */
  ack: { cmd: "puback" | "pubcomp"; packetId: number } | null;
  /** MQTT 5 reason code for the PUBACK of a refused publish. */
  reason: number | undefined;
}

/**
 * The connection's in-memory state. Built by `createConnState` in the constructor, so after
 * every wake it starts empty and reloads lazily from the attachment and storage.
 */
export interface ConnState {
  /** Cached attachment of the one socket. */
  att: Attachment | null;
  /** Identity and will from CONNECT. */
  meta: ConnMeta | null;
  /** Bytes of a packet not fully arrived yet. */
  readonly partial: PartialPacket;
  /** Outbound QoS 1/2 flows. */
  readonly outbox: Outbox;
  /** Inbound QoS 2 messages and packet ids between PUBREC and PUBCOMP. */
  readonly inboundQos2: InboundQos2;
  /** Inbound QoS > 0 publishes not yet acknowledged (MQTT 5 receive maximum). */
  inboundPending: number;
  readonly aliases: TopicAliases;
  /** QoS 0 messages delivered before CONNACK went out. */
  early: Message[];
  /** Publishes waiting for the router call in flight; they travel together in the next one. */
  publishQueue: PendingPublish[];
  /** The batcher is running. */
  routing: boolean;
  /** The router call in flight for publishes: the teardown waits for it to settle. */
  routingCall: Promise<unknown> | null;
  /** Set once the connection started to close: the hand-over it produces. */
  closing: Promise<Handover> | null;
  /** An admin close without the will. */
  willSuppressed: boolean;
}

export function createConnState(storage: DurableObjectStorage, config: Config): ConnState {
  return {
    att: null,
    meta: null,
    partial: new PartialPacket(storage),
    outbox: new Outbox(storage, config.limits.maxInflight),
    inboundQos2: new InboundQos2(storage),
    inboundPending: 0,
    aliases: new TopicAliases(storage),
    early: [],
    publishQueue: [],
    routing: false,
    routingCall: null,
    closing: null,
    willSuppressed: false,
  };
}

/**
 * What a handler sees of its connection. `close` is the one way to end it: it runs the
 * teardown once (`handlers/teardown.ts`), whoever asks.
 */
export interface Link {
  readonly connId: string;
  readonly config: Config;
  readonly state: ConnState;
  readonly services: Services;
  now(): number;
  /** The socket's attachment; null when the socket is gone (runtime restart). */
  attachment(): Attachment | null;
  /** The attachment, also while the handler that loaded it outlives the socket (throws when never loaded and no socket). */
  att(): Attachment;
  /** Writes the attachment back to the socket (it survives hibernation with it). */
  saveAttachment(att: Attachment): void;
  /** Encodes and sends one packet in the connection's protocol version. */
  send(packet: Packet): void;
  sendBytes(bytes: Uint8Array): void;
  /** Closes the WebSocket itself (no teardown). */
  closeSocket(code: number, reason: string): void;
  /** Ends the connection for `cause`: the teardown runs once, whoever asks (`handlers/teardown.ts`). */
  close(cause: CloseCause, opts?: { quiet?: boolean }): Promise<void>;
  /** Identity and will stored at CONNECT (throws when there is none: not connected). */
  meta(): Promise<ConnMeta>;
  /** The stored meta, or null (an ended or never-connected object). */
  readMeta(): Promise<ConnMeta | null>;
  saveMeta(meta: ConnMeta): Promise<void>;
  /** The browser credentials kept from the upgrade request, removed once read. */
  takeBrowserCredentials(): Promise<BrowserCredentials | null>;
  /** Arms the one alarm for the next keep-alive, liveness or token-expiry check. */
  scheduleAlarm(att: Attachment): Promise<void>;
  /** Drops everything this object stored (the connection has ended). */
  clearStorage(): Promise<void>;
}

/** The port over the object's one WebSocket and its storage. */
export class SocketLink implements Link {
  constructor(
    private readonly ctx: DurableObjectState,
    readonly connId: string,
    readonly config: Config,
    readonly state: ConnState,
    readonly services: Services,
  ) {}

  now(): number {
    return Date.now();
  }

  private socket(): WebSocket | undefined {
    return this.ctx.getWebSockets()[0];
  }

  attachment(): Attachment | null {
    const ws = this.socket();
    if (!ws) return null;
    if (this.state.att) return this.state.att;
    const att = readAttachment(ws.deserializeAttachment());
    if (!att) throw new Error("socket without a valid attachment");
    this.state.att = att;
    this.state.outbox.setWindow(att.receiveMax);
    this.state.outbox.setEphemeral(att.clean);
    return att;
  }

  att(): Attachment {
    // Cached: a handler still running after the socket closed keeps its attachment.
    const att = this.state.att ?? this.attachment();
    if (!att) throw new Error("no socket");
    return att;
  }

  saveAttachment(att: Attachment): void {
    this.state.att = att;
    this.socket()?.serializeAttachment(att);
  }

  send(packet: Packet): void {
    this.sendBytes(encodePacket(packet, this.att().protocolVersion));
  }

  sendBytes(bytes: Uint8Array): void {
    const att = this.att();
    try {
      att.traffic.writeBytes += bytes.byteLength;
      att.traffic.writeMsg++;
      this.socket()?.send(bytes);
    } catch (err) {
      log("warn", "mqtt.send_failed", { clientId: att.clientId, error: errorMessage(err) });
    }
  }

  closeSocket(code: number, reason: string): void {
    try {
      this.socket()?.close(code, reason);
    } catch {
      // already closing
    }
  }

  async close(cause: CloseCause, opts: { quiet?: boolean } = {}): Promise<void> {
    const att = this.attachment();
    if (!opts.quiet && cause !== "clientDisconnect") {
      const info = CLOSE_CAUSES[cause];
      log("info", "mqtt.close", { clientId: att?.clientId, cause, code: info.monitorCode, reason: info.reason });
    }
    await closeConnection(this, cause);
  }

  async meta(): Promise<ConnMeta> {
    if (this.state.meta) return this.state.meta;
    const meta = await readConnMeta(this.ctx.storage);
    if (!meta) throw new Error("connected socket without identity in storage");
    this.state.meta = meta;
    return meta;
  }

  readMeta(): Promise<ConnMeta | null> {
    return readConnMeta(this.ctx.storage);
  }

  async saveMeta(meta: ConnMeta): Promise<void> {
    this.state.meta = meta;
    await this.ctx.storage.put(META_KEY, meta);
  }

  async takeBrowserCredentials(): Promise<BrowserCredentials | null> {
    const browser = readBrowserCredentials(await this.ctx.storage.get(BROWSER_KEY));
    if (browser) await this.ctx.storage.delete(BROWSER_KEY);
    return browser;
  }

  async scheduleAlarm(att: Attachment): Promise<void> {
    await this.ctx.storage.setAlarm(nextAlarm(att, this.now()));
  }

  async clearStorage(): Promise<void> {
    await this.ctx.storage.deleteAlarm();
    await this.ctx.storage.deleteAll();
  }
}
