import { isMessage, messageBytes, type Message } from "../router/messages";
import { INBOUND_PREFIX, OUT_PREFIX, inboundKey, outKey } from "./keys";
import { deleteKeys, putEntries } from "../storage";
import { isRecord } from "../guards";

/**
 * A QoS 1/2 message for the client, durable in the connection object's storage.
 * - `queued`: waiting for room in the in-flight window. Its packet id is reserved when it is
 *   stored (0 only when none was free), so admitting it into the window changes nothing in
 *   storage: the record is written once. Stored `queued` records at or below the admission
 *   mark ({@link Outbox.trackAdmitted}) were admitted and are `sent`;
 * - `sent`: PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2);
 * - `released`: QoS 2 PUBREL sent, waiting for PUBCOMP.
 */
export interface OutRecord {
  seq: number;
  pid: number;
  state: "queued" | "sent" | "released";
  /** Sent before (on this or an earlier connection): a resend sets DUP [MQTT-3.3.1-1]. */
  dup: boolean;
  message: Message;
}


/** What to put on the wire for one record. */
export type OutAction = { kind: "publish"; record: OutRecord } | { kind: "pubrel"; pid: number };

/**
 * What an acknowledgement from the client did to the flow of its packet id:
 * - `done`: the flow ended; `next` holds the queued messages that now fit the window;
 * - `released`: a PUBREC moved a QoS 2 flow on; PUBREL goes out [MQTT-4.3.3-4];
 * - `unknown`: no flow has this packet id (a late duplicate, or never sent);
 * - `unexpected`: a flow has it, but this is not its acknowledgement (PUBREC for QoS 1, PUBACK
 *   for QoS 2, PUBCOMP before PUBREL): a protocol error.
 */
export type AckResult = { kind: "done"; next: OutAction[] } | { kind: "released" } | { kind: "unknown" } | { kind: "unexpected" };

function isOutRecord(v: unknown): v is OutRecord {
  if (!isRecord(v)) return false;
  const r = v;
  return (
    typeof r.seq === "number" && typeof r.pid === "number" && typeof r.dup === "boolean" &&
    (r.state === "queued" || r.state === "sent" || r.state === "released") &&
    isMessage(r.message) && r.message.qos > 0
  );
}

/** Waiting messages are admitted once this fraction of the window is free ({@link Outbox.admitChunk}). */
const ADMIT_CHUNK_DIVISOR = 8;

/**
 * The outbound QoS 1 and QoS 2 flows of one connection [MQTT-4.3.2, MQTT-4.3.3]: packet
 * identifiers, the in-flight window, and the state of each message, written to storage
 * before anything is sent. Loaded lazily: connections without QoS > 0 traffic never read
 * storage. Packet ids survive a hand-over to the next connection of the session, so
 * redelivery uses the original ids [MQTT-4.4.0-1].
 */
export class Outbox {
  private records: Map<number, OutRecord> | null = null;
  private readonly byPid = new Map<number, OutRecord>();
  /** Sequence numbers of the records that are in storage. */
  private readonly stored = new Set<number>();
  private nextSeq = 0;
  private nextPid = 1;
  /** Records in the window (`sent` or `released`): byPid also holds the queued ones' reserved ids. */
  private inflight = 0;
  /**
   * The highest seq admitted from `queued` without a rewrite; -1 before any. Kept in the socket
   * attachment (free to write) through `onAdmit`; null when it is unknown (read with no socket).
   */
  private admittedThrough: number | null = null;
  private onAdmit: ((seq: number) => void) | null = null;
  /**
   * A session that ends with its connection (clean session, MQTT 5 expiry 0) never
   * redelivers, so a QoS 1 message sent on the socket need not be stored: only QoS 2 ones
   * (their packet ids must not be reused while the client holds them) and shared-subscription
   * ones (handed back to their group if the session ends) are. Saves two rows written per
   * QoS 1 delivery. Its QoS 1 messages that wait for room in the window are held in memory
   * ({@link hold}) and written only if they are still waiting when the hold ends.
   */
  private ephemeral = false;
  /**
   * The pending end of the hold: while it is set, the object cannot hibernate (a pending
   * timer keeps a Durable Object in memory), so the waiting messages it holds in memory only
   * cannot be lost to hibernation while the socket stays open. When it fires, whatever still
   * waits is written ({@link spill}) and the object may hibernate again.
   */
  private holdTimer: ReturnType<typeof setTimeout> | null = null;

