/**
 * Raw MQTT 3.1.1 clients inside workerd (SELF.fetch), with the id of the connection object each
 * upgrade created, for the worker tests that look into that object (its storage, its attachment).
 */
import { SELF, env, listDurableObjectIds, runInDurableObject } from "cloudflare:test";
import mqttPacket, { type IConnectPacket, type Packet } from "mqtt-packet";
import type { Env } from "../../src/env";

const E = env as unknown as Env;

export function encode(packet: Packet): Uint8Array {
  return new Uint8Array(mqttPacket.generate(packet, { protocolVersion: 4 }));
}

/** A raw MQTT client on a WebSocket from SELF.fetch, inside workerd. */
export async function open(): Promise<{ ws: WebSocket; packets: Packet[]; next: (cmd: Packet["cmd"]) => Promise<Packet>; closed: () => boolean }> {
  const res = await SELF.fetch("http://broker/mqtt", { headers: { Upgrade: "websocket", "Sec-WebSocket-Protocol": "mqtt" } });
  const ws = res.webSocket;
  if (!ws) throw new Error(`no WebSocket in the upgrade answer (${res.status})`);
  ws.accept();
  ws.binaryType = "arraybuffer";
  const packets: Packet[] = [];
  let isClosed = false;
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  parser.on("packet", (p: Packet) => packets.push(p));
  ws.addEventListener("message", (e) => {
    if (e.data instanceof ArrayBuffer) parser.parse(Buffer.from(e.data));
  });
  ws.addEventListener("close", () => (isClosed = true));
  const next = async (cmd: Packet["cmd"]): Promise<Packet> => {
    const deadline = Date.now() + 5_000;
    for (;;) {
      const i = packets.findIndex((p) => p.cmd === cmd);
      if (i >= 0) return packets.splice(i, 1)[0] as Packet;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${cmd}`);
      await new Promise((r) => setTimeout(r, 5));
    }
  };
  return { ws, packets, next, closed: () => isClosed };
}

export async function connectionIds(): Promise<Set<string>> {
  return new Set((await listDurableObjectIds(E.CONNECTION)).map((id) => id.toString()));
}

/**
 * Drops a connection object's in-memory state, as hibernation does: the socket attachment
 * and storage stay; the object rebuilds its state and port with the same function its
 * constructor runs after every wake.
 */
export async function simulateWake(id: string): Promise<void> {
  await runInDurableObject(E.CONNECTION.get(E.CONNECTION.idFromString(id)), (instance) => {
    (instance as unknown as { wake(): void }).wake();
  });
}

/** A raw client connected with `clientId` (3.1.1), its CONNACK, and its connection object's id. */
export async function connected(
  clientId: string,
  opts: { clean?: boolean; keepalive?: number; will?: IConnectPacket["will"] } = {},
): Promise<{ c: Awaited<ReturnType<typeof open>>; id: string; connack: Packet }> {
  const before = await connectionIds();
  const c = await open();
  c.ws.send(encode({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: opts.clean ?? true, keepalive: opts.keepalive ?? 60, clientId, ...(opts.will ? { will: opts.will } : {}) }));
  const connack = await c.next("connack");
  const id = [...(await connectionIds())].find((x) => !before.has(x));
  if (!id) throw new Error("connection object not found");
  return { c, id, connack };
}
