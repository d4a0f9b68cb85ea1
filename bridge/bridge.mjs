// The TCP/TLS to WebSocket bridge for native MQTT devices (docs/bridge.md).
// One WebSocket (subprotocol `mqtt`) per device connection; device bytes are cut into whole
// MQTT packets and sent one packet per WebSocket frame; broker bytes are written to the
// device unchanged. Plain JavaScript with JSDoc types (checked by `tsc`), so `npx` runs it
// without a build step.
import net from "node:net";
import tls from "node:tls";
import WebSocket from "ws";
import { PacketCutter, PacketError, describeConnect } from "./packets.mjs";

/** Header names the Worker trusts when `x-bridge-token` equals its BRIDGE_TOKEN secret. */
export const TOKEN_HEADER = "x-bridge-token";
export const ADDR_HEADER = "x-bridge-client-addr";

export const DEFAULTS = Object.freeze({
  maxConnections: 10_000,
  idleConnectTimeoutMs: 10_000,
  maxPacketBytes: 262_144,
  /** Bytes sent to a WebSocket and not yet flushed before the device's socket is paused. */
  highWaterMark: 1_048_576,
  /** How long SIGTERM waits for connections to close before cutting them. */
  shutdownGraceMs: 10_000,
  /** How long a WebSocket upgrade may take. */
  handshakeTimeoutMs: 10_000,
});

/**
 * @typedef {object} BridgeOptions
 * @property {string} to              broker URL, `ws://` or `wss://…/mqtt`
 * @property {string} [token]         BRIDGE_TOKEN sent as `x-bridge-token` (with the device address)
 * @property {{ cert: string | Buffer, key: string | Buffer }} [tls] terminate TLS with this certificate
 * @property {number} [maxConnections]
 * @property {number} [idleConnectTimeoutMs] close a device that sends no CONNECT within this
 * @property {number} [maxPacketBytes] largest device packet (fixed header included)
 * @property {number} [highWaterMark]
 * @property {number} [handshakeTimeoutMs]
 * @property {(record: Record<string, unknown>) => void} [log] one call per log line
 */

/** @param {Record<string, unknown>} record */
export function jsonLog(record) {
  process.stdout.write(`${JSON.stringify({ ts: new Date().toISOString(), ...record })}\n`);
}

/**
 * The device's address as the Worker expects it (like `cf-connecting-ip`: no port, IPv4
 * without the `::ffff:` prefix).
 * @param {string | undefined} addr
 */
export function plainAddress(addr) {
  if (!addr) return "";
  return addr.startsWith("::ffff:") && addr.includes(".") ? addr.slice(7) : addr;
}

export class Bridge {
  /** @param {BridgeOptions} options */
  constructor(options) {
    const url = new URL(options.to);
    if (url.protocol !== "ws:" && url.protocol !== "wss:") throw new Error(`--to must be a ws:// or wss:// URL, got ${options.to}`);
    this.to = options.to;
    this.token = options.token;
    this.maxConnections = options.maxConnections ?? DEFAULTS.maxConnections;
    this.idleConnectTimeoutMs = options.idleConnectTimeoutMs ?? DEFAULTS.idleConnectTimeoutMs;
    this.maxPacketBytes = options.maxPacketBytes ?? DEFAULTS.maxPacketBytes;
    this.highWaterMark = options.highWaterMark ?? DEFAULTS.highWaterMark;
    this.handshakeTimeoutMs = options.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs;
    this.log = options.log ?? jsonLog;
    this.tls = options.tls !== undefined;
    /** @type {Set<Connection>} */
    this.connections = new Set();
    this.closing = false;
    /** Totals since start. */
    this.stats = { accepted: 0, rejected: 0, closed: 0 };

    const allowHalfOpen = true;
    /** @type {net.Server} */
    this.server = options.tls
      ? tls.createServer(
          // a TLS handshake gets the same time as the wait for CONNECT (Node's default is 120 s)
          { cert: options.tls.cert, key: options.tls.key, allowHalfOpen, handshakeTimeout: this.idleConnectTimeoutMs || DEFAULTS.idleConnectTimeoutMs },
          (s) => this.accept(s),
        )
      : net.createServer({ allowHalfOpen }, (s) => this.accept(s));
    // The server refuses connections over the bound itself (before any TLS handshake work).
    this.server.maxConnections = this.maxConnections;
    this.server.on("drop", (d) => {
      this.stats.rejected++;
      this.log({ event: "connection", remote: `${plainAddress(d?.remoteAddress)}:${d?.remotePort}`, reason: "max_connections" });
    });
    if (options.tls) {
      this.server.on("tlsClientError", (err, s) => {
        this.stats.rejected++;
        this.log({ event: "connection", remote: `${plainAddress(s.remoteAddress)}:${s.remotePort}`, tls: true, reason: `tls_error: ${err.message}` });
      });
    }
  }

