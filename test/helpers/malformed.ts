/**
 * Byte-level table of protocol-rule violations the codec refuses ({@link MALFORMED}: MQTT 5
 * DISCONNECT 0x81; {@link PROTOCOL_ERRORS}: well-formed, but 0x82), with, for each rule, valid
 * neighbours that must still decode ({@link VALID_NEIGHBOURS}, among them the 3.1 packets 3.1.1
 * would refuse: {@link V31_ACCEPTED}), CONNECTs with an unsupported protocol level (answered with
 * CONNACK 0x01, not refused as malformed: {@link UNSUPPORTED_LEVELS}), packets a client may not
 * send that decode so the session can refuse them itself ({@link SERVER_ONLY}), and the exact
 * bytes of the short MQTT 5 acknowledgements the broker sends ({@link CANONICAL}).
 *
 * Shared by the codec unit tests, the session end-to-end tests and the fuzz test. Plain data,
 * built with the byte builders of `./bytes`: usable in Node and in workerd.
 *
 * A case's `spec` is the rule id that `decodePacket`'s error starts with (MQTT 3.1.1 numbering),
 * e.g. `MQTT-2.2.2-1` for the error `[MQTT-2.2.2-1]: ...`. A non-CONNECT case is meant to be
 * sent after a successful CONNECT of the case's `version` (see {@link isConnectFrame}).
 */
import type { Packet, ProtocolVersion } from "../../src/protocol/codec";
import { connect, frame, prop, props, publish, str, subscribe, u16, unsubscribe, utf8 } from "./bytes";

export interface WireCase {
  name: string;
  /** The rule id, without brackets: the codec's error contains `[${spec}]`. */
  spec: string;
  /** Protocol version of the connection the frame is sent on (a CONNECT declares its own). */
  version: ProtocolVersion;
  /** Exactly one complete frame, fixed header included. */
  bytes: Uint8Array;
  /** For a case the broker accepts: the packet it answers with (a CONNECT: CONNACK 0). */
  answer?: "connack" | "pingresp" | "suback" | "unsuback" | "pubcomp";
}

/** True for a CONNECT frame; every other case is sent after a CONNECT of the case's version. */
export function isConnectFrame(bytes: Uint8Array): boolean {
  return bytes[0]! >> 4 === 1;
}

// ------------------------------------------------------------------ invalid UTF-8 samples

/** Ill-formed UTF-8 byte sequences, each inside an otherwise fine topic. */
const BAD_UTF8 = {
  /** 0xFF never appears in UTF-8. */
  ff: [0x61, 0xff, 0x62],
  /** Overlong "/" (C0 AF). */
  overlong: [0x61, 0xc0, 0xaf, 0x62],
  /** Overlong U+0000 (C0 80): still not allowed as a way around the U+0000 rule. */
  overlongNul: [0x61, 0xc0, 0x80],
  /** U+D800 encoded in UTF-8 (ED A0 80): surrogates are not characters. */
  surrogate: [0x61, 0xed, 0xa0, 0x80],
  /** U+DFFF encoded (ED BF BF). */
  lowSurrogate: [0xed, 0xbf, 0xbf, 0x61],
  /** A 3-byte sequence cut short at the end of the string. */
  truncated: [0x61, 0xe2, 0x82],
  /** Above U+10FFFF (F4 90 80 80). */
  tooHigh: [0xf4, 0x90, 0x80, 0x80],
  /** A lone continuation byte. */
  continuation: [0x80, 0x61],
} as const;

// ------------------------------------------------------------------ the tables

const V = (name: string, spec: string, version: ProtocolVersion, bytes: Uint8Array): WireCase => ({ name, spec, version, bytes });

