/**
 * The admin views of one account's routing, whatever its shard count (shards.ts): sessions
 * from shard 0 (every shard knows every session), retained pages merged across the shards
 * a filter spans, a retained delete on its topic's shard, and the stats summed over shards.
 */
import type { Env } from "../env";
import type { CounterValues } from "./counters";
import { DROP_REASONS } from "./counters";
import type { RouterAdminStats } from "./router";
import { routerShardStub, shardOfTopic, shardsOfFilter, type Sharding } from "./shards";

export type RetainedItem = Awaited<ReturnType<ReturnType<typeof routerShardStub>["listRetained"]>>["items"][number];
export interface RetainedShardPage {
  items: RetainedItem[];
  cursor: string | null;
}

/**
 * Merges one page from each shard (each in topic order, each complete up to where it
 * stopped) into one page of at most `limit` in topic order. A shard that stopped early
 * bounds the page: nothing after its stop is taken, since that shard's next items could
 * come first. The cursor is the last topic the merged page covers, null when every shard is done.
 */
export function mergeRetainedPages(pages: RetainedShardPage[], limit: number): RetainedShardPage {
  const stops = pages.flatMap((p) => (p.cursor === null ? [] : [p.cursor]));
  const bound = stops.length === 0 ? null : stops.reduce((a, b) => (b < a ? b : a));
  const merged = pages
    .flatMap((p) => p.items)
    .filter((item) => bound === null || item.topic <= bound)
    .sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0));
  const items = merged.slice(0, limit);
  const last = items[items.length - 1]?.topic ?? null;
  if (merged.length > limit) return { items, cursor: last };
  return { items, cursor: bound };
}

/** One page of the account's retained messages matching `filter`, across the shards it spans. */
export async function accountRetainedPage(env: Env, account: string, sharding: Sharding, opts: { filter: string; cursor?: string; limit: number }): Promise<RetainedShardPage> {
  const shards = shardsOfFilter(opts.filter, sharding);
  const pages = await Promise.all(shards.map((i) => routerShardStub(env, account, i).listRetained(opts)));
  return mergeRetainedPages(pages, opts.limit);
}

/** Deletes the retained message of `topic` on the shard that holds it. */
export function deleteAccountRetained(env: Env, account: string, sharding: Sharding, topic: string): Promise<boolean> {
  return routerShardStub(env, account, shardOfTopic(topic, sharding)).deleteRetained(topic);
}

/** A page of the account's sessions as the routers see them (shard 0 knows every one). */
export function accountTargets(env: Env, account: string, opts: { cursor?: string; limit: number; only: "online" | "persistent" }) {
  return routerShardStub(env, account, 0).listTargets(opts);
}

/**
 * The account's stats: counters, retained use and subscriptions summed over the shards
 * (each message is routed by one shard; a wildcard filter registered on several shards
 * counts once per shard), sessions from shard 0, the earliest `since`.
 */
export async function accountStats(env: Env, account: string, sharding: Sharding): Promise<RouterAdminStats> {
  const all = await Promise.all(Array.from({ length: Math.max(1, sharding.shards) }, (_, i) => routerShardStub(env, account, i).adminStats()));
  const [first, ...rest] = all;
  if (!first) throw new Error("no router shard answered");
  const total: RouterAdminStats = {
    counters: { ...first.counters, drops: { ...first.counters.drops } },
    retained: { ...first.retained },
    subscriptions: first.subscriptions,
    sessions: first.sessions,
  };
  for (const s of rest) {
    addCounters(total.counters, s.counters);
    total.retained.count += s.retained.count;
    total.retained.bytes += s.retained.bytes;
    total.retained.monitorEvents += s.retained.monitorEvents;
    total.subscriptions += s.subscriptions;
  }
  return total;
}

const SUMMED = ["messagesIn", "unmatched", "messagesOut", "deliveredOnline", "deliveredQueued", "retainedSent", "batches", "connects", "disconnects"] as const;

function addCounters(into: CounterValues, from: CounterValues): void {
  for (const field of SUMMED) into[field] += from[field];
  for (const reason of DROP_REASONS) into.drops[reason] += from.drops[reason];
  into.since = Math.min(into.since, from.since);
}
