import { describe, it, expect } from "vitest";
import { collect, connect, end, pingRoundTrip, subscribe, uid, waitFor } from "../helpers/mqtt";
import { privileged } from "../helpers/admin";

describe("publish and subscribe", () => {
  it("delivers QoS 0 and QoS 1 between two clients", async () => {
    const topic = `t/${uid()}`;
    const sub = await connect({ clientId: uid("sub") });
    const pub = await connect({ clientId: uid("pub") });
    const got = collect(sub);
    expect(await subscribe(sub, topic, 1)).toEqual([1]);
    await pub.publishAsync(topic, "zero", { qos: 0 });
    await pub.publishAsync(topic, "one", { qos: 1 });
    await waitFor(() => got.length === 2, "two messages");
    expect(got).toEqual([
      { topic, payload: "zero", qos: 0, retain: false, dup: false },
      { topic, payload: "one", qos: 1, retain: false, dup: false },
    ]);
    await end(sub, pub);
  });

  it("grants the requested QoS and downgrades deliveries to the granted QoS", async () => {
    const topic = `t/${uid()}`;
    const sub0 = await connect({ clientId: uid() });
    const sub2 = await connect({ clientId: uid() });
    const got0 = collect(sub0);
    const got2 = collect(sub2);
    expect(await subscribe(sub0, topic, 0)).toEqual([0]);
    expect(await subscribe(sub2, topic, 2)).toEqual([2]);
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(topic, "m", { qos: 1 });
    await waitFor(() => got0.length === 1 && got2.length === 1, "both copies");
    expect(got0[0]?.qos).toBe(0);
    expect(got2[0]?.qos).toBe(1);
    await end(sub0, sub2, pub);
  });

  it("keeps the order of many QoS 1 messages from one publisher", async () => {
    const topic = `t/${uid()}`;
    const sub = await connect({ clientId: uid() });
    const got = collect(sub);
    await subscribe(sub, topic, 1);
    const pub = await connect({ clientId: uid() });
    const n = 200;
    await Promise.all(Array.from({ length: n }, (_, i) => pub.publishAsync(topic, String(i), { qos: 1 })));
    await waitFor(() => got.length === n, `${n} messages`);
    expect(got.map((m) => Number(m.payload))).toEqual(Array.from({ length: n }, (_, i) => i));
    await end(sub, pub);
  });

  it("matches + and # and applies the $ rule", async () => {
    const base = uid("w");
    const sub = await connect({ clientId: uid() });
    const got = collect(sub);
    await subscribe(sub, [`${base}/+/temp`, `${base}/#`, "#", "+/x"], 0);
    const pub = await privileged();
    await pub.publishAsync(`${base}/kitchen/temp`, "a");
    await pub.publishAsync(`${base}`, "b"); // `base/#` matches its parent level
    await pub.publishAsync(`$SYS/${base}/x`, "c"); // not matched by `#` [MQTT-4.7.2-1]
    await pub.publishAsync("$x/x", "d"); // not matched by `+/x`
    await pub.publishAsync(`${base}/end`, "z");
    await waitFor(() => got.some((m) => m.payload === "z"), "the last message");
    await pingRoundTrip(sub);
    const byPayload = (p: string) => got.filter((m) => m.payload === p).length;
    // One copy per matching session, whatever the number of matching filters.
    expect(byPayload("a")).toBe(1);
    expect(byPayload("b")).toBe(1);
    expect(byPayload("c")).toBe(0);
    expect(byPayload("d")).toBe(0);
    await end(sub, pub);
  });

  it("delivers to a $SYS/# subscriber", async () => {
    const sub = await connect({ clientId: uid() });
    const got = collect(sub);
    const topic = `$SYS/${uid()}/y`;
    await subscribe(sub, "$SYS/#", 0);
    const pub = await privileged();
    await pub.publishAsync(topic, "s");
    await waitFor(() => got.some((m) => m.topic === topic), "the $SYS message");
    await end(sub, pub);
  });

  it("stops delivering after UNSUBSCRIBE", async () => {
    const topic = `t/${uid()}`;
    const sub = await connect({ clientId: uid() });
    const got = collect(sub);
    await subscribe(sub, topic, 0);
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(topic, "1", { qos: 1 });
    await waitFor(() => got.length === 1, "first");
    await sub.unsubscribeAsync(topic);
    await pub.publishAsync(topic, "2", { qos: 1 }); // PUBACK: routed
    await pingRoundTrip(sub);
    expect(got.map((m) => m.payload)).toEqual(["1"]);
    await end(sub, pub);
  });
});
