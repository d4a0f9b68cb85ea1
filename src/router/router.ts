import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { connectionStub, sessionStub } from "../stubs";
import { SubscriptionTrie } from "../topics/trie";
import { parseSharedFilter } from "../topics/topic";
import { getConfig, loadConfig } from "../config";
import { SharedGroups, isSharedKey, sharedKey } from "./shared";
import { errorMessage, log } from "../log";
import { type Message, type QoS, type SubscriptionRequest, type RouterAttach, type RouterAttached, type RouterDetach, type DeliverResult } from "./messages";
import { groupQueueKey, subscriptionKey, targetKey, parseSubscriptionKey, KEY } from "./keys";
import { meterStorage } from "../metrics";
import { canSubscribe } from "../topics/acl";
import { deleteKeys } from "../storage";
import { fullBucket, take, type Bucket } from "../limits/rate";
import { RetainedStore } from "./retained";
import { isGroupQueued, isTarget, readSubOptions, type SubOptions, type TargetRecord } from "./records";
import { RouterCounters, type CounterValues } from "./counters";
import { batchPoint, connectionPoint, type AnalyticsPoint } from "../monitoring/analytics";
import { base64 } from "../encoding";

/**
 * Topic router of one account (named by the account id). It owns the account's
 * subscriptions, the delivery target of every session, and the retained messages,
 * all durable in its storage and mirrored in memory for matching.
 *
 * A publish batch costs one call per subscribed session, whatever the number of
 * messages in the batch (SPEC: per-call overhead dominates delivery cost).
 */
