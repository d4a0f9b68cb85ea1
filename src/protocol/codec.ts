/**
 * MQTT wire codec: stream framing, packet decoding and encoding.
 *
 * Framing is done here (cheap, zero-copy, bounded by a size limit before any body is
 * buffered); packet bodies are decoded and encoded by mqtt-packet, the field's codec.
 * decodePacket adds the protocol rules mqtt-packet does not enforce (strict UTF-8, U+0000,
 * packet identifier 0, empty SUBSCRIBE, CONNECT flag consistency, ...; listed on it), each
 * tagged with its spec id, so the session can trust every packet it gets.
 * Nothing in this module throws on untrusted input.
 */
import { generate, parser as createParser } from "mqtt-packet";
import type { IConnectPacket, Packet, Parser } from "mqtt-packet";

export type {
  IAuthPacket,
  IConnackPacket,
  IConnectPacket,
  IDisconnectPacket,
  IPacket,
  IPingreqPacket,
  IPingrespPacket,
  IPubackPacket,
  IPubcompPacket,
  IPublishPacket,
  IPubrecPacket,
  IPubrelPacket,
  ISubackPacket,
  ISubscribePacket,
  ISubscription,
  IUnsubackPacket,
  IUnsubscribePacket,
  Packet,
  PacketCmd,
  QoS,
  UserProperties,
} from "mqtt-packet";

/** MQTT protocol level: 3 = 3.1 (MQIsdp), 4 = 3.1.1, 5 = 5.0. */
export type ProtocolVersion = 3 | 4 | 5;

/** Why {@link readFrames} stopped: the stream cannot continue and the connection should close. */
export interface FrameError {
  /** `malformed-length`: Remaining Length longer than 4 bytes; `too-large`: packet exceeds the limit. */
  kind: "malformed-length" | "too-large";
  message: string;
}

/** Output of {@link readFrames}. */
export interface FrameResult {
  /** Complete packets (fixed header included), in stream order. Views into the input buffer. */
  frames: Uint8Array[];
  /**
   * Unconsumed input: the incomplete tail to prepend to the next chunk, or, when `error`
   * is set, everything from the offending packet on. A view into the input buffer.
   */
  rest: Uint8Array;
  /** Set when the stream is broken; `frames` still holds the packets before the fault. */
  error?: FrameError;
}

/** Output of {@link decodePacket}. */
export type DecodeResult = { ok: true; packet: Packet } | DecodeFailure;

/** A frame {@link decodePacket} refused. */
export interface DecodeFailure {
  ok: false;
  /**
   * `"[MQTT-x.y.z-n]: what"` when a protocol rule listed on {@link decodePacket} is broken;
   * otherwise mqtt-packet's message (truncated field, unknown property, ...).
   */
  error: string;
  /**
   * Set only for a CONNECT whose protocol name is valid but whose level is not 3, 4 or 5
   * (bridge-mode levels 0x83..0x85 included): the session answers CONNACK 0x01 "unacceptable
   * protocol version" and closes [MQTT-3.1.2-2] instead of treating it as malformed.
   * The rest of that CONNECT is not parsed.
   */
  unsupportedLevel?: true;
  /** The raw protocol level byte of an `unsupportedLevel` CONNECT. */
  protocolLevel?: number;
}

/** A Remaining Length field is at most 4 bytes [MQTT-1.5.5] (3.1.1: section 2.2.3). */
const MAX_LENGTH_BYTES = 4;

const EMPTY = new Uint8Array(0);

/**
 * Splits a byte stream into complete MQTT control packets.
 *
 * Never throws. "Need more bytes" is the normal outcome for a partial packet: it comes back
 * in `rest`, which the caller keeps and prepends (see {@link concatBytes}) to the next chunk.
 * A packet larger than `maxPacketBytes` (fixed header included) is reported as `too-large`
 * as soon as its length field is complete, so its body is never buffered.
 *
 * @param buffer pending bytes: the previous `rest` followed by the new chunk.
 * @param maxPacketBytes largest accepted packet, fixed header included.
 */
