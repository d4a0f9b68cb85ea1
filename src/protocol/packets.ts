/**
 * Definitions shared by the codec modules: the protocol levels this broker speaks, a refused
 * frame, and the CONNECT flag bits. Packet types come from mqtt-packet (re-exported by ./codec).
 */

/** MQTT protocol level: 3 = 3.1 (MQIsdp), 4 = 3.1.1, 5 = 5.0. */
export type ProtocolVersion = 3 | 4 | 5;

/** CONNECT flag bits (3.1.1 §3.1.2.3; bit 0 is reserved). */
export const CONNECT_WILL = 0x04;
export const CONNECT_WILL_QOS = 0x18;
export const CONNECT_WILL_RETAIN = 0x20;
export const CONNECT_PASSWORD = 0x40;
export const CONNECT_USERNAME = 0x80;

/** A frame `decodePacket` refused. */
export interface DecodeFailure {
  ok: false;
  /**
   * `"[MQTT-x.y.z-n]: what"` when a protocol rule listed on `decodePacket` is broken;
   * otherwise mqtt-packet's message (truncated field, unknown property, ...).
   */
  error: string;
  /**
   * The packet is well formed but breaks a protocol rule (a reason code its packet may not carry,
   * a 0-or-1 property with another value): MQTT 5 closes with 0x82 Protocol Error, not 0x81.
   */
  protocolError?: true;
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
