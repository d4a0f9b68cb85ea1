// A lean MQTT 3.1.1 client for the load generator, over WebSocket (raw `ws`, one MQTT packet
// per WebSocket frame) or over plain TCP (`mqtt://host:port`, a net.Socket, one write per
// packet): packets built with mqtt-packet, and an incremental framer that
// cuts packets out of the byte stream whatever the frame boundaries (a peer may split one
// packet over several frames or put several packets in one), decoding only what the bench
// needs. Callbacks, not promises, on the per-message paths.
import net from "node:net";
import mqttPacket from "mqtt-packet";
import WebSocket from "ws";

const { generate } = mqttPacket;

const CONNACK = 2;
const PUBLISH = 3;
const PUBACK = 4;
const PUBREC = 5;
const SUBACK = 9;
const UNSUBACK = 11;
const PINGRESP = 13;

/**
 * Cuts MQTT packets out of a byte stream. push() takes any chunk; onPacket(type, flags,
 * body) gets each complete packet (body = the bytes after the fixed header, a view that is
 * only valid during the call).
 */
export class Framer {
  /** @param {(type: number, flags: number, body: Buffer) => void} onPacket */
  constructor(onPacket) {
    this.onPacket = onPacket;
    /** @type {Buffer | null} */
    this.pending = null;
  }

  /** @param {Buffer} chunk */
  push(chunk) {
    let buf = this.pending ? Buffer.concat([this.pending, chunk]) : chunk;
    this.pending = null;
    let off = 0;
    const n = buf.length;
    while (n - off >= 2) {
      // Remaining length: 1 to 4 bytes, 7 bits each [MQTT-2.2.3].
      let len = 0;
      let mul = 1;
      let i = off + 1;
      let complete = false;
      for (; i < n && i < off + 5; i++) {
        const b = buf[i];
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
      }
      if (!complete) {
        if (i >= off + 5) throw new Error("malformed remaining length");
        break; // header split across chunks
      }
      const start = i + 1;
      const end = start + len;
      if (end > n) break; // body split across chunks
      const b0 = buf[off];
      this.onPacket(b0 >> 4, b0 & 0x0f, buf.subarray(start, end));
      off = end;
    }
    if (off < n) this.pending = Buffer.from(buf.subarray(off)); // copy: the chunk is not ours to keep
  }
}

/** A PUBLISH's bytes, built once per call (faster than generate() on the hot path, same bytes). */
export function publishBytes(topic, payload, qos, pid, retain = false) {
  const topicLen = Buffer.byteLength(topic);
  const remaining = 2 + topicLen + (qos > 0 ? 2 : 0) + payload.length;
  let lenBytes = 1;
  for (let r = remaining; r >= 128; r = Math.floor(r / 128)) lenBytes++;
  const out = Buffer.allocUnsafe(1 + lenBytes + remaining);
  out[0] = 0x30 | (qos << 1) | (retain ? 1 : 0);
  let o = 1;
  let r = remaining;
  do {
    let b = r % 128;
    r = Math.floor(r / 128);
    if (r > 0) b |= 0x80;
    out[o++] = b;
  } while (r > 0);
  out.writeUInt16BE(topicLen, o);
  o += 2;
  o += out.write(topic, o);
  if (qos > 0) {
    out.writeUInt16BE(pid, o);
    o += 2;
  }
  payload.copy(out, o);
  return out;
}

export const PINGREQ_BYTES = Buffer.from([0xc0, 0x00]);
const DISCONNECT_BYTES = Buffer.from([0xe0, 0x00]);

/** Payload of a bench message: 8 bytes of send time (performance.now(), ms) + padding. */
export function stampedPayload(size) {
  const p = Buffer.alloc(Math.max(8, size));
  p.writeDoubleBE(performance.now(), 0);
  return p;
}

export function payloadStamp(payload) {
  return payload.length >= 8 ? payload.readDoubleBE(0) : NaN;
}

/**
 * One MQTT connection. Events are plain callback properties:
 * - onMessage(topic, payload, qos, retain) for every PUBLISH received (QoS 1 is acknowledged
 *   automatically unless autoAck is false);
 * - onPuback(pid) for every PUBACK (and PUBREC) received.
 */
export class MqttClient {
  /**
   * Opens the socket and sends CONNECT; resolves with the client once CONNACK 0 arrives.
   * @param {string} url  `ws://…` (WebSocket, subprotocol mqtt) or `mqtt://host:port` (plain TCP)
   * @param {{clientId: string, keepalive?: number, clean?: boolean, timeoutMs?: number, username?: string, password?: string}} opts
   */
  static connect(url, opts) {
    const c = new MqttClient(url, opts);
    return c.ready;
  }

