/**
 * Packet encoding by mqtt-packet, with a check that what it produced is one whole frame.
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
