import { describe, it, expect } from "vitest";
import type { IPublishPacket } from "mqtt-packet";
import { connect, connectCollecting, end, sleep, subscribe, uid, waitFor } from "../helpers/mqtt";
import { RawClient } from "../helpers/raw";
import { mintToken } from "../helpers/admin";
import { prop, props, publish, utf8 } from "../helpers/bytes";

const v5 = { protocolVersion: 5 as const };
const publishes = (raw: RawClient): IPublishPacket[] => raw.packets.flatMap((p) => (p.cmd === "publish" ? [p] : []));

/** A raw MQTT 5 connection; returns it with its CONNACK. */
async function raw5(clientId: string, extra: Parameters<RawClient["connect"]>[1] = {}) {
  const raw = await RawClient.open(undefined, { version: 5 });
  const ack = await raw.connect(clientId, extra);
  return { raw, ack };
}

describe("MQTT 5.0", () => {
  it("CONNACK carries the server's properties and an assigned client identifier", async () => {
    const { raw, ack } = await raw5("", { properties: { sessionExpiryInterval: 10 * 365 * 24 * 3600 } });
    expect(ack.reasonCode).toBe(0);
    expect(ack.properties).toMatchObject({
      assignedClientIdentifier: expect.stringMatching(/^auto-/),
      sessionExpiryInterval: 604800, // capped by SESSION_EXPIRY_SECONDS and said so
      retainAvailable: true,
      wildcardSubscriptionAvailable: true,
      subscriptionIdentifiersAvailable: true,
      sharedSubscriptionAvailable: true,
      topicAliasMaximum: expect.any(Number),
      receiveMaximum: expect.any(Number),
      maximumPacketSize: expect.any(Number),
    });
    raw.close();
  });

  it("forwards user properties (in order), content type, payload format, response topic and correlation data; drops them toward 3.1.1", async () => {
    const topic = `v5/${uid()}`;
    const sub5 = await raw5(uid());
    sub5.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await sub5.raw.next("suback");
    const sub4 = await connectCollecting({ clientId: uid() });
    await subscribe(sub4.client, topic, 1);
    const pub = await connect({ clientId: uid(), ...v5 });
    await pub.publishAsync(topic, "hello", {
      qos: 1,
      properties: {
        userProperties: { b: "2", a: ["1", "3"] },
        contentType: "text/plain",
        payloadFormatIndicator: true,
        responseTopic: "replies/x",
        correlationData: Buffer.from("corr-7"),
      },
    });
    const got = await sub5.raw.next("publish");
    expect(got.cmd === "publish" && got.properties).toMatchObject({
      userProperties: { b: "2", a: ["1", "3"] },
      contentType: "text/plain",
      payloadFormatIndicator: true,
      responseTopic: "replies/x",
      correlationData: Buffer.from("corr-7"),
    });
    if (got.cmd === "publish") expect(Object.keys(got.properties?.userProperties ?? {})).toEqual(["b", "a"]);
    await waitFor(() => sub4.got.length === 1, "the 3.1.1 copy");
    expect(sub4.got[0]).toMatchObject({ payload: "hello", qos: 1 });
    sub5.raw.close();
    await end(sub4.client, pub);
  });

  it("a 3.1.1 publisher and a 5.0 subscriber interoperate both ways", async () => {
    const topic = `v5/${uid()}`;
    const c4 = await connectCollecting({ clientId: uid() });
    const c5 = await connectCollecting({ clientId: uid(), ...v5 });
    await subscribe(c4.client, topic, 1);
    await subscribe(c5.client, topic, 1);
    await c4.client.publishAsync(topic, "from4", { qos: 1 });
    await c5.client.publishAsync(topic, "from5", { qos: 1 });
    await waitFor(() => c4.got.length === 2 && c5.got.length === 2, "both messages at both");
    await end(c4.client, c5.client);
  });

  it("no local: a subscriber does not get its own publishes", async () => {
    const topic = `v5/${uid()}`;
    const c = await raw5(uid());
    c.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 0, nl: true }] });
    await c.raw.next("suback");
    const other = await connect({ clientId: uid(), ...v5 });
    c.raw.send({ cmd: "publish", topic, payload: Buffer.from("mine"), qos: 0, retain: false, dup: false });
    await other.publishAsync(topic, "theirs");
    await waitFor(() => publishes(c.raw).length === 1, "the other client's message");
    // A QoS 1 publish of its own (to a topic it does not subscribe to): its PUBACK comes once
    // "mine", sent before it on the same connection, has been routed.
    c.raw.send({ cmd: "publish", topic: `${topic}/after`, payload: Buffer.from("after"), qos: 1, messageId: 1, retain: false, dup: false });
    await c.raw.next("puback");
    expect(publishes(c.raw).map((p) => p.payload.toString())).toEqual(["theirs"]);
    c.raw.close();
    await end(other);
  });

  it("retain as published keeps the retain flag on live deliveries", async () => {
    const topic = `v5/${uid()}`;
    const c = await raw5(uid());
    c.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 0, rap: true }] });
    await c.raw.next("suback");
    const p = await connect({ clientId: uid(), ...v5 });
    await p.publishAsync(topic, "r", { retain: true, qos: 1 });
    const got = await c.raw.next("publish");
    expect(got).toMatchObject({ retain: true });
    await p.publishAsync(topic, "", { retain: true, qos: 1 });
    c.raw.close();
    await end(p);
  });

  it("retain handling 2 sends no retained messages; 1 only for a new subscription", async () => {
    const topic = `v5/${uid()}`;
    const p = await connect({ clientId: uid(), ...v5 });
    await p.publishAsync(topic, "kept", { retain: true, qos: 1 });
    const c = await raw5(uid());
    c.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 0, rh: 2 }] });
    await c.raw.next("suback");
    await c.raw.pingRoundTrip(); // retained messages would follow the SUBACK on the same connection
    expect(publishes(c.raw)).toEqual([]);
    const d = await raw5(uid());
    d.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 0, rh: 1 }] });
    await d.raw.next("suback");
    await waitFor(() => publishes(d.raw).length === 1, "the retained message for the new subscription");
    d.raw.send({ cmd: "subscribe", messageId: 2, subscriptions: [{ topic, qos: 0, rh: 1 }] });
    await d.raw.next("suback");
    await d.raw.pingRoundTrip();
    expect(publishes(d.raw)).toHaveLength(1); // not again for the existing subscription
    await p.publishAsync(topic, "", { retain: true, qos: 1 });
    c.raw.close();
    d.raw.close();
    await end(p);
  });

  it("subscription identifiers come with each matching message, several when several subscriptions match", async () => {
    const base = `v5/${uid()}`;
    const c = await raw5(uid());
    c.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: `${base}/+`, qos: 0 }], properties: { subscriptionIdentifier: 11 } });
    await c.raw.next("suback");
    c.raw.send({ cmd: "subscribe", messageId: 2, subscriptions: [{ topic: `${base}/#`, qos: 0 }], properties: { subscriptionIdentifier: 22 } });
    await c.raw.next("suback");
    const p = await connect({ clientId: uid(), ...v5 });
    await p.publishAsync(`${base}/a`, "both");
    await p.publishAsync(`${base}/a/b`, "one");
    await waitFor(() => publishes(c.raw).length === 2, "two messages");
    const [both, one] = publishes(c.raw);
    const ids = (x: IPublishPacket | undefined): number[] => [x?.properties?.subscriptionIdentifier ?? []].flat().sort((a, b) => a - b);
    expect(ids(both)).toEqual([11, 22]);
    expect(ids(one)).toEqual([22]);
    c.raw.close();
    await end(p);
  });

  it("topic aliases from the client: set with a topic, then used alone; an alias never set closes with 0x82 (§3.3.2.3.4)", async () => {
    const topic = `v5/${uid()}`;
    const sub = await connectCollecting({ clientId: uid(), ...v5 });
    await subscribe(sub.client, topic, 1);
    const c = await raw5(uid());
    c.raw.send({ cmd: "publish", topic, payload: Buffer.from("1"), qos: 1, messageId: 1, retain: false, dup: false, properties: { topicAlias: 3 } });
    await c.raw.next("puback");
    c.raw.send({ cmd: "publish", topic: "", payload: Buffer.from("2"), qos: 1, messageId: 2, retain: false, dup: false, properties: { topicAlias: 3 } });
    await c.raw.next("puback");
    await waitFor(() => sub.got.length === 2, "both messages");
    expect(sub.got.map((m) => [m.topic, m.payload])).toEqual([[topic, "1"], [topic, "2"]]);
    c.raw.send({ cmd: "publish", topic: "", payload: Buffer.from("3"), qos: 0, retain: false, dup: false, properties: { topicAlias: 9 } });
    expect(await c.raw.next("disconnect")).toMatchObject({ reasonCode: 0x82 });
    await c.raw.waitClosed();
    await end(sub.client);
  });

  it("message expiry: an expired retained message is not delivered; a live one carries the remaining interval", async () => {
    const topic = `v5/${uid()}`;
    const p = await connect({ clientId: uid(), ...v5 });
    await p.publishAsync(`${topic}/short`, "gone", { retain: true, qos: 1, properties: { messageExpiryInterval: 1 } });
    await p.publishAsync(`${topic}/long`, "kept", { retain: true, qos: 1, properties: { messageExpiryInterval: 100 } });
    await sleep(2100); // past the short message's expiry
    const c = await raw5(uid());
    c.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: `${topic}/#`, qos: 1 }] });
    await c.raw.next("suback");
    await waitFor(() => publishes(c.raw).length === 1, "the unexpired retained message");
    await c.raw.pingRoundTrip();
    const [kept] = publishes(c.raw);
    expect(kept?.payload.toString()).toBe("kept");
    expect(kept?.properties?.messageExpiryInterval).toBeLessThanOrEqual(98);
    expect(kept?.properties?.messageExpiryInterval).toBeGreaterThan(0);
    c.raw.close();
    await end(p);
  });

  it("session expiry: kept within the interval, gone after it", async () => {
    const clientId = uid("se");
    const topic = `v5/${uid()}`;
    const a = await connect({ clientId, ...v5, clean: true, properties: { sessionExpiryInterval: 2 } });
    await subscribe(a, topic, 1);
    await end(a);
    const pub = await connect({ clientId: uid(), ...v5 });
    await pub.publishAsync(topic, "queued", { qos: 1 });
    const b = await connectCollecting({ clientId, ...v5, clean: false, properties: { sessionExpiryInterval: 2 } });
    expect(b.sessionPresent).toBe(true);
    await waitFor(() => b.got.length === 1, "the queued message");
    await end(b.client);
    await sleep(3500); // past the session expiry
    const c = await connectCollecting({ clientId, ...v5, clean: false, properties: { sessionExpiryInterval: 2 } });
    expect(c.sessionPresent).toBe(false);
    await end(c.client, pub);
  });

  it("will delay: a reconnect within the delay cancels the will; otherwise it is published after the delay", async () => {
    const willTopic = `v5/will/${uid()}`;
    const w = await connectCollecting({ clientId: uid(), ...v5 });
    await subscribe(w.client, willTopic, 1);
    const clientId = uid("wd");
    const will = { topic: willTopic, payload: Buffer.from("late"), qos: 1 as const, retain: false, properties: { willDelayInterval: 2 } };
    const first = await raw5(clientId, { will, clean: true, properties: { sessionExpiryInterval: 60 } });
    first.raw.terminate();
    await sleep(500);
    const again = await raw5(clientId, { clean: false, properties: { sessionExpiryInterval: 60 } });
    await sleep(2500); // past the will delay: a will not cancelled would be out by now
    expect(w.got).toEqual([]); // cancelled by the reconnect
    again.raw.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clean: true, keepalive: 60, clientId: "x" }); // protocol error: second CONNECT
    await again.raw.waitClosed();
    // This time nobody comes back: the will arrives after its delay.
    const third = await raw5(clientId, { will, clean: false, properties: { sessionExpiryInterval: 60 } });
    const t0 = Date.now();
    third.raw.terminate();
    await waitFor(() => w.got.length === 1, "the delayed will", 10_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1500);
    await end(w.client);
  });

  it("takeover sends DISCONNECT 0x8E to the old connection", async () => {
    const clientId = uid("to");
    const old = await raw5(clientId);
    const fresh = await raw5(clientId);
    expect(fresh.ack.reasonCode).toBe(0);
    expect(await old.raw.next("disconnect")).toMatchObject({ reasonCode: 0x8e });
    await old.raw.waitClosed();
    fresh.raw.close();
  });

  it("receive maximum: never more unacknowledged QoS 1 messages than the client allows", async () => {
    const topic = `v5/${uid()}`;
    const c = await raw5(uid(), { properties: { receiveMaximum: 2 } });
    c.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await c.raw.next("suback");
    const p = await connect({ clientId: uid(), ...v5 });
    for (let i = 0; i < 5; i++) await p.publishAsync(topic, String(i), { qos: 1 });
    await waitFor(() => publishes(c.raw).length === 2, "two in flight");
    await c.raw.pingRoundTrip(); // all 5 were acknowledged to the publisher: routed
    expect(publishes(c.raw)).toHaveLength(2);
    const first = publishes(c.raw)[0];
    c.raw.send({ cmd: "puback", messageId: first?.messageId });
    await waitFor(() => publishes(c.raw).length === 3, "one more after a PUBACK");
    c.raw.close();
    await end(p);
  });

  it("maximum packet size: a message too large for a subscriber is skipped for it, not for others", async () => {
    const topic = `v5/${uid()}`;
    const small = await raw5(uid(), { properties: { maximumPacketSize: 200 } });
    small.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await small.raw.next("suback");
    const big = await connectCollecting({ clientId: uid(), ...v5 });
    await subscribe(big.client, topic, 1);
    const p = await connect({ clientId: uid(), ...v5 });
    await p.publishAsync(topic, "x".repeat(1000), { qos: 1 });
    await p.publishAsync(topic, "small", { qos: 1 });
    await waitFor(() => big.got.length === 2, "both at the big subscriber");
    await waitFor(() => publishes(small.raw).length === 1, "the small one");
    await small.raw.pingRoundTrip();
    expect(publishes(small.raw).map((x) => x.payload.toString())).toEqual(["small"]);
    small.raw.close();
    await end(big.client, p);
  });

  it("reason codes: denied publish 0x87, denied subscription 0x87, invalid filter 0x8F, unsubscribe of nothing 0x11", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "r5", { acl: { pub: ["ok/#"], sub: ["ok/#"] } });
    const c = await raw5("r5", { username: "r5", password: Buffer.from(token) });
    expect(c.ack.reasonCode).toBe(0);
    c.raw.send({ cmd: "publish", topic: "no/x", payload: Buffer.from("x"), qos: 1, messageId: 5, retain: false, dup: false });
    expect(await c.raw.next("puback")).toMatchObject({ messageId: 5, reasonCode: 0x87 });
    c.raw.send({ cmd: "subscribe", messageId: 6, subscriptions: [{ topic: "ok/#", qos: 1 }, { topic: "no/#", qos: 1 }, { topic: "a/#/b", qos: 1 }] });
    expect(await c.raw.next("suback")).toMatchObject({ granted: [1, 0x87, 0x8f] });
    c.raw.send({ cmd: "unsubscribe", messageId: 7, unsubscriptions: ["ok/#", "never/#"] });
    expect(await c.raw.next("unsuback")).toMatchObject({ granted: [0x00, 0x11] });
    c.raw.close();
  });

  it("refusals use the 5.0 codes: bad password 0x86, expired or mode mixing 0x87, quota 0x97, AUTH method 0x8C", async () => {
    const acc = uid("acc");
    const bad = await raw5(uid(), { username: "nobody", password: Buffer.from("nope") });
    expect(bad.ack.reasonCode).toBe(0x86);
    const token = await mintToken(acc, "mixer");
    const multi = await raw5("mixer-tab", { username: "mixer", password: Buffer.from(token) });
    expect(multi.ack.reasonCode).toBe(0);
    const single = await raw5("mixer", { username: "mixer", password: Buffer.from(token) });
    expect(single.ack.reasonCode).toBe(0x87);
    const auth = await raw5(uid(), { properties: { authenticationMethod: "SCRAM-SHA-1" } });
    expect(auth.ack.reasonCode).toBe(0x8c);
    multi.raw.close();
  });

  it("a 3.1.1 and a 5.0 member share one group", async () => {
    const base = `v5/${uid()}`;
    const group = uid("g");
    const m4 = await connectCollecting({ clientId: uid() });
    const m5 = await connectCollecting({ clientId: uid(), ...v5 });
    await subscribe(m4.client, `$share/${group}/${base}`, 1);
    await subscribe(m5.client, `$share/${group}/${base}`, 1);
    const p = await connect({ clientId: uid(), ...v5 });
    for (let i = 0; i < 20; i++) await p.publishAsync(base, String(i), { qos: 1 });
    await waitFor(() => m4.got.length + m5.got.length === 20, "20 deliveries in the group");
    expect(m4.got.length).toBeGreaterThan(0);
    expect(m5.got.length).toBeGreaterThan(0);
    await end(m4.client, m5.client, p);
  });

  it("HTTP publish carries MQTT 5 message properties from MQTT-* headers", async () => {
    const topic = `v5/${uid()}`;
    const c = await raw5(uid());
    c.raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await c.raw.next("suback");
    const token = await mintToken("anon", "http5");
    const { inject } = await import("vitest");
    const res = await fetch(`${inject("brokerUrl")}/api/v1/messages?topic=${encodeURIComponent(topic)}&qos=1`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${token}`,
        "MQTT-Content-Type": "application/json",
        "MQTT-Response-Topic": "replies/1",
        "MQTT-Correlation-Data": Buffer.from("c-1").toString("base64"),
        "MQTT-Payload-Format": "utf-8",
        "MQTT-Message-Expiry": "60",
        "MQTT-User-Property": "a=1, b=2",
      },
      body: '{"t":21}',
    });
    expect(res.status).toBe(201);
    const got = await c.raw.next("publish");
    expect(got.cmd === "publish" && got.properties).toMatchObject({
      contentType: "application/json",
      responseTopic: "replies/1",
      correlationData: Buffer.from("c-1"),
      payloadFormatIndicator: true,
      userProperties: { a: "1", b: "2" },
    });
    if (got.cmd === "publish") expect(got.properties?.messageExpiryInterval).toBeGreaterThan(55);
    const bad = await fetch(`${inject("brokerUrl")}/api/v1/messages?topic=${encodeURIComponent(topic)}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "MQTT-Payload-Format": "utf-8" },
      body: new Uint8Array([0xff, 0xfe]),
    });
    expect(bad.status).toBe(400);
    c.raw.close();
  });

  it("malformed 5.0 properties close with DISCONNECT 0x81: a duplicate property, a property not allowed in the packet", async () => {
    const cases = [
      // PUBLISH "a" with Content Type twice
      publish({ topic: "a", version: 5, properties: props(prop.contentType("x"), prop.contentType("y")), payload: utf8("p") }),
      // PUBLISH "a" with Session Expiry Interval (a CONNECT/CONNACK/DISCONNECT property)
      publish({ topic: "a", version: 5, properties: props(prop.sessionExpiry(5)), payload: utf8("p") }),
    ];
    for (const bytes of cases) {
      const c = await raw5(uid());
      c.raw.sendBytes(bytes);
      const d = await c.raw.next("disconnect");
      expect([0x81, 0x82]).toContain(d.cmd === "disconnect" ? d.reasonCode : -1);
      await c.raw.waitClosed();
    }
  });

  it("refusals use the 5.0 codes: client id not valid 0x85, expired token 0x87, multi-mode cap 0x97", async () => {
    const acc = uid("acc");
    const { createDevice } = await import("../helpers/admin");
    const dev = await createDevice(acc);
    const wrongId = await raw5("not-the-device", { username: dev.deviceId, password: Buffer.from(dev.password) });
    expect(wrongId.ack.reasonCode).toBe(0x85);
    const { SignJWT } = await import("jose");
    const { inject } = await import("vitest");
    const expired = await new SignJWT({ acc }).setProtectedHeader({ alg: "HS256" }).setSubject("late").setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(new TextEncoder().encode(inject("jwtSecret")));
    const late = await raw5(uid(), { username: "late", password: Buffer.from(expired) });
    expect(late.ack.reasonCode).toBe(0x87);
    const token = await mintToken(acc, "fleet5");
    const held: RawClient[] = [];
    for (let i = 0; i < 100; i++) {
      const r = await raw5(`fleet5-${i}`, { username: "fleet5", password: Buffer.from(token) });
      expect(r.ack.reasonCode).toBe(0);
      held.push(r.raw);
    }
    const over = await raw5("fleet5-100", { username: "fleet5", password: Buffer.from(token) });
    expect(over.ack.reasonCode).toBe(0x97);
    for (const r of held) r.close();
  }, 60_000);
});
