/**
 * The byte builder every test uses for MQTT packets: hand-made frames, field by field, so any
 * field can be wrong on purpose ({@link frame}, {@link connect}, {@link publish}, ...), and
 * valid packets from their fields through mqtt-packet ({@link encode}).
 *
 * Uint8Array in and out, no Node-only API: the unit (Node), worker (workerd) and e2e projects
 * all import it. (Under workerd, pass mqtt-packet no Buffer fields: the pre-bundled
 * mqtt-packet does not recognise workerd's Buffer; build such packets by hand instead.)
 */
import mqttPacket, { type Packet } from "mqtt-packet";
import type { ProtocolVersion } from "../../src/protocol/codec";

/**
 * A piece of a frame: a byte, bytes, or a string standing for its UTF-8 bytes without a
 * length prefix (use {@link str} for a length-prefixed string field).
 */
export type Part = number | string | ArrayLike<number>;

const UTF8 = new TextEncoder();

/** The parts one after the other, as one byte array. */
export function bytes(...parts: Part[]): Uint8Array {
  const chunks = parts.map((p): ArrayLike<number> => (typeof p === "number" ? [p] : typeof p === "string" ? UTF8.encode(p) : p));
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Remaining Length / variable byte integer encoding (minimal form). */
export function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

export function u16(n: number): number[] {
  return [(n >> 8) & 0xff, n & 0xff];
}

/** Raw bytes of a text (UTF-8), no length prefix. */
export function utf8(text: string): number[] {
  return Array.from(UTF8.encode(text));
}

/** A length-prefixed string field: text is UTF-8 encoded; raw bytes are taken as they are. */
export function str(value: string | ArrayLike<number>): number[] {
  const body = typeof value === "string" ? utf8(value) : Array.from(value);
  return [...u16(body.length), ...body];
}

/** One complete frame: first byte (type << 4 | flags), then the body with its Remaining Length. */
export function frame(first: number, ...body: Part[]): Uint8Array {
  const b = bytes(...body);
  return bytes(first, varint(b.length), b);
}

/** A 5.0 property block (length prefix included) from encoded properties. */
export function props(...properties: Part[]): number[] {
  const b = bytes(...properties);
  return [...varint(b.length), ...b];
}

const u32 = (n: number): number[] => [(n >>> 24) & 0xff, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff];

/** 5.0 property encoders (ids per MQTT 5.0 §2.2.2.2). */
export const prop = {
  contentType: (v: string | ArrayLike<number>): number[] => [0x03, ...str(v)],
  responseTopic: (v: string | ArrayLike<number>): number[] => [0x08, ...str(v)],
  correlationData: (v: ArrayLike<number>): number[] => [0x09, ...str(v)],
  reasonString: (v: string | ArrayLike<number>): number[] => [0x1f, ...str(v)],
  user: (name: string | ArrayLike<number>, value: string | ArrayLike<number>): number[] => [0x26, ...str(name), ...str(value)],
  messageExpiry: (seconds: number): number[] => [0x02, ...u32(seconds)],
  sessionExpiry: (seconds: number): number[] => [0x11, ...u32(seconds)],
  subscriptionIdentifier: (id: number): number[] => [0x0b, id & 0x7f],
  payloadFormat: (value: number): number[] => [0x01, value],
};

export interface ConnectSpec {
  /** Protocol level byte; default 4. */
  level?: number;
  /** Protocol name; default "MQIsdp" for level 3, "MQTT" otherwise. Raw bytes allowed. */
  name?: string | ArrayLike<number>;
  /** Connect flags byte, taken as is; default: clean session plus the flags the fields imply. */
  flags?: number;
  /** Keep alive in seconds; default 60. */
  keepAlive?: number;
  /** 5.0 CONNECT properties (encoded); default empty when level is 5. */
  properties?: ArrayLike<number>;
  /** Default "c1". */
  clientId?: string | ArrayLike<number>;
  will?: { topic: string | ArrayLike<number>; payload?: ArrayLike<number>; qos?: number; retain?: boolean; properties?: ArrayLike<number> };
  username?: string | ArrayLike<number>;
  password?: ArrayLike<number>;
}

/**
 * A CONNECT frame. Fields are written when present, whatever `flags` says, so a frame can
 * contradict its own flags on purpose.
 */
export function connect(spec: ConnectSpec = {}): Uint8Array {
  const level = spec.level ?? 4;
  const v5 = (level & 0x7f) === 5;
  const implied = 0x02
    | (spec.will ? 0x04 | ((spec.will.qos ?? 0) << 3) | (spec.will.retain ? 0x20 : 0) : 0)
    | (spec.username !== undefined ? 0x80 : 0)
    | (spec.password !== undefined ? 0x40 : 0);
  const body: Part[] = [
    str(spec.name ?? (level === 3 ? "MQIsdp" : "MQTT")),
    level,
    spec.flags ?? implied,
    u16(spec.keepAlive ?? 60),
  ];
  if (v5) body.push(spec.properties ?? props());
  body.push(str(spec.clientId ?? "c1"));
  if (spec.will) {
    if (v5) body.push(spec.will.properties ?? props());
    body.push(str(spec.will.topic), str(spec.will.payload ?? utf8("bye")));
  }
  if (spec.username !== undefined) body.push(str(spec.username));
  if (spec.password !== undefined) body.push(str(spec.password));
  return frame(0x10, ...body);
}

/** PUBLISH: QoS 0 has no packet identifier; 5.0 gets an (empty by default) property block. */
export function publish(opts: {
  topic: string | ArrayLike<number>;
  qos?: number;
  /** Packet identifier (QoS > 0); default 1. */
  id?: number;
  /** Default "hi". */
  payload?: ArrayLike<number>;
  version?: ProtocolVersion;
  properties?: ArrayLike<number>;
  /** The fixed header's low nibble (DUP, QoS, RETAIN), taken as is; default QoS << 1. */
  flags?: number;
}): Uint8Array {
  const qos = opts.qos ?? 0;
  const body: Part[] = [str(opts.topic)];
  if (qos > 0) body.push(u16(opts.id ?? 1));
  if (opts.version === 5) body.push(opts.properties ?? props());
  body.push(opts.payload ?? utf8("hi"));
  return frame(0x30 | (opts.flags ?? qos << 1), ...body);
}

/** SUBSCRIBE with (filter, options byte) pairs. */
export function subscribe(id: number, filters: ReadonlyArray<readonly [string | ArrayLike<number>, number]>, version?: ProtocolVersion, first = 0x82): Uint8Array {
  const body: Part[] = [u16(id)];
  if (version === 5) body.push(props());
  for (const [filter, options] of filters) body.push(str(filter), options);
  return frame(first, ...body);
}

export function unsubscribe(id: number, filters: ReadonlyArray<string | ArrayLike<number>>, version?: ProtocolVersion, first = 0xa2): Uint8Array {
  const body: Part[] = [u16(id)];
  if (version === 5) body.push(props());
  for (const filter of filters) body.push(str(filter));
  return frame(first, ...body);
}

/** A valid packet from its fields, encoded by mqtt-packet. */
export function encode(packet: Packet, protocolVersion: 3 | 4 | 5 = 4): Uint8Array {
  return new Uint8Array(mqttPacket.generate(packet, { protocolVersion }));
}

export function hex(data: Uint8Array): string {
  return Array.from(data, (b) => b.toString(16).padStart(2, "0")).join(" ");
}
