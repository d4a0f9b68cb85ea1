/**
 * Keep alive and the connect timeout, in each enforcement setting (KEEPALIVE_CHECK_SECONDS): a
 * silent client is closed and its will published within the documented bound, a client that
 * talks is never cut, a socket without CONNECT is closed, and the monitoring events follow.
 * Three dedicated brokers (exact, a coarse 4 s grain, and the shared keep-alive clock), each with
 * a 2 s connect timeout, so the connect-timeout alarm runs while the connections are up: it is
 * also their first keep-alive check. With the clock, the connections keep no keep-alive alarm
 * (and their broker a 60 s grain besides), so a close within the exact bound there is the clock's.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { RawClient } from "../helpers/raw";
import { collect, connect, end, pingRoundTrip, sleep, subscribe, uid, waitFor } from "../helpers/mqtt";
import { monitor } from "../helpers/monitor";
import { TEST_VARS, startBroker, stopBroker, type Broker } from "../helpers/broker";

const CONNECT_TIMEOUT_SECONDS = 2;
const KEEPALIVE = 2;
/** Slack for a loaded machine on top of each bound (the broker's clock against ours, routing the will). */
const MARGIN_MS = 5_000;

const settings = [
  { name: "exact (KEEPALIVE_CHECK_SECONDS=0)", checkSeconds: 0, clock: "alarm", lateMs: 0 },
  { name: "coarse (KEEPALIVE_CHECK_SECONDS=4)", checkSeconds: 4, clock: "alarm", lateMs: 4_000 },
  // The clock checks at the start of the second after a deadline.
  { name: "shared clock (KEEPALIVE_CLOCK=shared, KEEPALIVE_CHECK_SECONDS=60)", checkSeconds: 60, clock: "shared", lateMs: 1_000 },
];

describe.each(settings)("keep alive, $name", ({ checkSeconds, clock, lateMs }) => {
  let broker: Broker;
  /** README: closed 1.5 × keep alive + 1 s after the last packet, plus up to one grain (the clock: up to a second). */
  const boundMs = KEEPALIVE * 1500 + 1000 + lateMs;

  beforeAll(async () => {
    broker = await startBroker({
      vars: {
        ...TEST_VARS,
        KEEPALIVE_CHECK_SECONDS: String(checkSeconds),
        KEEPALIVE_CLOCK: clock,
        CONNECT_TIMEOUT_SECONDS: String(CONNECT_TIMEOUT_SECONDS),
      },
    });
  });

  afterAll(async () => {
    if (broker) await stopBroker(broker);
  });

  const mon = (clientId: string) => monitor(TEST_VARS.ANONYMOUS_ACCOUNT, { url: broker.url, filter: `$SYS/mon/${clientId}`, mqtt: { keepalive: 0 } });

  it("a silent client is closed (Disconnect 160) and its will published within the bound; one that keeps talking is not", async () => {
    const topic = `ka/${uid()}`;
    const watcher = await connect({ clientId: uid("watch"), keepalive: 0 }, broker.wsUrl);
    const got = collect(watcher);
    await subscribe(watcher, topic, 1);
    const silentId = uid("silent");
    const talkerId = uid("talker");
    const monitorSilent = await mon(silentId);
    const monitorTalker = await mon(talkerId);

    const silent = await RawClient.open(broker.wsUrl);
    await silent.connect(silentId, { keepalive: KEEPALIVE, will: { topic, payload: Buffer.from("silent gone"), qos: 1, retain: false } });
    const talker = await RawClient.open(broker.wsUrl);
    await talker.connect(talkerId, { keepalive: KEEPALIVE, will: { topic, payload: Buffer.from("talker gone"), qos: 1, retain: false } });
    expect(await monitorSilent.waitEvent(silentId, "Connect")).toMatchObject({ Action: "Connect", CloseCode: 0 });

    // The talker sends a PINGREQ every half keep alive (within the period, as [MQTT-3.1.2-23] asks,
    // whatever the round trip on a loaded machine) while the silent one says nothing.
    let talking = true;
    const talk = (async () => {
      while (talking) {
        talker.send({ cmd: "pingreq" });
        await sleep(KEEPALIVE * 500);
      }
    })();

    const closed = await silent.waitClosed(boundMs + MARGIN_MS);
    expect(closed.code).toBeGreaterThanOrEqual(1000);
    await waitFor(() => got.some((m) => m.payload === "silent gone"), "the silent client's will", MARGIN_MS);
    expect(await monitorSilent.waitEvent(silentId, "Disconnect")).toMatchObject({ CloseCode: 160, Reason: "keep alive timeout" });

    // Two more bounds of talking: never cut, no will.
    await sleep(2 * boundMs);
    talking = false;
    await talk;
    expect(talker.closed).toBeNull();
    await talker.pingRoundTrip();
    talker.send({ cmd: "disconnect" });
    await talker.waitClosed();
    expect(await monitorTalker.waitEvent(talkerId, "Disconnect")).toMatchObject({ CloseCode: 0 });
    await pingRoundTrip(watcher);
    expect(got.map((m) => m.payload)).toEqual(["silent gone"]);
    await end(watcher, monitorSilent.client, monitorTalker.client);
  }, 60_000);

  it("a client that talks only with PUBLISH is never cut", async () => {
    const id = uid("pub");
    const raw = await RawClient.open(broker.wsUrl);
    await raw.connect(id, { keepalive: KEEPALIVE });
    // A QoS 1 PUBLISH every half keep alive, its PUBACK awaited only at the end.
    const count = Math.ceil((2 * boundMs) / (KEEPALIVE * 500));
    for (let i = 0; i < count; i++) {
      raw.send({ cmd: "publish", topic: `ka/pub/${id}`, payload: Buffer.from(String(i)), qos: 1, messageId: i + 1, dup: false, retain: false });
      await sleep(KEEPALIVE * 500);
    }
    for (let i = 0; i < count; i++) await raw.next("puback");
    expect(raw.closed).toBeNull();
    raw.close();
  }, 60_000);

  it("a socket that sends no CONNECT is closed at the connect timeout; a connected client outlives it", async () => {
    const idle = await RawClient.open(broker.wsUrl);
    // The connect-timeout alarm of a connected socket with keep alive off becomes its liveness check.
    const id = uid("noka");
    const monitorNoKa = await mon(id);
    const connected = await RawClient.open(broker.wsUrl);
    await connected.connect(id, { keepalive: 0 });
    // Closed by the alarm at the connect timeout; workerd (local) delivers the close of a socket
    // that never sent a byte only about 10 s later (one that sent a partial packet gets it at once).
    await idle.waitClosed(CONNECT_TIMEOUT_SECONDS * 1000 + 15_000 + MARGIN_MS);
    await sleep(CONNECT_TIMEOUT_SECONDS * 1000);
    await connected.pingRoundTrip();
    expect(connected.closed).toBeNull();
    // The Connect event stays retained while the client is connected.
    const late = await mon(id);
    await waitFor(() => late.got.some((m) => m.retain && JSON.parse(m.payload).Action === "Connect"), "the retained Connect event");
    connected.close();
    expect(await monitorNoKa.waitEvent(id, "Disconnect")).toMatchObject({ CloseCode: 91 });
    await end(monitorNoKa.client, late.client);
  }, 60_000);
});
