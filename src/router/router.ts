import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { connectionStub, sessionStub } from "../stubs";
import { SubscriptionTrie } from "../topics/trie";
import { parseSharedFilter } from "../topics/topic";
import { getConfig, loadConfig } from "../config";
import { SharedGroups, isSharedKey, sharedKey, type SharedRuns } from "./shared";
import { errorMessage, log } from "../log";
import {
  PAGE_BYTES,
  messageBytes,
  type DeliverResult,
  type Message,
  type QoS,
  type RetainedCursor,
  type RetainedPageResult,
  type Routed,
  type RouterAttach,
  type RouterAttached,
  type RouterDetach,
  type Subscribed,
  type SubscriptionRequest,
} from "./messages";
import { meterStorage } from "../metrics";
import { canSubscribe } from "../topics/acl";
import { fullBucket, take, type Bucket } from "../limits/rate";
import { RetainedStore } from "./retained";
import { RouterTables, type Presence } from "./tables";
import { MONITOR_PREFIX, monitorTopic } from "../monitoring/events";
import { checkShardCount, migrate } from "./schema";
import { COUNTERS_KEY, COUNTER_ROW_PREFIX, RouterCounters, parseSnapshot, rowsToCounters, type CounterValues } from "./counters";
import { batchPoint, connectionPoint, type AnalyticsPoint } from "../monitoring/analytics";
import { base64 } from "../encoding";
import type { SubOptions, TargetRecord } from "./records";

/**
 * Topic router of one account (named by the account id). It owns the account's
 * subscriptions, the delivery target of every session, and the retained messages, in
 * SQLite tables (schema.ts). Memory holds what matching needs: the subscription trie, the
 * targets and the shared groups; retained messages stay in storage and are read in pages.
 *
 * A publish batch costs one call per subscribed session, whatever the number of
 * messages in the batch (SPEC: per-call overhead dominates delivery cost).
 */
