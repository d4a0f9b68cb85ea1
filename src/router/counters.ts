/**
 * The topic router's traffic counters (GET /admin/v1/accounts/<id>/stats, GET /admin/v1/metrics).
 * Pure: the router bumps them in memory as batches pass and persists a snapshot at most once
 * a second (`due`), as one row, so they cost no request and at most one storage row per second of traffic.
 */
import { isRecord } from "../guards";

/** Why a copy of a message for a subscriber went nowhere. */
export const DROP_REASONS = [
  /** QoS 0 for a session that is offline (QoS 0 is never queued). */
  "qos0Offline",
  /** For a clean session whose connection was gone or failed: it has no queue. */
  "cleanSessionGone",
  /** The session object could not be reached to queue a QoS 1/2 copy. */
  "enqueueFailed",
  /** An offline session's queue was full: its oldest messages went (MAX_QUEUED_MESSAGES / MAX_QUEUED_BYTES). */
  "queueFull",
  /** A shared group with no member online and none persistent. */
  "sharedNoMember",
  /** A shared group's queue was full: its oldest message went. */
  "sharedQueueFull",
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export interface CounterValues {
  /** Messages published into the router (MQTT, HTTP, wills, monitoring events). */
  messagesIn: number;
  /** Of those, the messages no subscription matched. */
  unmatched: number;
  /** Copies handed to live connections, retained messages sent on subscribe included. */
  messagesOut: number;
  /** Copies handed to live connections by routing (a subset of `messagesOut`). */
  deliveredOnline: number;
  /** Copies handed to offline sessions' queues. */
  deliveredQueued: number;
  /** Retained messages sent to new subscriptions. */
  retainedSent: number;
  /** Publish batches routed (each one RPC from a publisher). */
  batches: number;
  connects: number;
  disconnects: number;
  drops: Record<DropReason, number>;
  /** When counting began (ms): the router's first batch after its storage was empty. */
  since: number;
}

/** The `router_state` row (schema.ts) that holds the snapshot, as JSON. */
export const COUNTERS_KEY = "counters";

/** The stored snapshot's JSON, parsed (null when it does not parse: the counters start again). */
export function parseSnapshot(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** The snapshot's rows before `router_state`: `counter.<field>` and `counter.drops.<reason>` in `router_meta`, read once. */
export const COUNTER_ROW_PREFIX = "counter.";

/** Old `router_meta` counter rows read back into the shape `readCounters` takes. */
export function rowsToCounters(rows: Iterable<{ key: string; value: unknown }>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const drops: Record<string, unknown> = {};
  for (const { key, value } of rows) {
    if (!key.startsWith(COUNTER_ROW_PREFIX)) continue;
    const name = key.slice(COUNTER_ROW_PREFIX.length);
    if (name.startsWith("drops.")) drops[name.slice("drops.".length)] = value;
    else out[name] = value;
  }
  return { ...out, drops };
}

/** How often, at most, the snapshot is written to storage (ms). */
export const PERSIST_INTERVAL_MS = 1000;

export function emptyCounters(now: number): CounterValues {
  const drops = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
  return {
    messagesIn: 0, unmatched: 0, messagesOut: 0, deliveredOnline: 0, deliveredQueued: 0, retainedSent: 0,
    batches: 0, connects: 0, disconnects: 0, drops, since: now,
  };
}

const NUMBER_FIELDS = ["messagesIn", "unmatched", "messagesOut", "deliveredOnline", "deliveredQueued", "retainedSent", "batches", "connects", "disconnects", "since"] as const;

/** A stored snapshot read back; fields it lacks (written by an older version) start at 0. */
export function readCounters(v: unknown, now: number): CounterValues {
  const out = emptyCounters(now);
  if (!isRecord(v)) return out;
  for (const field of NUMBER_FIELDS) {
    const n = v[field];
    if (typeof n === "number" && Number.isFinite(n)) out[field] = n;
  }
  const drops = v.drops;
  if (isRecord(drops)) {
    for (const reason of DROP_REASONS) {
      const n = drops[reason];
      if (typeof n === "number" && Number.isFinite(n)) out.drops[reason] = n;
    }
  }
  return out;
}

/** The live counters of one router, with the bookkeeping of when they were last persisted. */
export class RouterCounters {
  values: CounterValues;
  private persistedAt = 0;
  private dirty = false;

  constructor(now: number) {
    this.values = emptyCounters(now);
  }

  load(v: unknown, now: number): void {
    this.values = readCounters(v, now);
  }

  add(field: Exclude<keyof CounterValues, "drops" | "since">, n: number): void {
    if (n === 0) return;
    this.values[field] += n;
    this.dirty = true;
  }

  drop(reason: DropReason, n: number): void {
    if (n === 0) return;
    this.values.drops[reason] += n;
    this.dirty = true;
  }

  /** Whether a snapshot should be written now; marks it written when so. */
  due(now: number): boolean {
    if (!this.dirty || now - this.persistedAt < PERSIST_INTERVAL_MS) return false;
    this.persistedAt = now;
    this.dirty = false;
    return true;
  }

  snapshot(): CounterValues {
    return { ...this.values, drops: { ...this.values.drops } };
  }
}