/** Protocol-rule violations: `decodePacket` returns `{ ok: false }` with `[spec]` in the error. */
export const MALFORMED: readonly WireCase[] = [
  // Fixed-header flags [MQTT-2.2.2-1] / [MQTT-2.2.2-2].
  V("CONNECT with header flags 0001", "MQTT-2.2.2-1", 4, Uint8Array.from([0x11, ...connect().subarray(1)])),
  V("CONNACK with header flags 0010", "MQTT-2.2.2-1", 4, frame(0x22, 0, 0)),
  V("PUBACK with header flags 0010", "MQTT-2.2.2-1", 4, frame(0x42, u16(1))),
  V("PUBREC with header flags 0001", "MQTT-2.2.2-1", 4, frame(0x51, u16(1))),
  V("PUBREL with header flags 0000", "MQTT-2.2.2-1", 4, frame(0x60, u16(1))),
  V("PUBREL with header flags 0011", "MQTT-2.2.2-1", 4, frame(0x63, u16(1))),
  V("PUBCOMP with header flags 1000", "MQTT-2.2.2-1", 4, frame(0x78, u16(1))),
  V("SUBSCRIBE with header flags 0000", "MQTT-2.2.2-1", 4, subscribe(1, [["a", 0]], 4, 0x80)),
  V("SUBSCRIBE with header flags 1010", "MQTT-2.2.2-1", 4, subscribe(1, [["a", 0]], 4, 0x8a)),
  V("SUBACK with header flags 0001", "MQTT-2.2.2-1", 4, frame(0x91, u16(1), 0)),
  V("UNSUBSCRIBE with header flags 0000", "MQTT-2.2.2-1", 4, unsubscribe(1, ["a"], 4, 0xa0)),
  V("UNSUBSCRIBE with header flags 0011", "MQTT-2.2.2-1", 4, unsubscribe(1, ["a"], 4, 0xa3)),
  V("UNSUBACK with header flags 0010", "MQTT-2.2.2-1", 4, frame(0xb2, u16(1))),
  V("PINGREQ with header flags 0001", "MQTT-2.2.2-1", 4, frame(0xc1)),
  V("PINGRESP with header flags 0100", "MQTT-2.2.2-1", 4, frame(0xd4)),
  V("DISCONNECT with header flags 0010", "MQTT-2.2.2-1", 4, frame(0xe2)),
  V("5.0 DISCONNECT with header flags 1000", "MQTT-2.2.2-1", 5, frame(0xe8)),
  V("5.0 AUTH with header flags 0001", "MQTT-2.2.2-1", 5, frame(0xf1, 0x18, props())),
  V("PUBLISH QoS 3", "MQTT-3.3.1-4", 4, publish({ topic: "a", qos: 3, id: 1 })),
  V("PUBLISH QoS 3 with DUP and RETAIN", "MQTT-3.3.1-4", 4, publish({ topic: "a", qos: 3, flags: 0b1111, id: 1 })),
  V("5.0 PUBLISH QoS 3", "MQTT-3.3.1-4", 5, publish({ topic: "a", qos: 3, id: 1, version: 5 })),
  V("PUBLISH QoS 0 with DUP", "MQTT-3.3.1-2", 4, publish({ topic: "a", flags: 0b1000 })),
  V("PUBLISH QoS 0 with DUP and RETAIN", "MQTT-3.3.1-2", 4, publish({ topic: "a", flags: 0b1001 })),
  V("5.0 PUBLISH QoS 0 with DUP", "MQTT-3.3.1-2", 5, publish({ topic: "a", flags: 0b1000, version: 5 })),
  V("3.1 PUBLISH QoS 0 with DUP", "MQTT-3.3.1-2", 3, publish({ topic: "a", flags: 0b1000 })),
  V("reserved packet type 0", "§2.2.1", 4, frame(0x00)),
  V("packet type 15 (AUTH) in 3.1.1", "§2.2.1", 4, frame(0xf0)),
  V("packet type 15 (AUTH) in 3.1", "§2.2.1", 3, frame(0xf0, 0)),

  // Well-formed UTF-8 [MQTT-1.5.3-1].
  V("topic name with byte FF", "MQTT-1.5.3-1", 4, publish({ topic: BAD_UTF8.ff })),
  V("topic name with an overlong '/'", "MQTT-1.5.3-1", 4, publish({ topic: BAD_UTF8.overlong })),
  V("topic name with an overlong U+0000 (C0 80)", "MQTT-1.5.3-1", 4, publish({ topic: BAD_UTF8.overlongNul })),
  V("topic name with an encoded surrogate U+D800", "MQTT-1.5.3-1", 4, publish({ topic: BAD_UTF8.surrogate })),
  V("topic name with an encoded surrogate U+DFFF", "MQTT-1.5.3-1", 4, publish({ topic: BAD_UTF8.lowSurrogate, qos: 1, id: 3 })),
  V("topic name with a truncated sequence", "MQTT-1.5.3-1", 4, publish({ topic: BAD_UTF8.truncated })),
  V("topic name above U+10FFFF", "MQTT-1.5.3-1", 4, publish({ topic: BAD_UTF8.tooHigh, qos: 2, id: 9 })),
  V("topic name with a lone continuation byte", "MQTT-1.5.3-1", 4, publish({ topic: BAD_UTF8.continuation })),
  V("3.1 topic name with byte FF", "MQTT-1.5.3-1", 3, publish({ topic: BAD_UTF8.ff })),
  V("second SUBSCRIBE filter with an encoded surrogate", "MQTT-1.5.3-1", 4, subscribe(1, [["ok", 0], [BAD_UTF8.surrogate, 1]])),
  V("UNSUBSCRIBE filter with byte FF", "MQTT-1.5.3-1", 4, unsubscribe(1, ["ok", BAD_UTF8.ff])),
  V("CONNECT client id with byte FF", "MQTT-1.5.3-1", 4, connect({ clientId: BAD_UTF8.ff })),
  V("CONNECT will topic with an overlong '/'", "MQTT-1.5.3-1", 4, connect({ will: { topic: BAD_UTF8.overlong } })),
  V("CONNECT user name with an encoded surrogate", "MQTT-1.5.3-1", 4, connect({ username: BAD_UTF8.surrogate, password: utf8("pw") })),
  V("3.1 CONNECT user name with a truncated sequence", "MQTT-1.5.3-1", 3, connect({ level: 3, username: BAD_UTF8.truncated })),
  V("5.0 CONNECT client id with byte FF", "MQTT-1.5.3-1", 5, connect({ level: 5, clientId: BAD_UTF8.ff })),
  V("5.0 PUBLISH Content Type with byte FF", "MQTT-1.5.3-1", 5, publish({ topic: "a", version: 5, properties: props(prop.contentType(BAD_UTF8.ff)) })),
  V("5.0 PUBLISH Response Topic with an encoded surrogate", "MQTT-1.5.3-1", 5, publish({ topic: "a", qos: 1, id: 2, version: 5, properties: props(prop.messageExpiry(5), prop.responseTopic(BAD_UTF8.surrogate)) })),
  V("5.0 PUBLISH user property name with byte FF", "MQTT-1.5.3-1", 5, publish({ topic: "a", version: 5, properties: props(prop.user(BAD_UTF8.ff, "v")) })),
  V("5.0 PUBLISH user property value with an overlong '/'", "MQTT-1.5.3-1", 5, publish({ topic: "a", version: 5, properties: props(prop.user("k", "v"), prop.user("k", BAD_UTF8.overlong)) })),
  V("5.0 CONNECT will Content Type above U+10FFFF", "MQTT-1.5.3-1", 5, connect({ level: 5, will: { topic: "w", properties: props(prop.contentType(BAD_UTF8.tooHigh)) } })),
  V("5.0 SUBSCRIBE filter with byte FF", "MQTT-1.5.3-1", 5, subscribe(1, [[BAD_UTF8.ff, 0]], 5)),
  V("5.0 PUBACK Reason String with byte FF", "MQTT-1.5.3-1", 5, frame(0x40, u16(1), 0x10, props(prop.reasonString(BAD_UTF8.ff)))),
  V("5.0 DISCONNECT Reason String with an encoded surrogate", "MQTT-1.5.3-1", 5, frame(0xe0, 0x00, props(prop.reasonString(BAD_UTF8.surrogate)))),

  // No U+0000 [MQTT-1.5.3-2].
  V("topic name with U+0000", "MQTT-1.5.3-2", 4, publish({ topic: [0x61, 0x00, 0x62] })),
  V("topic name that is only U+0000", "MQTT-1.5.3-2", 4, publish({ topic: [0x00], qos: 1, id: 1 })),
  V("SUBSCRIBE filter with U+0000", "MQTT-1.5.3-2", 4, subscribe(1, [[[0x61, 0x00], 0]])),
  V("UNSUBSCRIBE filter with U+0000", "MQTT-1.5.3-2", 4, unsubscribe(1, [[0x00, 0x23]])),
  V("CONNECT client id with U+0000", "MQTT-1.5.3-2", 4, connect({ clientId: [0x63, 0x00] })),
  V("CONNECT will topic with U+0000", "MQTT-1.5.3-2", 4, connect({ will: { topic: [0x77, 0x00], qos: 1 } })),
  V("CONNECT user name with U+0000", "MQTT-1.5.3-2", 4, connect({ username: [0x00, 0x75] })),
  V("5.0 PUBLISH user property value with U+0000", "MQTT-1.5.3-2", 5, publish({ topic: "a", version: 5, properties: props(prop.user("k", [0x00])) })),
  V("5.0 PUBLISH Content Type with U+0000", "MQTT-1.5.3-2", 5, publish({ topic: "a", version: 5, properties: props(prop.contentType([0x74, 0x00])) })),

  // CONNECT [MQTT-3.1.2-1] / -3 / -11 / -13 / -14 / -15 / -22.
  V("CONNECT protocol name MQTX", "MQTT-3.1.2-1", 4, connect({ name: "MQTX" })),
  V("CONNECT protocol name mqtt (lower case)", "MQTT-3.1.2-1", 4, connect({ name: "mqtt" })),
  V("CONNECT empty protocol name", "MQTT-3.1.2-1", 4, connect({ name: "" })),
  V("CONNECT protocol name MQTT at level 3", "MQTT-3.1.2-1", 3, connect({ level: 3, name: "MQTT" })),
  V("CONNECT protocol name MQIsdp at level 4", "MQTT-3.1.2-1", 4, connect({ level: 4, name: "MQIsdp" })),
  V("CONNECT protocol name MQIsdp at level 5", "MQTT-3.1.2-1", 5, connect({ level: 5, name: "MQIsdp" })),
  V("CONNECT reserved flag set", "MQTT-3.1.2-3", 4, connect({ flags: 0x03 })),
  V("5.0 CONNECT reserved flag set", "MQTT-3.1.2-3", 5, connect({ level: 5, flags: 0x01 })),
  V("CONNECT will QoS 1 without the will flag", "MQTT-3.1.2-13", 4, connect({ flags: 0x0a })),
  V("CONNECT will QoS 2 without the will flag", "MQTT-3.1.2-13", 4, connect({ flags: 0x12 })),
  V("CONNECT will retain without the will flag", "MQTT-3.1.2-15", 4, connect({ flags: 0x22 })),
  V("5.0 CONNECT will retain without the will flag", "MQTT-3.1.2-15", 5, connect({ level: 5, flags: 0x22 })),
  V("CONNECT will QoS 3", "MQTT-3.1.2-14", 4, connect({ will: { topic: "w", qos: 3 } })),
  V("5.0 CONNECT will QoS 3", "MQTT-3.1.2-14", 5, connect({ level: 5, will: { topic: "w", qos: 3 } })),
  V("CONNECT password without user name", "MQTT-3.1.2-22", 4, connect({ password: utf8("pw") })),
  V("3.1 CONNECT password without user name", "MQTT-3.1.2-22", 3, connect({ level: 3, password: utf8("pw") })),

  // Packet identifier 0 [MQTT-2.3.1-1].
  V("PUBLISH QoS 1 with packet identifier 0", "MQTT-2.3.1-1", 4, publish({ topic: "a", qos: 1, id: 0 })),
  V("PUBLISH QoS 2 with packet identifier 0", "MQTT-2.3.1-1", 4, publish({ topic: "a", qos: 2, id: 0 })),
  V("5.0 PUBLISH QoS 1 with packet identifier 0", "MQTT-2.3.1-1", 5, publish({ topic: "a", qos: 1, id: 0, version: 5 })),
  V("5.0 PUBLISH with a Session Expiry Interval (a property PUBLISH does not have)", "MQTT-2.2.2-2", 5, publish({ topic: "a", version: 5, properties: props(prop.sessionExpiry(5)) })),
  V("5.0 PUBLISH from a client with a Subscription Identifier", "MQTT-2.2.2-2", 5, publish({ topic: "a", version: 5, properties: props(prop.subscriptionIdentifier(3)) })),
  V("SUBSCRIBE with packet identifier 0", "MQTT-2.3.1-1", 4, subscribe(0, [["a", 0]])),
  V("UNSUBSCRIBE with packet identifier 0", "MQTT-2.3.1-1", 4, unsubscribe(0, ["a"])),
  V("PUBACK with packet identifier 0", "MQTT-2.3.1-1", 4, frame(0x40, u16(0))),
  V("PUBREC with packet identifier 0", "MQTT-2.3.1-1", 4, frame(0x50, u16(0))),
  V("PUBREL with packet identifier 0", "MQTT-2.3.1-1", 4, frame(0x62, u16(0))),
  V("PUBCOMP with packet identifier 0", "MQTT-2.3.1-1", 4, frame(0x70, u16(0))),
  V("5.0 PUBACK with packet identifier 0 and a reason code", "MQTT-2.3.1-1", 5, frame(0x40, u16(0), 0x10)),

  // SUBSCRIBE / UNSUBSCRIBE payloads [MQTT-3.8.3-3] / [MQTT-3.10.3-2] / [MQTT-3.8.3-4].
  V("SUBSCRIBE without topic filters", "MQTT-3.8.3-3", 4, subscribe(1, [])),
  V("5.0 SUBSCRIBE with properties and no topic filter", "MQTT-3.8.3-3", 5, subscribe(1, [], 5)),
  V("UNSUBSCRIBE without topic filters", "MQTT-3.10.3-2", 4, unsubscribe(1, [])),
  V("5.0 UNSUBSCRIBE with properties and no topic filter", "MQTT-3.10.3-2", 5, unsubscribe(1, [], 5)),
  V("SUBSCRIBE requesting QoS 3", "MQTT-3.8.3-4", 4, subscribe(1, [["a", 3]])),
  V("second SUBSCRIBE filter requesting QoS 3", "MQTT-3.8.3-4", 4, subscribe(1, [["a", 1], ["b", 3]])),
  V("SUBSCRIBE options with reserved bit 2 set", "MQTT-3.8.3-4", 4, subscribe(1, [["a", 0x04]])),
  V("SUBSCRIBE options with reserved bit 7 set", "MQTT-3.8.3-4", 4, subscribe(1, [["a", 0x81]])),
  V("3.1 SUBSCRIBE requesting QoS 3", "MQTT-3.8.3-4", 3, subscribe(1, [["a", 3]])),
  V("5.0 SUBSCRIBE requesting QoS 3", "MQTT-3.8.3-4", 5, subscribe(1, [["a", 3]], 5)),
  V("5.0 SUBSCRIBE options with reserved bit 6 set", "MQTT-3.8.3-4", 5, subscribe(1, [["a", 0x40]], 5)),

  // Bytes after the fields of fixed-layout packets (3.1.1 §3.4.1 .. §3.14.1; 5.0: after the properties).
  V("PUBACK with a byte after its packet identifier", "§3.4.1", 4, frame(0x40, u16(1), 0)),
  V("3.1 PUBACK with two bytes after its packet identifier", "§3.4.1", 3, frame(0x40, u16(1), 0, 0)),
  V("5.0 PUBACK with a byte after its properties", "§3.4.1", 5, frame(0x40, u16(1), 0x00, props(), 0xff)),
  V("PUBREC with a byte after its packet identifier", "§3.5.1", 4, frame(0x50, u16(1), 0)),
  V("PUBREL with a byte after its packet identifier", "§3.6.1", 4, frame(0x62, u16(1), 0)),
  V("PUBCOMP with a byte after its packet identifier", "§3.7.1", 4, frame(0x70, u16(1), 0)),
  V("5.0 PUBCOMP with bytes after its properties", "§3.7.1", 5, frame(0x70, u16(1), 0x00, props(prop.reasonString("r")), 0, 0)),
  V("PINGREQ with a body", "§3.12.1", 4, frame(0xc0, 0)),
  V("5.0 PINGREQ with a body", "§3.12.1", 5, frame(0xc0, 0, 0)),
  V("PINGRESP with a body", "§3.13.1", 4, frame(0xd0, 0)),
  V("5.0 PINGRESP with a body", "§3.13.1", 5, frame(0xd0, 0)),
  V("DISCONNECT with a body", "§3.14.1", 4, frame(0xe0, 0)),
  V("5.0 DISCONNECT with a byte after its properties", "§3.14.1", 5, frame(0xe0, 0x00, props(), 0)),
  V("CONNECT with a byte after its last field", "§3.1.3", 4, frame(0x10, connect({ clientId: "t" }).subarray(2), 0)),
  V("5.0 CONNECT with a byte after its password", "§3.1.3", 5, frame(0x10, connect({ level: 5, username: "u", password: utf8("p") }).subarray(2), 0)),

  // Empty topic filters [MQTT-4.7.3-1].
  V("SUBSCRIBE with an empty filter", "MQTT-4.7.3-1", 4, subscribe(1, [["", 0]])),
  V("SUBSCRIBE with an empty second filter", "MQTT-4.7.3-1", 4, subscribe(1, [["a", 1], ["", 1]])),
  V("5.0 SUBSCRIBE with an empty filter", "MQTT-4.7.3-1", 5, subscribe(1, [["", 0]], 5)),
  V("3.1 SUBSCRIBE with an empty filter", "MQTT-4.7.3-1", 3, subscribe(1, [["", 0]])),
  V("UNSUBSCRIBE with an empty filter", "MQTT-4.7.3-1", 4, unsubscribe(1, [""])),
  V("5.0 UNSUBSCRIBE with an empty second filter", "MQTT-4.7.3-1", 5, unsubscribe(1, ["a", ""], 5)),
];

