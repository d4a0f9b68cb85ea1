import { DurableObject } from "cloudflare:workers";
import { connectionStub, sessionStub, type Env } from "../env";
import { SubscriptionTrie } from "../topics/trie";
import { parseSharedFilter, topicMatches } from "../topics/topic";
import { getConfig } from "../config";
import { SharedGroups, isSharedKey, sharedKey } from "./shared";
import { log } from "../log";
import { isMessage, type DeliveryTarget, type Message, type QoS, type SubscriptionRequest } from "./messages";
import { groupQueueKey, retainedKey, subscriptionKey, targetKey, parseSubscriptionKey, KEY } from "./keys";
import { meterStorage } from "../metrics";

interface TargetRecord {
  conn: string | null;
  persistent: boolean;
}

interface RetainedRecord {
  payload: Uint8Array;
  qos: QoS;
}

function isQoS(v: unknown): v is QoS {
  return v === 0 || v === 1 || v === 2;
}

function isTarget(v: unknown): v is TargetRecord {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return (typeof r.conn === "string" || r.conn === null) && typeof r.persistent === "boolean";
}

function isGroupQueued(v: unknown): v is { key: string; message: Message } {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.key === "string" && isMessage(r.message);
}

function isRetained(v: unknown): v is RetainedRecord {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return r.payload instanceof Uint8Array && isQoS(r.qos);
}

/**
 * Topic router of one account (named by the account id). It owns the account's
 * subscriptions, the delivery target of every session, and the retained messages,
 * all durable in its storage and mirrored in memory for matching.
 *
 * A publish batch costs one call per subscribed session, whatever the number of
 * messages in the batch (SPEC: per-call overhead dominates delivery cost).
 */
