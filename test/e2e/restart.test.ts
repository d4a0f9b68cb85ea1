import { describe, it, expect, afterAll } from "vitest";
import { TEST_VARS, killBroker, startBroker, stopBroker, type Broker } from "../helpers/broker";
import { connect, connectCollecting, end, subscribe, uid, waitFor } from "../helpers/mqtt";
import { RawClient } from "../helpers/raw";

/**
 * The runtime is killed with SIGKILL (no graceful shutdown) and started again on the
 * same persisted state: every acknowledged QoS 1 message and the retained message must
 * still reach their subscribers.
 */
describe("restart of the runtime", () => {
  let broker: Broker | undefined;
  afterAll(async () => {
    if (broker) await stopBroker(broker);
  });

  it("keeps acknowledged QoS 1 messages (offline queue and unacknowledged in-flight) and retained messages", async () => {
    broker = await startBroker({ vars: TEST_VARS });
    const ws = broker.wsUrl;
    const offlineId = uid("offline");
    const onlineId = uid("online");
    const topic = `restart/${uid()}`;

    // An offline persistent session with a subscription.
    const off = await connect({ clientId: offlineId, clean: false }, ws);
    await subscribe(off, topic, 1);
    await off.endAsync();

    // An online persistent session that never acknowledges.
    const on = await RawClient.open(ws);
    await on.connect(onlineId, { clean: false });
    on.send({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 1 }] });
    await on.next("suback");

    const pub = await connect({ clientId: uid("pub") }, ws);
    const n = 20;
    for (let i = 0; i < n; i++) await pub.publishAsync(topic, `m${i}`, { qos: 1 }); // each resolved on PUBACK
    await pub.publishAsync(`${topic}/state`, "retained-before-crash", { qos: 1, retain: true });
    await waitFor(() => on.packets.filter((p) => p.cmd === "publish").length === n, "in-flight copies at the online client");
    await end(pub);

    await killBroker(broker);
    on.terminate();
    broker = await startBroker({ port: broker.port, persistDir: broker.persistDir, vars: TEST_VARS });

    const a = await connectCollecting({ clientId: offlineId, clean: false }, ws);
    expect(a.sessionPresent).toBe(true);
    await waitFor(() => a.got.length === n, `${n} queued messages for the offline session`);
    expect(a.got.map((m) => m.payload)).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));

    const b = await RawClient.open(ws);
    const ack = await b.connect(onlineId, { clean: false });
    expect(ack.sessionPresent).toBe(true);
    await waitFor(() => b.packets.filter((p) => p.cmd === "publish").length === n, `${n} redelivered messages`);
    const redelivered = b.packets.flatMap((p) => (p.cmd === "publish" ? [p] : []));
    expect(redelivered.map((p) => p.payload.toString())).toEqual(Array.from({ length: n }, (_, i) => `m${i}`));
    expect(redelivered.every((p) => p.dup)).toBe(true);

    const r = await connectCollecting({ clientId: uid() }, ws);
    await subscribe(r.client, `${topic}/#`, 1);
    await waitFor(() => r.got.length === 1, "the retained message");
    expect(r.got[0]).toMatchObject({ payload: "retained-before-crash", retain: true });

    // Routing still works after the restart.
    await r.client.publishAsync(topic, "after", { qos: 1 });
    await waitFor(() => a.got.some((m) => m.payload === "after"), "a live message after restart");
    b.close();
    await end(a.client, r.client);
  }, 120_000);
});
