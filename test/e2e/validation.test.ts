/**
 * Protocol validation end to end, one test per rule, tagged with its spec id (MQTT 3.1.1
 * conformance statements; a section number where the spec states the rule without an id).
 * Bytes over a raw WebSocket against the shared broker. The codec-level cases come from the
 * shared table `test/helpers/malformed.ts` (the codec unit tests use the same table); the
 * rest are here. Every closing case after CONNACK also checks the monitoring Disconnect
 * event: close code 105 ("invalid data" / "protocol error"), or 276 for invalid topic names;
 * and on an MQTT 5 session the exact DISCONNECT: `e0 01 81` Malformed Packet, `e0 01 82` Protocol
 * Error (the clients turn problem information off, so no Reason String follows).
 * The clients are JWT identities of one fresh account, watched by one monitor.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { RawClient } from "../helpers/raw";
import { end, uid } from "../helpers/mqtt";
import { mintToken } from "../helpers/admin";
import { monitor, type Monitor } from "../helpers/monitor";
import { MALFORMED, PROTOCOL_ERRORS, SERVER_ONLY, UNSUPPORTED_LEVELS, V31_ACCEPTED, isConnectFrame, type WireCase } from "../helpers/malformed";
import { bytes, connect, encode, frame, hex, publish } from "../helpers/bytes";

const acc = uid("val");
let mon: Monitor;

beforeAll(async () => {
  mon = await monitor(acc);
});

afterAll(async () => {
  if (mon) await end(mon.client);
});

/** A raw client of the test account past CONNACK 0 (JWT identity, user = client id; MQTT 5 without problem information). */
async function connected(version: 3 | 4 | 5 = 4): Promise<{ raw: RawClient; id: string }> {
  const id = uid("v");
  const token = await mintToken(acc, id);
  const raw = await RawClient.open(undefined, { version });
  const quiet = version === 5 ? { properties: { requestProblemInformation: false } } : {};
  const ack = await raw.connect(id, { username: id, password: Buffer.from(token), keepalive: 0, ...quiet });
  expect(version === 5 ? ack.reasonCode : ack.returnCode).toBe(0);
  return { raw, id };
}

/**
 * Sends `bytes` (or a text frame) after CONNACK; expects the broker to close the socket and report
 * Disconnect `code`; on an MQTT 5 session with `v5Reason`, the DISCONNECT before the close is exactly `e0 01 <v5Reason>`.
 */
async function expectClosedAfterConnack(bytes: Uint8Array | string, code = 105, version: 3 | 4 | 5 = 4, what = "", v5Reason?: number): Promise<void> {
  const { raw, id } = await connected(version);
  if (typeof bytes === "string") raw.sendText(bytes);
  else raw.sendBytes(bytes);
  await raw.waitClosed().catch((err: unknown) => {
    throw new Error(`${what || (typeof bytes === "string" ? "text frame" : hex(bytes))}: ${String(err)}`);
  });
  if (version === 5 && v5Reason !== undefined) {
    const disconnect = raw.packets.find((p) => p.cmd === "disconnect");
    expect(disconnect && hex(raw.bytesOf(disconnect)), what).toBe(hex(frame(0xe0, v5Reason)));
  }
  const ev = await mon.waitEvent(id, "Disconnect");
  expect(ev.CloseCode, `${what} → Disconnect ${JSON.stringify(ev)}`).toBe(code);
  if (code === 105) expect(["invalid data", "protocol error"], what).toContain(ev.Reason);
}

/** Sends `bytes` as the first packet(s); expects a close without any CONNACK. */
async function expectRefusedConnect(bytes: Uint8Array, what = ""): Promise<void> {
  const raw = await RawClient.open();
  raw.sendBytes(bytes);
  await raw.waitClosed().catch((err: unknown) => {
    throw new Error(`${what || hex(bytes)}: ${String(err)}`);
  });
  expect(raw.packets.map((p) => p.cmd), what).toEqual([]);
}

/** The connection is still usable: PINGREQ is answered. */
async function expectAlive(raw: RawClient): Promise<void> {
  raw.send({ cmd: "pingreq" });
  await raw.next("pingresp");
  expect(raw.closed).toBeNull();
}

/** One shared-table case: a CONNECT is sent first (no CONNACK expected); anything else after a CONNACK (MQTT 5: DISCONNECT `v5Reason`). */
function sendCase(c: WireCase, v5Reason = 0x81): Promise<void> {
  if (isConnectFrame(c.bytes)) return expectRefusedConnect(c.bytes, c.name);
  return expectClosedAfterConnack(c.bytes, 105, c.version, c.name, v5Reason);
}

const byRule = new Map<string, WireCase[]>();
for (const c of MALFORMED) byRule.set(c.spec, [...(byRule.get(c.spec) ?? []), c]);

