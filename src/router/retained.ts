/**
 * The account's retained messages [MQTT-3.3.1-5]: one row per topic in the router's SQLite
 * `retained` table (schema.ts). Nothing is kept in memory but three counters: a wake reads
 * no retained row, and a SUBSCRIBE reads the rows under its filter's literal prefix, in pages
 * bounded in bytes and in rows scanned.
 *
 * Bounds: the account's quota (MAX_RETAINED_MESSAGES, MAX_RETAINED_BYTES) for what clients
 * retain; the retained `$SYS/mon` events have their own cap (MAX_MONITOR_RETAINED, oldest
 * first out) and do not count against the quota.
 */
import { MONITOR_PREFIX } from "../monitoring/events";
import { topicMatches } from "../topics/topic";
import { messageBytes, type Message, type QoS } from "./messages";
import { blob, decodeProps, encodeProps, qosOf, readCounters, writeCounters, type RetainedCounters } from "./schema";

export interface RetainedLimits {
  maxMessages: number;
  maxBytes: number;
  maxMonitor: number;
}

/** `quota`: refused, the account's retained quota is full (MQTT 5 PUBACK 0x97). */
export type RetainOutcome = "stored" | "deleted" | "quota";

/** Where a retained read stopped: the next page starts after `after` (a topic). */
export interface RetainedPosition {
  after: string;
}

/** One page of a retained read: the matching rows, and where to go on (null: done). */
export interface RetainedPage {
  messages: Message[];
  next: RetainedPosition | null;
}

/** Rows scanned per page at most (a filter that matches little must not scan everything in one call). */
const SCAN_ROWS = 2000;
/** Rows per query. */
const CHUNK = 200;

interface Row extends Record<string, SqlStorageValue> {
  topic: string;
  payload: ArrayBuffer;
  qos: number;
  props: string | null;
  expires_at: number | null;
  bytes: number;
  monitor: number;
}

export class RetainedStore {
  private counters: RetainedCounters;
  private lastSeq = 0;

  constructor(
    private readonly sql: SqlStorage,
    private readonly limits: () => RetainedLimits,
  ) {
    this.counters = readCounters(sql);
  }

  /** Retained messages stored (quota-counted and monitoring events). */
  get size(): number {
    return this.counters.count + this.counters.monitors;
  }

  /** The account's quota use: retained messages and bytes, monitoring events excluded. */
  get usage(): { count: number; bytes: number } {
    return { count: this.counters.count, bytes: this.counters.bytes };
  }

  /**
   * [MQTT-3.3.1-10]/[MQTT-3.3.1-11]: an empty retained payload deletes; otherwise the message
   * replaces the topic's, unless that would take the account past its quota (a replacement
   * that does not grow is always taken).
   */
  store(message: Message, now: number): RetainOutcome {
    const { topic } = message;
    const monitor = topic.startsWith(MONITOR_PREFIX);
    const prev = this.sql.exec<{ bytes: number }>("SELECT bytes FROM retained WHERE topic = ?", topic).toArray()[0];
    if (message.payload.byteLength === 0) {
      if (prev) {
        this.sql.exec("DELETE FROM retained WHERE topic = ?", topic);
        this.count(monitor, -1, -prev.bytes);
        this.save();
      }
      return "deleted";
    }
    const size = messageBytes(message);
    if (!monitor) {
      const limits = this.limits();
      const count = this.counters.count + (prev ? 0 : 1);
      const bytes = this.counters.bytes - (prev?.bytes ?? 0) + size;
      const grows = !prev || size > prev.bytes;
      if (grows && (count > limits.maxMessages || bytes > limits.maxBytes)) return "quota";
    }
    this.lastSeq = Math.max(now, this.lastSeq + 1);
    this.sql.exec(
      "INSERT OR REPLACE INTO retained (topic, payload, qos, props, expires_at, bytes, monitor, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      topic, message.payload, message.qos, message.props ? encodeProps(message.props) : null, message.expiresAt ?? null, size, monitor ? 1 : 0, this.lastSeq,
    );
    if (prev) {
      if (size !== prev.bytes && !monitor) {
        this.counters.bytes += size - prev.bytes;
        this.save();
      }
    } else {
      this.count(monitor, 1, size);
      if (monitor) this.boundMonitorEvents();
      this.save();
    }
    return "stored";
  }

