import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { connectionStub, routerStub } from "../stubs";
import { getConfig, loadConfig } from "../config";
import { errorMessage, log } from "../log";
import { isMessage, type DeliverResult, type Handover, type Message } from "../router/messages";
import type { CloseCause } from "../protocol/codes";
import { count, meterStorage } from "../metrics";
import { limitEvent } from "../monitoring/events";
import { QUEUE_PREFIX, SESSION_META_KEY, queueKey } from "./keys";
import { isRecord } from "../guards";
import type { RateBuckets, SessionAttach, SessionAttached, SessionDetach, SessionOwner } from "./link";
import { fullBucket, take, type Bucket } from "./rate";

/** Keys per storage call, at most (a Durable Object storage limit). */
const STORAGE_BATCH = 128;

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
    if (prev?.will) log("info", "session.will_cancelled", { clientId }); // reconnected within the will delay
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
    await this.ctx.storage.deleteAlarm();

    let carried: Handover = { messages: [], inboundQos2: prev?.inboundQos2 ?? [] };
    if (prev?.owner && prev.owner !== conn) {
      try {
        const taken = await connectionStub(this.env, prev.owner).takeover(clientId);
        carried = { messages: taken.messages, inboundQos2: [...new Set([...carried.inboundQos2, ...taken.inboundQos2])] };
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
    const queued = carried.messages.concat(await this.readQueue(meta));
    if (queued.length > 0) {
      const result: DeliverResult | "failed" = await connectionStub(this.env, conn)
        .deliver(clientId, queued)
        .catch((err: unknown) => {
          log("warn", "session.handover_failed", { clientId, error: errorMessage(err) });
          return "failed" as const;
        });
      if (result === "ok") await this.clearQueue(meta);
      // The carried messages exist nowhere else: they join the queue for the next delivery.
      else if (carried.messages.length > 0) await this.append(meta, carried.messages);
    }
    return { ok: true, sessionPresent, inboundQos2: carried.inboundQos2, ...(buckets ? { buckets } : {}) };
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
      await routerStub(this.env, account).forget(clientId);
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
   */
  async enqueue(clientId: string, messages: Message[]): Promise<void> {
    const meta = this.meta;
    if (!meta || meta.clientId !== clientId) return;
    if (meta.owner) {
      const result: DeliverResult | "failed" = await connectionStub(this.env, meta.owner)
        .deliver(clientId, messages)
        .catch((err: unknown) => {
          log("warn", "session.forward_failed", { clientId, error: errorMessage(err) });
          return "failed" as const;
        });
      if (result === "ok") return;
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
    if (!meta.persistent) return;
    await this.append(meta, messages);
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
        await this.ctx.storage.deleteAll();
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
      await routerStub(this.env, meta.account).publish(meta.account, [meta.will]);
      meta.will = null;
      meta.willAt = null;
      this.saveMeta(meta);
    }
    if (meta.expiresAt === null || meta.expiresAt > now) {
      this.scheduleAlarm(meta);
      return;
    }
    await routerStub(this.env, meta.account).forget(meta.clientId);
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
      routerStub(this.env, meta.account)
        .publish(meta.account, [limitEvent(facts, Date.now(), limit, reason)])
        .catch((err: unknown) => log("warn", "session.announce_failed", { clientId: meta.clientId, error: errorMessage(err) })),
    );
  }

  /** The one alarm: the earlier of the delayed will and the session expiry. */
  private scheduleAlarm(meta: SessionMeta): void {
    const times = [meta.willAt, meta.expiresAt].filter((t): t is number => t !== null);
    if (times.length > 0) void this.ctx.storage.setAlarm(Math.min(...times));
  }

  /** Queues messages durably (the router hears "delivered" only after the write), oldest dropped past the bound. */
  private async append(meta: SessionMeta, messages: Message[]): Promise<void> {
    const max = getConfig(this.env).limits.maxQueuedMessages;
    const keys = messages.map(() => queueKey(meta.tail++));
    // Storage takes at most 128 keys per call.
    for (let i = 0; i < keys.length; i += STORAGE_BATCH) {
      const entries: Record<string, Message> = {};
      keys.slice(i, i + STORAGE_BATCH).forEach((key, j) => {
        const m = messages[i + j];
        if (m) entries[key] = m;
      });
      await this.ctx.storage.put(entries);
    }
    const excess = meta.tail - meta.head - max;
    if (excess > 0) {
      const drop: string[] = [];
      for (let i = 0; i < excess; i++) drop.push(queueKey(meta.head++));
      for (let i = 0; i < drop.length; i += STORAGE_BATCH) await this.ctx.storage.delete(drop.slice(i, i + STORAGE_BATCH));
      meta.dropped += excess;
      log("warn", "session.queue_full", { clientId: meta.clientId, dropped: excess });
      this.announce(meta, "MAX_QUEUED_MESSAGES", `offline queue full: ${excess} oldest message(s) dropped (${meta.dropped} in all)`);
    }
    this.saveMeta(meta);
  }

  private async readQueue(meta: SessionMeta): Promise<Message[]> {
    if (meta.tail === meta.head) return [];
    const map = await this.ctx.storage.list({ prefix: QUEUE_PREFIX });
    const out: Message[] = [];
    const now = Date.now();
    // MQTT 5 message expiry: an expired message is not delivered [MQTT-3.3.2-5].
    for (const value of map.values()) if (isMessage(value) && !(value.expiresAt !== undefined && value.expiresAt <= now)) out.push(value);
    return out;
  }

  private async clearQueue(meta: SessionMeta): Promise<void> {
    if (meta.tail === meta.head) return;
    const keys: string[] = [];
    for (let s = meta.head; s < meta.tail; s++) keys.push(queueKey(s));
    for (let i = 0; i < keys.length; i += STORAGE_BATCH) await this.ctx.storage.delete(keys.slice(i, i + STORAGE_BATCH));
    meta.head = meta.tail;
    this.saveMeta(meta);
  }

  private saveMeta(meta: SessionMeta): void {
    this.meta = meta;
    void this.ctx.storage.put(SESSION_META_KEY, meta);
  }
}
