import { describe, it, expect, afterAll } from "vitest";
import { RawClient } from "../helpers/raw";
import { connectCollecting, end, pingRoundTrip, sleep, subscribe, uid, waitFor } from "../helpers/mqtt";
import { admin, createDevice, mintToken } from "../helpers/admin";
import { TEST_VARS, killBroker, startBroker, stopBroker, type Broker } from "../helpers/broker";
import { monitor } from "../helpers/monitor";

/** Opens a raw connection with a JWT and returns it with its CONNACK code. */
async function rawConnect(clientId: string, username: string, token: string, url?: string): Promise<{ raw: RawClient; code: number }> {
  const raw = await RawClient.open(url);
  const ack = await raw.connect(clientId, { username, password: Buffer.from(token), clean: true });
  return { raw, code: ack.returnCode ?? -1 };
}

describe("single-connection mode", () => {
  it("a new connection with the same credentials boots the old one: Disconnect 288 then Connect", async () => {
    const acc = uid("acc");
    const mon = await monitor(acc);
    const token = await mintToken(acc, "alice");
    const first = await rawConnect("alice", "alice", token);
    expect(first.code).toBe(0);
    await waitFor(() => mon.events("alice").length === 1, "the first Connect event");
    const second = await rawConnect("alice", "alice", token);
    expect(second.code).toBe(0);
    await first.raw.waitClosed();
    await waitFor(() => mon.events("alice").length === 3, "Disconnect and Connect events");
    const [c1, d, c2] = mon.events("alice");
    expect(c1).toMatchObject({ Action: "Connect", ClientID: "alice", User: "alice", CloseCode: 0, Protocol: "mqtt4-ws" });
    expect(d).toMatchObject({ Action: "Disconnect", ClientID: "alice", CloseCode: 288 });
    expect(c2).toMatchObject({ Action: "Connect", ClientID: "alice" });
    // The new connection works.
    second.raw.send({ cmd: "pingreq" });
    await second.raw.next("pingresp");
    second.raw.close();
    await end(mon.client);
  });

  it("an unclean reconnect receives the QoS 1 messages that arrived while it was away", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "bob");
    const a = await connectCollecting({ clientId: "bob", username: "bob", password: token, clean: false });
    await subscribe(a.client, "news/#", 1);
    await end(a.client);
    const pub = await connectCollecting({ clientId: uid(), username: "pub", password: await mintToken(acc, "pub") });
    await pub.client.publishAsync("news/1", "missed", { qos: 1 });
    const b = await connectCollecting({ clientId: "bob", username: "bob", password: token, clean: false });
    expect(b.sessionPresent).toBe(true);
    await waitFor(() => b.got.length === 1, "the missed message");
    expect(b.got[0]).toMatchObject({ payload: "missed", qos: 1 });
    await end(b.client, pub.client);
  });
});

describe("multi-connection mode", () => {
  it("admits 100 connections per identity and refuses the 101st with CONNACK 3 (monitoring 173)", async () => {
    const acc = uid("acc");
    const mon = await monitor(acc);
    const token = await mintToken(acc, "fleet");
    const raws: RawClient[] = [];
    for (let i = 0; i < 100; i++) {
      const r = await rawConnect(`fleet-${i}`, "fleet", token);
      expect(r.code).toBe(0);
      raws.push(r.raw);
    }
    const extra = await rawConnect("fleet-100", "fleet", token);
    expect(extra.code).toBe(3);
    await extra.raw.waitClosed();
    // A reconnect with a client id already counted keeps its slot.
    const again = await rawConnect("fleet-7", "fleet", token);
    expect(again.code).toBe(0);
    await waitFor(() => mon.events("fleet-100").length === 1, "the FailedConnect event");
    expect(mon.events("fleet-100")[0]).toMatchObject({ Action: "FailedConnect", CloseCode: 173 });
    // Closing one frees a slot.
    raws[0]?.send({ cmd: "disconnect" });
    await raws[0]?.waitClosed();
    await sleep(200);
    const now = await rawConnect("fleet-100", "fleet", token);
    expect(now.code).toBe(0);
    for (const r of [...raws, again.raw, now.raw]) r.close();
    await end(mon.client);
  }, 60_000);

  it("150 simultaneous connects of one identity admit exactly 100", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "storm");
    const results = await Promise.all(Array.from({ length: 150 }, (_, i) => rawConnect(`storm-${i}`, "storm", token)));
    const codes = results.map((r) => r.code);
    expect(codes.filter((c) => c === 0)).toHaveLength(100);
    expect(codes.filter((c) => c === 3)).toHaveLength(50);
    for (const r of results) r.raw.close();
  }, 60_000);

  it("an identity cannot mix modes (CONNACK 5 both ways)", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "carol");
    const multi = await rawConnect("carol-tab", "carol", token);
    expect(multi.code).toBe(0);
    const single = await rawConnect("carol", "carol", token);
    expect(single.code).toBe(5);
    multi.raw.send({ cmd: "disconnect" });
    await multi.raw.waitClosed();
    await sleep(200);
    const single2 = await rawConnect("carol", "carol", token);
    expect(single2.code).toBe(0);
    const multi2 = await rawConnect("carol-tab", "carol", token);
    expect(multi2.code).toBe(5);
    single2.raw.close();
  });
});

