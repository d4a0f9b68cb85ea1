/**
 * The admin API's read views of a running account (mounted under `/admin/v1` behind the admin
 * token): connected clients, persistent sessions, retained messages, stats, and the
 * Prometheus metrics of every account the registry knows. Each view asks the account's
 * router once per page, plus one call per listed client or session (pages hold at most
 * VIEW_MAX_LIMIT): nothing here costs a request per message.
 */
import { Hono, type Context } from "hono";
import type { Env } from "../env";
import { connectionStub, routerStub, sessionStub } from "../stubs";
import { getConfig } from "../config";
import { parseSharedFilter, validateTopicFilter, validateTopicName } from "../topics/topic";
import { listAccounts } from "../auth/registry";
import { prometheusText, type AccountStats } from "../monitoring/prometheus";
import { jsonError } from "./errors";
import { parseLimit } from "./paging";

type ViewContext = Context<{ Bindings: Env }>;

export const VIEW_DEFAULT_LIMIT = 100;
export const VIEW_MAX_LIMIT = 100;
/** Accounts GET /admin/v1/metrics reports at most (one router call each). */
export const METRICS_MAX_ACCOUNTS = 1000;

export const adminViews = new Hono<{ Bindings: Env }>();

adminViews.get("/accounts/:accountId/clients", async (c) => {
  const accountId = c.req.param("accountId");
  const targets = await targetsPage(c, accountId, "online");
  if (targets instanceof Response) return targets;
  const clients = await Promise.all(
    targets.items.map(async (t) => {
      if (!t.conn) return null;
      const described = await connectionStub(c.env, t.conn).describe(t.clientId);
      return described && { ...described, persistent: t.persistent, subscriptions: t.subscriptions };
    }),
  );
  // A connection that ended between the router's answer and ours is left out.
  return c.json({ accountId, clients: clients.filter((x) => x !== null), next: targets.cursor });
});

adminViews.get("/accounts/:accountId/sessions", async (c) => {
  const accountId = c.req.param("accountId");
  const targets = await targetsPage(c, accountId, "persistent");
  if (targets instanceof Response) return targets;
  const sessions = await Promise.all(
    targets.items.map(async (t) => {
      const stats = await sessionStub(c.env, accountId, t.clientId).stats();
      return {
        clientId: t.clientId,
        online: t.conn !== null,
        subscriptions: t.subscriptions,
        queued: stats?.queued ?? 0,
        dropped: stats?.dropped ?? 0,
      };
    }),
  );
  return c.json({ accountId, sessions, next: targets.cursor });
});

adminViews.get("/accounts/:accountId/retained", async (c) => {
  const accountId = c.req.param("accountId");
  const filter = c.req.query("filter") ?? "#";
  if (validateTopicFilter(filter, getConfig(c.env).limits) !== null || parseSharedFilter(filter)) {
    return jsonError(c, 400, "invalid_filter", "filter must be a valid MQTT topic filter (not a $share one)");
  }
  const page = pageQuery(c);
  if (!page.ok) return page.response;
  const { items, cursor } = await routerStub(c.env, accountId).listRetained({ filter, ...page.value });
  const retained = items.map(({ expiresAt, ...item }) => ({ ...item, ...(expiresAt === undefined ? {} : { expiresAt: new Date(expiresAt).toISOString() }) }));
  return c.json({ accountId, filter, retained, next: cursor });
});

adminViews.delete("/accounts/:accountId/retained", async (c) => {
  const topic = c.req.query("topic");
  if (topic === undefined || validateTopicName(topic, { ...getConfig(c.env).limits, maxTopicBytes: 65535, maxTopicLevels: 65535 }) !== null) {
    return jsonError(c, 400, "invalid_topic", "topic must be a topic name without wildcards");
  }
  if (!(await routerStub(c.env, c.req.param("accountId")).deleteRetained(topic))) {
    return jsonError(c, 404, "retained_not_found", "no retained message on this topic");
  }
  return c.body(null, 204);
});

adminViews.get("/accounts/:accountId/stats", async (c) => {
  const accountId = c.req.param("accountId");
  return c.json(statsJson(accountId, await routerStub(c.env, accountId).adminStats()));
});

adminViews.get("/metrics", async (c) => {
  const accounts = await listAccounts(c.env.DB, METRICS_MAX_ACCOUNTS + 1);
  const anonymous = getConfig(c.env).anonymousAccount;
  if (anonymous !== undefined && !accounts.includes(anonymous)) accounts.push(anonymous);
  const truncated = accounts.length > METRICS_MAX_ACCOUNTS;
  const reported = accounts.sort().slice(0, METRICS_MAX_ACCOUNTS);
  const stats: AccountStats[] = await Promise.all(reported.map(async (accountId) => ({ accountId, ...(await routerStub(c.env, accountId).adminStats()) })));
  return c.text(prometheusText(stats, { truncated }), 200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
});

type RouterStats = Omit<AccountStats, "accountId">;

/** GET .../stats: the router's counters, named for readers. */
function statsJson(accountId: string, s: RouterStats): object {
  const k = s.counters;
  return {
    accountId,
    since: new Date(k.since).toISOString(),
    messages: { in: k.messagesIn, out: k.messagesOut, unmatched: k.unmatched },
    deliveries: { online: k.deliveredOnline, queued: k.deliveredQueued, retainedOnSubscribe: k.retainedSent },
    retained: s.retained,
    subscriptions: s.subscriptions,
    sessions: s.sessions,
    connections: { connects: k.connects, disconnects: k.disconnects },
    batches: k.batches,
    drops: k.drops,
  };
}

/** One page of the router's sessions (`?limit=&cursor=`), or the 400 answer to a bad limit. */
async function targetsPage(c: ViewContext, accountId: string, only: "online" | "persistent") {
  const page = pageQuery(c);
  if (!page.ok) return page.response;
  return routerStub(c.env, accountId).listTargets({ ...page.value, only });
}

type PageQuery = { ok: true; value: { limit: number; cursor?: string } } | { ok: false; response: Response };

function pageQuery(c: ViewContext): PageQuery {
  const limit = parseLimit(c.req.query("limit"), VIEW_DEFAULT_LIMIT, VIEW_MAX_LIMIT);
  if (limit === null) return { ok: false, response: jsonError(c, 400, "invalid_limit", `limit must be an integer from 1 to ${VIEW_MAX_LIMIT}`) };
  const cursor = c.req.query("cursor") || undefined;
  return { ok: true, value: { limit, ...(cursor === undefined ? {} : { cursor }) } };
}
