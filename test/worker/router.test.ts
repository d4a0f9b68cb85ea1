import { describe, it, expect } from "vitest";
import { abortAllDurableObjects, env, runInDurableObject, runDurableObjectAlarm } from "cloudflare:test";
import type { Env } from "../../src/env";
import { routerStub, sessionStub } from "../../src/stubs";
import type { Message } from "../../src/router/messages";

const E = env as unknown as Env;
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const msg = (topic: string, payload: string, qos: 0 | 1 = 1, retain = false): Message => ({ topic, payload: bytes(payload), qos, retain });

describe("TopicRouter in workerd", () => {
  it("persists subscriptions, targets and retained messages and rebuilds them after a restart of the object", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    await router.attach(account, "c1", E.CONNECTION.newUniqueId().toString(), { cleanStart: false, persistent: true });
    await router.subscribe("c1", [{ filter: "a/+", qos: 1 }, { filter: "#", qos: 0 }], 100);
    await router.publish(account, [msg("a/b", "kept", 1, true)]);
    expect(await router.stats()).toEqual({ subscriptions: 2, sessions: 1, retained: 1, dropped: 0 });

    await runInDurableObject(router, async (_instance, state) => {
      const sql = state.storage.sql;
      expect(sql.exec("SELECT client_id, filter FROM subscriptions ORDER BY filter").toArray()).toEqual([{ client_id: "c1", filter: "#" }, { client_id: "c1", filter: "a/+" }]);
      expect(sql.exec("SELECT client_id, persistent FROM targets").toArray()).toEqual([{ client_id: "c1", persistent: 1 }]);
      expect(sql.exec("SELECT topic, qos FROM retained").toArray()).toEqual([{ topic: "a/b", qos: 1 }]);
      expect((await state.storage.list()).size).toBe(0); // nothing in the key-value layer
    });
    // Drop every object's in-memory state as an eviction would; the constructor reloads from storage.
    await abortAllDurableObjects();
    const fresh = routerStub(E, account);
    expect(await fresh.stats()).toEqual({ subscriptions: 2, sessions: 1, retained: 1, dropped: 0 });
    const { retained } = await fresh.subscribe("c2", [{ filter: "a/#", qos: 1 }], 100);
    expect(retained.map((m) => [m.topic, new TextDecoder().decode(m.payload), m.retain])).toEqual([["a/b", "kept", true]]);
  });

  it("one failing target does not fail the batch: the others get their copies, the failure is counted", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    // A target whose delivery throws (an id of another namespace), and a persistent session whose connection is gone.
    await router.attach(account, "broken", E.SESSION.newUniqueId().toString(), { cleanStart: true, persistent: false });
    await router.subscribe("broken", [{ filter: "f/#", qos: 1 }], 10);
    const conn = E.CONNECTION.newUniqueId().toString();
    const healthy = sessionStub(E, account, "healthy");
    await healthy.attach(account, "healthy", conn, { cleanStart: false, expirySeconds: 3600, identity: { kind: "anonymous", id: "anonymous" } });
    await router.attach(account, "healthy", conn, { cleanStart: false, persistent: true });
    await router.subscribe("healthy", [{ filter: "f/#", qos: 1 }], 10);
    await router.publish(account, [msg("f/1", "one", 1)]); // resolves
    expect(await healthy.stats()).toMatchObject({ queued: 1 });
    expect((await router.stats()).dropped).toBe(1);
    const { counters } = await router.adminStats();
    expect(counters).toMatchObject({ messagesIn: 1, deliveredQueued: 1, deliveredOnline: 0, drops: { cleanSessionGone: 1 } });
  });

  it("keeps its traffic counters across a restart of the object (a snapshot at most once a second)", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    // The tests bind the optional Analytics Engine dataset: every batch also writes a data point to it.
    expect(typeof E.ANALYTICS?.writeDataPoint).toBe("function");
    await router.publish(account, [msg("a/1", "x", 0), msg("a/2", "y", 0)]); // the first change is written at once
    const before = await router.adminStats();
    expect(before.counters).toMatchObject({ messagesIn: 2, unmatched: 2, batches: 1 });
    await runInDurableObject(router, async (_instance, state) => {
      // One row, whatever changed.
      const rows = state.storage.sql.exec<{ key: string; value: string }>("SELECT key, value FROM router_state").toArray();
      expect(rows.map((r) => r.key)).toEqual(["counters"]);
      expect(JSON.parse(rows[0]?.value ?? "{}")).toMatchObject({ messagesIn: 2, batches: 1 });
    });
    await abortAllDurableObjects();
    const after = await routerStub(E, account).adminStats();
    expect(after.counters).toEqual(before.counters);
  });

  it("reads the per-counter rows of before the one-row snapshot, and replaces them with it at the next snapshot", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    await router.stats(); // creates the schema
    await runInDurableObject(router, (_instance, state) => {
      const sql = state.storage.sql;
      sql.exec("INSERT INTO router_meta (key, value) VALUES ('counter.messagesIn', 41), ('counter.batches', 7), ('counter.drops.queueFull', 3), ('counter.since', 1000)");
    });
    await abortAllDurableObjects();
    const woke = routerStub(E, account);
    expect((await woke.adminStats()).counters).toMatchObject({ messagesIn: 41, batches: 7, since: 1000, drops: { queueFull: 3 } });
    await woke.publish(account, [msg("a/1", "x", 0)]);
    await runInDurableObject(woke, (_instance, state) => {
      const sql = state.storage.sql;
      expect(sql.exec("SELECT key FROM router_meta WHERE key LIKE 'counter.%'").toArray()).toEqual([]);
      const value = sql.exec<{ value: string }>("SELECT value FROM router_state WHERE key = 'counters'").one().value;
      expect(JSON.parse(value)).toMatchObject({ messagesIn: 42, batches: 8, since: 1000, drops: { queueFull: 3 } });
    });
  });

  it("keeps at most MAX_MONITOR_RETAINED retained $SYS/mon events per account, evicting the oldest; other retained messages are untouched", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    await router.publish(account, [msg("plain/topic", "stays", 0, true)]);
    for (const id of ["c1", "c2", "c3", "c4", "c5"]) await router.publish(account, [msg(`$SYS/mon/${id}`, `{"id":"${id}"}`, 0, true)]);
    await router.publish(account, [msg("$SYS/mon/c3", "again", 0, true)]); // refreshed: now the newest
    const { retained } = await router.subscribe("watcher", [{ filter: "$SYS/mon/#", qos: 0 }, { filter: "plain/#", qos: 0 }], 10);
    expect(retained.map((m) => m.topic).sort()).toEqual(["$SYS/mon/c3", "$SYS/mon/c4", "$SYS/mon/c5", "plain/topic"]);
    // The bound holds after a restart of the object too (storage, not only memory).
    await abortAllDurableObjects();
    expect((await routerStub(E, account).stats()).retained).toBe(4);
  });

  it("refuses subscriptions beyond the per-session limit", async () => {
    const router = routerStub(E, `acc-${crypto.randomUUID()}`);
    const r = await router.subscribe("c", [{ filter: "a", qos: 0 }, { filter: "b", qos: 0 }, { filter: "a", qos: 1 }, { filter: "c", qos: 0 }], 2);
    expect(r.granted).toEqual([true, true, true, false]);
  });

  it("queues QoS 1 (not QoS 0) for an offline persistent session, bounded, and expires the session by alarm", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    const conn = E.CONNECTION.newUniqueId().toString();
    const session = sessionStub(E, account, "p1");
    await session.attach(account, "p1", conn, { cleanStart: false, expirySeconds: 3600, identity: { kind: "anonymous", id: "anonymous" } });
    await router.attach(account, "p1", conn, { cleanStart: false, persistent: true });
    await router.subscribe("p1", [{ filter: "x/#", qos: 1 }], 100);
    await router.detach(account, "p1", conn, { persistent: true });
    await session.detach(conn, { handover: { messages: [], inboundQos2: [] }, expirySeconds: 1 }); // expires after 1 s offline
    await router.publish(account, [msg("x/1", "a", 1), msg("x/2", "b", 0), msg("x/3", "c", 1)]);
    expect(await session.stats()).toEqual({ online: false, persistent: true, queued: 2, dropped: 0 });

    // Before the expiry the alarm keeps the session; after it, it forgets the session here and at the router.
    expect(await runDurableObjectAlarm(session)).toBe(true);
    expect(await session.stats()).not.toBeNull();
    await new Promise((r) => setTimeout(r, 1100));
    await runDurableObjectAlarm(session); // the alarm may already have fired on its own by now
    expect(await session.stats()).toBeNull();
    expect((await router.stats()).subscriptions).toBe(0);
  });

  it("a detach from a connection that no longer owns the session is ignored", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    const oldConn = E.CONNECTION.newUniqueId().toString();
    const newConn = E.CONNECTION.newUniqueId().toString();
    await router.attach(account, "c", oldConn, { cleanStart: false, persistent: true });
    await router.subscribe("c", [{ filter: "t", qos: 1 }], 10);
    await router.attach(account, "c", newConn, { cleanStart: false, persistent: true });
    await router.detach(account, "c", oldConn, { persistent: false }); // late detach of the taken-over connection
    expect(await router.stats()).toMatchObject({ subscriptions: 1, sessions: 1 });
  });

  it("moves a router written in the key-value layout into its tables on the first wake, once", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    await runInDurableObject(router, async (_instance, state) => {
      // As the layout before SQLite tables wrote them; the schema marker removed so the next wake migrates.
      await state.storage.put({
        "s:old\u0000k/#": { qos: 1, nl: true },
        "t:old": { conn: null, persistent: true },
        "r:k/1": { payload: bytes("legacy"), qos: 1, props: { contentType: "text/plain", correlationData: bytes("cd") } },
        "r:$SYS/mon/old": { payload: bytes("{}"), qos: 0 },
        "g:0000000000000007": { key: "\u0000grp\u0000k/#", message: { topic: "k/2", payload: bytes("queued"), qos: 1, retain: false } },
      });
      state.storage.sql.exec("DELETE FROM router_meta");
    });
    await abortAllDurableObjects();
    const woke = routerStub(E, account);
    expect(await woke.stats()).toMatchObject({ subscriptions: 1, sessions: 1, retained: 2 });
    const { retained } = await woke.subscribe("reader", [{ filter: "k/#", qos: 1 }], 10);
    expect(retained).toHaveLength(1);
    expect(retained[0]).toMatchObject({ topic: "k/1", qos: 1, retain: true, props: { contentType: "text/plain" } });
    expect(new TextDecoder().decode(retained[0]?.props?.correlationData)).toBe("cd");
    await runInDurableObject(woke, async (_instance, state) => {
      expect((await state.storage.list()).size).toBe(0);
      expect(state.storage.sql.exec("SELECT share, topic FROM group_queue").toArray()).toEqual([{ share: "\u0000grp\u0000k/#", topic: "k/2" }]);
    });
  });

  it("retained delivery on subscribe comes in pages bounded in bytes and messages, in topic order, across filters, from the filter's prefix only", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    const big = "x".repeat(90_000); // 6 fit in a 512 KiB page
    const publishes: Message[] = [];
    for (let i = 0; i < 14; i++) publishes.push(msg(`p/${String(i).padStart(2, "0")}`, big, 1, true));
    publishes.push(msg("other/1", "small", 1, true), msg("other/2", "small", 0, true), msg("pa/1", "near the prefix", 1, true));
    for (const m of publishes) await router.publish(account, [m]);
    const first = await router.subscribe("pager", [{ filter: "p/#", qos: 1, id: 7 }, { filter: "other/+", qos: 0 }], 10, { pageMessages: 100 });
    const pages = [first.retained];
    let more = first.more;
    while (more) {
      const page = await router.retainedPage(more);
      pages.push(page.messages);
      more = page.more;
    }
    const topics = pages.flat().map((m) => m.topic);
    expect(topics).toEqual([...Array.from({ length: 14 }, (_, i) => `p/${String(i).padStart(2, "0")}`), "other/1", "other/2"]);
    for (const page of pages) expect(page.reduce((n, m) => n + m.payload.byteLength, 0)).toBeLessThanOrEqual(600_000);
    expect(pages.length).toBeGreaterThanOrEqual(3);
    expect(pages.flat()[0]).toMatchObject({ qos: 1, retain: true, subIds: [7] });
    expect(pages.flat().at(-1)).toMatchObject({ topic: "other/2", qos: 0 });
    // A message count bound too (the subscriber's outbox room).
    const counted = await router.subscribe("counter", [{ filter: "other/#", qos: 1 }, { filter: "pa/1", qos: 1 }], 10, { pageMessages: 1 });
    expect(counted.retained.map((m) => m.topic)).toEqual(["other/1"]);
    const rest = await router.retainedPage(counted.more ?? { subs: [], after: null, limit: 1 });
    expect(rest.messages.map((m) => m.topic)).toEqual(["other/2"]);
    const last = await router.retainedPage(rest.more ?? { subs: [], after: null, limit: 1 });
    expect(last).toMatchObject({ more: null });
    expect(last.messages.map((m) => m.topic)).toEqual(["pa/1"]);
  });

  it("bounds retained messages per account in count and bytes (MAX_RETAINED_MESSAGES 20, MAX_RETAINED_BYTES 2000000): past it a retained publish is refused, neither stored nor delivered; deletes and replacements that do not grow are taken; another account is untouched", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    const conn = E.CONNECTION.newUniqueId().toString();
    await router.attach(account, "live", conn, { cleanStart: true, persistent: false });
    for (let i = 0; i < 20; i++) expect(await router.publish(account, [msg(`q/${i}`, "v", 0, true)])).toEqual(["unmatched"]);
    expect(await router.publish(account, [msg("q/20", "v", 0, true), msg("q/plain", "not retained", 0)])).toEqual(["quota", "unmatched"]);
    expect(await router.publish(account, [msg("q/3", "w", 0, true)])).toEqual(["unmatched"]); // same size: replaced
    expect(await router.publish(account, [msg("q/4", "", 0, true)])).toEqual(["unmatched"]); // deleted
    expect(await router.publish(account, [msg("q/20", "v", 0, true)])).toEqual(["unmatched"]); // room again
    // Monitoring events do not count against the quota.
    expect(await router.publish(account, [msg("$SYS/mon/x", "{}", 0, true)])).toEqual(["unmatched"]);
    const { retained } = await router.subscribe("reader", [{ filter: "q/#", qos: 0 }], 10);
    expect(retained).toHaveLength(20);
    expect(retained.find((m) => m.topic === "q/3")?.payload).toEqual(bytes("w"));

    const bytesAccount = `acc-${crypto.randomUUID()}`;
    const other = routerStub(E, bytesAccount);
    const large = "y".repeat(600_000);
    expect(await other.publish(bytesAccount, [msg("b/1", large, 1, true), msg("b/2", large, 1, true), msg("b/3", large, 1, true)])).toEqual(["unmatched", "unmatched", "unmatched"]);
    expect(await other.publish(bytesAccount, [msg("b/4", large, 1, true)])).toEqual(["quota"]);
    expect(await other.publish(bytesAccount, [msg("b/1", "y".repeat(900_000), 1, true)])).toEqual(["quota"]); // grows past the bound
    expect(await other.publish(bytesAccount, [msg("b/1", "small", 1, true)])).toEqual(["unmatched"]); // shrinks: taken
    // The quota is kept across a restart of the object.
    await abortAllDurableObjects();
    expect(await routerStub(E, account).publish(account, [msg("q/21", "v", 0, true)])).toEqual(["quota"]);
    expect(await routerStub(E, bytesAccount).publish(bytesAccount, [msg("b/4", large, 1, true)])).toEqual(["unmatched"]);
  });

  it("purges expired retained messages in the background (the router's alarm) and as reads meet them", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    const soon = { ...msg("e/1", "short-lived", 0, true), expiresAt: Date.now() + 300 };
    await router.publish(account, [soon, msg("e/2", "stays", 0, true)]);
    expect((await router.stats()).retained).toBe(2);
    await new Promise((r) => setTimeout(r, 400));
    await runDurableObjectAlarm(router); // may have run on its own already
    expect((await router.stats()).retained).toBe(1);
    const { retained } = await router.subscribe("r", [{ filter: "e/#", qos: 0 }], 10);
    expect(retained.map((m) => m.topic)).toEqual(["e/2"]);
  });

  it("fan-in coalescing: concurrent publisher batches for one target lose nothing and keep each publisher's order", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    const session = sessionStub(E, account, "sink");
    const conn = E.CONNECTION.newUniqueId().toString(); // no socket: "gone", so the batches end in the session's queue
    await session.attach(account, "sink", conn, { cleanStart: false, expirySeconds: 3600, identity: { kind: "anonymous", id: "anonymous" } });
    await router.attach(account, "sink", conn, { cleanStart: false, persistent: true });
    await router.subscribe("sink", [{ filter: "f/#", qos: 1 }], 10);
    const publishers = Array.from({ length: 5 }, (_, p) => Array.from({ length: 4 }, (_, i) => [msg(`f/${p}`, `${p}:${i}`, 1)]));
    await Promise.all(publishers.map(async (batches) => { for (const b of batches) await router.publish(account, b); }));
    expect(await session.stats()).toMatchObject({ queued: 20 });
    await runInDurableObject(session, async (_instance, state) => {
      const queued = [...(await state.storage.list({ prefix: "q:" })).values()] as Message[];
      const seen = new Map<string, number[]>();
      for (const m of queued) {
        const [p = "", i = ""] = new TextDecoder().decode(m.payload).split(":");
        seen.set(p, [...(seen.get(p) ?? []), Number(i)]);
      }
      for (let p = 0; p < 5; p++) expect(seen.get(String(p))).toEqual([0, 1, 2, 3]);
    });
  });
});
