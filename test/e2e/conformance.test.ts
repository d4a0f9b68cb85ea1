/**
 * Conformance end to end, one test per class of behaviour public broker suites (mosquitto's
 * broker tests, Paho interop) check and the broker once missed, named by spec id, for 3.1, 3.1.1
 * and 5.0 where the class applies. Bytes over raw WebSockets against the shared broker, compared
 * exactly; the expected acknowledgements come from the table the codec's unit tests share
 * (`CANONICAL` in test/helpers/malformed.ts). The codec-level classes (malformed and protocol-error
 * packets, 3.1 leniency) run over their tables in validation.test.ts.
 *
 * Clients are anonymous (the shared broker's account `anon`) with fresh client ids and topics;
 * MQTT 5 clients turn problem information off, so a DISCONNECT from the broker is its canonical
 * `e0 01 <reason>`. Absence is shown by a PINGREQ/PINGRESP round trip, never by a sleep.
 */
import { describe, it, expect } from "vitest";
import type { IConnectPacket, Packet } from "mqtt-packet";
import { RawClient } from "../helpers/raw";
import { uid, waitFor } from "../helpers/mqtt";
import { canonical } from "../helpers/malformed";
import { connect, frame, hex, props, prop, publish, subscribe, u16, utf8 } from "../helpers/bytes";

type Version = 3 | 4 | 5;
const VERSIONS: readonly Version[] = [3, 4, 5];
const NAME: Record<Version, string> = { 3: "3.1", 4: "3.1.1", 5: "5.0" };

/** Connects a raw client (anonymous unless `extra` says otherwise) and returns it with its CONNACK. */
async function open(version: Version, clientId: string, extra: Partial<IConnectPacket> = {}): Promise<{ raw: RawClient; ack: Packet }> {
  const raw = await RawClient.open(undefined, { version: version });
  const properties = version === 5 ? { requestProblemInformation: false, ...extra.properties } : undefined;
  const ack = await raw.connect(clientId, { keepalive: 0, ...extra, ...(properties ? { properties } : {}) });
  return { raw, ack };
}

/** A raw client past CONNACK 0. */
async function client(version: Version, extra: Partial<IConnectPacket> = {}, clientId = uid("cf")): Promise<RawClient> {
  const { raw, ack } = await open(version, clientId, extra);
  expect(ack).toMatchObject(version === 5 ? { reasonCode: 0 } : { returnCode: 0 });
  return raw;
}

/** The exact bytes of the next packet of type `cmd`. */
async function next(raw: RawClient, cmd: Packet["cmd"]): Promise<string> {
  return hex(raw.bytesOf(await raw.next(cmd)));
}

async function subscribeTo(raw: RawClient, topic: string, qos: 0 | 1 | 2, messageId = 1): Promise<void> {
  raw.send({ cmd: "subscribe", messageId, subscriptions: [{ topic, qos }] });
  expect(await raw.next("suback")).toMatchObject({ messageId, granted: [qos] });
}

/** The PUBLISH packets received so far (not consumed). */
const publishes = (raw: RawClient): Packet[] => raw.packets.filter((p) => p.cmd === "publish");

/** The broker's DISCONNECT before it closes an MQTT 5 connection, exactly; on 3.1 / 3.1.1 just the close. */
async function expectClosed(raw: RawClient, version: Version, v5Reason: number): Promise<void> {
  if (version === 5) expect(await next(raw, "disconnect")).toBe(hex(frame(0xe0, v5Reason)));
  await raw.waitClosed();
}

/** The client's QoS 2 exchange for `bytes` (a PUBLISH with packet identifier `pid`): PUBREC and PUBCOMP, each exactly 2 bytes after the fixed header. */
async function publishQos2(c: RawClient, bytes: Uint8Array, pid: number): Promise<void> {
  c.sendBytes(bytes);
  expect(await next(c, "pubrec")).toBe(hex(frame(0x50, u16(pid))));
  c.sendBytes(frame(0x62, u16(pid)));
  expect(await next(c, "pubcomp")).toBe(hex(frame(0x70, u16(pid))));
}

/** Completes the broker's QoS 2 delivery `pid` to `c`: PUBREC, the exact PUBREL, PUBCOMP; then nothing more. */
async function completeDelivery(c: RawClient, pid: number): Promise<void> {
  c.sendBytes(frame(0x50, u16(pid)));
  expect(await next(c, "pubrel")).toBe(hex(frame(0x62, u16(pid))));
  c.sendBytes(frame(0x70, u16(pid)));
  await c.pingRoundTrip();
}

