import { describe, it, expect } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import type { Env } from "../../src/env";
import { clockStub, routerStub, sessionStub } from "../../src/stubs";
import { META_KEY } from "../../src/session/keys";
import { decodeConnMeta } from "../../src/session/state";
import type { MqttSession } from "../../src/session/session-store";
import type { TopicRouter } from "../../src/router/router";
import { eventually } from "./mqtt";
import { connected, encode, simulateWake, type open } from "./objects";

const E = env as unknown as Env;

/** A raw client connected with `clientId` and subscribed to `topic`, and its connection object's id. */
async function subscribed(clientId: string, topic: string, qos: 0 | 1 | 2, clean = true): Promise<{ c: Awaited<ReturnType<typeof open>>; id: string }> {
  const { c, id } = await connected(clientId, { clean });
  c.ws.send(encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos }] }));
  await c.next("suback");
  return { c, id };
}

/**
 * A persistent session of `account` subscribed to `filter` whose connection object holds no
 * socket (as after a runtime restart killed it): what the router delivers to it is queued.
 */
async function offlineSubscriber(account: string, clientId: string, filter: string): Promise<{ session: DurableObjectStub<MqttSession>; router: DurableObjectStub<TopicRouter> }> {
  const deadConn = E.CONNECTION.newUniqueId().toString();
  const session = sessionStub(E, account, clientId);
  await session.attach(account, clientId, deadConn, { cleanStart: false, expirySeconds: 3600, identity: { kind: "anonymous", id: "anonymous" } });
  const router = routerStub(E, account);
  await router.attach(account, clientId, deadConn, { cleanStart: false, persistent: true });
  await router.subscribe(clientId, [{ filter, qos: 1 }], 10);
  return { session, router };
}