export function readFrames(buffer: Uint8Array, maxPacketBytes: number): FrameResult {
  const frames: Uint8Array[] = [];
  const end = buffer.length;
  let offset = 0;

  while (offset < end) {
    let remaining = 0;
    let multiplier = 1;
    let pos = offset + 1;
    let lengthBytes = 0;
    let complete = false;

    while (pos < end) {
      const byte = buffer[pos]!;
      pos++;
      lengthBytes++;
      remaining += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) {
        complete = true;
        break;
      }
      if (lengthBytes === MAX_LENGTH_BYTES) {
        // [MQTT-1.5.5] / 3.1.1 §2.2.3: a fourth byte with the continuation bit set is malformed.
        return {
          frames,
          rest: buffer.subarray(offset),
          error: {
            kind: "malformed-length",
            message: "Remaining Length is encoded in more than 4 bytes",
          },
        };
      }
      multiplier *= 128;
    }
    if (!complete) break;

    const total = 1 + lengthBytes + remaining;
    if (total > maxPacketBytes) {
      return {
        frames,
        rest: buffer.subarray(offset),
        error: {
          kind: "too-large",
          message: `packet of ${total} bytes exceeds the maximum of ${maxPacketBytes}`,
        },
      };
    }
    if (offset + total > end) break;

    frames.push(buffer.subarray(offset, offset + total));
    offset += total;
  }

  return { frames, rest: offset === 0 ? buffer : offset === end ? EMPTY : buffer.subarray(offset) };
}

/**
 * Concatenates two byte arrays, returning one of them unchanged (no copy) when the other is empty.
 */
export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// Capture slots for the synchronous parser callbacks: parse() emits before it returns, and
// module-level slots avoid a closure or result object per call.
let emittedPacket: Packet | null = null;
let emittedCount = 0;
let parseError: string | null = null;

function onPacket(packet: Packet): void {
  emittedPacket = packet;
  emittedCount++;
}

function onError(err: unknown): void {
  // mqtt-packet may emit several errors for one packet; the first is the cause.
  if (parseError === null) parseError = errorMessage(err);
}

function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return typeof err === "string" ? err : "unknown parser error";
}

function newParser(protocolVersion: ProtocolVersion): Parser {
  const p = createParser({ protocolVersion });
  p.on("packet", onPacket);
  p.on("error", onError);
  return p;
}

/**
 * One parser per version for non-CONNECT packets. Dropped after any failure: mqtt-packet's
 * parser does not reset its read cursor after an error, so the next packet would be misread.
 */
const parsers: Array<Parser | undefined> = [undefined, undefined, undefined, undefined, undefined, undefined];

/**
 * Decodes one complete frame (as produced by {@link readFrames}) into an mqtt-packet Packet.
 *
 * Never throws. A CONNECT is decoded with the version it declares, whatever
 * `protocolVersion` says (the session learns the version from it). Decoded Buffers
 * (payloads, passwords, binary properties) may be views into `frame`: do not reuse its
 * memory while the packet is alive.
 *
 * Beyond mqtt-packet's parsing, a decoded packet satisfies these rules; a frame breaking one
 * fails with `error` starting with the rule's id (MQTT 3.1.1 numbering; 5.0 has the same rules):
 * - [MQTT-2.2.2-1] fixed-header flags: 0010 for PUBREL, SUBSCRIBE, UNSUBSCRIBE; 0000 for every
 *   other type but PUBLISH (AUTH: 5.0 only). [§2.2.1] packet type 0, and 15 before 5.0, are reserved.
 * - [MQTT-3.3.1-4] PUBLISH with both QoS bits set.
 * - [MQTT-1.5.3-1] every string field (client id, will topic, user name, topic names and
 *   filters, 5.0 string and user properties) is well-formed UTF-8: no invalid or overlong
 *   sequence, no surrogate code point (ED A0..BF xx), nothing above U+10FFFF.
 * - [MQTT-1.5.3-2] no U+0000 in those strings.
 * - CONNECT: [MQTT-3.1.2-1] protocol name "MQTT" for levels 4 and 5, "MQIsdp" for level 3;
 *   [MQTT-3.1.2-3] reserved flag 0; [MQTT-3.1.2-13] / [MQTT-3.1.2-15] (both [MQTT-3.1.2-11])
 *   no will QoS / will retain without the will flag; [MQTT-3.1.2-14] will QoS not 3;
 *   [MQTT-3.1.2-22] (3.1, 3.1.1) no password flag without the user name flag.
 * - [MQTT-2.3.1-1] packet identifier not 0 in PUBLISH QoS > 0, SUBSCRIBE, UNSUBSCRIBE, PUBACK,
 *   PUBREC, PUBREL, PUBCOMP.
 * - [MQTT-3.8.3-3] / [MQTT-3.10.3-2] SUBSCRIBE / UNSUBSCRIBE carry at least one topic filter;
 *   [MQTT-3.8.3-4] subscription options: requested QoS not 3, reserved bits 0.
 *
 * A CONNECT with the name "MQTT" or "MQIsdp" and a level other than 3, 4, 5 is not malformed:
 * it fails with `unsupportedLevel: true` (see {@link DecodeFailure}) so the session can answer
 * CONNACK 0x01 [MQTT-3.1.2-2]; the level is checked before the CONNECT flags, as the spec orders.
 * Packets only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) decode normally: refusing
 * them from a client is the session's job.
 *
 * Cost on the common path: one table lookup on the first byte, and one scan of each decoded
 * string for U+0000 / U+FFFD. Raw bytes are re-read (strictly, with a fatal UTF-8 decoder)
 * only when a decoded string holds U+FFFD, which the parser's replacing decoder (Node and
 * workerd `Buffer`) produces for every invalid byte sequence.
 *
 * @param frame exactly one packet, fixed header included.
 * @param protocolVersion the version negotiated by the connection's CONNECT.
 */