  /** Waiting messages dropped past `maxQueued` or `maxQueuedBytes` since this object woke. */
  dropped = 0;

  constructor(
    private readonly storage: DurableObjectStorage,
    private maxInflight: number,
    /** Messages waiting for room in the window, at most (MAX_OUTBOX_MESSAGES). */
    private readonly maxQueued = Number.POSITIVE_INFINITY,
    /** How long a clean session's waiting QoS 1 messages stay in memory only (OUTBOX_HOLD_MS). */
    private readonly holdMs = 10_000,
    /** Bytes (topic and payload) of the messages waiting for room in the window, at most (MAX_QUEUED_BYTES). */
    private readonly maxQueuedBytes = Number.POSITIVE_INFINITY,
    /** Called when writing held messages failed (the caller logs it). */
    private readonly onSpillError: (err: unknown) => void = () => undefined,
  ) {}

  /** The in-flight window: the smaller of the broker's and the client's Receive Maximum (MQTT 5). */
  setWindow(n: number): void {
    this.maxInflight = Math.max(1, n);
  }

  /** Messages waiting for room in the window (0 before the outbox is loaded). */
  waiting(): number {
    return this.waitingTotals().count;
  }

  /** Bytes (topic and payload) of the messages waiting for room in the window. */
  waitingBytes(): number {
    return this.waitingTotals().bytes;
  }

  /** The messages waiting for room in the window, counted and in bytes (topic and payload). */
  private waitingTotals(): { count: number; bytes: number } {
    let count = 0;
    let bytes = 0;
    for (const r of this.records?.values() ?? []) {
      if (r.state !== "queued") continue;
      count++;
      bytes += messageBytes(r.message);
    }
    return { count, bytes };
  }

  setEphemeral(ephemeral: boolean): void {
    this.ephemeral = ephemeral;
  }

  /**
   * The admission mark as the attachment keeps it, and where to keep its next value. Without
   * it (no socket: a runtime restart), stored `queued` records may have been sent; the hand-over
   * then marks them DUP.
   */
  trackAdmitted(through: number, onAdmit: (seq: number) => void): void {
    this.admittedThrough = Math.max(this.admittedThrough ?? -1, through);
    this.onAdmit = onAdmit;
    for (const r of this.records?.values() ?? []) {
      if (r.state !== "queued" || r.pid === 0 || r.seq > this.admittedThrough) continue;
      r.state = "sent";
      this.inflight++;
    }
  }

  private isInflight(record: OutRecord): boolean {
    return record.state !== "queued";
  }

  /** The record in flight with `pid`; a reserved id of a message not sent yet is no flow to acknowledge. */
  private sentWith(pid: number): OutRecord | undefined {
    const record = this.byPid.get(pid);
    return record && this.isInflight(record) ? record : undefined;
  }

  private mustStore(record: OutRecord): boolean {
    return !this.ephemeral || record.message.qos === 2 || record.message.share !== undefined;
  }

  /**
   * A clean session's QoS 1 message waits for the window in memory only. The first one starts
   * the hold; when it ends, the waiting ones are written (each once), as a persistent session's
   * are at once. A client that keeps acknowledging empties the queue long before: no row.
   */
  private hold(): void {
    if (this.holdTimer !== null) return;
    this.holdTimer = setTimeout(() => {
      this.holdTimer = null;
      this.spill().catch(this.onSpillError);
    }, this.holdMs);
  }