/** Frames next to a rule that must still decode; `spec` names the rule they border. */
export const VALID_NEIGHBOURS: readonly WireCase[] = [
  V("5.0 PUBLISH with the properties PUBLISH may have", "MQTT-2.2.2-2", 5, publish({ topic: "a", version: 5, properties: props(prop.messageExpiry(5), prop.contentType("t"), prop.user("k", "v")) })),
  V("PUBREL with header flags 0010", "MQTT-2.2.2-1", 4, frame(0x62, u16(1))),
  V("SUBSCRIBE with header flags 0010", "MQTT-2.2.2-1", 4, subscribe(1, [["a", 0]])),
  V("UNSUBSCRIBE with header flags 0010", "MQTT-2.2.2-1", 4, unsubscribe(1, ["a"])),
  V("PINGREQ with header flags 0000", "MQTT-2.2.2-1", 4, frame(0xc0)),
  V("5.0 AUTH with header flags 0000", "MQTT-2.2.2-1", 5, frame(0xf0, 0x18, props())),
  V("PUBLISH QoS 2 with DUP and RETAIN", "MQTT-3.3.1-4", 4, publish({ topic: "a", qos: 2, flags: 0b1101, id: 1 })),
  V("5.0 AUTH re-authenticate (type 15 is a packet in 5.0)", "§2.2.1", 5, frame(0xf0, 0x19, props())),

  V("topic name with 2-, 3- and 4-byte characters", "MQTT-1.5.3-1", 4, publish({ topic: "é/€/😀" })),
  V("topic name with U+FFFD itself (EF BF BD)", "MQTT-1.5.3-1", 4, publish({ topic: "a/\uFFFD" })),
  V("topic name with U+FEFF and U+10FFFF", "MQTT-1.5.3-1", 4, publish({ topic: "\uFEFFa/\u{10FFFF}" })),
  V("payload that is not UTF-8 (binary)", "MQTT-1.5.3-1", 4, publish({ topic: "a", payload: [0xff, 0xed, 0xa0, 0x80, 0x00] })),
  V("U+FFFD in a topic and invalid bytes in the payload", "MQTT-1.5.3-1", 4, publish({ topic: "\uFFFD", qos: 1, id: 4, payload: [0xff] })),
  V("CONNECT password that is not UTF-8", "MQTT-1.5.3-1", 4, connect({ username: "u", password: [0xff, 0x00, 0xc0] })),
  V("CONNECT will payload that is not UTF-8", "MQTT-1.5.3-1", 4, connect({ will: { topic: "w", payload: [0xff, 0x00] } })),
  V("CONNECT client id with U+FFFD and a binary will payload", "MQTT-1.5.3-1", 4, connect({ clientId: "c\uFFFD", will: { topic: "w", payload: [0xff] } })),
  V("5.0 PUBLISH binary Correlation Data and U+FFFD in a user property", "MQTT-1.5.3-1", 5, publish({ topic: "a", version: 5, properties: props(prop.correlationData([0xff, 0x00]), prop.user("k", "\uFFFD")) })),
  V("5.0 CONNECT with U+FFFD in a will property", "MQTT-1.5.3-1", 5, connect({ level: 5, will: { topic: "w", properties: props(prop.contentType("\uFFFD")) }, username: "é" })),
  V("payload with byte 00", "MQTT-1.5.3-2", 4, publish({ topic: "a", payload: [0x00, 0x00] })),
  V("CONNECT password with byte 00", "MQTT-1.5.3-2", 4, connect({ username: "u", password: [0x00] })),

  V("CONNECT MQIsdp level 3", "MQTT-3.1.2-1", 3, connect({ level: 3 })),
  V("CONNECT MQTT level 5", "MQTT-3.1.2-1", 5, connect({ level: 5 })),
  V("CONNECT clean session only", "MQTT-3.1.2-3", 4, connect({ flags: 0x02 })),
  V("CONNECT with no flags at all", "MQTT-3.1.2-3", 4, connect({ flags: 0x00 })),
  V("CONNECT will QoS 2 with retain", "MQTT-3.1.2-14", 4, connect({ will: { topic: "w", qos: 2, retain: true } })),
  V("CONNECT will QoS 0 without retain", "MQTT-3.1.2-13", 4, connect({ will: { topic: "w" } })),
  V("CONNECT will retain with the will flag", "MQTT-3.1.2-15", 4, connect({ will: { topic: "w", retain: true } })),
  V("CONNECT user name and password", "MQTT-3.1.2-22", 4, connect({ username: "u", password: utf8("pw") })),
  V("CONNECT user name without password", "MQTT-3.1.2-22", 4, connect({ username: "u" })),
  V("5.0 CONNECT password without user name", "MQTT-3.1.2-22", 5, connect({ level: 5, password: utf8("pw") })),

  V("PUBLISH QoS 0 (no packet identifier)", "MQTT-2.3.1-1", 4, publish({ topic: "a" })),
  V("PUBLISH QoS 1 with packet identifier 1", "MQTT-2.3.1-1", 4, publish({ topic: "a", qos: 1, id: 1 })),
  V("PUBLISH QoS 2 with packet identifier 65535", "MQTT-2.3.1-1", 4, publish({ topic: "a", qos: 2, id: 65535 })),
  V("PUBACK with packet identifier 1", "MQTT-2.3.1-1", 4, frame(0x40, u16(1))),
  V("PUBCOMP with packet identifier 65535", "MQTT-2.3.1-1", 4, frame(0x70, u16(65535))),

  V("SUBSCRIBE with one filter", "MQTT-3.8.3-3", 4, subscribe(7, [["#", 0]])),
  V("UNSUBSCRIBE with one filter", "MQTT-3.10.3-2", 4, unsubscribe(7, ["#"])),
  V("SUBSCRIBE requesting QoS 2", "MQTT-3.8.3-4", 4, subscribe(1, [["a", 2]])),
  V("5.0 SUBSCRIBE with No Local, Retain As Published, Retain Handling 2, QoS 2", "MQTT-3.8.3-4", 5, subscribe(1, [["a", 0x2e]], 5)),

  V("PUBLISH QoS 1 with DUP", "MQTT-3.3.1-2", 4, publish({ topic: "a", qos: 1, id: 1, flags: 0b1010 })),
  V("5.0 PUBACK with reason 0x10 and no Property Length (length 3)", "§3.4.1", 5, frame(0x40, u16(1), 0x10)),
  V("5.0 PUBACK with an empty property block (length 4)", "§3.4.1", 5, frame(0x40, u16(1), 0x00, props())),
  V("PUBREC of 2 bytes", "§3.5.1", 4, frame(0x50, u16(1))),
  V("5.0 PUBREL with reason 0x92", "§3.6.1", 5, frame(0x62, u16(1), 0x92)),
  V("5.0 PUBCOMP with a Reason String", "§3.7.1", 5, frame(0x70, u16(1), 0x00, props(prop.reasonString("r")))),
  V("PINGREQ", "§3.12.1", 4, frame(0xc0)),
  V("PINGRESP", "§3.13.1", 4, frame(0xd0)),
  V("DISCONNECT", "§3.14.1", 4, frame(0xe0)),
  V("5.0 DISCONNECT 0x04 with a Session Expiry Interval", "§3.14.1", 5, frame(0xe0, 0x04, props(prop.sessionExpiry(0)))),
  V("CONNECT with a will, user name and password", "§3.1.3", 4, connect({ will: { topic: "w" }, username: "u", password: utf8("p") })),
  V("SUBSCRIBE with the one-character filter /", "MQTT-4.7.3-1", 4, subscribe(1, [["/", 0]])),
  V("UNSUBSCRIBE with the filter #", "MQTT-4.7.3-1", 4, unsubscribe(1, ["#"])),

  V("5.0 DISCONNECT 0x04", "MQTT-3.14.2-1", 5, frame(0xe0, 0x04)),
  V("5.0 DISCONNECT 0x8E (a server's code, still in the table)", "MQTT-3.14.2-1", 5, frame(0xe0, 0x8e)),
  V("5.0 PUBACK 0x10", "MQTT-3.4.2-1", 5, frame(0x40, u16(1), 0x10)),
  V("5.0 PUBREC 0x80", "MQTT-3.5.2-1", 5, frame(0x50, u16(1), 0x80)),
  V("5.0 PUBREL 0x92", "MQTT-3.6.2-1", 5, frame(0x62, u16(1), 0x92)),
  V("5.0 PUBCOMP 0x92", "MQTT-3.7.2-1", 5, frame(0x70, u16(1), 0x92)),
  V("5.0 AUTH with Remaining Length 0 (reason 0x00)", "MQTT-3.15.2-1", 5, frame(0xf0)),
  V("5.0 PUBLISH Payload Format Indicator 1", "§3.3.2.3.2", 5, publish({ topic: "a", version: 5, properties: props(prop.payloadFormat(1)) })),
  V("5.0 CONNECT will Payload Format Indicator 1", "§3.1.3.2", 5, connect({ level: 5, will: { topic: "w", properties: props(prop.payloadFormat(1)) } })),
  V("5.0 CONNECT Request Problem Information 0", "§3.1.2.11", 5, connect({ level: 5, properties: props([0x17, 0]) })),
  ...v31AcceptedCases(),
];