  constructor(url, { clientId, keepalive = 60, clean = true, timeoutMs = 30_000, username, password }) {
    this.clientId = clientId;
    this.onMessage = null;
    this.onPuback = null;
    /** Called once if the socket closes before end() (the server closed it, or it failed). */
    this.onLost = null;
    this.ending = false;
    this.autoAck = true;
    this.received = 0;
    this.nextPid = 1;
    this.closed = false;
    /** ms from socket creation to CONNACK */
    this.connackMs = NaN;
    /** @type {Map<number, (codes: number[]) => void>} */
    this.subWaiters = new Map();
    /** @type {Array<() => void>} */
    this.pingWaiters = [];
    const t0 = performance.now();
    this.framer = new Framer((type, flags, body) => this.onPacket(type, flags, body));
    this.ready = new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`${clientId}: no CONNACK within ${timeoutMs} ms`)), timeoutMs);
      const fail = (err) => {
        clearTimeout(timer);
        this.kill();
        reject(err);
      };
      this.onConnack = (code) => {
        clearTimeout(timer);
        this.connackMs = performance.now() - t0;
        if (code === 0) resolve(this);
        else fail(new Error(`${clientId}: CONNACK ${code}`));
      };
      const onClose = (info) => {
        const wasOpen = !this.closed;
        this.closed = true;
        this.closeInfo = info;
        for (const w of this.pingWaiters.splice(0)) w(); // no PINGRESP will come
        fail(new Error(`${clientId}: socket closed (${this.closeInfo})`));
        if (wasOpen && !this.ending && this.onLost) this.onLost(this);
      };
      const onError = (err) => {
        if (!this.closed) fail(err);
      };
      const credentials = username === undefined ? {} : { username, ...(password === undefined ? {} : { password: Buffer.from(password) }) };
      const connect = generate({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean, clientId, keepalive, ...credentials });
      if (url.startsWith("mqtt://") || url.startsWith("tcp://")) {
        const { hostname, port } = new URL(url);
        const sock = net.connect({ host: hostname, port: Number(port) || 1883, noDelay: true });
        this.sock = sock;
        /** @param {Buffer} b */
        this.send = (b) => void sock.write(b);
        this.closeSocket = () => sock.end();
        sock.on("connect", () => sock.write(connect));
        sock.on("data", (data) => this.framer.push(data));
        sock.on("error", onError);
        sock.on("close", (hadError) => onClose(hadError ? "TCP error" : "TCP closed"));
      } else {
        const ws = new WebSocket(url, "mqtt", { perMessageDeflate: false, skipUTF8Validation: true, handshakeTimeout: timeoutMs });
        this.sock = ws;
        ws.binaryType = "nodebuffer";
        /** @param {Buffer} b */
        this.send = (b) => ws.send(b);
        this.closeSocket = () => ws.close(1000);
        ws.on("open", () => ws.send(connect));
        ws.on("message", (data) => this.framer.push(/** @type {Buffer} */ (data)));
        ws.on("error", onError);
        ws.on("close", (code, reason) => onClose(`${code} ${reason.toString()}`.trim()));
      }
    });
  }

  onPacket(type, flags, body) {
    switch (type) {
      case CONNACK:
        this.onConnack(body[1]);
        return;
      case PUBLISH: {
        const qos = (flags >> 1) & 3;
        const topicLen = body.readUInt16BE(0);
        let o = 2 + topicLen;
        let pid = 0;
        if (qos > 0) {
          pid = body.readUInt16BE(o);
          o += 2;
        }
        this.received++;
        if (qos === 1 && this.autoAck) this.puback(pid);
        if (this.onMessage) this.onMessage(body.toString("utf8", 2, 2 + topicLen), body.subarray(o), qos, (flags & 1) === 1, pid);
        return;
      }
      case PUBACK:
      case PUBREC:
        if (this.onPuback) this.onPuback(body.readUInt16BE(0));
        return;
      case SUBACK: {
        const pid = body.readUInt16BE(0);
        const w = this.subWaiters.get(pid);
        this.subWaiters.delete(pid);
        if (w) w([...body.subarray(2)]);
        return;
      }
      case PINGRESP: {
        const w = this.pingWaiters.shift();
        if (w) w();
        return;
      }
      case UNSUBACK:
      default:
        return;
    }
  }

  pid() {
    const p = this.nextPid;
    this.nextPid = p >= 65535 ? 1 : p + 1;
    return p;
  }

  /** Resolves with the granted codes. */
  subscribe(filter, qos = 0) {
    const messageId = this.pid();
    return new Promise((resolve) => {
      this.subWaiters.set(messageId, resolve);
      this.send(generate({ cmd: "subscribe", messageId, subscriptions: [{ topic: filter, qos }] }));
    });
  }

  /** Sends a PUBLISH; returns its packet id (0 for QoS 0). */
  publish(topic, payload, qos = 0, retain = false) {
    const pid = qos > 0 ? this.pid() : 0;
    this.send(publishBytes(topic, payload, qos, pid, retain));
    return pid;
  }

  puback(pid) {
    const b = Buffer.allocUnsafe(4);
    b[0] = 0x40;
    b[1] = 2;
    b.writeUInt16BE(pid, 2);
    this.send(b);
  }

  /** PINGREQ; resolves on PINGRESP. The broker answers in order, so this is also a barrier. */
  ping() {
    return new Promise((resolve) => {
      this.pingWaiters.push(resolve);
      this.send(PINGREQ_BYTES);
    });
  }

  /** DISCONNECT, then close; resolves when the socket is closed. */
  end() {
    this.ending = true;
    if (this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      this.sock.once("close", () => resolve());
      try {
        this.send(DISCONNECT_BYTES);
        this.closeSocket();
      } catch {
        resolve();
      }
      setTimeout(() => {
        this.kill();
        resolve();
      }, 5000).unref();
    });
  }

  kill() {
    this.closed = true;
    try {
      if (this.sock instanceof net.Socket) this.sock.destroy();
      else this.sock?.terminate();
    } catch {
      // already gone
    }
  }
}