  /** Writes the waiting messages held in memory only, so they survive hibernation. */
  async spill(): Promise<void> {
    this.cancelHold();
    const writes: Record<string, OutRecord> = {};
    for (const r of this.records?.values() ?? []) {
      if (r.state !== "queued" || this.stored.has(r.seq)) continue;
      writes[outKey(r.seq)] = r;
      this.stored.add(r.seq);
    }
    await this.flush(writes, []);
  }

  /** Messages that wait in memory only (0 once written or admitted). */
  held(): number {
    let n = 0;
    for (const r of this.records?.values() ?? []) if (r.state === "queued" && !this.stored.has(r.seq)) n++;
    return n;
  }

  private cancelHold(): void {
    if (this.holdTimer !== null) clearTimeout(this.holdTimer);
    this.holdTimer = null;
  }

  /** Writes or deletes `record` so storage holds it exactly when it must. */
  private sync(record: OutRecord, writes: Record<string, OutRecord>, deletes: string[]): void {
    if (this.mustStore(record)) {
      writes[outKey(record.seq)] = record;
      this.stored.add(record.seq);
    } else if (this.stored.delete(record.seq)) deletes.push(outKey(record.seq));
  }

  private async forget(record: OutRecord): Promise<void> {
    if (this.isInflight(record)) this.inflight--;
    if (this.byPid.get(record.pid) === record) this.byPid.delete(record.pid);
    this.records?.delete(record.seq);
    if (this.stored.delete(record.seq)) await this.storage.delete(outKey(record.seq));
  }

  private async flush(writes: Record<string, OutRecord>, deletes: string[]): Promise<void> {
    await putEntries(this.storage, Object.entries(writes));
    await deleteKeys(this.storage, deletes);
  }

  async load(): Promise<Map<number, OutRecord>> {
    if (this.records) return this.records;
    const records = new Map<number, OutRecord>();
    const stored = await this.storage.list({ prefix: OUT_PREFIX });
    let maxPid = 0;
    const through = this.admittedThrough ?? -1;
    let inflight = 0;
    for (const value of stored.values()) {
      if (!isOutRecord(value)) continue;
      // Admitted into the window after it was stored: sent, though storage still says queued.
      if (value.state === "queued" && value.pid > 0 && value.seq <= through) value.state = "sent";
      if (this.isInflight(value)) inflight++;
      records.set(value.seq, value);
      this.stored.add(value.seq);
      this.nextSeq = Math.max(this.nextSeq, value.seq + 1);
      if (value.pid > 0) {
        this.byPid.set(value.pid, value);
        maxPid = Math.max(maxPid, value.pid);
      }
    }
    // A concurrent load may have finished first; keep the first.
    if (!this.records) {
      this.records = records;
      this.inflight = inflight;
      this.nextPid = maxPid >= 65535 ? 1 : maxPid + 1;
    }
    return this.records;
  }

