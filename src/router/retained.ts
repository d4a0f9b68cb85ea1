/**
 * The account's retained messages [MQTT-3.3.1-5]: one row per topic in the router's SQLite
 * `retained` table (schema.ts). Nothing is kept in memory but three counters: a wake reads
 * no retained row, and a SUBSCRIBE reads the rows under its filter's literal prefix, in pages
 * bounded in bytes and in rows scanned.
 *
 * Bounds: the account's quota (MAX_RETAINED_MESSAGES, MAX_RETAINED_BYTES) for what clients
 * retain; the retained `$SYS/mon` events have their own cap (MAX_MONITOR_RETAINED, oldest
 * first out) and do not count against the quota.
 *
 * A live connection's Connect event is not a row here: it is its target's presence
 * (`tables.ts`), written with the target at the attach. Reads merge the two in topic order;
 * where both hold a topic, the newer (`seq`) is the retained message, so a Disconnect stored
 * after the Connect wins, and a Connect after an earlier Disconnect costs no write here.
 */
import { MONITOR_PREFIX } from "../monitoring/events";
import { topicMatches } from "../topics/topic";
import { messageBytes, type Message, type QoS } from "./messages";
import { blob, decodeProps, encodeProps, qosOf, readCounters, writeCounters, type RetainedCounters } from "./schema";
import type { PresenceQuery, PresenceRow } from "./tables";

/** Where the presences come from (the targets table), read in client id order. */
export type PresenceSource = (q: PresenceQuery) => PresenceRow[];

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

// A type, not an interface: `sql.exec` needs an indexable row shape.
type Row = {
  topic: string;
  payload: ArrayBuffer;
  qos: number;
  props: string | null;
  expires_at: number | null;
  bytes: number;
  monitor: number;
  seq: number;
};

/** A row as reads see it: stored, or made from a presence (never deleted here: it goes with its target). */
type ViewRow = Row | (Row & { presence: true });

const isPresence = (row: ViewRow): boolean => "presence" in row;

export class RetainedStore {
  private counters: RetainedCounters;
  /** The counters as last written (only what changed is written again). */
  private saved: RetainedCounters;
  private lastSeq = 0;

  constructor(
    private readonly sql: SqlStorage,
    private readonly limits: () => RetainedLimits,
    private readonly presences: PresenceSource = () => [],
  ) {
    this.counters = readCounters(sql);
    this.saved = { ...this.counters };
  }

