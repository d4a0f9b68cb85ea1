/** A raw MQTT 3.1.1 client over the Worker's WebSocket endpoint (SELF), for the worker tests. */
import { SELF } from "cloudflare:test";
import mqttPacket, { type Packet } from "mqtt-packet";
// Built by hand (test/helpers/bytes.ts): the pre-bundled mqtt-packet does not recognise workerd's Buffer as a password.
import { connect, utf8 } from "../helpers/bytes";

export interface RawConnection {
  /** The CONNACK return code. */
  returnCode: number;
  /** Resolves with the WebSocket close code. */
  closed: Promise<number>;
  ws: WebSocket;
  /** The next packet of type `cmd` the broker sends (packets of other types are skipped). */
  next(cmd: Packet["cmd"], what?: string): Promise<Packet>;
}

/** Opens a WebSocket to /mqtt and sends CONNECT; resolves once CONNACK arrived. `clean: false` resumes or creates a persistent session. */
export async function connectRaw(clientId: string, username: string, password: string, opts: { clean?: boolean } = {}): Promise<RawConnection> {
  const res = await SELF.fetch("http://broker/mqtt", { headers: { Upgrade: "websocket", "Sec-WebSocket-Protocol": "mqtt" } });
  const ws = res.webSocket;
  if (!ws) throw new Error(`no WebSocket (${res.status})`);
  ws.accept();
  ws.binaryType = "arraybuffer";
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const received: Packet[] = [];
  const waiters: Array<{ cmd: Packet["cmd"]; resolve: (p: Packet) => void }> = [];
  parser.on("packet", (p: Packet) => {
    const i = waiters.findIndex((w) => w.cmd === p.cmd);
    const waiter = i < 0 ? undefined : waiters.splice(i, 1)[0];
    if (waiter) waiter.resolve(p);
    else received.push(p);
  });
  const next = (cmd: Packet["cmd"], what = `no ${cmd}`): Promise<Packet> => {
    const i = received.findIndex((p) => p.cmd === cmd);
    const queued = i < 0 ? undefined : received.splice(i, 1)[0];
    if (queued) return Promise.resolve(queued);
    return within(new Promise<Packet>((resolve) => waiters.push({ cmd, resolve })), 5_000, what);
  };
  const closed = new Promise<number>((resolve) => ws.addEventListener("close", (e) => resolve(e.code)));
  ws.addEventListener("message", (e) => {
    if (e.data instanceof ArrayBuffer) parser.parse(Buffer.from(e.data));
  });
  const flags = 0xc0 | (opts.clean === false ? 0 : 0x02);
  ws.send(connect({ clientId, username, password: utf8(password), flags }));
  const connack = await next("connack", "no CONNACK");
  return { returnCode: connack.cmd === "connack" ? (connack.returnCode ?? -1) : -1, closed, ws, next };
}

/** A device's connection: client id = user name = device id. */
export function connectDevice(deviceId: string, password: string, opts: { clean?: boolean } = {}): Promise<RawConnection> {
  return connectRaw(deviceId, deviceId, password, opts);
}

/** `p`, or a rejection naming what did not happen within `ms`. */
export function within<T>(p: Promise<T>, ms = 5_000, what = "timed out"): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(what)), ms))]);
}

/** Polls `read` until `done` holds for its value, or fails naming `what` after `ms`. */
export async function eventually<T>(read: () => Promise<T>, done: (v: T) => boolean, what: string, ms = 5_000): Promise<T> {
  const loop = async (): Promise<T> => {
    for (;;) {
      const v = await read();
      if (done(v)) return v;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  return within(loop(), ms, what);
}