  /**
   * Stores QoS > 0 messages (QoS 0 is not the outbox's business) and returns what can go
   * out now within the window. A message handed over from an earlier connection keeps its
   * packet id and state (`pid`, `released`).
   */
  async add(messages: Message[]): Promise<OutAction[]> {
    const records = await this.load();
    const writes: Record<string, OutRecord> = {};
    const actions: OutAction[] = [];
    // Behind a message still waiting for the window, every new one waits too [MQTT-4.6.0-2]:
    // admission goes in order, and in chunks.
    let behind = false;
    for (const r of records.values()) {
      if (r.state !== "queued") continue;
      behind = true;
      break;
    }
    for (const message of messages) {
      const seq = this.nextSeq++;
      let record: OutRecord;
      const { pid: hintPid, released, ...plain } = message;
      if (hintPid !== undefined && hintPid > 0 && !this.byPid.has(hintPid)) {
        record = { seq, pid: hintPid, state: released ? "released" : "sent", dup: true, message: plain };
        this.byPid.set(hintPid, record);
        this.inflight++;
      } else if (!behind && this.inflight < this.maxInflight) {
        const pid = this.allocatePid();
        if (pid === 0) throw new Error("no free packet id");
        record = { seq, pid, state: "sent", dup: message.dup === true, message: plain };
        this.byPid.set(pid, record);
        this.inflight++;
      } else {
        // The packet id is reserved now, so admitting the message later needs no second write.
        const pid = this.allocatePid();
        record = { seq, pid, state: "queued", dup: message.dup === true, message: plain };
        if (pid > 0) this.byPid.set(pid, record);
        behind = true;
      }
      records.set(seq, record);
      this.sync(record, writes, []);
      if (record.state === "queued" && !this.stored.has(seq)) this.hold();
      if (record.state === "sent") actions.push({ kind: "publish", record });
      else if (record.state === "released") actions.push({ kind: "pubrel", pid: record.pid });
    }
    // Past either bound (count, bytes), the oldest messages still waiting for the window are
    // dropped (counted): a client that never acknowledges cannot grow this object without limit.
    const deletes: string[] = [];
    let { count: waiting, bytes: waitingBytes } = this.waitingTotals();
    for (const r of records.values()) {
      if (waiting <= this.maxQueued && waitingBytes <= this.maxQueuedBytes) break;
      if (r.state !== "queued") continue;
      records.delete(r.seq);
      if (this.byPid.get(r.pid) === r) this.byPid.delete(r.pid);
      if (this.stored.delete(r.seq)) deletes.push(outKey(r.seq));
      delete writes[outKey(r.seq)];
      waiting--;
      waitingBytes -= messageBytes(r.message);
      this.dropped++;
    }
    // Written before anything is sent or acknowledged upstream: the output gate holds both
    // until the write is durable.
    await this.flush(writes, deletes);
    // Waiting ones with room in the window (a wake forgot a clean session's in-flight messages).
    if (behind) actions.push(...(await this.admit()));
    return actions;
  }

  /** PUBACK (QoS 1) or PUBCOMP (QoS 2, after PUBREL) for `pid`: the message is done. */
  async complete(pid: number, ack: "puback" | "pubcomp"): Promise<AckResult> {
    await this.load();
    const record = this.sentWith(pid);
    if (!record) {
      // A clean session's in-flight messages are not stored: after a wake this acknowledges one
      // of them, and its slot in the window is free for what waits. Otherwise a late duplicate.
      const next = await this.admit();
      return next.length > 0 ? { kind: "done", next } : { kind: "unknown" };
    }
    const expected = ack === "puback" ? record.message.qos === 1 : record.state === "released";
    if (!expected) return { kind: "unexpected" };
    await this.forget(record);
    return { kind: "done", next: await this.admit() };
  }

  /** A message that will never be sent (expired, too large for the client): done, window freed. */
  async drop(pid: number): Promise<OutAction[]> {
    await this.load();
    const record = this.sentWith(pid);
    if (!record) return [];
    await this.forget(record);
    return this.admit();
  }

  /**
   * PUBREC for `pid`. A reason code of 0x80 or more (MQTT 5) ends the flow: no PUBREL follows
   * [MQTT-4.3.3-4], the message is done. Otherwise the message is released (durably) and the
   * caller sends PUBREL; a repeated PUBREC gets PUBREL again.
   */
  async received(pid: number, failed = false): Promise<AckResult> {
    await this.load();
    const record = this.sentWith(pid);
    if (!record) return { kind: "unknown" };
    if (record.message.qos !== 2) return { kind: "unexpected" };
    if (failed && record.state === "sent") {
      await this.forget(record);
      return { kind: "done", next: await this.admit() };
    }
    if (record.state !== "released") {
      record.state = "released";
      const writes: Record<string, OutRecord> = {};
      const deletes: string[] = [];
      this.sync(record, writes, deletes);
      await this.flush(writes, deletes);
    }
    return { kind: "released" };
  }

  /** Everything in flight, in order, as it must be resent on a new connection [MQTT-4.4.0-1]. */
  async resend(): Promise<OutAction[]> {
    const records = await this.load();
    const actions: OutAction[] = [];
    for (const record of records.values()) {
      if (record.state === "sent") actions.push({ kind: "publish", record });
      else if (record.state === "released") actions.push({ kind: "pubrel", pid: record.pid });
    }
    return actions;
  }

