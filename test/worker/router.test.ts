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
      const keys = [...(await state.storage.list()).keys()].sort();
      expect(keys.some((k) => k.startsWith("s:c1\u0000"))).toBe(true);
      expect(keys).toContain("t:c1");
      expect(keys).toContain("r:a/b");
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
      expect(await state.storage.get("c:counters")).toMatchObject({ messagesIn: 2, batches: 1 });
    });
    await abortAllDurableObjects();
    const after = await routerStub(E, account).adminStats();
    expect(after.counters).toEqual(before.counters);
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
});
