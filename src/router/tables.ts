/**
 * The router's subscription, target and shared-group-queue rows (schema.ts): the SQL in one
 * place, typed. Subscriptions and targets are read once per wake (matching needs them in
 * memory); group-queue messages are read only when a member comes back, in pages.
 */
import { messageBytes, type Message } from "./messages";
import { blob, decodeProps, insertGroupMessage, qosOf } from "./schema";
import { readSubOptions, type SubOptions, type TargetRecord } from "./records";
import { MONITOR_PREFIX } from "../monitoring/events";

/**
 * A target's presence: the retained `$SYS/mon/<clientId>` Connect event of its live
 * connection, kept in the target's row (written at the attach anyway) instead of a retained
 * row of its own, and gone with the connection. `seq` orders it against a stored event of the
 * same topic (`retained.seq`): the newer one is the retained message.
 */
export interface Presence {
  payload: Uint8Array;
  seq: number;
}

/** A presence as read back (the payload as the column gives it). */
export interface PresenceRow {
  clientId: string;
  payload: ArrayBuffer;
  seq: number;
}

/**
 * Which presences to read, in client id order: those after `after` (or from `from` on,
 * inclusive), below `below` when given, at most `limit`; one client id's when `exact` is given.
 */
export interface PresenceQuery {
  after?: string;
  from?: string;
  below?: string;
  exact?: string;
  limit: number;
}

export class RouterTables {
  private nextGroupSeq: number;

  constructor(private readonly sql: SqlStorage) {
    this.nextGroupSeq = (sql.exec<{ seq: number | null }>("SELECT max(seq) AS seq FROM group_queue").one().seq ?? -1) + 1;
  }

  // ------------------------------------------------------------ subscriptions

  *subscriptions(): Generator<{ clientId: string; filter: string; options: SubOptions }> {
    for (const row of this.sql.exec<{ client_id: string; filter: string; options: string }>("SELECT client_id, filter, options FROM subscriptions")) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(row.options);
      } catch {
        continue;
      }
      const options = readSubOptions(parsed);
      if (options) yield { clientId: row.client_id, filter: row.filter, options };
    }
  }

  putSubscription(clientId: string, filter: string, options: SubOptions): void {
    this.sql.exec("INSERT OR REPLACE INTO subscriptions (client_id, filter, options) VALUES (?, ?, ?)", clientId, filter, JSON.stringify(options));
  }

  deleteSubscription(clientId: string, filter: string): void {
    this.sql.exec("DELETE FROM subscriptions WHERE client_id = ? AND filter = ?", clientId, filter);
  }

  // ------------------------------------------------------------ delivery targets

  *targets(): Generator<[string, TargetRecord]> {
    for (const row of this.sql.exec<{ client_id: string; conn: string | null; persistent: number }>("SELECT client_id, conn, persistent FROM targets")) {
      yield [row.client_id, { conn: row.conn, persistent: row.persistent === 1 }];
    }
  }

  /** Writes the target; its presence goes with it (null: none, as for every target without a live connection). */
  putTarget(clientId: string, target: TargetRecord, presence: Presence | null = null): void {
    this.sql.exec(
      "INSERT OR REPLACE INTO targets (client_id, conn, persistent, presence, presence_seq) VALUES (?, ?, ?, ?, ?)",
      clientId, target.conn, target.persistent ? 1 : 0, target.conn === null ? null : (presence?.payload ?? null), target.conn === null ? null : (presence?.seq ?? null),
    );
  }

  /** Forgets a target's presence (the admin deleted its retained event). */
  clearPresence(clientId: string): void {
    this.sql.exec("UPDATE targets SET presence = NULL, presence_seq = NULL WHERE client_id = ? AND presence IS NOT NULL", clientId);
  }

  presences(q: PresenceQuery): PresenceRow[] {
    const where = ["presence IS NOT NULL", "conn IS NOT NULL"];
    const args: SqlStorageValue[] = [];
    if (q.exact !== undefined) {
      where.push("client_id = ?");
      args.push(q.exact);
    } else if (q.after !== undefined) {
      where.push("client_id > ?");
      args.push(q.after);
    } else if (q.from !== undefined) {
      where.push("client_id >= ?");
      args.push(q.from);
    }
    if (q.below !== undefined) {
      where.push("client_id < ?");
      args.push(q.below);
    }
    args.push(q.limit);
    return this.sql
      .exec<{ client_id: string; presence: ArrayBuffer; presence_seq: number }>(
        `SELECT client_id, presence, presence_seq FROM targets WHERE ${where.join(" AND ")} ORDER BY client_id LIMIT ?`,
        ...args,
      )
      .toArray()
      .map((r) => ({ clientId: r.client_id, payload: r.presence, seq: r.presence_seq }));
  }

  /** Presences whose topic has no stored retained row (each is a retained event of its own in the counts). */
  presencesAlone(): number {
    return this.sql.exec<{ n: number }>(
      "SELECT count(*) AS n FROM targets t WHERE t.presence IS NOT NULL AND t.conn IS NOT NULL AND NOT EXISTS (SELECT 1 FROM retained r WHERE r.topic = ? || t.client_id)",
      MONITOR_PREFIX,
    ).one().n;
  }

  deleteTarget(clientId: string): void {
    this.sql.exec("DELETE FROM targets WHERE client_id = ?", clientId);
  }

  // ------------------------------------------------------------ shared-group queues

  /** Messages queued per group key (read at wake: the queues are bounded). */
  groupCounts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const row of this.sql.exec<{ share: string; n: number }>("SELECT share, count(*) AS n FROM group_queue GROUP BY share")) out.set(row.share, row.n);
    return out;
  }

  pushGroupMessage(share: string, message: Message): void {
    insertGroupMessage(this.sql, this.nextGroupSeq++, share, message);
  }

  /** Drops the oldest `n` messages of a group (its queue is over the bound). */
  dropGroupHead(share: string, n: number): void {
    this.sql.exec("DELETE FROM group_queue WHERE seq IN (SELECT seq FROM group_queue WHERE share = ? ORDER BY seq LIMIT ?)", share, n);
  }

  /** The oldest queued messages of a group, at most `maxBytes` of them (at least one), with the last one's sequence number. */
  groupPage(share: string, maxBytes: number): { messages: Message[]; last: number } {
    const messages: Message[] = [];
    let last = -1;
    let bytes = 0;
    const rows = this.sql.exec<{ seq: number; topic: string; payload: ArrayBuffer; qos: number; props: string | null; expires_at: number | null }>(
      "SELECT seq, topic, payload, qos, props, expires_at FROM group_queue WHERE share = ? ORDER BY seq LIMIT 1000",
      share,
    );
    for (const row of rows) {
      const m: Message = { topic: row.topic, payload: blob(row.payload), qos: qosOf(row.qos), retain: false };
      const props = decodeProps(row.props);
      if (props) m.props = props;
      if (row.expires_at !== null) m.expiresAt = row.expires_at;
      messages.push(m);
      last = row.seq;
      bytes += messageBytes(m);
      if (bytes >= maxBytes) break;
    }
    return { messages, last };
  }

  /** Forgets a group's messages up to and including `last` (handed on). */
  deleteGroupThrough(share: string, last: number): void {
    this.sql.exec("DELETE FROM group_queue WHERE share = ? AND seq <= ?", share, last);
  }

  deleteGroup(share: string): void {
    this.sql.exec("DELETE FROM group_queue WHERE share = ?", share);
  }
}
