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
 * (a 3.1 SUBSCRIBE may carry no filter) is its packet identifier alone.
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

function encodeShort(packet: Packet, version: ProtocolVersion): Uint8Array | null {
  switch (packet.cmd) {
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