const ack = (version: Version, name: "PUBACK" | "PUBREL"): string => hex(canonical(version === 5 ? `5.0 ${name} success` : `3.1.1 ${name}`).bytes);

describe("short acknowledgements [§3.4.2.1] [§3.5.2.1] [§3.6.2.1] [§3.7.2.1] and 0x10 No matching subscribers", () => {
  for (const version of VERSIONS) {
    it(`${NAME[version]}: PUBACK is 2 bytes after the packet identifier${version === 5 ? ", 0x10 (3 bytes) when no subscription matched" : ""}; PUBREC, PUBREL, PUBCOMP are 2 bytes`, async () => {
      const topic = `cf/ack/${uid()}`;
      const c = await client(version);
      c.sendBytes(publish({ topic, qos: 1, id: 1, version }));
      expect(await next(c, "puback")).toBe(version === 5 ? hex(canonical("5.0 PUBACK no matching subscribers").bytes) : ack(version, "PUBACK"));
      // A retained message nobody subscribed to is kept, and still matched no subscription.
      c.sendBytes(publish({ topic: `${topic}/kept`, qos: 1, id: 1, version, flags: 0b0011 }));
      expect(await next(c, "puback")).toBe(version === 5 ? hex(canonical("5.0 PUBACK no matching subscribers").bytes) : ack(version, "PUBACK"));
      c.sendBytes(publish({ topic: `${topic}/kept`, qos: 1, id: 1, version, flags: 0b0011, payload: [] }));
      await c.next("puback");

      await subscribeTo(c, topic, 2);
      c.sendBytes(publish({ topic, qos: 1, id: 1, version }));
      expect(await next(c, "puback")).toBe(ack(version, "PUBACK"));
      const own = await c.next("publish");
      c.send({ cmd: "puback", messageId: own.messageId });
      // QoS 2 in and out: PUBREC and PUBCOMP to the client's PUBLISH and PUBREL; PUBREL to its PUBREC.
      c.sendBytes(publish({ topic, qos: 2, id: 1, version }));
      expect(await next(c, "pubrec")).toBe(hex(canonical("5.0 PUBREC success").bytes));
      c.sendBytes(frame(0x62, u16(1)));
      expect(await next(c, "pubcomp")).toBe(hex(canonical("5.0 PUBCOMP success").bytes));
      expect(await c.next("publish")).toMatchObject({ qos: 2, messageId: 2 });
      await completeDelivery(c, 2);
      c.close();
    });
  }
});

describe("wrong acknowledgements for a delivery (§4.3.2, §4.3.3): a protocol error, as mosquitto has it", () => {
  const cases: ReadonlyArray<readonly [string, 1 | 2, (pid: number) => Uint8Array]> = [
    ["PUBREC for a QoS 1 PUBLISH", 1, (pid) => frame(0x50, u16(pid))],
    ["PUBACK for a QoS 2 PUBLISH", 2, (pid) => frame(0x40, u16(pid))],
    ["PUBCOMP before PUBREL", 2, (pid) => frame(0x70, u16(pid))],
  ];
  for (const version of VERSIONS) {
    for (const [what, qos, wrong] of cases) {
      it(`${NAME[version]}: ${what}: closed${version === 5 ? " with DISCONNECT 0x82" : ""}`, async () => {
        const topic = `cf/wrong/${uid()}`;
        const sub = await client(version);
        await subscribeTo(sub, topic, qos);
        const pub = await client(4);
        if (qos === 2) await publishQos2(pub, publish({ topic, qos, id: 1 }), 1);
        else {
          pub.sendBytes(publish({ topic, qos, id: 1 }));
          await pub.next("puback");
        }
        const delivery = await sub.next("publish");
        sub.sendBytes(wrong(delivery.messageId ?? 0));
        await expectClosed(sub, version, 0x82);
        pub.close();
      });
    }
  }
});

