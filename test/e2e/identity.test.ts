import { describe, it, expect, inject } from "vitest";
import { SignJWT } from "jose";
import type { MqttClient } from "mqtt";
import { DEFAULT_VERSION, connect, connectCollecting, end, pingRoundTrip, subscribe, uid, waitFor } from "../helpers/mqtt";
import { RawClient } from "../helpers/raw";
import { admin, createDevice, deviceTopic, mintToken } from "../helpers/admin";
import { monitor } from "../helpers/monitor";

/** MQTT 5 CONNACK reason codes as their 3.1.1 counterparts, so one table serves both runs. */
const V5_TO_V4: Record<number, number> = { 0x84: 1, 0x85: 2, 0x88: 3, 0x97: 3, 0x86: 4, 0x87: 5 };

/** The CONNACK return code (3.1.1 terms) of a refused MQTT.js connect. */
async function refusedWith(opts: Parameters<typeof connect>[0]): Promise<number | undefined> {
  try {
    const c = await connect(opts);
    await end(c);
    return 0;
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code !== "number") return undefined;
    return DEFAULT_VERSION === 5 ? (V5_TO_V4[code] ?? code) : code;
  }
}

/**
 * A publish the ACL denies: 3.1.1 acknowledges and drops it; MQTT 5 answers 0x87, which
 * MQTT.js turns into a rejected promise.
 */
async function deniedPublish(client: MqttClient, topic: string, payload: string): Promise<void> {
  if (DEFAULT_VERSION !== 5) {
    await client.publishAsync(topic, payload, { qos: 1 });
    return;
  }
  await expect(client.publishAsync(topic, payload, { qos: 1 })).rejects.toMatchObject({ code: 0x87 });
}

/** SUBACK codes for `filters` (QoS 1 requested), over a raw connection. */
async function subackCodes(clientId: string, password: string, filters: string[], username = clientId): Promise<number[]> {
  const raw = await RawClient.open();
  const ack = await raw.connect(clientId, { username, password: Buffer.from(password) });
  expect(ack.returnCode).toBe(0);
  raw.send({ cmd: "subscribe", messageId: 1, subscriptions: filters.map((topic) => ({ topic, qos: 1 as const })) });
  const suback = await raw.next("suback");
  raw.close();
  return suback.cmd === "suback" ? suback.granted.map((g) => (typeof g === "number" ? g : -1)) : [];
}

const secret = () => new TextEncoder().encode(inject("jwtSecret"));

