/**
 * Hostile or careless clients with ordinary credentials: each attack gets its answer, and a
 * bystander in the same account and one in another account lose nothing.
 */
import { describe, it, expect, inject } from "vitest";
import type { MqttClient } from "mqtt";
import { connect, connectCollecting, end, subscribe, uid, waitFor, type Received } from "../helpers/mqtt";
import type { Packet } from "mqtt-packet";
import { RawClient } from "../helpers/raw";
import { encode } from "../helpers/bytes";
import { createDevice, deviceTopic, mintToken } from "../helpers/admin";
import { monitor } from "../helpers/monitor";

/** A subscriber that must keep receiving whatever the attacker does. */
async function bystander(account: string): Promise<{ client: MqttClient; got: Received[]; topic: string }> {
  const subject = uid("bystander");
  const token = await mintToken(account, subject);
  const topic = `bystander/${subject}`;
  const { client, got } = await connectCollecting({ clientId: subject, username: subject, password: token, protocolVersion: 4 });
  await subscribe(client, topic, 1);
  return { client, got, topic };
}

/** Publishes a QoS 1 marker to the bystander's own topic and waits for it: proof it is served. */
async function stillServed(b: { client: MqttClient; got: Received[]; topic: string }): Promise<void> {
  const marker = uid("marker");
  await b.client.publishAsync(b.topic, marker, { qos: 1 });
  await waitFor(() => b.got.some((m) => m.payload === marker), `the bystander's marker on ${b.topic}`);
}

/** CONNECT with a JWT over a raw client; the CONNACK's 3.1.1 return code or 5.0 reason code. */
async function rawConnect(version: 4 | 5, clientId: string, username: string, token: string, clean: boolean): Promise<{ raw: RawClient; code: number | undefined }> {
  const raw = await RawClient.open(undefined, { version });
  const ack = await raw.connect(clientId, {
    username, password: Buffer.from(token), clean,
    ...(version === 5 && !clean ? { properties: { sessionExpiryInterval: 3600 } } : {}),
  });
  return { raw, code: version === 5 ? ack.reasonCode : ack.returnCode };
}

