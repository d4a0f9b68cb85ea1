import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { connectionStub } from "../stubs";
import { loadConfig } from "../config";
import { errorMessage, log } from "../log";
import { meterStorage } from "../metrics";
import type { ClaimResult, ConnectionMode, Identity } from "../auth/identity";
import { isRecord } from "../guards";
import { fullBucket, take, type Bucket } from "./rate";

interface LimiterState {
  mode: ConnectionMode | null;
  /**
   * Client id → the connection object holding its slot. A Map, not a plain object: client
   * ids are free text, and `toString`, `constructor` or `__proto__` as object keys read
   * inherited members (admitting them past the cap, or not counting them at all).
   */
  slots: Map<string, string>;
}

/** Storage form of {@link LimiterState}: the slots as `[clientId, conn]` pairs. */
interface StoredState {
  mode: ConnectionMode | null;
  slots: Array<[string, string]>;
}

/** A slot whose connection was confirmed alive this recently is not asked again. */
const RECHECK_MS = 30_000;

/**
 * Reads the stored state: `slots` as `[clientId, conn]` pairs, or the earlier form, an
 * object `{clientId: {conn}}` (only its own keys, so no prototype member is read as a slot).
 */
export function readState(v: unknown): LimiterState {
  const slots = new Map<string, string>();
  if (!isRecord(v)) return { mode: null, slots };
  if (Array.isArray(v.slots)) {
    for (const entry of v.slots) {
      if (Array.isArray(entry) && typeof entry[0] === "string" && typeof entry[1] === "string") slots.set(entry[0], entry[1]);
    }
  } else if (isRecord(v.slots)) {
    for (const [clientId, slot] of Object.entries(v.slots)) {
      if (isRecord(slot) && typeof slot.conn === "string") slots.set(clientId, slot.conn);
    }
  }
  const mode = v.mode === "single" || v.mode === "multi" ? v.mode : null;
  return { mode: slots.size > 0 ? mode : null, slots };
}

function storedState(state: LimiterState): StoredState {
  return { mode: state.mode, slots: [...state.slots] };
}

/** An HTTP publish allowed now, or refused with how long until the next one would be. */
export type PublishAllowance = { ok: true } | { ok: false; retryAfterMs: number };

/** A token bucket's size and refill rate. */
export interface RateLimit {
  ratePerSecond: number;
  burst: number;
}

/**
 * The connection-limit object of one identity (account + device id or JWT subject), named
 * by `sessionName(account, identity)`. It holds one slot per live client id and the mode
 * those connections use; claims are serialized, so simultaneous connects admit exactly
 * the cap. It also holds the identity's HTTP publish budget, which every Worker isolate
 * serving that identity shares.
 *
 * Dead connections: a connection that ends releases its slot. One that dies without
 * running its end (runtime killed) is found when a claim needs its slot: the limiter asks
 * each slot's connection object whether it still holds a socket (at most once per 30 s per
 * slot within one life of this object; a restart checks again) and frees the dead ones.
 * Without such a claim, the dead connection's own liveness alarm (at most 5 minutes) ends
 * it and releases the slot.
 */
