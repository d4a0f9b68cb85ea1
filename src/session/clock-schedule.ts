/**
 * The keep-alive clock's schedule (`clock.ts`): which connection is due for a check when, in
 * one-second buckets, bounded in entries. Pure: the clock object drives it with its timer.
 */

/** Deadlines are checked at the start of the second after them (a check never comes early). */
const bucketOf = (atMs: number): number => Math.ceil(atMs / 1000);

export class ClockSchedule {
  /** conn -> its bucket. */
  private readonly at = new Map<string, number>();
  /** bucket -> its conns. */
  private readonly buckets = new Map<number, Set<string>>();
  /** The buckets in use, ascending. */
  private readonly order: number[] = [];

  constructor(readonly max: number) {}

  get size(): number {
    return this.at.size;
  }

  has(conn: string): boolean {
    return this.at.has(conn);
  }

  /**
   * Schedules (or moves) `conn`'s check for `atMs`; false when the schedule is full and `conn`
   * was not in it. `force`: past the bound too (a connection the clock already watches, whose
   * entry was taken out for its check, is never dropped for a newcomer).
   */
  set(conn: string, atMs: number, force = false): boolean {
    const bucket = bucketOf(atMs);
    const prev = this.at.get(conn);
    if (prev === undefined && !force && this.at.size >= this.max) return false;
    if (prev === bucket) return true;
    if (prev !== undefined) this.leave(conn, prev);
    this.at.set(conn, bucket);
    let set = this.buckets.get(bucket);
    if (!set) {
      this.buckets.set(bucket, (set = new Set()));
      this.order.splice(insertionPoint(this.order, bucket), 0, bucket);
    }
    set.add(conn);
    return true;
  }

  delete(conn: string): void {
    const prev = this.at.get(conn);
    if (prev === undefined) return;
    this.at.delete(conn);
    this.leave(conn, prev);
  }

  /** When the earliest check is due (ms), or null when nothing is scheduled. */
  next(): number | null {
    const first = this.order[0];
    return first === undefined ? null : first * 1000;
  }

  /** Takes every connection due at `nowMs` out of the schedule, earliest first. */
  takeDue(nowMs: number): string[] {
    const due: string[] = [];
    while (this.order.length > 0 && (this.order[0] ?? Infinity) * 1000 <= nowMs) {
      const bucket = this.order.shift() as number;
      for (const conn of this.buckets.get(bucket) ?? []) {
        this.at.delete(conn);
        due.push(conn);
      }
      this.buckets.delete(bucket);
    }
    return due;
  }

  private leave(conn: string, bucket: number): void {
    const set = this.buckets.get(bucket);
    if (!set) return;
    set.delete(conn);
    if (set.size > 0) return;
    this.buckets.delete(bucket);
    const i = insertionPoint(this.order, bucket);
    if (this.order[i] === bucket) this.order.splice(i, 1);
  }
}

/** The first index of `sorted` whose value is not below `v`. */
function insertionPoint(sorted: number[], v: number): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] ?? Infinity) < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