export function decodePacket(frame: Uint8Array, protocolVersion: ProtocolVersion): DecodeResult {
  if (frame.length < 2) return { ok: false, error: "incomplete packet" };

  const first = frame[0]!;
  const headerError = checkFixedHeader(first, protocolVersion);
  if (headerError !== null) return { ok: false, error: headerError };

  // CONNECT gets a throwaway parser: mqtt-packet replaces a parser's settings with the CONNECT
  // it parses, which would switch a cached parser's version (and keep the password alive).
  const isConnect = first >> 4 === 1;
  if (isConnect) {
    const refused = checkConnectHeader(frame);
    if (refused !== null) return refused;
  }
  let parser = isConnect ? undefined : parsers[protocolVersion];
  if (parser === undefined) {
    parser = newParser(protocolVersion);
    if (!isConnect) parsers[protocolVersion] = parser;
  }

  emittedPacket = null;
  emittedCount = 0;
  parseError = null;
  let left = -1;
  try {
    left = parser.parse(Buffer.isBuffer(frame) ? frame : Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength));
  } catch (err) {
    if (parseError === null) parseError = errorMessage(err);
  }
  const packet = emittedPacket;
  const count = emittedCount;
  const error = parseError;
  emittedPacket = null;
  parseError = null;

  if (error !== null || count !== 1 || left !== 0 || packet === null) {
    if (!isConnect) parsers[protocolVersion] = undefined;
    if (error !== null) return { ok: false, error: PARSER_RULE_ERRORS.get(error) ?? error };
    if (count === 0) return { ok: false, error: "incomplete packet" };
    return { ok: false, error: "trailing bytes after packet" };
  }

  const leaked = findParseFailure(packet);
  if (leaked !== null) return { ok: false, error: leaked };
  const broken = findRuleViolation(packet, frame, protocolVersion);
  if (broken !== null) return { ok: false, error: broken };
  const misplaced = findMisplacedProperty(packet);
  if (misplaced !== null) return { ok: false, error: misplaced };
  return { ok: true, packet };
}

/**
 * MQTT 5 properties a client may send in each packet (MQTT 5 §2.2.2.2: any other is a
 * protocol error). mqtt-packet decodes a property wherever it appears, so it is checked here.
 */
