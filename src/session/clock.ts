import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { connectionStub } from "../stubs";
import { errorMessage, log } from "../log";
import { loadConfig } from "../config";
import { meterStorage } from "../metrics";
import { ClockSchedule } from "./clock-schedule";

/** Connections one account's clock watches at most; past it a connection keeps its own exact alarm. */
export const MAX_CLOCK_ENTRIES = 100_000;
/** Checks in flight at once (a storm's connections fall due in the same second). */
const CHECKS_AT_ONCE = 64;
/** A connection that could not be asked is asked again this much later. */
const RETRY_MS = 5_000;
/** How often the alarm looks for a lost memory while the clock watches anything. */
export const SWEEP_MS = 60_000;

/**
 * The account's keep-alive clock (`KEEPALIVE_CLOCK` = "shared"): the exact keep-alive deadline
 * of every connection of the account that has a keep alive, in memory, on one timer. At a
 * connection's deadline it asks the connection (`keepAliveCheck`), which closes itself if it
 * has been silent for 1.5 × keep alive, or answers its next deadline. A talking connection then
 * costs one request per keep-alive period, where its own alarm costs a run and a `setAlarm`
 * row, and the connection keeps no alarm of its own.
 *
 * Which connections it watches is also stored, one row per connection (written when it is first
 * watched, deleted when its check finds it ended), not their deadlines. While it watches any,
 * its alarm runs every SWEEP_MS. The first run of a new instance (after a restart took the
 * memory, e.g. a deploy, which also takes every socket) checks every stored connection at once,
 * so a socket that vanished is ended and its will published within a minute, and a live one is
 * watched again; later runs read one row.
 *
 * Its pending timer keeps it active (billed duration) while it watches anything.
 */