  /**
   * Starts listening; resolves with the bound address.
   * @param {number} port
   * @param {string} [host]
   * @returns {Promise<net.AddressInfo>}
   */
  listen(port, host) {
    return new Promise((ok, fail) => {
      this.server.once("error", fail);
      this.server.listen(port, host, () => {
        this.server.off("error", fail);
        ok(/** @type {net.AddressInfo} */ (this.server.address()));
      });
    });
  }

  /**
   * New TLS certificate and key for the connections that follow (SIGHUP).
   * @param {{ cert: string | Buffer, key: string | Buffer }} creds
   */
  setTls(creds) {
    if (!this.tls) throw new Error("the bridge does not terminate TLS");
    /** @type {tls.Server} */ (this.server).setSecureContext({ cert: creds.cert, key: creds.key });
  }

  /** @param {string | undefined} token */
  setToken(token) {
    this.token = token;
  }

  /** @param {net.Socket} socket */
  accept(socket) {
    if (this.closing) {
      socket.destroy();
      return;
    }
    this.stats.accepted++;
    const conn = new Connection(this, socket);
    this.connections.add(conn);
  }

  /** @param {Connection} conn */
  forget(conn) {
    this.connections.delete(conn);
    this.stats.closed++;
    if (this.closing && this.connections.size === 0) this.onIdle?.();
  }

  /**
   * Stops accepting, asks every connection to close (WebSocket close 1001, then the device
   * socket is ended), and cuts whatever is still open after `graceMs`.
   * @param {number} [graceMs]
   * @returns {Promise<void>}
   */
  async close(graceMs = DEFAULTS.shutdownGraceMs) {
    this.closing = true;
    const serverClosed = new Promise((ok) => this.server.close(() => ok(undefined)));
    if (this.connections.size > 0) {
      /** @type {Promise<void>} */
      const idle = new Promise((ok) => (this.onIdle = ok));
      for (const c of this.connections) c.shutdown();
      /** @type {NodeJS.Timeout | undefined} */
      let timer;
      const timeout = new Promise((ok) => (timer = setTimeout(ok, graceMs)));
      await Promise.race([idle, timeout]);
      clearTimeout(timer);
      for (const c of this.connections) c.destroy("shutdown_timeout");
    }
    // TLS handshakes still in progress hold the server open until their handshake timeout
    await Promise.race([serverClosed, new Promise((ok) => setTimeout(ok, 1_000).unref())]);
  }

  /** @type {(() => void) | undefined} */
  onIdle = undefined;
}

