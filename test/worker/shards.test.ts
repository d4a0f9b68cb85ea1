import { describe, it, expect } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import type { Env } from "../../src/env";
import { sessionStub } from "../../src/stubs";
import { accountRouter, routerShardStub, shardOfTopic, shardsOfFilter, type Sharding } from "../../src/router/shards";
import { checkShardCount } from "../../src/router/schema";
import type { Message } from "../../src/router/messages";

const E = env as unknown as Env;
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const msg = (topic: string, payload: string, qos: 0 | 1 = 1, retain = false): Message => ({ topic, payload: bytes(payload), qos, retain });
const SHARDS: Sharding = { shards: 4, level: 1 };

/** Level-1 keys that land on every one of the four shards. */
function keysPerShard(): string[] {
  const keys: string[] = [];
  for (let i = 0; keys.length < 4 && i < 1000; i++) {
    const key = `k${i}`;
    if (!keys.some((k) => shardOfTopic(`t/${k}`, SHARDS) === shardOfTopic(`t/${key}`, SHARDS))) keys.push(key);
  }
  return keys;
}

describe("an account's routing over ROUTER_SHARDS router objects", () => {
  it("a publish goes to the shard of its topic; a filter fixing the key lives on that shard, one with a wildcard at or above it on every shard", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = accountRouter(E, account, SHARDS);
    const keys = keysPerShard();
    expect(keys).toHaveLength(4);
    for (const k of keys) await router.publish([msg(`t/${k}/v`, k, 1, true)]);
    for (let i = 0; i < 4; i++) expect((await routerShardStub(E, account, i).stats()).retained).toBe(1);
    const [k0 = ""] = keys;
    const home = shardOfTopic(`t/${k0}`, SHARDS);
    await router.subscribe("s", [{ filter: `t/${k0}/#`, qos: 1 }, { filter: "t/+/v", qos: 0 }], 10);
    for (let i = 0; i < 4; i++) expect((await routerShardStub(E, account, i).stats()).subscriptions).toBe(i === home ? 2 : 1);
    expect(shardsOfFilter("$share/g/t/+/v", SHARDS)).toEqual([0, 1, 2, 3]);
    expect(shardsOfFilter("short", SHARDS)).toEqual([0]);
    expect(await router.unsubscribe("s", [`t/${k0}/#`, "t/+/v", "never"])).toEqual([true, true, false]);
    for (let i = 0; i < 4; i++) expect((await routerShardStub(E, account, i).stats()).subscriptions).toBe(0);
  });

  it("retained delivery of a wildcard subscription reads every shard in pages; an exact one reads its shard only", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = accountRouter(E, account, SHARDS);
    const topics: string[] = [];
    for (let i = 0; i < 24; i++) topics.push(`t/k${i}/v`);
    for (const t of topics) await router.publish([msg(t, t, 1, true)]);
    const first = await router.subscribe("reader", [{ filter: "t/#", qos: 1 }, { filter: "t/k3/v", qos: 0 }], 10, { pageMessages: 5 });
    const got = [...first.retained];
    let more = first.more;
    let pages = 1;
    while (more) {
      const page = await router.retainedPage(more);
      expect(page.messages.length).toBeLessThanOrEqual(5);
      got.push(...page.messages);
      more = page.more;
      pages++;
    }
    expect(pages).toBeGreaterThanOrEqual(5);
    expect(got.filter((m) => m.qos === 1).map((m) => m.topic).sort()).toEqual([...topics].sort());
    expect(got.filter((m) => m.qos === 0).map((m) => m.topic)).toEqual(["t/k3/v"]);
  });

  it("overlapping subscriptions across shards: one copy per session at the highest QoS; sessions attach to and detach from every shard", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = accountRouter(E, account, SHARDS);
    const conn = E.CONNECTION.newUniqueId().toString(); // no socket: deliveries go to the session's queue
    const session = sessionStub(E, account, "p");
    await session.attach(account, "p", conn, { cleanStart: false, expirySeconds: 3600, identity: { kind: "anonymous", id: "anonymous" } });
    expect(await router.attach("p", conn, { cleanStart: false, persistent: true })).toEqual({ ok: true });
    for (let i = 0; i < 4; i++) expect((await routerShardStub(E, account, i).stats()).sessions).toBe(1);
    await router.subscribe("p", [{ filter: "t/#", qos: 0 }, { filter: "t/k7/#", qos: 1 }, { filter: "t/+/x", qos: 1 }], 10);
    await router.publish([msg("t/k7/x", "one", 1), msg("t/k8/x", "two", 1), msg("t/k9/y", "qos0 only", 1)]);
    expect(await session.stats()).toMatchObject({ queued: 2 }); // k7/x once (not three times), k8/x once; k9/y at QoS 0 is not queued
    // A clean session attaches to every shard and leaves every shard.
    const other = E.CONNECTION.newUniqueId().toString();
    await router.attach("q", other, { cleanStart: true, persistent: false });
    for (let i = 0; i < 4; i++) expect((await routerShardStub(E, account, i).stats()).sessions).toBe(2);
    await router.detach("q", other, { persistent: false });
    for (let i = 0; i < 4; i++) expect((await routerShardStub(E, account, i).stats()).sessions).toBe(1);
  });

  it("a router that holds state refuses another shard count; an empty one takes it", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const stub = routerShardStub(E, account, 0);
    await stub.publish(account, [msg("a/b", "kept", 0, true)]);
    await runInDurableObject(stub, (_instance, state) => {
      expect(checkShardCount(state.storage.sql, 1)).toBeNull();
      expect(checkShardCount(state.storage.sql, 4)).toMatch(/ROUTER_SHARDS changed from 1 to 4/);
    });
    const empty = routerShardStub(E, `acc-${crypto.randomUUID()}`, 0);
    await empty.stats();
    await runInDurableObject(empty, (_instance, state) => {
      expect(checkShardCount(state.storage.sql, 4)).toBeNull();
      expect(checkShardCount(state.storage.sql, 4)).toBeNull();
      expect(checkShardCount(state.storage.sql, 2)).toBeNull(); // still empty
    });
  });
});