  /** Queued messages that now fit the in-flight window, with their new packet ids. */
  async admit(): Promise<OutAction[]> {
    const records = this.records;
    if (!records) return [];
    // In chunks: a client that acknowledges one by one gets its next messages several to a frame.
    if (this.inflight > 0 && this.maxInflight - this.inflight < this.admitChunk()) return [];
    const writes: Record<string, OutRecord> = {};
    const deletes: string[] = [];
    const actions: OutAction[] = [];
    let mark = this.admittedThrough ?? -1;
    for (const record of records.values()) {
      if (this.inflight >= this.maxInflight) break;
      if (record.state !== "queued") continue;
      const reserved = record.pid > 0;
      if (!reserved) {
        record.pid = this.allocatePid();
        if (record.pid === 0) throw new Error("no free packet id");
        this.byPid.set(record.pid, record);
      }
      record.state = "sent";
      this.inflight++;
      // Stored as queued with its reserved id, the record stays as it is; the mark says it was sent.
      if (reserved && this.mustStore(record) && this.stored.has(record.seq)) mark = Math.max(mark, record.seq);
      else this.sync(record, writes, deletes);
      actions.push({ kind: "publish", record });
    }
    await this.flush(writes, deletes);
    if (mark !== (this.admittedThrough ?? -1)) {
      this.admittedThrough = mark;
      this.onAdmit?.(mark);
    }
    return actions;
  }

  /**
   * The messages to hand to the session's next connection: in-flight ones keep their
   * packet id and state, and are marked for DUP.
   */
  async handover(): Promise<Message[]> {
    // The connection is ending: what it holds goes to the session (or nowhere), not to storage.
    this.cancelHold();
    const records = await this.load();
    // Without the admission mark, a queued record with a reserved id may have been sent: DUP.
    const unsure = this.admittedThrough === null;
    return [...records.values()].map((r) =>
      r.state === "queued"
        ? unsure && r.pid > 0 ? { ...r.message, dup: true } : r.message
        : { ...r.message, dup: true, pid: r.pid, released: r.state === "released" },
    );
  }

  /** Forget everything in memory (the caller clears storage). */
  reset(): void {
    this.cancelHold();
    this.records = new Map();
    this.byPid.clear();
    this.stored.clear();
    this.inflight = 0;
  }

  /**
   * How many window slots must be free before waiting messages are admitted (while some are in
   * flight): an eighth of the window, at least 1. A client acknowledging each message in its own
   * frame would otherwise get each next message in its own frame too, and a WebSocket frame costs
   * the runtime more than the packets in it. The window is never exceeded, and with nothing in
   * flight everything that fits goes out, so nothing waits for an acknowledgement that cannot come.
   */
  private admitChunk(): number {
    return Math.max(1, Math.floor(this.maxInflight / ADMIT_CHUNK_DIVISOR));
  }

  /** A packet id 1..65535 [MQTT-2.3.1-1] that no record holds (in flight or reserved), or 0 when none is free. */
  private allocatePid(): number {
    for (let i = 0; i < 65535; i++) {
      const pid = this.nextPid;
      this.nextPid = pid >= 65535 ? 1 : pid + 1;
      if (!this.byPid.has(pid)) return pid;
    }
    return 0;
  }
}


/** A stored inbound QoS 2 message waiting for its PUBREL; `seq` keeps arrival order. */
interface StoredInbound {
  seq: number;
  message: Message;
  /** In memory only: in the router call in flight. */
  routing?: boolean;
}

function isStoredInbound(v: unknown): v is StoredInbound {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.seq === "number" && isMessage(r.message);
}