describe("PUBREC for the broker's QoS 2 deliveries", () => {
  for (const version of VERSIONS) {
    it(`${NAME[version]}: an unsolicited PUBREC is answered with PUBREL${version === 5 ? " 0x92 Packet Identifier not found" : ""}`, async () => {
      const c = await client(version);
      c.sendBytes(frame(0x50, u16(1)));
      expect(await next(c, "pubrel")).toBe(version === 5 ? hex(canonical("5.0 PUBREL packet identifier not found").bytes) : ack(version, "PUBREL"));
      await c.pingRoundTrip();
      c.close();
    });
  }

  it("5.0: a PUBREC with a reason of 0x80 or more ends the flow: no PUBREL, and the next message takes its place in the window [MQTT-4.3.3-4]", async () => {
    const topic = `cf/fail/${uid()}`;
    const sub = await client(5, { properties: { receiveMaximum: 1 } });
    await subscribeTo(sub, topic, 2);
    const pub = await client(5);
    for (const id of [1, 2]) await publishQos2(pub, publish({ topic, qos: 2, id, version: 5, payload: utf8(`m${id}`) }), id);
    const first = await sub.next("publish");
    expect(first).toMatchObject({ messageId: 1, payload: Buffer.from("m1") });
    sub.sendBytes(frame(0x50, u16(1), 0x80));
    const second = await sub.next("publish");
    expect(second).toMatchObject({ messageId: 2, payload: Buffer.from("m2") });
    await sub.pingRoundTrip();
    expect(sub.packets.filter((p) => p.cmd === "pubrel")).toEqual([]);
    await completeDelivery(sub, 2);
    sub.close();
    pub.close();
  });
});

describe("the in-flight window", () => {
  it("5.0 Receive Maximum 16: never more than 16 unacknowledged; waiting messages go out once 2 slots are free, together, in order, none lost", async () => {
    const topic = `cf/window/${uid()}`;
    const sub = await client(5, { properties: { receiveMaximum: 16 } });
    await subscribeTo(sub, topic, 1);
    const pub = await client(4);
    const n = 40;
    for (let i = 0; i < n; i++) {
      pub.send({ cmd: "publish", topic, payload: Buffer.from(`m${i}`), qos: 1, messageId: i + 1, retain: false, dup: false });
      await pub.next("puback");
    }
    const publishes = (): Array<Packet & { cmd: "publish" }> => sub.packets.filter((p): p is Packet & { cmd: "publish" } => p.cmd === "publish");
    await waitFor(() => publishes().length === 16, "the first 16");
    await sub.pingRoundTrip();
    expect(publishes()).toHaveLength(16); // the window is full: 24 wait
    const ackNext = (k: number) => sub.send({ cmd: "puback", messageId: publishes()[k]!.messageId!, reasonCode: 0 });
    ackNext(0);
    await sub.pingRoundTrip();
    expect(publishes()).toHaveLength(16); // one slot free: less than an eighth of the window
    const framesBefore = sub.frames.length;
    ackNext(1);
    await waitFor(() => publishes().length === 18, "two more once two slots are free");
    expect(sub.frames.slice(framesBefore)).toContain(2); // the two in one frame
    // Acknowledging as they come, the rest follow in order, each once.
    for (let k = 2; k < n; k++) {
      await waitFor(() => publishes().length > k, `message ${k}`);
      ackNext(k);
    }
    await sub.pingRoundTrip();
    expect(publishes().map((p) => Buffer.from(p.payload).toString())).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));
    sub.close();
    pub.close();
  });
});

describe("order", () => {
  for (const version of VERSIONS) {
    it(`${NAME[version]} [MQTT-3.8.4-3]: SUBACK first, then the retained messages of a wildcard subscription in topic order`, async () => {
      const base = `cf/order/${uid()}`;
      const pub = await client(4);
      for (const [i, level] of ["b", "a", "c", "b"].entries()) {
        pub.send({ cmd: "publish", topic: `${base}/${level}`, payload: Buffer.from(`${level}${i}`), qos: 1, messageId: i + 1, retain: true, dup: false });
        await pub.next("puback");
      }
      const sub = await client(version);
      sub.sendBytes(subscribe(1, [[`${base}/#`, 0]], version));
      await waitFor(() => sub.packets.length >= 4, "SUBACK and three retained messages");
      const got = sub.packets.slice(0, 4).map((p) => hex(sub.bytesOf(p)));
      const retained = (level: string, payload: string): string => hex(publish({ topic: `${base}/${level}`, flags: 0b0001, payload: utf8(payload), version }));
      const suback = hex(frame(0x90, u16(1), ...(version === 5 ? [props()] : []), 0));
      expect(got).toEqual([suback, retained("a", "a1"), retained("b", "b3"), retained("c", "c2")]);
      for (const level of ["a", "b", "c"]) pub.send({ cmd: "publish", topic: `${base}/${level}`, payload: Buffer.alloc(0), qos: 0, retain: true, dup: false });
      await pub.pingRoundTrip();
      sub.close();
      pub.close();
    });
  }

  for (const version of VERSIONS) {
    it(`${NAME[version]} [MQTT-4.3.3-9]: a QoS 2 PUBLISH gets its PUBREC before any subscriber (the publisher itself included) has the message; PUBREL releases it`, async () => {
      const topic = `cf/q2/${uid()}`;
      const other = await client(4);
      await subscribeTo(other, topic, 2);
      const pub = await client(version);
      await subscribeTo(pub, topic, 2);
      pub.sendBytes(publish({ topic, qos: 2, id: 1, version }));
      expect(await next(pub, "pubrec")).toBe(hex(frame(0x50, u16(1))));
      await other.pingRoundTrip();
      await pub.pingRoundTrip();
      expect([publishes(other), publishes(pub)]).toEqual([[], []]);
      pub.sendBytes(frame(0x62, u16(1)));
      expect(await next(pub, "pubcomp")).toBe(hex(frame(0x70, u16(1))));
      expect(await pub.next("publish")).toMatchObject({ topic, qos: 2 });
      expect(await other.next("publish")).toMatchObject({ topic, qos: 2 });
      other.close();
      pub.close();
    });
  }
});

