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
  ws.send(connect({ clientId, username, password: utf8(password) }));
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
