import { describe, it, expect, afterAll } from "vitest";
import type { IPublishPacket } from "mqtt-packet";
import { connect, connectCollecting, end, pingRoundTrip, subscribe, uid, waitFor } from "../helpers/mqtt";
import { RawClient } from "../helpers/raw";
import { TEST_VARS, killBroker, startBroker, stopBroker, type Broker } from "../helpers/broker";

const publishes = (raw: RawClient): IPublishPacket[] => raw.packets.flatMap((p) => (p.cmd === "publish" ? [p] : []));

describe("QoS 2", () => {
  it("reaches a QoS 2 subscriber at QoS 2 and a QoS 1 subscriber at QoS 1, exactly once each", async () => {
    const topic = `q2/${uid()}`;
    const s2 = await connectCollecting({ clientId: uid() });
    const s1 = await connectCollecting({ clientId: uid() });
    expect(await subscribe(s2.client, topic, 2)).toEqual([2]);
    expect(await subscribe(s1.client, topic, 1)).toEqual([1]);
    const pub = await connect({ clientId: uid() });
    for (let i = 0; i < 5; i++) await pub.publishAsync(topic, `m${i}`, { qos: 2 }); // resolves on PUBCOMP
    await waitFor(() => s2.got.length === 5 && s1.got.length === 5, "five messages each");
    await Promise.all([pingRoundTrip(s2.client), pingRoundTrip(s1.client)]);
    expect(s2.got.map((m) => [m.payload, m.qos])).toEqual([0, 1, 2, 3, 4].map((i) => [`m${i}`, 2]));
    expect(s1.got.map((m) => [m.payload, m.qos])).toEqual([0, 1, 2, 3, 4].map((i) => [`m${i}`, 1]));
    await end(s2.client, s1.client, pub);
  });

  it("a QoS 2 PUBLISH retransmitted with DUP before PUBREL is delivered once", async () => {
    const topic = `q2/${uid()}`;
    const sub = await connectCollecting({ clientId: uid() });
    await subscribe(sub.client, topic, 2);
    const raw = await RawClient.open();
    await raw.connect(uid());
    const publish = { cmd: "publish" as const, topic, payload: Buffer.from("once"), qos: 2 as const, messageId: 42, retain: false, dup: false };
    raw.send(publish);
    expect(await raw.next("pubrec")).toMatchObject({ messageId: 42 });
    raw.send({ ...publish, dup: true });
    expect(await raw.next("pubrec")).toMatchObject({ messageId: 42 });
    raw.send({ cmd: "pubrel", messageId: 42 });
    expect(await raw.next("pubcomp")).toMatchObject({ messageId: 42 });
    // After PUBREL the id is free again: a new message with id 42 is a new message.
    raw.send({ ...publish, payload: Buffer.from("again") });
    await raw.next("pubrec");
    raw.send({ cmd: "pubrel", messageId: 42 });
    await raw.next("pubcomp");
    await waitFor(() => sub.got.length === 2, "two distinct messages");
    await pingRoundTrip(sub.client);
    expect(sub.got.map((m) => m.payload)).toEqual(["once", "again"]);
    raw.close();
    await end(sub.client);
  });

  it("QoS 2 messages for an offline persistent session are delivered at QoS 2 on reconnect", async () => {
    const clientId = uid("off2");
    const topic = `q2/${uid()}`;
    const a = await connect({ clientId, clean: false });
    await subscribe(a, topic, 2);
    await end(a);
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(topic, "while-away", { qos: 2 });
    const b = await connectCollecting({ clientId, clean: false });
    expect(b.sessionPresent).toBe(true);
    await waitFor(() => b.got.length === 1, "the queued QoS 2 message");
    expect(b.got[0]).toMatchObject({ payload: "while-away", qos: 2 });
    await end(b.client, pub);
  });

  it("an outbound flow interrupted after PUBREC resumes with PUBREL (same packet id) after reconnect", async () => {
    const clientId = uid("flow");
    const topic = `q2/${uid()}`;
    const raw = await RawClient.open();
    await raw.connect(clientId, { clean: false });
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 2 }] });
    await raw.next("suback");
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(topic, "x", { qos: 2 });
    const p = await raw.next("publish");
    if (p.cmd !== "publish" || p.messageId === undefined) throw new Error("expected a QoS 2 PUBLISH");
    expect(p.qos).toBe(2);
    raw.send({ cmd: "pubrec", messageId: p.messageId });
    expect(await raw.next("pubrel")).toMatchObject({ messageId: p.messageId });
    raw.terminate(); // no PUBCOMP

    const again = await RawClient.open();
    expect((await again.connect(clientId, { clean: false })).sessionPresent).toBe(true);
    expect(await again.next("pubrel")).toMatchObject({ messageId: p.messageId });
    again.send({ cmd: "pubcomp", messageId: p.messageId });
    await again.pingRoundTrip();
    expect(publishes(again)).toEqual([]); // released: the message itself is not sent again
    again.send({ cmd: "disconnect" });
    await again.waitClosed();
    // Completed: a third connection gets nothing.
    const third = await RawClient.open();
    await third.connect(clientId, { clean: false });
    await third.pingRoundTrip();
    expect(third.packets.filter((x) => x.cmd === "publish" || x.cmd === "pubrel")).toEqual([]);
    third.send({ cmd: "disconnect" });
    await end(pub);
  });

  it("an outbound QoS 2 PUBLISH not yet PUBREC'd is resent with DUP and the same packet id", async () => {
    const clientId = uid("flow");
    const topic = `q2/${uid()}`;
    const raw = await RawClient.open();
    await raw.connect(clientId, { clean: false });
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 2 }] });
    await raw.next("suback");
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(topic, "y", { qos: 2 });
    const p = await raw.next("publish");
    raw.terminate();
    const again = await RawClient.open();
    await again.connect(clientId, { clean: false });
    const resent = await again.next("publish");
    expect(resent).toMatchObject({ dup: true, qos: 2, payload: Buffer.from("y") });
    if (p.cmd === "publish" && resent.cmd === "publish") expect(resent.messageId).toBe(p.messageId);
    again.close();
    await end(pub);
  });

  it("HTTP publish with qos=2 answers 201 and delivers at QoS 2", async () => {
    const topic = `q2/${uid()}`;
    const sub = await connectCollecting({ clientId: uid() });
    await subscribe(sub.client, topic, 2);
    const { mintToken } = await import("../helpers/admin");
    const token = await mintToken("anon", "http2");
    const { inject } = await import("vitest");
    const res = await fetch(`${inject("brokerUrl")}/api/v1/messages?topic=${encodeURIComponent(topic)}&qos=2`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: "h2",
    });
    expect(res.status).toBe(201);
    await waitFor(() => sub.got.length === 1, "the HTTP message");
    expect(sub.got[0]).toMatchObject({ payload: "h2", qos: 2 });
    await end(sub.client);
  });
});