export class TopicRouter extends DurableObject<Env> {
  private readonly trie = new SubscriptionTrie<SubOptions>();
  /** clientId -> its filters and their options (for cleanup, the per-session subscription count, and re-subscribes). */
  private readonly filtersByClient = new Map<string, Map<string, SubOptions>>();
  private readonly targets = new Map<string, TargetRecord>();
  /**
   * The stub of each target's connection, built at its first delivery instead of at every one
   * (the profile of a QoS 1 round trip charged building it with 2.6% of the runtime's CPU).
   * Dropped with the target, when the target's connection changes, and after a failed call.
   */
  private readonly stubs = new Map<string, { conn: string; stub: ReturnType<typeof connectionStub> }>();
  private retained!: RetainedStore;
  private tables!: RouterTables;
  private readonly shared = new SharedGroups();
  /** Group key -> number of QoS 1/2 messages waiting in `group_queue` for a member to come back. */
  private groupQueued = new Map<string, number>();
  /** The purge alarm set by this object since it woke (memory only; the alarm sets the next one). */
  private purgeAt: number | null = null;
  /** Fan-in coalescing: targets with a `deliver` call in flight, and what waits to go to them in the next one. */
  private readonly inFlight = new Set<string>();
  private readonly waiting = new Map<string, { batch: Message[]; done: Promise<void>; resolve: () => void }>();
  /** The account's connect rate (memory only: a busy account's router stays awake). */
  private connects: Bucket | null = null;
  /** Set when ROUTER_SHARDS changed under this router's state: every routing call is refused with it. */
  private refusal: string | null = null;
  /** Deliveries dropped since the object woke (a clean target that failed, QoS 0 to a failed target). */
  private dropped = 0;
  /** Traffic counters for the admin stats and metrics (counters.ts), persisted at most once a second, in one row. */
  private readonly counters = new RouterCounters(Date.now());
  /** Whether the counters were read from the `counter.*` rows of before `router_state` (deleted with the first snapshot). */
  private legacyCounterRows = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    meterStorage(ctx, env, "router");
    loadConfig(env); // LOG_LEVEL for this isolate; a bad var fails the calls that read the config, not the constructor
    void ctx.blockConcurrencyWhile(() => this.load());
  }

  /** A wake reads the subscriptions and the targets, never a retained message. */
  private async load(): Promise<void> {
    await migrate(this.ctx.storage);
    const sql = this.ctx.storage.sql;
    // With vars that do not parse, the calls that read the config fail instead (as before).
    const loaded = loadConfig(this.env);
    if (loaded.ok) this.refusal = checkShardCount(sql, loaded.config.limits.routerShards);
    if (this.refusal) log("error", "router.shard_count_changed", { reason: this.refusal });
    this.tables = new RouterTables(sql);
    this.retained = new RetainedStore(
      sql,
      () => {
        const limits = getConfig(this.env).limits;
        return { maxMessages: limits.maxRetainedMessages, maxBytes: limits.maxRetainedBytes, maxMonitor: limits.maxMonitorRetained };
      },
      (q) => this.tables.presences(q),
    );
    for (const { clientId, filter, options } of this.tables.subscriptions()) this.addSubscription(clientId, filter, options);
    for (const [clientId, target] of this.tables.targets()) this.targets.set(clientId, target);
    this.groupQueued = this.tables.groupCounts();
    const snapshot = sql.exec<{ value: string }>("SELECT value FROM router_state WHERE key = ?", COUNTERS_KEY).toArray()[0];
    if (snapshot) this.counters.load(parseSnapshot(snapshot.value), Date.now());
    else {
      const rows = sql.exec<{ key: string; value: number }>("SELECT key, value FROM router_meta WHERE key >= ? AND key < ?", COUNTER_ROW_PREFIX, `${COUNTER_ROW_PREFIX}\uffff`).toArray();
      this.counters.load(rowsToCounters(rows), Date.now());
      this.legacyCounterRows = rows.length > 0;
    }
  }

  /** Background purge of expired retained messages (they are also purged as reads meet them). */
  override async alarm(): Promise<void> {
    this.purgeAt = null;
    const next = this.retained.purgeExpired(Date.now());
    if (next !== null) this.schedulePurge(next);
  }

  private refuseIfResharded(): void {
    if (this.refusal) throw new Error(this.refusal);
  }

  private schedulePurge(at: number): void {
    if (this.purgeAt !== null && this.purgeAt <= at) return;
    this.purgeAt = at;
    void this.ctx.storage.setAlarm(at);
  }

  /**
   * A connection took over a session: route its messages to `conn`. A clean start begins
   * with no subscriptions; `persistent` says whether the session outlives the connection. `presence` (the monitoring Connect event)
   * and `announce` are published after, in the same call; a retained presence is written with the target, not as a retained row.
   */
  async attach(account: string, clientId: string, conn: string, opts: RouterAttach): Promise<RouterAttached> {
    this.refuseIfResharded();
    const { cleanStart, persistent, presence, announce = [], acl, rated = true } = opts;
    // Every connect of the account passes here: its connect rate costs no request of its own.
    const limits = getConfig(this.env).limits;
    const now = Date.now();
    this.connects ??= fullBucket(limits.connectBurstPerAccount, now);
    if (rated && !take(this.connects, limits.connectRatePerAccount, limits.connectBurstPerAccount, now)) {
      log("warn", "router.connect_rate_exceeded", { account, clientId, rate: limits.connectRatePerAccount });
      return { ok: false, reason: "rate" };
    }
    if (cleanStart) this.removeAllSubscriptions(clientId);
    else if (acl) {
      // Rights can shrink between connections (a new token, a changed ACL): resumed
      // subscriptions the identity no longer covers are dropped.
      for (const filter of [...(this.filtersByClient.get(clientId)?.keys() ?? [])]) {
        if (!canSubscribe(acl, filter)) {
          this.removeSubscription(clientId, filter);
          log("info", "router.subscription_revoked", { clientId, filter });
        }
      }
    }
    // The Connect event rides in the target's row, which this attach writes anyway.
    const kept = presence?.retain && presence.topic === monitorTopic(clientId) ? presence : null;
    this.setTarget(clientId, { conn, persistent }, kept ? { payload: kept.payload, seq: this.retained.nextSeq(now) } : null);
    // Counted where the account's connect rate is (shard 0): every shard sees each attach.
    if (rated) this.countConnection("connect", account, clientId);
    const events = presence ? [presence, ...announce] : announce;
    if (events.length > 0) await this.route(account, events, kept);
    // A member coming back takes what its shared groups queued while no member was online.
    for (const key of this.shared.keysOf(clientId)) {
      // In pages; each forgotten only once handed on (delivered, or queued for the member's session).
      while ((this.groupQueued.get(key) ?? 0) > 0) {
        const qos = this.shared.get(key)?.members.get(clientId);
        if (qos === undefined) break;
        const { messages, last } = this.tables.groupPage(key, PAGE_BYTES);
        if (messages.length === 0) {
          this.groupQueued.delete(key);
          break;
        }
        await this.deliverTo(account, clientId, messages.map((m) => ({ ...m, qos: minQoS(m.qos, qos), share: key })));
        this.tables.deleteGroupThrough(key, last);
        const left = (this.groupQueued.get(key) ?? 0) - messages.length;
        if (left > 0) this.groupQueued.set(key, left);
        else this.groupQueued.delete(key);
      }
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
    this.refuseIfResharded();
    const { persistent, announce = [], orphans = [], rated = true } = opts;
    if (rated) this.countConnection("disconnect", account, clientId);
    if (announce.length > 0) await this.publish(account, announce);
    const current = this.targets.get(clientId);
    if (current && current.conn === conn) {
      if (persistent) this.setTarget(clientId, { conn: null, persistent: true });
      else this.forgetNow(clientId);
    }
    // Shared-subscription messages the leaving member never finished go to another member.
    if (orphans.length > 0) {
      const perClient = new Map<string, Message[]>();
      for (const m of orphans) if (m.share) this.routeShared(m.share, { ...m, dup: false }, perClient, { exclude: clientId });
      await this.deliverAll(account, perClient);
    }
  }

  /** A persistent session expired: drop its subscriptions and target. */
  async forget(clientId: string): Promise<void> {
    this.refuseIfResharded();
    const current = this.targets.get(clientId);
    if (current?.conn) return; // online again: not expired
    this.forgetNow(clientId);
  }

  /**
   * Registers subscriptions and returns the first page of the retained messages they match,
   * each with the retain flag set [MQTT-3.3.1-8] and QoS downgraded to the granted one,
   * following the MQTT 5 retain handling option (0 always, 1 only for a new subscription, 2
   * never); `more` leads to the next page (`retainedPage`).
   */
  async subscribe(clientId: string, subs: SubscriptionRequest[], maxSubscriptions: number, opts: { pageMessages?: number; deferRetained?: boolean } = {}): Promise<Subscribed> {
    this.refuseIfResharded();
    const granted: boolean[] = [];
    const wanted: RetainedCursor["subs"] = [];
    for (const { filter, ...options } of subs) {
      const existing = this.filtersByClient.get(clientId);
      const isNew = !existing?.has(filter);
      if (isNew && (existing?.size ?? 0) >= maxSubscriptions) {
        granted.push(false);
        continue;
      }
      // An identical re-subscribe costs no row written.
      if (isNew || !sameOptions(existing?.get(filter), options)) {
        this.addSubscription(clientId, filter, options);
        this.tables.putSubscription(clientId, filter, options);
      }
      granted.push(true);
      // Shared subscriptions get no retained messages on subscribe (MQTT 5 §4.8.2).
      if (parseSharedFilter(filter)) continue;
      if (options.rh === 2 || (options.rh === 1 && !isNew)) continue;
      // [MQTT-3.8.4-3]: a repeated subscription replaces the old one and resends retained messages.
      const sub: RetainedCursor["subs"][number] = { filter, qos: options.qos };
      if (options.id !== undefined) sub.id = options.id;
      wanted.push(sub);
    }
    const limit = Math.max(1, opts.pageMessages ?? 1000);
    // Deferred (a sharded subscribe): only the cursor; the caller reads the pages across shards.
    if (opts.deferRetained) return { granted, retained: [], more: wanted.length > 0 ? { subs: wanted, after: null, limit } : null };
    const first = wanted.length > 0 ? await this.retainedPage({ subs: wanted, after: null, limit }) : { messages: [], more: null };
    return { granted, retained: first.messages, more: first.more };
  }

  /**
   * The next page of a retained delivery on subscribe: at most about PAGE_BYTES and `limit`
   * messages, filter after filter, in topic order within each.
   */
  async retainedPage(cursor: RetainedCursor): Promise<RetainedPageResult> {
    this.refuseIfResharded();
    const now = Date.now();
    const limit = Math.max(1, cursor.limit);
    const messages: Message[] = [];
    let bytes = 0;
    let subs = cursor.subs;
    let after = cursor.after;
    while (subs.length > 0) {
      const [sub, ...rest] = subs;
      if (!sub) break;
      const page = this.retained.page(sub.filter, after === null ? null : { after }, { qos: sub.qos, subId: sub.id, maxBytes: PAGE_BYTES - bytes, maxMessages: limit - messages.length, now });
      for (const m of page.messages) {
        messages.push(m);
        bytes += messageBytes(m);
      }
      if (page.next) {
        this.countRetainedSent(messages.length);
        return { messages, more: { subs, after: page.next.after, limit } };
      }
      subs = rest;
      after = null;
      if (bytes >= PAGE_BYTES || messages.length >= limit) break;
    }
    this.countRetainedSent(messages.length);
    return { messages, more: subs.length > 0 ? { subs, after: null, limit } : null };
  }

  /** Removes subscriptions; for each filter, whether it existed (MQTT 5 UNSUBACK 0x00 / 0x11). */
  async unsubscribe(clientId: string, filters: string[]): Promise<boolean[]> {
    this.refuseIfResharded();
    return filters.map((filter) => {
      const existed = this.filtersByClient.get(clientId)?.has(filter) === true;
      if (existed) this.removeSubscription(clientId, filter);
      return existed;
    });
  }

  /**
   * Routes a batch of messages from one publisher, in order. Resolves once every QoS 1
   * copy is durable at its subscriber (online connection or offline session), so the
   * publisher's PUBACKs can follow; with, for each message, what became of it: whether any
   * subscription matched it (MQTT 5 PUBACK 0x10 No matching subscribers when none did; a
   * no-local one counts), or `quota` for a retained message past the account's retained quota
   * (neither stored nor delivered).
   */
  async publish(account: string, messages: Message[]): Promise<Routed[]> {
    this.refuseIfResharded();
    return this.route(account, messages, null);
  }

  /** `publish`, where `kept` (a presence, already written with its target) is delivered as retained but not stored. */
  private async route(account: string, messages: Message[], kept: Message | null): Promise<Routed[]> {
    const perClient = new Map<string, Message[]>();
    const outcomes: Routed[] = [];
    const now = Date.now();
    const before = this.env.ANALYTICS ? this.counters.snapshot() : null;
    const runs: SharedRuns = new Map();
    for (const message of messages) {
      if (message.retain && message !== kept) {
        if (this.retained.store(message, now) === "quota") {
          log("warn", "router.retained_quota_exceeded", { account, topic: message.topic, from: message.from, ...this.retained.usage });
          outcomes.push("quota");
          continue;
        }
        if (message.expiresAt !== undefined && message.payload.byteLength > 0) this.schedulePurge(message.expiresAt);
      }
      // One copy per session even when several of its filters match, at the highest granted
      // QoS, carrying every matching subscription identifier (MQTT 5 §3.3.4).
      const best = new Map<string, { qos: QoS; rap: boolean; ids: number[] }>();
      const subscriptions = this.trie.match(message.topic);
      outcomes.push(subscriptions.length > 0 ? "matched" : "unmatched");
      for (const { key, value } of subscriptions) {
        if (isSharedKey(key)) {
          this.routeShared(key, message, perClient, { runs });
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
    this.countBatch(account, messages, outcomes.filter((o) => o === "unmatched").length, before);
    return outcomes;
  }

  /** A shared group's state, for the admin API. */
  async sharedGroup(group: string): Promise<Array<{ filter: string; members: Array<{ clientId: string; qos: QoS; online: boolean }>; queued: number }>> {
    const out: Array<{ filter: string; members: Array<{ clientId: string; qos: QoS; online: boolean }>; queued: number }> = [];
    for (const [key, g] of this.shared.entries()) {
      if (g.group !== group) continue;
      out.push({
        filter: g.filter,
        members: [...g.members].map(([clientId, qos]) => ({ clientId, qos, online: this.isOnline(clientId) })),
        queued: this.groupQueued.get(key) ?? 0,
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
  private routeShared(key: string, message: Message, perClient: Map<string, Message[]>, { exclude, runs }: { exclude?: string; runs?: SharedRuns } = {}): void {
    const online = (id: string): boolean => this.isOnline(id);
    const member = runs ? this.shared.pickInRun(key, online, runs) : this.shared.pick(key, online, exclude);
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
    this.tables.pushGroupMessage(key, deliveryOf(message, message.qos, false));
    const queued = (this.groupQueued.get(key) ?? 0) + 1;
    const max = getConfig(this.env).limits.maxQueuedMessages;
    if (queued > max) {
      this.tables.dropGroupHead(key, queued - max);
      this.dropped += queued - max;
      this.counters.drop("sharedQueueFull", queued - max);
    }
    this.groupQueued.set(key, Math.min(queued, max));
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
    return { subscriptions: this.trie.size, sessions: this.targets.size, retained: this.retainedTopics(), dropped: this.dropped };
  }

  /** Retained messages, one per topic: the stored rows, and the presences whose topic has none. */
  private retainedTopics(): number {
    return this.retained.size + this.tables.presencesAlone();
  }

  /**
   * Fan-in coalescing: while a `deliver` call to a target is in flight, later messages for it
   * (from other publishers' batches) wait and travel together in the next call, in arrival
   * order. No timer: the in-flight call is the batching window, as on the publish side.
   */
  private deliverTo(account: string, clientId: string, batch: Message[]): Promise<void> {
    if (!this.inFlight.has(clientId)) return this.sendTo(account, clientId, batch);
    let next = this.waiting.get(clientId);
    if (!next) {
      let resolve!: () => void;
      const done = new Promise<void>((r) => (resolve = r));
      next = { batch: [], done, resolve };
      this.waiting.set(clientId, next);
    }
    next.batch.push(...batch);
    return next.done;
  }

  private async sendTo(account: string, clientId: string, batch: Message[]): Promise<void> {
    this.inFlight.add(clientId);
    await this.deliverNow(account, clientId, batch);
    const next = this.waiting.get(clientId);
    if (!next) {
      this.inFlight.delete(clientId);
      return;
    }
    this.waiting.delete(clientId);
    void this.sendTo(account, clientId, next.batch).then(next.resolve);
  }

  /** Never rejects: a failure stays with its target (queued for a persistent session, else dropped and counted). */
  private async deliverNow(account: string, clientId: string, batch: Message[]): Promise<void> {
    const target = this.targets.get(clientId);
    if (!target) return;
    if (target.conn) {
      let result: DeliverResult | "failed";
      try {
        result = await this.connection(clientId, target.conn).deliver(clientId, batch);
      } catch (err) {
        this.stubs.delete(clientId);
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

  /** The stub of `clientId`'s connection `conn` (see `stubs`). */
  private connection(clientId: string, conn: string): ReturnType<typeof connectionStub> {
    const kept = this.stubs.get(clientId);
    if (kept?.conn === conn) return kept.stub;
    const stub = connectionStub(this.env, conn);
    this.stubs.set(clientId, { conn, stub });
    return stub;
  }

  /** Every write of a target sets its presence: none unless given (a presence lasts one attach). */
  private setTarget(clientId: string, target: TargetRecord, presence: Presence | null = null): void {
    if (this.stubs.get(clientId)?.conn !== target.conn) this.stubs.delete(clientId);
    this.targets.set(clientId, target);
    this.tables.putTarget(clientId, target, presence);
  }

  private addSubscription(clientId: string, filter: string, options: SubOptions): void {
    const shared = parseSharedFilter(filter);
    if (shared) {
      if (this.shared.join(shared.group, shared.filter, clientId, options.qos)) {
        this.trie.add(shared.filter, sharedKey(shared.group, shared.filter), { qos: 0 });
      }
    } else this.trie.add(filter, clientId, options);
    let filters = this.filtersByClient.get(clientId);
    if (!filters) this.filtersByClient.set(clientId, (filters = new Map()));
    filters.set(filter, options);
  }

  private removeSubscription(clientId: string, filter: string): void {
    const shared = parseSharedFilter(filter);
    if (shared) {
      if (this.shared.leave(shared.group, shared.filter, clientId)) {
        const key = sharedKey(shared.group, shared.filter);
        this.trie.remove(shared.filter, key);
        // No member left: its queued messages have nowhere to go.
        if (this.groupQueued.delete(key)) this.tables.deleteGroup(key);
      }
    } else this.trie.remove(filter, clientId);
    const filters = this.filtersByClient.get(clientId);
    if (filters) {
      filters.delete(filter);
      if (filters.size === 0) this.filtersByClient.delete(clientId);
    }
    this.tables.deleteSubscription(clientId, filter);
  }

  private removeAllSubscriptions(clientId: string): void {
    const filters = this.filtersByClient.get(clientId);
    if (!filters) return;
    for (const filter of [...filters.keys()]) this.removeSubscription(clientId, filter);
  }

  private forgetNow(clientId: string): void {
    this.removeAllSubscriptions(clientId);
    this.targets.delete(clientId);
    this.stubs.delete(clientId);
    this.tables.deleteTarget(clientId);
    log("debug", "router.forget", { clientId });
  }

  // --- admin views (src/http/admin-views.ts: clients, sessions, retained, stats, metrics) ---

  /**
   * One page of this router's retained messages matching `filter`, in topic order; `cursor`
   * is where the previous page stopped (a topic), and the answer's `cursor` is null on the
   * last page. Payloads up to ADMIN_PAYLOAD_INLINE_BYTES come inline, in base64.
   */
  async listRetained(opts: { filter: string; cursor?: string; limit: number }): Promise<{
    items: Array<{ topic: string; qos: QoS; bytes: number; payloadBase64?: string; expiresAt?: number }>;
    cursor: string | null;
  }> {
    const from = opts.cursor === undefined ? null : { after: opts.cursor };
    const page = this.retained.page(opts.filter, from, { qos: 2, maxBytes: Number.MAX_SAFE_INTEGER, maxMessages: opts.limit, now: Date.now() });
    return {
      items: page.messages.map((m) => ({
        topic: m.topic,
        qos: m.qos,
        bytes: m.payload.byteLength,
        ...(m.payload.byteLength <= ADMIN_PAYLOAD_INLINE_BYTES ? { payloadBase64: base64(m.payload) } : {}),
        ...(m.expiresAt === undefined ? {} : { expiresAt: m.expiresAt }),
      })),
      cursor: page.next?.after ?? null,
    };
  }

  /** Deletes one retained message (no subscriber is told); false when the topic had none. */
  async deleteRetained(topic: string): Promise<boolean> {
    const now = Date.now();
    const found = this.retained.page(topic, null, { qos: 2, maxBytes: Number.MAX_SAFE_INTEGER, maxMessages: 1, now });
    if (!found.messages.some((m) => m.topic === topic)) return false;
    this.retained.store({ topic, payload: new Uint8Array(0), qos: 0, retain: true }, now);
    if (topic.startsWith(MONITOR_PREFIX)) this.tables.clearPresence(topic.slice(MONITOR_PREFIX.length));
    return true;
  }

  /**
   * One page of the sessions this router routes to, in client id order: `online` only those
   * with a live connection, `persistent` only those that outlive it. `conn` is the connection
   * object's id (for its `describe`). Every shard knows every session: shard 0 answers.
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

  /** This router's counters and sizes (GET .../stats, GET /admin/v1/metrics): one count of the presences, no other read. */
  async adminStats(): Promise<RouterAdminStats> {
    let online = 0;
    let offline = 0;
    for (const t of this.targets.values()) {
      if (t.conn) online++;
      else if (t.persistent) offline++;
    }
    const usage = this.retained.usage;
    return {
      counters: this.counters.snapshot(),
      retained: { count: usage.count, bytes: usage.bytes, monitorEvents: this.retainedTopics() - usage.count },
      subscriptions: this.trie.size,
      sessions: { online, offline },
    };
  }

  private countConnection(event: "connect" | "disconnect", account: string, clientId: string): void {
    this.counters.add(event === "connect" ? "connects" : "disconnects", 1);
    this.writePoint(connectionPoint(event, account, clientId));
    this.persistCounters();
  }

  private countRetainedSent(n: number): void {
    this.counters.add("retainedSent", n);
    this.counters.add("messagesOut", n);
  }

  /** After a publish batch: the counts, one Analytics Engine point (`before` is set only with the binding), the snapshot when due. */
  private countBatch(account: string, messages: Message[], unmatched: number, before: CounterValues | null): void {
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

  /** The snapshot, when due: one row, whatever changed. */
  private persistCounters(): void {
    if (!this.counters.due(Date.now())) return;
    const sql = this.ctx.storage.sql;
    sql.exec("INSERT OR REPLACE INTO router_state (key, value) VALUES (?, ?)", COUNTERS_KEY, JSON.stringify(this.counters.values));
    if (this.legacyCounterRows) {
      sql.exec("DELETE FROM router_meta WHERE key >= ? AND key < ?", COUNTER_ROW_PREFIX, `${COUNTER_ROW_PREFIX}\uffff`);
      this.legacyCounterRows = false;
    }
  }
}

/** What `adminStats` answers: one router's (one shard's) figures. */
export interface RouterAdminStats {
  counters: CounterValues;
  /** The retained quota's use (monitoring events apart, as the quota counts them). */
  retained: { count: number; bytes: number; monitorEvents: number };
  subscriptions: number;
  sessions: { online: number; offline: number };
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

function sameOptions(a: SubOptions | undefined, b: SubOptions): boolean {
  return a !== undefined && a.qos === b.qos && a.nl === b.nl && a.rap === b.rap && a.rh === b.rh && a.id === b.id;
}

function minQoS(a: QoS, b: QoS): QoS {
  return a < b ? a : b;
}
