/**
 * The admin API's read views of a running account (mounted under `/admin/v1` behind the admin
 * token): connected clients, persistent sessions, retained messages, stats, and the
 * Prometheus metrics of every account the registry knows. Each view asks the account's
 * router once per page, plus one call per listed client or session (pages hold at most
 * VIEW_MAX_LIMIT): nothing here costs a request per message.
 */
import { Hono } from "hono";
import * as v from "valibot";
import type { Env } from "../env";
import { connectionStub, sessionStub } from "../stubs";
import { shardingOf } from "../router/shards";
import { accountRetainedPage, accountStats, accountTargets, deleteAccountRetained } from "../router/account-admin";
import { getConfig } from "../config";
import { parseSharedFilter, validateTopicFilter, validateTopicName } from "../topics/topic";
import { listAccounts } from "../auth/registry";
import { prometheusText, type AccountStats } from "../monitoring/prometheus";
import { jsonError } from "./errors";
import { ACCOUNT_FIELD, ACCOUNT_ID, LIMIT, doc, params, query, type FieldErrors } from "./api-doc";
import { ADMIN_PAYLOAD_INLINE_BYTES } from "../router/router";
import { DROP_REASONS } from "../router/counters";

export const VIEW_DEFAULT_LIMIT = 100;
export const VIEW_MAX_LIMIT = 100;
/** Accounts GET /admin/v1/metrics reports at most (one router call each). */
export const METRICS_MAX_ACCOUNTS = 1000;

export const adminViews = new Hono<{ Bindings: Env }>();

const AccountParams = v.object({ accountId: ACCOUNT_ID });
const PageQuery = v.object({ limit: LIMIT, cursor: v.optional(v.pipe(v.string(), v.description("the previous page's `next`"))) });
const LIMIT_FIELD: FieldErrors = { limit: ["invalid_limit", `limit must be an integer from 1 to ${VIEW_MAX_LIMIT}`] };
const Next = v.pipe(v.nullable(v.string()), v.description("cursor of the next page; null on the last"));
const Traffic = v.object({ readBytes: v.number(), readMsg: v.number(), writeBytes: v.number(), writeMsg: v.number() });
const ClientSchema = v.object({
  clientId: v.string(),
  identity: v.object({ kind: v.picklist(["device", "user", "anonymous"]), id: v.string() }),
  protocol: v.pipe(v.string(), v.description("mqtt3, mqtt4 or mqtt5, with -ws over WebSocket")),
  address: v.string(),
  connectedAt: v.pipe(v.string(), v.description("ISO 8601")),
  keepAliveSeconds: v.number(),
  cleanStart: v.boolean(),
  persistent: v.boolean(),
  subscriptions: v.number(),
  traffic: Traffic,
});
const SessionSchema = v.object({ clientId: v.string(), online: v.boolean(), subscriptions: v.number(), queued: v.number(), dropped: v.number() });
const RetainedSchema = v.object({
  topic: v.string(),
  qos: v.picklist([0, 1, 2]),
  bytes: v.number(),
  payloadBase64: v.optional(v.pipe(v.string(), v.description(`present for payloads up to ${ADMIN_PAYLOAD_INLINE_BYTES} bytes`))),
  expiresAt: v.optional(v.pipe(v.string(), v.description("ISO 8601 (MQTT 5 message expiry)"))),
});
const count = v.number();
const StatsSchema = v.object({
  accountId: v.string(),
  since: v.pipe(v.string(), v.description("when the counters began (ISO 8601)")),
  messages: v.object({ in: count, out: count, unmatched: count }),
  deliveries: v.object({ online: count, queued: count, retainedOnSubscribe: count }),
  retained: v.pipe(v.object({ count, bytes: count, monitorEvents: count }), v.description("the retained quota's use (MAX_RETAINED_MESSAGES / MAX_RETAINED_BYTES), and the retained $SYS/mon events apart")),
  subscriptions: count,
  sessions: v.object({ online: count, offline: count }),
  connections: v.object({ connects: count, disconnects: count }),
  batches: count,
  drops: v.object(Object.fromEntries(DROP_REASONS.map((r) => [r, count]))),
});

adminViews.get(
  "/accounts/:accountId/clients",
  doc({
    summary: "List connected clients",
    description: "The account's live connections in client id order, a page at a time (pass `next` as `cursor`).",
    tags: ["clients"],
    access: "admin",
    ok: { 200: { description: "One page", schema: v.object({ accountId: v.string(), clients: v.array(ClientSchema), next: Next }) } },
    errors: { 400: ["invalid_account_id", "invalid_limit"] },
  }),
  params(AccountParams, ACCOUNT_FIELD),
  query(PageQuery, LIMIT_FIELD),
  async (c) => {
    const { accountId } = c.req.valid("param");
    const targets = await accountTargets(c.env, accountId, { ...page(c.req.valid("query")), only: "online" });
    const clients = await Promise.all(
      targets.items.map(async (t) => {
        if (!t.conn) return null;
        const described = await connectionStub(c.env, t.conn).describe(t.clientId);
        return described && { ...described, persistent: t.persistent, subscriptions: t.subscriptions };
      }),
    );
    // A connection that ended between the router's answer and ours is left out.
    return c.json({ accountId, clients: clients.filter((x) => x !== null), next: targets.cursor });
  },
);

