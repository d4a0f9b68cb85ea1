/**
 * The contract between sessions and routers: a message travelling through the broker.
 * Kept small and flat because it crosses Durable Object RPC boundaries in batches.
 */
import { isRecord } from "../guards";
import type { Acl } from "../topics/acl";

export type QoS = 0 | 1 | 2;

export interface Message {
  topic: string;
  payload: Uint8Array;
  qos: QoS;
  retain: boolean;
  /** Set on a QoS 1/2 message that was sent before and is being redelivered [MQTT-3.3.1-1]. */
  dup?: boolean;
  /** Hand-over between connections of one session: the packet id the client knows it by. */
  pid?: number;
  /** Hand-over: a QoS 2 message whose PUBREC arrived (PUBREL is what to resend). */
  released?: boolean;
  /** Delivered through this shared group (router key): redistributed if the member leaves unfinished. */
  share?: string;
  /** MQTT 5 properties forwarded unchanged to subscribers (dropped toward 3.1.1 clients). */
  props?: ForwardedProps;
  /** MQTT 5 message expiry: ms since epoch after which the message is not delivered. */
  expiresAt?: number;
  /** Publisher's client id: for the no-local subscription option. Not forwarded. */
  from?: string;
  /** MQTT 5 subscription identifiers of the matching subscriptions (on deliveries). */
  subIds?: number[];
}

/** The MQTT 5 PUBLISH properties a broker forwards as they came [MQTT-3.3.2-...]. */
export interface ForwardedProps {
  payloadFormatIndicator?: boolean;
  contentType?: string;
  responseTopic?: string;
  correlationData?: Uint8Array;
  /** Name/value pairs in order; a name may repeat [MQTT-3.3.2-18]. */
  userProperties?: Array<{ key: string; value: string }>;
}

/** Session state one connection passes to the next (takeover, reconnect). */
export interface Handover {
  /** Unfinished outbound QoS 1/2 messages, in order, with their packet ids. */
  messages: Message[];
  /** Inbound QoS 2 packet ids received but not yet released by PUBREL. */
  inboundQos2: number[];
}

/** A takeover's answer: the first page of the hand-over; `more` when `nextHandoverPage` has the rest. */
export interface TakenOver extends Handover {
  more: boolean;
}

/** A subscription request as the router stores it, with the MQTT 5 subscription options. */
export interface SubscriptionRequest {
  filter: string;
  qos: QoS;
  /** No local: not delivered the subscriber's own publishes. */
  nl?: boolean;
  /** Retain as published: deliveries keep the publisher's retain flag. */
  rap?: boolean;
  /** Retain handling: 0 send retained on subscribe, 1 only for a new subscription, 2 never. */
  rh?: 0 | 1 | 2;
  /** Subscription identifier (1..268435455). */
  id?: number;
}

/**
 * What the router did with one published message: `matched` (some subscription took it),
 * `unmatched` (MQTT 5 PUBACK 0x10), `quota` (a retained message past the account's retained
 * quota: neither stored nor delivered; MQTT 5 PUBACK 0x97).
 */
export type Routed = "matched" | "unmatched" | "quota";

/**
 * Where a retained delivery on subscribe goes on: the filters still to read (the first one
 * is being read), and the topic the last page ended at. The router keeps nothing of it.
 */
export interface RetainedCursor {
  subs: Array<{ filter: string; qos: QoS; id?: number }>;
  after: string | null;
  /** Messages per page at most (the subscriber's outbox room), besides PAGE_BYTES. */
  limit: number;
  /** With ROUTER_SHARDS > 1: which of the first filter's shards is being read (src/router/shards.ts). */
  shard?: number;
}

/** A page of retained messages for a new subscription, and the cursor to the next (null: done). */
export interface RetainedPageResult {
  messages: Message[];
  more: RetainedCursor | null;
}

/** The router's answer to `subscribe`: per request whether it was taken, and the first page of retained messages. */
export interface Subscribed {
  granted: boolean[];
  retained: Message[];
  more: RetainedCursor | null;
}

/** Options of the router's `attach`: how a connection takes over a session's deliveries. */
export interface RouterAttach {
  /** The session begins with no subscriptions. */
  cleanStart: boolean;
  /** The session outlives the connection: deliveries go to its session object while offline. */
  persistent: boolean;
  /**
   * The monitoring Connect event. Published after the attach, in the same call; when it is
   * retained, it is kept in the target's row as its presence (no retained row of its own)
   * and stays the topic's retained message while this connection is the target.
   */
  presence?: Message;
  /** Published after the presence, in the same call (a monitoring limit event). */
  announce?: Message[];
  /** The connecting identity's ACL: a resumed session keeps only the subscriptions it still covers. */
  acl?: Acl;
  /** false: the account's connect rate is counted by another shard (shard 0), not here. */
  rated?: boolean;
}

/** The router's answer to `attach`: `rate` when the account connects too often (CONNACK 3 / 0x9F). */
export type RouterAttached = { ok: true } | { ok: false; reason: "rate" };

/** Options of the router's `detach`: what a leaving connection leaves behind. */
export interface RouterDetach {
  persistent: boolean;
  /** Published first, in the same call (the will, the monitoring Disconnect event). */
  announce?: Message[];
  /** Shared-subscription messages the connection never finished: back to their groups. */
  orphans?: Message[];
  /** False on shards > 0: the account's disconnects are counted by shard 0 (as `RouterAttach.rated`). */
  rated?: boolean;
}

/** What a message weighs in queues and pages: its payload and topic (properties are small and bounded by the packet limit). */
export function messageBytes(m: Pick<Message, "topic" | "payload">): number {
  return m.payload.byteLength + m.topic.length;
}

/**
 * Splits messages into pages of at most `maxBytes` each (a message larger than that is a
 * page of its own), in order: nothing that grows with stored data travels in one RPC.
 */
export function pagesOf(messages: Message[], maxBytes: number): Message[][] {
  const pages: Message[][] = [];
  let page: Message[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = messageBytes(m);
    if (page.length > 0 && bytes + size > maxBytes) {
      pages.push(page);
      page = [];
      bytes = 0;
    }
    page.push(m);
    bytes += size;
  }
  if (page.length > 0) pages.push(page);
  return pages;
}

/** Bytes per page of a hand-over or a retained delivery (well under the RPC message limit). */
export const PAGE_BYTES = 512 * 1024;

/** Result of handing a batch to a connection object. */
export type DeliverResult = "ok" | "gone";

export function isQoS(v: unknown): v is QoS {
  return v === 0 || v === 1 || v === 2;
}

/** Guard for a Message read back from storage or RPC. */
export function isMessage(v: unknown): v is Message {
  if (!isRecord(v)) return false;
  const m = v;
  return typeof m.topic === "string" && m.payload instanceof Uint8Array && isQoS(m.qos) && typeof m.retain === "boolean";
}
