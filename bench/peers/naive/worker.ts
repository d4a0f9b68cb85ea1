/**
 * The bench's naive peer: an MQTT 3.1.1 broker in the shape issue 20 compares against. Each
 * WebSocket is its own Durable Object (hibernation API); every PUBLISH is one RPC to a single
 * router object, which calls each matching connection once per message. Nothing is stored,
 * nothing is checked (no auth, no ACL, no limits, no retained messages, no will, no sessions),
 * and QoS 1 toward subscribers is sent without keeping the message for a resend. It measures
 * what the platform charges for the calls, not a broker anyone should run.
 */
import { DurableObject } from "cloudflare:workers";

interface Env {
  CONN: DurableObjectNamespace<NaiveConnection>;
  ROUTER: DurableObjectNamespace<NaiveRouter>;
  FLOOR: DurableObjectNamespace<FrameFloor>;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

/** Fixed header and Remaining Length in front of `body`. */
function packet(first: number, body: Uint8Array): Uint8Array {
  const len: number[] = [];
  let n = body.length;
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 128;
    len.push(b);
  } while (n > 0);
  const out = new Uint8Array(1 + len.length + body.length);
  out[0] = first;
  out.set(len, 1);
  out.set(body, 1 + len.length);
  return out;
}

function publishPacket(topic: string, payload: Uint8Array, qos: number, pid: number): Uint8Array {
  const t = enc.encode(topic);
  const at = 2 + t.length; // after the topic: the packet id (QoS > 0), then the payload
  const body = new Uint8Array(at + (qos > 0 ? 2 : 0) + payload.length);
  body[0] = t.length >> 8;
  body[1] = t.length & 255;
  body.set(t, 2);
  if (qos > 0) {
    body[at] = pid >> 8;
    body[at + 1] = pid & 255;
  }
  body.set(payload, qos > 0 ? at + 2 : at);
  return packet(0x30 | (qos << 1), body);
}

function matches(filter: string, topic: string): boolean {
  const f = filter.split("/");
  const t = topic.split("/");
  for (let i = 0; i < f.length; i++) {
    if (f[i] === "#") return true;
    if (i >= t.length) return false;
    if (f[i] !== "+" && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

export class NaiveConnection extends DurableObject<Env> {
  private pid = 0;

  override async fetch(): Promise<Response> {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0], headers: { "Sec-WebSocket-Protocol": "mqtt" } });
  }

  private router(): DurableObjectStub<NaiveRouter> {
    return this.env.ROUTER.get(this.env.ROUTER.idFromName("router"));
  }

  override async webSocketMessage(ws: WebSocket, message: ArrayBuffer | string): Promise<void> {
    if (typeof message === "string") return ws.close(1003, "binary frames only");
    const b = new Uint8Array(message);
    let at = 0;
    // Whole packets per frame, as every client here sends them.
    while (at < b.length) {
      const first = b[at] ?? 0;
      let len = 0;
      let mul = 1;
      let i = at + 1;
      for (;;) {
        const x = b[i++] ?? 0;
        len += (x & 127) * mul;
        mul *= 128;
        if ((x & 128) === 0) break;
      }
      const body = b.subarray(i, i + len);
      at = i + len;
      this.handle(ws, first, body);
    }
  }

  private handle(ws: WebSocket, first: number, body: Uint8Array): void {
    const type = first >> 4;
    if (type === 1) ws.send(new Uint8Array([0x20, 2, 0, 0])); // CONNECT → CONNACK 0
    else if (type === 3) {
      const qos = (first >> 1) & 3;
      const tl = ((body[0] ?? 0) << 8) | (body[1] ?? 0);
      const topic = dec.decode(body.subarray(2, 2 + tl));
      const p = 2 + tl;
      const payload = body.slice(qos > 0 ? p + 2 : p);
      const done = this.router().publish(topic, payload, qos);
      if (qos > 0) {
        const ack = new Uint8Array([0x40, 2, body[p] ?? 0, body[p + 1] ?? 0]);
        void done.then(() => ws.send(ack), () => ws.close(1011, "router failed"));
      } else void done.catch(() => undefined);
    } else if (type === 8) {
      // SUBSCRIBE: packet id, then (filter, options) pairs; every filter granted at the asked QoS.
      const filters: Array<{ filter: string; qos: number }> = [];
      let p = 2;
      while (p < body.length) {
        const fl = ((body[p] ?? 0) << 8) | (body[p + 1] ?? 0);
        filters.push({ filter: dec.decode(body.subarray(p + 2, p + 2 + fl)), qos: Math.min(1, (body[p + 2 + fl] ?? 0) & 3) });
        p += 3 + fl;
      }
      const suback = packet(0x90, new Uint8Array([body[0] ?? 0, body[1] ?? 0, ...filters.map((f) => f.qos)]));
      void this.router()
        .subscribe(this.ctx.id.toString(), filters)
        .then(() => ws.send(suback), () => ws.close(1011, "router failed"));
    } else if (type === 12) ws.send(new Uint8Array([0xd0, 0])); // PINGREQ → PINGRESP
    else if (type === 14) ws.close(1000, "disconnect");
    // PUBACK (4) from a subscriber and anything else: ignored.
  }

  override async webSocketClose(ws: WebSocket): Promise<void> {
    ws.close();
    await this.router().forget(this.ctx.id.toString());
  }

  /** One message from the router, sent at once. */
  async deliver(topic: string, payload: Uint8Array, qos: number): Promise<void> {
    const ws = this.ctx.getWebSockets()[0];
    if (!ws) return;
    this.pid = (this.pid % 65535) + 1;
    ws.send(publishPacket(topic, payload, qos, this.pid));
  }
}