export class ConnectionLimiter extends DurableObject<Env> {
  private state: LimiterState = { mode: null, slots: new Map() };
  /**
   * When each slot's connection last confirmed it is alive. In memory only on purpose: a
   * confirmation says nothing after a restart of the runtime (which is when connections
   * die without releasing), so a fresh instance checks every slot again.
   */
  private readonly checkedAt = new Map<string, number>();
  /**
   * HTTP publish token buckets by identity kind (a device and a JWT subject may share an
   * id, and so this object). In memory: a write per publish would cost more than the
   * publish; an object that restarts (after being idle, or a deploy) starts with a full bucket.
   */
  private readonly publishBuckets = new Map<Identity["kind"], Bucket>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    meterStorage(ctx, env, "limiter");
    loadConfig(env); // LOG_LEVEL for this isolate; a bad var fails the calls that read the config, not the constructor
    void ctx.blockConcurrencyWhile(async () => {
      this.state = readState(await ctx.storage.get("state"));
    });
  }

  /** For GET /health: answers once the object has started and read its storage. */
  async ping(): Promise<true> {
    return true;
  }

  /** Asks for a slot for `clientId` held by connection object `conn`. */
  claim(conn: string, clientId: string, mode: ConnectionMode, max: number): Promise<ClaimResult> {
    return this.serialized(() => this.claimNow(conn, clientId, mode, max));
  }

  /** The connection `conn` ended: its slot (if it still holds it) is free. */
  release(conn: string, clientId: string): Promise<void> {
    return this.serialized(async () => {
      if (this.state.slots.get(clientId) !== conn) return;
      this.state.slots.delete(clientId);
      this.checkedAt.delete(clientId);
      this.save();
    });
  }

  /**
   * Takes one HTTP publish from the identity's token bucket (`limit.burst` saved up,
   * `limit.ratePerSecond` refilled). Synchronous inside the object, so no other call
   * interleaves; one call per HTTP publish.
   */
  async takePublish(kind: Identity["kind"], limit: RateLimit): Promise<PublishAllowance> {
    const now = Date.now();
    let bucket = this.publishBuckets.get(kind);
    if (!bucket) {
      bucket = fullBucket(limit.burst, now);
      this.publishBuckets.set(kind, bucket);
    }
    if (take(bucket, limit.ratePerSecond, limit.burst, now)) return { ok: true };
    return { ok: false, retryAfterMs: Math.ceil(((1 - bucket.tokens) * 1000) / limit.ratePerSecond) };
  }

  /** Current mode and slot count: for tests and the admin API. */
  async stats(): Promise<{ mode: ConnectionMode | null; connections: number }> {
    return { mode: this.state.mode, connections: this.state.slots.size };
  }

  private async claimNow(conn: string, clientId: string, mode: ConnectionMode, max: number): Promise<ClaimResult> {
    let refusal = this.refusal(clientId, mode, max);
    if (refusal) {
      await this.evictDead();
      refusal = this.refusal(clientId, mode, max);
      if (refusal) return { ok: false, reason: refusal };
    }
    this.state.mode = mode;
    // A client id already counted reconnecting (or taking over) keeps its one slot.
    this.state.slots.set(clientId, conn);
    this.checkedAt.set(clientId, Date.now());
    this.save();
    return { ok: true };
  }

  private refusal(clientId: string, mode: ConnectionMode, max: number): "mixed" | "full" | null {
    const count = this.state.slots.size;
    if (count > 0 && this.state.mode !== mode) return "mixed";
    if (mode === "multi" && !this.state.slots.has(clientId) && count >= max) return "full";
    return null;
  }

  /** Frees the slots whose connection object no longer holds a socket. */
  private async evictDead(): Promise<void> {
    const now = Date.now();
    const stale = [...this.state.slots].filter(([clientId]) => now - (this.checkedAt.get(clientId) ?? 0) >= RECHECK_MS);
    if (stale.length === 0) return;
    const alive = await Promise.all(
      stale.map(([clientId, conn]) =>
        connectionStub(this.env, conn)
          .isAlive(clientId)
          .catch((err: unknown) => {
            log("warn", "limiter.check_failed", { clientId, error: errorMessage(err) });
            return true; // unknown: keep the slot rather than over-admit
          }),
      ),
    );
    let changed = false;
    stale.forEach(([clientId, conn], i) => {
      if (this.state.slots.get(clientId) !== conn) return;
      if (alive[i]) {
        this.checkedAt.set(clientId, now);
        return;
      }
      this.state.slots.delete(clientId);
      this.checkedAt.delete(clientId);
      log("info", "limiter.slot_freed", { clientId, conn });
      changed = true;
    });
    if (changed) this.save();
  }

  private save(): void {
    if (this.state.slots.size === 0) this.state.mode = null;
    void this.ctx.storage.put("state", storedState(this.state));
  }

  /** Claims interleave at every await otherwise (input gates open during RPC). */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