/**
 * CONNECTs with a valid protocol name and a level the broker does not speak: `decodePacket`
 * returns `{ ok: false, unsupportedLevel: true }`; the session answers CONNACK 0x01
 * [MQTT-3.1.2-2]. The level is judged before the flags, so bad flags do not change that.
 */
export const UNSUPPORTED_LEVELS: readonly WireCase[] = [
  V("MQTT level 6", "MQTT-3.1.2-2", 4, connect({ level: 6 })),
  V("MQTT level 2", "MQTT-3.1.2-2", 4, connect({ level: 2, name: "MQTT" })),
  V("MQTT level 0", "MQTT-3.1.2-2", 4, connect({ level: 0 })),
  V("MQTT level 255", "MQTT-3.1.2-2", 4, connect({ level: 255 })),
  V("MQIsdp level 6", "MQTT-3.1.2-2", 4, connect({ level: 6, name: "MQIsdp" })),
  V("MQTT bridge-mode level 0x84", "MQTT-3.1.2-2", 4, connect({ level: 0x84 })),
  V("MQIsdp bridge-mode level 0x83", "MQTT-3.1.2-2", 4, connect({ level: 0x83, name: "MQIsdp" })),
  V("MQTT level 6 with the reserved flag set", "MQTT-3.1.2-2", 4, connect({ level: 6, flags: 0x01 })),
  V("MQTT level 6 with nothing after the level", "MQTT-3.1.2-2", 4, frame(0x10, str("MQTT"), 6)),
];

