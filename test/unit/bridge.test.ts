// The TCP/TLS bridge (bridge/) against an in-process WebSocket server standing in for the broker.
import { describe, it, expect, afterEach } from "vitest";
import net from "node:net";
import type { IncomingMessage } from "node:http";
import { WebSocketServer, WebSocket } from "ws";
import type { Packet } from "mqtt-packet";
import { PacketCutter, PacketError, describeConnect } from "../../bridge/packets.mjs";
import { Bridge, type Connection } from "../../bridge/bridge.mjs";
import { parseConfig, parseListen, ConfigError } from "../../bridge/config.mjs";
import { mulberry32 } from "../helpers/random";
import { encode } from "../helpers/bytes";

const gen = (p: Packet, protocolVersion: 4 | 5 = 4): Buffer => Buffer.from(encode(p, protocolVersion));
const connectPacket = (clientId = "dev-1", protocolVersion: 4 | 5 = 4): Buffer =>
  gen({ cmd: "connect", protocolId: "MQTT", protocolVersion, clean: true, keepalive: 30, clientId }, protocolVersion);
const publish = (topic: string, payload: Buffer | string, messageId?: number): Buffer =>
  gen({ cmd: "publish", topic, payload, qos: messageId ? 1 : 0, dup: false, retain: false, ...(messageId ? { messageId } : {}) } as Packet);

async function waitFor(pred: () => boolean, what: string, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
/** Same packets, byte for byte (cheap: vitest's deep equality walks Buffers element by element). */
function samePackets(got: Buffer[], want: Buffer[]): boolean {
  return got.length === want.length && got.every((g, i) => g.equals(want[i] as Buffer));
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("PacketCutter", () => {
  const packets = [
    connectPacket(),
    publish("a/b", Buffer.alloc(200, 7), 1), // 2-byte remaining length
    gen({ cmd: "pingreq" }), // remaining length 0
    publish("big", Buffer.alloc(20_000, 9)), // 3-byte remaining length
    publish("c", "x"),
  ];
  const stream = Buffer.concat(packets);

  it("returns whole packets for every split of the stream into two chunks", () => {
    for (let i = 0; i <= stream.length; i++) {
      const c = new PacketCutter(1 << 20);
      const got = [...c.push(stream.subarray(0, i)), ...c.push(stream.subarray(i))];
      if (!samePackets(got, packets) || c.pending !== 0) expect.fail(`split at byte ${i}: wrong packets`);
    }
  });

  it("returns whole packets when fed one byte at a time and in random chunks", () => {
    const c = new PacketCutter(1 << 20);
    const got: Buffer[] = [];
    for (let i = 0; i < stream.length; i++) got.push(...c.push(stream.subarray(i, i + 1)));
    expect(samePackets(got, packets)).toBe(true);
    const rnd = mulberry32(11);
    for (let round = 0; round < 50; round++) {
      const cut = new PacketCutter(1 << 20);
      const out: Buffer[] = [];
      for (let pos = 0; pos < stream.length; ) {
        const n = 1 + Math.floor(rnd() * 3000);
        out.push(...cut.push(stream.subarray(pos, pos + n)));
        pos += n;
      }
      expect(samePackets(out, packets)).toBe(true);
    }
  });

  it("refuses a packet over the limit as soon as its remaining length is known, before the body", () => {
    const c = new PacketCutter(1000);
    // PUBLISH claiming 10 MB: the fixed header alone (split over two chunks) is enough to refuse it
    expect(c.push(Buffer.from([0x30, 0x80]))).toEqual([]);
    let err: unknown;
    try {
      c.push(Buffer.from([0x80, 0xe2, 0x04]));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PacketError);
    expect((err as PacketError).code).toBe("too_large");
    expect(c.pending).toBe(5); // only the header was ever held
  });

  it("takes a packet of exactly the limit and refuses one byte more", () => {
    const p = publish("t", Buffer.alloc(100));
    expect(new PacketCutter(p.length).push(p)).toEqual([p]);
    expect(() => new PacketCutter(p.length - 1).push(p)).toThrow(/over the limit/);
  });

  it("refuses a remaining length longer than 4 bytes", () => {
    expect(() => new PacketCutter(1 << 28).push(Buffer.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01]))).toThrow(/longer than 4 bytes/);
  });

  it("reads protocol and client id from CONNECT (3.1.1 and 5)", () => {
    expect(describeConnect(connectPacket("abc"))).toEqual({ protocol: "mqtt4", clientId: "abc" });
    const v5 = gen({ cmd: "connect", protocolId: "MQTT", protocolVersion: 5, clean: true, keepalive: 0, clientId: "v5", properties: { sessionExpiryInterval: 30 } }, 5);
    expect(describeConnect(v5)).toEqual({ protocol: "mqtt5", clientId: "v5" });
    expect(describeConnect(publish("t", "x"))).toBeUndefined();
  });
});

