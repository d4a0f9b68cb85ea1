import { describe, it, expect } from "vitest";
import { SELF, env, listDurableObjectIds, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import mqttPacket, { type Packet } from "mqtt-packet";
import type { Env } from "../../src/env";
import { routerStub, sessionStub } from "../../src/stubs";
import type { MqttSession } from "../../src/session/session-store";
import type { TopicRouter } from "../../src/router/router";
import { eventually } from "./mqtt";

const E = env as unknown as Env;

function encode(packet: Packet): Uint8Array {
  return new Uint8Array(mqttPacket.generate(packet, { protocolVersion: 4 }));
}

/** A raw MQTT client on a WebSocket from SELF.fetch, inside workerd. */
async function open(): Promise<{ ws: WebSocket; packets: Packet[]; next: (cmd: Packet["cmd"]) => Promise<Packet>; closed: () => boolean }> {
  const res = await SELF.fetch("http://broker/mqtt", { headers: { Upgrade: "websocket", "Sec-WebSocket-Protocol": "mqtt" } });
  const ws = res.webSocket;
  if (!ws) throw new Error(`no WebSocket in the upgrade answer (${res.status})`);
  ws.accept();
  ws.binaryType = "arraybuffer";
  const packets: Packet[] = [];
  let isClosed = false;
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  parser.on("packet", (p: Packet) => packets.push(p));
  ws.addEventListener("message", (e) => {
    if (e.data instanceof ArrayBuffer) parser.parse(Buffer.from(e.data));
  });
  ws.addEventListener("close", () => (isClosed = true));
  const next = async (cmd: Packet["cmd"]): Promise<Packet> => {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const i = packets.findIndex((p) => p.cmd === cmd);
      if (i >= 0) return packets.splice(i, 1)[0] as Packet;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${cmd}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { ws, packets, next, closed: () => isClosed };
}

async function connectionIds(): Promise<Set<string>> {
  return new Set((await listDurableObjectIds(E.CONNECTION)).map((id) => id.toString()));
}

/**
 * Drops a connection object's in-memory state, as hibernation does: the socket attachment
 * and storage stay; the object rebuilds its state and port with the same function its
 * constructor runs after every wake.
 */
async function simulateWake(id: string): Promise<void> {
  await runInDurableObject(E.CONNECTION.get(E.CONNECTION.idFromString(id)), (instance) => {
    (instance as unknown as { wake(): void }).wake();
  });
}

/** A raw client connected with `clientId` (3.1.1), its CONNACK, and its connection object's id. */
async function connected(clientId: string, opts: { clean?: boolean; keepalive?: number } = {}): Promise<{ c: Awaited<ReturnType<typeof open>>; id: string; connack: Packet }> {
  const before = await connectionIds();
  const c = await open();
  c.ws.send(encode({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: opts.clean ?? true, keepalive: opts.keepalive ?? 60, clientId }));
  const connack = await c.next("connack");
  const id = [...(await connectionIds())].find((x) => !before.has(x));
  if (!id) throw new Error("connection object not found");
  return { c, id, connack };
}

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

  it("one alarm per connect: the connect timeout armed at the upgrade is the first keep-alive check, and re-arms for the deadline without closing", async () => {
    const before = await connectionIds();
    const t0 = Date.now();
    const c = await open();
    c.ws.send(encode({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 60, clientId: `alarm-${crypto.randomUUID()}` }));
    await c.next("connack");
    const id = [...(await connectionIds())].find((x) => !before.has(x));
    if (!id) throw new Error("connection object not found");
    const stub = E.CONNECTION.get(E.CONNECTION.idFromString(id));
    const armed = await runInDurableObject(stub, (_i, state) => state.storage.getAlarm());
    // Still the connect timeout (30 s after the upgrade): nothing was armed at CONNACK.
    expect(armed).toBeGreaterThanOrEqual(t0 + 30_000);
    expect(armed).toBeLessThanOrEqual(Date.now() + 30_000);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    // Run early for the keep-alive deadline (1.5 × 60 s + 1 s after the last packet): re-armed for it, the client still connected.
    const rearmed = await runInDurableObject(stub, (_i, state) => state.storage.getAlarm());
    expect(rearmed).toBeGreaterThanOrEqual(t0 + 91_000);
    expect(rearmed).toBeLessThanOrEqual(Date.now() + 91_000);
    c.ws.send(encode({ cmd: "pingreq" }));
    await c.next("pingresp");
    expect(c.closed()).toBe(false);
    c.ws.close();
  });

  it("a connection that ends leaves no alarm and no stored key behind (deleteAll clears the alarm too)", async () => {
    const { c, id } = await connected(`ends-${crypto.randomUUID()}`, { clean: true, keepalive: 60 });
    const stub = E.CONNECTION.get(E.CONNECTION.idFromString(id));
    const stored = () => runInDurableObject(stub, async (_i, state) => ({ alarm: await state.storage.getAlarm(), keys: (await state.storage.list()).size }));
    const during = await stored();
    expect(during.alarm).not.toBeNull();
    expect(during.keys).toBeGreaterThan(0); // the connection's meta
    c.ws.send(encode({ cmd: "disconnect" }));
    await eventually(stored, (after) => after.alarm === null && after.keys === 0, "no alarm and no key after the close", 3_000);
  });

  it("a keep alive whose deadline comes before the connect timeout is armed at CONNACK", async () => {
    const { c, id } = await connected(`alarm10-${crypto.randomUUID()}`, { keepalive: 10 });
    const armed = await runInDurableObject(E.CONNECTION.get(E.CONNECTION.idFromString(id)), (_i, state) => state.storage.getAlarm());
    expect(armed).toBeLessThanOrEqual(Date.now() + 16_000);
    c.ws.close();
  });
});
