import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { connectionStub } from "../stubs";
import { loadConfig } from "../config";
import { errorMessage, log } from "../log";
import { meterStorage } from "../metrics";
import type { ClaimResult, ConnectionMode } from "../auth/identity";
import { isRecord } from "../guards";


interface Slot {
  conn: string;
}

interface LimiterState {
  mode: ConnectionMode | null;
  slots: Record<string, Slot>;
}

/** A slot whose connection was confirmed alive this recently is not asked again. */
const RECHECK_MS = 30_000;

function readState(v: unknown): LimiterState {
  const empty: LimiterState = { mode: null, slots: {} };
  if (!isRecord(v)) return empty;
  const r = v;
  const mode = r.mode === "single" || r.mode === "multi" ? r.mode : null;
  const slots: Record<string, Slot> = {};
  if (isRecord(r.slots)) {
    for (const [clientId, slot] of Object.entries(r.slots)) {
      if (isRecord(slot) && typeof slot.conn === "string") slots[clientId] = { conn: slot.conn };
    }
  }
  return { mode: Object.keys(slots).length > 0 ? mode : null, slots };
}

/**
 * The connection-limit object of one identity (account + JWT subject), named by
 * `sessionName(account, identity)`. It holds one slot per live client id and the mode
 * those connections use; claims are serialized, so simultaneous connects admit exactly
 * the cap.
 *
 * Dead connections: a connection that ends releases its slot. One that dies without
 * running its end (runtime killed) is found when a claim needs its slot: the limiter asks
 * each slot's connection object whether it still holds a socket (at most once per 30 s per
 * slot within one life of this object; a restart checks again) and frees the dead ones.
 * Without such a claim, the dead connection's own liveness alarm (at most 5 minutes) ends
 * it and releases the slot.
 */
export class ConnectionLimiter extends DurableObject<Env> {
  private state: LimiterState = { mode: null, slots: {} };
  /**
   * When each slot's connection last confirmed it is alive. In memory only on purpose: a
   * confirmation says nothing after a restart of the runtime (which is when connections
   * die without releasing), so a fresh instance checks every slot again.
   */
  private readonly checkedAt = new Map<string, number>();
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
      if (this.state.slots[clientId]?.conn !== conn) return;
      delete this.state.slots[clientId];
      this.checkedAt.delete(clientId);
      this.save();
    });
  }

  /** Current mode and slot count: for tests and the admin API. */
  async stats(): Promise<{ mode: ConnectionMode | null; connections: number }> {
    return { mode: this.state.mode, connections: Object.keys(this.state.slots).length };
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
    this.state.slots[clientId] = { conn };
    this.checkedAt.set(clientId, Date.now());
    this.save();
    return { ok: true };
  }

  private refusal(clientId: string, mode: ConnectionMode, max: number): "mixed" | "full" | null {
    const count = Object.keys(this.state.slots).length;
    if (count > 0 && this.state.mode !== mode) return "mixed";
    if (mode === "multi" && !(clientId in this.state.slots) && count >= max) return "full";
    return null;
  }

  /** Frees the slots whose connection object no longer holds a socket. */
  private async evictDead(): Promise<void> {
    const now = Date.now();
    const stale = Object.entries(this.state.slots).filter(([clientId]) => now - (this.checkedAt.get(clientId) ?? 0) >= RECHECK_MS);
    if (stale.length === 0) return;
    const alive = await Promise.all(
      stale.map(([clientId, slot]) =>
        connectionStub(this.env, slot.conn)
          .isAlive(clientId)
          .catch((err: unknown) => {
            log("warn", "limiter.check_failed", { clientId, error: errorMessage(err) });
            return true; // unknown: keep the slot rather than over-admit
          }),
      ),
    );
    let changed = false;
    stale.forEach(([clientId, slot], i) => {
      if (this.state.slots[clientId]?.conn !== slot.conn) return;
      if (alive[i]) {
        this.checkedAt.set(clientId, now);
        return;
      }
      delete this.state.slots[clientId];
      this.checkedAt.delete(clientId);
      log("info", "limiter.slot_freed", { clientId, conn: slot.conn });
      changed = true;
    });
    if (changed) this.save();
  }

  private save(): void {
    if (Object.keys(this.state.slots).length === 0) this.state.mode = null;
    void this.ctx.storage.put("state", this.state);
  }

  /** Claims interleave at every await otherwise (input gates open during RPC). */
  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}
