/**
 * Strict string checks [MQTT-1.5.3-1] / [MQTT-1.5.3-2]: well-formed UTF-8 and no U+0000 in
 * every string field of a packet.
 *
 * mqtt-packet decodes strings with a replacing decoder (Node and workerd `Buffer`), which turns
 * every invalid byte sequence into U+FFFD. So a decoded string is judged first ({@link isSuspect},
 * {@link hasSuspectProperty}); only a suspect one costs a strict re-read of the raw string fields
 * ({@link findBadString}).
 */
import type { Packet } from "mqtt-packet";
import { CONNECT_USERNAME, CONNECT_WILL } from "./packets";
import { bodyOffset } from "./framing";

/** Matches the two characters that send a string to the strict check. */
const SUSPECT_TEXT = /[\u0000\uFFFD]/;

/** True when a decoded string may hide a U+0000 or an invalid UTF-8 sequence. */
export function isSuspect(text: string): boolean {
  return SUSPECT_TEXT.test(text);
}

/** {@link isSuspect} over the string and user properties of a decoded property block. */
export function hasSuspectProperty(properties: object): boolean {
  for (const name in properties) {
    const value: unknown = Reflect.get(properties, name);
    if (typeof value === "string") {
      if (SUSPECT_TEXT.test(value)) return true;
    } else if (name === "userProperties" && typeof value === "object" && value !== null) {
      for (const key in value) {
        if (SUSPECT_TEXT.test(key)) return true;
        const v: unknown = Reflect.get(value, key);
        if (typeof v === "string") {
          if (SUSPECT_TEXT.test(v)) return true;
        } else if (Array.isArray(v)) {
          for (const s of v) if (typeof s === "string" && SUSPECT_TEXT.test(s)) return true;
        }
      }
    }
  }
  return false;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** 5.0 property ids (one byte each; all are below 0x80) → name and wire type. */
type PropertyKind = "byte" | "int16" | "int32" | "var" | "string" | "pair" | "binary";
const PROPERTY_KINDS: ReadonlyMap<number, readonly [string, PropertyKind]> = new Map([
  [0x01, ["payloadFormatIndicator", "byte"]],
  [0x02, ["messageExpiryInterval", "int32"]],
  [0x03, ["contentType", "string"]],
  [0x08, ["responseTopic", "string"]],
  [0x09, ["correlationData", "binary"]],
  [0x0b, ["subscriptionIdentifier", "var"]],
  [0x11, ["sessionExpiryInterval", "int32"]],
  [0x12, ["assignedClientIdentifier", "string"]],
  [0x13, ["serverKeepAlive", "int16"]],
  [0x15, ["authenticationMethod", "string"]],
  [0x16, ["authenticationData", "binary"]],
  [0x17, ["requestProblemInformation", "byte"]],
  [0x18, ["willDelayInterval", "int32"]],
  [0x19, ["requestResponseInformation", "byte"]],
  [0x1a, ["responseInformation", "string"]],
  [0x1c, ["serverReference", "string"]],
  [0x1f, ["reasonString", "string"]],
  [0x21, ["receiveMaximum", "int16"]],
  [0x22, ["topicAliasMaximum", "int16"]],
  [0x23, ["topicAlias", "int16"]],
  [0x24, ["maximumQoS", "byte"]],
  [0x25, ["retainAvailable", "byte"]],
  [0x26, ["userProperty", "pair"]],
  [0x27, ["maximumPacketSize", "int32"]],
  [0x28, ["wildcardSubscriptionAvailable", "byte"]],
  [0x29, ["subscriptionIdentifiersAvailable", "byte"]],
  [0x2a, ["sharedSubscriptionAvailable", "byte"]],
]);
const FIXED_SIZES: Readonly<Record<"byte" | "int16" | "int32", number>> = { byte: 1, int16: 2, int32: 4 };

/** Thrown inside the re-read when the layout disagrees with the frame; caught in findBadString. */
class LayoutError extends Error {}

/**
 * Walks the raw string fields of a packet mqtt-packet has already parsed (so the layout is
 * known to fit) and returns the first [MQTT-1.5.3-1] / [MQTT-1.5.3-2] violation, or null.
 */
class StringFields {
  private pos: number;
  private readonly end: number;

  constructor(private readonly bytes: Uint8Array) {
    this.pos = bodyOffset(bytes);
    this.end = bytes.length;
    if (this.pos < 0) throw new LayoutError();
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  skip(n: number): void {
    if (this.pos + n > this.end) throw new LayoutError();
    this.pos += n;
  }

  u8(): number {
    if (this.pos >= this.end) throw new LayoutError();
    return this.bytes[this.pos++]!;
  }

  u16(): number {
    return (this.u8() << 8) | this.u8();
  }

  varint(): number {
    let value = 0;
    for (let i = 0, mul = 1; i < 4; i++, mul *= 128) {
      const b = this.u8();
      value += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return value;
    }
    throw new LayoutError();
  }

  /** Skips a length-prefixed binary field. */
  binary(): void {
    this.skip(this.u16());
  }

  /** Checks the next length-prefixed UTF-8 string field. */
  string(field: string): string | null {
    const length = this.u16();
    const start = this.pos;
    this.skip(length);
    const raw = this.bytes.subarray(start, start + length);
    try {
      strictUtf8.decode(raw);
    } catch {
      return `[MQTT-1.5.3-1]: ${field} is not well-formed UTF-8`; // [MQTT-1.5.3-1]
    }
    if (raw.indexOf(0) !== -1) return `[MQTT-1.5.3-2]: U+0000 in ${field}`; // [MQTT-1.5.3-2]
    return null;
  }

  /** Checks the string and user properties of a 5.0 property block. */
  properties(where: string): string | null {
    const length = this.varint();
    const stop = this.pos + length;
    if (stop > this.end) throw new LayoutError();
    while (this.pos < stop) {
      const kind = PROPERTY_KINDS.get(this.u8());
      if (kind === undefined) throw new LayoutError();
      const [name, type] = kind;
      let bad: string | null = null;
      if (type === "string") bad = this.string(`${where} property ${name}`);
      else if (type === "pair") bad = this.string(`${where} user property name`) ?? this.string(`${where} user property value`);
      else if (type === "binary") this.binary();
      else if (type === "var") this.varint();
      else this.skip(FIXED_SIZES[type]);
      if (bad !== null) return bad;
    }
    return null;
  }
}

/**
 * Re-reads the raw string fields of `frame`, which mqtt-packet has parsed into `packet`, and
 * returns the first [MQTT-1.5.3-1] / [MQTT-1.5.3-2] violation as a `"[MQTT-1.5.3-n]: ..."`
 * message, or null. `version` is the level the frame was parsed with (a CONNECT's own).
 */
export function findBadString(frame: Uint8Array, packet: Packet, version: number): string | null {
  try {
    return walkStrings(new StringFields(frame), packet, version === 5);
  } catch (err) {
    if (err instanceof LayoutError) return "malformed packet: string fields do not fit the frame";
    throw err;
  }
}

function walkStrings(r: StringFields, packet: Packet, v5: boolean): string | null {
  switch (packet.cmd) {
    case "connect": {
      r.binary(); // protocol name, checked before parsing
      r.skip(1); // level
      const flags = r.u8();
      r.skip(2); // keep alive
      const bad = (v5 ? r.properties("CONNECT") : null) ?? r.string("client identifier");
      if (bad !== null) return bad;
      if ((flags & CONNECT_WILL) !== 0) {
        const willBad = (v5 ? r.properties("will") : null) ?? r.string("will topic");
        if (willBad !== null) return willBad;
        r.binary(); // will payload
      }
      return (flags & CONNECT_USERNAME) !== 0 ? r.string("user name") : null;
    }
    case "publish": {
      const bad = r.string("topic name");
      if (bad !== null || !v5) return bad;
      if (packet.qos !== 0) r.skip(2);
      return r.properties("PUBLISH");
    }
    case "subscribe":
    case "unsubscribe": {
      r.skip(2);
      if (v5) {
        const bad = r.properties(packet.cmd.toUpperCase());
        if (bad !== null) return bad;
      }
      while (r.remaining > 0) {
        const bad = r.string("topic filter");
        if (bad !== null) return bad;
        if (packet.cmd === "subscribe") r.skip(1); // options
      }
      return null;
    }
    default:
      break;
  }
  if (!v5) return null;
  // 5.0 packets whose only strings are properties; layouts as mqtt-packet reads them.
  const where = packet.cmd.toUpperCase();
  switch (packet.cmd) {
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp":
      r.skip(2); // packet identifier
      if (r.remaining <= 1) return null;
      r.skip(1); // reason code
      return r.properties(where);
    case "connack":
      r.skip(2); // flags, reason code
      return r.remaining > 0 ? r.properties(where) : null;
    case "suback":
    case "unsuback":
      r.skip(2); // packet identifier
      return r.properties(where);
    case "disconnect":
    case "auth":
      if (r.remaining <= 1) return null;
      r.skip(1); // reason code
      return r.properties(where);
    default:
      return null;
  }
}
