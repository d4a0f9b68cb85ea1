/**
 * Billable-unit counters for the benchmark (`npm run bench`, bench/README.md).
 *
 * Active only when the var `BENCH_COUNTERS` is "1" (the bench passes `--var BENCH_COUNTERS:1`
 * to `wrangler dev`); otherwise every call returns after one boolean test and the storage is
 * left untouched. The counts live in module state: under `wrangler dev` the Worker and every
 * Durable Object of the script run in one isolate, so `GET /__bench/counters` (src/http/bench.ts)
 * sees the counts of all objects. On Cloudflare each isolate would keep its own partial counts:
 * this is a local measuring tool, not production telemetry.
 *
 * What is counted, following Cloudflare's Durable Objects billing:
 * - `doRpc`: an RPC method call on a Durable Object stub (each is one billed request), counted
 *   by the caller through the stub helpers of src/env.ts (`meterStub`), with the object and
 *   method as detail (`router.publish`). A method an object calls on itself is not an RPC and
 *   is not counted.
 * - `doFetch`: an HTTP request to a Durable Object (the WebSocket upgrade), one billed request,
 *   counted by the receiving object.
 * - `wsIn`: an incoming WebSocket message (billed as 1/20 of a request).
 * - `alarmRun`: an alarm invocation (one billed request).
 * - `alarmSet`: a `setAlarm()` (billed as one row written, and counted in `rowsWritten` too).
 * - `rowsRead` / `rowsWritten`: key-value storage calls on SQLite-backed objects: one row per
 *   key read, written or deleted; `list()` reads one row per entry returned; `deleteAll()`
 *   writes one row per key it removes. SQL statements (the router's tables) count what
 *   SQLite reports for them, index updates included.
 * - `alarmDelete`: `deleteAlarm()` calls (not priced: the pricing page bills only `setAlarm`).
 */
/** The one var the counters read. */
export interface MetricsBindings {
  BENCH_COUNTERS?: string;
}

export type BillableUnit = "doRpc" | "doFetch" | "wsIn" | "alarmRun" | "alarmSet" | "alarmDelete" | "rowsRead" | "rowsWritten";

export interface CounterSnapshot {
  enabled: boolean;
  /** Milliseconds since the counters were last reset. */
  sinceMs: number;
  totals: Record<BillableUnit, number>;
  /** `<unit>:<where>` → count, e.g. `doRpc:router.publish`, `rowsWritten:connection`. */
  detail: Record<string, number>;
}

const UNITS: readonly BillableUnit[] = ["doRpc", "doFetch", "wsIn", "alarmRun", "alarmSet", "alarmDelete", "rowsRead", "rowsWritten"];

/** undefined until the first call reads the var; vars are fixed for the life of an isolate. */
let enabled: boolean | undefined;
const totals = new Map<BillableUnit, number>();
const detail = new Map<string, number>();
let since = Date.now();

/** Whether counting is on (`BENCH_COUNTERS="1"`). */
export function countersEnabled(env: MetricsBindings): boolean {
  if (enabled === undefined) enabled = env.BENCH_COUNTERS === "1";
  return enabled;
}

function add(unit: BillableUnit, n: number, where: string): void {
  totals.set(unit, (totals.get(unit) ?? 0) + n);
  const key = `${unit}:${where}`;
  detail.set(key, (detail.get(key) ?? 0) + n);
}

/** Counts `n` billable units of `unit`, attributed to `where` (object and method). */
export function count(env: MetricsBindings, unit: BillableUnit, where: string, n = 1): void {
  if (enabled === undefined) enabled = env.BENCH_COUNTERS === "1";
  if (!enabled || n === 0) return;
  add(unit, n, where);
}

export function snapshot(): CounterSnapshot {
  const t = {} as Record<BillableUnit, number>;
  for (const u of UNITS) t[u] = totals.get(u) ?? 0;
  return { enabled: enabled === true, sinceMs: Date.now() - since, totals: t, detail: Object.fromEntries(detail) };
}

export function resetCounters(): void {
  totals.clear();
  detail.clear();
  since = Date.now();
}

/**
 * Counts the RPC method calls made through one Durable Object stub, in bench mode (a Proxy
 * that counts, then forwards the call unchanged); outside bench mode returns `stub` itself.
 * `fetch` is left to the receiving object to count.
 */
