import { describe, it, expect } from "vitest";
import { connect, connectCollecting, end, pingRoundTrip, subscribe, uid, waitFor } from "../helpers/mqtt";
import { RawClient } from "../helpers/raw";
import { admin, mintToken } from "../helpers/admin";

describe("shared subscriptions", () => {
  it("each message goes to exactly one member, both members get some, an ordinary subscriber gets all", async () => {
    const base = uid("sh");
    const group = uid("g");
    const m1 = await connectCollecting({ clientId: uid("m1") });
    const m2 = await connectCollecting({ clientId: uid("m2"), protocolVersion: 4 });
    const plain = await connectCollecting({ clientId: uid("plain") });
    await subscribe(m1.client, `$share/${group}/${base}/#`, 1);
    await subscribe(m2.client, `$share/${group}/${base}/#`, 1);
    await subscribe(plain.client, `${base}/#`, 1);
    const pub = await connect({ clientId: uid() });
    for (let i = 0; i < 100; i++) await pub.publishAsync(`${base}/x`, String(i), { qos: 1 });
    await waitFor(() => m1.got.length + m2.got.length === 100 && plain.got.length === 100, "100 deliveries to the group and 100 to the plain subscriber");
    await Promise.all([pingRoundTrip(m1.client), pingRoundTrip(m2.client)]); // every publish was acknowledged: routed
    const seen = [...m1.got, ...m2.got].map((m) => Number(m.payload)).sort((a, b) => a - b);
    expect(seen).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(m1.got.length).toBeGreaterThan(0);
    expect(m2.got.length).toBeGreaterThan(0);

    // One member leaves: the other receives all that follow.
    await m1.client.unsubscribeAsync(`$share/${group}/${base}/#`);
    const before = m2.got.length;
    for (let i = 100; i < 110; i++) await pub.publishAsync(`${base}/x`, String(i), { qos: 1 });
    await waitFor(() => m2.got.length === before + 10, "the remaining member gets the next 10");
    await end(m1.client, m2.client, plain.client, pub);
  });

  it("a group with only an offline persistent member queues QoS 1 and delivers on reconnect", async () => {
    const base = uid("sh");
    const group = uid("g");
    const memberId = uid("pm");
    const m = await connect({ clientId: memberId, clean: false });
    await subscribe(m, `$share/${group}/${base}`, 1);
    await end(m);
    const pub = await connect({ clientId: uid() });
    for (let i = 0; i < 3; i++) await pub.publishAsync(base, `q${i}`, { qos: 1 });
    const back = await connectCollecting({ clientId: memberId, clean: false });
    await waitFor(() => back.got.length === 3, "the three queued messages");
    expect(back.got.map((x) => x.payload)).toEqual(["q0", "q1", "q2"]);
    await end(back.client, pub);
  });

  it("unacknowledged messages of a member that disconnects go to another member", async () => {
    const base = uid("sh");
    const group = uid("g");
    const raw = await RawClient.open();
    await raw.connect(uid("slow"));
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: `$share/${group}/${base}`, qos: 1 }] });
    await raw.next("suback");
    const pub = await connect({ clientId: uid() });
    await pub.publishAsync(base, "only", { qos: 1 });
    await raw.next("publish"); // received, never acknowledged
    const other = await connectCollecting({ clientId: uid("other") });
    await subscribe(other.client, `$share/${group}/${base}`, 1);
    raw.terminate();
    await waitFor(() => other.got.some((x) => x.payload === "only"), "the redistributed message");
    await end(other.client, pub);
  });

  it("gets no retained messages on subscribe, respects the ACL, and is visible in the admin API", async () => {
    const acc = uid("acc");
    const base = "sensors";
    const group = "workers";
    const token = await mintToken(acc, "app", { acl: { pub: ["#"], sub: ["sensors/#"] } });
    const pub = await connect({ clientId: uid(), username: "app", password: token });
    await pub.publishAsync(`${base}/t`, "retained", { qos: 1, retain: true });
    const raw = await RawClient.open();
    await raw.connect("app-1", { username: "app", password: Buffer.from(token) });
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: `$share/${group}/${base}/#`, qos: 1 }, { topic: `$share/${group}/other/#`, qos: 1 }] });
    expect(await raw.next("suback")).toMatchObject({ granted: [1, 128] });
    await raw.pingRoundTrip(); // retained messages would follow the SUBACK on the same connection
    expect(raw.packets.filter((p) => p.cmd === "publish")).toEqual([]);
    const res = await admin("GET", `/accounts/${acc}/shared/${group}`);
    expect(res.status).toBe(200);
    expect(res.json).toMatchObject({ group, subscriptions: [{ filter: `${base}/#`, members: [{ clientId: "app-1", qos: 1, online: true }], queued: 0 }] });
    expect((await admin("GET", `/accounts/${acc}/shared/nope`)).status).toBe(404);
    raw.close();
    await end(pub);
  });
});
