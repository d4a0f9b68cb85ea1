import mqtt, { type IClientOptions, type MqttClient, type IPublishPacket } from "mqtt";
import type { Packet } from "mqtt-packet";
import { inject } from "vitest";

export interface Received {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
  dup: boolean;
}

let counter = 0;
/** A client id unique to this test run. */
export function uid(prefix = "c"): string {
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${(counter++).toString(36)}`;
}

/**
 * The protocol a test client speaks unless the test says otherwise: `MQTT_VERSION` (the
 * e2e-v3 and e2e-v5 projects run the protocol suites again with 3 and 5), else 3.1.1.
 * Under MQTT 5, clean session = false becomes clean start = false with a session expiry,
 * which is what 3.1.1's persistent session means.
 */
export const DEFAULT_VERSION: 3 | 4 | 5 = process.env.MQTT_VERSION === "5" ? 5 : process.env.MQTT_VERSION === "3" ? 3 : 4;

function versionDefaults(opts: IClientOptions): IClientOptions {
  const version = opts.protocolVersion ?? DEFAULT_VERSION;
  if (version === 3) return { protocolVersion: 3, protocolId: "MQIsdp" };
  if (version === 5 && opts.clean === false && opts.properties?.sessionExpiryInterval === undefined) {
    return { protocolVersion: 5, properties: { ...opts.properties, sessionExpiryInterval: 3600 } };
  }
  return { protocolVersion: version };
}

/** Connects an MQTT.js client over WebSocket and waits for CONNACK (rejects on error/timeout). */
export async function connect(opts: IClientOptions = {}, url = inject("brokerWsUrl")): Promise<MqttClient> {
  return (await connectCollecting(opts, url)).client;
}

/**
 * Connects and starts collecting messages before CONNACK, so messages that follow the
 * CONNACK in the same frame (an offline queue) are not missed.
 */
export function connectCollecting(
  opts: IClientOptions = {},
  url = inject("brokerWsUrl"),
): Promise<{ client: MqttClient; got: Received[]; sessionPresent: boolean }> {
  return new Promise((ok, fail) => {
    const client = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 10_000, ...versionDefaults(opts), ...opts });
    const got = collect(client);
    const timer = setTimeout(() => {
      client.end(true);
      fail(new Error("timed out waiting for CONNACK"));
    }, 15_000);
    client.once("connect", (ack) => {
      clearTimeout(timer);
      ok({ client, got, sessionPresent: ack.sessionPresent });
    });
    client.once("error", (err) => {
      clearTimeout(timer);
      client.end(true);
      fail(err);
    });
  });
}

/** Collects every message a client receives. */
export function collect(client: MqttClient): Received[] {
  const got: Received[] = [];
  client.on("message", (topic: string, payload: Buffer, packet: IPublishPacket) => {
    got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain, dup: packet.dup });
  });
  return got;
}

/** Waits until `predicate` holds, polling; fails with `what` after `ms`. */
export async function waitFor(predicate: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Waits `ms`. Not to show that something did NOT arrive: {@link pingRoundTrip} does that without guessing a time. */
export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * A PINGREQ/PINGRESP round trip on an MQTT.js client, to show that something did NOT arrive:
 * the broker handles a connection's packets in order, so once it answers, every packet it sent
 * on this connection before has arrived. For a message routed from another connection, first
 * make sure the broker routed it (the publisher's PUBACK or PUBCOMP, or the Disconnect event
 * for a will), then call this on the receiver.
 *
 * MQTT.js may have a keep-alive PINGREQ of its own in flight (one at most), whose PINGRESP can
 * come first; so two PINGREQs go out and the second PINGRESP counts.
 */
export function pingRoundTrip(client: MqttClient, ms = 10_000): Promise<void> {
  return new Promise((ok, fail) => {
    let answers = 0;
    const onPacket = (packet: Packet): void => {
      if (packet.cmd !== "pingresp" || ++answers < 2) return;
      done();
      ok();
    };
    const onClose = (): void => {
      done();
      fail(new Error("the connection closed during a PINGREQ round trip"));
    };
    const timer = setTimeout(() => {
      done();
      fail(new Error(`timed out waiting for PINGRESP (${answers} of 2 in ${ms} ms)`));
    }, ms);
    const done = (): void => {
      clearTimeout(timer);
      client.off("packetreceive", onPacket);
      client.off("close", onClose);
    };
    client.on("packetreceive", onPacket);
    client.on("close", onClose);
    client.sendPing();
    client.sendPing();
  });
}

export async function subscribe(client: MqttClient, filter: string | string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
  const granted = await client.subscribeAsync(filter, { qos });
  return granted.map((g) => g.qos);
}

export async function end(...clients: MqttClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)));
}
