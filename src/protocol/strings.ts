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
import { FieldReader, LayoutError } from "./fields";

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

/**
 * Walks the raw string fields of a packet mqtt-packet has already parsed (so the layout is
 * known to fit) and returns the first [MQTT-1.5.3-1] / [MQTT-1.5.3-2] violation, or null.
 */
class StringFields extends FieldReader {
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
  stringProperties(where: string): string | null {
    const stop = this.propertiesEnd();
    while (this.pos < stop) {
      const { name, type } = this.property();
      let bad: string | null = null;
      if (type === "string") bad = this.string(`${where} property ${name}`);
      else if (type === "pair") bad = this.string(`${where} user property name`) ?? this.string(`${where} user property value`);
      else this.skipValue(type);
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
      const bad = (v5 ? r.stringProperties("CONNECT") : null) ?? r.string("client identifier");
      if (bad !== null) return bad;
      if ((flags & CONNECT_WILL) !== 0) {
        const willBad = (v5 ? r.stringProperties("will") : null) ?? r.string("will topic");
        if (willBad !== null) return willBad;
        r.binary(); // will payload
      }
      return (flags & CONNECT_USERNAME) !== 0 ? r.string("user name") : null;
    }
    case "publish": {
      const bad = r.string("topic name");
      if (bad !== null || !v5) return bad;
      if (packet.qos !== 0) r.skip(2);
      return r.stringProperties("PUBLISH");
    }
    case "subscribe":
    case "unsubscribe": {
      r.skip(2);
      if (v5) {
        const bad = r.stringProperties(packet.cmd.toUpperCase());
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
      return r.stringProperties(where);
    case "connack":
      r.skip(2); // flags, reason code
      return r.remaining > 0 ? r.stringProperties(where) : null;
    case "suback":
    case "unsuback":
      r.skip(2); // packet identifier
      return r.stringProperties(where);
    case "disconnect":
    case "auth":
      if (r.remaining <= 1) return null;
      r.skip(1); // reason code
      return r.stringProperties(where);
    default:
      return null;
  }
}