describe("bridge configuration", () => {
  it("reads flags, falls back to environment variables, and flags win", () => {
    const env = { BRIDGE_TO: "wss://env/mqtt", BRIDGE_LISTEN: "127.0.0.1:1884", BRIDGE_MAX_CONNECTIONS: "7", BRIDGE_TOKEN: "t0k" };
    const c = parseConfig(["--to", "ws://flag/mqtt", "--idle-connect-timeout", "2.5", "--max-packet-bytes", "4096"], env);
    expect(c).toMatchObject({ to: "ws://flag/mqtt", host: "127.0.0.1", port: 1884, maxConnections: 7, idleConnectTimeoutMs: 2500, maxPacketBytes: 4096, token: "t0k" });
    expect(parseConfig(["--to", "ws://x/mqtt", "--tls-cert", "c.pem", "--tls-key", "k.pem"], {})).toMatchObject({ host: "0.0.0.0", port: 8883 });
    expect(parseConfig(["--to", "ws://x/mqtt"], {})).toMatchObject({ host: "0.0.0.0", port: 1883 });
    expect(parseListen("[::]:1883")).toEqual({ host: "::", port: 1883 });
    expect(parseListen(":1883")).toEqual({ host: "0.0.0.0", port: 1883 });
    expect(parseConfig(["--help"], {}).help).toBe(true);
  });

  it("rejects mistakes with a ConfigError", () => {
    expect(() => parseConfig([], {})).toThrow(ConfigError);
    expect(() => parseConfig(["--to", "http://x/mqtt"], {})).toThrow(/ws:\/\/ or wss:\/\//);
    expect(() => parseConfig(["--to", "ws://x", "--tls-cert", "c.pem"], {})).toThrow(/go together/);
    expect(() => parseConfig(["--to", "ws://x", "--max-connections", "0"], {})).toThrow(ConfigError);
    expect(() => parseConfig(["--to", "ws://x", "--bogus"], {})).toThrow(ConfigError);
    expect(() => parseConfig(["--to", "ws://x", "--listen", "host:port"], {})).toThrow(ConfigError);
  });
});

// ---- the bridge between a TCP client and an in-process WebSocket server ----

interface Upstream {
  ws: WebSocket;
  req: IncomingMessage;
  frames: Buffer[];
  closed: { code: number; reason: string } | null;
}

interface Rig {
  bridge: Bridge;
  port: number;
  upstreams: Upstream[];
  logs: Record<string, unknown>[];
  wss: WebSocketServer;
}

const rigs: Rig[] = [];
const sockets: net.Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  for (const r of rigs.splice(0)) {
    await r.bridge.close(200);
    for (const u of r.upstreams) u.ws.terminate();
    await new Promise((ok) => r.wss.close(() => ok(undefined)));
  }
});

async function rig(opts: Partial<ConstructorParameters<typeof Bridge>[0]> = {}): Promise<Rig> {
  const wss = new WebSocketServer({ port: 0, host: "127.0.0.1", handleProtocols: (p) => (p.has("mqtt") ? "mqtt" : false) });
  await new Promise((ok) => wss.once("listening", ok));
  const upstreams: Upstream[] = [];
  wss.on("connection", (ws, req) => {
    const u: Upstream = { ws, req, frames: [], closed: null };
    ws.on("message", (d: Buffer) => u.frames.push(d));
    ws.on("close", (code, reason) => (u.closed = { code, reason: reason.toString() }));
    upstreams.push(u);
  });
  const logs: Record<string, unknown>[] = [];
  const wsPort = (wss.address() as net.AddressInfo).port;
  const bridge = new Bridge({ to: `ws://127.0.0.1:${wsPort}/mqtt`, log: (r) => logs.push(r), ...opts });
  const { port } = await bridge.listen(0, "127.0.0.1");
  const r = { bridge, port, upstreams, logs, wss };
  rigs.push(r);
  return r;
}

