// edge-mqtt-broker/local (local/index.mjs): the broker started in this process with Miniflare,
// no wrangler CLI process. Written the way an application's test would use it.
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import mqtt, { type IClientOptions, type IPublishPacket, type MqttClient } from "mqtt";
import { afterAll, describe, expect, it } from "vitest";
import { startLocalBroker, type LocalBroker } from "edge-mqtt-broker/local";

interface Received {
  topic: string;
  payload: string;
  qos: number;
  retain: boolean;
}

/** Connects, collecting messages from before CONNACK on (an offline queue follows the CONNACK at once). */
function open(url: string, opts: IClientOptions): Promise<{ client: MqttClient; got: Received[]; sessionPresent: boolean }> {
  return new Promise((ok, fail) => {
    const client = mqtt.connect(url, { protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 10_000, ...opts });
    const got: Received[] = [];
    client.on("message", (topic: string, payload: Buffer, packet: IPublishPacket) => {
      got.push({ topic, payload: payload.toString(), qos: packet.qos, retain: packet.retain });
    });
    client.once("connect", (ack) => ok({ client, got, sessionPresent: ack.sessionPresent }));
    client.once("error", (err) => {
      client.end(true);
      fail(err);
    });
  });
}

async function until(predicate: () => boolean, what: string): Promise<void> {
  for (let i = 0; !predicate(); i++) {
    if (i > 500) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Workerd processes whose parent is this process (Miniflare spawns one per broker). */
function workerdChildren(): number[] {
  const pids: number[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${name}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile
    }
    // "<pid> (<comm>) <state> <ppid> ..."; comm may contain spaces, so split after the last ")".
    const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    if (ppid === process.pid && comm.startsWith("workerd")) pids.push(Number(name));
  }
  return pids;
}

/** Inodes of the TCP sockets this process is listening on (/proc/self/fd against /proc/net/tcp{,6}). */
function listeningSockets(): Set<string> {
  const listening = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] === "0A" && cols[9] !== undefined) listening.add(cols[9]); // 0A = LISTEN
    }
  }
  const mine = new Set<string>();
  for (const fd of readdirSync("/proc/self/fd")) {
    let target: string;
    try {
      target = readlinkSync(`/proc/self/fd/${fd}`);
    } catch {
      continue;
    }
    const m = /^socket:\[(\d+)\]$/.exec(target);
    if (m?.[1] !== undefined && listening.has(m[1])) mine.add(m[1]);
  }
  return mine;
}

/** Resolves to "refused" or "connected" for a TCP connect to 127.0.0.1:port. */
function probe(port: number): Promise<"refused" | "connected"> {
  return new Promise((ok, fail) => {
    const socket = tcpConnect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      ok("connected");
    });
    socket.once("error", (err: NodeJS.ErrnoException) => (err.code === "ECONNREFUSED" ? ok("refused") : fail(err)));
  });
}

const started: LocalBroker[] = [];
const folders: string[] = [];
afterAll(async () => {
  await Promise.all(started.map((b) => b.stop()));
  for (const f of folders) rmSync(f, { recursive: true, force: true });
});

async function start(options: Parameters<typeof startLocalBroker>[0] = {}): Promise<LocalBroker> {
  const broker = await startLocalBroker(options);
  started.push(broker);
  return broker;
}

