import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { connectionStub } from "../stubs";
import { accountRouter, shardingOf, type AccountRouter } from "../router/shards";
import { getConfig, loadConfig } from "../config";
import { errorMessage, log } from "../log";
import { isMessage, type DeliverResult, type Message } from "../router/messages";
import type { CloseCause } from "../protocol/codes";
import { count, meterStorage } from "../metrics";
import { limitEvent } from "../monitoring/events";
import { SESSION_META_KEY } from "./keys";
import { clearAll } from "../storage";
import { appendToQueue, dropQueueHead, readQueuePage } from "./queue";
import { isRecord } from "../guards";
import type { RateBuckets, SessionAttach, SessionAttached, SessionDetach, SessionOwner } from "./link";
import { fullBucket, take, type Bucket } from "../limits/rate";

/** Persistent state of one MQTT session, apart from its subscriptions (the router owns those). */
interface SessionMeta {
  account: string;
  clientId: string;
  /** Hex id of the connection object that holds the session's socket now, or null when offline. */
  owner: string | null;
  /** The owner a forward found gone before its detach arrived: its detach still counts. */
  departed?: string | null;
  /**
   * The identity that created the session (kind and id): another identity may not use the
   * client id, resume the session or boot its connection. A device's id is reserved for it.
   */
  identity?: SessionOwner | null;
  persistent: boolean;
  /** Queue bounds: messages are stored under q:<seq> for head <= seq < tail. */
  head: number;
  tail: number;
  /** Messages dropped because the offline queue was full (oldest first). */
  dropped: number;
  /** Sizes (`messageBytes`) of the queued messages, head first; absent in sessions stored before the byte bound. */
  sizes?: number[];
  /** Inbound QoS 2 packet ids received and not yet released, kept for the next connection. */
  inboundQos2: number[];
  /** How long the session outlives its connection (seconds; MQTT 5 session expiry interval). */
  expirySeconds: number;
  /** When an offline session is forgotten (ms), or null. */
  expiresAt: number | null;
  /** An MQTT 5 will waiting for its delay [MQTT-3.1.3-9], and when it is due (ms). */
  will: Message | null;
  willAt: number | null;
}

function isOwner(v: unknown): v is SessionOwner {
  return isRecord(v) && (v.kind === "device" || v.kind === "user" || v.kind === "anonymous") && typeof v.id === "string";
}

function isMeta(v: unknown): v is SessionMeta {
  if (!isRecord(v)) return false;
  const m = v;
  if (!(m.identity === undefined || m.identity === null || isOwner(m.identity))) return false;
  if (!(m.departed === undefined || m.departed === null || typeof m.departed === "string")) return false;
  if (!(m.sizes === undefined || (Array.isArray(m.sizes) && m.sizes.every((x) => typeof x === "number")))) return false;
  return typeof m.account === "string" && typeof m.clientId === "string" && (typeof m.owner === "string" || m.owner === null) &&
    typeof m.persistent === "boolean" && typeof m.head === "number" && typeof m.tail === "number" && typeof m.dropped === "number" &&
    Array.isArray(m.inboundQos2) && m.inboundQos2.every((x) => typeof x === "number") &&
    typeof m.expirySeconds === "number" && (m.expiresAt === null || typeof m.expiresAt === "number") &&
    (m.will === null || isMessage(m.will)) && (m.willAt === null || typeof m.willAt === "number");
}


/** A session with nothing in it but its owner: a device's client id, reserved. */
function reservedMeta(account: string, clientId: string, identity: SessionOwner): SessionMeta {
  return {
    account, clientId, owner: null, departed: null, identity, persistent: false, head: 0, tail: 0, dropped: 0,
    inboundQos2: [], expirySeconds: 0, expiresAt: null, will: null, willAt: null,
  };
}

/**
 * One object per MQTT session (account + client id), named by `sessionName`.
 *
 * It is the single owner of the session's identity across connections: which connection
 * holds it now (takeover closes the previous one), whether it is persistent, and the queue
 * of QoS 1 messages that arrive while it is offline. Online, the router delivers straight
 * to the connection object and this object is not on the path.
 */