/**
 * Packets a client may not send here: server-to-client packets, and AUTH when no authentication
 * method was negotiated (none ever is). They decode; the session closes with a Protocol Error
 * (MQTT 5: DISCONNECT 0x82).
 */
export const SERVER_ONLY: readonly WireCase[] = [
  V("CONNACK", "server-only", 4, frame(0x20, 0, 0)),
  V("SUBACK", "server-only", 4, frame(0x90, u16(1), 0)),
  V("SUBACK with packet identifier 0", "server-only", 4, frame(0x90, u16(0), 0x80)),
  V("UNSUBACK", "server-only", 4, frame(0xb0, u16(1))),
  V("PINGRESP", "server-only", 4, frame(0xd0)),
  V("5.0 CONNACK", "server-only", 5, frame(0x20, 0, 0, props())),
  V("5.0 SUBACK", "server-only", 5, frame(0x90, u16(1), props(), 0)),
  V("5.0 PINGRESP", "server-only", 5, frame(0xd0)),
  V("5.0 UNSUBACK", "server-only", 5, frame(0xb0, u16(1), props(), 0x00)),
  V("5.0 AUTH with Remaining Length 0", "§4.12", 5, frame(0xf0)),
  V("5.0 AUTH continue authentication", "§4.12", 5, frame(0xf0, 0x18, props())),
];