describe("session ownership", () => {
  for (const version of [4, 5] as const) {
    it(`a JWT user cannot take a device's client id: CONNACK ${version === 5 ? "0x85" : "2"}, the device stays connected and keeps its commands (MQTT ${version})`, async () => {
      const device = await createDevice(uid("acc"));
      const other = await bystander(uid("acc"));
      const same = await bystander(device.accountId);
      const commands = deviceTopic(device, "cmd");
      const { client: dev, got: devGot } = await connectCollecting({ clientId: device.deviceId, username: device.deviceId, password: device.password, clean: false, protocolVersion: 4 });
      await subscribe(dev, commands, 1);

      const attacker = await mintToken(device.accountId, "mallory", { acl: { pub: [], sub: [] } });
      const { raw, code } = await rawConnect(version, device.deviceId, "mallory", attacker, false);
      expect(code).toBe(version === 5 ? 0x85 : 2);
      await raw.waitClosed();

      // The device was not booted and still gets its commands; nothing reached the attacker.
      const opsId = uid("ops");
      const ops = await connect({ clientId: opsId, username: opsId, password: await mintToken(device.accountId, opsId), protocolVersion: 4 });
      await ops.publishAsync(commands, "reboot", { qos: 1 });
      await waitFor(() => devGot.some((m) => m.payload === "reboot"), "the command at the device");
      expect(dev.connected).toBe(true);
      expect(raw.packets.filter((p) => p.cmd === "publish")).toEqual([]);
      await stillServed(same);
      await stillServed(other);
      await end(dev, ops, same.client, other.client);
    });
  }

  it("one user cannot resume another user's persistent session or read its messages", async () => {
    const account = uid("acc");
    const other = await bystander(uid("acc"));
    const clientId = uid("private");
    const aliceToken = await mintToken(account, "alice");
    const { client: alice } = await connectCollecting({ clientId, username: "alice", password: aliceToken, clean: false, protocolVersion: 4 });
    await subscribe(alice, `private/${clientId}`, 1);
    await end(alice);

    const sender = await connect({ clientId: uid("s"), username: "sender", password: await mintToken(account, "sender"), protocolVersion: 4 });
    await sender.publishAsync(`private/${clientId}`, "for alice", { qos: 1 });

    const bobToken = await mintToken(account, "bob");
    const bob = await rawConnect(4, clientId, "bob", bobToken, false);
    expect(bob.code).toBe(2);
    await bob.raw.waitClosed();
    expect(bob.raw.packets.filter((p) => p.cmd === "publish")).toEqual([]);

    // Alice still has her session and the queued message.
    const back = await connectCollecting({ clientId, username: "alice", password: aliceToken, clean: false, protocolVersion: 4 });
    expect(back.sessionPresent).toBe(true);
    await waitFor(() => back.got.some((m) => m.payload === "for alice"), "alice's queued message");
    await stillServed(other);
    await end(back.client, sender, other.client);
  });

  it("a resumed session keeps only the subscriptions the identity's current ACL covers", async () => {
    const account = uid("acc");
    const clientId = uid("shrink");
    const wide = await mintToken(account, "carol", { acl: { pub: ["#"], sub: ["a/#", "b/#"] } });
    const first = await connect({ clientId, username: "carol", password: wide, clean: false, protocolVersion: 4 });
    await subscribe(first, ["a/x", "b/x"], 1);
    await end(first);
    const narrow = await mintToken(account, "carol", { acl: { pub: ["#"], sub: ["a/#"] } });
    const { client, got, sessionPresent } = await connectCollecting({ clientId, username: "carol", password: narrow, clean: false, protocolVersion: 4 });
    expect(sessionPresent).toBe(true);
    const pub = await connect({ clientId: uid("p"), username: "p", password: await mintToken(account, "p"), protocolVersion: 4 });
    await pub.publishAsync("b/x", "revoked", { qos: 1 });
    await pub.publishAsync("a/x", "kept", { qos: 1 });
    await waitFor(() => got.some((m) => m.payload === "kept"), "the message on the covered filter");
    // Deliveries to one session keep the router's order: "revoked" would have come first.
    expect(got.map((m) => m.payload)).toEqual(["kept"]);
    await end(client, pub);
  });
});

describe("paged paths", () => {
  it("an offline queue larger than one page (1.2 MiB) is handed over in pages, complete and in order", async () => {
    const topic = `paged/${uid("t")}`;
    const clientId = uid("paged");
    const other = await bystander(uid("acc"));
    const first = await connect({ clientId, clean: false, protocolVersion: 4 });
    await subscribe(first, topic, 1);
    await end(first);
    const pub = await connect({ clientId: uid("pub"), protocolVersion: 4 });
    for (let i = 0; i < 12; i++) await pub.publishAsync(topic, Buffer.alloc(100 * 1024, 48 + (i % 10)), { qos: 1 });
    const back = await connectCollecting({ clientId, clean: false, protocolVersion: 4 });
    expect(back.sessionPresent).toBe(true);
    await waitFor(() => back.got.length >= 12, `12 queued messages (got ${back.got.length})`);
    expect(back.got.map((m) => m.payload.length)).toEqual(new Array(12).fill(100 * 1024));
    expect(back.got.map((m) => m.payload[0])).toEqual(Array.from({ length: 12 }, (_, i) => String(i % 10)));
    await stillServed(other);
    await end(back.client, pub, other.client);
  });
});

