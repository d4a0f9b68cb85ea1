/**
 * One end-to-end test per configurable limit (README "Limits"), each checking the exact
 * MQTT answer and, where there is one, the `$SYS/mon` event. One dedicated broker with
 * small limits, so each limit is reached with a handful of packets.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type { Packet } from "mqtt-packet";
import { RawClient } from "../helpers/raw";
import { connectCollecting, end, pingRoundTrip, sleep, subscribe, uid, waitFor } from "../helpers/mqtt";
import { mintToken } from "../helpers/admin";
import { monitor, type Monitor } from "../helpers/monitor";
import { TEST_VARS, startBroker, stopBroker, type Broker } from "../helpers/broker";
import { bytes, encode, varint } from "../helpers/bytes";

const LIMITS = {
  MAX_CLIENT_ID_BYTES: "16",
  MAX_TOPIC_BYTES: "32",
  MAX_TOPIC_LEVELS: "4",
  MAX_PAYLOAD_BYTES: "1024",
  MAX_SUBSCRIPTIONS: "3",
  MAX_FILTERS_PER_SUBSCRIBE: "2",
  KEEPALIVE_MIN_SECONDS: "0",
  KEEPALIVE_MAX_SECONDS: "1",
  MAX_QUEUED_MESSAGES: "5",
  MAX_QUEUED_BYTES: "1000",
  MAX_INFLIGHT: "2",
  SESSION_EXPIRY_SECONDS: "2",
  PUBLISH_RATE_PER_SECOND: "5",
  PUBLISH_BURST: "5",
  HTTP_PUBLISH_RATE_PER_SECOND: "5",
  HTTP_PUBLISH_BURST: "5",
  ALLOW_CONTROL_CHARACTERS: "true",
};

let broker: Broker;

beforeAll(async () => {
  broker = await startBroker({ vars: { ...TEST_VARS, ...LIMITS } });
});

afterAll(async () => {
  if (broker) await stopBroker(broker);
});

// Client ids must fit in MAX_CLIENT_ID_BYTES (16): short ids, unique within this broker.
let seq = 0;
const sid = (prefix: string): string => `${prefix}${(seq++).toString(36)}`;
/** A fresh account per test, so its monitor sees only that test's clients. */
const account = (): string => uid("lim");

/** Keep alive 0 everywhere except the keep-alive test: KEEPALIVE_MAX_SECONDS = 1 would close idle clients. */
const NO_KEEPALIVE = { keepalive: 0 };

function watch(acc: string): Promise<Monitor> {
  return monitor(acc, { url: broker.url, clientId: sid("mon"), mqtt: NO_KEEPALIVE });
}

/** A raw client of `acc` with a JWT identity (single mode: user = client id); returns it with its CONNACK. */
async function rawUser(acc: string, clientId: string, extra: Partial<{ keepalive: number; clean: boolean }> = {}) {
  const token = await mintToken(acc, clientId, { url: broker.url });
  const raw = await RawClient.open(broker.wsUrl);
  const ack = await raw.connect(clientId, { username: clientId, password: Buffer.from(token), ...NO_KEEPALIVE, ...extra });
  return { raw, ack, token };
}

/** An MQTT.js client of `acc` (user = client id). */
async function mqttUser(acc: string, clientId: string, clean = true) {
  const token = await mintToken(acc, clientId, { url: broker.url });
  const c = await connectCollecting({ clientId, username: clientId, password: token, clean, ...NO_KEEPALIVE }, broker.wsUrl);
  return { ...c, token };
}

const publish = (topic: string, payload: string | Buffer, qos: 0 | 1, messageId?: number): Packet =>
  qos === 0
    ? { cmd: "publish", topic, payload, qos: 0, retain: false, dup: false }
    : { cmd: "publish", topic, payload, qos: 1, messageId: messageId ?? 1, retain: false, dup: false };

const publishes = (raw: RawClient): Packet[] => raw.packets.filter((p) => p.cmd === "publish");