adminViews.get(
  "/accounts/:accountId/sessions",
  doc({
    summary: "List persistent sessions",
    description: "Sessions that outlive their connection (clean session false / session expiry > 0), online or not, with their offline queue depth.",
    tags: ["clients"],
    access: "admin",
    ok: { 200: { description: "One page", schema: v.object({ accountId: v.string(), sessions: v.array(SessionSchema), next: Next }) } },
    errors: { 400: ["invalid_account_id", "invalid_limit"] },
  }),
  params(AccountParams, ACCOUNT_FIELD),
  query(PageQuery, LIMIT_FIELD),
  async (c) => {
    const { accountId } = c.req.valid("param");
    const targets = await accountTargets(c.env, accountId, { ...page(c.req.valid("query")), only: "persistent" });
    const sessions = await Promise.all(
      targets.items.map(async (t) => {
        const stats = await sessionStub(c.env, accountId, t.clientId).stats();
        return { clientId: t.clientId, online: t.conn !== null, subscriptions: t.subscriptions, queued: stats?.queued ?? 0, dropped: stats?.dropped ?? 0 };
      }),
    );
    return c.json({ accountId, sessions, next: targets.cursor });
  },
);

adminViews.get(
  "/accounts/:accountId/retained",
  doc({
    summary: "Browse retained messages",
    description: "The retained messages a filter matches (default `#`, which does not match `$SYS/...`), in topic order, a page at a time.",
    tags: ["retained"],
    access: "admin",
    ok: { 200: { description: "One page", schema: v.object({ accountId: v.string(), filter: v.string(), retained: v.array(RetainedSchema), next: Next }) } },
    errors: { 400: ["invalid_account_id", "invalid_filter", "invalid_limit"] },
  }),
  params(AccountParams, ACCOUNT_FIELD),
  query(v.object({ ...PageQuery.entries, filter: v.optional(v.pipe(v.string(), v.description("an MQTT topic filter; default #"))) }), LIMIT_FIELD),
  async (c) => {
    const { accountId } = c.req.valid("param");
    const q = c.req.valid("query");
    const filter = q.filter ?? "#";
    if (validateTopicFilter(filter, getConfig(c.env).limits) !== null || parseSharedFilter(filter)) {
      return jsonError(c, 400, "invalid_filter", "filter must be a valid MQTT topic filter (not a $share one)");
    }
    const { items, cursor } = await accountRetainedPage(c.env, accountId, shardingOf(getConfig(c.env).limits), { filter, ...page(q) });
    const retained = items.map(({ expiresAt, ...item }) => ({ ...item, ...(expiresAt === undefined ? {} : { expiresAt: new Date(expiresAt).toISOString() }) }));
    return c.json({ accountId, filter, retained, next: cursor });
  },
);

adminViews.delete(
  "/accounts/:accountId/retained",
  doc({
    summary: "Delete a retained message",
    description: "Removes the retained message of one topic; subscribers are not sent anything.",
    tags: ["retained"],
    access: "admin",
    ok: { 204: { description: "Deleted" } },
    errors: { 400: ["invalid_account_id", "invalid_topic"], 404: ["retained_not_found"] },
  }),
  params(AccountParams, ACCOUNT_FIELD),
  query(v.object({ topic: v.pipe(v.string(), v.description("a topic name (no wildcards)")) }), { "*": ["invalid_topic", "topic must be a topic name without wildcards"] }),
  async (c) => {
    const { accountId } = c.req.valid("param");
    const { topic } = c.req.valid("query");
    if (validateTopicName(topic, { ...getConfig(c.env).limits, maxTopicBytes: 65535, maxTopicLevels: 65535 }) !== null) {
      return jsonError(c, 400, "invalid_topic", "topic must be a topic name without wildcards");
    }
    if (!(await deleteAccountRetained(c.env, accountId, shardingOf(getConfig(c.env).limits), topic))) return jsonError(c, 404, "retained_not_found", "no retained message on this topic");
    return c.body(null, 204);
  },
);

adminViews.get(
  "/accounts/:accountId/stats",
  doc({
    summary: "Account stats",
    description: "Counters the account's router keeps as traffic passes (no request per message), and its current sizes.",
    tags: ["monitoring"],
    access: "admin",
    ok: { 200: { description: "The stats", schema: StatsSchema } },
    errors: { 400: ["invalid_account_id"] },
  }),
  params(AccountParams, ACCOUNT_FIELD),
  async (c) => {
    const { accountId } = c.req.valid("param");
    return c.json(statsJson(accountId, await accountStats(c.env, accountId, shardingOf(getConfig(c.env).limits))));
  },
);

adminViews.get(
  "/metrics",
  doc({
    summary: "Prometheus metrics",
    description: `The stats of every account the registry knows (and the anonymous account), as Prometheus text; at most ${METRICS_MAX_ACCOUNTS} accounts.`,
    tags: ["monitoring"],
    access: "admin",
    ok: { 200: { description: "Prometheus text exposition 0.0.4", schema: v.string(), mediaType: "text/plain" } },
  }),
  async (c) => {
    const accounts = await listAccounts(c.env.DB, METRICS_MAX_ACCOUNTS + 1);
    const anonymous = getConfig(c.env).anonymousAccount;
    if (anonymous !== undefined && !accounts.includes(anonymous)) accounts.push(anonymous);
    const truncated = accounts.length > METRICS_MAX_ACCOUNTS;
    const reported = accounts.sort().slice(0, METRICS_MAX_ACCOUNTS);
    const sharding = shardingOf(getConfig(c.env).limits);
    const stats: AccountStats[] = await Promise.all(reported.map(async (accountId) => ({ accountId, ...(await accountStats(c.env, accountId, sharding)) })));
    return c.text(prometheusText(stats, { truncated }), 200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
  },
);

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

/** The router's page arguments from a validated `?limit=&cursor=`. */
function page(q: { limit?: string | undefined; cursor?: string | undefined }): { limit: number; cursor?: string } {
  const limit = Math.min(Number(q.limit ?? VIEW_DEFAULT_LIMIT), VIEW_MAX_LIMIT);
  return q.cursor ? { limit, cursor: q.cursor } : { limit };
}