const CLIENT_PROPERTIES: Partial<Record<Packet["cmd"], ReadonlySet<string>>> = {
  connect: new Set(["sessionExpiryInterval", "receiveMaximum", "maximumPacketSize", "topicAliasMaximum", "requestResponseInformation", "requestProblemInformation", "userProperties", "authenticationMethod", "authenticationData"]),
  // [MQTT-3.3.4-6]: a client never sends a Subscription Identifier in PUBLISH.
  publish: new Set(["payloadFormatIndicator", "messageExpiryInterval", "topicAlias", "responseTopic", "correlationData", "userProperties", "contentType"]),
  puback: new Set(["reasonString", "userProperties"]),
  pubrec: new Set(["reasonString", "userProperties"]),
  pubrel: new Set(["reasonString", "userProperties"]),
  pubcomp: new Set(["reasonString", "userProperties"]),
  subscribe: new Set(["subscriptionIdentifier", "userProperties"]),
  unsubscribe: new Set(["userProperties"]),
  disconnect: new Set(["sessionExpiryInterval", "reasonString", "userProperties", "serverReference"]),
  auth: new Set(["authenticationMethod", "authenticationData", "reasonString", "userProperties"]),
};

const WILL_PROPERTIES: ReadonlySet<string> = new Set(["willDelayInterval", "payloadFormatIndicator", "messageExpiryInterval", "contentType", "responseTopic", "correlationData", "userProperties"]);

function findMisplacedProperty(packet: Packet): string | null {
  const allowed = CLIENT_PROPERTIES[packet.cmd];
  const props: unknown = "properties" in packet ? packet.properties : undefined;
  if (allowed && typeof props === "object" && props !== null) {
    for (const name of Object.keys(props)) {
      if (!allowed.has(name)) return `[MQTT-2.2.2-2]: property ${name} is not allowed in ${packet.cmd.toUpperCase()}`;
    }
  }
  if (packet.cmd === "connect" && packet.will?.properties) {
    for (const name of Object.keys(packet.will.properties)) {
      if (!WILL_PROPERTIES.has(name)) return `[MQTT-2.2.2-2]: property ${name} is not allowed in the will`;
    }
  }
  return null;
}

// ------------------------------------------------------------------ protocol rules

/**
 * Fixed-header flags each packet type must carry [MQTT-2.2.2-1], by type (first byte >> 4).
 * RESERVED_TYPE: type 0 (and 15 before 5.0, see checkFixedHeader); ANY_FLAGS: PUBLISH.
 */
const RESERVED_TYPE = -1;
const ANY_FLAGS = -2;
const HEADER_FLAGS: readonly number[] = [
  RESERVED_TYPE, // 0 reserved
  0b0000, // 1 CONNECT
  0b0000, // 2 CONNACK
  ANY_FLAGS, // 3 PUBLISH: DUP, QoS, RETAIN
  0b0000, // 4 PUBACK
  0b0000, // 5 PUBREC
  0b0010, // 6 PUBREL
  0b0000, // 7 PUBCOMP
  0b0010, // 8 SUBSCRIBE
  0b0000, // 9 SUBACK
  0b0010, // 10 UNSUBSCRIBE
  0b0000, // 11 UNSUBACK
  0b0000, // 12 PINGREQ
  0b0000, // 13 PINGRESP
  0b0000, // 14 DISCONNECT
  0b0000, // 15 AUTH (5.0; reserved before)
];

const PACKET_NAMES: readonly string[] = [
  "reserved", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP",
  "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH",
];

/** mqtt-packet checks these too, but without a rule id; checking first keeps the errors uniform. */
function checkFixedHeader(first: number, protocolVersion: ProtocolVersion): string | null {
  const type = first >> 4;
  const flags = first & 0x0f;
  const required = HEADER_FLAGS[type]!;
  if (required === ANY_FLAGS) {
    if ((flags & 0b0110) === 0b0110) return "[MQTT-3.3.1-4]: PUBLISH with both QoS bits set"; // [MQTT-3.3.1-4]
    return null;
  }
  if (required === RESERVED_TYPE || (type === 15 && protocolVersion !== 5)) {
    return `[§2.2.1]: reserved packet type ${type}`; // 3.1.1 Table 2.1: 0 and 15 are "Forbidden"
  }
  if (flags !== required) {
    // [MQTT-2.2.2-1] / [MQTT-2.2.2-2]: reserved flags must match Table 2.2, else close.
    return `[MQTT-2.2.2-1]: ${PACKET_NAMES[type]!} fixed-header flags must be ${bits4(required)}, got ${bits4(flags)}`;
  }
  return null;
}

function bits4(n: number): string {
  return n.toString(2).padStart(4, "0");
}

