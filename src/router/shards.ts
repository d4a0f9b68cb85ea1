/**
 * An account's routing spread over ROUTER_SHARDS router objects, as the rest of the broker
 * sees it: one `AccountRouter` with the router's methods, the account bound.
 *
 * The shard key is one topic level, ROUTER_SHARD_LEVEL (0-based; default 5, the device level
 * of `xi/blue/v1/<account>/d/<device>/…`). A topic with that level goes to the shard its
 * FNV-1a hash picks; a shorter topic to shard 0. A filter whose levels up to and including
 * the key are literal lives on that one shard (a shorter filter without wildcards on shard
 * 0); one with a wildcard at or above the key is registered on every shard, and its retained
 * delivery reads the shards one after the other. A message is routed by its topic's shard
 * alone, so every subscription that can match it is there: one copy per session at the
 * highest QoS, no-local and shared groups work within that shard. Sessions (their delivery
 * targets) are attached to and detached from every shard; the account's connect rate is
 * counted by shard 0 only.
 *
 * With one shard this is a pass-through to the single router (its object name is the
 * account id, as before sharding).
 */
import type { Env } from "../env";
import { meterStub } from "../metrics";
import { parseSharedFilter } from "../topics/topic";
import type { TopicRouter } from "./router";
import type {
  Message,
  QoS,
  RetainedCursor,
  RetainedPageResult,
  Routed,
  RouterAttach,
  RouterAttached,
  RouterDetach,
  Subscribed,
  SubscriptionRequest,
} from "./messages";

/** How an account's routing is split: the shard count and the topic level that keys it. */
export interface Sharding {
  shards: number;
  level: number;
}