  /**
   * One page of the unexpired retained messages `filter` matches, in topic order, starting
   * after `from` (null: the beginning): at most `maxBytes` of messages (a larger message is a
   * page of its own), `maxMessages` messages, and SCAN_ROWS rows looked at. The retain flag is set [MQTT-3.3.1-8] and
   * the QoS downgraded to the granted one. Expired messages met on the way are deleted.
   */
  page(filter: string, from: RetainedPosition | null, opts: { qos: QoS; subId?: number; maxBytes: number; maxMessages: number; now: number }): RetainedPage {
    const range = prefixRange(filter);
    const messages: Message[] = [];
    let bytes = 0;
    let scanned = 0;
    let after = from?.after ?? "";
    const expired: Row[] = [];
    try {
      if (range.exact !== undefined) {
        if (from) return { messages, next: null };
        const row = this.sql.exec<Row>("SELECT * FROM retained WHERE topic = ?", range.exact).toArray()[0];
        if (row) {
          if (isExpired(row, opts.now)) expired.push(row);
          else messages.push(toMessage(row, opts.qos, opts.subId));
        }
        return { messages, next: null };
      }
      for (;;) {
        // One lower bound, so the index seeks straight to it (two would scan from the smaller).
        const rows =
          range.hi === undefined
            ? this.sql.exec<Row>("SELECT * FROM retained WHERE topic > ? ORDER BY topic LIMIT ?", after, CHUNK).toArray()
            : after >= range.lo
              ? this.sql.exec<Row>("SELECT * FROM retained WHERE topic > ? AND topic < ? ORDER BY topic LIMIT ?", after, range.hi, CHUNK).toArray()
              : this.sql.exec<Row>("SELECT * FROM retained WHERE topic >= ? AND topic < ? ORDER BY topic LIMIT ?", range.lo, range.hi, CHUNK).toArray();
        for (const row of rows) {
          after = row.topic;
          scanned++;
          if (!topicMatches(filter, row.topic)) continue;
          if (isExpired(row, opts.now)) {
            expired.push(row);
            continue;
          }
          const m = toMessage(row, opts.qos, opts.subId);
          messages.push(m);
          bytes += messageBytes(m);
          if (bytes >= opts.maxBytes || messages.length >= opts.maxMessages) return { messages, next: { after } };
        }
        if (rows.length < CHUNK) return { messages, next: null };
        if (scanned >= SCAN_ROWS) return { messages, next: { after } };
      }
    } finally {
      this.purge(expired);
    }
  }

  /** Deletes the retained messages whose MQTT 5 expiry has passed; the earliest expiry left, if any. */
  purgeExpired(now: number): number | null {
    const rows = this.sql.exec<Row>("SELECT topic, bytes, monitor FROM retained WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1000", now).toArray();
    this.purge(rows);
    const next = this.sql.exec<{ at: number | null }>("SELECT min(expires_at) AS at FROM retained WHERE expires_at IS NOT NULL").one().at;
    return next;
  }

  private purge(rows: Array<Pick<Row, "topic" | "bytes" | "monitor">>): void {
    if (rows.length === 0) return;
    for (const row of rows) {
      this.sql.exec("DELETE FROM retained WHERE topic = ?", row.topic);
      this.count(row.monitor === 1, -1, -row.bytes);
    }
    this.save();
  }

  private count(monitor: boolean, n: number, bytes: number): void {
    if (monitor) this.counters.monitors += n;
    else {
      this.counters.count += n;
      this.counters.bytes += bytes;
    }
  }

  private save(): void {
    writeCounters(this.sql, this.counters);
  }

  /**
   * Retained monitoring events are one per client id; client ids are the clients' choice, so
   * the account keeps at most MAX_MONITOR_RETAINED of them: past it the oldest goes.
   */
  private boundMonitorEvents(): void {
    const over = this.counters.monitors - this.limits().maxMonitor;
    if (over <= 0) return;
    const rows = this.sql.exec<Row>("SELECT topic, bytes, monitor FROM retained WHERE monitor = 1 ORDER BY seq LIMIT ?", over).toArray();
    for (const row of rows) this.sql.exec("DELETE FROM retained WHERE topic = ?", row.topic);
    this.counters.monitors -= rows.length;
  }
}

function isExpired(row: Row, now: number): boolean {
  return row.expires_at !== null && row.expires_at <= now;
}

function toMessage(row: Row, granted: QoS, subId: number | undefined): Message {
  const qos = qosOf(row.qos);
  const m: Message = { topic: row.topic, payload: blob(row.payload), qos: qos < granted ? qos : granted, retain: true };
  const props = decodeProps(row.props);
  if (props) m.props = props;
  if (row.expires_at !== null) m.expiresAt = row.expires_at;
  if (subId !== undefined) m.subIds = [subId];
  return m;
}

/**
 * The topic range a filter can match, from its literal levels before the first wildcard:
 * `a/b/+/c` and `a/b/#` read topics in [`a/b`, `a/b0`) (`0` follows `/` in byte order, so the
 * range holds `a/b` and everything under `a/b/`); a filter without wildcards is one topic; one
 * that starts with a wildcard reads everything. Exported for the unit tests.
 */
export function prefixRange(filter: string): { exact?: string; lo: string; hi?: string } {
  const levels = filter.split("/");
  const first = levels.findIndex((l) => l === "+" || l === "#");
  if (first < 0) return { exact: filter, lo: filter };
  if (first === 0) return { lo: "" };
  const prefix = levels.slice(0, first).join("/");
  return { lo: prefix, hi: `${prefix}0` };
}