describe("MqttConnection in workerd", () => {
  for (const size of [10, 5_000]) {
    it(`reassembles a ${size}-byte PUBLISH that straddles a wake (partial bytes in the ${size > 1024 ? "storage" : "attachment"})`, async () => {
      const { c, id, connack } = await connected("straddle");
      expect(connack).toMatchObject({ returnCode: 0 });

      const publish = encode({ cmd: "publish", topic: "s/t", payload: Buffer.alloc(size, 7), qos: 1, messageId: 9, retain: false, dup: false });
      const cut = Math.floor(publish.length / 2);
      c.ws.send(publish.subarray(0, cut));
      // Let the first half be processed and persisted before the memory is dropped.
      await new Promise((r) => setTimeout(r, 50));
      await simulateWake(id);
      c.ws.send(publish.subarray(cut));
      expect(await c.next("puback")).toMatchObject({ messageId: 9 });
      c.ws.close();
    });
  }

  it("writes the keep-alive clock and counters of a burst of frames to the attachment, once the burst is read and before a wake", async () => {
    const { c, id } = await connected(`burst-${crypto.randomUUID()}`);
    const stub = E.CONNECTION.get(E.CONNECTION.idFromString(id));
    const stored = () =>
      runInDurableObject(stub, (_i, state) => {
        const att = state.getWebSockets()[0]?.deserializeAttachment() as { traffic: { readMsg: number }; lastSeen: number } | undefined;
        return att ? { readMsg: att.traffic.readMsg, lastSeen: att.lastSeen } : null;
      });
    const burst = async (n: number) => {
      for (let i = 0; i < n; i++) c.ws.send(encode({ cmd: "pingreq" }));
      for (let i = 0; i < n; i++) await c.next("pingresp");
    };
    const sentAt = Date.now();
    await burst(5);
    await new Promise((r) => setTimeout(r, 100));
    const written = await stored();
    expect(written?.readMsg).toBe(1 + 5); // CONNECT and the five PINGREQs
    expect(written?.lastSeen).toBeGreaterThanOrEqual(sentAt);
    // A wake right after a burst (hibernation waits for the write; the simulated one writes first).
    await burst(3);
    await simulateWake(id);
    expect((await stored())?.readMsg).toBe(1 + 5 + 3);
    c.ws.send(encode({ cmd: "pingreq" }));
    await c.next("pingresp");
    c.ws.close();
  });

  it("an inbound QoS 2 message is stored before PUBREC, survives a wake, and is routed on PUBREL", async () => {
    const clientId = `q2-${crypto.randomUUID()}`;
    const topic = `q2/${clientId}`;
    const { c, id } = await subscribed(clientId, topic, 2);
    c.ws.send(encode({ cmd: "publish", topic, payload: Buffer.from("once"), qos: 2, messageId: 3, retain: false, dup: false }));
    expect(await c.next("pubrec")).toMatchObject({ messageId: 3 });
    const stored = await runInDurableObject(E.CONNECTION.get(E.CONNECTION.idFromString(id)), async (_i, state) =>
      [...(await state.storage.list({ prefix: "i:" })).keys()],
    );
    expect(stored).toEqual(["i:3"]);
    await simulateWake(id);
    c.ws.send(encode({ cmd: "pubrel", messageId: 3 }));
    expect(await c.next("pubcomp")).toMatchObject({ messageId: 3 });
    const delivered = await c.next("publish");
    expect(delivered).toMatchObject({ topic, qos: 2 });
    if (delivered.cmd === "publish") expect(delivered.payload.toString()).toBe("once");
    c.ws.close();
  });

  it("a delivery to a connection whose socket is gone falls back to the session queue", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const { session, router } = await offlineSubscriber(account, "crashed", "c/#");
    await router.publish(account, [{ topic: "c/1", payload: new Uint8Array([1]), qos: 1, retain: false }]);
    expect(await session.stats()).toEqual({ online: false, persistent: true, queued: 1, dropped: 0 });
  });

  for (const clean of [true, false]) {
    it(`stores an unacknowledged QoS 1 delivery only for a persistent session (clean = ${clean})`, async () => {
      const clientId = `store-${clean}-${crypto.randomUUID()}`;
      const { c, id } = await subscribed(clientId, `store/${clientId}`, 1, clean);
      await routerStub(E, "dev").publish("dev", [{ topic: `store/${clientId}`, payload: new Uint8Array([1]), qos: 1, retain: false }]);
      const delivered = await c.next("publish"); // received, not acknowledged yet
      const keys = await runInDurableObject(E.CONNECTION.get(E.CONNECTION.idFromString(id)), async (_i, state) =>
        [...(await state.storage.list({ prefix: "o:" })).keys()],
      );
      expect(keys.length).toBe(clean ? 0 : 1);
      if (delivered.cmd === "publish") c.ws.send(encode({ cmd: "puback", messageId: delivered.messageId }));
      c.ws.close();
    });
  }

  it("a clean session's QoS 1 messages that wait for the window stay in memory, are written when the hold ends (OUTBOX_HOLD_MS), and survive a wake", async () => {
    const clientId = `hold-${crypto.randomUUID()}`;
    const topic = `hold/${clientId}`;
    const { c, id } = await subscribed(clientId, topic, 1);
    const stub = E.CONNECTION.get(E.CONNECTION.idFromString(id));
    const outKeys = () => runInDurableObject(stub, async (_i, state) => [...(await state.storage.list({ prefix: "o:" })).keys()].length);
    const window = E.MAX_INFLIGHT ? Number(E.MAX_INFLIGHT) : 100;
    const n = window + 5;
    await routerStub(E, "dev").publish("dev", Array.from({ length: n }, (_, i) => ({ topic, payload: new Uint8Array([i]), qos: 1 as const, retain: false })));
    const first: number[] = [];
    for (let i = 0; i < window; i++) {
      const p = await c.next("publish");
      if (p.cmd === "publish") first.push(p.messageId ?? 0);
    }
    // The window is full and 5 wait: none of them is in storage yet.
    expect(await outKeys()).toBe(0);
    await new Promise((r) => setTimeout(r, Number(E.OUTBOX_HOLD_MS) + 500));
    expect(await outKeys()).toBe(5);
    // Hibernation forgets what was in memory; the 5 come back from storage, in order, as the window frees.
    await simulateWake(id);
    for (const pid of first) c.ws.send(encode({ cmd: "puback", messageId: pid }));
    const rest: number[] = [];
    for (let i = 0; i < 5; i++) {
      const p = await c.next("publish");
      if (p.cmd === "publish") {
        rest.push(Buffer.from(p.payload)[0] ?? -1);
        c.ws.send(encode({ cmd: "puback", messageId: p.messageId }));
      }
    }
    expect(rest).toEqual([window, window + 1, window + 2, window + 3, window + 4]);
    c.ws.send(encode({ cmd: "pingreq" }));
    await c.next("pingresp");
    expect(await outKeys()).toBe(0);
    c.ws.close();
  });

  it("a subscriber that never acknowledges holds at most MAX_QUEUED_BYTES of waiting messages (oldest dropped); bystanders in the same and another account get theirs", async () => {
    const hoarder = await subscribed(`hoard-${crypto.randomUUID()}`, "hoard/t", 1);
    const bystander = await subscribed(`by-${crypto.randomUUID()}`, "by/t", 1);
    const router = routerStub(E, "dev");
    // 300 messages of 100 KiB (30 MiB) for a window of 100: 10 MiB in flight, the rest waits.
    const payload = new Uint8Array(100 * 1024);
    for (let i = 0; i < 30; i++) await router.publish("dev", Array.from({ length: 10 }, () => ({ topic: "hoard/t", payload, qos: 1 as const, retain: false })));
    const waiting = await runInDurableObject(E.CONNECTION.get(E.CONNECTION.idFromString(hoarder.id)), (instance) => {
      const outbox = (instance as unknown as { state: { outbox: { waiting(): number; dropped: number } } }).state.outbox;
      return { waiting: outbox.waiting(), dropped: outbox.dropped };
    });
    const maxBytes = Number(E.MAX_QUEUED_BYTES ?? 8 * 1024 * 1024);
    expect(waiting.waiting * (payload.length + "hoard/t".length)).toBeLessThanOrEqual(maxBytes);
    expect(waiting.waiting).toBeGreaterThan(0);
    expect(waiting.waiting + waiting.dropped).toBe(200);
    // Bystanders: the same account, and another one, are served at once.
    await router.publish("dev", [{ topic: "by/t", payload: new Uint8Array([1]), qos: 1, retain: false }]);
    expect(await bystander.c.next("publish")).toMatchObject({ topic: "by/t" });
    // Another account: its router routes to its own (offline, persistent) session as usual.
    const other = `acc-${crypto.randomUUID()}`;
    const { session, router: otherRouter } = await offlineSubscriber(other, "other", "x/#");
    expect(await otherRouter.publish(other, [{ topic: "x/1", payload: new Uint8Array([1]), qos: 1, retain: false }])).toEqual(["matched"]);
    expect(await session.stats()).toMatchObject({ queued: 1, dropped: 0 });
    hoarder.c.ws.close();
    bystander.c.ws.close();
  });

  it("with the shared clock (the default), a clean connect stores nothing: its meta rides in the attachment and the clock's row, a wake reads it back, and the end leaves nothing", async () => {
    const clientId = `light-${crypto.randomUUID()}`;
    const will = { topic: `will/${clientId}`, payload: Buffer.from("gone"), qos: 1 as const, retain: false };
    const { c, id } = await connected(clientId, { keepalive: 60, will });
    const stub = E.CONNECTION.get(E.CONNECTION.idFromString(id));
    const stored = () =>
      runInDurableObject(stub, async (_i, state) => ({
        alarm: await state.storage.getAlarm(),
        keys: (await state.storage.list()).size,
        meta: (state.getWebSockets()[0]?.deserializeAttachment() as { meta?: unknown } | undefined)?.meta,
      }));
    const during = await stored();
    expect(during).toMatchObject({ alarm: null, keys: 0, meta: { clientId, will: { topic: will.topic } } });
    const clock = clockStub(E, "dev");
    const row = () => runInDurableObject(clock, (_i, state) => state.storage.sql.exec<{ meta: string | null }>("SELECT meta FROM watched WHERE conn = ?", id).toArray());
    const [kept] = await row();
    expect(decodeConnMeta(kept?.meta ?? "")).toMatchObject({ clientId, will: { topic: will.topic, payload: new Uint8Array(Buffer.from("gone")) } });
    // After a wake the identity comes from the attachment: a SUBSCRIBE is checked against its ACL and granted.
    await simulateWake(id);
    c.ws.send(encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: `light/${clientId}`, qos: 1 }] }));
    expect(await c.next("suback")).toMatchObject({ granted: [1] });
    expect((await stored()).keys).toBe(0);
    c.ws.send(encode({ cmd: "disconnect" }));
    // The close takes the clock's copy too: a restart cannot end this connection a second time.
    await eventually(row, (rows) => rows.length === 0, "the clock's row gone with the close", 3_000);
    expect(await stored()).toMatchObject({ alarm: null, keys: 0 });
  });

  it("a meta too large for the attachment is stored, with the connect-timeout alarm, as with the connection's own alarm", async () => {
    const clientId = `heavy-${crypto.randomUUID()}`;
    const { c, id } = await connected(clientId, { keepalive: 60, will: { topic: `will/${clientId}`, payload: Buffer.alloc(6_000, 1), qos: 0, retain: false } });
    const stub = E.CONNECTION.get(E.CONNECTION.idFromString(id));
    const during = await runInDurableObject(stub, async (_i, state) => ({
      alarm: await state.storage.getAlarm(),
      meta: await state.storage.get(META_KEY),
      carried: (state.getWebSockets()[0]?.deserializeAttachment() as { meta?: unknown } | undefined)?.meta,
    }));
    expect(during.alarm).not.toBeNull();
    expect(during.meta).toMatchObject({ clientId });
    expect(during.carried).toBeUndefined();
    c.ws.close();
  });
});
