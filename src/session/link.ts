/**
 * The port between the connection object and its packet handlers (`handlers/`): everything
 * a handler may touch, and nothing else. `socket-link.ts` implements it over the socket and
 * the object's storage; unit tests implement it in memory (test/unit/session/).
 */
import type { Config } from "../config";
import type { ClaimResult, ConnectionMode } from "../auth/identity";
import type { Handover, Message, RetainedCursor, RetainedPageResult, Routed, RouterAttach, RouterAttached, RouterDetach, Subscribed, SubscriptionRequest } from "../router/messages";
import type { IConnectPacket, Packet } from "../protocol/codec";
import type { CloseCause } from "../protocol/codes";
import type { ConnectDecision, BrowserCredentials } from "./authenticate";
import type { Attachment, ConnMeta } from "./state";
import type { Bucket } from "../limits/rate";
import { InboundQos2, Outbox } from "./outbox";
import { TopicAliases } from "./aliases";
import { PartialPacket } from "./partial";
import { PendingRetained } from "./retained";
import { errorMessage, log } from "../log";

/** Who a session belongs to. */
export interface SessionOwner {
  kind: "device" | "user" | "anonymous";
  id: string;
}

/** The session object's answer to a connection claiming it. */
export type SessionAttached =
  | { ok: true; sessionPresent: boolean; inboundQos2: number[]; buckets?: RateBuckets }
  /** `not_owner`: another identity owns this client id (CONNACK 2 / 0x85); `rate`: this client id connects too often (CONNACK 3 / 0x9F). */
  | { ok: false; reason: "not_owner" | "rate" };

/** A connection's rate limiters, handed to the next connection of the same client id so a reconnect does not refill them. */
export interface RateBuckets {
  publish: Bucket;
  packets: Bucket;
}

/** Options of the session object's `attach`. */
export interface SessionAttach {
  cleanStart: boolean;
  expirySeconds: number;
  /** The connecting identity: only the session's owner may use its client id. */
  identity: SessionOwner;
}

/** Options of the session object's `detach`. */
export interface SessionDetach {
  handover: Handover;
  expirySeconds: number;
  /** An MQTT 5 will published after its delay unless the session reconnects first. */
  delayedWill?: { message: Message; delaySeconds: number };
  /** The rate limiters as the connection left them. */
  buckets?: RateBuckets;
}

/** A session object's detach that failed at teardown, kept in storage until it succeeds. */
export interface PendingDetach {
  account: string;
  clientId: string;
  detach: SessionDetach;
  tries?: number;
}

/** The account's router, as a connection sees it (the account is bound). */
export interface RouterPort {
  /** Routes messages in order; for each, what became of it (matched, unmatched, past the retained quota). */
  publish(messages: Message[]): Promise<Routed[]>;
  /** Registers subscriptions; the first page of the retained messages they match, and a cursor to the rest. */
  subscribe(clientId: string, requests: SubscriptionRequest[], maxSubscriptions: number, opts: { pageMessages: number }): Promise<Subscribed>;
  /** The next page of a retained delivery on subscribe. */
  retainedPage(cursor: RetainedCursor): Promise<RetainedPageResult>;
  unsubscribe(clientId: string, filters: string[]): Promise<boolean[]>;
  attach(clientId: string, conn: string, opts: RouterAttach): Promise<RouterAttached>;
  detach(clientId: string, conn: string, opts: RouterDetach): Promise<void>;
}

/** The session object of one client id. */
export interface SessionPort {
  attach(conn: string, opts: SessionAttach): Promise<SessionAttached>;
  detach(conn: string, opts: SessionDetach): Promise<void>;
}

/** The connection-limit object of one JWT identity. */
export interface LimiterPort {
  claim(conn: string, clientId: string, mode: ConnectionMode, max: number): Promise<ClaimResult>;
  release(conn: string, clientId: string): Promise<void>;
}

/** The account's keep-alive clock (`clock.ts`). */
export interface ClockPort {
  /**
   * Asks to be checked at `deadline`; false when the clock is full (the connection keeps its exact alarm).
   * `meta` (`encodeConnMeta`): kept in the clock's row for the clean-up after a restart, when the
   * connection stores none of its own.
   */
  watch(conn: string, deadline: number, meta?: string): Promise<boolean>;
  /** Stops watching `conn`. */
  unwatch(conn: string): Promise<void>;
  /** Stops watching `conn` and hands over the meta its row kept, if any (a takeover of a connection a restart took). */
  claim(conn: string): Promise<string | null>;
}

/** The other objects a connection talks to, and the credential check. */
export interface Services {
  router(account: string): RouterPort;
  clock(account: string): ClockPort;
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
  /** The batcher's run while a router call for publishes is in flight (null when idle). */
  flushing: Promise<void> | null;
  /** Set once the connection started to close: the hand-over it produces. */
  closing: Promise<Handover> | null;
  /** An admin close without the will. */
  willSuppressed: boolean;
  /** Messages this connection could not encode for its client (dropped, counted). */
  undeliverable: number;
  /** Retained deliveries on subscribe with pages still to read from the router. */
  readonly retained: PendingRetained;
}

export function createConnState(storage: DurableObjectStorage, config: Config): ConnState {
  return {
    att: null,
    meta: null,
    partial: new PartialPacket(storage),
    outbox: new Outbox(storage, config.limits.maxInflight, config.limits.maxOutboxMessages, config.limits.outboxHoldMs, config.limits.maxQueuedBytes, (err) =>
      log("warn", "mqtt.outbox_spill_failed", { error: errorMessage(err) }),
    ),
    inboundQos2: new InboundQos2(storage),
    inboundPending: 0,
    aliases: new TopicAliases(storage),
    early: [],
    publishQueue: [],
    routing: false,
    routingCall: null,
    flushing: null,
    closing: null,
    willSuppressed: false,
    undeliverable: 0,
    retained: new PendingRetained(storage),
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
  /**
   * At CONNECT: keeps the meta where the connection's end will find it. With the shared
   * keep-alive clock and a meta that fits, in the attachment and the clock's row, so the
   * connection writes nothing; otherwise in storage, with the alarm armed for the connect timeout.
   */
  holdMeta(meta: ConnMeta): Promise<void>;
  /**
   * The meta the account's clock kept for this connection (`holdMeta`), which it then forgets:
   * for a takeover of a connection whose socket a restart took. Null when it kept none for
   * `clientId`.
   */
  claimKeptMeta(account: string, clientId: string): Promise<ConnMeta | null>;
  /** Writes a changed meta back where it is kept. */
  saveMeta(meta: ConnMeta): Promise<void>;
  /** Removes the stored meta: a connection refused after it was stored ends without detaching. */
  forgetMeta(): Promise<void>;
  /** The browser credentials kept from the upgrade request, removed once read. */
  takeBrowserCredentials(): Promise<BrowserCredentials | null>;
  /** Arms the one alarm for the next keep-alive, liveness or token-expiry check. */
  scheduleAlarm(att: Attachment): Promise<void>;
  /** After CONNACK: arms the alarm only if the connect-timeout alarm armed at CONNECT (if any) would run too late to be the first check. */
  scheduleFirstCheck(att: Attachment): Promise<void>;
  /** Drops everything this object stored (the connection has ended). */
  clearStorage(): Promise<void>;
  /** A session hand-back that failed and waits for its next try, if any. */
  pendingDetach(): Promise<PendingDetach | null>;
  /** Keeps `pending` (replacing the rest of storage but it) and arms the alarm to try again in `retryMs`. */
  keepPendingDetach(pending: PendingDetach, retryMs: number): Promise<void>;
}
