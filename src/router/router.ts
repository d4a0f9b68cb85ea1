import { DurableObject } from "cloudflare:workers";
import { connectionStub, sessionStub, type Env } from "../env";
import { SubscriptionTrie } from "../topics/trie";
import { topicMatches } from "../topics/topic";
import { log } from "../log";
import type { DeliveryTarget, Message, QoS, SubscriptionRequest } from "./messages";
import { retainedKey, subscriptionKey, targetKey, parseSubscriptionKey, KEY } from "./keys";
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
  }

  /**
   * The connection `conn` ended. A persistent session keeps its subscriptions and its
   * messages go to its session object; a clean one is forgotten. Ignored when another
   * connection already owns the session (takeover raced with the close). `announce` (the
   * will and the monitoring Disconnect event) is published first, in the same call.
   */
  async detach(account: string, clientId: string, conn: string, persistent: boolean, announce: Message[] = []): Promise<void> {
    if (announce.length > 0) await this.publish(account, announce);
    const current = this.targets.get(clientId);
    if (!current || current.conn !== conn) return;
    if (persistent) this.setTarget(clientId, { conn: null, persistent: true });
    else this.forgetNow(clientId);
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
    this.trie.add(filter, clientId, qos);
    let set = this.filtersByClient.get(clientId);
    if (!set) this.filtersByClient.set(clientId, (set = new Set()));
    set.add(filter);
  }

  private removeSubscription(clientId: string, filter: string): void {
    this.trie.remove(filter, clientId);
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
