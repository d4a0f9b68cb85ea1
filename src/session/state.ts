/**
 * The connection object's persisted shapes: the socket attachment (small, survives
 * hibernation with the socket) and storage records (survive everything), each read back
 * through a guard.
 */
import type { ProtocolVersion } from "../protocol/codec";
import type { Message } from "../router/messages";

/** Partial packets up to this size ride in the attachment; larger ones go to storage. */
export const ATTACHMENT_RX_MAX = 1024;
/** A socket that sends no CONNECT within this time is closed. */
export const CONNECT_TIMEOUT_MS = 30_000;
/** Even without a keep alive, the alarm checks this often that the socket still exists. */
export const LIVENESS_CHECK_MS = 5 * 60_000;

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
  /** Last time a packet arrived, to about a second (updated at most once a second). */
  lastSeen: number;
  addr: string;
  rx: Uint8Array | null;
  rxStored: boolean;
}

/** Identity and will of the connection, in storage from CONNECT until the connection ends. */
export interface ConnMeta {
  account: string;
  clientId: string;
  clean: boolean;
  will: Message | null;
  protocolVersion: ProtocolVersion;
}

/** A QoS 1 message for the client: pid 0 = waiting for room in the in-flight window. */
export interface OutRecord {
  seq: number;
  pid: number;
  message: Message;
}

export const OUT_PREFIX = "o:";
export const outKey = (seq: number): string => `${OUT_PREFIX}${seq.toString().padStart(16, "0")}`;

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null;
const isVersion = (v: unknown): v is ProtocolVersion => v === 3 || v === 4 || v === 5;

export function isMessage(v: unknown): v is Message {
  return isObj(v) && typeof v.topic === "string" && v.payload instanceof Uint8Array &&
    (v.qos === 0 || v.qos === 1 || v.qos === 2) && typeof v.retain === "boolean";
}

export function readAttachment(v: unknown): Attachment | null {
  if (!isObj(v) || v.v !== 1) return null;
  if (v.phase !== "connecting" && v.phase !== "connected" && v.phase !== "closing") return null;
  if (typeof v.account !== "string" || typeof v.clientId !== "string" || typeof v.clean !== "boolean") return null;
  if (typeof v.keepAlive !== "number" || !isVersion(v.protocolVersion)) return null;
  if (typeof v.openedAt !== "number" || typeof v.lastSeen !== "number" || typeof v.addr !== "string") return null;
  if (!(v.rx === null || v.rx instanceof Uint8Array) || typeof v.rxStored !== "boolean") return null;
  return {
    v: 1, phase: v.phase, account: v.account, clientId: v.clientId, clean: v.clean, keepAlive: v.keepAlive,
    protocolVersion: v.protocolVersion, openedAt: v.openedAt, lastSeen: v.lastSeen, addr: v.addr, rx: v.rx, rxStored: v.rxStored,
  };
}

export async function readConnMeta(storage: DurableObjectStorage): Promise<ConnMeta | null> {
  const v = await storage.get("meta");
  if (!isObj(v) || typeof v.account !== "string" || typeof v.clientId !== "string" || typeof v.clean !== "boolean") return null;
  if (!isVersion(v.protocolVersion)) return null;
  const will = isMessage(v.will) ? v.will : null;
  return { account: v.account, clientId: v.clientId, clean: v.clean, will, protocolVersion: v.protocolVersion };
}

export function readOutRecord(v: unknown): OutRecord | null {
  if (!isObj(v) || typeof v.seq !== "number" || typeof v.pid !== "number" || !isMessage(v.message)) return null;
  return { seq: v.seq, pid: v.pid, message: v.message };
}
