/**
 * Rate limits without holes: packets per frame, packets per second of every kind, a publish
 * budget that a reconnect does not refill, and the connect rate of one client id. One
 * dedicated broker with small rates; every test also checks a bystander.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type { Packet } from "mqtt-packet";
import { RawClient } from "../helpers/raw";
import { encode } from "../helpers/bytes";
import { uid } from "../helpers/mqtt";
import { mintToken } from "../helpers/admin";
import { TEST_VARS, startBroker, stopBroker, type Broker } from "../helpers/broker";

const RATES = {
  PUBLISH_RATE_PER_SECOND: "1",
  PUBLISH_BURST: "3",
  PACKET_RATE_PER_SECOND: "1",
  PACKET_BURST: "20",
  MAX_PACKETS_PER_FRAME: "10",
  CONNECT_RATE_PER_CLIENT: "1",
  CONNECT_BURST_PER_CLIENT: "3",
  CONNECT_RATE_PER_ACCOUNT: "1",
  CONNECT_BURST_PER_ACCOUNT: "30",
};

let broker: Broker;

beforeAll(async () => {
  broker = await startBroker({ vars: { ...TEST_VARS, ...RATES } });
});

afterAll(async () => {
  if (broker) await stopBroker(broker);
});

async function open(clientId: string, version: 4 | 5 = 4): Promise<RawClient> {
  const raw = await RawClient.open(broker.wsUrl, { version });
  const ack = await raw.connect(clientId, { keepalive: 0 });
  expect(version === 5 ? ack.reasonCode : ack.returnCode).toBe(0);
  return raw;
}

/** Two bystanders: one in the attackers' account (anonymous, `anon`), one in another account (a JWT user). */
async function bystanders(): Promise<RawClient[]> {
  const id = uid("by-other");
  const other = await RawClient.open(broker.wsUrl);
  const ack = await other.connect(id, { keepalive: 0, username: id, password: Buffer.from(await mintToken(uid("acc"), id, { url: broker.url })) });
  expect(ack.returnCode).toBe(0);
  return [await open(uid("by")), other];
}

/** Both bystanders still answer, then leave. */
async function served(clients: RawClient[]): Promise<void> {
  for (const c of clients) {
    await c.pingRoundTrip();
    c.close();
  }
}

const ping = (): Packet => ({ cmd: "pingreq" });
const pub = (topic: string, payload: string): Packet => ({ cmd: "publish", topic, payload: Buffer.from(payload), qos: 0, retain: false, dup: false });

describe("rate limits", () => {
  it("a frame with more packets than MAX_PACKETS_PER_FRAME is refused whole: no answer, the connection closes (5.0: DISCONNECT 0x96)", async () => {
    const bystander = await bystanders();
    const flood = await open(uid("flood"), 5);
    flood.sendBytes(Buffer.concat(Array.from({ length: 11 }, () => Buffer.from(encode(ping(), 5)))));
    await flood.waitClosed();
    expect(flood.packets.filter((p) => p.cmd === "pingresp")).toEqual([]);
    expect(flood.packets.find((p) => p.cmd === "disconnect")).toMatchObject({ reasonCode: 0x96 });
    await served(bystander);
  });

  it("every packet the client starts counts: PINGREQs past PACKET_BURST close the connection", async () => {
    const bystander = await bystanders();
    const noisy = await open(uid("noisy"));
    // CONNECT took one token; 19 more PINGREQs are answered, then the budget is spent.
    for (let i = 0; i < 25; i++) noisy.send(ping());
    await noisy.waitClosed();
    const answered = noisy.packets.filter((p) => p.cmd === "pingresp").length;
    expect(answered).toBeGreaterThanOrEqual(19);
    expect(answered).toBeLessThan(25);
    await served(bystander);
  });

  it("a reconnect does not refill the publish budget", async () => {
    const clientId = uid("burst");
    const topic = `rates/${clientId}`;
    const bystander = await bystanders();
    const first = await open(clientId);
    for (let i = 0; i < 3; i++) first.send(pub(topic, String(i))); // the whole burst
    await first.pingRoundTrip();
    first.send({ cmd: "disconnect" });
    await first.waitClosed();
    const second = await open(clientId);
    // Within the next seconds at most a token or two has come back: three more publishes are too many.
    for (let i = 0; i < 3; i++) second.send(pub(topic, `again ${i}`));
    await second.waitClosed();
    await served(bystander);
  });

  it("one client id connecting too often gets CONNACK 3 past CONNECT_BURST_PER_CLIENT; other client ids are unaffected", async () => {
    const clientId = uid("flap");
    const codes: number[] = [];
    for (let i = 0; i < 10 && !codes.includes(3); i++) {
      const raw = await RawClient.open(broker.wsUrl);
      const ack = await raw.connect(clientId, { keepalive: 0 });
      codes.push(ack.returnCode ?? -1);
      raw.close();
      await raw.waitClosed().catch(() => undefined);
    }
    expect(codes.slice(0, 3)).toEqual([0, 0, 0]);
    expect(codes).toContain(3);
    await served(await bystanders());
  });

  it("one account connecting too often gets CONNACK 3 past CONNECT_BURST_PER_ACCOUNT; another account still connects", async () => {
    const account = uid("busy");
    const codes: number[] = [];
    for (let i = 0; i < 45 && !codes.includes(3); i++) {
      const clientId = uid("c");
      const token = await mintToken(account, clientId, { url: broker.url });
      const raw = await RawClient.open(broker.wsUrl);
      const ack = await raw.connect(clientId, { keepalive: 0, username: clientId, password: Buffer.from(token) });
      codes.push(ack.returnCode ?? -1);
      raw.close();
    }
    expect(codes.slice(0, 30).every((c) => c === 0)).toBe(true);
    expect(codes).toContain(3);
    await served(await bystanders());
  });
});
