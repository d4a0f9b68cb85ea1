/**
 * Connection events published per account on `$SYS/mon/<clientId>` (IBM Watson IoT
 * monitoring format, seed 004). Pure: builds the messages the session side publishes.
 */
import type { Message } from "../router/messages";

export type MonitorAction = "Connect" | "FailedConnect" | "Disconnect" | "LimitExceeded";

/** What the connection knows about itself when it reports. */
export interface ConnectionFacts {
  clientId: string;
  user: string;
  addr: string;
  /** `mqtt3`, `mqtt4`, `mqtt5`, with `-ws` when over WebSocket (not through the TCP bridge). */
  protocol: string;
  connectedAt: number | null;
}

export interface TrafficCounters {
  readBytes: number;
  readMsg: number;
  writeBytes: number;
  writeMsg: number;
}

export const MONITOR_PREFIX = "$SYS/mon/";

export function monitorTopic(clientId: string): string {
  return `${MONITOR_PREFIX}${clientId}`;
}

export function protocolName(version: number, transport: "ws" | "tcp"): string {
  return `mqtt${version}${transport === "ws" ? "-ws" : ""}`;
}

const encoder = new TextEncoder();

function event(action: MonitorAction, facts: ConnectionFacts, now: number, closeCode: number, reason: string, extra: object, retain: boolean): Message {
  const body = {
    Action: action,
    Time: new Date(now).toISOString(),
    ClientAddr: facts.addr,
    ClientID: facts.clientId,
    Protocol: facts.protocol,
    User: facts.user,
    ConnectTime: facts.connectedAt === null ? null : new Date(facts.connectedAt).toISOString(),
    CloseCode: closeCode,
    Reason: reason,
    ...extra,
  };
  // Server-assigned client ids are never reused: retaining their events would only pile up.
  const keep = retain && !facts.clientId.startsWith("auto-");
  return { topic: monitorTopic(facts.clientId), payload: encoder.encode(JSON.stringify(body)), qos: 0, retain: keep };
}

export function connectEvent(facts: ConnectionFacts, now: number): Message {
  return event("Connect", facts, now, 0, "", {}, true);
}

export function failedConnectEvent(facts: ConnectionFacts, now: number, closeCode: number, reason: string): Message {
  return event("FailedConnect", facts, now, closeCode, reason, {}, false);
}

/**
 * `retainFor` (seconds): a Disconnect event of a client id the client chose freely (multi
 * mode, anonymous) expires, so a stream of fresh client ids does not pile up retained events.
 */
export function disconnectEvent(facts: ConnectionFacts, now: number, closeCode: number, reason: string, traffic: TrafficCounters, retainFor?: number): Message {
  const m = event("Disconnect", facts, now, closeCode, reason, {
    ReadBytes: traffic.readBytes,
    ReadMsg: traffic.readMsg,
    WriteBytes: traffic.writeBytes,
    WriteMsg: traffic.writeMsg,
  }, true);
  if (retainFor !== undefined && m.retain) m.expiresAt = now + retainFor * 1000;
  return m;
}

/**
 * A limit that answers without closing the connection (SUBACK refusal, keep alive clamped,
 * offline queue full, session expired): `Limit` names its var, `Reason` says what happened.
 * Not retained. Our addition to the IBM event set, so that every limit is visible.
 */
export function limitEvent(facts: ConnectionFacts, now: number, limit: string, reason: string): Message {
  return event("LimitExceeded", facts, now, 0, reason, { Limit: limit }, false);
}
