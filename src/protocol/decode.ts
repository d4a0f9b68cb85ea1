/**
 * Packet decoding: one complete frame into an mqtt-packet Packet, by mqtt-packet (the field's
 * codec) plus the protocol rules it does not enforce (see ./rules), so the session can trust
 * every packet it gets. Nothing here throws on untrusted input.
 */
import { parser as createParser } from "mqtt-packet";
import type { Packet, Parser } from "mqtt-packet";
import type { DecodeFailure, ProtocolVersion } from "./packets";
import { checkConnectHeader, checkFixedHeader, findMisplacedProperty, findRuleViolation, tagParserError } from "./rules";

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
    if (error !== null) return { ok: false, error: tagParserError(error) };
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