/** Offset of the variable header (after the Remaining Length), or -1 if the field is cut. */
function bodyOffset(frame: Uint8Array): number {
  for (let pos = 1; pos <= MAX_LENGTH_BYTES && pos < frame.length; pos++) {
    if ((frame[pos]! & 0x80) === 0) return pos + 1;
  }
  return -1;
}

const CONNECT_WILL = 0x04;
const CONNECT_WILL_QOS = 0x18;
const CONNECT_WILL_RETAIN = 0x20;
const CONNECT_PASSWORD = 0x40;
const CONNECT_USERNAME = 0x80;

/**
 * CONNECT variable-header rules, read from the raw bytes before mqtt-packet parses (it refuses an
 * unknown level as malformed and accepts will QoS 3 and a password without a user name).
 * Returns null when the header is fine or too short to judge (mqtt-packet then reports it).
 */
function checkConnectHeader(frame: Uint8Array): DecodeFailure | null {
  const end = frame.length;
  let pos = bodyOffset(frame);
  if (pos < 0 || pos + 2 > end) return null;
  const nameLength = (frame[pos]! << 8) | frame[pos + 1]!;
  pos += 2;
  if (pos + nameLength >= end) return null; // the name and the level byte must be there
  const name = nameLength === 4 && isAscii(frame, pos, "MQTT") ? "MQTT"
    : nameLength === 6 && isAscii(frame, pos, "MQIsdp") ? "MQIsdp"
    : null;
  // [MQTT-3.1.2-1]: a wrong protocol name: the server may close without CONNACK.
  if (name === null) return { ok: false, error: "[MQTT-3.1.2-1]: protocol name is neither MQTT nor MQIsdp" };
  pos += nameLength;
  const level = frame[pos]!;
  pos++;
  if (level !== 3 && level !== 4 && level !== 5) {
    // [MQTT-3.1.2-2]: not malformed; the session answers CONNACK 0x01.
    return { ok: false, error: `[MQTT-3.1.2-2]: unsupported protocol level ${level}`, unsupportedLevel: true, protocolLevel: level };
  }
  if ((level === 3) !== (name === "MQIsdp")) {
    // [MQTT-3.1.2-1]: level 3 is named MQIsdp, levels 4 and 5 MQTT.
    return { ok: false, error: `[MQTT-3.1.2-1]: protocol name ${name} does not match level ${level}` };
  }
  if (pos >= end) return null;
  const flags = frame[pos]!;
  if ((flags & 0x01) !== 0) return { ok: false, error: "[MQTT-3.1.2-3]: CONNECT reserved flag is set" }; // [MQTT-3.1.2-3]
  const willQos = (flags & CONNECT_WILL_QOS) >> 3;
  if ((flags & CONNECT_WILL) === 0) {
    // [MQTT-3.1.2-11] / [MQTT-3.1.2-13]: no will, so will QoS 0.
    if (willQos !== 0) return { ok: false, error: "[MQTT-3.1.2-13]: will QoS set without the will flag" };
    // [MQTT-3.1.2-11] / [MQTT-3.1.2-15]: no will, so will retain 0.
    if ((flags & CONNECT_WILL_RETAIN) !== 0) return { ok: false, error: "[MQTT-3.1.2-15]: will retain set without the will flag" };
  } else if (willQos === 3) {
    return { ok: false, error: "[MQTT-3.1.2-14]: will QoS 3" }; // [MQTT-3.1.2-14]
  }
  if (level !== 5 && (flags & CONNECT_PASSWORD) !== 0 && (flags & CONNECT_USERNAME) === 0) {
    return { ok: false, error: "[MQTT-3.1.2-22]: password flag set without the user name flag" }; // [MQTT-3.1.2-22]
  }
  return null;
}

function isAscii(bytes: Uint8Array, at: number, text: string): boolean {
  for (let i = 0; i < text.length; i++) if (bytes[at + i] !== text.charCodeAt(i)) return false;
  return true;
}

/**
 * mqtt-packet errors that are protocol rules, tagged with the rule id. Only SUBSCRIBE's options
 * byte is left to mqtt-packet (it checks it while walking the filters); the other rules it
 * enforces (header flags, CONNECT flags) are checked above, before it runs.
 */
