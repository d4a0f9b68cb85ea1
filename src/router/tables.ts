/**
 * The router's subscription, target and shared-group-queue rows (schema.ts): the SQL in one
 * place, typed. Subscriptions and targets are read once per wake (matching needs them in
 * memory); group-queue messages are read only when a member comes back, in pages.
 */
import { messageBytes, type Message } from "./messages";
import { blob, decodeProps, insertGroupMessage, qosOf } from "./schema";
import { readSubOptions, type SubOptions, type TargetRecord } from "./records";

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

  putTarget(clientId: string, target: TargetRecord): void {
    this.sql.exec("INSERT OR REPLACE INTO targets (client_id, conn, persistent) VALUES (?, ?, ?)", clientId, target.conn, target.persistent ? 1 : 0);
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