describe("wills [§3.1.2.5]: published when the session ends or the will delay elapses, not on a takeover that resumes the session", () => {
  for (const version of VERSIONS) {
    it(`${NAME[version]}: a persistent session taken over by a resuming connection publishes no will; taken over by a clean start, it does`, async () => {
      const willTopic = `cf/will/${uid()}`;
      const watcher = await client(4);
      await subscribeTo(watcher, willTopic, 1);
      const clientId = uid("wl");
      const persistent: Partial<IConnectPacket> = { clean: false, ...(version === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}) };
      const willProperties = version === 5 ? { properties: { willDelayInterval: 300 } } : {};
      const will = { topic: willTopic, payload: Buffer.from("gone"), qos: 1 as const, retain: false, ...willProperties };
      const first = await client(version, { ...persistent, will }, clientId);
      const resumed = await open(version, clientId, { ...persistent, will });
      expect(resumed.ack).toMatchObject({ sessionPresent: true });
      await expectClosed(first, version, 0x8e);
      // The old connection ended before the new CONNACK: a will it published has reached the watcher by now.
      await watcher.pingRoundTrip();
      expect(publishes(watcher)).toEqual([]);
      // A clean start ends the session: the will goes out at once, its delay notwithstanding.
      const fresh = await client(version, { clean: true }, clientId);
      await expectClosed(resumed.raw, version, 0x8e);
      expect(await watcher.next("publish")).toMatchObject({ topic: willTopic, payload: Buffer.from("gone") });
      fresh.close();
      watcher.close();
    });
  }
});

describe("topic aliases (5.0 §3.3.2.3.4)", () => {
  const aliased = (alias: number, topic = ""): Uint8Array => publish({ topic, version: 5, properties: props([0x23, ...u16(alias)]) });
  it("an empty topic with an alias the client never set: DISCONNECT 0x82 Protocol Error", async () => {
    const c = await client(5);
    c.sendBytes(aliased(5));
    await expectClosed(c, 5, 0x82);
  });
  it("an alias of 0 or over the Topic Alias Maximum: DISCONNECT 0x94 Topic Alias invalid [MQTT-3.3.2-8] [MQTT-3.3.2-9]", async () => {
    for (const alias of [0, 33]) {
      const c = await client(5);
      c.sendBytes(aliased(alias, "cf/alias"));
      await expectClosed(c, 5, 0x94);
    }
  });
});