const PARSER_RULE_ERRORS: ReadonlyMap<string, string> = new Map([
  // [MQTT-3.8.3-4]: requested QoS 3 (all versions).
  ["Invalid subscribe QoS, must be <= 2", "[MQTT-3.8.3-4]: SUBSCRIBE requests QoS 3"],
  // [MQTT-3.8.3-4]: 3.1, 3.1.1 options byte bits 7-2 are reserved.
  ["Invalid subscribe topic flag bits, bits 7-2 must be 0", "[MQTT-3.8.3-4]: reserved bits set in a SUBSCRIBE options byte"],
  // [MQTT-3.8.3-4] (5.0: [MQTT-3.8.3-5]): options bits 7-6 are reserved.
  ["Invalid subscribe topic flag bits, bits 7-6 must be 0", "[MQTT-3.8.3-4]: reserved bits set in a SUBSCRIBE options byte"],
]);

/** Matches the two characters that send a string to the strict check. */
const SUSPECT_TEXT = /[\u0000\uFFFD]/;

/**
 * Post-parse rules: packet identifiers, non-empty SUBSCRIBE / UNSUBSCRIBE, string contents.
 * Strings are judged on their decoded form first; only a suspect one (U+0000 or U+FFFD) costs a
 * strict re-read of the packet's raw string fields.
 */
function findRuleViolation(packet: Packet, frame: Uint8Array, protocolVersion: ProtocolVersion): string | null {
  let suspect = false;
  switch (packet.cmd) {
    case "publish":
      if (packet.qos !== 0 && packet.messageId === 0) return "[MQTT-2.3.1-1]: PUBLISH with QoS > 0 and packet identifier 0"; // [MQTT-2.3.1-1]
      suspect = SUSPECT_TEXT.test(packet.topic);
      break;
    case "subscribe":
      if (packet.messageId === 0) return "[MQTT-2.3.1-1]: SUBSCRIBE with packet identifier 0"; // [MQTT-2.3.1-1]
      if (packet.subscriptions.length === 0) return "[MQTT-3.8.3-3]: SUBSCRIBE without a topic filter"; // [MQTT-3.8.3-3]
      for (const sub of packet.subscriptions) if (SUSPECT_TEXT.test(sub.topic)) suspect = true;
      break;
    case "unsubscribe":
      if (packet.messageId === 0) return "[MQTT-2.3.1-1]: UNSUBSCRIBE with packet identifier 0"; // [MQTT-2.3.1-1]
      if (packet.unsubscriptions.length === 0) return "[MQTT-3.10.3-2]: UNSUBSCRIBE without a topic filter"; // [MQTT-3.10.3-2]
      for (const filter of packet.unsubscriptions) if (SUSPECT_TEXT.test(filter)) suspect = true;
      break;
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp":
      if (packet.messageId === 0) return `[MQTT-2.3.1-1]: ${packet.cmd.toUpperCase()} with packet identifier 0`; // [MQTT-2.3.1-1]
      break;
    case "connect":
      suspect = SUSPECT_TEXT.test(packet.clientId)
        || (packet.username !== undefined && SUSPECT_TEXT.test(packet.username))
        || (packet.will !== undefined && SUSPECT_TEXT.test(packet.will.topic))
        || (packet.will?.properties !== undefined && hasSuspectProperty(packet.will.properties));
      break;
    case "pingreq":
    case "pingresp":
      return null;
    default:
      break;
  }
  if (!suspect && packet.properties !== undefined) suspect = hasSuspectProperty(packet.properties);
  if (!suspect) return null;
  const version = packet.cmd === "connect" ? frame[connectLevelOffset(frame)]! : protocolVersion;
  return findBadString(frame, packet, version);
}

function hasSuspectProperty(properties: object): boolean {
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

/** Offset of a (pre-checked, parsed) CONNECT's protocol level byte. */
function connectLevelOffset(frame: Uint8Array): number {
  const pos = bodyOffset(frame);
  return pos + 2 + ((frame[pos]! << 8) | frame[pos + 1]!);
}

// ------------------------------------------------------------------ strict string re-read

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
const FIXED_SIZES: Readonly<Record<string, number>> = { byte: 1, int16: 2, int32: 4 };

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
      else this.skip(FIXED_SIZES[type]!);
      if (bad !== null) return bad;
    }
    return null;
  }
}