/**
 * Inbound QoS 2 exchanges between PUBREC and PUBREL, by packet id (storage `i:<pid>`). The broker
 * takes ownership of a message by storing it here, answers PUBREC, and routes it when PUBREL
 * arrives (the spec's "Method A", mosquitto's order): so the publisher has PUBREC before any
 * subscriber has the message. A retransmitted PUBLISH with a known id is answered, not stored
 * again [MQTT-4.3.3-10]. Ids handed over from an earlier connection carry no message: theirs was
 * routed when that connection ended (`unrouted`). Durable; handed to the session's next connection.
 */
export class InboundQos2 {
  /** Packet id → its stored message, or null once routed (waiting for the exchange to end). */
  private entries: Map<number, StoredInbound | null> | null = null;
  private nextSeq = 0;

  constructor(private readonly storage: DurableObjectStorage) {}

  async load(): Promise<Map<number, StoredInbound | null>> {
    if (this.entries) return this.entries;
    const stored = await this.storage.list({ prefix: INBOUND_PREFIX });
    const entries = new Map<number, StoredInbound | null>();
    for (const [key, value] of stored) {
      const pid = Number(key.slice(INBOUND_PREFIX.length));
      if (!Number.isInteger(pid)) continue;
      const record = isStoredInbound(value) ? { seq: value.seq, message: value.message } : null;
      entries.set(pid, record);
      if (record) this.nextSeq = Math.max(this.nextSeq, record.seq + 1);
    }
    if (!this.entries) this.entries = entries;
    return this.entries;
  }

  async has(pid: number): Promise<boolean> {
    return (await this.load()).has(pid);
  }

  /**
   * How many messages wait for their PUBREL on this connection (MQTT 5 Receive Maximum counts
   * them). Ids handed over from an earlier connection are left out: a client that lost its
   * state never releases them, and they must not use up its quota for good.
   */
  async pending(): Promise<number> {
    let n = 0;
    for (const record of (await this.load()).values()) if (record) n++;
    return n;
  }

  /** Takes ownership of `message` for `pid`, durably, before the PUBREC. */
  async store(pid: number, message: Message): Promise<void> {
    const entries = await this.load();
    const record: StoredInbound = { seq: this.nextSeq++, message };
    entries.set(pid, record);
    await this.storage.put(inboundKey(pid), { seq: record.seq, message });
  }

  /** Ids handed over from an earlier connection: their messages were routed. */
  async add(pids: number[]): Promise<void> {
    if (pids.length === 0) return;
    const entries = await this.load();
    const writes: Record<string, true> = {};
    for (const pid of pids) {
      if (entries.get(pid)) continue; // a stored message stays stored
      entries.set(pid, null);
      writes[inboundKey(pid)] = true;
    }
    if (Object.keys(writes).length > 0) await this.storage.put(writes);
  }

  /**
   * The stored message of `pid`, now in the router call about to go out; null when there is none
   * to route (routed before, in a call already, or unknown). Synchronous, so no teardown can see
   * the message between this and the call; call {@link load} before.
   */
  claim(pid: number): Message | null {
    const record = this.entries?.get(pid);
    if (!record || record.routing) return null;
    record.routing = true;
    return record.message;
  }

  /** The router call carrying `pids` settled: routed (kept as known ids until released) or back to waiting. */
  settle(pids: readonly number[], routed: boolean): void {
    for (const pid of pids) {
      const record = this.entries?.get(pid);
      if (!record) continue;
      if (routed) this.entries?.set(pid, null);
      else record.routing = false;
    }
  }

  /** PUBREL handled: the exchange is over; true when the id was known. */
  async release(pid: number): Promise<boolean> {
    const entries = await this.load();
    if (!entries.delete(pid)) return false;
    await this.storage.delete(inboundKey(pid));
    return true;
  }

  async all(): Promise<number[]> {
    return [...(await this.load()).keys()];
  }

  /** Stored messages not routed and not in a router call, in arrival order (a connection ending routes them). */
  async unrouted(): Promise<Message[]> {
    const records: StoredInbound[] = [];
    for (const record of (await this.load()).values()) if (record && !record.routing) records.push(record);
    return records.sort((a, b) => a.seq - b.seq).map((r) => r.message);
  }

  reset(): void {
    this.entries = new Map();
  }
}
