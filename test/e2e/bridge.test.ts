// Native MQTT clients through the TCP/TLS bridge (bridge/) into the shared broker: Debian's
// mosquitto_pub/mosquitto_sub over TCP and TLS, MQTT.js over mqtt://, raw sockets for the will.
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { inject } from "vitest";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";
import tls from "node:tls";
import { randomBytes } from "node:crypto";
import mqtt, { type MqttClient } from "mqtt";
import { collect, connect, end, subscribe, uid, waitFor } from "../helpers/mqtt";
import { requireTool, startBridge, type BridgeProcess } from "../helpers/bridge";
import { TEST_VARS } from "../helpers/broker";
import { encode } from "../helpers/bytes";

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion (killed after `ms`). */
function run(cmd: string, args: string[], ms = 15_000): Promise<Run> {
  return new Promise((ok, fail) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const t = setTimeout(() => child.kill("SIGKILL"), ms);
    child.once("error", fail);
    child.once("close", (code) => {
      clearTimeout(t);
      ok({ code, stdout, stderr });
    });
  });
}

/** The payload of the retained marker that tells a mosquitto_sub is subscribed. */
const READY = "mosquitto-sub-ready";
/** The marker topics, cleared after the file. */
const readyTopics: string[] = [];

/**
 * Starts mosquitto_sub and resolves once it is subscribed, so a publish that follows cannot
 * be missed. mosquitto_sub's stdout is a pipe here, so only what it prints before a flush is
 * seen: it flushes after each message, not after its debug lines. So it also subscribes to a
 * topic holding a retained marker (in the same SUBSCRIBE), which arrives once the subscription
 * is in place; its `-C` count is raised by one for it.
 */