/**
 * Well-formed packets that break a protocol rule: `decodePacket` fails with `protocolError: true`;
 * an MQTT 5 session closes with DISCONNECT 0x82 (a CONNECT: closed without CONNACK).
 */
export const PROTOCOL_ERRORS: readonly WireCase[] = [
  V("5.0 DISCONNECT reason 0x01", "MQTT-3.14.2-1", 5, frame(0xe0, 0x01)),
  V("5.0 DISCONNECT reason 0x05 with properties", "MQTT-3.14.2-1", 5, frame(0xe0, 0x05, props())),
  V("5.0 PUBACK reason 0x05", "MQTT-3.4.2-1", 5, frame(0x40, u16(1), 0x05)),
  V("5.0 PUBREC reason 0x01", "MQTT-3.5.2-1", 5, frame(0x50, u16(1), 0x01)),
  V("5.0 PUBREL reason 0x10", "MQTT-3.6.2-1", 5, frame(0x62, u16(1), 0x10)),
  V("5.0 PUBCOMP reason 0x80", "MQTT-3.7.2-1", 5, frame(0x70, u16(1), 0x80)),
  V("5.0 AUTH reason 0x05", "MQTT-3.15.2-1", 5, frame(0xf0, 0x05, props())),
  V("5.0 PUBLISH Payload Format Indicator 2", "§3.3.2.3.2", 5, publish({ topic: "a", version: 5, properties: props(prop.payloadFormat(2)) })),
  V("5.0 PUBLISH QoS 1 Payload Format Indicator 255 after a Content Type", "§3.3.2.3.2", 5, publish({ topic: "a", qos: 1, id: 4, version: 5, properties: props(prop.contentType("t"), prop.payloadFormat(255)) })),
  V("5.0 CONNECT will Payload Format Indicator 2", "§3.1.3.2", 5, connect({ level: 5, will: { topic: "w", properties: props(prop.payloadFormat(2)) } })),
  V("5.0 CONNECT Request Problem Information 2", "§3.1.2.11", 5, connect({ level: 5, properties: props([0x17, 2]) })),
  V("5.0 CONNECT Request Response Information 3", "§3.1.2.11", 5, connect({ level: 5, properties: props([0x19, 3]) })),
];