export class TopicRouter extends DurableObject<Env> {
  private readonly trie = new SubscriptionTrie<SubOptions>();
  /** clientId -> its filters (for cleanup and the per-session subscription count). */
  private readonly filtersByClient = new Map<string, Set<string>>();
  private readonly targets = new Map<string, TargetRecord>();
  private readonly retained: RetainedStore;
  private readonly shared = new SharedGroups();
  /** Group key -> QoS 1/2 messages waiting for a member to come back; storage `g:<seq>`. */
  private readonly groupQueues = new Map<string, Array<{ seq: number; message: Message }>>();
  private nextGroupSeq = 0;
  /** The account's connect rate (memory only: a busy account's router stays awake). */
  private connects: Bucket | null = null;
  /** Deliveries dropped since the object woke (a clean target that failed, QoS 0 to a failed target). */
  private dropped = 0;
  /** Traffic counters for the admin stats and metrics (counters.ts), persisted at most once a second. */
  private readonly counters = new RouterCounters(Date.now());

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    meterStorage(ctx, env, "router");
    loadConfig(env); // LOG_LEVEL for this isolate; a bad var fails the calls that read the config, not the constructor
    this.retained = new RetainedStore(ctx.storage, () => getConfig(env).limits.maxMonitorRetained);
    void ctx.blockConcurrencyWhile(() => this.load());
  }

  private async load(): Promise<void> {
    const subs = await this.ctx.storage.list({ prefix: KEY.subscription });
    for (const [key, value] of subs) {
      const parsed = parseSubscriptionKey(key);
      const options = readSubOptions(value);
      if (parsed && options) this.addSubscription(parsed.clientId, parsed.filter, options);
    }
    const targets = await this.ctx.storage.list({ prefix: KEY.target });
    for (const [key, value] of targets) {
      if (isTarget(value)) this.targets.set(key.slice(KEY.target.length), value);
    }
    await this.retained.load();
    this.counters.load(await this.ctx.storage.get(KEY.counters), Date.now());
    const queued = await this.ctx.storage.list({ prefix: KEY.groupQueue });
    for (const [key, value] of queued) {
      const seq = Number(key.slice(KEY.groupQueue.length));
      if (!isGroupQueued(value) || !Number.isInteger(seq)) continue;
      this.queueFor(value.key).push({ seq, message: value.message });
      this.nextGroupSeq = Math.max(this.nextGroupSeq, seq + 1);
    }
  }

  /**
   * A connection took over a session: route its messages to `conn`. A clean start begins
   * with no subscriptions; `persistent` says whether the session outlives the connection. `announce` (the monitoring Connect event) is published after,
   * in the same call.
   */
  async attach(account: string, clientId: string, conn: string, opts: RouterAttach): Promise<RouterAttached> {
    const { cleanStart, persistent, announce = [], acl } = opts;
    // Every connect of the account passes here: its connect rate costs no request of its own.
    const limits = getConfig(this.env).limits;
    const now = Date.now();
    this.connects ??= fullBucket(limits.connectBurstPerAccount, now);
    if (!take(this.connects, limits.connectRatePerAccount, limits.connectBurstPerAccount, now)) {
      log("warn", "router.connect_rate_exceeded", { account, clientId, rate: limits.connectRatePerAccount });
      return { ok: false, reason: "rate" };
    }
    if (cleanStart) this.removeAllSubscriptions(clientId);
    else if (acl) {
      // Rights can shrink between connections (a new token, a changed ACL): resumed
      // subscriptions the identity no longer covers are dropped.
      for (const filter of [...(this.filtersByClient.get(clientId) ?? [])]) {
        if (!canSubscribe(acl, filter)) {
          this.removeSubscription(clientId, filter);
          log("info", "router.subscription_revoked", { clientId, filter });
        }
      }
    }
    this.setTarget(clientId, { conn, persistent });
    this.countConnection("connect", account, clientId);
    if (announce.length > 0) await this.publish(account, announce);
    // A member coming back takes what its shared groups queued while no member was online.
    for (const key of this.shared.keysOf(clientId)) {
      const queue = this.groupQueues.get(key);
      const qos = this.shared.get(key)?.members.get(clientId);
      if (!queue || queue.length === 0 || qos === undefined) continue;
      this.groupQueues.delete(key);
      // Forgotten only once handed on (delivered, or queued for the member's session).
      await this.deliverTo(account, clientId, queue.map((q) => ({ ...q.message, qos: minQoS(q.message.qos, qos), share: key })));
      await deleteKeys(this.ctx.storage, queue.map((q) => groupQueueKey(q.seq)));
    }
    return { ok: true };
  }

  /**
   * The connection `conn` ended. A persistent session keeps its subscriptions and its
   * messages go to its session object; a clean one is forgotten. Ignored when another
   * connection already owns the session (takeover raced with the close). `announce` (the
   * will and the monitoring Disconnect event) is published first, in the same call.
   */
  async detach(account: string, clientId: string, conn: string, opts: RouterDetach): Promise<void> {
    const { persistent, announce = [], orphans = [] } = opts;
    this.countConnection("disconnect", account, clientId);
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
   * the retain flag set [MQTT-3.3.1-8] and QoS downgraded to the granted one, following
   * the MQTT 5 retain handling option (0 always, 1 only for a new subscription, 2 never).
   */
  async subscribe(
    clientId: string,
    subs: SubscriptionRequest[],
    maxSubscriptions: number,
  ): Promise<{ granted: boolean[]; retained: Message[] }> {
    const granted: boolean[] = [];
    const retained: Message[] = [];
    const now = Date.now();
    for (const { filter, ...options } of subs) {
      const existing = this.filtersByClient.get(clientId);
      const isNew = !existing?.has(filter);
      if (isNew && (existing?.size ?? 0) >= maxSubscriptions) {
        granted.push(false);
        continue;
      }
      this.addSubscription(clientId, filter, options);
      void this.ctx.storage.put(subscriptionKey(clientId, filter), options);
      granted.push(true);
      // Shared subscriptions get no retained messages on subscribe (MQTT 5 §4.8.2).
      if (parseSharedFilter(filter)) continue;
      if (options.rh === 2 || (options.rh === 1 && !isNew)) continue;
      // [MQTT-3.8.4-3]: a repeated subscription replaces the old one and resends retained messages.
      retained.push(...this.retained.matching(filter, options.qos, options.id, now));
    }
    this.counters.add("retainedSent", retained.length);
    this.counters.add("messagesOut", retained.length);
    return { granted, retained };
  }

  /** Removes subscriptions; for each filter, whether it existed (MQTT 5 UNSUBACK 0x00 / 0x11). */
  async unsubscribe(clientId: string, filters: string[]): Promise<boolean[]> {
    return filters.map((filter) => {
      const existed = this.filtersByClient.get(clientId)?.has(filter) === true;
      if (existed) this.removeSubscription(clientId, filter);
      return existed;
    });
  }

  /**
   * Routes a batch of messages from one publisher, in order. Resolves once every QoS 1
   * copy is durable at its subscriber (online connection or offline session), so the
   * publisher's PUBACKs can follow; with, for each message, whether any subscription matched
   * it (MQTT 5 PUBACK 0x10 No matching subscribers when none did; a no-local one counts).
   */
  async publish(account: string, messages: Message[]): Promise<boolean[]> {
    const perClient = new Map<string, Message[]>();
    const matched: boolean[] = [];
    const before = this.env.ANALYTICS ? this.counters.snapshot() : null;
    for (const message of messages) {
      if (message.retain) this.retained.store(message);
      // One copy per session even when several of its filters match, at the highest granted
      // QoS, carrying every matching subscription identifier (MQTT 5 §3.3.4).
      const best = new Map<string, { qos: QoS; rap: boolean; ids: number[] }>();
      const subscriptions = this.trie.match(message.topic);
      matched.push(subscriptions.length > 0);
      for (const { key, value } of subscriptions) {
        if (isSharedKey(key)) {
          this.routeShared(key, message, perClient);
          continue;
        }
        if (value.nl && key === message.from) continue; // no local [MQTT-3.8.3-3]
        const prev = best.get(key);
        if (!prev) best.set(key, { qos: value.qos, rap: value.rap === true, ids: value.id === undefined ? [] : [value.id] });
        else {
          if (value.qos > prev.qos) prev.qos = value.qos;
          if (value.rap) prev.rap = true;
          if (value.id !== undefined) prev.ids.push(value.id);
        }
      }
      for (const [clientId, sub] of best) {
        const copy = deliveryOf(message, minQoS(message.qos, sub.qos), sub.rap && message.retain);
        if (sub.ids.length > 0) copy.subIds = sub.ids;
        const list = perClient.get(clientId);
        if (list) list.push(copy);
        else perClient.set(clientId, [copy]);
      }
    }
    await this.deliverAll(account, perClient);
    this.countBatch(account, messages, matched, before);
    return matched;
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
      const copy = deliveryOf(message, minQoS(message.qos, member.qos), false);
      copy.share = key;
      const list = perClient.get(member.clientId);
      if (list) list.push(copy);
      else perClient.set(member.clientId, [copy]);
      return;
    }
    const group = this.shared.get(key);
    if (message.qos === 0 || !group) return;
    const anyPersistent = [...group.members.keys()].some((id) => this.targets.get(id)?.persistent && id !== exclude);
    if (!anyPersistent) {
      this.counters.drop("sharedNoMember", 1);
      return;
    }
    const queue = this.queueFor(key);
    const seq = this.nextGroupSeq++;
    const stored = deliveryOf(message, message.qos, false);
    queue.push({ seq, message: stored });
    void this.ctx.storage.put(groupQueueKey(seq), { key, message: stored });
    const max = getConfig(this.env).limits.maxQueuedMessages;
    while (queue.length > max) {
      const dropped = queue.shift();
      if (dropped) void this.ctx.storage.delete(groupQueueKey(dropped.seq));
      this.counters.drop("sharedQueueFull", 1);
    }
  }

  private queueFor(key: string): Array<{ seq: number; message: Message }> {
    let queue = this.groupQueues.get(key);
    if (!queue) this.groupQueues.set(key, (queue = []));
    return queue;
  }

  /**
   * One call per target, each isolated: a target that fails (error, overload, gone) is
   * handled in `deliverTo` and never fails the publisher's batch or the other targets.
   */
  private async deliverAll(account: string, perClient: Map<string, Message[]>): Promise<void> {
    const calls: Promise<void>[] = [];
    for (const [clientId, batch] of perClient) calls.push(this.deliverTo(account, clientId, batch));
    await Promise.all(calls);
  }

  /** Number of subscriptions and retained messages: for tests and the admin API. */
  async stats(): Promise<{ subscriptions: number; sessions: number; retained: number; dropped: number }> {
    return { subscriptions: this.trie.size, sessions: this.targets.size, retained: this.retained.size, dropped: this.dropped };
  }

  /** Never rejects: a failure stays with its target (queued for a persistent session, else dropped and counted). */
  private async deliverTo(account: string, clientId: string, batch: Message[]): Promise<void> {
    const target = this.targets.get(clientId);
    if (!target) return;
    if (target.conn) {
      let result: DeliverResult | "failed";
      try {
        result = await connectionStub(this.env, target.conn).deliver(clientId, batch);
      } catch (err) {
        log("warn", "router.deliver_failed", { clientId, messages: batch.length, error: errorMessage(err) });
        result = "failed";
      }
      if (result === "ok") {
        this.counters.add("deliveredOnline", batch.length);
        this.counters.add("messagesOut", batch.length);
        return;
      }
      // The connection ended without a detach reaching us yet (crash, restart): its
      // session object is the owner now. ("failed": the connection lives on; the session
      // object's queue keeps the batch for it.)
      if (result === "gone" && this.targets.get(clientId)?.conn === target.conn) {
        if (target.persistent) this.setTarget(clientId, { conn: null, persistent: true });
        else {
          this.forgetNow(clientId);
          return;
        }
      }
    }
    const durable = batch.filter((m) => m.qos > 0);
    if (!target.persistent || durable.length === 0) {
      // QoS 0 is not queued, and a clean session has nowhere to keep anything.
      this.dropped += batch.length;
      this.counters.drop(target.persistent ? "qos0Offline" : "cleanSessionGone", batch.length);
      log("info", "router.dropped", { clientId, messages: batch.length, total: this.dropped });
      return;
    }
    this.counters.drop("qos0Offline", batch.length - durable.length);
    await sessionStub(this.env, account, clientId)
      .enqueue(clientId, durable)
      .then((queueFull) => {
        this.counters.add("deliveredQueued", durable.length);
        this.counters.drop("queueFull", queueFull);
      })
      .catch((err: unknown) => {
        this.dropped += durable.length;
        this.counters.drop("enqueueFailed", durable.length);
        log("error", "router.enqueue_failed", { clientId, messages: durable.length, error: errorMessage(err) });
      });
  }

  private setTarget(clientId: string, target: TargetRecord): void {
    this.targets.set(clientId, target);
    void this.ctx.storage.put(targetKey(clientId), target);
  }

  private addSubscription(clientId: string, filter: string, options: SubOptions): void {
    const shared = parseSharedFilter(filter);
    if (shared) {
      if (this.shared.join(shared.group, shared.filter, clientId, options.qos)) {
        this.trie.add(shared.filter, sharedKey(shared.group, shared.filter), { qos: 0 });
      }
    } else this.trie.add(filter, clientId, options);
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
        if (queue) void deleteKeys(this.ctx.storage, queue.map((q) => groupQueueKey(q.seq)));
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

  // --- admin views (src/http/admin.ts: clients, sessions, retained, stats, metrics) ---

  /**
   * One page of the account's retained messages matching `filter`, in topic order;
   * `cursor` is the last topic of the previous page, and the answer's `cursor` is null on the
   * last page. Payloads up to ADMIN_PAYLOAD_INLINE_BYTES come inline, in base64.
   */
  async listRetained(opts: { filter: string; cursor?: string; limit: number }): Promise<{
    items: Array<{ topic: string; qos: QoS; bytes: number; payloadBase64?: string; expiresAt?: number }>;
    cursor: string | null;
  }> {
    const { items, more } = this.retained.page(opts.filter, opts.cursor, opts.limit, Date.now());
    return {
      items: items.map((r) => ({
        topic: r.topic,
        qos: r.qos,
        bytes: r.payload.byteLength,
        ...(r.payload.byteLength <= ADMIN_PAYLOAD_INLINE_BYTES ? { payloadBase64: base64(r.payload) } : {}),
        ...(r.expiresAt === undefined ? {} : { expiresAt: r.expiresAt }),
      })),
      cursor: more ? (items[items.length - 1]?.topic ?? null) : null,
    };
  }

  /** Deletes one retained message (no subscriber is told); false when the topic had none. */
  async deleteRetained(topic: string): Promise<boolean> {
    return this.retained.delete(topic);
  }

  /**
   * One page of the account's sessions as the router routes them, in client id order:
   * `online` only those with a live connection, `persistent` only those that outlive it.
   * `conn` is the connection object's id (for its `describe`).
   */
  async listTargets(opts: { cursor?: string; limit: number; only?: "online" | "persistent" }): Promise<{
    items: Array<{ clientId: string; conn: string | null; persistent: boolean; subscriptions: number }>;
    cursor: string | null;
  }> {
    const { cursor, limit, only } = opts;
    const ids = [...this.targets.keys()].filter((id) => cursor === undefined || id > cursor).sort();
    const items: Array<{ clientId: string; conn: string | null; persistent: boolean; subscriptions: number }> = [];
    for (const clientId of ids) {
      const t = this.targets.get(clientId);
      if (!t || (only === "online" && !t.conn) || (only === "persistent" && !t.persistent)) continue;
      if (items.length === limit) return { items, cursor: items[items.length - 1]?.clientId ?? null };
      items.push({ clientId, conn: t.conn, persistent: t.persistent, subscriptions: this.filtersByClient.get(clientId)?.size ?? 0 });
    }
    return { items, cursor: null };
  }

  /** The account's counters and sizes (GET .../stats, GET /admin/v1/metrics): no storage read. */
  async adminStats(): Promise<{
    counters: CounterValues;
    retained: { count: number; bytes: number };
    subscriptions: number;
    sessions: { online: number; offline: number };
  }> {
    let online = 0;
    let offline = 0;
    for (const t of this.targets.values()) {
      if (t.conn) online++;
      else if (t.persistent) offline++;
    }
    return {
      counters: this.counters.snapshot(),
      retained: { count: this.retained.size, bytes: this.retained.bytes() },
      subscriptions: this.trie.size,
      sessions: { online, offline },
    };
  }

  private countConnection(event: "connect" | "disconnect", account: string, clientId: string): void {
    this.counters.add(event === "connect" ? "connects" : "disconnects", 1);
    this.writePoint(connectionPoint(event, account, clientId));
    this.persistCounters();
  }

  /** After a publish batch: the unmatched count, one Analytics Engine point, the snapshot when due. */
  private countBatch(account: string, messages: Message[], matched: boolean[], before: CounterValues | null): void {
    const unmatched = matched.filter((m) => !m).length;
    this.counters.add("batches", 1);
    this.counters.add("messagesIn", messages.length);
    this.counters.add("unmatched", unmatched);
    if (before) {
      const after = this.counters.values;
      const drops = (v: CounterValues): number => Object.values(v.drops).reduce((a, b) => a + b, 0);
      this.writePoint(batchPoint(account, {
        messages: messages.length,
        unmatched,
        deliveredOnline: after.deliveredOnline - before.deliveredOnline,
        deliveredQueued: after.deliveredQueued - before.deliveredQueued,
        dropped: drops(after) - drops(before),
        bytes: messages.reduce((n, m) => n + m.payload.byteLength, 0),
      }));
    }
    this.persistCounters();
  }

  /** Monitoring never fails routing: a data point that cannot be written is logged and lost. */
  private writePoint(point: AnalyticsPoint): void {
    try {
      this.env.ANALYTICS?.writeDataPoint(point);
    } catch (err) {
      log("warn", "router.analytics_failed", { error: errorMessage(err) });
    }
  }

  private persistCounters(): void {
    if (this.counters.due(Date.now())) void this.ctx.storage.put(KEY.counters, this.counters.snapshot());
  }
}

/** Retained payloads up to this size come inline in the admin API's retained pages. */
export const ADMIN_PAYLOAD_INLINE_BYTES = 4096;

/**
 * A subscriber's copy of a published message: what travels (topic, payload, forwarded
 * properties, expiry), not the publisher's own bookkeeping. [MQTT-3.3.1-9]: live deliveries
 * clear the retain flag unless the subscription asked for retain-as-published.
 */
function deliveryOf(message: Message, qos: QoS, retain: boolean): Message {
  const copy: Message = { topic: message.topic, payload: message.payload, qos, retain };
  if (message.props) copy.props = message.props;
  if (message.expiresAt !== undefined) copy.expiresAt = message.expiresAt;
  return copy;
}

function minQoS(a: QoS, b: QoS): QoS {
  return a < b ? a : b;
}
