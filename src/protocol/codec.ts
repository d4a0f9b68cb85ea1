/**
 * MQTT wire codec, the one entry the rest of the broker imports: stream framing (./framing),
 * packet decoding with the protocol rules (./decode, ./rules, ./strings) and encoding (./encode).
 * Nothing behind it throws on untrusted input.
 */
export type {
  IAuthPacket,
  IConnackPacket,
  IConnectPacket,
  IDisconnectPacket,
  IPacket,
  IPingreqPacket,
  IPingrespPacket,
  IPubackPacket,
  IPubcompPacket,
  IPublishPacket,
  IPubrecPacket,
  IPubrelPacket,
  ISubackPacket,
  ISubscribePacket,
  ISubscription,
  IUnsubackPacket,
  IUnsubscribePacket,
  Packet,
  PacketCmd,
  UserProperties,
} from "mqtt-packet";
export type { ProtocolVersion } from "./packets";
export { concatBytes, readFrames, type FrameError, type FrameResult } from "./framing";
export { decodePacket, type DecodeFailure, type DecodeResult } from "./decode";
export { encodePacket } from "./encode";