/**
 * 3.1 packets that break a 3.1.1 rule 3.1 does not have, and that mosquitto accepts: they decode on
 * a 3.1 connection, and the broker answers them (`answer`; a CONNECT: CONNACK 0, anonymously).
 * `spec` is the 3.1.1 rule they would break. Each CONNECT has its own client id.
 */
function v31AcceptedCases(): WireCase[] {
  const A = (name: string, spec: string, bytes: Uint8Array, answer: NonNullable<WireCase["answer"]>): WireCase => ({ name, spec, version: 3, bytes, answer });
  return [
    A("3.1 PINGREQ with header flags 0010", "MQTT-2.2.2-1", frame(0xc2), "pingresp"),
    A("3.1 PUBREL with DUP (header flags 1010)", "MQTT-2.2.2-1", frame(0x6a, u16(1)), "pubcomp"),
    A("3.1 SUBSCRIBE with DUP (header flags 1010)", "MQTT-2.2.2-1", subscribe(1, [["v31/a", 0]], 3, 0x8a), "suback"),
    A("3.1 UNSUBSCRIBE with header flags 0000", "MQTT-2.2.2-1", unsubscribe(1, ["v31/a"], 3, 0xa0), "unsuback"),
    A("3.1 CONNECT with header flags 0001", "MQTT-2.2.2-1", Uint8Array.from([0x11, ...connect({ level: 3, clientId: "v31-header" }).subarray(1)]), "connack"),
    A("3.1 CONNECT reserved flag set", "MQTT-3.1.2-3", connect({ level: 3, flags: 0x03, clientId: "v31-reserved" }), "connack"),
    A("3.1 CONNECT will QoS 1 without the will flag", "MQTT-3.1.2-13", connect({ level: 3, flags: 0x0a, clientId: "v31-will-qos" }), "connack"),
    A("3.1 CONNECT will retain without the will flag", "MQTT-3.1.2-15", connect({ level: 3, flags: 0x22, clientId: "v31-will-retain" }), "connack"),
    A("3.1 CONNECT user name flag, no user name field", "§3.1.3", connect({ level: 3, flags: 0x82, clientId: "v31-no-user" }), "connack"),
    A("3.1 CONNECT user name and password flags, no password field", "§3.1.3", connect({ level: 3, flags: 0xc2, clientId: "v31-no-password", username: "" }), "connack"),
    A("3.1 SUBSCRIBE without a topic filter", "MQTT-3.8.3-3", frame(0x82, u16(2)), "suback"),
    A("3.1 UNSUBSCRIBE without a topic filter", "MQTT-3.10.3-2", frame(0xa2, u16(2)), "unsuback"),
  ];
}