describe("limits (dedicated broker with small limits)", () => {
  it("MAX_CLIENT_ID_BYTES: a client id of 16 bytes is accepted, 17+ gets CONNACK 2 and FailedConnect 166", async () => {
    const acc = account();
    const mon = await watch(acc);
    const ok = await rawUser(acc, "sixteen-bytes-ok");
    expect(ok.ack.returnCode).toBe(0);
    ok.raw.close();

    const long = "client-id-20-bytes!!";
    expect(Buffer.byteLength(long)).toBe(20);
    const token = await mintToken(acc, "longid", { url: broker.url });
    const raw = await RawClient.open(broker.wsUrl);
    const ack = await raw.connect(long, { username: "longid", password: Buffer.from(token), keepalive: 0 });
    expect(ack.returnCode).toBe(2);
    await raw.waitClosed();
    const ev = await mon.waitEvent(long, "FailedConnect");
    expect(ev).toMatchObject({ Action: "FailedConnect", ClientID: long, User: "longid", CloseCode: 166 });
    // The limit counts UTF-8 bytes: 9 two-byte characters are 18 bytes.
    const utf = await RawClient.open(broker.wsUrl);
    const utfToken = await mintToken(acc, "utf", { url: broker.url });
    expect((await utf.connect("é".repeat(9), { username: "utf", password: Buffer.from(utfToken), keepalive: 0 })).returnCode).toBe(2);
    await utf.waitClosed();
    await end(mon.client);
  });

  it("MAX_TOPIC_BYTES: a 32-byte topic is routed, a 33-byte topic closes the connection (Disconnect 276)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const id = sid("tl");
    const { raw } = await rawUser(acc, id);
    raw.send(publish("t".repeat(32), "ok", 1, 1));
    expect(await raw.next("puback")).toMatchObject({ messageId: 1 });
    raw.send(publish("t".repeat(33), "too long", 1, 2));
    await raw.waitClosed();
    expect(raw.packets.some((p) => p.cmd === "puback")).toBe(false);
    expect(await mon.waitEvent(id, "Disconnect")).toMatchObject({ CloseCode: 276, Reason: "invalid topic" });
    await end(mon.client);
  });

  it("MAX_TOPIC_LEVELS: a 4-level topic is routed, a 5-level topic closes the connection (Disconnect 276)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const id = sid("td");
    const { raw } = await rawUser(acc, id);
    raw.send(publish("a/b/c/d", "ok", 1, 1));
    expect(await raw.next("puback")).toMatchObject({ messageId: 1 });
    raw.send(publish("a/b/c/d/e", "too deep", 1, 2));
    await raw.waitClosed();
    expect(await mon.waitEvent(id, "Disconnect")).toMatchObject({ CloseCode: 276 });
    await end(mon.client);
  });

  it("MAX_TOPIC_BYTES / MAX_TOPIC_LEVELS on filters: SUBACK 0x80 for that filter, the connection stays", async () => {
    const acc = account();
    const { raw } = await rawUser(acc, sid("tf"));
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "f".repeat(33), qos: 1 }, { topic: "a/b/c/d/#", qos: 1 }] });
    expect(await raw.next("suback")).toMatchObject({ messageId: 1, granted: [0x80, 0x80] });
    raw.send({ cmd: "subscribe", messageId: 2, subscriptions: [{ topic: "f".repeat(32), qos: 1 }, { topic: "a/b/c/#", qos: 1 }] });
    expect(await raw.next("suback")).toMatchObject({ messageId: 2, granted: [1, 1] });
    raw.close();
  });

  it("MAX_PAYLOAD_BYTES: 1024 bytes are routed, 1025 close the connection (Disconnect 287)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const id = sid("pl");
    const { raw } = await rawUser(acc, id);
    raw.send(publish("p", Buffer.alloc(1024, 1), 1, 1));
    expect(await raw.next("puback")).toMatchObject({ messageId: 1 });
    raw.send(publish("p", Buffer.alloc(1025, 1), 1, 2));
    await raw.waitClosed();
    expect(raw.packets.some((p) => p.cmd === "puback")).toBe(false);
    expect(await mon.waitEvent(id, "Disconnect")).toMatchObject({ CloseCode: 287, Reason: "message too large" });
    await end(mon.client);
  });

  it("packet size limit: a PUBLISH header announcing 1 MB closes the connection before the body is sent (Disconnect 287)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const id = sid("ph");
    const { raw } = await rawUser(acc, id);
    // Fixed header only: PUBLISH QoS 0 with Remaining Length 1,000,000 (4 length bytes); no body follows.
    raw.sendBytes(bytes(0x30, varint(1_000_000)));
    await raw.waitClosed();
    expect(await mon.waitEvent(id, "Disconnect")).toMatchObject({ CloseCode: 287 });
    await end(mon.client);
  });

  it("MAX_SUBSCRIPTIONS: the 4th subscription gets SUBACK 0x80 (LimitExceeded event); re-subscribing and a freed slot are granted", async () => {
    const acc = account();
    const mon = await watch(acc);
    const id = sid("ms");
    const { raw } = await rawUser(acc, id);
    for (const [i, filter] of ["s/1", "s/2", "s/3"].entries()) {
      raw.send({ cmd: "subscribe", messageId: i + 1, subscriptions: [{ topic: filter, qos: 1 }] });
      expect(await raw.next("suback")).toMatchObject({ messageId: i + 1, granted: [1] });
    }
    raw.send({ cmd: "subscribe", messageId: 4, subscriptions: [{ topic: "s/4", qos: 1 }] });
    expect(await raw.next("suback")).toMatchObject({ messageId: 4, granted: [0x80] });
    expect(await mon.waitEvent(id, "LimitExceeded")).toMatchObject({ Limit: "MAX_SUBSCRIPTIONS", ClientID: id });
    await end(mon.client);
    // A filter the session already has replaces it (no new slot) [MQTT-3.8.4-3].
    raw.send({ cmd: "subscribe", messageId: 5, subscriptions: [{ topic: "s/1", qos: 0 }] });
    expect(await raw.next("suback")).toMatchObject({ messageId: 5, granted: [0] });
    raw.send({ cmd: "unsubscribe", messageId: 6, unsubscriptions: ["s/2"] });
    await raw.next("unsuback");
    raw.send({ cmd: "subscribe", messageId: 7, subscriptions: [{ topic: "s/4", qos: 1 }] });
    expect(await raw.next("suback")).toMatchObject({ messageId: 7, granted: [1] });
    // Not a protocol error: the connection stays.
    raw.send({ cmd: "pingreq" });
    await raw.next("pingresp");
    expect(raw.closed).toBeNull();
    raw.close();
  });

  it("MAX_FILTERS_PER_SUBSCRIBE: the 3rd filter of one SUBSCRIBE gets 0x80 (LimitExceeded event), the first two are granted", async () => {
    const acc = account();
    const mon = await watch(acc);
    const id = sid("mf");
    const { raw } = await rawUser(acc, id);
    raw.send({ cmd: "subscribe", messageId: 9, subscriptions: [{ topic: "f/1", qos: 1 }, { topic: "f/2", qos: 0 }, { topic: "f/3", qos: 1 }] });
    expect(await raw.next("suback")).toMatchObject({ messageId: 9, granted: [1, 0, 0x80] });
    expect(await mon.waitEvent(id, "LimitExceeded")).toMatchObject({ Limit: "MAX_FILTERS_PER_SUBSCRIBE" });
    await end(mon.client);
    raw.send({ cmd: "pingreq" });
    await raw.next("pingresp");
    raw.close();
  });

  it("KEEPALIVE_MAX_SECONDS: keep alive 60 is clamped to 1; a silent client is closed (Disconnect 160)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const id = sid("ka");
    const { raw, ack } = await rawUser(acc, id, { keepalive: 60 });
    expect(ack.returnCode).toBe(0);
    expect(await mon.waitEvent(id, "LimitExceeded")).toMatchObject({ Limit: "KEEPALIVE_MAX_SECONDS", Reason: "keep alive 60 s clamped to 1 s" });
    // Unclamped, the deadline would be 91 s away; clamped, 1.5 s + 1 s of slack.
    await raw.waitClosed(15_000);
    expect(await mon.waitEvent(id, "Disconnect")).toMatchObject({ CloseCode: 160, Reason: "keep alive timeout" });
    await end(mon.client);
  }, 30_000);

  it("MAX_QUEUED_BYTES: an offline session keeps the newest messages that fit 1000 bytes (LimitExceeded MAX_QUEUED_BYTES)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const subId = sid("ob");
    const pub = (await rawUser(acc, sid("obp"))).raw;
    const first = await mqttUser(acc, subId, false);
    await subscribe(first.client, "b/t", 1);
    await end(first.client);
    // 4 messages of 400 bytes: only the newest 2 fit the byte bound.
    pub.sendBytes(bytes(...[1, 2, 3, 4].map((i) => encode(publish("b/t", String(i).repeat(400), 1, i)))));
    for (let i = 0; i < 4; i++) await pub.next("puback");
    const again = await connectCollecting({ clientId: subId, username: subId, password: first.token, clean: false, ...NO_KEEPALIVE }, broker.wsUrl);
    expect(again.sessionPresent).toBe(true);
    await waitFor(() => again.got.length >= 2, "the 2 queued messages");
    await pingRoundTrip(again.client);
    expect(again.got.map((m) => m.payload[0])).toEqual(["3", "4"]);
    expect(await mon.waitEvent(subId, "LimitExceeded")).toMatchObject({ Limit: "MAX_QUEUED_BYTES" });
    await end(mon.client, again.client);
    pub.close();
  });

  it("MAX_QUEUED_MESSAGES: an offline session keeps the newest 5 of 8 QoS 1 messages (oldest dropped and counted, LimitExceeded events)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const subId = sid("oq");
    // Publishers first: SESSION_EXPIRY_SECONDS = 2 leaves 2 s between the subscriber leaving and coming back.
    const pubs = [(await rawUser(acc, sid("oqp"))).raw, (await rawUser(acc, sid("oqp"))).raw];
    const first = await mqttUser(acc, subId, false);
    await subscribe(first.client, "q/t", 1);
    await end(first.client);
    // 8 messages from two publishers (PUBLISH_BURST = 5 per connection), in order: the second batch starts after the first is acknowledged.
    for (const [b, pub] of pubs.entries()) {
      const base = b * 4;
      pub.sendBytes(bytes(...[1, 2, 3, 4].map((i) => encode(publish("q/t", String(base + i), 1, i)))));
      for (let i = 0; i < 4; i++) await pub.next("puback");
    }
    const again = await connectCollecting({ clientId: subId, username: subId, password: first.token, clean: false, ...NO_KEEPALIVE }, broker.wsUrl);
    expect(again.sessionPresent).toBe(true);
    await waitFor(() => again.got.length >= 5, "the 5 queued messages");
    await pingRoundTrip(again.client);
    expect(again.got.map((m) => m.payload)).toEqual(["4", "5", "6", "7", "8"]);
    // Dropped and counted: one structured log line per drop, 3 in all for this session.
    const drops = broker
      .output()
      .split("\n")
      .filter((l) => l.includes('"event":"session.queue_full"') && l.includes(`"clientId":"${subId}"`))
      .map((l) => Number(/"dropped":(\d+)/.exec(l)?.[1] ?? "0"));
    expect(drops.reduce((a, b) => a + b, 0)).toBe(3);
    expect(await mon.waitEvent(subId, "LimitExceeded")).toMatchObject({ Limit: "MAX_QUEUED_MESSAGES" });
    await end(mon.client);
    for (const p of pubs) p.close();
    await end(again.client);
  });

  it("MAX_INFLIGHT: a subscriber that does not PUBACK gets exactly 2 of 5 QoS 1 messages, then one more per PUBACK", async () => {
    const acc = account();
    const { raw: sub } = await rawUser(acc, sid("if"));
    sub.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "w/t", qos: 1 }] });
    await sub.next("suback");
    const { raw: pub } = await rawUser(acc, sid("ifp"));
    pub.sendBytes(bytes(...[1, 2, 3, 4, 5].map((i) => encode(publish("w/t", String(i), 1, i)))));
    for (let i = 0; i < 5; i++) await pub.next("puback");
    await waitFor(() => publishes(sub).length >= 2, "2 deliveries");
    await sub.pingRoundTrip(); // all 5 were acknowledged to the publisher: routed
    expect(publishes(sub).map((p) => (p.cmd === "publish" ? p.payload.toString() : ""))).toEqual(["1", "2"]);
    for (let n = 3; n <= 5; n++) {
      const oldest = publishes(sub)[n - 3];
      if (oldest?.cmd !== "publish") throw new Error("no delivery to acknowledge");
      sub.send({ cmd: "puback", messageId: oldest.messageId });
      await waitFor(() => publishes(sub).length >= n, `delivery ${n}`);
      await sub.pingRoundTrip();
      expect(publishes(sub)).toHaveLength(n);
      expect(publishes(sub)[n - 1]).toMatchObject({ payload: Buffer.from(String(n)), qos: 1 });
    }
    sub.close();
    pub.close();
  });

  it("SESSION_EXPIRY_SECONDS: after 4 s offline a persistent session is gone (session present 0, no queued messages, LimitExceeded event)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const subId = sid("se");
    const first = await mqttUser(acc, subId, false);
    await subscribe(first.client, "e/t", 1);
    await end(first.client);
    const { raw: pub } = await rawUser(acc, sid("sep"));
    pub.send(publish("e/t", "queued", 1, 1));
    await pub.next("puback");
    await sleep(4_000);
    expect(await mon.waitEvent(subId, "LimitExceeded")).toMatchObject({ Limit: "SESSION_EXPIRY_SECONDS" });
    await end(mon.client);
    const again = await connectCollecting({ clientId: subId, username: subId, password: first.token, clean: false, ...NO_KEEPALIVE }, broker.wsUrl);
    expect(again.sessionPresent).toBe(false);
    // Its subscription went with it: a new message is not delivered either.
    pub.send(publish("e/t", "after", 1, 2));
    await pub.next("puback"); // routed
    await pingRoundTrip(again.client);
    expect(again.got).toEqual([]);
    pub.close();
    await end(again.client);
  }, 30_000);

  it("ALLOW_CONTROL_CHARACTERS=true: a client id, a topic filter and a topic name with control characters are accepted and routed", async () => {
    const raw = await RawClient.open(broker.wsUrl);
    expect((await raw.connect(sid("c\u0007"), NO_KEEPALIVE)).returnCode).toBe(0);
    const topic = "t/\u0001\u009f";
    raw.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    expect(await raw.next("suback")).toMatchObject({ granted: [1] });
    raw.send(publish(topic, "ctl", 1, 2));
    await raw.next("puback");
    expect(await raw.next("publish")).toMatchObject({ topic, payload: Buffer.from("ctl") });
    raw.close();
  });

  it("PUBLISH_RATE_PER_SECOND / PUBLISH_BURST: 5 publishes at once pass, the 6th closes the connection (Disconnect 92, rate)", async () => {
    const acc = account();
    const mon = await watch(acc);
    const id = sid("rt");
    const watcher = await mqttUser(acc, sid("rtw"));
    await subscribe(watcher.client, "r/t", 0);
    const { raw } = await rawUser(acc, id);
    // One frame: 5 publishes (the whole burst), a PINGREQ, the 6th publish. The broker handles
    // a frame's packets in order within microseconds, so no token is refilled in between.
    const burst = [1, 2, 3, 4, 5].map((i) => encode(publish("r/t", String(i), 0)));
    raw.sendBytes(bytes(...burst, encode({ cmd: "pingreq" }), encode(publish("r/t", "6", 0))));
    await raw.next("pingresp"); // the first 5 did not close the connection
    await raw.waitClosed();
    const ev = await mon.waitEvent(id, "Disconnect");
    expect(ev.CloseCode).toBe(92);
    expect(ev.Reason).toContain("rate");
    await pingRoundTrip(watcher.client); // its Disconnect event is out: the connection routes nothing more
    expect(watcher.got.map((m) => m.payload)).not.toContain("6");
    await end(mon.client, watcher.client);
  });
  it("HTTP_PUBLISH_RATE_PER_SECOND / HTTP_PUBLISH_BURST: 5 HTTP publishes pass, then 429 with Retry-After; other identities are unaffected", async () => {
    const acc = account();
    const other = account();
    const watcher = await mqttUser(acc, sid("hw"));
    await subscribe(watcher.client, "h/#", 0);
    const post = async (accountId: string, subject: string, payload: string): Promise<Response> =>
      fetch(`${broker.url}/api/v1/messages?topic=h/${subject}&qos=0`, {
        method: "POST",
        headers: { authorization: `Bearer ${await mintToken(accountId, subject, { url: broker.url })}` },
        body: payload,
      });
    const token = await mintToken(acc, "flood", { url: broker.url });
    const flood = (payload: string): Promise<Response> =>
      fetch(`${broker.url}/api/v1/messages?topic=h/flood&qos=0`, { method: "POST", headers: { authorization: `Bearer ${token}` }, body: payload });
    for (let i = 0; i < 5; i++) expect((await flood(`f${i}`)).status).toBe(202);
    // At 5 tokens per second, twenty more at once cannot all find one.
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => flood(`g${i}`)));
    const refused = answers.filter((r) => r.status === 429);
    expect(refused.length).toBeGreaterThan(0);
    const first = refused[0];
    expect(Number(first?.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    expect(await first?.json()).toEqual({ error: { code: "rate_limited", message: expect.any(String) } });
    await Promise.all(answers.filter((r) => r !== first).map((r) => r.body?.cancel()));
    // Bystanders: another identity of the account, and the same subject in another account.
    expect((await post(acc, "calm", "still here")).status).toBe(202);
    expect((await post(other, "flood", "elsewhere")).status).toBe(202);
    await waitFor(() => watcher.got.some((m) => m.payload === "still here"), "the bystander's message");
    await end(watcher.client);
  });
});