export class TopicRouter extends DurableObject<Env> {
  private readonly trie = new SubscriptionTrie<QoS>();
  /** clientId -> its filters (for cleanup and the per-session subscription count). */
  private readonly filtersByClient = new Map<string, Set<string>>();
  private readonly targets = new Map<string, TargetRecord>();
  private readonly retained = new Map<string, RetainedRecord>();
  private readonly shared = new SharedGroups();
  /** Group key -> QoS 1/2 messages waiting for a member to come back; storage `g:<seq>`. */
  private readonly groupQueues = new Map<string, Array<{ seq: number; message: Message }>>();
  private nextGroupSeq = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    meterStorage(ctx, env, "router");
    void ctx.blockConcurrencyWhile(() => this.load());
  }

  private async load(): Promise<void> {
    const subs = await this.ctx.storage.list({ prefix: KEY.subscription });
    for (const [key, qos] of subs) {
      const parsed = parseSubscriptionKey(key);
      if (parsed && isQoS(qos)) this.addSubscription(parsed.clientId, parsed.filter, qos);
    }
    const targets = await this.ctx.storage.list({ prefix: KEY.target });
    for (const [key, value] of targets) {
      if (isTarget(value)) this.targets.set(key.slice(KEY.target.length), value);
    }
    const retained = await this.ctx.storage.list({ prefix: KEY.retained });
    for (const [key, value] of retained) {
      if (isRetained(value)) this.retained.set(key.slice(KEY.retained.length), value);
    }
    const queued = await this.ctx.storage.list({ prefix: KEY.groupQueue });
    for (const [key, value] of queued) {
      const seq = Number(key.slice(KEY.groupQueue.length));
      if (!isGroupQueued(value) || !Number.isInteger(seq)) continue;
      this.queueFor(value.key).push({ seq, message: value.message });
      this.nextGroupSeq = Math.max(this.nextGroupSeq, seq + 1);
    }
  }

  /**
   * A connection took over a session: route its messages to `conn`. A clean session starts
   * with no subscriptions. `announce` (the monitoring Connect event) is published after,
   * in the same call.
   */
  async attach(account: string, clientId: string, conn: string, clean: boolean, announce: Message[] = []): Promise<void> {
    if (clean) this.removeAllSubscriptions(clientId);
    this.setTarget(clientId, { conn, persistent: !clean });
    if (announce.length > 0) await this.publish(account, announce);
    // A member coming back takes what its shared groups queued while no member was online.
    for (const key of this.shared.keysOf(clientId)) {
      const queue = this.groupQueues.get(key);
      const qos = this.shared.get(key)?.members.get(clientId);
      if (!queue || queue.length === 0 || qos === undefined) continue;
      this.groupQueues.delete(key);
      void this.ctx.storage.delete(queue.map((q) => groupQueueKey(q.seq)));
      await this.deliverTo(account, clientId, queue.map((q) => ({ ...q.message, qos: minQoS(q.message.qos, qos), share: key })));
    }
  }

  /**
   * The connection `conn` ended. A persistent session keeps its subscriptions and its
   * messages go to its session object; a clean one is forgotten. Ignored when another
   * connection already owns the session (takeover raced with the close). `announce` (the
   * will and the monitoring Disconnect event) is published first, in the same call.
   */
  async detach(
    account: string,
    clientId: string,
    conn: string,
    persistent: boolean,
    announce: Message[] = [],
    orphans: Message[] = [],
  ): Promise<void> {
    if (announce.length > 0) await this.publish(account, announce);
    const current = this.targets.get(clientId);
    if (current && current.conn === conn) {
      if (persistent) this.setTarget(clientId, { conn: null, persistent: true });
      else this.forgetNow(clientId);
    }
    // Shared-subscription messages the leaving member never finished go to another member.
    if (orphans.length > 0) {
      const perClient = new Map<string, Message[]>();
      for (const m of orphans) if (m.share) this.routeShared(m.share, { ...m, dup: false }, perClient, clientId);
      await this.deliverAll(account, perClient);
    }
  }

  /** A persistent session expired: drop its subscriptions and target. */
  async forget(clientId: string): Promise<void> {
    const current = this.targets.get(clientId);
    if (current?.conn) return; // online again: not expired
    this.forgetNow(clientId);
  }

  /**
   * Registers subscriptions and returns the retained messages they match, each with
   * the retain flag set [MQTT-3.3.1-8] and QoS downgraded to the granted one.
   */
  async subscribe(
    clientId: string,
    subs: SubscriptionRequest[],
    maxSubscriptions: number,
  ): Promise<{ granted: boolean[]; retained: Message[] }> {
    const granted: boolean[] = [];
    const retained: Message[] = [];
    for (const { filter, qos } of subs) {
      const existing = this.filtersByClient.get(clientId);
      const isNew = !existing?.has(filter);
      if (isNew && (existing?.size ?? 0) >= maxSubscriptions) {
        granted.push(false);
        continue;
      }
      this.addSubscription(clientId, filter, qos);
      void this.ctx.storage.put(subscriptionKey(clientId, filter), qos);
      granted.push(true);
      // Shared subscriptions get no retained messages on subscribe (MQTT 5 §4.8.2).
      if (parseSharedFilter(filter)) continue;
      // [MQTT-3.8.4-3]: a repeated subscription replaces the old one and resends retained messages.
      for (const [topic, record] of this.retained) {
        if (!topicMatches(filter, topic)) continue;
        retained.push({ topic, payload: record.payload, qos: minQoS(record.qos, qos), retain: true });
      }
    }
    return { granted, retained };
  }

  async unsubscribe(clientId: string, filters: string[]): Promise<void> {
    for (const filter of filters) this.removeSubscription(clientId, filter);
  }

  /**
   * Routes a batch of messages from one publisher, in order. Resolves once every QoS 1
   * copy is durable at its subscriber (online connection or offline session), so the
   * publisher's PUBACKs can follow.
   */
  async publish(account: string, messages: Message[]): Promise<void> {
    const perClient = new Map<string, Message[]>();
    for (const message of messages) {
      if (message.retain) this.storeRetained(message);
      // One copy per session even when several of its filters match, at the highest granted QoS.
      const best = new Map<string, QoS>();
      for (const { key, value } of this.trie.match(message.topic)) {
        if (isSharedKey(key)) {
          this.routeShared(key, message, perClient);
          continue;
        }
        const prev = best.get(key);
        if (prev === undefined || value > prev) best.set(key, value);
      }
      for (const [clientId, granted] of best) {
        const copy: Message = {
          topic: message.topic,
          payload: message.payload,
          qos: minQoS(message.qos, granted),
          retain: false, // [MQTT-3.3.1-9]: live deliveries clear the retain flag
        };
        const list = perClient.get(clientId);
        if (list) list.push(copy);
        else perClient.set(clientId, [copy]);
      }
    }
    await this.deliverAll(account, perClient);
  }

  /** A shared group's state, for the admin API. */
  async sharedGroup(group: string): Promise<Array<{ filter: string; members: Array<{ clientId: string; qos: QoS; online: boolean }>; queued: number }>> {
    const out: Array<{ filter: string; members: Array<{ clientId: string; qos: QoS; online: boolean }>; queued: number }> = [];
    for (const [key, g] of this.shared.entries()) {
      if (g.group !== group) continue;
      out.push({
        filter: g.filter,
        members: [...g.members].map(([clientId, qos]) => ({ clientId, qos, online: this.isOnline(clientId) })),
        queued: this.groupQueues.get(key)?.length ?? 0,
      });
    }
    return out;
  }

  private isOnline(clientId: string): boolean {
    return Boolean(this.targets.get(clientId)?.conn);
  }

  /**
   * One copy of `message` for one member of the shared group `key`: the next online member
   * in round-robin order. With no member online, QoS 1/2 messages wait in the group's queue
   * if a member has a persistent session (bounded like a session's queue), else are dropped.
   */
  private routeShared(key: string, message: Message, perClient: Map<string, Message[]>, exclude?: string): void {
    const member = this.shared.pick(key, (id) => this.isOnline(id), exclude);
    if (member) {
      const copy: Message = { topic: message.topic, payload: message.payload, qos: minQoS(message.qos, member.qos), retain: false, share: key };
      const list = perClient.get(member.clientId);
      if (list) list.push(copy);
      else perClient.set(member.clientId, [copy]);
      return;
    }
    const group = this.shared.get(key);
    if (message.qos === 0 || !group) return;
    const anyPersistent = [...group.members.keys()].some((id) => this.targets.get(id)?.persistent && id !== exclude);
    if (!anyPersistent) return;
    const queue = this.queueFor(key);
    const seq = this.nextGroupSeq++;
    const stored: Message = { topic: message.topic, payload: message.payload, qos: message.qos, retain: false };
    queue.push({ seq, message: stored });
    void this.ctx.storage.put(groupQueueKey(seq), { key, message: stored });
    const max = getConfig(this.env).limits.maxQueuedMessages;
    while (queue.length > max) {
      const dropped = queue.shift();
      if (dropped) void this.ctx.storage.delete(groupQueueKey(dropped.seq));
    }
  }

  private queueFor(key: string): Array<{ seq: number; message: Message }> {
    let queue = this.groupQueues.get(key);
    if (!queue) this.groupQueues.set(key, (queue = []));
    return queue;
  }

  private async deliverAll(account: string, perClient: Map<string, Message[]>): Promise<void> {
    const calls: Promise<void>[] = [];
    for (const [clientId, batch] of perClient) calls.push(this.deliverTo(account, clientId, batch));
    await Promise.all(calls);
  }

  /** Number of subscriptions and retained messages: for tests and the admin API. */
  async stats(): Promise<{ subscriptions: number; sessions: number; retained: number }> {
    return { subscriptions: this.trie.size, sessions: this.targets.size, retained: this.retained.size };
  }

  private async deliverTo(account: string, clientId: string, batch: Message[]): Promise<void> {
    const target = this.targets.get(clientId);
    if (!target) return;
    if (target.conn) {
      const result = await connectionStub(this.env, target.conn).deliver(clientId, batch);
      if (result === "ok") return;
      // The connection ended without a detach reaching us yet (crash, restart): its
      // session object is the owner now.
      if (this.targets.get(clientId)?.conn === target.conn) {
        if (target.persistent) this.setTarget(clientId, { conn: null, persistent: true });
        else {
          this.forgetNow(clientId);
          return;
        }
      }
    }
    if (!target.persistent) return;
    const durable = batch.filter((m) => m.qos > 0);
    if (durable.length === 0) return; // QoS 0 is not queued for offline sessions
    await sessionStub(this.env, account, clientId).enqueue(clientId, durable);
  }

  private storeRetained(message: Message): void {
    // [MQTT-3.3.1-10]/[MQTT-3.3.1-11]: an empty retained payload deletes; otherwise replace.
    if (message.payload.byteLength === 0) {
      this.retained.delete(message.topic);
      void this.ctx.storage.delete(retainedKey(message.topic));
      return;
    }
    const record: RetainedRecord = { payload: message.payload, qos: message.qos };
    this.retained.set(message.topic, record);
    void this.ctx.storage.put(retainedKey(message.topic), record);
  }

  private setTarget(clientId: string, target: DeliveryTarget & { persistent: boolean }): void {
    this.targets.set(clientId, target);
    void this.ctx.storage.put(targetKey(clientId), target);
  }

  private addSubscription(clientId: string, filter: string, qos: QoS): void {
    const shared = parseSharedFilter(filter);
    if (shared) {
      if (this.shared.join(shared.group, shared.filter, clientId, qos)) this.trie.add(shared.filter, sharedKey(shared.group, shared.filter), 0);
    } else this.trie.add(filter, clientId, qos);
    let set = this.filtersByClient.get(clientId);
    if (!set) this.filtersByClient.set(clientId, (set = new Set()));
    set.add(filter);
  }

  private removeSubscription(clientId: string, filter: string): void {
    const shared = parseSharedFilter(filter);
    if (shared) {
      if (this.shared.leave(shared.group, shared.filter, clientId)) {
        const key = sharedKey(shared.group, shared.filter);
        this.trie.remove(shared.filter, key);
        // No member left: its queued messages have nowhere to go.
        const queue = this.groupQueues.get(key);
        if (queue) void this.ctx.storage.delete(queue.map((q) => groupQueueKey(q.seq)));
        this.groupQueues.delete(key);
      }
    } else this.trie.remove(filter, clientId);
    const set = this.filtersByClient.get(clientId);
    if (set) {
      set.delete(filter);
      if (set.size === 0) this.filtersByClient.delete(clientId);
    }
    void this.ctx.storage.delete(subscriptionKey(clientId, filter));
  }

  private removeAllSubscriptions(clientId: string): void {
    const set = this.filtersByClient.get(clientId);
    if (!set) return;
    for (const filter of [...set]) this.removeSubscription(clientId, filter);
  }

  private forgetNow(clientId: string): void {
    this.removeAllSubscriptions(clientId);
    this.targets.delete(clientId);
    void this.ctx.storage.delete(targetKey(clientId));
    log("debug", "router.forget", { clientId });
  }
}

function minQoS(a: QoS, b: QoS): QoS {
  return a < b ? a : b;
}
