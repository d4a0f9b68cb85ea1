/**
 * The protocol rules decodePacket applies beyond mqtt-packet's parsing, each tagged with its
 * spec id (MQTT 3.1.1 numbering; 5.0 has the same rules). The list is on decodePacket.
 * Checks return a message starting with the rule id, or null; none throws.
 */
import type { Packet } from "mqtt-packet";
import { CONNECT_PASSWORD, CONNECT_USERNAME, CONNECT_WILL, CONNECT_WILL_QOS, CONNECT_WILL_RETAIN, type DecodeFailure, type ProtocolVersion } from "./packets";
import { bodyOffset } from "./framing";
import { FieldReader, LayoutError } from "./fields";
import { findBadString, hasSuspectProperty, isSuspect } from "./strings";

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

/**
 * Fixed-header rules on the first byte: reserved packet types [§2.2.1], the flags of
 * Table 2.2 [MQTT-2.2.2-1], PUBLISH QoS 3 [MQTT-3.3.1-4] and DUP on QoS 0 [MQTT-3.3.1-2].
 * Returns the broken rule or null. 3.1 has no rule for the flags of packets other than PUBLISH
 * ("not used"; mosquitto ignores them too): {@link canonicalFrame} clears them before parsing.
 * mqtt-packet checks some of these too, but without a rule id; checking first keeps the errors uniform.
 */
export function checkFixedHeader(first: number, protocolVersion: ProtocolVersion): string | null {
  const type = first >> 4;
  const flags = first & 0x0f;
  const required = HEADER_FLAGS[type]!;
  if (required === ANY_FLAGS) {
    if ((flags & 0b0110) === 0b0110) return "[MQTT-3.3.1-4]: PUBLISH with both QoS bits set"; // [MQTT-3.3.1-4]
    // [MQTT-3.3.1-2]: DUP is 0 on every QoS 0 message; mosquitto and EMQX close on it as malformed.
    if ((flags & 0b1110) === 0b1000) return "[MQTT-3.3.1-2]: PUBLISH QoS 0 with the DUP flag set";
    return null;
  }
  if (required === RESERVED_TYPE || (type === 15 && protocolVersion !== 5)) {
    return `[§2.2.1]: reserved packet type ${type}`; // 3.1.1 Table 2.1: 0 and 15 are "Forbidden"
  }
  if (flags !== required && protocolVersion !== 3) {
    // [MQTT-2.2.2-1] / [MQTT-2.2.2-2]: reserved flags must match Table 2.2, else close.
    return `[MQTT-2.2.2-1]: ${PACKET_NAMES[type]!} fixed-header flags must be ${bits4(required)}, got ${bits4(flags)}`;
  }
  return null;
}

function bits4(n: number): string {
  return n.toString(2).padStart(4, "0");
}

/**
 * CONNECT variable-header rules, read from the raw bytes before mqtt-packet parses (it refuses an
 * unknown level as malformed and accepts will QoS 3 and a password without a user name).
 * Returns the refusal, or the CONNECT's protocol level when the header is fine, or null when it
 * is too short to judge (mqtt-packet then reports it).
 *
 * 3.1 (MQIsdp) has neither the reserved-flag rule nor the will QoS / retain rules: they are
 * 3.1.1 additions, and mosquitto accepts such 3.1 CONNECTs ({@link canonicalFrame} clears those bits).
 */
export function checkConnectHeader(frame: Uint8Array): DecodeFailure | ProtocolVersion | null {
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
  if (pos >= end) return level;
  const flags = frame[pos]!;
  const willQos = (flags & CONNECT_WILL_QOS) >> 3;
  if (level !== 3) {
    if ((flags & 0x01) !== 0) return { ok: false, error: "[MQTT-3.1.2-3]: CONNECT reserved flag is set" }; // [MQTT-3.1.2-3]
    if ((flags & CONNECT_WILL) === 0) {
      // [MQTT-3.1.2-11] / [MQTT-3.1.2-13]: no will, so will QoS 0.
      if (willQos !== 0) return { ok: false, error: "[MQTT-3.1.2-13]: will QoS set without the will flag" };
      // [MQTT-3.1.2-11] / [MQTT-3.1.2-15]: no will, so will retain 0.
      if ((flags & CONNECT_WILL_RETAIN) !== 0) return { ok: false, error: "[MQTT-3.1.2-15]: will retain set without the will flag" };
    }
  }
  if ((flags & CONNECT_WILL) !== 0 && willQos === 3) {
    return { ok: false, error: "[MQTT-3.1.2-14]: will QoS 3" }; // [MQTT-3.1.2-14]
  }
  if (level !== 5 && (flags & CONNECT_PASSWORD) !== 0 && (flags & CONNECT_USERNAME) === 0) {
    return { ok: false, error: "[MQTT-3.1.2-22]: password flag set without the user name flag" }; // [MQTT-3.1.2-22]
  }
  return level;
}