describe("takeover hand-over in pages", () => {
  it("1.2 MiB of unacknowledged messages move to the taking-over connection, complete, in order, with DUP", async () => {
    const topic = `takeover/${uid("t")}`;
    const clientId = uid("holder");
    const other = await bystander(uid("acc"));
    // A raw subscriber that never acknowledges: everything stays in flight (window 100).
    const holder = await RawClient.open();
    expect((await holder.connect(clientId, { clean: false })).returnCode).toBe(0);
    holder.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await holder.next("suback");
    const pub = await connect({ clientId: uid("pub"), protocolVersion: 4 });
    for (let i = 0; i < 12; i++) await pub.publishAsync(topic, Buffer.alloc(100 * 1024, 48 + (i % 10)), { qos: 1 });
    for (let i = 0; i < 12; i++) await holder.next("publish");
    const next = await RawClient.open();
    expect((await next.connect(clientId, { clean: false })).sessionPresent).toBe(true);
    const redelivered: Packet[] = [];
    for (let i = 0; i < 12; i++) redelivered.push(await next.next("publish"));
    expect(redelivered.map((p) => (p.cmd === "publish" ? [p.dup, p.payload.length, Buffer.from(p.payload).subarray(0, 1).toString()] : null))).toEqual(
      Array.from({ length: 12 }, (_, i) => [true, 100 * 1024, String(i % 10)]),
    );
    await holder.waitClosed();
    await stillServed(other);
    next.close();
    await end(pub, other.client);
  });
});

describe("no silent loss", () => {
  it("50 QoS 0 publishes sent right before DISCONNECT all reach the subscriber", async () => {
    const topic = `burst/${uid("t")}`;
    const other = await bystander(uid("acc"));
    const { client: sub, got } = await connectCollecting({ clientId: uid("sub"), protocolVersion: 4 });
    await subscribe(sub, topic, 0);
    const raw = await RawClient.open();
    expect((await raw.connect(uid("burst"))).returnCode).toBe(0);
    // One frame: 50 PUBLISH then DISCONNECT, as a command-line publisher writes them.
    const packets = Array.from({ length: 50 }, (_, i) => encode({ cmd: "publish", topic, payload: Buffer.from(String(i)), qos: 0, retain: false, dup: false }));
    packets.push(encode({ cmd: "disconnect" }));
    raw.sendBytes(Buffer.concat(packets.map((p) => Buffer.from(p))));
    await raw.waitClosed();
    await waitFor(() => got.length === 50, `50 messages (got ${got.length})`);
    expect(got.map((m) => m.payload)).toEqual(Array.from({ length: 50 }, (_, i) => String(i)));
    await stillServed(other);
    await end(sub, other.client);
  });
});