describe("QoS 2 across a runtime restart", () => {
  let broker: Broker | undefined;
  afterAll(async () => {
    if (broker) await stopBroker(broker);
  });

  it("killed between PUBREC and PUBREL: the message is delivered exactly once", async () => {
    broker = await startBroker({ vars: TEST_VARS });
    const ws = broker.wsUrl;
    const topic = `q2/${uid()}`;
    const subId = uid("sub");
    const sub = await connect({ clientId: subId, clean: false }, ws);
    await subscribe(sub, topic, 2);
    await end(sub);

    const pubId = uid("pub");
    const raw = await RawClient.open(ws);
    await raw.connect(pubId, { clean: false });
    const publish = { cmd: "publish" as const, topic, payload: Buffer.from("exactly-once"), qos: 2 as const, messageId: 7, retain: false, dup: false };
    raw.send(publish);
    await raw.next("pubrec");

    await killBroker(broker);
    raw.terminate();
    broker = await startBroker({ port: broker.port, persistDir: broker.persistDir, vars: TEST_VARS });

    // The publisher did not see... anything after PUBREC; a cautious client resends the PUBLISH with DUP, then PUBREL.
    const again = await RawClient.open(ws);
    await again.connect(pubId, { clean: false });
    again.send({ ...publish, dup: true });
    expect(await again.next("pubrec")).toMatchObject({ messageId: 7 });
    again.send({ cmd: "pubrel", messageId: 7 });
    expect(await again.next("pubcomp")).toMatchObject({ messageId: 7 });

    const back = await connectCollecting({ clientId: subId, clean: false }, ws);
    await waitFor(() => back.got.length === 1, "the message");
    await pingRoundTrip(back.client);
    expect(back.got.map((m) => [m.payload, m.qos])).toEqual([["exactly-once", 2]]);
    again.close();
    await end(back.client);
  }, 120_000);
});
