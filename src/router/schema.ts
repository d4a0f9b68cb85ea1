/**
 * The router's SQLite schema (`ctx.storage.sql`), owned and migrated here.
 *
 * - `retained`: one row per retained topic, payload included; read by indexed topic ranges
 *   (the filter's literal prefix), never loaded whole.
 * - `subscriptions`, `targets`: what matching needs, read once per wake into memory.
 * - `group_queue`: shared-subscription messages waiting for a member.
 * - `router_meta`: the schema version, the shard count and the retained quota counters (so a
 *   wake reads no retained message).
 * - `router_state`: the traffic counters' snapshot (counters.ts), one JSON row.
 *
 * Version 1 moves an object written by the key-value layout before it (`s:`, `t:`, `r:`, `g:`
 * keys) into the tables, once, on its first wake. Version 2 gives a target its presence: the
 * retained `$SYS/mon` Connect event of the connection it names, kept in the target's row
 * (`presence`, `presence_seq`) instead of a retained row of its own (retained.ts reads both).
 * Version 3 adds `router_state` for the traffic counters' snapshot: one row, where the
 * `counter.*` rows of `router_meta` were one per counter (read once more, then deleted).
 */
import { base64, fromBase64 } from "../encoding";
import { isRecord } from "../guards";
import { MONITOR_PREFIX } from "../monitoring/events";
import { deleteKeys } from "../storage";
import { isMessage, messageBytes, type ForwardedProps, type Message, type QoS } from "./messages";
import { isTarget, readSubOptions } from "./records";

export const SCHEMA_VERSION = 3;

const V1 = `
CREATE TABLE IF NOT EXISTS router_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retained (
  topic TEXT PRIMARY KEY,
  payload BLOB NOT NULL,
  qos INTEGER NOT NULL,
  props TEXT,
  expires_at INTEGER,
  bytes INTEGER NOT NULL,
  monitor INTEGER NOT NULL,
  seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS retained_monitor ON retained (monitor, seq);
CREATE INDEX IF NOT EXISTS retained_expiry ON retained (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS subscriptions (
  client_id TEXT NOT NULL,
  filter TEXT NOT NULL,
  options TEXT NOT NULL,
  PRIMARY KEY (client_id, filter)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS targets (client_id TEXT PRIMARY KEY, conn TEXT, persistent INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS group_queue (
  seq INTEGER PRIMARY KEY,
  share TEXT NOT NULL,
  topic TEXT NOT NULL,
  payload BLOB NOT NULL,
  qos INTEGER NOT NULL,
  props TEXT,
  expires_at INTEGER
);
CREATE INDEX IF NOT EXISTS group_queue_share ON group_queue (share, seq);
`;

/** Version 2: the Connect event of a target's live connection, and its place in the retained order (`retained.seq`). */
const V2 = `
ALTER TABLE targets ADD COLUMN presence BLOB;
ALTER TABLE targets ADD COLUMN presence_seq INTEGER;
`;

/** Version 3: values that are not integers (the traffic counters' snapshot, one JSON row). */
const V3 = `CREATE TABLE IF NOT EXISTS router_state (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;`;

/** The key-value prefixes of the layout before version 1. */
const LEGACY = { subscription: "s:", target: "t:", retained: "r:", groupQueue: "g:" } as const;

/** Creates or upgrades the schema; moves a key-value router's state into it (once). */
export async function migrate(storage: DurableObjectStorage): Promise<void> {
  const sql = storage.sql;
  // A current schema is the usual wake: one read, no CREATE script.
  const version = schemaVersion(sql) ?? 0;
  if (version >= SCHEMA_VERSION) return;
  if (version < 1) {
    sql.exec(V1);
    await moveLegacy(storage);
  }
  if (!hasColumn(sql, "targets", "presence")) sql.exec(V2);
  sql.exec(V3);
  sql.exec("INSERT OR REPLACE INTO router_meta (key, value) VALUES ('schema', ?)", SCHEMA_VERSION);
}

/** Whether `table` has `column` (a schema marker lost, or written by a newer version, must not add it twice). */
function hasColumn(sql: SqlStorage, table: string, column: string): boolean {
  try {
    sql.exec(`SELECT ${column} FROM ${table} LIMIT 0`);
    return true;
  } catch {
    return false;
  }
}

/** The stored schema version; null before the tables exist. */
function schemaVersion(sql: SqlStorage): number | null {
  try {
    return sql.exec<{ value: number }>("SELECT value FROM router_meta WHERE key = 'schema'").toArray()[0]?.value ?? null;
  } catch {
    return null; // no router_meta table yet
  }
}