describe("the shared malformed table (test/helpers/malformed.ts): MQTT 3.1, 3.1.1 and 5.0 cases, each on a session of its version", () => {
  for (const [spec, cases] of byRule) {
    const tag = spec.startsWith("§") ? spec : `[${spec}]`;
    it(`${tag} ${cases.length} case(s), e.g. ${cases[0]?.name}: closed (CONNECT: without CONNACK; later: Disconnect 105, 5.0: DISCONNECT 0x81)`, async () => {
      await Promise.all(cases.map((c) => sendCase(c)));
    });
  }

  it(`well-formed packets breaking a protocol rule (${[...new Set(PROTOCOL_ERRORS.map((c) => c.spec))].join(", ")}): closed (5.0: DISCONNECT 0x82 Protocol Error; CONNECT: without CONNACK)`, async () => {
    await Promise.all(PROTOCOL_ERRORS.map((c) => sendCase(c, 0x82)));
  });

  it("3.1 packets 3.1.1 would refuse, for rules 3.1 does not have (header flags, reserved and will flags, a flag without its field, a SUBSCRIBE without filters): accepted and answered, as mosquitto does", async () => {
    await Promise.all(
      V31_ACCEPTED.map(async (c) => {
        if (isConnectFrame(c.bytes)) {
          const raw = await RawClient.open(undefined, { version: 3 });
          raw.sendBytes(c.bytes);
          expect(await raw.next("connack"), c.name).toMatchObject({ returnCode: 0 });
          raw.close();
          return;
        }
        const { raw } = await connected(3);
        raw.sendBytes(c.bytes);
        await raw.next(c.answer ?? "pingresp").catch((err: unknown) => {
          throw new Error(`${c.name}: ${String(err)}`);
        });
        await expectAlive(raw);
        raw.close();
      }),
    );
  });

  it("[MQTT-3.1.2-2] unsupported protocol levels (6, 2, 0, 255, bridge mode): CONNACK 1, then closed", async () => {
    await Promise.all(
      UNSUPPORTED_LEVELS.map(async (c) => {
        const raw = await RawClient.open();
        raw.sendBytes(c.bytes);
        const ack = await raw.next("connack").catch((err: unknown) => {
          throw new Error(`${c.name}: ${String(err)}`);
        });
        expect(ack, c.name).toMatchObject({ returnCode: 1, sessionPresent: false });
        await raw.waitClosed();
      }),
    );
  });

  it("§3.2 server-to-client packets from a client (CONNACK, SUBACK, UNSUBACK, PINGRESP), §4.12 AUTH without an authentication method: closed (Disconnect 105, 5.0: DISCONNECT 0x82 Protocol Error)", async () => {
    await Promise.all(SERVER_ONLY.map((c) => expectClosedAfterConnack(c.bytes, 105, c.version, c.name, 0x82)));
  });
});

describe("session-level rules", () => {
  it("[MQTT-3.1.0-1] a first packet that is not CONNECT: closed, no answer", async () => {
    await expectRefusedConnect(encode({ cmd: "pingreq" }), "PINGREQ first");
    await expectRefusedConnect(encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a", qos: 0 }] }), "SUBSCRIBE first");
    await expectRefusedConnect(publish({ topic: "a", payload: [0x78] }), "PUBLISH first");
  });

  it("[MQTT-3.1.0-2] a second CONNECT: closed (Disconnect 105)", async () => {
    await expectClosedAfterConnack(connect({ clientId: uid("v"), keepAlive: 0 }));
  });

  it("[MQTT-6.0.0-1] a text WebSocket frame: closed (Disconnect 105)", async () => {
    await expectClosedAfterConnack("\x30\x03\x00\x01a");
  });

  it("§2.2.3 a Remaining Length over 4 bytes: closed (Disconnect 105)", async () => {
    await expectClosedAfterConnack(new Uint8Array([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]));
  });

  it("a truncated packet body (topic length past the end of the packet): closed (Disconnect 105); other sessions go on", async () => {
    const other = await connected();
    await expectClosedAfterConnack(bytes([0x30, 0x03], [0x00, 0x09, 0x61]));
    await expectAlive(other.raw);
    other.raw.close();
  });

  it("[MQTT-3.3.2-2] a wildcard in a PUBLISH topic name: closed (Disconnect 276 invalid topic)", async () => {
    await expectClosedAfterConnack(publish({ topic: "a/+/b", payload: [] }), 276);
    await expectClosedAfterConnack(publish({ topic: "a/#", payload: [0x78], qos: 1, id: 3 }), 276);
  });

  it("[MQTT-4.7.3-1] an empty PUBLISH topic name: closed (Disconnect 276 invalid topic)", async () => {
    await expectClosedAfterConnack(publish({ topic: "", payload: [] }), 276);
  });

  it("[MQTT-4.7.1-2] [MQTT-4.7.1-3] malformed filters a/#/b, a+, #/a: SUBACK 0x80 each, the connection stays (an empty one closes: the shared table)", async () => {
    const { raw } = await connected();
    raw.send({
      cmd: "subscribe",
      messageId: 5,
      subscriptions: [
        { topic: "a/#/b", qos: 1 },
        { topic: "a+", qos: 1 },
        { topic: "#/a", qos: 0 },
        { topic: "ok/+", qos: 1 },
      ],
    });
    expect(await raw.next("suback")).toMatchObject({ messageId: 5, granted: [0x80, 0x80, 0x80, 1] });
    await expectAlive(raw);
    raw.close();
  });
});
