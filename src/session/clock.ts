import { DurableObject } from "cloudflare:workers";
import type { Env } from "../env";
import { connectionStub } from "../stubs";
import { errorMessage, log } from "../log";
import { loadConfig } from "../config";
import { ClockSchedule } from "./clock-schedule";

/** Connections one account's clock watches at most; past it a connection keeps its own exact alarm. */
export const MAX_CLOCK_ENTRIES = 100_000;
/** Checks in flight at once (a storm's connections fall due in the same second). */
const CHECKS_AT_ONCE = 64;
/** A connection that could not be asked is asked again this much later. */
const RETRY_MS = 5_000;

/**
 * The account's keep-alive clock (`KEEPALIVE_CLOCK` = "shared"): the exact keep-alive deadline
 * of every connection of the account that has a keep alive, in memory, on one timer. At a
 * connection's deadline it asks the connection (`keepAliveCheck`), which closes itself if it
 * has been silent for 1.5 × keep alive, or answers its next deadline. A talking connection then
 * costs one request per keep-alive period, where its own alarm costs a run and a `setAlarm`
 * row. Nothing is stored: the connections keep a coarse alarm of their own (`CLOCK_BACKSTOP_SECONDS`)
 * that watches them again here after this object lost its memory, and finds sockets a restart took.
 *
 * Its pending timer keeps it active (billed duration) while it watches anything.
 */
export class KeepAliveClock extends DurableObject<Env> {
  private readonly schedule = new ClockSchedule(MAX_CLOCK_ENTRIES);
  private timer: ReturnType<typeof setTimeout> | null = null;
  private timerAt = Number.POSITIVE_INFINITY;
  private readonly queue: string[] = [];
  private running = 0;

  constructor(ctx: DurableObjectState, env: Env) {
    super(ctx, env);
    loadConfig(env); // LOG_LEVEL for this isolate
  }

  /** Watches (or moves) `conn`'s deadline; false when the clock is full (the connection then keeps its exact alarm). */
  async watch(conn: string, deadline: number): Promise<boolean> {
    const ok = this.schedule.set(conn, deadline);
    if (!ok) log("warn", "clock.full", { watched: this.schedule.size, max: MAX_CLOCK_ENTRIES });
    this.arm();
    return ok;
  }

  /** Stops watching `conn` (its connection ended). */
  async unwatch(conn: string): Promise<void> {
    this.schedule.delete(conn);
    this.arm();
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
    this.queue.push(...this.schedule.takeDue(Date.now()));
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
      const next = await connectionStub(this.env, conn).keepAliveCheck();
      if (next !== null) this.schedule.set(conn, next);
    } catch (err) {
      log("warn", "clock.check_failed", { conn, error: errorMessage(err) });
      this.schedule.set(conn, Date.now() + RETRY_MS);
    }
    this.arm();
  }
}
