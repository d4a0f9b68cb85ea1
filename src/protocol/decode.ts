/**
 * Packet decoding: one complete frame into an mqtt-packet Packet, by mqtt-packet (the field's
 * codec) plus the protocol rules it does not enforce (see ./rules), so the session can trust
 * every packet it gets. Nothing here throws on untrusted input.
 */
import { parser as createParser } from "mqtt-packet";
import type { IPublishPacket, Packet, Parser } from "mqtt-packet";
import type { DecodeFailure, ProtocolVersion } from "./packets";
import {
  canonicalFrame,
  checkConnectHeader,
  checkFixedHeader,
  findLengthViolation,
  findMisplacedProperty,
  findProtocolError,
  findRuleViolation,
  tagParserError,
} from "./rules";
import { bodyOffset, isWholeFrame } from "./framing";

/** Output of {@link decodePacket}. */
export type DecodeResult = { ok: true; packet: Packet } | DecodeFailure;
export type { DecodeFailure };


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
 * Decodes one complete frame (as produced by `readFrames`) into an mqtt-packet Packet.
 *
 * Never throws. A CONNECT is decoded with the version it declares, whatever
 * `protocolVersion` says (the session learns the version from it). Decoded Buffers
 * (payloads, passwords, binary properties) may be views into `frame`: do not reuse its
 * memory while the packet is alive.
 *
 * Beyond mqtt-packet's parsing, a decoded packet satisfies these rules; a frame breaking one
 * fails with `error` starting with the rule's id (MQTT 3.1.1 numbering; 5.0 has the same rules):
 * - [MQTT-2.2.2-1] fixed-header flags: 0010 for PUBREL, SUBSCRIBE, UNSUBSCRIBE; 0000 for every
 *   other type but PUBLISH (AUTH: 5.0 only); not on a 3.1 connection, where they are unused.
 *   [§2.2.1] packet type 0, and 15 before 5.0, are reserved.
 * - [MQTT-3.3.1-4] PUBLISH with both QoS bits set; [MQTT-3.3.1-2] QoS 0 with DUP set.
 * - [MQTT-1.5.3-1] every string field (client id, will topic, user name, topic names and
 *   filters, 5.0 string and user properties) is well-formed UTF-8: no invalid or overlong
 *   sequence, no surrogate code point (ED A0..BF xx), nothing above U+10FFFF.
 * - [MQTT-1.5.3-2] no U+0000 in those strings.
 * - CONNECT: [MQTT-3.1.2-1] protocol name "MQTT" for levels 4 and 5, "MQIsdp" for level 3;
 *   [MQTT-3.1.2-3] reserved flag 0; [MQTT-3.1.2-13] / [MQTT-3.1.2-15] (both [MQTT-3.1.2-11])
 *   no will QoS / will retain without the will flag (those three not for 3.1, which lacks them);
 *   [MQTT-3.1.2-14] will QoS not 3; [MQTT-3.1.2-22] (3.1, 3.1.1) no password flag without the
 *   user name flag; [§3.1.3] nothing after the last field.
 * - [MQTT-2.3.1-1] packet identifier not 0 in PUBLISH QoS > 0, SUBSCRIBE, UNSUBSCRIBE, PUBACK,
 *   PUBREC, PUBREL, PUBCOMP.
 * - [MQTT-3.8.3-3] / [MQTT-3.10.3-2] SUBSCRIBE / UNSUBSCRIBE carry at least one topic filter
 *   (not in 3.1); [MQTT-4.7.3-1] none of them empty; [MQTT-3.8.3-4] subscription options:
 *   requested QoS not 3, reserved bits 0.
 * - [§3.4.1] .. [§3.7.1], [§3.12.1] .. [§3.15.1]: no bytes after the fields of PUBACK, PUBREC,
 *   PUBREL, PUBCOMP, PINGREQ, PINGRESP, DISCONNECT, AUTH (5.0: after their properties).
 *
 * Well-formed packets breaking a protocol rule fail with `protocolError: true` (MQTT 5 closes with
 * 0x82, not 0x81): a reason code the packet may not carry ([MQTT-3.4.2-1] and its twins,
 * [MQTT-3.14.2-1] DISCONNECT), a Payload Format Indicator, Request Problem Information or
 * Request Response Information other than 0 or 1.
 *
 * A CONNECT with the name "MQTT" or "MQIsdp" and a level other than 3, 4, 5 is not malformed:
 * it fails with `unsupportedLevel: true` (see {@link DecodeFailure}) so the session can answer
 * CONNACK 0x01 [MQTT-3.1.2-2]; the level is checked before the CONNECT flags, as the spec orders.
 * Packets only a server sends (CONNACK, SUBACK, UNSUBACK, PINGRESP) decode normally: refusing
 * them from a client is the session's job. A 3.1 CONNECT whose user name or password flag is set
 * while the field is missing decodes as without it (mosquitto's reading of 3.1).
 *
 * A PUBLISH in its plainest form (ASCII topic, no properties) and the flow acknowledgements in
 * their shortest form (PUBACK, PUBREC, PUBREL, PUBCOMP with a packet id only) are read directly,
 * with the same result as the parser's ({@link decodeThroughParser}; unit tests hold the two together).
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
  if (frame.length >= 2 && frame[0]! >> 4 === 3 && checkFixedHeader(frame[0]!, protocolVersion) === null) {
    const plain = decodePlainPublish(frame, protocolVersion);
    if (plain !== null) return { ok: true, packet: plain };
  }
  if (frame.length === 4 && frame[1] === 2) {
    const ack = decodePlainAck(frame, protocolVersion);
    if (ack !== null) return { ok: true, packet: ack };
  }
  return decodeThroughParser(frame, protocolVersion);
}