interface Device {
  socket: net.Socket;
  received: () => Buffer;
  ended: () => boolean;
  closed: () => boolean;
}

async function device(port: number, { paused = false } = {}): Promise<Device> {
  const socket = net.connect({ port, host: "127.0.0.1" });
  sockets.push(socket);
  await new Promise((ok, fail) => socket.once("connect", ok).once("error", fail));
  const chunks: Buffer[] = [];
  let ended = false;
  let closed = false;
  socket.on("error", () => undefined);
  socket.on("end", () => (ended = true));
  socket.on("close", () => (closed = true));
  socket.on("data", (d: Buffer) => chunks.push(d));
  if (paused) socket.pause();
  return { socket, received: () => Buffer.concat(chunks), ended: () => ended, closed: () => closed };
}

const onlyConnection = (r: Rig): Connection => {
  const [c] = [...r.bridge.connections];
  if (!c) throw new Error("no bridge connection");
  return c;
};

describe("bridge", () => {
  it("sends one MQTT packet per WebSocket frame, with the token and device address on the upgrade", async () => {
    const r = await rig({ token: "s3cret" });
    const d = await device(r.port);
    const first = [connectPacket("dev-1"), publish("a", "1"), publish("b", Buffer.alloc(300, 1), 5)];
    d.socket.write(Buffer.concat(first)); // three packets in one TCP write
    const slow = publish("c", Buffer.alloc(1000, 2));
    for (const byte of slow) {
      d.socket.write(Buffer.from([byte])); // one packet dribbled a byte at a time
      if (byte % 97 === 0) await sleep(1);
    }
    await waitFor(() => r.upstreams[0]?.frames.length === 4, "4 frames");
    const u = r.upstreams[0] as Upstream;
    expect(samePackets(u.frames, [...first, slow])).toBe(true);
    expect(u.ws.protocol).toBe("mqtt");
    expect(u.req.headers["x-bridge-token"]).toBe("s3cret");
    expect(u.req.headers["x-bridge-client-addr"]).toBe("127.0.0.1");

    // broker → device: bytes unchanged, whatever the framing
    const connack = gen({ cmd: "connack", returnCode: 0, sessionPresent: false });
    const puback = gen({ cmd: "puback", messageId: 5 });
    u.ws.send(Buffer.concat([connack, puback.subarray(0, 2)]));
    u.ws.send(puback.subarray(2));
    await waitFor(() => d.received().length === connack.length + puback.length, "CONNACK and PUBACK");
    expect(d.received()).toEqual(Buffer.concat([connack, puback]));
  });

  it("sends no bridge headers without a token, and opens no WebSocket before CONNECT", async () => {
    const r = await rig();
    const d = await device(r.port);
    await sleep(100);
    expect(r.upstreams).toHaveLength(0);
    d.socket.write(connectPacket());
    await waitFor(() => r.upstreams.length === 1, "the upgrade");
    const h = (r.upstreams[0] as Upstream).req.headers;
    expect(h["x-bridge-token"]).toBeUndefined();
    expect(h["x-bridge-client-addr"]).toBeUndefined();
  });

  it("closes a connection whose packet is over --max-packet-bytes before buffering it", async () => {
    const r = await rig({ maxPacketBytes: 1024 });
    const d = await device(r.port);
    d.socket.write(connectPacket());
    await waitFor(() => r.upstreams[0]?.frames.length === 1, "CONNECT");
    // a PUBLISH announcing 100 MB, with the first bytes of its body: the bridge must not wait for the rest
    d.socket.write(Buffer.concat([Buffer.from([0x30, 0x80, 0x80, 0x80, 0x30]), Buffer.alloc(100, 1)]));
    await waitFor(() => d.closed(), "the device socket to close");
    await waitFor(() => (r.upstreams[0] as Upstream).closed !== null, "the WebSocket to close");
    expect((r.upstreams[0] as Upstream).closed?.code).toBe(1009);
    expect((r.upstreams[0] as Upstream).frames).toHaveLength(1); // nothing of the big packet went up
    await waitFor(() => r.logs.length === 1, "the log line");
    expect(String(r.logs[0]?.reason)).toMatch(/^packet_too_large/);
  });

  it("closes a device that sends no CONNECT within the idle timeout, without opening a WebSocket", async () => {
    const r = await rig({ idleConnectTimeoutMs: 150 });
    const d = await device(r.port);
    d.socket.write(connectPacket().subarray(0, 5)); // part of a CONNECT does not count
    const t0 = Date.now();
    await waitFor(() => d.closed(), "the idle device to be closed", 3_000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
    expect(r.upstreams).toHaveLength(0);
    await waitFor(() => r.logs.length === 1, "the log line");
    expect(r.logs[0]).toMatchObject({ event: "connection", reason: "idle_timeout", bytesIn: 0 });
  });

  it("closes a device whose first packet is not CONNECT", async () => {
    const r = await rig();
    const d = await device(r.port);
    d.socket.write(publish("t", "x"));
    await waitFor(() => d.closed(), "the device to be closed");
    expect(r.upstreams).toHaveLength(0);
  });

  it("maps a device FIN to a WebSocket close without DISCONNECT, and logs bytes both ways", async () => {
    const r = await rig();
    const d = await device(r.port);
    d.socket.write(connectPacket("fin"));
    await waitFor(() => r.upstreams[0]?.frames.length === 1, "CONNECT");
    (r.upstreams[0] as Upstream).ws.send(gen({ cmd: "connack", returnCode: 0, sessionPresent: false }));
    await waitFor(() => d.received().length === 4, "CONNACK");
    d.socket.end();
    await waitFor(() => (r.upstreams[0] as Upstream).closed !== null, "the WebSocket close");
    expect((r.upstreams[0] as Upstream).closed?.code).toBe(1000);
    expect((r.upstreams[0] as Upstream).frames).toHaveLength(1); // no DISCONNECT was made up
    await waitFor(() => d.closed(), "the device socket to close");
    await waitFor(() => r.logs.length === 1, "the log line");
    expect(r.logs[0]).toMatchObject({
      event: "connection",
      remote: expect.stringMatching(/^127\.0\.0\.1:\d+$/),
      clientId: "fin",
      protocol: "mqtt4",
      bytesIn: connectPacket("fin").length,
      bytesOut: 4,
      packetsIn: 1,
      reason: "device_end",
      wsCloseCode: 1000,
    });
  });

  it("maps a device reset to a WebSocket close", async () => {
    const r = await rig();
    const d = await device(r.port);
    d.socket.write(connectPacket("rst"));
    await waitFor(() => r.upstreams[0]?.frames.length === 1, "CONNECT");
    d.socket.resetAndDestroy();
    await waitFor(() => (r.upstreams[0] as Upstream).closed !== null, "the WebSocket close");
    expect((r.upstreams[0] as Upstream).frames).toHaveLength(1);
    await waitFor(() => r.logs.length === 1, "the log line");
    expect(String(r.logs[0]?.reason)).toMatch(/^device_error: ECONNRESET|^device_closed/);
  });

  it("ends the device socket when the WebSocket closes, after the bytes before the close", async () => {
    const r = await rig();
    const d = await device(r.port);
    d.socket.write(connectPacket());
    await waitFor(() => r.upstreams.length === 1, "the upgrade");
    const u = r.upstreams[0] as Upstream;
    const connack = gen({ cmd: "connack", returnCode: 5, sessionPresent: false });
    u.ws.send(connack);
    u.ws.close(1000);
    await waitFor(() => d.ended(), "the device socket to end");
    expect(d.received()).toEqual(connack);
    await waitFor(() => r.logs.length === 1, "the log line");
    expect(r.logs[0]).toMatchObject({ reason: "broker_closed: 1000" });
  });

  it("refuses connections over --max-connections", async () => {
    const r = await rig({ maxConnections: 1 });
    const a = await device(r.port);
    a.socket.write(connectPacket("a"));
    await waitFor(() => r.upstreams.length === 1, "the first upgrade");
    const b = await device(r.port);
    await waitFor(() => b.closed(), "the second connection to be refused");
    expect(a.closed()).toBe(false);
    expect(r.logs).toContainEqual(expect.objectContaining({ event: "connection", reason: "max_connections" }));
  });

  it("stops gracefully: refuses new devices, closes WebSockets with 1001, then ends device sockets", async () => {
    const r = await rig();
    const d = await device(r.port);
    d.socket.write(connectPacket());
    // The CONNECT forwarded: the bridge's WebSocket is open (the server side sees an upgrade
    // before the bridge's side has opened, and a WebSocket still connecting is cut, not closed).
    await waitFor(() => ((r.upstreams[0] as Upstream | undefined)?.frames.length ?? 0) >= 1, "the CONNECT at the broker");
    // A grace far above the close handshake's time: a loaded machine must not turn it into a forced close (1006).
    const closing = r.bridge.close(60_000);
    await closing;
    expect((r.upstreams[0] as Upstream).closed?.code).toBe(1001);
    await waitFor(() => d.ended(), "the device socket to end");
    expect(r.logs).toContainEqual(expect.objectContaining({ reason: "bridge_shutdown" }));
    await expect(device(r.port)).rejects.toThrow(/ECONNREFUSED/);
  });

  it("pauses the device socket while the WebSocket is slow, and loses nothing", async () => {
    const highWaterMark = 256 * 1024;
    const r = await rig({ highWaterMark });
    r.wss.on("connection", (ws) => ws.once("message", () => ws.pause())); // the broker stops reading after CONNECT
    const d = await device(r.port);
    d.socket.write(connectPacket());
    await waitFor(() => r.upstreams.length === 1, "the upgrade");
    const payload = 16 * 1024;
    const count = 1536; // 24 MiB: more than the kernel buffers on both hops can hold
    const sent: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      const body = Buffer.alloc(payload, i & 0xff);
      body.writeUInt32BE(i, 0);
      sent.push(publish("bp", body));
    }
    const total = sent.reduce((n, p) => n + p.length, 0);
    d.socket.write(Buffer.concat(sent));
    const conn = onlyConnection(r);
    await waitFor(() => conn.pausedForWs, "the bridge to pause the device socket");
    await sleep(200);
    const forwarded = conn.bytesIn;
    await sleep(200);
    expect(conn.bytesIn).toBe(forwarded); // nothing more read while the WebSocket is stuck
    expect(conn.pausedForWs).toBe(true);
    expect(conn.wsQueued).toBeLessThanOrEqual(highWaterMark + 128 * 1024);
    expect(forwarded).toBeLessThan(total / 2);
    expect(d.socket.writableLength).toBeGreaterThan(0); // the device sees the backpressure

    const u = r.upstreams[0] as Upstream;
    u.ws.resume();
    await waitFor(() => u.frames.length === count + 1, "every packet", 15_000);
    expect(u.frames.slice(1).every((f, i) => f.equals(sent[i] as Buffer))).toBe(true);
    expect(conn.pausedForWs).toBe(false);
  });

  it("pauses the WebSocket while the device socket is slow, and loses nothing", async () => {
    const r = await rig();
    const d = await device(r.port, { paused: true });
    d.socket.write(connectPacket());
    await waitFor(() => r.upstreams.length === 1, "the upgrade");
    const u = r.upstreams[0] as Upstream;
    const frame = 64 * 1024;
    const count = 384; // 24 MiB
    for (let i = 0; i < count; i++) u.ws.send(Buffer.alloc(frame, i & 0xff));
    const conn = onlyConnection(r);
    await waitFor(() => conn.wsPausedForTcp, "the bridge to pause the WebSocket");
    await sleep(200);
    const out = conn.bytesOut;
    await sleep(200);
    expect(conn.bytesOut).toBe(out);
    expect(conn.socket.writableLength).toBeLessThan(1024 * 1024);
    expect(u.ws.bufferedAmount).toBeGreaterThan(0); // the broker side sees the backpressure

    d.socket.resume();
    await waitFor(() => d.received().length === frame * count, "every byte", 15_000);
    const got = d.received();
    for (let i = 0; i < count; i++) expect(got[i * frame]).toBe(i & 0xff);
  });
});
