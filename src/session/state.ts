/**
 * The connection object's persisted shapes: the socket attachment (small, survives
 * hibernation with the socket) and storage records (survive everything), each read back
 * through a guard.
 */
import type { ProtocolVersion } from "../protocol/codec";
import { isMessage, type Message } from "../router/messages";
import type { Identity } from "../auth/identity";
import { protocolName, type ConnectionFacts, type TrafficCounters } from "../monitoring/events";
import type { Bucket } from "../limits/rate";
import { META_KEY } from "./keys";
import { isRecord, isStringArray } from "../guards";
import { base64, fromBase64 } from "../encoding";

/** Partial packets up to this size ride in the attachment; larger ones go to storage. */
export const ATTACHMENT_RX_MAX = 1024;

/**
 * A connection's meta up to this many characters encoded (`encodeConnMeta`) may ride in the
 * attachment instead of storage (`SocketLink.holdMeta`). The runtime bounds an attachment at
 * 16 KiB; a string may take two bytes a character there, so even then the meta, a partial packet
 * (`ATTACHMENT_RX_MAX`) and the rest of the attachment stay within it.
 */
export const ATTACHMENT_META_MAX = 4 * 1024;

export interface Attachment {
  v: 1;
  phase: "connecting" | "connected" | "closing";
  account: string;
  clientId: string;
  clean: boolean;
  /** Keep alive in seconds after clamping; 0 = off. */
  keepAlive: number;
  protocolVersion: ProtocolVersion;
  openedAt: number;
  /** When the credentials expire (JWT exp, ms), or null. */
  expiresAt: number | null;
  /** Last time a packet arrived (the keep-alive clock: packets never move the alarm). */
  lastSeen: number;
  /** The outbox's admission mark (`Outbox.trackAdmitted`): stored queued records up to this seq were sent. */
  outAdmitted?: number;
  /** Browser credentials from the upgrade's cookies wait in storage (`BROWSER_KEY`) for the CONNECT. */
  browser?: true;
  /** When the object's one alarm is armed for, as this object last set it (absent in attachments written before it existed). */
  alarmAt?: number;
  /** The account's keep-alive clock watches this connection's deadline: the alarm runs only for a token's expiry (KEEPALIVE_CLOCK = "shared"). */
  clocked?: true;
  /**
   * The connection's meta, when it rides here instead of storage: the clock watches the connection
   * and keeps a copy for the clean-up after a restart (`SocketLink.holdMeta`). Such a connection
   * writes nothing to storage.
   */
  meta?: ConnMeta;
  addr: string;
  /** "tcp" when the client came through the trusted TCP bridge. */
  transport: "ws" | "tcp";
  rx: Uint8Array | null;
  rxStored: boolean;
  /** Monitoring counters (Disconnect event): bytes and MQTT packets each way. */
  traffic: TrafficCounters;
  /** Publish rate limiter. */
  bucket: Bucket;
  /** Packet rate limiter (every packet the client starts). Absent in attachments written before it existed. */
  packets?: Bucket;
  /** MQTT 5: the client's Maximum Packet Size (0 = none). */
  maxPacketOut: number;
  /** MQTT 5: the in-flight window toward the client (its Receive Maximum, capped by ours). */
  receiveMax: number;
  /** MQTT 5: whether the client wants reason strings (Request Problem Information). */
  problemInfo: boolean;
}

/** Identity and will of the connection, in storage from CONNECT until the connection ends. */
export interface ConnMeta {
  account: string;
  clientId: string;
  /** Clean start (3.1.1: clean session): the session began empty. */
  cleanStart: boolean;
  /** How long the session outlives this connection (0 = it ends with it); DISCONNECT may change it. */
  expirySeconds: number;
  /** MQTT 5 will delay interval (seconds). */
  willDelaySeconds: number;
  will: Message | null;
  protocolVersion: ProtocolVersion;
  identity: Identity;
  addr: string;
  transport: "ws" | "tcp";
  connectedAt: number;
}

const isVersion = (v: unknown): v is ProtocolVersion => v === 3 || v === 4 || v === 5;