describe("the client's Maximum Packet Size [MQTT-3.1.2-25]: a message too large for it is skipped, the next ones still flow (mosquitto's 12-prop-maximum-packet-size vectors)", () => {
  const maximum = { properties: { maximumPacketSize: 40 } };

  it("QoS 1: two oversized self-deliveries are skipped, PUBACKs still come, a fitting one is delivered", async () => {
    const topic = "12/max/publish/qos1/test/topic"; // 30 bytes: a PUBLISH of 4 payload bytes is 41 bytes
    const c = await client(5, maximum);
    await subscribeTo(c, topic, 1);
    const oversized = [publish({ topic: topic, qos: 1, id: 1, version: 5, payload: utf8("1234") }), publish({ topic: topic, qos: 1, id: 2, version: 5, payload: utf8("56"), properties: props(prop.payloadFormat(1)) })];
    for (const [i, bytes] of oversized.entries()) {
      c.sendBytes(bytes);
      expect(await next(c, "puback")).toBe(hex(frame(0x40, u16(i + 1))));
      await c.pingRoundTrip();
      expect(publishes(c)).toEqual([]);
    }
    const fitting = publish({ topic: topic, qos: 1, id: 3, version: 5, payload: utf8("789") });
    c.sendBytes(fitting);
    expect(await next(c, "puback")).toBe(hex(frame(0x40, u16(3))));
    expect(await next(c, "publish")).toBe(hex(fitting));
    c.close();
  });

  it("QoS 2: an oversized released message leaves no outgoing flow behind; the next one completes its own", async () => {
    const topic = "12/max/publish/qos2/test/topic";
    const c = await client(5, maximum);
    await subscribeTo(c, topic, 2);
    await publishQos2(c, publish({ topic, qos: 2, id: 1, version: 5, payload: utf8("1234") }), 1);
    await c.pingRoundTrip();
    expect(publishes(c)).toEqual([]);
    const fitting = publish({ topic, qos: 2, id: 2, version: 5, payload: utf8("789") });
    await publishQos2(c, fitting, 2);
    expect(await next(c, "publish")).toBe(hex(fitting)); // the broker's own packet id 2: 1 went to the skipped one
    await completeDelivery(c, 2);
    c.close();
  });
});

describe("control characters (§1.5.4: SHOULD NOT; refused unless ALLOW_CONTROL_CHARACTERS)", () => {
  for (const version of VERSIONS) {
    it(`${NAME[version]}: in a client id CONNACK ${version === 5 ? "0x85" : "2"}, in a user name CONNACK ${version === 5 ? "0x86" : "4"}, in a will topic closed without CONNACK`, async () => {
      const byId = await open(version, `cf-\u0007-${uid()}`);
      expect(hex(byId.raw.bytesOf(byId.ack))).toBe(hex(version === 5 ? frame(0x20, 0, 0x85, props()) : frame(0x20, 0, 2)));
      const byUser = await open(version, uid("cf"), { username: "u\u007f" });
      expect(hex(byUser.raw.bytesOf(byUser.ack))).toBe(hex(version === 5 ? frame(0x20, 0, 0x86, props()) : frame(0x20, 0, 4)));
      const raw = await RawClient.open(undefined, { version: version });
      raw.send({ cmd: "connect", protocolId: version === 3 ? "MQIsdp" : "MQTT", protocolVersion: version, clean: true, keepalive: 0, clientId: uid("cf"), will: { topic: "cf/\u0085", payload: Buffer.from("x"), qos: 0, retain: false } });
      await raw.waitClosed();
      expect(raw.packets).toEqual([]);
    });

    it(`${NAME[version]}: in a topic name closed${version === 5 ? " with DISCONNECT 0x90" : ""}; in a topic filter SUBACK ${version === 5 ? "0x8F" : "0x80"}`, async () => {
      const c = await client(version);
      c.sendBytes(subscribe(1, [["cf/\u001f/#", 1], ["cf/ok", 1]], version));
      expect(await next(c, "suback")).toBe(hex(frame(0x90, u16(1), ...(version === 5 ? [props()] : []), version === 5 ? 0x8f : 0x80, 1)));
      c.sendBytes(publish({ topic: "cf/\u0009", version }));
      await expectClosed(c, version, 0x90);
    });
  }
});

describe("MQTT 3.1", () => {
  it("§3.1: a client id is 1 to 23 characters: an empty one gets CONNACK 2, with or without clean session", async () => {
    for (const flags of [0x02, 0x00]) {
      const raw = await RawClient.open(undefined, { version: 3 });
      raw.sendBytes(connect({ level: 3, clientId: "", flags }));
      expect(await next(raw, "connack")).toBe(hex(frame(0x20, 0, 2)));
      await raw.waitClosed();
    }
  });
});

describe("anonymous access and user names (README Decisions)", () => {
  for (const version of VERSIONS) {
    it(`${NAME[version]}: an empty user name without a password is no credentials (anonymous); any other user name is checked: CONNACK ${version === 5 ? "0x86" : "4"}`, async () => {
      const anonymous = await client(version, { username: "" });
      await anonymous.pingRoundTrip();
      anonymous.close();
      const named = await open(version, uid("cf"), { username: "nobody-here" });
      expect(hex(named.raw.bytesOf(named.ack))).toBe(hex(version === 5 ? frame(0x20, 0, 0x86, props()) : frame(0x20, 0, 4)));
      await named.raw.waitClosed();
    });
  }
});