async function moveLegacy(storage: DurableObjectStorage): Promise<void> {
  const sql = storage.sql;
  const moved: string[] = [];
  for (const [key, value] of await storage.list({ prefix: LEGACY.subscription })) {
    moved.push(key);
    const body = key.slice(LEGACY.subscription.length);
    const sep = body.indexOf("\u0000");
    const options = readSubOptions(value);
    if (sep < 0 || !options) continue;
    sql.exec("INSERT OR REPLACE INTO subscriptions (client_id, filter, options) VALUES (?, ?, ?)", body.slice(0, sep), body.slice(sep + 1), JSON.stringify(options));
  }
  for (const [key, value] of await storage.list({ prefix: LEGACY.target })) {
    moved.push(key);
    if (isTarget(value)) sql.exec("INSERT OR REPLACE INTO targets (client_id, conn, persistent) VALUES (?, ?, ?)", key.slice(LEGACY.target.length), value.conn, value.persistent ? 1 : 0);
  }
  let count = 0;
  let bytes = 0;
  let monitors = 0;
  let seq = 0;
  for (const [key, value] of await storage.list({ prefix: LEGACY.retained })) {
    moved.push(key);
    if (!isRecord(value) || !(value.payload instanceof Uint8Array) || !(value.qos === 0 || value.qos === 1 || value.qos === 2)) continue;
    const topic = key.slice(LEGACY.retained.length);
    const monitor = topic.startsWith(MONITOR_PREFIX);
    const size = messageBytes({ topic, payload: value.payload });
    const props = isRecord(value.props) ? encodeProps(value.props as ForwardedProps) : null;
    const expiresAt = typeof value.expiresAt === "number" ? value.expiresAt : null;
    sql.exec(
      "INSERT OR REPLACE INTO retained (topic, payload, qos, props, expires_at, bytes, monitor, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      topic, value.payload, value.qos, props, expiresAt, size, monitor ? 1 : 0, seq++,
    );
    if (monitor) monitors++;
    else {
      count++;
      bytes += size;
    }
  }
  writeCounters(sql, { count, bytes, monitors });
  for (const [key, value] of await storage.list({ prefix: LEGACY.groupQueue })) {
    moved.push(key);
    const n = Number(key.slice(LEGACY.groupQueue.length));
    if (!Number.isInteger(n) || !isRecord(value) || typeof value.key !== "string" || !isMessage(value.message)) continue;
    insertGroupMessage(sql, n, value.key, value.message);
  }
  await deleteKeys(storage, moved);
}

/** The retained counters kept in `router_meta`. */
export interface RetainedCounters {
  /** Retained messages counted against the account's quota (monitoring events are not). */
  count: number;
  bytes: number;
  /** Retained `$SYS/mon` events (bounded by MAX_MONITOR_RETAINED). */
  monitors: number;
}

/**
 * The quota counters from `router_meta`; the monitoring events counted from their index (at
 * most MAX_MONITOR_RETAINED index entries read per wake), so a Connect event of a new client
 * id writes no counter row.
 */
export function readCounters(sql: SqlStorage): RetainedCounters {
  const out: RetainedCounters = { count: 0, bytes: 0, monitors: 0 };
  for (const { key, value } of sql.exec<{ key: string; value: number }>("SELECT key, value FROM router_meta WHERE key IN ('retained_count', 'retained_bytes')")) {
    if (key === "retained_count") out.count = value;
    else out.bytes = value;
  }
  out.monitors = sql.exec<{ n: number }>("SELECT count(*) AS n FROM retained WHERE monitor = 1").one().n;
  return out;
}

/** Writes the quota counters that differ from `before`. */
export function writeCounters(sql: SqlStorage, c: RetainedCounters, before?: RetainedCounters): void {
  const fields: Array<[string, "count" | "bytes"]> = [["retained_count", "count"], ["retained_bytes", "bytes"]];
  for (const [key, field] of fields) {
    if (before && before[field] === c[field]) continue;
    sql.exec("INSERT OR REPLACE INTO router_meta (key, value) VALUES (?, ?)", key, c[field]);
  }
}

// ---------------------------------------------------------------- columns <-> values

/** MQTT 5 properties as a JSON column (correlation data in base64). */
export function encodeProps(props: ForwardedProps): string {
  const { correlationData, ...rest } = props;
  return JSON.stringify(correlationData ? { ...rest, correlationData: base64(correlationData) } : rest);
}

export function decodeProps(text: string | null): ForwardedProps | undefined {
  if (text === null) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isRecord(raw)) return undefined;
  const out: ForwardedProps = {};
  if (typeof raw.payloadFormatIndicator === "boolean") out.payloadFormatIndicator = raw.payloadFormatIndicator;
  if (typeof raw.contentType === "string") out.contentType = raw.contentType;
  if (typeof raw.responseTopic === "string") out.responseTopic = raw.responseTopic;
  if (typeof raw.correlationData === "string") out.correlationData = fromBase64(raw.correlationData);
  if (Array.isArray(raw.userProperties)) {
    out.userProperties = raw.userProperties.flatMap((p: unknown) => (isRecord(p) && typeof p.key === "string" && typeof p.value === "string" ? [{ key: p.key, value: p.value }] : []));
  }
  return out;
}


/** A BLOB column read back. */
export function blob(v: ArrayBuffer): Uint8Array {
  return new Uint8Array(v);
}

export function qosOf(v: number): QoS {
  return v === 2 ? 2 : v === 1 ? 1 : 0;
}

export function insertGroupMessage(sql: SqlStorage, seq: number, share: string, m: Message): void {
  sql.exec(
    "INSERT OR REPLACE INTO group_queue (seq, share, topic, payload, qos, props, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    seq, share, m.topic, m.payload, m.qos, m.props ? encodeProps(m.props) : null, m.expiresAt ?? null,
  );
}

/**
 * The shard count this object was written under. ROUTER_SHARDS decides which shard owns a
 * topic or a filter, so a router that holds state refuses to serve under another count
 * (it would route wrongly); an empty one takes the new count. Null when it may serve.
 */
export function checkShardCount(sql: SqlStorage, shards: number): string | null {
  const stored = sql.exec<{ value: number }>("SELECT value FROM router_meta WHERE key = 'shards'").toArray()[0]?.value;
  if (stored === shards) return null;
  const holds = (table: string): boolean => sql.exec(`SELECT 1 FROM ${table} LIMIT 1`).toArray().length > 0;
  if (stored !== undefined && (holds("subscriptions") || holds("targets") || holds("retained") || holds("group_queue"))) {
    return `ROUTER_SHARDS changed from ${stored} to ${shards}: this router holds state written under ${stored} shards and refuses to route (README "Sharding")`;
  }
  sql.exec("INSERT OR REPLACE INTO router_meta (key, value) VALUES ('shards', ?)", shards);
  return null;
}
