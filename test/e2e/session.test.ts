import { describe, it, expect } from "vitest";
import { connect, connectCollecting, end, sleep, subscribe, uid, waitFor } from "../helpers/mqtt";
import { RawClient } from "../helpers/raw";

describe("sessions", () => {
  it("queues QoS 1 messages for an offline persistent session and sets session present", async () => {
    const clientId = uid("persist");
    const topic = `t/${uid()}`;
    const first = await connect({ clientId, clean: false });
    expect(first.connected).toBe(true);
    await subscribe(first, topic, 1);
    await first.endAsync();

    const pub = await connect({ clientId: uid() });
    for (let i = 0; i < 5; i++) await pub.publishAsync(topic, `q${i}`, { qos: 1 });
    await pub.publishAsync(topic, "zero", { qos: 0 }); // QoS 0 is not queued for offline sessions

    const { client: again, got, sessionPresent } = await connectCollecting({ clientId, clean: false });
    expect(sessionPresent).toBe(true);
    await waitFor(() => got.length === 5, "five queued messages");
    expect(got.map((m) => m.payload)).toEqual(["q0", "q1", "q2", "q3", "q4"]);
    expect(got.every((m) => m.qos === 1)).toBe(true);
    // The subscription survived too: live messages still arrive.
    await pub.publishAsync(topic, "live", { qos: 1 });
    await waitFor(() => got.length === 6, "the live message");
    await end(again, pub);
  });

  it("a clean session starts without subscriptions and session present = false", async () => {
    const clientId = uid("clean");
    const topic = `t/${uid()}`;
    const a = await connect({ clientId, clean: false });
    await subscribe(a, topic, 1);
    await a.endAsync();
    const raw = await RawClient.open();
    const ack = await raw.connect(clientId, { clean: true });
    expect(ack.sessionPresent).toBe(false);
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(topic, "nobody", { qos: 1 }); // PUBACK: routed
    await raw.pingRoundTrip();
    expect(raw.packets.filter((p) => p.cmd === "publish")).toEqual([]);
    // And a later persistent connect finds no session.
    raw.send({ cmd: "disconnect" });
    await raw.waitClosed();
    const raw2 = await RawClient.open();
    expect((await raw2.connect(clientId, { clean: false })).sessionPresent).toBe(false);
    raw2.close();
    await end(pub);
  });

  it("redelivers an unacknowledged QoS 1 message with DUP after reconnect", async () => {
    const clientId = uid("dup");
    const topic = `t/${uid()}`;
    const raw = await RawClient.open();
    await raw.connect(clientId, { clean: false });
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await raw.next("suback");
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(topic, "needs-ack", { qos: 1 });
    const first = await raw.next("publish");
    expect(first).toMatchObject({ payload: Buffer.from("needs-ack"), dup: false, qos: 1 });
    raw.terminate(); // no PUBACK, no DISCONNECT

    await sleep(300);
    const raw2 = await RawClient.open();
    const ack = await raw2.connect(clientId, { clean: false });
    expect(ack.sessionPresent).toBe(true);
    const again = await raw2.next("publish");
    expect(again).toMatchObject({ payload: Buffer.from("needs-ack"), dup: true, qos: 1 });
    if (again.cmd === "publish") raw2.send({ cmd: "puback", messageId: again.messageId });
    raw2.send({ cmd: "disconnect" });
    await raw2.waitClosed();
    // Acknowledged: a third connection gets nothing.
    const raw3 = await RawClient.open();
    await raw3.connect(clientId, { clean: false });
    await raw3.pingRoundTrip();
    expect(raw3.packets.filter((p) => p.cmd === "publish")).toEqual([]);
    raw3.send({ cmd: "disconnect" });
    await end(pub);
  });

  it("a second connection with the same client id takes over the first", async () => {
    const clientId = uid("take");
    const topic = `t/${uid()}`;
    const old = await RawClient.open();
    await old.connect(clientId, { clean: false });
    old.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await old.next("suback");
    // A delivery before the takeover: the router then knows (and keeps the stub of) the old connection.
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(topic, "to-old", { qos: 1 });
    const first = await old.next("publish");
    expect(first).toMatchObject({ payload: Buffer.from("to-old") });
    old.send({ cmd: "puback", messageId: first.messageId });

    const fresh = await RawClient.open();
    const ack = await fresh.connect(clientId, { clean: false });
    expect(ack.sessionPresent).toBe(true);
    await old.waitClosed();

    await pub.publishAsync(topic, "to-new", { qos: 1 });
    const msg = await fresh.next("publish");
    expect(msg).toMatchObject({ payload: Buffer.from("to-new") });
    // Nothing more reached the old connection (`next` took "to-old" off its list).
    expect(old.packets.filter((p) => p.cmd === "publish")).toEqual([]);
    fresh.send({ cmd: "disconnect" });
    await end(pub);
  });

  it("bounds the offline queue (oldest dropped)", async () => {
    // The shared test broker runs with MAX_QUEUED_MESSAGES=50.
    const clientId = uid("bound");
    const topic = `t/${uid()}`;
    const a = await connect({ clientId, clean: false });
    await subscribe(a, topic, 1);
    await a.endAsync();
    const pub = await connect({ clientId: uid() });
    await Promise.all(Array.from({ length: 60 }, (_, i) => pub.publishAsync(topic, String(i), { qos: 1 })));
    const b = await RawClient.open();
    await b.connect(clientId, { clean: false });
    await waitFor(() => b.packets.filter((p) => p.cmd === "publish").length === 50, "50 queued messages");
    await b.pingRoundTrip();
    const payloads = b.packets.flatMap((p) => (p.cmd === "publish" ? [Number(p.payload.toString())] : []));
    expect(payloads).toEqual(Array.from({ length: 50 }, (_, i) => i + 10));
    b.send({ cmd: "disconnect" });
    await end(pub);
  });
});
