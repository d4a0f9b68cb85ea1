/** A raw MQTT 3.1.1 client over the Worker's WebSocket endpoint (SELF), for the worker tests. */
import { SELF } from "cloudflare:test";
import mqttPacket, { type Packet } from "mqtt-packet";

/**
 * MQTT 3.1.1 CONNECT with clean session, user name and password. Written by hand: the
 * pre-bundled mqtt-packet does not recognise workerd's Buffer as a password.
 */
export function connectPacket(clientId: string, username: string, password: string): Uint8Array {
  const str = (s: string): number[] => {
    const b = [...new TextEncoder().encode(s)];
    return [b.length >> 8, b.length & 0xff, ...b];
  };
  const body = [...str("MQTT"), 4, 0x80 | 0x40 | 0x02, 0, 60, ...str(clientId), ...str(username), ...str(password)];
  const length: number[] = [];
  let n = body.length;
  do {
    length.push((n & 0x7f) | (n > 0x7f ? 0x80 : 0));
    n >>= 7;
  } while (n > 0);
  return new Uint8Array([0x10, ...length, ...body]);
}

export interface RawConnection {
  /** The CONNACK return code. */
  returnCode: number;
  /** Resolves with the WebSocket close code. */
  closed: Promise<number>;
  ws: WebSocket;
}

/** Opens a WebSocket to /mqtt and sends CONNECT; resolves once CONNACK arrived. */
export async function connectRaw(clientId: string, username: string, password: string): Promise<RawConnection> {
  const res = await SELF.fetch("http://broker/mqtt", { headers: { Upgrade: "websocket", "Sec-WebSocket-Protocol": "mqtt" } });
  const ws = res.webSocket;
  if (!ws) throw new Error(`no WebSocket (${res.status})`);
  ws.accept();
  ws.binaryType = "arraybuffer";
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const connack = new Promise<number>((resolve) =>
    parser.on("packet", (p: Packet) => {
      if (p.cmd === "connack") resolve(p.returnCode ?? -1);
    }),
  );
  const closed = new Promise<number>((resolve) => ws.addEventListener("close", (e) => resolve(e.code)));
  ws.addEventListener("message", (e) => {
    if (e.data instanceof ArrayBuffer) parser.parse(Buffer.from(e.data));
  });
  ws.send(connectPacket(clientId, username, password));
  const returnCode = await within(connack, 5_000, "no CONNACK");
  return { returnCode, closed, ws };
}

/** A device's connection: client id = user name = device id. */
export function connectDevice(deviceId: string, password: string): Promise<RawConnection> {
  return connectRaw(deviceId, deviceId, password);
}

/** `p`, or a rejection naming what did not happen within `ms`. */
export function within<T>(p: Promise<T>, ms = 5_000, what = "timed out"): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(what)), ms))]);
}