  /** The next place in the retained order (a presence takes one as it is written). */
  nextSeq(now: number): number {
    this.lastSeq = Math.max(now, this.lastSeq + 1);
    return this.lastSeq;
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
    this.sql.exec(
      "INSERT OR REPLACE INTO retained (topic, payload, qos, props, expires_at, bytes, monitor, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      topic, message.payload, message.qos, message.props ? encodeProps(message.props) : null, message.expiresAt ?? null, size, monitor ? 1 : 0, this.nextSeq(now),
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
    const expired: ViewRow[] = [];
    try {
      if (range.exact !== undefined) {
        if (from) return { messages, next: null };
        const stored = this.sql.exec<Row>("SELECT * FROM retained WHERE topic = ?", range.exact).toArray()[0];
        const id = range.exact.startsWith(MONITOR_PREFIX) ? range.exact.slice(MONITOR_PREFIX.length) : undefined;
        const live = id === undefined ? undefined : this.presences({ exact: id, limit: 1 }).map(presenceRow)[0];
        const row = newer(stored, live);
        if (row) {
          if (isExpired(row, opts.now)) expired.push(row);
          else messages.push(toMessage(row, opts.qos, opts.subId));
        }
        return { messages, next: null };
      }
      for (;;) {
        const { rows, end } = this.chunk(filter, range, after);
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
        if (end) return { messages, next: null };
        if (scanned >= SCAN_ROWS) return { messages, next: { after } };
      }
    } finally {
      this.purge(expired);
    }
  }

  /**
   * The next rows after `after` in topic order within the filter's range: stored rows, and
   * presences when the range reaches `$SYS/mon/` (a filter starting with a wildcard never
   * matches a `$` topic [MQTT-4.7.2-1]). `end`: nothing follows. Where both hold a topic, the
   * newer is the row. Each source gives at most CHUNK rows; the merge stops at the first
   * source's last row when that source may have more.
   */
  private chunk(filter: string, range: { lo: string; hi?: string }, after: string): { rows: ViewRow[]; end: boolean } {
    // One lower bound, so the index seeks straight to it (two would scan from the smaller).
    const stored =
      range.hi === undefined
        ? this.sql.exec<Row>("SELECT * FROM retained WHERE topic > ? ORDER BY topic LIMIT ?", after, CHUNK).toArray()
        : after >= range.lo
          ? this.sql.exec<Row>("SELECT * FROM retained WHERE topic > ? AND topic < ? ORDER BY topic LIMIT ?", after, range.hi, CHUNK).toArray()
          : this.sql.exec<Row>("SELECT * FROM retained WHERE topic >= ? AND topic < ? ORDER BY topic LIMIT ?", range.lo, range.hi, CHUNK).toArray();
    const ids = filter.startsWith("$") ? monitorIds(range, after) : null;
    const live = ids ? this.presences({ ...ids, limit: CHUNK }).map(presenceRow) : [];
    if (live.length === 0) return { rows: stored, end: stored.length < CHUNK };
    const storedFull = stored.length === CHUNK;
    const liveFull = live.length === CHUNK;
    const lastOf = (rows: ViewRow[]): string => rows[rows.length - 1]?.topic ?? "";
    let bound: string | null = null;
    if (storedFull) bound = lastOf(stored);
    if (liveFull && (bound === null || lastOf(live) < bound)) bound = lastOf(live);
    const rows: ViewRow[] = [];
    let i = 0;
    let j = 0;
    for (;;) {
      const a = stored[i];
      const b = live[j];
      if (!a && !b) break;
      const next = a && b && a.topic === b.topic ? newer(a, b) : a && (!b || a.topic < b.topic) ? a : b;
      if (!next || (bound !== null && next.topic > bound)) break;
      if (a && next.topic === a.topic) i++;
      if (b && next.topic === b.topic) j++;
      rows.push(next);
    }
    return { rows, end: bound === null };
  }

  /** Deletes the retained messages whose MQTT 5 expiry has passed; the earliest expiry left, if any. */
  purgeExpired(now: number): number | null {
    const rows = this.sql.exec<Row>("SELECT topic, bytes, monitor FROM retained WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT 1000", now).toArray();
    this.purge(rows);
    const next = this.sql.exec<{ at: number | null }>("SELECT min(expires_at) AS at FROM retained WHERE expires_at IS NOT NULL").one().at;
    return next;
  }

  private purge(rows: ViewRow[]): void {
    if (rows.length === 0) return;
    for (const row of rows) {
      if (isPresence(row)) continue;
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
    writeCounters(this.sql, this.counters, this.saved);
    this.saved = { ...this.counters };
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

/** A presence as a retained row of its topic (QoS 0, no expiry, as `connectEvent` makes it). */
function presenceRow(p: PresenceRow): ViewRow {
  const topic = `${MONITOR_PREFIX}${p.clientId}`;
  return { topic, payload: p.payload, qos: 0, props: null, expires_at: null, bytes: p.payload.byteLength + topic.length, monitor: 1, seq: p.seq, presence: true };
}

/** Of a stored row and a presence of the same topic, the one written last. */
function newer(a: ViewRow | undefined, b: ViewRow | undefined): ViewRow | undefined {
  if (!a || !b) return a ?? b;
  return b.seq > a.seq ? b : a;
}

/**
 * The client ids whose `$SYS/mon/<id>` topics fall in the range and after `after`, as bounds
 * on `targets.client_id`; null when none can. A superset is enough: rows are matched again.
 */
export function monitorIds(range: { lo: string; hi?: string }, after: string): { after?: string; from?: string; below?: string } | null {
  const P = MONITOR_PREFIX;
  const top = `${P.slice(0, -1)}0`; // above every topic that starts with the prefix
  const lo = after >= range.lo ? after : range.lo;
  if (lo >= top || (range.hi !== undefined && range.hi <= P)) return null;
  const out: { after?: string; from?: string; below?: string } = {};
  if (lo.startsWith(P)) {
    if (after >= range.lo) out.after = lo.slice(P.length);
    else out.from = lo.slice(P.length);
  }
  if (range.hi !== undefined && range.hi.startsWith(P)) out.below = range.hi.slice(P.length);
  return out;
}

function isExpired(row: ViewRow, now: number): boolean {
  return row.expires_at !== null && row.expires_at <= now;
}

function toMessage(row: ViewRow, granted: QoS, subId: number | undefined): Message {
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
