/**
 * Packet encoding by mqtt-packet, with a check that what it produced is one whole frame, and the
 * short canonical forms MQTT 5 allows (and every broker sends) written here directly.
 */
import { generate } from "mqtt-packet";
import type { Packet } from "mqtt-packet";
import type { ProtocolVersion } from "./packets";
import { isWholeFrame } from "./framing";

// generate() only reads its options; one frozen object per version avoids an allocation per call.
const GENERATE_OPTIONS: Readonly<Record<ProtocolVersion, Readonly<{ protocolVersion: ProtocolVersion }>>> = {
  3: Object.freeze({ protocolVersion: 3 }),
  4: Object.freeze({ protocolVersion: 4 }),
  5: Object.freeze({ protocolVersion: 5 }),
};

/** First byte of the acknowledgements with a packet identifier (PUBREL's flags are 0010). */
const ACK_FIRST_BYTE = { puback: 0x40, pubrec: 0x50, pubrel: 0x62, pubcomp: 0x70 } as const;

/**
 * Encodes a packet for a connection speaking `protocolVersion` (a CONNECT uses its own
 * `protocolVersion` field). Throws on a packet mqtt-packet cannot encode: packets are built by
 * the broker, so that is a programming error, never a client's doing.
 *
 * Without properties, an MQTT 5 PUBACK, PUBREC, PUBREL or PUBCOMP leaves out the Property Length,
 * and with reason 0x00 the reason code too (remaining length 2 or 3, §3.4.2.1 and its twins);
 * a DISCONNECT likewise (`e0 00`, or `e0 01 <reason>`, §3.14.2.1). A SUBACK without return codes
 * (a 3.1 SUBSCRIBE may carry no filter) is its packet identifier alone. A PUBLISH without
 * properties is written here too (`encodePublish`).
 */
export function encodePacket(packet: Packet, protocolVersion: ProtocolVersion): Uint8Array {
  const short = encodeShort(packet, protocolVersion);
  if (short !== null) return short;
  const out = generate(packet, GENERATE_OPTIONS[protocolVersion]);
  // mqtt-packet silently truncates some invalid fields (e.g. messageId > 65535) instead of
  // failing; check the frame is self-consistent so a corrupt packet never reaches the wire.
  if (!isWholeFrame(out)) throw new Error(`mqtt-packet produced a malformed ${packet.cmd} packet`);
  return out;
}

const UTF8 = new TextEncoder();

/**
 * A PUBLISH without properties (every 3.1/3.1.1 delivery, and MQTT 5 ones that carry none),
 * written directly: the per-delivery hot path, about a quarter of fan-out's CPU per delivery
 * through generate() (bench/README.md). Byte for byte what generate() writes (unit tests);
 * anything out of range falls back to generate() and its checks.
 */
function encodePublish(packet: Extract<Packet, { cmd: "publish" }>, version: ProtocolVersion): Uint8Array | null {
  if (packet.properties !== undefined && Object.keys(packet.properties).length > 0) return null;
  const qos = packet.qos;
  if (qos !== 0 && qos !== 1 && qos !== 2) return null;
  const id = packet.messageId;
  if (qos > 0 && (id === undefined || !isUint(id, 0xffff) || id === 0)) return null;
  const topic = UTF8.encode(packet.topic);
  const payload = typeof packet.payload === "string" ? UTF8.encode(packet.payload) : packet.payload;
  if (topic.length > 0xffff || !(payload instanceof Uint8Array)) return null;
  const remaining = 2 + topic.length + (qos > 0 ? 2 : 0) + (version === 5 ? 1 : 0) + payload.length;
  if (remaining > 268_435_455) return null;
  let lengthBytes = 1;
  for (let r = remaining; r >= 128; r = Math.floor(r / 128)) lengthBytes++;
  const out = new Uint8Array(1 + lengthBytes + remaining);
  out[0] = 0x30 | (packet.dup ? 0x08 : 0) | (qos << 1) | (packet.retain ? 1 : 0);
  let o = 1;
  let r = remaining;
  do {
    const digit = r % 128;
    r = Math.floor(r / 128);
    out[o++] = r > 0 ? digit | 0x80 : digit;
  } while (r > 0);
  out[o++] = topic.length >> 8;
  out[o++] = topic.length & 0xff;
  out.set(topic, o);
  o += topic.length;
  if (qos > 0 && id !== undefined) {
    out[o++] = id >> 8;
    out[o++] = id & 0xff;
  }
  if (version === 5) out[o++] = 0; // property length 0
  out.set(payload, o);
  return out;
}

function encodeShort(packet: Packet, version: ProtocolVersion): Uint8Array | null {
  switch (packet.cmd) {
    case "publish":
      return encodePublish(packet, version);
    case "puback":
    case "pubrec":
    case "pubrel":
    case "pubcomp": {
      const pid = packet.messageId;
      if (pid === undefined || !isUint(pid, 0xffff) || pid === 0) return null;
      const first = ACK_FIRST_BYTE[packet.cmd];
      if (version !== 5) return Uint8Array.of(first, 2, pid >> 8, pid & 0xff);
      const reason = packet.reasonCode ?? 0;
      if (hasProperties(packet.properties) || !isUint(reason, 0xff)) return null;
      return reason === 0 ? Uint8Array.of(first, 2, pid >> 8, pid & 0xff) : Uint8Array.of(first, 3, pid >> 8, pid & 0xff, reason);
    }
    case "disconnect": {
      if (version !== 5) return Uint8Array.of(0xe0, 0);
      const reason = packet.reasonCode ?? 0;
      if (hasProperties(packet.properties) || !isUint(reason, 0xff)) return null;
      return reason === 0 ? Uint8Array.of(0xe0, 0) : Uint8Array.of(0xe0, 1, reason);
    }
    case "suback": {
      const pid = packet.messageId;
      if (packet.granted.length > 0 || version === 5 || pid === undefined || !isUint(pid, 0xffff)) return null;
      return Uint8Array.of(0x90, 2, pid >> 8, pid & 0xff);
    }
    default:
      return null;
  }
}

function isUint(n: number, max: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= max;
}

function hasProperties(properties: object | undefined): boolean {
  return properties !== undefined && Object.keys(properties).length > 0;
}