/** The first byte of each acknowledgement a client sends for a flow: its type and fixed flags [MQTT-2.2.2-1]. */
const PLAIN_ACKS: ReadonlyMap<number, "puback" | "pubrec" | "pubrel" | "pubcomp"> = new Map([
  [0x40, "puback"],
  [0x50, "pubrec"],
  [0x62, "pubrel"],
  [0x70, "pubcomp"],
]);

/**
 * PUBACK, PUBREC, PUBREL and PUBCOMP in their shortest form (Remaining Length 2: a packet id, on
 * 5.0 reason 0 Success implied), as mqtt-packet emits them, field for field: one per QoS 1
 * delivery acknowledged, so it skips the parser like the plain PUBLISH. Packet id 0 and every
 * other form (flags, a reason code, properties) take the full path.
 */
function decodePlainAck(frame: Uint8Array, version: ProtocolVersion): Packet | null {
  const cmd = PLAIN_ACKS.get(frame[0]!);
  const messageId = (frame[2]! << 8) | frame[3]!;
  if (cmd === undefined || messageId === 0) return null;
  const packet = { cmd, retain: false, qos: cmd === "pubrel" ? 1 : 0, dup: false, length: 2, topic: null, payload: null, messageId };
  return (version === 5 ? { ...packet, reasonCode: 0 } : packet) as Packet;
}

/**
 * {@link decodePacket} without the direct PUBLISH path: mqtt-packet's parser and every rule.
 * Exported for the test that holds the direct path to the same answers.
 */
export function decodeThroughParser(frame: Uint8Array, protocolVersion: ProtocolVersion): DecodeResult {
  if (frame.length < 2) return { ok: false, error: "incomplete packet" };

  const first = frame[0]!;
  // CONNECT gets a throwaway parser: mqtt-packet replaces a parser's settings with the CONNECT
  // it parses, which would switch a cached parser's version (and keep the password alive).
  const isConnect = first >> 4 === 1;
  let version = protocolVersion;
  if (isConnect) {
    const header = checkConnectHeader(frame);
    if (typeof header === "object" && header !== null) return header;
    if (header !== null) version = header;
  }
  const headerError = checkFixedHeader(first, version);
  if (headerError !== null) return { ok: false, error: headerError };
  const early = decodeWithoutParser(frame, version);
  if (early !== null) return early;
  const input = canonicalFrame(frame, version);

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
    left = parser.parse(Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength));
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
    if (error !== null) {
      const tagged = tagParserError(error);
      return tagged.protocolError ? { ok: false, error: tagged.error, protocolError: true } : { ok: false, error: tagged.error };
    }
    if (count === 0) return { ok: false, error: "incomplete packet" };
    return { ok: false, error: "trailing bytes after packet" };
  }

  const malformed = findParseFailure(packet)
    ?? findRuleViolation(packet, input, protocolVersion)
    ?? findLengthViolation(packet, input, version)
    ?? findMisplacedProperty(packet);
  if (malformed !== null) return { ok: false, error: malformed };
  const refused = findProtocolError(packet, input, protocolVersion);
  if (refused !== null) return { ok: false, error: refused, protocolError: true };
  return { ok: true, packet };
}