export function readAttachment(v: unknown): Attachment | null {
  if (!isRecord(v) || v.v !== 1) return null;
  if (v.phase !== "connecting" && v.phase !== "connected" && v.phase !== "closing") return null;
  if (typeof v.account !== "string" || typeof v.clientId !== "string" || typeof v.clean !== "boolean") return null;
  if (typeof v.keepAlive !== "number" || !isVersion(v.protocolVersion)) return null;
  if (typeof v.openedAt !== "number" || typeof v.lastSeen !== "number" || typeof v.addr !== "string") return null;
  if (!(v.rx === null || v.rx instanceof Uint8Array) || typeof v.rxStored !== "boolean") return null;
  if (!(v.expiresAt === null || typeof v.expiresAt === "number")) return null;
  if (v.transport !== "ws" && v.transport !== "tcp") return null;
  const b = v.bucket;
  if (!isRecord(b) || typeof b.tokens !== "number" || typeof b.at !== "number") return null;
  const t = v.traffic;
  if (!isRecord(t) || typeof t.readBytes !== "number" || typeof t.readMsg !== "number" || typeof t.writeBytes !== "number" || typeof t.writeMsg !== "number") return null;
  if (typeof v.maxPacketOut !== "number" || typeof v.receiveMax !== "number" || typeof v.problemInfo !== "boolean") return null;
  return {
    maxPacketOut: v.maxPacketOut, receiveMax: v.receiveMax, problemInfo: v.problemInfo,
    v: 1, phase: v.phase, account: v.account, clientId: v.clientId, clean: v.clean, keepAlive: v.keepAlive,
    protocolVersion: v.protocolVersion, openedAt: v.openedAt, lastSeen: v.lastSeen, addr: v.addr, rx: v.rx, rxStored: v.rxStored,
    expiresAt: v.expiresAt, transport: v.transport,
    traffic: { readBytes: t.readBytes, readMsg: t.readMsg, writeBytes: t.writeBytes, writeMsg: t.writeMsg },
    bucket: { tokens: b.tokens, at: b.at },
    ...(typeof v.alarmAt === "number" ? { alarmAt: v.alarmAt } : {}),
    ...(typeof v.outAdmitted === "number" ? { outAdmitted: v.outAdmitted } : {}),
    ...(v.browser === true ? { browser: true as const } : {}),
    ...(v.clocked === true ? { clocked: true as const } : {}),
    ...withMeta(v.meta),
    ...(isRecord(v.packets) && typeof v.packets.tokens === "number" && typeof v.packets.at === "number" ? { packets: { tokens: v.packets.tokens, at: v.packets.at } } : {}),
  };
}

function withMeta(v: unknown): { meta?: ConnMeta } {
  const meta = v === undefined ? null : parseConnMeta(v);
  return meta ? { meta } : {};
}

export async function readConnMeta(storage: DurableObjectStorage): Promise<ConnMeta | null> {
  return parseConnMeta(await storage.get(META_KEY));
}

/** A meta as stored (structured clone: storage, the attachment) or decoded, checked field by field. */
export function parseConnMeta(v: unknown): ConnMeta | null {
  if (!isRecord(v) || typeof v.account !== "string" || typeof v.clientId !== "string" || typeof v.cleanStart !== "boolean") return null;
  if (typeof v.expirySeconds !== "number" || typeof v.willDelaySeconds !== "number") return null;
  if (!isVersion(v.protocolVersion)) return null;
  const identity = readIdentity(v.identity);
  if (!identity) return null;
  if (typeof v.addr !== "string" || (v.transport !== "ws" && v.transport !== "tcp") || typeof v.connectedAt !== "number") return null;
  const will = isMessage(v.will) ? v.will : null;
  return {
    account: v.account, clientId: v.clientId, cleanStart: v.cleanStart, expirySeconds: v.expirySeconds, willDelaySeconds: v.willDelaySeconds,
    will, protocolVersion: v.protocolVersion, identity,
    addr: v.addr, transport: v.transport, connectedAt: v.connectedAt,
  };
}

/**
 * The meta as text, for the keep-alive clock's row (SQL): JSON with every byte array (the will's
 * payload, its correlation data) in base64. `decodeConnMeta` reads it back.
 */
export function encodeConnMeta(meta: ConnMeta): string {
  return JSON.stringify(meta, (_key, value: unknown) => (value instanceof Uint8Array ? { $bytes: base64(value) } : value));
}

export function decodeConnMeta(text: string): ConnMeta | null {
  try {
    return parseConnMeta(JSON.parse(text, (_key, value: unknown) => (isRecord(value) && typeof value.$bytes === "string" && Object.keys(value).length === 1 ? fromBase64(value.$bytes) : value)));
  } catch {
    return null;
  }
}


function readIdentity(v: unknown): Identity | null {
  if (!isRecord(v) || (v.kind !== "device" && v.kind !== "user" && v.kind !== "anonymous")) return null;
  if (typeof v.account !== "string" || typeof v.id !== "string") return null;
  if (!(v.expiresAt === null || typeof v.expiresAt === "number")) return null;
  const acl = v.acl;
  if (!isRecord(acl) || !isStringArray(acl.pub) || !isStringArray(acl.sub)) return null;
  return { kind: v.kind, account: v.account, id: v.id, acl: { pub: acl.pub, sub: acl.sub }, expiresAt: v.expiresAt };
}

/** Browser credentials from the upgrade request's cookies, kept until CONNECT. */
export function readBrowserCredentials(v: unknown): { token: string; csrf: string } | null {
  return isRecord(v) && typeof v.token === "string" && typeof v.csrf === "string" ? { token: v.token, csrf: v.csrf } : null;
}


/** A live connection as the admin API lists it (GET /admin/v1/accounts/<id>/clients). */
export interface ConnectionDescription {
  clientId: string;
  identity: { kind: Identity["kind"]; id: string };
  /** `mqtt3`, `mqtt4`, `mqtt5`, with `-ws` over WebSocket (as in the monitoring events). */
  protocol: string;
  address: string;
  /** ISO 8601. */
  connectedAt: string;
  keepAliveSeconds: number;
  cleanStart: boolean;
  traffic: TrafficCounters;
}

/** What the monitoring events say about this connection. */
export function connectionFacts(meta: ConnMeta): ConnectionFacts {
  return {
    clientId: meta.clientId,
    user: meta.identity.id,
    addr: meta.addr,
    protocol: protocolName(meta.protocolVersion, meta.transport),
    connectedAt: meta.connectedAt,
  };
}