describe("devices", () => {
  it("a provisioned device connects with its id and password; a wrong password gets CONNACK 4", async () => {
    const acc = uid("acc");
    const dev = await createDevice(acc);
    const c = await connect({ clientId: dev.deviceId, username: dev.deviceId, password: dev.password });
    expect(c.connected).toBe(true);
    await end(c);
    expect(await refusedWith({ clientId: dev.deviceId, username: dev.deviceId, password: dev.password + "x" })).toBe(4);
    expect(await refusedWith({ clientId: "nobody", username: "nobody", password: "whatever" })).toBe(4);
  });

  it("a device must use its device id as client id (CONNACK 2)", async () => {
    const dev = await createDevice(uid("acc"));
    expect(await refusedWith({ clientId: "other-id", username: dev.deviceId, password: dev.password })).toBe(2);
  });

  it("a disabled device is disconnected live and then refused with CONNACK 5; re-enabled it connects again", async () => {
    const dev = await createDevice(uid("acc"));
    const raw = await RawClient.open();
    const ack = await raw.connect(dev.deviceId, { username: dev.deviceId, password: Buffer.from(dev.password) });
    expect(ack.returnCode).toBe(0);
    expect((await admin("PATCH", `/accounts/${dev.accountId}/devices/${dev.deviceId}`, { disabled: true })).status).toBe(200);
    await raw.waitClosed();
    expect(await refusedWith({ clientId: dev.deviceId, username: dev.deviceId, password: dev.password })).toBe(5);
    await admin("PATCH", `/accounts/${dev.accountId}/devices/${dev.deviceId}`, { disabled: false });
    const c = await connect({ clientId: dev.deviceId, username: dev.deviceId, password: dev.password });
    await end(c);
  });

  it("a deleted device is disconnected and its credentials stop working", async () => {
    const dev = await createDevice(uid("acc"));
    const raw = await RawClient.open();
    await raw.connect(dev.deviceId, { username: dev.deviceId, password: Buffer.from(dev.password) });
    expect((await admin("DELETE", `/accounts/${dev.accountId}/devices/${dev.deviceId}`)).status).toBe(204);
    await raw.waitClosed();
    expect(await refusedWith({ clientId: dev.deviceId, username: dev.deviceId, password: dev.password })).toBe(4);
  });

  it("a device publishes and subscribes only under its own prefix", async () => {
    const acc = uid("acc");
    const dev = await createDevice(acc);
    const other = await createDevice(acc);
    expect(await subackCodes(dev.deviceId, dev.password, [deviceTopic(dev, "cmd"), deviceTopic(other, "cmd"), "#", `xi/blue/v1/${acc}/#`])).toEqual([1, 128, 128, 128]);
    const c = await connectCollecting({ clientId: dev.deviceId, username: dev.deviceId, password: dev.password });
    await subscribe(c.client, deviceTopic(dev, "cmd"), 1);

    // The account's application sees what the device may and may not publish.
    const app = await connectCollecting({ clientId: uid("app"), username: "app", password: await mintToken(acc, "app") });
    await subscribe(app.client, "#", 1);
    await deniedPublish(c.client, deviceTopic(other, "evt"), "denied");
    await c.client.publishAsync(deviceTopic(dev, "evt"), "allowed", { qos: 1 });
    await waitFor(() => app.got.some((m) => m.payload === "allowed"), "the allowed publish");
    await pingRoundTrip(app.client); // both publishes were acknowledged: routed or dropped
    expect(app.got.map((m) => m.payload)).toEqual(["allowed"]);

    await app.client.publishAsync(deviceTopic(dev, "cmd"), "do-it", { qos: 1 });
    await waitFor(() => c.got.length === 1, "the command");
    await end(c.client, app.client);
  });

  it("a will outside the device's prefix is not published", async () => {
    const acc = uid("acc");
    const dev = await createDevice(acc);
    const app = await connectCollecting({ clientId: uid("app"), username: "app", password: await mintToken(acc, "app") });
    await subscribe(app.client, "#", 1);
    const mon = await monitor(acc);
    const raw = await RawClient.open();
    await raw.connect(dev.deviceId, {
      username: dev.deviceId,
      password: Buffer.from(dev.password),
      will: { topic: "elsewhere/will", payload: Buffer.from("w"), qos: 1, retain: false },
    });
    raw.terminate();
    // A will goes out with the connection's Disconnect event (the will first).
    await mon.waitEvent(dev.deviceId, "Disconnect");
    await pingRoundTrip(app.client);
    expect(app.got).toEqual([]);
    await end(app.client, mon.client);
  });
});