/** One device connection and its WebSocket. */
export class Connection {
  /**
   * @param {Bridge} bridge
   * @param {net.Socket} socket
   */
  constructor(bridge, socket) {
    this.bridge = bridge;
    this.socket = socket;
    this.remoteAddress = plainAddress(socket.remoteAddress);
    this.remote = `${this.remoteAddress}:${socket.remotePort}`;
    this.openedAt = Date.now();
    this.cutter = new PacketCutter(bridge.maxPacketBytes);
    /** @type {WebSocket | undefined} */
    this.ws = undefined;
    /** Packets cut before the WebSocket is open. */
    /** @type {Buffer[]} */
    this.pending = [];
    /** Bytes handed to the WebSocket and not yet flushed to its socket. */
    this.wsQueued = 0;
    this.pausedForWs = false; // device socket paused: WebSocket not open yet or behind
    this.wsPausedForTcp = false; // WebSocket paused: device socket behind
    /** @type {string | undefined} */
    this.reason = undefined;
    /** @type {{ protocol: string, clientId: string } | undefined} */
    this.connect = undefined;
    this.bytesIn = 0; // device → broker, forwarded
    this.bytesOut = 0; // broker → device
    this.packetsIn = 0;
    this.framesOut = 0;
    /** @type {number | undefined} */
    this.wsCloseCode = undefined;
    this.tcpClosed = false;
    this.wsClosed = true; // no WebSocket yet
    this.logged = false;
    /** @type {NodeJS.Timeout | undefined} */
    this.endTimer = undefined;

    socket.setNoDelay(true);
    /** @type {NodeJS.Timeout | undefined} */
    this.idleTimer =
      bridge.idleConnectTimeoutMs > 0 ? setTimeout(() => this.destroy("idle_timeout"), bridge.idleConnectTimeoutMs) : undefined;
    socket.on("data", (chunk) => this.onTcpData(/** @type {Buffer} */ (chunk)));
    socket.on("end", () => this.onTcpEnd());
    socket.on("error", (err) => this.setReason(`device_error: ${/** @type {NodeJS.ErrnoException} */ (err).code ?? err.message}`));
    socket.on("close", () => this.onTcpClose());
    socket.on("drain", () => {
      if (this.wsPausedForTcp) {
        this.wsPausedForTcp = false;
        this.ws?.resume();
      }
    });
  }

  /** @param {string} reason the first reason wins */
  setReason(reason) {
    if (this.reason === undefined) this.reason = reason;
  }

  /** @param {Buffer} chunk */
  onTcpData(chunk) {
    /** @type {Buffer[]} */
    let packets;
    try {
      packets = this.cutter.push(chunk);
    } catch (err) {
      const code = err instanceof PacketError ? (err.code === "too_large" ? "packet_too_large" : "malformed_packet") : "error";
      this.destroy(`${code}: ${/** @type {Error} */ (err).message}`, err instanceof PacketError && err.code === "too_large" ? 1009 : 1002);
      return;
    }
    for (const p of packets) {
      if (this.connect === undefined) {
        if (p[0] !== 0x10) {
          this.destroy("protocol_error: first packet is not CONNECT", 1002);
          return;
        }
        this.connect = describeConnect(p) ?? { protocol: "unknown", clientId: "" };
        clearTimeout(this.idleTimer);
        this.idleTimer = undefined;
        this.pending.push(p);
        this.pauseTcp();
        this.openWebSocket();
        continue;
      }
      if (this.ws === undefined || this.ws.readyState !== WebSocket.OPEN) {
        if (this.ws !== undefined && this.ws.readyState !== WebSocket.CONNECTING) return; // closing
        this.pending.push(p);
        continue;
      }
      this.send(p);
    }
  }

  openWebSocket() {
    const b = this.bridge;
    /** @type {Record<string, string>} */
    const headers = {};
    if (b.token) {
      headers[TOKEN_HEADER] = b.token;
      headers[ADDR_HEADER] = this.remoteAddress;
    }
    const ws = new WebSocket(b.to, "mqtt", {
      headers,
      perMessageDeflate: false,
      handshakeTimeout: b.handshakeTimeoutMs,
    });
    this.ws = ws;
    this.wsClosed = false;
    ws.binaryType = "nodebuffer";
    ws.on("open", () => {
      const queued = this.pending;
      this.pending = [];
      for (const p of queued) this.send(p);
      if (this.reason !== undefined) {
        // the device went away while the upgrade was in flight: forward what it sent, then close
        ws.close(1000, "device closed the connection");
        return;
      }
      if (this.wsQueued <= this.bridge.highWaterMark) this.resumeTcp();
    });
    ws.on("message", (data) => {
      const buf = /** @type {Buffer} */ (data); // binaryType "nodebuffer": one Buffer per message
      this.bytesOut += buf.length;
      this.framesOut++;
      if (this.socket.writable && !this.socket.write(buf) && !this.wsPausedForTcp) {
        this.wsPausedForTcp = true;
        ws.pause();
      }
    });
    ws.on("error", (err) => this.setReason(`broker_error: ${err.message}`));
    ws.on("close", (code) => {
      this.wsClosed = true;
      this.wsCloseCode = code;
      this.setReason(`broker_closed: ${code}`);
      // WebSocket closed: end the device socket (its queued writes are flushed first).
      if (!this.tcpClosed) {
        this.socket.end();
        this.endTimer = setTimeout(() => this.socket.destroy(), 5_000);
      }
      this.finish();
    });
  }