/** {@link v31AcceptedCases}: the 3.1 packets 3.1.1 would refuse (also in {@link VALID_NEIGHBOURS}). */
export const V31_ACCEPTED: readonly WireCase[] = v31AcceptedCases();

/** A packet the broker builds, with the exact bytes it must go out as. */
export interface EncodingCase {
  name: string;
  spec: string;
  version: ProtocolVersion;
  packet: Packet;
  bytes: Uint8Array;
}

const E = (name: string, spec: string, version: ProtocolVersion, packet: Packet, bytes: Uint8Array): EncodingCase => ({ name, spec, version, packet, bytes });

/**
 * The canonical encodings of the broker's acknowledgements: MQTT 5 leaves out the Property Length
 * without properties, and the reason code too when it is 0x00 (§3.4.2.1 and its twins, §3.14.2.1).
 * Shared by the codec's encode test and the end-to-end tests, which look cases up by name.
 */
export const CANONICAL: readonly EncodingCase[] = [
  E("5.0 PUBACK success", "§3.4.2.1", 5, { cmd: "puback", messageId: 1, reasonCode: 0 }, frame(0x40, u16(1))),
  E("5.0 PUBACK without a reason code", "§3.4.2.1", 5, { cmd: "puback", messageId: 1 }, frame(0x40, u16(1))),
  E("5.0 PUBACK no matching subscribers", "§3.4.2.1", 5, { cmd: "puback", messageId: 1, reasonCode: 0x10 }, frame(0x40, u16(1), 0x10)),
  E("5.0 PUBACK not authorized with a Reason String", "§3.4.2.1", 5, { cmd: "puback", messageId: 1, reasonCode: 0x87, properties: { reasonString: "x" } }, frame(0x40, u16(1), 0x87, props(prop.reasonString("x")))),
  E("5.0 PUBREC success", "§3.5.2.1", 5, { cmd: "pubrec", messageId: 1, reasonCode: 0 }, frame(0x50, u16(1))),
  E("5.0 PUBREC no matching subscribers", "§3.5.2.1", 5, { cmd: "pubrec", messageId: 1, reasonCode: 0x10 }, frame(0x50, u16(1), 0x10)),
  E("5.0 PUBREL success", "§3.6.2.1", 5, { cmd: "pubrel", messageId: 1 }, frame(0x62, u16(1))),
  E("5.0 PUBREL packet identifier not found", "§3.6.2.1", 5, { cmd: "pubrel", messageId: 1, reasonCode: 0x92 }, frame(0x62, u16(1), 0x92)),
  E("5.0 PUBCOMP success", "§3.7.2.1", 5, { cmd: "pubcomp", messageId: 1 }, frame(0x70, u16(1))),
  E("5.0 DISCONNECT normal", "§3.14.2.1", 5, { cmd: "disconnect", reasonCode: 0 }, frame(0xe0)),
  E("5.0 DISCONNECT protocol error without a Reason String", "§3.14.2.1", 5, { cmd: "disconnect", reasonCode: 0x82 }, frame(0xe0, 0x82)),
  E("3.1.1 PUBACK", "§3.4.1", 4, { cmd: "puback", messageId: 1 }, frame(0x40, u16(1))),
  E("3.1.1 PUBREL", "§3.6.1", 4, { cmd: "pubrel", messageId: 1 }, frame(0x62, u16(1))),
  E("3.1 SUBACK without return codes", "§3.9", 3, { cmd: "suback", messageId: 2, granted: [] }, frame(0x90, u16(2))),
];

/** The case of {@link CANONICAL} named `name` (throws on a typo). */
export function canonical(name: string): EncodingCase {
  const c = CANONICAL.find((x) => x.name === name);
  if (!c) throw new Error(`no canonical encoding named ${name}`);
  return c;
}