export function meterStub<T extends object>(env: MetricsBindings, stub: T, name: string): T {
  if (!countersEnabled(env)) return stub;
  // One counting wrapper per method, made at its first call: the bench's counting should cost
  // the measured broker as little as it can (the router keeps its stubs).
  const wrappers = new Map<string, (...args: unknown[]) => unknown>();
  return new Proxy(stub, {
    get(target, prop) {
      const kept = typeof prop === "string" ? wrappers.get(prop) : undefined;
      if (kept) return kept;
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof prop !== "string" || prop === "fetch" || prop === "then" || typeof value !== "function") return value;
      const where = `${name}.${prop}`;
      const wrapper = (...args: unknown[]): unknown => {
        add("doRpc", 1, where);
        return Reflect.apply(value, target, args);
      };
      wrappers.set(prop, wrapper);
      return wrapper;
    },
  });
}

type KeyArg = string | string[];

function keyCount(keys: KeyArg): number {
  return Array.isArray(keys) ? keys.length : 1;
}

/**
 * Meters the key-value storage and alarm calls of one Durable Object in bench mode, by
 * wrapping the methods of its `ctx.storage` (the same object for the object's whole life).
 * Call once, first thing in the constructor. Outside bench mode it does nothing.
 */
export function meterStorage(ctx: DurableObjectState, env: MetricsBindings, where: string): void {
  if (!countersEnabled(env)) return;
  const s = ctx.storage;
  const get = s.get.bind(s) as (keys: KeyArg, opts?: DurableObjectGetOptions) => Promise<unknown>;
  const put = s.put.bind(s) as (a: string | Record<string, unknown>, b?: unknown, c?: DurableObjectPutOptions) => Promise<void>;
  const del = s.delete.bind(s) as (keys: KeyArg, opts?: DurableObjectPutOptions) => Promise<unknown>;
  const list = s.list.bind(s) as (opts?: DurableObjectListOptions) => Promise<Map<string, unknown>>;
  const deleteAll = s.deleteAll.bind(s);
  const setAlarm = s.setAlarm.bind(s);
  const deleteAlarm = s.deleteAlarm.bind(s);
  Object.assign(s, {
    get: (keys: KeyArg, opts?: DurableObjectGetOptions) => {
      add("rowsRead", keyCount(keys), where);
      return get(keys, opts);
    },
    put: (a: string | Record<string, unknown>, b?: unknown, c?: DurableObjectPutOptions) => {
      add("rowsWritten", typeof a === "string" ? 1 : Object.keys(a).length, where);
      return put(a, b, c);
    },
    delete: (keys: KeyArg, opts?: DurableObjectPutOptions) => {
      add("rowsWritten", keyCount(keys), where);
      return del(keys, opts);
    },
    list: async (opts?: DurableObjectListOptions) => {
      const result = await list(opts);
      add("rowsRead", result.size, where);
      return result;
    },
    deleteAll: async (opts?: DurableObjectPutOptions) => {
      // Bench mode only: an uncounted list() to learn how many rows the delete removes.
      add("rowsWritten", (await list()).size, where);
      return deleteAll(opts);
    },
    setAlarm: (time: number | Date, opts?: DurableObjectSetAlarmOptions) => {
      add("alarmSet", 1, where);
      add("rowsWritten", 1, where);
      return setAlarm(time, opts);
    },
    deleteAlarm: (opts?: DurableObjectSetAlarmOptions) => {
      add("alarmDelete", 1, where);
      return deleteAlarm(opts);
    },
  });
  meterSql(s.sql, where);
}

/**
 * SQL statements (the router's tables): rows read and written as SQLite reports them,
 * secondary-index updates included (Cloudflare bills those as rows written too). Bench mode
 * only: each statement's result is read whole so its counts are known before it returns.
 */
function meterSql(sql: SqlStorage, where: string): void {
  const exec = sql.exec.bind(sql);
  Object.assign(sql, {
    exec: (query: string, ...bindings: unknown[]) => {
      // The local runtime's own bookkeeping (Miniflare stores each named object's name in a table of
      // its own, 3 rows written on an object's first request): not the broker's, and Cloudflare has no such table.
      if (query.includes("__miniflare_")) return exec(query, ...bindings);
      const cursor = exec(query, ...bindings);
      const rows = cursor.toArray();
      add("rowsRead", cursor.rowsRead, where);
      add("rowsWritten", cursor.rowsWritten, where);
      return {
        toArray: () => rows,
        one: () => {
          if (rows.length !== 1) throw new Error(`one(): ${rows.length} rows`);
          return rows[0];
        },
        [Symbol.iterator]: () => rows[Symbol.iterator](),
        columnNames: cursor.columnNames,
        rowsRead: cursor.rowsRead,
        rowsWritten: cursor.rowsWritten,
      };
    },
  });
}