async function mosquittoSub(args: string[]): Promise<{ done: Promise<Run>; kill: (sig?: NodeJS.Signals) => void }> {
  const ready = `ready/${uid()}`;
  readyTopics.push(ready);
  const marker = await connect({ clientId: uid("mark") });
  await marker.publishAsync(ready, READY, { qos: 1, retain: true });
  await end(marker);
  const withReady = args.map((a, i) => (args[i - 1] === "-C" ? String(Number(a) + 1) : a));
  const child = spawn("mosquitto_sub", ["-d", ...withReady, "-t", ready], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const done = new Promise<Run>((ok) => child.once("close", (code) => ok({ code, stdout, stderr })));
  const t = setTimeout(() => child.kill("SIGKILL"), 20_000);
  void done.then(() => clearTimeout(t));
  await waitFor(() => stdout.includes(READY) || child.exitCode !== null, "mosquitto_sub's subscription (the retained marker)");
  if (!stdout.includes(READY)) throw new Error(`mosquitto_sub failed:\n${stdout}\n${stderr}`);
  return { done, kill: (sig = "SIGTERM") => child.kill(sig) };
}

/** The message lines of `mosquitto_sub -d` output (debug lines start with "Client " or "Subscribed"; the marker left out). */
const messages = (out: string): string[] =>
  out.split("\n").filter((l) => l !== "" && l !== READY && !l.startsWith("Client ") && !l.startsWith("Subscribed"));

/** A self-signed certificate for localhost and 127.0.0.1. */
function makeCert(dir: string, name: string): { cert: string; key: string } {
  const cert = join(dir, `${name}.crt`);
  const key = join(dir, `${name}.key`);
  const r = spawnSync(
    "openssl",
    ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", `/CN=localhost/O=${name}`, "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", key, "-out", cert],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`openssl failed: ${r.error?.message ?? ""}${r.stderr}`);
  return { cert, key };
}

/** MQTT.js over a native TCP connection through the bridge. */
function tcpClient(port: number, opts: mqtt.IClientOptions = {}): Promise<MqttClient> {
  return connect(opts, `mqtt://127.0.0.1:${port}`);
}

let dir: string;
let certs: { cert: string; key: string };
let plain: BridgeProcess;
let secure: BridgeProcess;

beforeAll(async () => {
  // Missing tools fail every test here with this message; nothing is skipped silently.
  requireTool("mosquitto_pub", ["--help"]);
  requireTool("mosquitto_sub", ["--help"]);
  requireTool("openssl", ["version"]);
  dir = mkdtempSync(join(tmpdir(), "mqtt-bridge-e2e-"));
  certs = makeCert(dir, "first");
  const to = inject("brokerWsUrl");
  [plain, secure] = await Promise.all([
    startBridge(["--listen", "127.0.0.1:0", "--to", to]),
    // the TLS bridge takes its settings from the environment, as in a container
    startBridge([], { BRIDGE_LISTEN: "127.0.0.1:0", BRIDGE_TO: to, BRIDGE_TLS_CERT: certs.cert, BRIDGE_TLS_KEY: certs.key }),
  ]);
});

afterAll(async () => {
  if (readyTopics.length > 0) {
    const cleaner = await connect({ clientId: uid("clean") });
    await Promise.all(readyTopics.map((t) => cleaner.publishAsync(t, "", { qos: 1, retain: true })));
    await end(cleaner);
  }
  await Promise.all([plain?.stop(), secure?.stop()]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("native clients through the bridge", () => {
  it("mosquitto_sub and mosquitto_pub over plain TCP", async () => {
    const topic = `bridge/${uid()}`;
    const sub = await mosquittoSub(["-h", "127.0.0.1", "-p", String(plain.port), "-i", uid("msub"), "-t", topic, "-q", "1", "-C", "1"]);
    const pub = await run("mosquitto_pub", ["-h", "127.0.0.1", "-p", String(plain.port), "-i", uid("mpub"), "-t", topic, "-q", "1", "-m", "hello over tcp"]);
    expect(pub.code, pub.stderr).toBe(0);
    const got = await sub.done;
    expect(got.code).toBe(0);
    expect(messages(got.stdout)).toEqual(["hello over tcp"]);
    // one JSON log line per connection, with the client id and bytes both ways
    await waitFor(() => plain.logs().filter((l) => l.event === "connection").length >= 2, "the bridge's log lines");
    const line = plain.logs().find((l) => l.event === "connection" && String(l.clientId).startsWith("mpub"));
    expect(line).toMatchObject({ protocol: "mqtt4", tls: false, reason: expect.any(String) });
    expect(Number(line?.bytesIn)).toBeGreaterThan(0);
    expect(Number(line?.bytesOut)).toBeGreaterThan(0);
  });

  it("mosquitto_sub and mosquitto_pub over TLS with a generated certificate, reloaded on SIGHUP", async () => {
    const topic = `bridge/${uid()}`;
    const tlsArgs = ["-h", "localhost", "-p", String(secure.port), "--cafile", certs.cert];
    const sub = await mosquittoSub([...tlsArgs, "-i", uid("msub"), "-t", topic, "-q", "1", "-C", "1"]);
    const pub = await run("mosquitto_pub", [...tlsArgs, "-i", uid("mpub"), "-t", topic, "-q", "1", "-m", "hello over tls"]);
    expect(pub.code, pub.stderr).toBe(0);
    expect(messages((await sub.done).stdout)).toEqual(["hello over tls"]);

    // a client that trusts only the first certificate is refused after a reload with a second one
    const second = makeCert(dir, "second");
    writeFileSync(certs.cert, readFileSync(second.cert));
    writeFileSync(certs.key, readFileSync(second.key));
    secure.child.kill("SIGHUP");
    await waitFor(() => secure.logs().some((l) => l.event === "reload"), "the reload log line");
    const peer = await new Promise<tls.PeerCertificate>((ok, fail) => {
      const s = tls.connect({ host: "127.0.0.1", port: secure.port, ca: readFileSync(certs.cert), servername: "localhost" }, () => {
        ok(s.getPeerCertificate());
        s.destroy();
      });
      s.once("error", fail);
    });
    expect(peer.subject.O).toBe("second");
    const again = await run("mosquitto_pub", [...tlsArgs, "-i", uid("mpub"), "-t", topic, "-m", "after reload"]);
    expect(again.code, again.stderr).toBe(0);
  });

  it("MQTT.js over mqtt://, with protocol 4 and protocol 5", async () => {
    for (const protocolVersion of [4, 5] as const) {
      const topic = `bridge/${uid()}`;
      const c = await tcpClient(plain.port, { clientId: uid("js"), protocolVersion });
      const got = collect(c);
      await subscribe(c, topic, 1);
      await c.publishAsync(topic, `round trip v${protocolVersion}`, { qos: 1 });
      await waitFor(() => got.length === 1, "the message back");
      expect(got[0]).toMatchObject({ topic, payload: `round trip v${protocolVersion}`, qos: 1 });
      await end(c);
    }
    const v5line = () => plain.logs().find((l) => l.event === "connection" && l.protocol === "mqtt5");
    await waitFor(() => v5line() !== undefined, "the v5 connection's log line");
  });

  it("carries a 100 KiB publish from mosquitto_pub over TLS to MQTT.js over TCP and over WebSocket, byte for byte", async () => {
    const topic = `bridge/${uid()}`;
    const payload = randomBytes(100 * 1024);
    const file = join(dir, "payload.bin");
    writeFileSync(file, payload);
    const viaTcp = await tcpClient(plain.port, { clientId: uid("bigtcp") });
    const viaWs = await connect({ clientId: uid("bigws") });
    const received: { who: string; payload: Buffer }[] = [];
    viaTcp.on("message", (_t, p: Buffer) => received.push({ who: "tcp", payload: p }));
    viaWs.on("message", (_t, p: Buffer) => received.push({ who: "ws", payload: p }));
    await Promise.all([subscribe(viaTcp, topic, 1), subscribe(viaWs, topic, 1)]);
    // published over TLS (the certificate file holds whatever the bridge serves now)
    const pub = await run("mosquitto_pub", ["-h", "localhost", "-p", String(secure.port), "--cafile", certs.cert, "-i", uid("mpub"), "-t", topic, "-q", "1", "-f", file]);
    expect(pub.code, pub.stderr).toBe(0);
    await waitFor(() => received.length === 2, "the 100 KiB message at both subscribers");
    for (const r of received) expect(r.payload.equals(payload), `${r.who} payload`).toBe(true);
    await end(viaTcp, viaWs);
  });

  it("publishes the will when a device's TCP connection is reset or dropped without DISCONNECT", async () => {
    const topic = `will/${uid()}`;
    const watcher = await connect({ clientId: uid("watch") });
    const got = collect(watcher);
    await subscribe(watcher, topic, 1);

    // 1. a raw device: CONNECT with a will, CONNACK, then a TCP reset
    const id = uid("rst");
    const sock = net.connect({ host: "127.0.0.1", port: plain.port });
    await new Promise((ok, fail) => sock.once("connect", ok).once("error", fail));
    const connack = new Promise<Buffer>((ok) => sock.once("data", ok));
    sock.write(
      encode({
        cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 60, clientId: id,
        will: { topic, payload: Buffer.from("reset"), qos: 1, retain: false },
      }),
    );
    expect([...(await connack)]).toEqual([0x20, 0x02, 0x00, 0x00]);
    sock.resetAndDestroy();
    await waitFor(() => got.length === 1, "the will after a reset");
    expect(got[0]).toMatchObject({ topic, payload: "reset" });
    await waitFor(() => plain.logs().some((l) => l.event === "connection" && l.clientId === id), "the reset connection's log line");

    // 2. mosquitto_sub killed with SIGKILL: the kernel closes its socket, no DISCONNECT
    const victim = await mosquittoSub(["-h", "127.0.0.1", "-p", String(plain.port), "-i", uid("victim"), "-t", `${topic}/x`,
      "--will-topic", topic, "--will-payload", "killed", "--will-qos", "1"]);
    victim.kill("SIGKILL");
    await victim.done;
    await waitFor(() => got.length === 2, "the will after SIGKILL");
    expect(got[1]).toMatchObject({ topic, payload: "killed" });
    await end(watcher);
  });

  it("a TCP client and a WebSocket client exchange messages on one topic", async () => {
    const topic = `chat/${uid()}`;
    const tcp = await tcpClient(plain.port, { clientId: uid("tcp") });
    const ws = await connect({ clientId: uid("ws") });
    const atTcp = collect(tcp);
    const atWs = collect(ws);
    await Promise.all([subscribe(tcp, topic, 1), subscribe(ws, topic, 1)]);
    await tcp.publishAsync(topic, "from tcp", { qos: 1 });
    await ws.publishAsync(topic, "from ws", { qos: 0 });
    await waitFor(() => atTcp.length === 2 && atWs.length === 2, "both messages at both clients");
    for (const got of [atTcp, atWs]) expect(got.map((m) => m.payload).sort()).toEqual(["from tcp", "from ws"]);
    await end(tcp, ws);
  });

  it("SIGTERM stops accepting and closes device connections gracefully (exit 0)", async () => {
    const b = await startBridge(["--listen", "127.0.0.1:0", "--to", inject("brokerWsUrl"), "--shutdown-grace", "5"]);
    try {
      const c = await tcpClient(b.port, { clientId: uid("term") });
      const closed = new Promise<void>((ok) => c.once("close", () => ok()));
      const code = await b.stop(8_000);
      expect(code, b.output()).toBe(0);
      await closed;
      expect(b.logs()).toContainEqual(expect.objectContaining({ event: "connection", reason: "bridge_shutdown", wsCloseCode: 1001 }));
      expect(b.logs().at(-1)).toMatchObject({ event: "stopped" });
      await end(c);
    } finally {
      await b.stop();
    }
  });
});

describe("the device address behind BRIDGE_TOKEN", () => {
  // the shared broker runs with TEST_VARS, BRIDGE_TOKEN included
  const token = TEST_VARS.BRIDGE_TOKEN;

  /** The Protocol of the monitoring Connect event of a client that came through `bridge`. */
  async function protocolThrough(bridge: BridgeProcess, events: { topic: string; payload: string }[]) {
    const id = uid("addr");
    const c = await tcpClient(bridge.port, { clientId: id });
    await waitFor(() => events.some((e) => e.topic === `$SYS/mon/${id}`), "the Connect event");
    await end(c);
    const ev = JSON.parse(events.find((e) => e.topic === `$SYS/mon/${id}`)?.payload ?? "{}") as Record<string, unknown>;
    expect(ev).toMatchObject({ Action: "Connect", ClientID: id, ClientAddr: "127.0.0.1" });
    return ev.Protocol;
  }

  it("is trusted with the right token (Protocol mqtt4), and ignored without it or with a wrong one (mqtt4-ws)", async () => {
    const file = join(dir, "token");
    writeFileSync(file, `${token}\n`);
    const wrong = join(dir, "wrong-token");
    writeFileSync(wrong, "not-the-token\n");
    const bridges = await Promise.all([
      startBridge(["--listen", "127.0.0.1:0", "--to", inject("brokerWsUrl"), "--token-file", file]),
      startBridge(["--listen", "127.0.0.1:0", "--to", inject("brokerWsUrl"), "--token-file", wrong]),
      startBridge(["--listen", "127.0.0.1:0", "--to", inject("brokerWsUrl")]),
    ]);
    const watcher = await connect({ clientId: uid("mon") }, inject("brokerWsUrl"));
    const events: { topic: string; payload: string }[] = [];
    watcher.on("message", (topic, payload: Buffer) => events.push({ topic, payload: payload.toString() }));
    await subscribe(watcher, "$SYS/mon/#", 0);
    try {
      expect(await protocolThrough(bridges[0] as BridgeProcess, events)).toBe("mqtt4");
      expect(await protocolThrough(bridges[1] as BridgeProcess, events)).toBe("mqtt4-ws");
      expect(await protocolThrough(bridges[2] as BridgeProcess, events)).toBe("mqtt4-ws");
    } finally {
      await end(watcher);
      await Promise.all(bridges.map((b) => b.stop()));
    }
  });
});
