import WebSocket from "ws";
import mqttPacket, { type Packet } from "mqtt-packet";
import { inject } from "vitest";
import { encode } from "./bytes";
import { concatBytes, readFrames } from "../../src/protocol/codec";

export interface RawOpenOptions {
  /** WebSocket subprotocol(s); default "mqtt". */
  protocol?: string | string[];
  /** Protocol level used to encode and decode packets (5 for MQTT 5); default 4. */
  version?: 3 | 4 | 5;
  /** Extra HTTP headers for the upgrade request (e.g. a cookie). */
  headers?: Record<string, string>;
}

/**
 * The packet-level MQTT client of the e2e tests, over a raw WebSocket: the test decides exactly
 * which bytes go in which frame, and sees every packet and the close.
 */
export class RawClient {
  readonly packets: Packet[] = [];
  /** The exact bytes each received packet came as ({@link bytesOf}). */
  private readonly wire = new WeakMap<Packet, Uint8Array>();
  private pending: Uint8Array = new Uint8Array(0);
  private current: Uint8Array | null = null;
  closed: { code: number; reason: string } | null = null;
  /** How many WebSocket frames arrived, and how many packets each held (in order). */
  readonly frames: number[] = [];
  private readonly parser: ReturnType<typeof mqttPacket.parser>;

  private constructor(
    private readonly ws: WebSocket,
    /** Protocol level used to encode and decode packets (5 for MQTT 5). */
    readonly version: 3 | 4 | 5,
  ) {
    this.parser = mqttPacket.parser({ protocolVersion: version });
    this.parser.on("packet", (p: Packet) => {
      this.packets.push(p);
      if (this.current) this.wire.set(p, this.current);
    });
    ws.on("message", (data: Buffer) => this.receive(data));
    ws.on("close", (code: number, reason: Buffer) => (this.closed = { code, reason: reason.toString() }));
  }

  /** Cuts the stream into packets, so each parsed packet keeps its own bytes. */
  private receive(data: Buffer): void {
    const { frames, rest } = readFrames(concatBytes(this.pending, new Uint8Array(data)), 1 << 28);
    this.frames.push(frames.length);
    this.pending = rest.slice();
    for (const frame of frames) {
      this.current = frame.slice();
      this.parser.parse(Buffer.from(this.current));
    }
    this.current = null;
  }

  /** The exact bytes `packet` (one this client received) came as. */
  bytesOf(packet: Packet): Uint8Array {
    const bytes = this.wire.get(packet);
    if (!bytes) throw new Error(`no bytes recorded for this ${packet.cmd}`);
    return bytes;
  }

  /** Opens a WebSocket to `url` (default: the shared test broker). */
  static open(url = inject("brokerWsUrl"), opts: RawOpenOptions = {}): Promise<RawClient> {
    return new Promise((ok, fail) => {
      const ws = new WebSocket(url, opts.protocol ?? "mqtt", opts.headers ? { headers: opts.headers } : {});
      ws.once("open", () => ok(new RawClient(ws, opts.version ?? 4)));
      ws.once("error", fail);
    });
  }

  /** Sends raw bytes as one WebSocket frame. */
  sendBytes(bytes: Uint8Array): void {
    this.ws.send(bytes);
  }

  sendText(text: string): void {
    this.ws.send(text);
  }

  send(packet: Packet): void {
    this.ws.send(encode(packet, this.version));
  }

  /** Waits for the next packet matching `cmd` (already received ones count once). */
  async next(cmd: Packet["cmd"], ms = 10_000): Promise<Packet> {
    const deadline = performance.now() + ms;
    for (;;) {
      const i = this.packets.findIndex((p) => p.cmd === cmd);
      if (i >= 0) return this.packets.splice(i, 1)[0] as Packet;
      if (this.closed) throw new Error(`closed (${this.closed.code}) while waiting for ${cmd}`);
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${cmd}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  /**
   * PINGREQ, then waits for its PINGRESP. The broker handles a connection's packets in order,
   * so once it answers, it has handled every packet sent before, and every packet it sent on
   * this connection before the PINGRESP has arrived: what is not there by now did not come.
   */
  async pingRoundTrip(ms = 10_000): Promise<void> {
    // PINGRESPs already here answer earlier PINGREQs: ours is the one after them.
    const earlier = this.packets.filter((p) => p.cmd === "pingresp").length;
    this.send({ cmd: "pingreq" });
    for (let i = 0; i <= earlier; i++) await this.next("pingresp", ms);
  }

  async waitClosed(ms = 10_000): Promise<{ code: number; reason: string }> {
    const deadline = performance.now() + ms;
    while (!this.closed) {
      if (performance.now() > deadline) throw new Error("timed out waiting for the broker to close the socket");
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.closed;
  }

  /** Drops the TCP connection without a close frame (network loss). */
  terminate(): void {
    this.ws.terminate();
  }

  close(): void {
    this.ws.close();
  }

  /** CONNECT and wait for CONNACK. */
  async connect(clientId: string, extra: Partial<mqttPacket.IConnectPacket> = {}): Promise<mqttPacket.IConnackPacket> {
    this.send({ cmd: "connect", protocolId: this.version === 3 ? "MQIsdp" : "MQTT", protocolVersion: this.version, clean: true, keepalive: 60, clientId, ...extra });
    const ack = await this.next("connack");
    return ack as mqttPacket.IConnackPacket;
  }
}