describe("JWT identities", () => {
  it("connects with a minted token (user name = sub); the token's sub must be the user name", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "alice");
    const single = await connect({ clientId: "alice", username: "alice", password: token });
    await end(single);
    const multi = await connect({ clientId: uid("alice-tab"), username: "alice", password: token });
    await end(multi);
    expect(await refusedWith({ clientId: uid(), username: "bob", password: token })).toBe(4); // sub mismatch
  });

  it("an expired token gets CONNACK 5", async () => {
    const acc = uid("acc");
    const expired = await new SignJWT({ acc }).setProtectedHeader({ alg: "HS256" }).setSubject("eve").setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(secret());
    expect(await refusedWith({ clientId: uid(), username: "eve", password: expired })).toBe(5);
  });

  it("a token signed with another key, without exp, or with alg none gets CONNACK 4", async () => {
    const acc = uid("acc");
    const exp = Math.floor(Date.now() / 1000) + 600;
    const wrongKey = await new SignJWT({ acc }).setProtectedHeader({ alg: "HS256" }).setSubject("eve").setExpirationTime(exp).sign(new TextEncoder().encode("not-the-secret-0123456789abcdef0123456789"));
    const noExp = await new SignJWT({ acc }).setProtectedHeader({ alg: "HS256" }).setSubject("eve").sign(secret());
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
    const none = `${b64({ alg: "none", typ: "JWT" })}.${b64({ sub: "eve", acc, exp })}.`;
    for (const password of [wrongKey, noExp, none]) {
      expect(await refusedWith({ clientId: uid(), username: "eve", password })).toBe(4);
    }
  });

  it("an ACL claim limits publish and subscribe", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "limited", { acl: { pub: ["sensors/+/out"], sub: ["sensors/#"] } });
    expect(await subackCodes(uid(), token, ["sensors/#", "sensors/a/+", "other/#", "#", "$SYS/#"], "limited")).toEqual([1, 1, 128, 128, 128]);
    const c = await connectCollecting({ clientId: uid(), username: "limited", password: token });
    await subscribe(c.client, "sensors/#", 1);
    await c.client.publishAsync("sensors/a/out", "ok", { qos: 1 });
    await deniedPublish(c.client, "sensors/a/in", "no");
    await waitFor(() => c.got.some((m) => m.payload === "ok"), "the allowed message echoed back");
    await pingRoundTrip(c.client); // both publishes were acknowledged: routed or dropped
    expect(c.got.map((m) => m.payload)).toEqual(["ok"]);
    await end(c.client);
  });

  it("a connection is closed when its token expires", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "short", { ttlSeconds: 2 });
    const raw = await RawClient.open();
    const ack = await raw.connect(uid(), { username: "short", password: Buffer.from(token) });
    expect(ack.returnCode).toBe(0);
    await raw.waitClosed(10_000);
  });

  it("browser flow: JWT in the mqtt_token cookie, CSRF token (mqtt_csrf cookie) as password", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "webuser");
    const csrf = "csrf-" + uid();
    const open = (cookie: string) => RawClient.open(undefined, { version: 4, headers: { cookie } });
    const connackOf = async (raw: RawClient, password: string): Promise<number> =>
      (await raw.connect(uid(), { keepalive: 30, username: "webuser", password: Buffer.from(password) })).returnCode ?? -1;
    const good = await open(`mqtt_token=${token}; mqtt_csrf=${csrf}`);
    expect(await connackOf(good, csrf)).toBe(0);
    good.close();
    const bad = await open(`mqtt_token=${token}; mqtt_csrf=${csrf}`);
    expect(await connackOf(bad, "wrong-csrf")).toBe(4);
    bad.close();
  });
});

describe("account isolation", () => {
  it("a # subscriber in one account sees nothing of another account, live or retained", async () => {
    const a = uid("acc-a");
    const b = uid("acc-b");
    const devB = await createDevice(b);
    const pubB = await connect({ clientId: devB.deviceId, username: devB.deviceId, password: devB.password });
    await pubB.publishAsync(deviceTopic(devB, "state"), "retained-b", { qos: 1, retain: true });

    const subA = await connectCollecting({ clientId: uid(), username: "watcher", password: await mintToken(a, "watcher", { acl: { pub: [], sub: ["#", "$SYS/#", "xi/#"] } }) });
    await subscribe(subA.client, ["#", "$SYS/#", `xi/blue/v1/${b}/#`], 1);
    await pubB.publishAsync(deviceTopic(devB, "evt"), "live-b", { qos: 1 });
    // A control message inside account A proves the subscriber is live.
    const devA = await createDevice(a);
    const pubA = await connect({ clientId: devA.deviceId, username: devA.deviceId, password: devA.password });
    await pubA.publishAsync(deviceTopic(devA, "evt"), "live-a", { qos: 1 });
    await waitFor(() => subA.got.some((m) => m.payload === "live-a"), "the control message");
    // Account B's device disconnects too: its Disconnect event must not reach account A.
    const monB = await monitor(b);
    await end(pubB);
    await monB.waitEvent(devB.deviceId, "Disconnect");
    await pingRoundTrip(subA.client);
    expect(subA.got.filter((m) => !m.topic.startsWith("$SYS/")).map((m) => m.payload)).toEqual(["live-a"]);
    const events = subA.got.filter((m) => m.topic.startsWith("$SYS/mon/"));
    expect(events.some((m) => m.topic === `$SYS/mon/${devA.deviceId}`)).toBe(true); // A's own events arrive
    expect(events.some((m) => m.topic.includes(devB.deviceId) || m.payload.includes(devB.deviceId))).toBe(false);
    await end(pubA, subA.client, monB.client);
  });
});