describe("startLocalBroker", () => {
  it("serves MQTT.js with a minted token and a provisioned device: QoS 1, retained, the console", async () => {
    const lines: string[] = [];
    const broker = await start({ log: (line) => lines.push(line) });
    expect(broker.url).toBe(`ws://127.0.0.1:${broker.port}/mqtt`);
    expect((await fetch(`${broker.httpUrl}/health`)).status).toBe(200);
    const page = await fetch(`${broker.httpUrl}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("<html");

    const device = await broker.provisionDevice("acme", "pump-7");
    expect(device).toMatchObject({ accountId: "acme", deviceId: "pump-7" });
    const token = await broker.mintToken("acme", "dashboard", { acl: { pub: [], sub: ["xi/blue/v1/acme/#"] } });

    const user = await open(broker.url, { clientId: "dashboard", username: "dashboard", password: token });
    expect(await user.client.subscribeAsync("xi/blue/v1/acme/d/+/temp", { qos: 1 })).toMatchObject([{ qos: 1 }]);
    const pump = await open(broker.url, { clientId: device.deviceId, username: device.deviceId, password: device.password });
    const topic = `xi/blue/v1/acme/d/${device.deviceId}/temp`;
    await pump.client.publishAsync(topic, "21.5", { qos: 1 }); // resolves on PUBACK
    await until(() => user.got.length === 1, "the QoS 1 message");
    expect(user.got[0]).toEqual({ topic, payload: "21.5", qos: 1, retain: false });

    await pump.client.publishAsync(`xi/blue/v1/acme/d/${device.deviceId}/state`, "running", { qos: 1, retain: true });
    const lateToken = await broker.mintToken("acme", "late");
    const late = await open(broker.url, { clientId: "late", username: "late", password: lateToken });
    await late.client.subscribeAsync("xi/blue/v1/acme/d/+/state", { qos: 1 });
    await until(() => late.got.length === 1, "the retained message");
    expect(late.got[0]).toEqual({ topic: `xi/blue/v1/acme/d/${device.deviceId}/state`, payload: "running", qos: 1, retain: true });

    await Promise.all([user.client.endAsync(), pump.client.endAsync(), late.client.endAsync()]);
    await broker.stop();
    // The sink got the Worker's JSON lines.
    expect(lines.some((l) => l.includes('"event"'))).toBe(true);
  });

  it("keeps retained messages, a persistent session's queued QoS 1 message, devices and secrets across a restart on the same persistTo", async () => {
    const persistTo = mkdtempSync(join(tmpdir(), "local-broker-"));
    folders.push(persistTo);
    const first = await start({ persistTo });
    const device = await first.provisionDevice("acme");
    const token = await first.mintToken("acme", "app", { ttlSeconds: 3600 });
    const base = `xi/blue/v1/acme/d/${device.deviceId}`;

    // A persistent session subscribes, then goes offline.
    const app = await open(first.url, { clientId: "app", username: "app", password: token, clean: false });
    await app.client.subscribeAsync(`${base}/queued`, { qos: 1 });
    await app.client.endAsync();

    const pump = await open(first.url, { clientId: device.deviceId, username: device.deviceId, password: device.password });
    await pump.client.publishAsync(`${base}/state`, "on", { qos: 1, retain: true });
    await pump.client.publishAsync(`${base}/queued`, "while-offline", { qos: 1 });
    await pump.client.endAsync();
    await first.stop();

    const second = await start({ persistTo });
    expect(second.adminToken).toBe(first.adminToken);
    // The session's queue, with the token minted before the restart (same JWT_SECRET).
    const back = await open(second.url, { clientId: "app", username: "app", password: token, clean: false });
    expect(back.sessionPresent).toBe(true);
    await until(() => back.got.length === 1, "the queued QoS 1 message");
    expect(back.got[0]).toMatchObject({ topic: `${base}/queued`, payload: "while-offline", qos: 1 });
    // The retained message, to a new subscriber.
    const watcher = await open(second.url, { clientId: "watcher", username: "watcher", password: await second.mintToken("acme", "watcher") });
    await watcher.client.subscribeAsync(`${base}/state`, { qos: 1 });
    await until(() => watcher.got.length === 1, "the retained message");
    expect(watcher.got[0]).toEqual({ topic: `${base}/state`, payload: "on", qos: 1, retain: true });
    // The device, with the password from before the restart (same DEVICE_PEPPER, same D1).
    const again = await open(second.url, { clientId: device.deviceId, username: device.deviceId, password: device.password });
    await Promise.all([back.client.endAsync(), watcher.client.endAsync(), again.client.endAsync()]);
    await second.stop();
  });

  it("stop() leaves no workerd process and no listening port behind", async () => {
    const before = listeningSockets();
    const earlier = new Set(workerdChildren());
    const broker = await start({ vars: { ANONYMOUS_ACCOUNT: "anon" } });
    const children = workerdChildren().filter((pid) => !earlier.has(pid));
    expect(children.length).toBeGreaterThan(0);
    expect(await probe(broker.port)).toBe("connected");
    const anonymous = await open(broker.url, { clientId: "anon-1" });
    await anonymous.client.endAsync();

    await broker.stop();
    expect(await probe(broker.port)).toBe("refused");
    expect(workerdChildren().filter((pid) => !earlier.has(pid))).toEqual([]);
    for (const pid of children) expect(() => readFileSync(`/proc/${pid}/stat`)).toThrow();
    expect(listeningSockets()).toEqual(before);
    await broker.stop(); // a second stop is a no-op
  });
});