/** 32-bit FNV-1a over the UTF-16 code units: stable across isolates and deploys. */
function fnv1a(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** The shard that routes `topic`. */
export function shardOfTopic(topic: string, s: Sharding): number {
  if (s.shards <= 1) return 0;
  const levels = topic.split("/");
  const key = levels[s.level];
  return key === undefined ? 0 : fnv1a(key) % s.shards;
}

/** The shards a subscription with `filter` must be registered on (a shared one by its inner filter). */
export function shardsOfFilter(filter: string, s: Sharding): number[] {
  if (s.shards <= 1) return [0];
  const inner = parseSharedFilter(filter)?.filter ?? filter;
  const levels = inner.split("/");
  for (let i = 0; i <= s.level && i < levels.length; i++) {
    if (levels[i] === "+" || levels[i] === "#") return Array.from({ length: s.shards }, (_, k) => k);
  }
  const key = levels[s.level];
  return [key === undefined ? 0 : fnv1a(key) % s.shards];
}

/** The object name of shard `i` of an account (shard 0 keeps the unsharded router's name). */
export function shardName(account: string, i: number): string {
  return i === 0 ? account : `${account}\u0000shard\u0000${i}`;
}

export function routerShardStub(env: Env, account: string, i: number): DurableObjectStub<TopicRouter> {
  // Bench counters name shard i > 0 `router@i`, so the busiest shard's request rate shows.
  return meterStub(env, env.ROUTER.get(env.ROUTER.idFromName(shardName(account, i))), i === 0 ? "router" : `router@${i}`);
}

/** An account's routing figures (sessions counted once across shards). */
export interface AccountStats {
  subscriptions: number;
  sessions: number;
  retained: number;
  dropped: number;
}

/** The account's router as every caller sees it, whatever the shard count. */
export interface AccountRouter {
  publish(messages: Message[]): Promise<Routed[]>;
  subscribe(clientId: string, requests: SubscriptionRequest[], maxSubscriptions: number, opts?: { pageMessages?: number }): Promise<Subscribed>;
  retainedPage(cursor: RetainedCursor): Promise<RetainedPageResult>;
  unsubscribe(clientId: string, filters: string[]): Promise<boolean[]>;
  attach(clientId: string, conn: string, opts: RouterAttach): Promise<RouterAttached>;
  detach(clientId: string, conn: string, opts: RouterDetach): Promise<void>;
  forget(clientId: string): Promise<void>;
  stats(): Promise<AccountStats>;
  /** A shared group's state, for the admin API (a filter registered on several shards is listed once). */
  sharedGroup(group: string): Promise<SharedGroupView[]>;
}

export interface SharedGroupView {
  filter: string;
  members: Array<{ clientId: string; qos: QoS; online: boolean }>;
  queued: number;
}

/** The sharding the config asks for. */
export function shardingOf(limits: { routerShards: number; routerShardLevel: number }): Sharding {
  return { shards: limits.routerShards, level: limits.routerShardLevel };
}

/** The figures of one router's `stats()` the account view adds up. */
function routerStats(s: AccountStats): AccountStats {
  return { subscriptions: s.subscriptions, sessions: s.sessions, retained: s.retained, dropped: s.dropped };
}

export function accountRouter(env: Env, account: string, sharding: Sharding): AccountRouter {
  const stubs: DurableObjectStub<TopicRouter>[] = [];
  const stub = (i: number): DurableObjectStub<TopicRouter> => (stubs[i] ??= routerShardStub(env, account, i));
  if (sharding.shards <= 1) {
    const one = stub(0);
    return {
      publish: (messages) => one.publish(account, messages),
      subscribe: (clientId, requests, max, opts) => one.subscribe(clientId, requests, max, opts),
      retainedPage: (cursor) => one.retainedPage(cursor),
      unsubscribe: (clientId, filters) => one.unsubscribe(clientId, filters),
      attach: (clientId, conn, opts) => one.attach(account, clientId, conn, opts),
      detach: (clientId, conn, opts) => one.detach(account, clientId, conn, opts),
      forget: (clientId) => one.forget(clientId),
      stats: async () => routerStats(await one.stats()),
      sharedGroup: async (group) => (await one.sharedGroup(group)).map((g) => ({ filter: g.filter, members: g.members, queued: g.queued })),
    };
  }
  const all = Array.from({ length: sharding.shards }, (_, i) => i);
  /** Splits messages by the shard of their topic, keeping each one's position. */
  const byShard = (messages: Message[]): Map<number, { messages: Message[]; at: number[] }> => {
    const out = new Map<number, { messages: Message[]; at: number[] }>();
    messages.forEach((m, at) => {
      const i = shardOfTopic(m.topic, sharding);
      let part = out.get(i);
      if (!part) out.set(i, (part = { messages: [], at: [] }));
      part.messages.push(m);
      part.at.push(at);
    });
    return out;
  };
  /** For each shard, the positions of the filters it holds (a wildcard at or above the key: every shard). */
  const filtersByShard = (filters: string[]): Map<number, number[]> => {
    const out = new Map<number, number[]>();
    filters.forEach((f, at) => {
      for (const i of shardsOfFilter(f, sharding)) {
        let list = out.get(i);
        if (!list) out.set(i, (list = []));
        list.push(at);
      }
    });
    return out;
  };
  const announceFor = (parts: Map<number, { messages: Message[] }>, i: number): Message[] => parts.get(i)?.messages ?? [];

  const retainedPage = async (cursor: RetainedCursor): Promise<RetainedPageResult> => {
    let { subs, after } = cursor;
    let shard = cursor.shard ?? 0;
    while (subs.length > 0) {
      const [sub, ...rest] = subs;
      if (!sub) break;
      const shards = shardsOfFilter(sub.filter, sharding);
      const target = shards[shard];
      if (target === undefined) {
        subs = rest;
        after = null;
        shard = 0;
        continue;
      }
      const page = await stub(target).retainedPage({ subs: [sub], after, limit: cursor.limit });
      const more: RetainedCursor | null = page.more
        ? { subs, after: page.more.after, limit: cursor.limit, shard }
        : shard + 1 < shards.length
          ? { subs, after: null, limit: cursor.limit, shard: shard + 1 }
          : rest.length > 0
            ? { subs: rest, after: null, limit: cursor.limit, shard: 0 }
            : null;
      if (page.messages.length > 0 || !more) return { messages: page.messages, more };
      ({ subs, after } = more);
      shard = more.shard ?? 0;
    }
    return { messages: [], more: null };
  };

  return {
    async publish(messages) {
      const outcomes: Routed[] = new Array<Routed>(messages.length).fill("unmatched");
      await Promise.all(
        [...byShard(messages)].map(async ([i, part]) => {
          const routed = await stub(i).publish(account, part.messages);
          routed.forEach((r, k) => {
            const at = part.at[k];
            if (at !== undefined) outcomes[at] = r;
          });
        }),
      );
      return outcomes;
    },

    async subscribe(clientId, requests, max, opts = {}) {
      const perShard = filtersByShard(requests.map((r) => r.filter));
      const granted = requests.map(() => true);
      const wanted = new Map<string, RetainedCursor["subs"][number]>();
      await Promise.all(
        [...perShard].map(async ([i, ats]) => {
          const result = await stub(i).subscribe(clientId, ats.map((at) => requests[at] as SubscriptionRequest), max, { deferRetained: true });
          result.granted.forEach((ok, k) => {
            const at = ats[k];
            if (!ok && at !== undefined) granted[at] = false;
          });
          // Every shard of a filter decides retain handling alike: the first one's answer is kept.
          for (const sub of result.more?.subs ?? []) if (!wanted.has(sub.filter)) wanted.set(sub.filter, sub);
        }),
      );
      // In request order, only the subscriptions every shard took.
      const subs = requests.flatMap((r, at) => {
        const sub = wanted.get(r.filter);
        return sub && granted[at] ? [sub] : [];
      });
      const limit = Math.max(1, opts.pageMessages ?? 1000);
      const first = subs.length > 0 ? await retainedPage({ subs, after: null, limit, shard: 0 }) : { messages: [], more: null };
      return { granted, retained: first.messages, more: first.more };
    },

    retainedPage,

    async unsubscribe(clientId, filters) {
      const existed = filters.map(() => false);
      const perShard = filtersByShard(filters);
      await Promise.all(
        [...perShard].map(async ([i, ats]) => {
          const result = await stub(i).unsubscribe(clientId, ats.map((at) => filters[at] as string));
          result.forEach((e, k) => {
            const at = ats[k];
            if (e && at !== undefined) existed[at] = true;
          });
        }),
      );
      return existed;
    },

    async attach(clientId, conn, opts) {
      const { presence, ...rest } = opts;
      const announce = byShard(opts.announce ?? []);
      // The presence goes to the shard of its topic, where its retained reads go.
      const home = presence ? shardOfTopic(presence.topic, sharding) : -1;
      const on = (i: number): RouterAttach => ({ ...rest, announce: announceFor(announce, i), ...(presence && i === home ? { presence } : {}), ...(i === 0 ? {} : { rated: false }) });
      // Shard 0 first: it counts the account's connect rate; a refusal attaches nowhere.
      const first = await stub(0).attach(account, clientId, conn, on(0));
      if (!first.ok) return first;
      await Promise.all(all.slice(1).map((i) => stub(i).attach(account, clientId, conn, on(i))));
      return first;
    },

    async detach(clientId, conn, opts) {
      const announce = byShard(opts.announce ?? []);
      const orphans = byShard(opts.orphans ?? []);
      await Promise.all(all.map((i) => stub(i).detach(account, clientId, conn, { persistent: opts.persistent, announce: announceFor(announce, i), orphans: announceFor(orphans, i), ...(i === 0 ? {} : { rated: false }) })));
    },

    async forget(clientId) {
      await Promise.all(all.map((i) => stub(i).forget(clientId)));
    },

    async stats() {
      const each = await Promise.all(all.map(async (i) => routerStats(await stub(i).stats())));
      // A session is attached to every shard: count it once.
      return each.reduce((a, b) => ({ subscriptions: a.subscriptions + b.subscriptions, sessions: Math.max(a.sessions, b.sessions), retained: a.retained + b.retained, dropped: a.dropped + b.dropped }));
    },

    async sharedGroup(group) {
      const merged = new Map<string, SharedGroupView>();
      for (const views of await Promise.all(all.map((i) => stub(i).sharedGroup(group)))) {
        for (const v of views) {
          const prev = merged.get(v.filter);
          if (prev) prev.queued += v.queued;
          else merged.set(v.filter, { filter: v.filter, members: v.members, queued: v.queued });
        }
      }
      return [...merged.values()];
    },
  };
}