function findBadString(frame: Uint8Array, packet: Packet, version: number): string | null {
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

/**
 * mqtt-packet reports some truncated fields as sentinel values instead of errors
 * (messageId -1, string/binary property null, int property -1, var-int property false).
 */
function findParseFailure(packet: Packet): string | null {
  if (packet.messageId === -1) return "Cannot parse messageId";
  if (packet.cmd === "pingreq" || packet.cmd === "pingresp") return null;
  if (packet.properties !== undefined) {
    const bad = findBadProperty(packet.properties);
    if (bad !== null) return bad;
  }
  if (packet.cmd === "connect" && packet.will?.properties !== undefined) {
    return findBadProperty(packet.will.properties);
  }
  return null;
}

function findBadProperty(properties: object): string | null {
  for (const name in properties) {
    const value: unknown = Reflect.get(properties, name);
    if (name === "userProperties") {
      if (typeof value !== "object" || value === null) return "Cannot parse user property";
      for (const key in value) {
        if (Reflect.get(value, key) === null) return "Cannot parse user property";
      }
      continue;
    }
    if (Array.isArray(value)) {
      // Only User Property and (server-to-client) Subscription Identifier may repeat;
      // any other repeat is a Protocol Error (MQTT 5 §3.x.2.x per property).
      if (name !== "subscriptionIdentifier") return `Duplicate property ${name}`;
      for (const v of value) if (isSentinel(name, v)) return `Cannot parse property ${name}`;
    } else if (isSentinel(name, value)) {
      return `Cannot parse property ${name}`;
    }
  }
  return null;
}

function isSentinel(name: string, value: unknown): boolean {
  if (value === null || value === undefined || value === -1) return true;
  // The only variable-byte-integer property; its reader returns false when truncated.
  return value === false && name === "subscriptionIdentifier";
}

/**
 * Reads the protocol version a decoded CONNECT asks for, or `null` when the protocol name and
 * level do not form a version this broker speaks ("MQIsdp"/3, "MQTT"/4, "MQTT"/5). Bridge mode
 * (level | 0x80, a non-standard extension mqtt-packet accepts) is refused as well; the caller
 * answers `null` with CONNACK "unacceptable protocol version" [MQTT-3.1.2-2].
 * A CONNECT from {@link decodePacket} always passes: it already refuses mismatched names and
 * reports other levels, bridge levels included, as `unsupportedLevel`.
 */
export function peekConnectVersion(packet: IConnectPacket): ProtocolVersion | null {
  if ("bridgeMode" in packet && packet.bridgeMode === true) return null;
  const { protocolId, protocolVersion } = packet;
  if (protocolId === "MQIsdp") return protocolVersion === 3 ? 3 : null;
  if (protocolId === "MQTT") return protocolVersion === 4 || protocolVersion === 5 ? protocolVersion : null;
  return null;
}

// generate() only reads its options; one frozen object per version avoids an allocation per call.
const GENERATE_OPTIONS: Readonly<Record<ProtocolVersion, Readonly<{ protocolVersion: ProtocolVersion }>>> = {
  3: Object.freeze({ protocolVersion: 3 }),
  4: Object.freeze({ protocolVersion: 4 }),
  5: Object.freeze({ protocolVersion: 5 }),
};

/**
 * Encodes a packet for a connection speaking `protocolVersion` (a CONNECT uses its own
 * `protocolVersion` field). Throws on a packet mqtt-packet cannot encode: packets are built by
 * the broker, so that is a programming error, never a client's doing.
 */
export function encodePacket(packet: Packet, protocolVersion: ProtocolVersion): Uint8Array {
  const out = generate(packet, GENERATE_OPTIONS[protocolVersion]);
  // mqtt-packet silently truncates some invalid fields (e.g. messageId > 65535) instead of
  // failing; check the frame is self-consistent so a corrupt packet never reaches the wire.
  if (!isWholeFrame(out)) throw new Error(`mqtt-packet produced a malformed ${packet.cmd} packet`);
  return out;
}

function isWholeFrame(bytes: Uint8Array): boolean {
  let remaining = 0;
  let multiplier = 1;
  for (let pos = 1; pos <= MAX_LENGTH_BYTES && pos < bytes.length; pos++) {
    const byte = bytes[pos]!;
    remaining += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) return pos + 1 + remaining === bytes.length;
    multiplier *= 128;
  }
  return false;
}