/**
 * The frame mqtt-packet is given for a 3.1 connection: the fixed-header flags of packets other than
 * PUBLISH set to their Table 2.2 values (3.1 leaves them unused: a DUP on PUBREL, SUBSCRIBE or
 * UNSUBSCRIBE was even meaningful), and for a 3.1 CONNECT the flags 3.1 does not define cleared
 * (reserved bit, will QoS / retain without a will) and a user name or password flag ignored when
 * its field is missing at the end of the packet, as mosquitto does. The input is returned when
 * nothing changes; otherwise a copy, so the caller's buffer is never written.
 */
export function canonicalFrame(frame: Uint8Array, version: ProtocolVersion): Uint8Array {
  const type = frame[0]! >> 4;
  const required = HEADER_FLAGS[type]!;
  let first = frame[0]!;
  if (version === 3 && required >= 0) first = (type << 4) | required;
  const connectFlags = type === 1 ? v31ConnectFlags(frame) : null;
  if (first === frame[0] && connectFlags === null) return frame;
  const copy = frame.slice();
  copy[0] = first;
  if (connectFlags !== null) copy[connectFlags.at] = connectFlags.value;
  return copy;
}

/** A 3.1 CONNECT's flags byte as mqtt-packet must see it, when it differs; null otherwise. */
function v31ConnectFlags(frame: Uint8Array): { at: number; value: number } | null {
  try {
    const r = new FieldReader(frame);
    r.binary(); // protocol name
    if (r.u8() !== 3) return null;
    const at = r.offset;
    const flags = r.u8();
    let value = flags & ~0x01;
    if ((value & CONNECT_WILL) === 0) value &= ~(CONNECT_WILL_QOS | CONNECT_WILL_RETAIN);
    r.skip(2); // keep alive
    r.binary(); // client id
    if ((value & CONNECT_WILL) !== 0) {
      r.binary(); // will topic
      r.binary(); // will message
    }
    if ((value & CONNECT_USERNAME) !== 0) {
      if (r.remaining === 0) value &= ~(CONNECT_USERNAME | CONNECT_PASSWORD);
      else r.binary();
    }
    if ((value & CONNECT_PASSWORD) !== 0 && (value & CONNECT_USERNAME) !== 0 && r.remaining === 0) value &= ~CONNECT_PASSWORD;
    return value === flags ? null : { at, value };
  } catch (err) {
    if (err instanceof LayoutError) return null; // mqtt-packet reports the truncated field
    throw err;
  }
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

/**
 * mqtt-packet errors about a well-formed packet whose reason code is not one its packet may carry:
 * MQTT 5 Protocol Errors (DISCONNECT 0x82), not Malformed Packets.
 */
const PARSER_PROTOCOL_ERRORS: ReadonlyMap<string, string> = new Map([
  ["Invalid puback reason code", "[MQTT-3.4.2-1]: PUBACK reason code not in Table 3.4"],
  ["Invalid pubrec reason code", "[MQTT-3.5.2-1]: PUBREC reason code not in Table 3.5"],
  ["Invalid pubrel reason code", "[MQTT-3.6.2-1]: PUBREL reason code not in Table 3.6"],
  ["Invalid pubcomp reason code", "[MQTT-3.7.2-1]: PUBCOMP reason code not in Table 3.7"],
  ["Invalid disconnect reason code", "[MQTT-3.14.2-1]: DISCONNECT reason code not in Table 3.10"],
  ["Invalid auth reason code", "[MQTT-3.15.2-1]: AUTH reason code not in Table 3.13"],
]);

/** An mqtt-packet error message, tagged with its rule id when it reports a protocol rule. */
export function tagParserError(error: string): { error: string; protocolError: boolean } {
  const protocol = PARSER_PROTOCOL_ERRORS.get(error);
  if (protocol !== undefined) return { error: protocol, protocolError: true };
  return { error: PARSER_RULE_ERRORS.get(error) ?? error, protocolError: false };
}

/**
 * Post-parse rules: packet identifiers, non-empty SUBSCRIBE / UNSUBSCRIBE, string contents.
 * Strings are judged on their decoded form first; only a suspect one (U+0000 or U+FFFD) costs a
 * strict re-read of the packet's raw string fields.
 */
export function findRuleViolation(packet: Packet, frame: Uint8Array, protocolVersion: ProtocolVersion): string | null {
  let suspect = false;
  switch (packet.cmd) {
    case "publish":
      if (packet.qos !== 0 && packet.messageId === 0) return "[MQTT-2.3.1-1]: PUBLISH with QoS > 0 and packet identifier 0"; // [MQTT-2.3.1-1]
      suspect = isSuspect(packet.topic);
      break;
    case "subscribe":
      if (packet.messageId === 0) return "[MQTT-2.3.1-1]: SUBSCRIBE with packet identifier 0"; // [MQTT-2.3.1-1]
      if (packet.subscriptions.length === 0) return "[MQTT-3.8.3-3]: SUBSCRIBE without a topic filter"; // [MQTT-3.8.3-3]
      for (const sub of packet.subscriptions) {
        // [MQTT-4.7.3-1]: a topic filter is at least one character long (mosquitto closes as malformed).
        if (sub.topic === "") return "[MQTT-4.7.3-1]: empty topic filter in SUBSCRIBE";
        if (isSuspect(sub.topic)) suspect = true;
      }
      break;
    case "unsubscribe":
      if (packet.messageId === 0) return "[MQTT-2.3.1-1]: UNSUBSCRIBE with packet identifier 0"; // [MQTT-2.3.1-1]
      if (packet.unsubscriptions.length === 0) return "[MQTT-3.10.3-2]: UNSUBSCRIBE without a topic filter"; // [MQTT-3.10.3-2]
      for (const filter of packet.unsubscriptions) {
        if (filter === "") return "[MQTT-4.7.3-1]: empty topic filter in UNSUBSCRIBE"; // [MQTT-4.7.3-1]
        if (isSuspect(filter)) suspect = true;
      }
      break;
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp":
      if (packet.messageId === 0) return `[MQTT-2.3.1-1]: ${packet.cmd.toUpperCase()} with packet identifier 0`; // [MQTT-2.3.1-1]
      break;
    case "connect":
      suspect = isSuspect(packet.clientId)
        || (packet.username !== undefined && isSuspect(packet.username))
        || (packet.will !== undefined && isSuspect(packet.will.topic))
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

/** Offset of a (pre-checked, parsed) CONNECT's protocol level byte. */
function connectLevelOffset(frame: Uint8Array): number {
  const pos = bodyOffset(frame);
  return pos + 2 + ((frame[pos]! << 8) | frame[pos + 1]!);
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

/** [MQTT-2.2.2-2]: the first 5.0 property (packet or will) not allowed where it appears, or null. */
export function findMisplacedProperty(packet: Packet): string | null {
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

/** The section of each fixed-length packet's Remaining Length rule (3.1.1 numbering). */
const LENGTH_SECTIONS: Partial<Record<Packet["cmd"], string>> = {
  puback: "§3.4.1", pubrec: "§3.5.1", pubrel: "§3.6.1", pubcomp: "§3.7.1",
  pingreq: "§3.12.1", pingresp: "§3.13.1", disconnect: "§3.14.1", auth: "§3.15.1", connect: "§3.1.3",
};

/**
 * Bytes past the last field of a packet whose fields have a fixed layout: mqtt-packet reads the
 * fields and ignores what follows, so a PUBACK with a third byte or a PINGRESP with a body would
 * pass. 3.1 / 3.1.1: acknowledgements are exactly 2 bytes, PINGREQ, PINGRESP, DISCONNECT 0;
 * 5.0: a Property Length, when there, covers the rest; CONNECT: the last field ends the packet.
 */
export function findLengthViolation(packet: Packet, frame: Uint8Array, protocolVersion: ProtocolVersion): string | null {
  const section = LENGTH_SECTIONS[packet.cmd];
  if (section === undefined) return null;
  const body = frame.length - bodyOffset(frame);
  const name = packet.cmd.toUpperCase();
  try {
    switch (packet.cmd) {
      case "pingreq":
      case "pingresp":
        return body === 0 ? null : `[${section}]: ${name} with a body`;
      case "puback":
      case "pubrec":
      case "pubrel":
      case "pubcomp":
        if (protocolVersion !== 5) return body === 2 ? null : `[${section}]: ${name} with ${body - 2} byte(s) after its packet identifier`;
        return body < 4 || propertiesCoverRest(frame, 3) ? null : `[${section}]: ${name} with bytes after its properties`;
      case "disconnect":
      case "auth":
        if (protocolVersion !== 5) return body === 0 ? null : `[${section}]: ${name} with a body`;
        return body < 2 || propertiesCoverRest(frame, 1) ? null : `[${section}]: ${name} with bytes after its properties`;
      case "connect":
        return connectFieldsEnd(frame) === frame.length ? null : `[${section}]: CONNECT with bytes after its last field`;
      default:
        return null;
    }
  } catch (err) {
    if (err instanceof LayoutError) return `[${section}]: ${name} fields do not fit the packet`;
    throw err;
  }
}

/** True when the property block `skip` bytes into the body ends exactly at the end of the frame. */
function propertiesCoverRest(frame: Uint8Array, skip: number): boolean {
  const r = new FieldReader(frame);
  r.skip(skip);
  return r.propertiesEnd() === frame.length;
}

/** Offset just past the last field of a (parsed) CONNECT, read from its flags. */
function connectFieldsEnd(frame: Uint8Array): number {
  const r = new FieldReader(frame);
  r.binary(); // protocol name
  const level = r.u8();
  const flags = r.u8();
  r.skip(2); // keep alive
  if (level === 5) r.skip(r.propertiesEnd() - r.offset);
  r.binary(); // client id
  if ((flags & CONNECT_WILL) !== 0) {
    if (level === 5) r.skip(r.propertiesEnd() - r.offset);
    r.binary(); // will topic
    r.binary(); // will payload
  }
  if ((flags & CONNECT_USERNAME) !== 0) r.binary();
  if ((flags & CONNECT_PASSWORD) !== 0) r.binary();
  return r.offset;
}

/** 5.0 properties whose value is 0 or 1; any other value is a Protocol Error. */
const FLAG_PROPERTIES: ReadonlyMap<number, string> = new Map([
  [0x01, "Payload Format Indicator"],
  [0x17, "Request Problem Information"],
  [0x19, "Request Response Information"],
]);

/**
 * Well-formed packets that break a protocol rule (MQTT 5 Protocol Error, DISCONNECT 0x82): a
 * 0-or-1 property with another value. mqtt-packet turns those bytes into booleans, so the raw
 * block is read, only when such a property is present and true.
 */
export function findProtocolError(packet: Packet, frame: Uint8Array, protocolVersion: ProtocolVersion): string | null {
  try {
    if (packet.cmd === "publish") {
      if (protocolVersion !== 5 || packet.properties?.payloadFormatIndicator !== true) return null;
      const r = new FieldReader(frame);
      r.binary(); // topic
      if (packet.qos !== 0) r.skip(2);
      return badFlag(r, "§3.3.2.3.2", "PUBLISH");
    }
    if (packet.cmd !== "connect" || packet.protocolVersion !== 5) return null;
    const p = packet.properties;
    const flagged = p?.requestProblemInformation === true || p?.requestResponseInformation === true;
    if (!flagged && packet.will?.properties?.payloadFormatIndicator !== true) return null;
    const r = new FieldReader(frame);
    r.binary(); // protocol name
    r.skip(1); // level
    const flags = r.u8();
    r.skip(2); // keep alive
    const bad = badFlag(r, "§3.1.2.11", "CONNECT");
    if (bad !== null || (flags & CONNECT_WILL) === 0) return bad;
    r.binary(); // client id
    return badFlag(r, "§3.1.3.2", "will");
  } catch (err) {
    if (err instanceof LayoutError) return null; // the layout was checked before
    throw err;
  }
}

/** Walks the property block at the cursor; the first 0-or-1 property with another value. */
function badFlag(r: FieldReader, section: string, where: string): string | null {
  const stop = r.propertiesEnd();
  while (r.offset < stop) {
    const { id, type } = r.property();
    const name = FLAG_PROPERTIES.get(id);
    if (name === undefined) {
      r.skipValue(type);
      continue;
    }
    const value = r.u8();
    if (value > 1) return `[${section}]: ${where} ${name} is ${value}, not 0 or 1`;
  }
  return null;
}