describe("poison properties", () => {
  /** User properties named after Object.prototype members, as own properties of a null-prototype map. */
  function poison(): Record<string, string> {
    const up: Record<string, string> = Object.create(null);
    for (const [k, v] of POISON) Object.defineProperty(up, k, { value: v, enumerable: true });
    return up;
  }
  const POISON: Array<[string, string]> = [["__proto__", "p"], ["constructor", "c"], ["toString", "t"]];
  /** The user properties of a received PUBLISH as [name, value] pairs (object literals would eat `__proto__`). */
  const names = (got: Packet): Array<[string, unknown]> => {
    const up = got.cmd === "publish" ? got.properties?.userProperties : undefined;
    return up ? Object.keys(up).map((k) => [k, Reflect.get(up, k)]) : [];
  };

  it("MQTT and HTTP publishes with __proto__ / constructor user properties are delivered as data, live, queued and retained", async () => {
    const topic = `poison/${uid("t")}`;
    const other = await bystander(uid("acc"));
    const live = await RawClient.open(undefined, { version: 5 });
    expect((await live.connect(uid("live"))).reasonCode).toBe(0);
    live.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await live.next("suback");
    // A persistent subscriber that is offline when the message arrives.
    const queuedId = uid("queued");
    const queued = await RawClient.open(undefined, { version: 5 });
    await queued.connect(queuedId, { clean: false, properties: { sessionExpiryInterval: 600 } });
    queued.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await queued.next("suback");
    queued.send({ cmd: "disconnect" });
    await queued.waitClosed();

    const pub = await RawClient.open(undefined, { version: 5 });
    await pub.connect(uid("pub"));
    pub.send({ cmd: "publish", topic, payload: Buffer.from("m"), qos: 1, messageId: 5, retain: true, dup: false, properties: { userProperties: poison() } });
    expect(await pub.next("puback")).toMatchObject({ messageId: 5 });
    expect(names(await live.next("publish"))).toEqual(POISON);

    const back = await RawClient.open(undefined, { version: 5 });
    expect((await back.connect(queuedId, { clean: false, properties: { sessionExpiryInterval: 600 } })).sessionPresent).toBe(true);
    expect(names(await back.next("publish"))).toEqual(POISON);

    const late = await RawClient.open(undefined, { version: 5 });
    await late.connect(uid("late"));
    late.send({ cmd: "subscribe", messageId: 2, subscriptions: [{ topic, qos: 1 }] });
    await late.next("suback");
    expect(names(await late.next("publish"))).toEqual(POISON);

    const token = await mintToken("anon", uid("http"));
    const { inject } = await import("vitest");
    const res = await fetch(`${inject("brokerUrl")}/api/v1/messages?topic=${encodeURIComponent(topic)}&qos=1`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "MQTT-User-Property": "__proto__=h, constructor=k" },
      body: "via http",
    });
    expect(res.status).toBe(201);
    expect(names(await live.next("publish"))).toEqual([["__proto__", "h"], ["constructor", "k"]]);
    // Every connection is still up, and the bystander is served.
    for (const c of [live, pub, back, late]) expect(c.closed).toBeNull();
    // Clear the retained message for later runs.
    pub.send({ cmd: "publish", topic, payload: Buffer.alloc(0), qos: 0, retain: true, dup: false });
    await stillServed(other);
    for (const c of [live, pub, back, late]) c.close();
    await end(other.client);
  });
});