export class KeepAliveClock extends DurableObject<Env> {
  private readonly schedule = new ClockSchedule(MAX_CLOCK_ENTRIES);
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = Number.POSITIVE_INFINITY;
  private readonly queue: string[] = [];
  private running = 0;
  /** Connections taken out of the schedule for their check (queued or asked). */
  private readonly checking = new Set<string>();
  /**
   * Connections read back from the stored list by this instance's sweep: a restart took the memory
   * of their watch, and their sockets with it. Only their checks may hand back a kept meta: a
   * connection watched by this instance that has no socket has ended (its row waits for its check).
   */
  private readonly reloaded = new Set<string>();
  /** Whether this instance armed the sweep alarm (memory only: after a restart the next watch arms it again). */
  private sweeping = false;
  /** Whether this instance has read the stored list: memory is lost only with the instance, so once is enough. */
  private swept = false;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    meterStorage(ctx, env, "clock");
    loadConfig(env); // LOG_LEVEL for this isolate
    const sql = ctx.storage.sql;
    sql.exec("CREATE TABLE IF NOT EXISTS watched (conn TEXT PRIMARY KEY, meta TEXT) WITHOUT ROWID");
    // A table from before the meta column gets it.
    if (!sql.exec<{ name: string }>("PRAGMA table_info(watched)").toArray().some((c) => c.name === "meta")) sql.exec("ALTER TABLE watched ADD COLUMN meta TEXT");
  }

  /**
   * Watches (or moves) `conn`'s deadline; false when the clock is full (the connection then keeps
   * its exact alarm). `meta`: the connection's meta (`encodeConnMeta`), kept in its row when the
   * connection stores none: after a restart, the check of a connection whose socket is gone hands
   * it back so the connection can publish its will and end its session.
   */
  async watch(conn: string, deadline: number, meta?: string): Promise<boolean> {
    const known = this.schedule.has(conn);
    const ok = this.schedule.set(conn, deadline);
    if (!ok) {
      log("warn", "clock.full", { watched: this.schedule.size, max: MAX_CLOCK_ENTRIES });
      return false;
    }
    // One row per connection, when it is first watched (a moved deadline writes nothing).
    if (!known) this.ctx.storage.sql.exec("INSERT OR REPLACE INTO watched (conn, meta) VALUES (?, ?)", conn, meta ?? null);
    await this.armSweep();
    this.arm();
    return true;
  }

  /** Stops watching `conn` (its connection ended). */
  async unwatch(conn: string): Promise<void> {
    this.schedule.delete(conn);
    this.forget(conn);
    this.arm();
  }

  /** Stops watching `conn` and hands over the meta its row kept (a takeover of a connection whose socket a restart took). */
  async claim(conn: string): Promise<string | null> {
    const meta = this.keptMeta(conn);
    await this.unwatch(conn);
    return meta;
  }

  /**
   * The sweep: the first alarm of an instance checks now every stored connection it does not
   * know (a restart took the memory of the one before); later ones only look whether any is
   * still stored, and re-arm while one is.
   */
  override async alarm(): Promise<void> {
    this.sweeping = false;
    const sql = this.ctx.storage.sql;
    if (!this.swept) {
      this.swept = true;
      const now = Date.now();
      let lost = 0;
      for (const { conn } of sql.exec<{ conn: string }>("SELECT conn FROM watched")) {
        if (this.schedule.has(conn) || this.checking.has(conn)) continue;
        this.schedule.set(conn, now, true);
        this.reloaded.add(conn);
        lost++;
      }
      if (lost > 0) log("info", "clock.reload", { connections: lost });
      this.arm();
    }
    if (sql.exec("SELECT 1 FROM watched LIMIT 1").toArray().length > 0) await this.armSweep();
  }

  /** How many connections it watches (tests, operators). */
  async size(): Promise<number> {
    return this.schedule.size;
  }

  private arm(): void {
    const next = this.schedule.next();
    if (next === null) {
      if (this.timer) clearTimeout(this.timer);
      this.timer = null;
      this.timerAt = Number.POSITIVE_INFINITY;
      return;
    }
    if (this.timer && this.timerAt <= next) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = next;
    this.timer = setTimeout(() => this.fire(), Math.max(0, next - Date.now()));
  }

  private fire(): void {
    this.timer = null;
    this.timerAt = Number.POSITIVE_INFINITY;
    for (const conn of this.schedule.takeDue(Date.now())) {
      this.checking.add(conn);
      this.queue.push(conn);
    }
    this.drain();
    this.arm();
  }

  private drain(): void {
    while (this.running < CHECKS_AT_ONCE && this.queue.length > 0) {
      const conn = this.queue.shift() as string;
      this.running++;
      void this.check(conn).finally(() => {
        this.running--;
        this.drain();
      });
    }
  }

  /** One connection's check: its next deadline comes back and is watched, or null (it closed, or it is gone). */
  private async check(conn: string): Promise<void> {
    try {
      const stub = connectionStub(this.env, conn);
      let next = await stub.keepAliveCheck();
      if (next === "meta") next = this.reloaded.has(conn) ? await stub.keepAliveCheck(this.keptMeta(conn) ?? "") : null;
      if (next !== null && next !== "meta") {
        // Alive: watched by this instance from now on.
        this.reloaded.delete(conn);
        this.schedule.set(conn, next, true);
      } else this.forget(conn);
    } catch (err) {
      log("warn", "clock.check_failed", { conn, error: errorMessage(err) });
      this.schedule.set(conn, Date.now() + RETRY_MS, true);
    } finally {
      this.checking.delete(conn);
    }
    this.arm();
  }

  private forget(conn: string): void {
    this.reloaded.delete(conn);
    this.ctx.storage.sql.exec("DELETE FROM watched WHERE conn = ?", conn);
  }

  /** The meta kept in `conn`'s row, if any. */
  private keptMeta(conn: string): string | null {
    const row = this.ctx.storage.sql.exec<{ meta: string | null }>("SELECT meta FROM watched WHERE conn = ?", conn).toArray()[0];
    return row?.meta ?? null;
  }

  private async armSweep(): Promise<void> {
    if (this.sweeping) return;
    this.sweeping = true;
    await this.ctx.storage.setAlarm(Date.now() + SWEEP_MS);
  }
}