describe("HTTP publish API", () => {
  const url = (topic: string, qos = 1, retain = false) => `${inject("brokerUrl")}/api/v1/messages?topic=${encodeURIComponent(topic)}&qos=${qos}&retain=${retain}`;
  const basic = (user: string, pass: string) => `Basic ${Buffer.from(`${user}:${pass}`).toString("base64")}`;

  it("a device's HTTP publish reaches an MQTT subscriber (201 for QoS 1, 202 for QoS 0)", async () => {
    const acc = uid("acc");
    const dev = await createDevice(acc);
    const app = await connectCollecting({ clientId: uid(), username: "app", password: await mintToken(acc, "app") });
    await subscribe(app.client, "#", 1);
    const r1 = await fetch(url(deviceTopic(dev, "evt"), 1), { method: "POST", headers: { authorization: basic(dev.deviceId, dev.password) }, body: "via-http" });
    expect(r1.status).toBe(201);
    const r0 = await fetch(url(deviceTopic(dev, "evt"), 0), { method: "POST", headers: { authorization: basic(dev.deviceId, dev.password) }, body: "via-http-0" });
    expect(r0.status).toBe(202);
    await waitFor(() => app.got.length === 2, "both HTTP messages");
    expect(app.got.map((m) => [m.payload, m.qos])).toEqual([["via-http", 1], ["via-http-0", 0]]);
    await end(app.client);
  });

  it("a bearer token publishes; retained over HTTP is delivered on subscribe", async () => {
    const acc = uid("acc");
    const token = await mintToken(acc, "svc");
    const res = await fetch(url("status/x", 1, true), { method: "POST", headers: { authorization: `Bearer ${token}` }, body: "up" });
    expect(res.status).toBe(201);
    const c = await connectCollecting({ clientId: uid(), username: "svc", password: token });
    await subscribe(c.client, "status/#", 1);
    await waitFor(() => c.got.length === 1, "the retained message");
    expect(c.got[0]).toMatchObject({ payload: "up", retain: true });
    await end(c.client);
  });

  it("answers 401, 403, 413 and 400 with JSON errors", async () => {
    const acc = uid("acc");
    const dev = await createDevice(acc);
    const auth = { authorization: basic(dev.deviceId, dev.password) };
    const cases: Array<[string, RequestInit, number, string]> = [
      [url(deviceTopic(dev, "e")), { method: "POST", body: "x" }, 401, "unauthorized"],
      [url(deviceTopic(dev, "e")), { method: "POST", body: "x", headers: { authorization: basic(dev.deviceId, "wrong") } }, 401, "unauthorized"],
      [url("not/my/topic"), { method: "POST", body: "x", headers: auth }, 403, "forbidden"],
      [url(deviceTopic(dev, "e")), { method: "POST", body: "x".repeat(128 * 1024 + 1), headers: auth }, 413, "payload_too_large"],
      [url(deviceTopic(dev, "+")), { method: "POST", body: "x", headers: auth }, 400, "invalid_topic"],
      [url(deviceTopic(dev, "e"), 5), { method: "POST", body: "x", headers: auth }, 400, "invalid_qos"],
    ];
    for (const [u, init, status, code] of cases) {
      const res = await fetch(u, init);
      expect([res.status, await res.json()]).toEqual([status, { error: { code, message: expect.any(String) } }]);
    }
  });
});

describe("admin API auth", () => {
  it("refuses requests without or with a wrong bearer token", async () => {
    expect((await admin("GET", "/accounts/x/devices", undefined, "")).status).toBe(401);
    const wrong = await admin("GET", "/accounts/x/devices", undefined, "nope");
    expect(wrong.status).toBe(401);
    expect(wrong.json).toMatchObject({ error: { code: "unauthorized" } });
  });
});