/**
 * The hot path's PUBLISH, read directly: the packet mqtt-packet would produce, field for field
 * (its parser is most of a small PUBLISH's decoding cost). Only the plainest case: an ASCII topic
 * without U+0000, a packet identifier that is not 0 when QoS > 0, and on 5.0 no properties (a
 * Property Length of 0). Anything else (null) takes the full path, which applies every rule.
 * The fixed-header rules were checked before.
 */
function decodePlainPublish(frame: Uint8Array, version: ProtocolVersion): IPublishPacket | null {
  const at = bodyOffset(frame);
  if (at < 0 || frame.length - at < 2) return null;
  // Exactly one packet, its Remaining Length in the shortest form: else the full path says what is wrong.
  if (!isWholeFrame(frame) || (at > 2 && frame[at - 1] === 0)) return null;
  const first = frame[0]!;
  const bits = (first >> 1) & 0b11;
  if (bits === 3) return null;
  const qos: IPublishPacket["qos"] = bits === 2 ? 2 : bits === 1 ? 1 : 0;
  const topicLength = (frame[at]! << 8) | frame[at + 1]!;
  let pos = at + 2;
  const topicEnd = pos + topicLength;
  if (topicEnd > frame.length) return null;
  let topic = "";
  for (; pos < topicEnd; pos++) {
    const c = frame[pos]!;
    if (c === 0 || c >= 0x80) return null; // U+0000 and every non-ASCII topic: the full path's UTF-8 rules
    topic += String.fromCharCode(c);
  }
  const packet: IPublishPacket = { cmd: "publish", retain: (first & 1) === 1, qos, dup: (first & 0b1000) !== 0, length: frame.length - at, topic, payload: EMPTY };
  if (qos > 0) {
    if (pos + 2 > frame.length) return null;
    const messageId = (frame[pos]! << 8) | frame[pos + 1]!;
    if (messageId === 0) return null;
    packet.messageId = messageId;
    pos += 2;
  }
  if (version === 5) {
    if (pos >= frame.length || frame[pos] !== 0) return null;
    pos++;
  }
  packet.payload = Buffer.from(frame.buffer, frame.byteOffset + pos, frame.length - pos);
  return packet;
}

const EMPTY = Buffer.alloc(0);

/**
 * The well-formed packets mqtt-packet refuses: a 5.0 AUTH with Remaining Length 0 (reason 0x00,
 * §3.15.2.1) and a 3.1 SUBSCRIBE or UNSUBSCRIBE without topic filters (3.1 does not require one;
 * mosquitto answers with an empty SUBACK). Null for every other frame.
 */
function decodeWithoutParser(frame: Uint8Array, version: ProtocolVersion): DecodeResult | null {
  const type = frame[0]! >> 4;
  if (type === 15 && version === 5 && frame.length === 2) return { ok: true, packet: { cmd: "auth", reasonCode: 0 } };
  if (version !== 3 || (type !== 8 && type !== 10) || frame.length - bodyOffset(frame) !== 2) return null;
  const at = bodyOffset(frame);
  const messageId = (frame[at]! << 8) | frame[at + 1]!;
  const cmd = type === 8 ? "SUBSCRIBE" : "UNSUBSCRIBE";
  if (messageId === 0) return { ok: false, error: `[MQTT-2.3.1-1]: ${cmd} with packet identifier 0` }; // [MQTT-2.3.1-1]
  return { ok: true, packet: type === 8 ? { cmd: "subscribe", messageId, subscriptions: [] } : { cmd: "unsubscribe", messageId, unsubscriptions: [] } };
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
