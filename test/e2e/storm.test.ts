import { describe, it, expect, afterAll } from "vitest";
import { TEST_VARS, killBroker, startBroker, stopBroker, type Broker } from "../helpers/broker";
import { RawClient } from "../helpers/raw";
import { uid } from "../helpers/mqtt";
import { mintToken } from "../helpers/admin";

/**
 * A fleet reconnecting at once (after an outage or a deploy), bounded for CI: a few hundred
 * connections opened together, then the runtime killed and started again on that state (the
 * old connection objects' sockets vanished) and the fleet back at once. Every connection gets
 * CONNACK 0; whatever could not be served would have to get a retryable answer (CONNACK 3,
 * HTTP 503 with Retry-After), and none is expected at this size.
 */
describe("connect storms", () => {
  let broker: Broker | undefined;
  afterAll(async () => {
    if (broker) await stopBroker(broker);
  });

  /** `ids.length` connections, all started together; the CONNACK code of each, or how it failed. */
  async function storm(url: string, ids: string[], clean: boolean): Promise<{ clients: RawClient[]; outcomes: string[] }> {
    const clients: RawClient[] = [];
    const outcomes = await Promise.all(
      ids.map(async (id) => {
        try {
          const raw = await RawClient.open(url);
          clients.push(raw);
          const ack = await raw.connect(id, { clean, keepalive: 60 });
          return `connack ${ack.returnCode ?? "?"}`;
        } catch (err) {
          return `failed: ${err instanceof Error ? err.message : String(err)}`;
        }
      }),
    );
    return { clients, outcomes };
  }

  const tally = (outcomes: string[]): Record<string, number> => outcomes.reduce<Record<string, number>>((t, o) => ({ ...t, [o]: (t[o] ?? 0) + 1 }), {});

  it("200 connections at once, then again at once on a runtime restarted on their state: every one gets CONNACK 0", async () => {
    broker = await startBroker({ vars: TEST_VARS });
    const ids = Array.from({ length: 200 }, (_, i) => uid(`fleet${i}`));
    const first = await storm(broker.wsUrl, ids, false);
    expect(tally(first.outcomes)).toEqual({ "connack 0": 200 });

    await killBroker(broker);
    for (const c of first.clients) c.terminate();
    broker = await startBroker({ port: broker.port, persistDir: broker.persistDir, vars: TEST_VARS });
    // Bystanders, connected before the second storm: one in the fleet's account, one in another.
    const url = broker.wsUrl;
    const bystanders = await Promise.all([
      (async () => {
        const c = await RawClient.open(url);
        expect((await c.connect(uid("by"))).returnCode).toBe(0);
        return c;
      })(),
      (async () => {
        const id = uid("by-other");
        const c = await RawClient.open(url);
        const password = Buffer.from(await mintToken(uid("acc"), id, { url: broker?.url }));
        expect((await c.connect(id, { username: id, password })).returnCode).toBe(0);
        return c;
      })(),
    ]);
    for (const [i, c] of bystanders.entries()) {
      c.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic: `by/${i}`, qos: 1 }] });
      await c.next("suback");
    }
    const second = await storm(url, ids, false);
    expect(tally(second.outcomes)).toEqual({ "connack 0": 200 });
    // Each answers: the broker serves them, not only accepted them.
    await Promise.all(second.clients.map((c) => c.pingRoundTrip(30_000)));
    // The bystanders were served through the storm: a QoS 1 message each, to itself and acknowledged.
    for (const [i, c] of bystanders.entries()) {
      c.send({ cmd: "publish", topic: `by/${i}`, payload: Buffer.from("still here"), qos: 1, messageId: 2, retain: false, dup: false });
      expect(await c.next("puback", 30_000)).toMatchObject({ messageId: 2 });
      const got = await c.next("publish", 30_000);
      expect(got.cmd === "publish" ? got.payload.toString() : got.cmd).toBe("still here");
      c.close();
    }
    for (const c of second.clients) c.close();
  }, 240_000);
});