export class MqttSession extends DurableObject<Env> {
  private meta: SessionMeta | null = null;
  /**
   * In memory only: the client id's connect rate, and the rate limiters its last connection
   * left. A burst of reconnects keeps this object awake, so memory is enough; once it has been
   * idle long enough to be evicted, the buckets would have refilled anyway.
   */
  private connects: Bucket | null = null;
  private buckets: RateBuckets | null = null;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    meterStorage(ctx, env, "session");
    loadConfig(env); // LOG_LEVEL for this isolate; a bad var fails the calls that read the config, not the constructor
    void ctx.blockConcurrencyWhile(async () => {
      const stored = await ctx.storage.get(SESSION_META_KEY);
      this.meta = isMeta(stored) ? stored : null;
    });
  }

  /**
   * A new connection `conn` claims the session. Closes the previous connection
   * (takeover [MQTT-3.1.4-2]), then hands the queued messages to the new one, durably,
   * before answering. Returns whether a persistent session was present [MQTT-3.2.2-2] and the
   * inbound QoS 2 packet ids the new connection must still recognize.
   */
  async attach(account: string, clientId: string, conn: string, opts: SessionAttach): Promise<SessionAttached> {
    const { cleanStart: clean, expirySeconds, identity } = opts;
    const prev = this.meta;
    const holder = prev?.identity;
    if (holder && (holder.kind !== identity.kind || holder.id !== identity.id)) {
      // Checked before any takeover: a stranger cannot boot the owner either.
      log("warn", "session.not_owner", { account, clientId, owner: `${holder.kind}:${holder.id}`, by: `${identity.kind}:${identity.id}` });
      return { ok: false, reason: "not_owner" };
    }
    const limits = getConfig(this.env).limits;
    const now = Date.now();
    this.connects ??= fullBucket(limits.connectBurstPerClient, now);
    if (!take(this.connects, limits.connectRatePerClient, limits.connectBurstPerClient, now)) {
      log("warn", "session.connect_rate_exceeded", { account, clientId, rate: limits.connectRatePerClient });
      return { ok: false, reason: "rate" };
    }
    const sessionPresent = !clean && prev !== null && prev.persistent;
    // A will waiting for its delay: a connection that resumes the session cancels it [MQTT-3.1.3-9];
    // a clean start ends the session, and the end of a session publishes it (§3.1.2.5, as mosquitto).
    const endedWill = clean ? (prev?.will ?? null) : null;
    if (prev?.will && !endedWill) log("info", "session.will_cancelled", { clientId });
    const meta: SessionMeta = {
      account,
      clientId,
      owner: conn,
      departed: null,
      identity: { kind: identity.kind, id: identity.id },
      persistent: expirySeconds > 0,
      head: prev?.head ?? 0,
      tail: prev?.tail ?? 0,
      dropped: prev?.dropped ?? 0,
      inboundQos2: [],
      expirySeconds,
      expiresAt: null,
      will: null,
      willAt: null,
    };
    // Owner first: messages arriving while the old connection closes are forwarded to the new one.
    this.saveMeta(meta);
    // Only a stored session can have an alarm (its expiry or delayed will; deleteAll clears it with the rest).
    if (prev) await this.ctx.storage.deleteAlarm();
    if (endedWill) {
      await this.router(account).publish([endedWill]).catch((err: unknown) => log("warn", "session.will_failed", { clientId, error: errorMessage(err) }));
    }

    // A taken-over connection hands over its unfinished messages in pages: the first comes with
    // the takeover's answer, the rest page by page as they are passed on.
    let inboundQos2 = prev?.inboundQos2 ?? [];
    let first: Message[] = [];
    let nextPage: (() => Promise<{ messages: Message[]; more: boolean }>) | null = null;
    if (prev?.owner && prev.owner !== conn) {
      try {
        const old = connectionStub(this.env, prev.owner);
        const taken = await old.takeover(clientId, { cleanStart: clean, account });
        first = taken.messages;
        inboundQos2 = [...new Set([...inboundQos2, ...taken.inboundQos2])];
        if (taken.more) nextPage = () => old.nextHandoverPage();
      } catch (err) {
        // The old object is unreachable; its alarm later hands its messages back through detach().
        log("warn", "session.takeover_failed", { clientId, error: errorMessage(err) });
      }
    }

    const buckets = this.buckets ?? undefined;
    this.buckets = null;
    if (clean) {
      await this.clearQueue(meta);
      return { ok: true, sessionPresent, inboundQos2: [], ...(buckets ? { buckets } : {}) };
    }
    await this.handOver(meta, conn, first, nextPage);
    return { ok: true, sessionPresent, inboundQos2, ...(buckets ? { buckets } : {}) };
  }

  /**
   * Hands the new connection what the session kept, oldest first, in pages bounded in bytes
   * (each page durable at the connection before the next is read): the messages carried from
   * a taken-over connection, then the queue. What the connection cannot take stays queued.
   */
  private async handOver(
    meta: SessionMeta,
    conn: string,
    first: Message[],
    nextPage: (() => Promise<{ messages: Message[]; more: boolean }>) | null,
  ): Promise<void> {
    const deliver = (page: Message[]): Promise<DeliverResult | "failed"> =>
      connectionStub(this.env, conn)
        .deliver(meta.clientId, page)
        .catch((err: unknown) => {
          log("warn", "session.handover_failed", { clientId: meta.clientId, error: errorMessage(err) });
          return "failed" as const;
        });
    let failed = false;
    for (let page = first, more = nextPage !== null; ; ) {
      if (page.length > 0) {
        if (!failed && (await deliver(page)) !== "ok") failed = true;
        // The carried messages exist nowhere else: what the connection did not take joins the queue.
        if (failed) await this.append(meta, page);
      }
      if (!more || !nextPage) break;
      ({ messages: page, more } = await nextPage().catch(() => ({ messages: [], more: false })));
    }
    if (failed) return;
    while (meta.head < meta.tail) {
      const { messages, next } = await readQueuePage(this.ctx.storage, meta);
      if (messages.length > 0 && (await deliver(messages)) !== "ok") return;
      await this.dropHead(meta, next);
    }
  }

  /**
   * Reserves this client id for a device (admin provisioning): only that device may use it.
   * A session another identity holds under the id ends (its connection is closed, its
   * subscriptions forgotten); the device's own session is kept.
   */
  async reserve(account: string, clientId: string, owner: SessionOwner): Promise<void> {
    const meta = this.meta;
    if (meta?.identity?.kind === owner.kind && meta.identity.id === owner.id) return;
    if (meta?.owner) await connectionStub(this.env, meta.owner).close("notAuthorized").catch(() => false);
    if (meta) {
      await this.router(account).forget(clientId);
      await this.ctx.storage.deleteAll();
    }
    this.saveMeta(reservedMeta(account, clientId, owner));
  }

  /** The reservation ends (device deleted): the client id is free again once no session uses it. */
  async unreserve(): Promise<void> {
    const meta = this.meta;
    if (!meta) return;
    if (meta.owner === null && !meta.persistent) {
      await this.ctx.storage.deleteAll();
      this.meta = null;
    } else this.saveMeta({ ...meta, identity: null });
  }

  /**
   * Messages for this session while the router saw it offline (or its connection gone).
   * Forwarded to the owner when one is online again, else queued, oldest dropped past the limit.
   * Returns how many queued messages that drop cost (the router counts them).
   */
  async enqueue(clientId: string, messages: Message[]): Promise<number> {
    const meta = this.meta;
    if (!meta || meta.clientId !== clientId) return 0;
    if (meta.owner) {
      const result: DeliverResult | "failed" = await connectionStub(this.env, meta.owner)
        .deliver(clientId, messages)
        .catch((err: unknown) => {
          log("warn", "session.forward_failed", { clientId, error: errorMessage(err) });
          return "failed" as const;
        });
      if (result === "ok") return 0;
      if (result === "gone") {
        // The connection ended and its detach has not arrived yet: it still counts when it does.
        meta.departed = meta.owner;
        meta.owner = null;
        meta.expiresAt = Date.now() + meta.expirySeconds * 1000;
        this.saveMeta(meta);
        this.scheduleAlarm(meta);
      }
      // "failed": the connection is alive but could not take them now: they wait in the queue.
    }
    if (!meta.persistent) return 0;
    return this.append(meta, messages);
  }

  /**
   * The connection `conn` ended. `handover` holds the messages it had not finished and the
   * inbound QoS 2 ids: they stay with a session that outlives its connection
   * (`expirySeconds` > 0). `delayedWill` is an MQTT 5 will to publish after its delay unless
   * the session reconnects first; it goes out at once if the session expires first.
   */
  async detach(conn: string, opts: SessionDetach): Promise<void> {
    const { handover, expirySeconds, delayedWill } = opts;
    if (opts.buckets) this.buckets = opts.buckets;
    const meta = this.meta;
    if (!meta) return;
    if (meta.owner === conn || (meta.owner === null && meta.departed === conn)) {
      if (expirySeconds <= 0) {
        // A clean session stored its meta alone: that one row goes, without a deleteAll.
        await clearAll(this.ctx.storage, SESSION_META_KEY);
        this.meta = null;
        // A device's client id stays reserved for it.
        if (meta.identity?.kind === "device") this.saveMeta(reservedMeta(meta.account, meta.clientId, meta.identity));
        return;
      }
      const now = Date.now();
      meta.owner = null;
      meta.departed = null;
      meta.persistent = true;
      meta.expirySeconds = expirySeconds;
      meta.inboundQos2 = handover.inboundQos2;
      meta.expiresAt = now + expirySeconds * 1000;
      if (delayedWill) {
        meta.will = delayedWill.message;
        meta.willAt = now + Math.min(delayedWill.delaySeconds, expirySeconds) * 1000;
      }
      this.saveMeta(meta);
      this.scheduleAlarm(meta);
    }
    // A connection taken over while unreachable hands its messages back late: they still belong here.
    if (handover.messages.length > 0 && meta.persistent) await this.enqueue(meta.clientId, handover.messages);
  }

  /** Closes the session's live connection, if any (admin kick, disabled or deleted device). */
  async close(cause: CloseCause, opts: { publishWill?: boolean } = {}): Promise<boolean> {
    const owner = this.meta?.owner;
    if (!owner) return false;
    return connectionStub(this.env, owner).close(cause, opts);
  }

  /** Queue length and drop count, for tests and the admin API. */
  async stats(): Promise<{ online: boolean; persistent: boolean; queued: number; dropped: number } | null> {
    const meta = this.meta;
    if (!meta) return null;
    return { online: meta.owner !== null, persistent: meta.persistent, queued: meta.tail - meta.head, dropped: meta.dropped };
  }

  /** A delayed will falling due, then session expiry for an offline session: forget it everywhere. */
  override async alarm(): Promise<void> {
    count(this.env, "alarmRun", "session");
    const meta = this.meta;
    if (!meta || meta.owner) return;
    const now = Date.now();
    if (meta.will && meta.willAt !== null && meta.willAt <= now) {
      await this.router(meta.account).publish([meta.will]);
      meta.will = null;
      meta.willAt = null;
      this.saveMeta(meta);
    }
    if (meta.expiresAt === null || meta.expiresAt > now) {
      this.scheduleAlarm(meta);
      return;
    }
    await this.router(meta.account).forget(meta.clientId);
    this.announce(meta, "SESSION_EXPIRY_SECONDS", `session expired after ${meta.expirySeconds} s offline`);
    await this.ctx.storage.deleteAll();
    this.meta = null;
    if (meta.identity?.kind === "device") this.saveMeta(reservedMeta(meta.account, meta.clientId, meta.identity));
    log("info", "session.expired", { account: meta.account, clientId: meta.clientId });
  }

  /** A LimitExceeded monitoring event for this session (fire and forget: monitoring never blocks the queue). */
  private announce(meta: SessionMeta, limit: string, reason: string): void {
    const facts = { clientId: meta.clientId, user: "", addr: "", protocol: "", connectedAt: null };
    this.ctx.waitUntil(
      this.router(meta.account)
        .publish([limitEvent(facts, Date.now(), limit, reason)])
        .catch((err: unknown) => log("warn", "session.announce_failed", { clientId: meta.clientId, error: errorMessage(err) })),
    );
  }

  /** The account's router (its shards, if any). */
  private router(account: string): AccountRouter {
    return accountRouter(this.env, account, shardingOf(getConfig(this.env).limits));
  }

  /** The one alarm: the earlier of the delayed will and the session expiry. */
  private scheduleAlarm(meta: SessionMeta): void {
    const times = [meta.willAt, meta.expiresAt].filter((t): t is number => t !== null);
    if (times.length > 0) void this.ctx.storage.setAlarm(Math.min(...times));
  }

  /** Queues messages durably; past a bound the oldest go (counted, logged, LimitExceeded). */
  private async append(meta: SessionMeta, messages: Message[]): Promise<number> {
    const first = meta.tail;
    const drop = await appendToQueue(this.ctx.storage, meta, messages, getConfig(this.env).limits);
    if (drop) {
      meta.dropped += drop.count;
      log("warn", "session.queue_full", { clientId: meta.clientId, dropped: drop.count, bound: drop.bound, first });
      this.announce(meta, drop.bound, `offline queue full: ${drop.count} oldest message(s) dropped (${meta.dropped} in all)`);
    }
    this.saveMeta(meta);
    return drop?.count ?? 0;
  }

  private async dropHead(meta: SessionMeta, next: number): Promise<void> {
    await dropQueueHead(this.ctx.storage, meta, next);
    this.saveMeta(meta);
  }

  private async clearQueue(meta: SessionMeta): Promise<void> {
    if (meta.tail === meta.head) return;
    await this.dropHead(meta, meta.tail);
  }

  private saveMeta(meta: SessionMeta): void {
    this.meta = meta;
    void this.ctx.storage.put(SESSION_META_KEY, meta);
  }
}