export class NaiveRouter extends DurableObject<Env> {
  private subs = new Map<string, Map<string, number>>();

  async subscribe(conn: string, filters: Array<{ filter: string; qos: number }>): Promise<void> {
    const own = this.subs.get(conn) ?? new Map<string, number>();
    for (const f of filters) own.set(f.filter, f.qos);
    this.subs.set(conn, own);
  }

  async forget(conn: string): Promise<void> {
    this.subs.delete(conn);
  }

  /** One call per message; one `deliver` call per matching connection (at the highest QoS of its matches). */
  async publish(topic: string, payload: Uint8Array, qos: number): Promise<void> {
    const calls: Promise<void>[] = [];
    for (const [conn, filters] of this.subs) {
      let best = -1;
      for (const [filter, q] of filters) if (matches(filter, topic)) best = Math.max(best, q);
      if (best < 0) continue;
      calls.push(this.env.CONN.get(this.env.CONN.idFromString(conn)).deliver(topic, payload, Math.min(qos, best)));
    }
    await Promise.all(calls);
  }
}

/**
 * The bench's `floor` scenario: a hibernatable WebSocket whose handler does nothing with a
 * binary frame (it counts it), and answers a text frame with the count so the sender knows
 * all arrived. What the runtime costs per incoming frame before any broker work.
 */
export class FrameFloor extends DurableObject<Env> {
  private frames = 0;

  override async fetch(): Promise<Response> {
    const pair = new WebSocketPair();
    this.ctx.acceptWebSocket(pair[1]);
    return new Response(null, { status: 101, webSocket: pair[0] });
  }

  override async webSocketMessage(ws: WebSocket, message: ArrayBuffer | string): Promise<void> {
    if (typeof message === "string") ws.send(String(this.frames));
    else this.frames++;
  }
}

export default {
  async fetch(req: Request, env: Env): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === "/health") return new Response("ok");
    if (url.pathname === "/floor" && req.headers.get("Upgrade") === "websocket") return env.FLOOR.get(env.FLOOR.newUniqueId()).fetch(req);
    if (url.pathname !== "/mqtt" || req.headers.get("Upgrade") !== "websocket") return new Response("not found", { status: 404 });
    return env.CONN.get(env.CONN.newUniqueId()).fetch(req);
  },
} satisfies ExportedHandler<Env>;
