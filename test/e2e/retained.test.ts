import { describe, it, expect } from "vitest";
import { collect, connect, end, pingRoundTrip, subscribe, uid, waitFor } from "../helpers/mqtt";
import { privileged } from "../helpers/admin";

describe("retained messages", () => {
  it("are set, replaced, delivered on a wildcard subscribe with the retain flag, and deleted by an empty payload", async () => {
    const base = uid("ret");
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(`${base}/a`, "first", { qos: 1, retain: true });
    await pub.publishAsync(`${base}/a`, "second", { qos: 1, retain: true });
    await pub.publishAsync(`${base}/b/c`, "deep", { qos: 0, retain: true });

    const s1 = await connect({ clientId: uid() });
    const got1 = collect(s1);
    await subscribe(s1, `${base}/#`, 1);
    await waitFor(() => got1.length === 2, "two retained messages");
    const sorted = [...got1].sort((x, y) => x.topic.localeCompare(y.topic));
    expect(sorted).toEqual([
      { topic: `${base}/a`, payload: "second", qos: 1, retain: true, dup: false },
      { topic: `${base}/b/c`, payload: "deep", qos: 0, retain: true, dup: false },
    ]);

    // A live publish with retain set reaches existing subscribers with retain cleared [MQTT-3.3.1-9].
    await pub.publishAsync(`${base}/a`, "third", { qos: 1, retain: true });
    await waitFor(() => got1.length === 3, "the live copy");
    expect(got1[2]).toMatchObject({ payload: "third", retain: false });

    await pub.publishAsync(`${base}/a`, "", { qos: 1, retain: true });
    const s2 = await connect({ clientId: uid() });
    const got2 = collect(s2);
    await subscribe(s2, `${base}/+`, 1);
    await subscribe(s2, `${base}/b/+`, 1);
    await waitFor(() => got2.length === 1, "the remaining retained message");
    await pingRoundTrip(s2); // retained messages follow their SUBACK on the same connection
    expect(got2.map((m) => m.payload)).toEqual(["deep"]);
    await end(pub, s1, s2);
  });

  it("is delivered for every matching filter of a subscribe", async () => {
    const base = uid("ret");
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(`${base}/x`, "r", { qos: 1, retain: true });
    const sub = await connect({ clientId: uid() });
    const got = collect(sub);
    await subscribe(sub, [`${base}/x`, `${base}/+`], 0);
    await waitFor(() => got.length === 2, "one copy per matching filter");
    expect(got.every((m) => m.retain && m.payload === "r")).toBe(true);
    await end(pub, sub);
  });

  it("is not delivered to a # subscriber for $ topics", async () => {
    const pub = await privileged();
    const topic = `$SYS/${uid()}`;
    await pub.publishAsync(topic, "hidden", { qos: 1, retain: true });
    const sub = await connect({ clientId: uid() });
    const got = collect(sub);
    await subscribe(sub, "#", 0);
    await pingRoundTrip(sub); // retained messages follow their SUBACK on the same connection
    expect(got.some((m) => m.topic === topic)).toBe(false);
    const sys = await connect({ clientId: uid() });
    const gotSys = collect(sys);
    await subscribe(sys, topic, 0);
    await waitFor(() => gotSys.length === 1, "the retained $SYS message for an exact filter");
    await pub.publishAsync(topic, "", { qos: 1, retain: true });
    await end(pub, sub, sys);
  });
});
