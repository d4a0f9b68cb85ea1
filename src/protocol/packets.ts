/**
 * Definitions shared by the codec modules: the protocol levels this broker speaks and the
 * CONNECT flag bits. Packet types come from mqtt-packet (re-exported by ./codec).
 */

/** MQTT protocol level: 3 = 3.1 (MQIsdp), 4 = 3.1.1, 5 = 5.0. */
export type ProtocolVersion = 3 | 4 | 5;

/** CONNECT flag bits (3.1.1 §3.1.2.3; bit 0 is reserved). */
export const CONNECT_WILL = 0x04;
export const CONNECT_WILL_QOS = 0x18;
export const CONNECT_WILL_RETAIN = 0x20;
export const CONNECT_PASSWORD = 0x40;
export const CONNECT_USERNAME = 0x80;
