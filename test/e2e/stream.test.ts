import { describe, it, expect, inject } from "vitest";
import { RawClient } from "../helpers/raw";
import { bytes, encode } from "../helpers/bytes";
import { collect, connect, end, subscribe, uid, waitFor } from "../helpers/mqtt";

describe("WebSocket byte stream", () => {
  it("reassembles a PUBLISH split across two frames, also inside the length field", async () => {
    const topic = `t/${uid()}`;
    const sub = await connect({ clientId: uid() });
    const got = collect(sub);
    await subscribe(sub, topic, 1);
    const raw = await RawClient.open();
    await raw.connect(uid("raw"));
    const payload = "x".repeat(300); // two-byte remaining length
    const bytes = encode({ cmd: "publish", topic, payload, qos: 1, messageId: 7, retain: false, dup: false });
    raw.sendBytes(bytes.subarray(0, 2)); // fixed header byte + first length byte
    await new Promise((r) => setTimeout(r, 50));
    raw.sendBytes(bytes.subarray(2, 40));
    await new Promise((r) => setTimeout(r, 50));
    raw.sendBytes(bytes.subarray(40));
    const ack = await raw.next("puback");
    expect(ack).toMatchObject({ cmd: "puback", messageId: 7 });
    await waitFor(() => got.length === 1, "the split message");
    expect(got[0]?.payload).toBe(payload);
    raw.close();
    await end(sub);
  });

  it("handles two PUBLISHes and a PINGREQ coalesced in one frame", async () => {
    const topic = `t/${uid()}`;
    const sub = await connect({ clientId: uid() });
    const got = collect(sub);
    await subscribe(sub, topic, 1);
    const raw = await RawClient.open();
    await raw.connect(uid("raw"));
    const a = encode({ cmd: "publish", topic, payload: "a", qos: 1, messageId: 1, retain: false, dup: false });
    const b = encode({ cmd: "publish", topic, payload: "b", qos: 0, retain: false, dup: false });
    const p = encode({ cmd: "pingreq" });
    raw.sendBytes(bytes(a, b, p));
    await raw.next("puback");
    await raw.next("pingresp");
    await waitFor(() => got.length === 2, "both messages");
    expect(got.map((m) => m.payload)).toEqual(["a", "b"]);
    raw.close();
    await end(sub);
  });

  it("sends the PUBLISHes of one delivery in one frame, a large one alone, in order; standard clients read them", async () => {
    const topic = `t/${uid()}`;
    const sub = await RawClient.open();
    await sub.connect(uid("raw-sub"));
    sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 0 }] });
    await sub.next("suback");
    const std = await connect({ clientId: uid() });
    const stdGot = collect(std);
    await subscribe(std, topic, 0);
    const pub = await RawClient.open();
    await pub.connect(uid("raw-pub"));
    const small = (i: number) => encode({ cmd: "publish", topic, payload: `m${i}`, qos: 0, retain: false, dup: false });
    const big = encode({ cmd: "publish", topic, payload: "B".repeat(70 * 1024), qos: 0, retain: false, dup: false });
    // One frame, so one router call and one delivery: 5 small, 1 over the frame size, 2 small.
    pub.sendBytes(bytes(small(0), small(1), small(2), small(3), small(4), big, small(5), small(6)));
    await waitFor(() => sub.packets.filter((p) => p.cmd === "publish").length === 8, "8 PUBLISHes");
    const payloads = sub.packets.flatMap((p) => (p.cmd === "publish" ? [p.payload.toString().slice(0, 2)] : []));
    expect(payloads).toEqual(["m0", "m1", "m2", "m3", "m4", "BB", "m5", "m6"]);
    // CONNACK and SUBACK came in frames of their own; then the deliveries (the publisher's first
    // message goes to the router alone, the rest in its next call): the small ones share frames,
    // the one over the frame size goes alone.
    const delivery = sub.frames.slice(2);
    expect(delivery.reduce((a, b) => a + b, 0)).toBe(8);
    expect(delivery.length).toBeLessThanOrEqual(4);
    const frameOf = (i: number) => delivery.findIndex((_, k) => delivery.slice(0, k + 1).reduce((a, b) => a + b, 0) > i);
    expect(delivery[frameOf(5)]).toBe(1);
    expect(frameOf(4)).toBeLessThan(frameOf(5));
    expect(frameOf(6)).toBeGreaterThan(frameOf(5));
    await waitFor(() => stdGot.length === 8, "the standard client's 8 messages");
    expect(stdGot.map((m) => m.payload.slice(0, 2))).toEqual(["m0", "m1", "m2", "m3", "m4", "BB", "m5", "m6"]);
    sub.close();
    pub.close();
    await end(std);
  });

  it("accepts CONNECT and SUBSCRIBE in the same frame", async () => {
    const raw = await RawClient.open();
    const topic = `t/${uid()}`;
    const c = encode({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 30, clientId: uid() });
    const s = encode({ cmd: "subscribe", messageId: 3, subscriptions: [{ topic, qos: 1 }] });
    raw.sendBytes(bytes(c, s));
    expect(await raw.next("connack")).toMatchObject({ returnCode: 0 });
    expect(await raw.next("suback")).toMatchObject({ messageId: 3, granted: [1] });
    raw.close();
  });

  it("closes a connection whose first packet is not CONNECT", async () => {
    const raw = await RawClient.open();
    raw.send({ cmd: "pingreq" });
    await raw.waitClosed();
  });

  it("closes a connection that sends a second CONNECT", async () => {
    const raw = await RawClient.open();
    await raw.connect(uid());
    raw.send({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 30, clientId: uid() });
    await raw.waitClosed();
  });

  it("closes on a text frame", async () => {
    const raw = await RawClient.open();
    await raw.connect(uid());
    raw.sendText("hello");
    await raw.waitClosed();
  });

  it("closes before buffering a packet whose remaining length exceeds the limit", async () => {
    const raw = await RawClient.open();
    await raw.connect(uid());
    // PUBLISH header announcing ~2 MiB, with only the header sent.
    raw.sendBytes(new Uint8Array([0x30, 0x80, 0x80, 0x80, 0x01]));
    await raw.waitClosed();
  });

  it("answers a plain HTTP GET /mqtt with 426 and a JSON error", async () => {
    const res = await fetch(inject("brokerUrl") + "/mqtt");
    expect(res.status).toBe(426);
    expect(await res.json()).toMatchObject({ error: { code: "upgrade_required" } });
  });
});
