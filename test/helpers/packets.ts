/** Byte-level builders for hand-made (often deliberately invalid) MQTT packets. */
import { varint } from "./malformed";

/** MQTT variable-length encoding of a Remaining Length (minimal form). */
export const remainingLength = varint;

export function concat(parts: ArrayLike<number>[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A length-prefixed MQTT string or binary field from raw bytes (or a JS string, UTF-8 encoded). */
export function field(value: string | ArrayLike<number>): number[] {
  const bytes = typeof value === "string" ? [...Buffer.from(value, "utf8")] : Array.from(value);
  return [bytes.length >> 8, bytes.length & 0xff, ...bytes];
}

/** A whole packet: first byte (type << 4 | flags), Remaining Length, body. */
export function packet(firstByte: number, ...body: ArrayLike<number>[]): Uint8Array {
  const b = concat(body);
  return concat([[firstByte], remainingLength(b.length), b]);
}

export interface ConnectFields {
  protocolName?: string | ArrayLike<number>;
  level?: number;
  /** The CONNECT flags byte; default clean session only (0x02). */
  flags?: number;
  keepAlive?: number;
  clientId?: string | ArrayLike<number>;
  /** Payload fields after the client id (will topic/message, user name, password), already length-prefixed. */
  rest?: ArrayLike<number>[];
}

/** A CONNECT built field by field, so any field can be wrong. */
export function connectPacket(f: ConnectFields = {}): Uint8Array {
  const keepAlive = f.keepAlive ?? 0;
  return packet(
    0x10,
    field(f.protocolName ?? "MQTT"),
    [f.level ?? 4, f.flags ?? 0x02, keepAlive >> 8, keepAlive & 0xff],
    field(f.clientId ?? ""),
    ...(f.rest ?? []),
  );
}

/** A QoS 0 or 1 PUBLISH with a raw topic. */
export function publishPacket(topic: string | ArrayLike<number>, payload: ArrayLike<number> = [], qos: 0 | 1 = 0, packetId = 1): Uint8Array {
  const id = qos > 0 ? [packetId >> 8, packetId & 0xff] : [];
  return packet(0x30 | (qos << 1), field(topic), id, payload);
}
