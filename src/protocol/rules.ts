/**
 * The protocol rules decodePacket applies beyond mqtt-packet's parsing, each tagged with its
 * spec id (MQTT 3.1.1 numbering; 5.0 has the same rules). The list is on decodePacket.
 * Checks return a message starting with the rule id, or null; none throws.
 */
import type { Packet } from "mqtt-packet";
import { CONNECT_PASSWORD, CONNECT_USERNAME, CONNECT_WILL, CONNECT_WILL_QOS, CONNECT_WILL_RETAIN, type DecodeFailure, type ProtocolVersion } from "./packets";
import { bodyOffset } from "./framing";
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
 * Table 2.2 [MQTT-2.2.2-1], PUBLISH QoS 3 [MQTT-3.3.1-4]. Returns the broken rule or null.
 * mqtt-packet checks these too, but without a rule id; checking first keeps the errors uniform.
 */
export function checkFixedHeader(first: number, protocolVersion: ProtocolVersion): string | null {
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

/**
 * CONNECT variable-header rules, read from the raw bytes before mqtt-packet parses (it refuses an
 * unknown level as malformed and accepts will QoS 3 and a password without a user name).
 * Returns null when the header is fine or too short to judge (mqtt-packet then reports it).
 */
export function checkConnectHeader(frame: Uint8Array): DecodeFailure | null {
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

/** An mqtt-packet error message, tagged with its rule id when it reports a protocol rule. */
export function tagParserError(error: string): string {
  return PARSER_RULE_ERRORS.get(error) ?? error;
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
      for (const sub of packet.subscriptions) if (isSuspect(sub.topic)) suspect = true;
      break;
    case "unsubscribe":
      if (packet.messageId === 0) return "[MQTT-2.3.1-1]: UNSUBSCRIBE with packet identifier 0"; // [MQTT-2.3.1-1]
      if (packet.unsubscriptions.length === 0) return "[MQTT-3.10.3-2]: UNSUBSCRIBE without a topic filter"; // [MQTT-3.10.3-2]
      for (const filter of packet.unsubscriptions) if (isSuspect(filter)) suspect = true;
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