describe("retained messages: pages and the account's quota", () => {
  /** A JWT user of `account` (account-wide rights) on a raw client. */
  async function rawUser(account: string, version: 4 | 5): Promise<{ raw: RawClient; id: string }> {
    const id = uid("ret");
    const { raw, code } = await rawConnect(version, id, id, await mintToken(account, id), true);
    expect(code).toBe(0);
    return { raw, id };
  }

  it("60 retained messages of 120 KiB (7 MiB, many pages) reach a wildcard subscriber complete at QoS 1 and at QoS 0, in topic order; bystanders are served", async () => {
    const account = uid("acc");
    const same = await bystander(account);
    const other = await bystander(uid("acc"));
    const subject = uid("hoarder");
    const pub = await connect({ clientId: subject, username: subject, password: await mintToken(account, subject), protocolVersion: 4 });
    const topics = Array.from({ length: 60 }, (_, i) => `hoard/${String(i).padStart(3, "0")}`);
    for (const [i, topic] of topics.entries()) await pub.publishAsync(topic, Buffer.alloc(120 * 1024, 65 + (i % 26)), { qos: 1, retain: true });
    for (const qos of [1, 0] as const) {
      const id = uid("reader");
      const reader = await connectCollecting({ clientId: id, username: id, password: await mintToken(account, id), protocolVersion: 4 });
      await subscribe(reader.client, "hoard/#", qos);
      await waitFor(() => reader.got.length >= 60, `60 retained messages at QoS ${qos} (got ${reader.got.length})`, 30_000);
      expect(reader.got.map((m) => m.topic)).toEqual(topics);
      expect(reader.got.every((m) => m.retain && m.payload.length === 120 * 1024)).toBe(true);
      await end(reader.client);
    }
    await stillServed(same);
    await stillServed(other);
    await end(pub, same.client, other.client);
  });

  it("past MAX_RETAINED_BYTES (16 MiB in the test broker) a retained publish is refused: MQTT 5 PUBACK 0x97, 3.1.1 acknowledged and dropped, HTTP 413, each with a LimitExceeded event; nothing of it is delivered; deleting frees room; bystanders unaffected", async () => {
    const account = uid("acc");
    const mon = await monitor(account);
    const same = await bystander(account);
    const other = await bystander(uid("acc"));
    const watcherId = uid("watcher");
    const watcher = await connectCollecting({ clientId: watcherId, username: watcherId, password: await mintToken(account, watcherId), protocolVersion: 4 });
    await subscribe(watcher.client, "full/#", 1);

    const v5 = await rawUser(account, 5);
    const payload = Buffer.alloc(120 * 1024, 0x61);
    const codes: Array<number | undefined> = [];
    for (let i = 1; i <= 140; i++) {
      v5.raw.send({ cmd: "publish", topic: `full/${i}`, payload, qos: 1, retain: true, messageId: i, dup: false, properties: {} });
      const ack = (await v5.raw.next("puback")) as { messageId?: number; reasonCode?: number };
      codes.push(ack.reasonCode);
    }
    const refused = codes.filter((c) => c === 0x97).length;
    expect(refused).toBeGreaterThan(0);
    expect(codes.indexOf(0x97)).toBe(140 - refused); // the quota holds from one message on
    expect(await mon.waitEvent(v5.id, "LimitExceeded")).toMatchObject({ Limit: "MAX_RETAINED_MESSAGES/MAX_RETAINED_BYTES" });

    const v4 = await rawUser(account, 4);
    v4.raw.send({ cmd: "publish", topic: "full/v4", payload, qos: 1, retain: true, messageId: 1, dup: false });
    expect(await v4.raw.next("puback")).toMatchObject({ messageId: 1 });
    expect(await mon.waitEvent(v4.id, "LimitExceeded")).toMatchObject({ Limit: "MAX_RETAINED_MESSAGES/MAX_RETAINED_BYTES" });

    const httpToken = await mintToken(account, uid("http"));
    const http = await fetch(`${inject("brokerUrl")}/api/v1/messages?topic=full/http&qos=1&retain=true`, { method: "POST", headers: { authorization: `Bearer ${httpToken}` }, body: payload });
    expect(http.status).toBe(413);
    expect(await http.json()).toMatchObject({ error: { code: "retained_quota_exceeded" } });

    // The watcher got the accepted ones only; a non-retained publish still flows.
    await waitFor(() => watcher.got.length >= 140 - refused, `the ${140 - refused} accepted messages`, 30_000);
    v4.raw.send({ cmd: "publish", topic: "full/live", payload: Buffer.from("live"), qos: 1, retain: false, messageId: 2, dup: false });
    await v4.raw.next("puback");
    await waitFor(() => watcher.got.some((m) => m.topic === "full/live"), "the non-retained publish");
    const refusedTopics = new Set([...codes.flatMap((c, i) => (c === 0x97 ? [`full/${i + 1}`] : [])), "full/v4", "full/http"]);
    expect(watcher.got.filter((m) => refusedTopics.has(m.topic))).toEqual([]);

    // An empty retained payload deletes one, and makes room for one more.
    v5.raw.send({ cmd: "publish", topic: "full/1", payload: Buffer.alloc(0), qos: 1, retain: true, messageId: 1000, dup: false, properties: {} });
    expect(((await v5.raw.next("puback")) as { reasonCode?: number }).reasonCode ?? 0).toBeLessThan(0x80);
    v5.raw.send({ cmd: "publish", topic: "full/again", payload, qos: 1, retain: true, messageId: 1001, dup: false, properties: {} });
    expect(((await v5.raw.next("puback")) as { reasonCode?: number }).reasonCode ?? 0).toBeLessThan(0x80);

    await stillServed(same);
    await stillServed(other);
    v4.raw.close();
    v5.raw.close();
    await end(watcher.client, mon.client, same.client, other.client);
  });
});