describe("monitoring events", () => {
  it("Connect and Disconnect carry the documented fields; Disconnect has counters; both are retained", async () => {
    const acc = uid("acc");
    const mon = await monitor(acc);
    const dev = await createDevice(acc);
    const raw = await RawClient.open();
    await raw.connect(dev.deviceId, { username: dev.deviceId, password: Buffer.from(dev.password) });
    raw.send({ cmd: "publish", topic: `xi/blue/v1/${acc}/d/${dev.deviceId}/t`, payload: Buffer.from("x"), qos: 0, retain: false, dup: false });
    raw.send({ cmd: "disconnect" });
    await raw.waitClosed();
    await waitFor(() => mon.events(dev.deviceId).length === 2, "Connect and Disconnect");
    const [c, d] = mon.events(dev.deviceId);
    expect(c).toMatchObject({ Action: "Connect", ClientID: dev.deviceId, User: dev.deviceId, Protocol: "mqtt4-ws", CloseCode: 0, Reason: "" });
    expect(typeof c?.ClientAddr).toBe("string");
    expect(Date.parse(c?.Time ?? "")).not.toBeNaN();
    expect(d).toMatchObject({ Action: "Disconnect", CloseCode: 0, ReadMsg: 3, WriteMsg: 1 });
    expect(d?.ConnectTime).toBe(c?.Time);
    expect(d?.ReadBytes).toBeGreaterThan(0);
    expect(d?.WriteBytes).toBe(4); // CONNACK
    // Retained: a late monitor sees the last event of that client.
    const late = await monitor(acc);
    await waitFor(() => late.got.some((m) => m.topic === `$SYS/mon/${dev.deviceId}` && m.retain), "the retained Disconnect");
    await end(mon.client, late.client);
  });

  it("a keep-alive timeout produces Disconnect 160", async () => {
    const acc = uid("acc");
    const mon = await monitor(acc);
    const dev = await createDevice(acc);
    const raw = await RawClient.open();
    await raw.connect(dev.deviceId, { username: dev.deviceId, password: Buffer.from(dev.password), keepalive: 1 });
    await raw.waitClosed(15_000);
    await waitFor(() => mon.events(dev.deviceId).some((e) => e.Action === "Disconnect"), "the Disconnect event");
    expect(mon.events(dev.deviceId).find((e) => e.Action === "Disconnect")?.CloseCode).toBe(160);
    await end(mon.client);
  });

  it("devices and account-wide tokens may not subscribe to $SYS/mon", async () => {
    const acc = uid("acc");
    const dev = await createDevice(acc);
    const raw = await RawClient.open();
    await raw.connect(dev.deviceId, { username: dev.deviceId, password: Buffer.from(dev.password) });
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "$SYS/mon/#", qos: 0 }] });
    expect(await raw.next("suback")).toMatchObject({ granted: [128] });
    raw.close();
    const token = await mintToken(acc, "plain");
    const r2 = await rawConnect("plain", "plain", token);
    r2.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "$SYS/mon/#", qos: 0 }] });
    expect(await r2.raw.next("suback")).toMatchObject({ granted: [128] });
    r2.raw.close();
  });
});

describe("admin kick", () => {
  for (const withWill of [true, false]) {
    it(`closes the connection now (close code 94) ${withWill ? "and publishes" : "without"} its will`, async () => {
      const acc = uid("acc");
      const mon = await monitor(acc);
      const willTopic = `wills/${uid()}`;
      const watcher = await connectCollecting({ clientId: uid(), username: "w", password: await mintToken(acc, "w") });
      await subscribe(watcher.client, "wills/#", 1);
      const token = await mintToken(acc, "kicked");
      const raw = await RawClient.open();
      await raw.connect("kicked", { username: "kicked", password: Buffer.from(token), will: { topic: willTopic, payload: Buffer.from("bye"), qos: 1, retain: false } });
      const res = await admin("DELETE", `/accounts/${acc}/clients/kicked${withWill ? "" : "?will=false"}`);
      expect(res.status).toBe(204);
      await raw.waitClosed();
      await waitFor(() => mon.events("kicked").some((e) => e.Action === "Disconnect"), "the Disconnect event");
      expect(mon.events("kicked").find((e) => e.Action === "Disconnect")?.CloseCode).toBe(94);
      if (withWill) await waitFor(() => watcher.got.length === 1, "the will");
      else {
        // A will goes out with the Disconnect event seen above (the will first).
        await pingRoundTrip(watcher.client);
        expect(watcher.got).toEqual([]);
      }
      expect((await admin("DELETE", `/accounts/${acc}/clients/kicked`)).status).toBe(404);
      await end(mon.client, watcher.client);
    });
  }
});

describe("dead connections", () => {
  let broker: Broker | undefined;
  afterAll(async () => {
    if (broker) await stopBroker(broker);
  });

  it("slots of connections killed with the runtime are freed when a new connection needs them", async () => {
    broker = await startBroker({ vars: { ...TEST_VARS, MAX_MULTI_CONNECTIONS: "3" } });
    const ws = broker.wsUrl;
    const tokenRes = await fetch(`${broker.url}/admin/v1/accounts/acc-kill/tokens`, {
      method: "POST",
      headers: { authorization: `Bearer ${TEST_VARS.ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify({ subject: "k", ttlSeconds: 600 }),
    });
    const { token } = (await tokenRes.json()) as { token: string };
    const held = await Promise.all([0, 1, 2].map((i) => rawConnect(`k-${i}`, "k", token, ws)));
    expect(held.map((h) => h.code)).toEqual([0, 0, 0]);
    expect((await rawConnect("k-3", "k", token, ws)).code).toBe(3);

    await killBroker(broker);
    for (const h of held) h.raw.terminate();
    broker = await startBroker({ port: broker.port, persistDir: broker.persistDir, vars: { ...TEST_VARS, MAX_MULTI_CONNECTIONS: "3" } });
    const fresh = await Promise.all([3, 4, 5].map((i) => rawConnect(`k-${i}`, "k", token, ws)));
    expect(fresh.map((f) => f.code)).toEqual([0, 0, 0]);
    for (const f of fresh) f.raw.close();
  }, 120_000);
});