  /** @param {Buffer} packet */
  send(packet) {
    const ws = /** @type {WebSocket} */ (this.ws);
    const n = packet.length;
    this.bytesIn += n;
    this.packetsIn++;
    this.wsQueued += n;
    ws.send(packet, { binary: true }, () => {
      this.wsQueued -= n;
      if (this.pausedForWs && this.wsQueued <= this.bridge.highWaterMark / 2 && ws.readyState === WebSocket.OPEN && this.reason === undefined) {
        this.resumeTcp();
      }
    });
    if (this.wsQueued > this.bridge.highWaterMark) this.pauseTcp();
  }

  pauseTcp() {
    if (!this.pausedForWs) {
      this.pausedForWs = true;
      this.socket.pause();
    }
  }

  resumeTcp() {
    if (this.pausedForWs) {
      this.pausedForWs = false;
      this.socket.resume();
    }
  }

  /** The device half-closed: close the WebSocket without DISCONNECT so the broker publishes the will. */
  onTcpEnd() {
    this.setReason(this.cutter.pending > 0 ? `device_end: ${this.cutter.pending} bytes of an incomplete packet dropped` : "device_end");
    this.closeWs(1000, "device closed the connection");
    if (this.ws === undefined) this.socket.end();
  }

  onTcpClose() {
    this.tcpClosed = true;
    clearTimeout(this.idleTimer);
    clearTimeout(this.endTimer);
    this.setReason("device_closed");
    // A reset or a lost device: the broker sees a close without DISCONNECT and publishes the will.
    this.closeWs(1001, "device connection lost");
    this.finish();
  }

  /**
   * @param {number} code
   * @param {string} reason
   */
  closeWs(code, reason) {
    const ws = this.ws;
    if (ws === undefined) return;
    if (ws.readyState === WebSocket.CONNECTING) {
      // Forward what was cut so far once open (see "open"), unless the device socket is gone.
      if (this.tcpClosed) ws.terminate();
      return;
    }
    if (ws.readyState === WebSocket.OPEN) ws.close(code, reason);
  }

  /** SIGTERM: stop reading the device, close the WebSocket (1001), then end the device socket. */
  shutdown() {
    this.setReason("bridge_shutdown");
    this.pauseTcp();
    if (this.ws === undefined || this.ws.readyState === WebSocket.CONNECTING) {
      this.ws?.terminate();
      this.socket.end();
      return;
    }
    this.closeWs(1001, "bridge shutting down");
  }

  /**
   * Cuts both sides now.
   * @param {string} reason
   * @param {number} [wsCode] close code for an open WebSocket (else it is terminated)
   */
  destroy(reason, wsCode) {
    this.setReason(reason);
    clearTimeout(this.idleTimer);
    this.socket.destroy();
    if (this.ws !== undefined) {
      if (wsCode !== undefined && this.ws.readyState === WebSocket.OPEN) this.ws.close(wsCode, reason.slice(0, 120));
      else if (this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
    }
  }

  /** Logs once both sides are closed. */
  finish() {
    if (!this.tcpClosed || !this.wsClosed || this.logged) return;
    this.logged = true;
    clearTimeout(this.endTimer);
    this.bridge.log({
      event: "connection",
      remote: this.remote,
      tls: this.bridge.tls,
      clientId: this.connect?.clientId,
      protocol: this.connect?.protocol,
      opened: new Date(this.openedAt).toISOString(),
      durationMs: Date.now() - this.openedAt,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      packetsIn: this.packetsIn,
      framesOut: this.framesOut,
      wsCloseCode: this.wsCloseCode,
      reason: this.reason,
    });
    this.bridge.forget(this);
  }
}
