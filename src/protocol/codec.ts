/**
 * MQTT wire codec: stream framing, packet decoding and encoding.
 *
 * Framing is done here (cheap, zero-copy, bounded by a size limit before any body is
 * buffered); packet bodies are decoded and encoded by mqtt-packet, the field's codec.
 * Nothing in this module throws on untrusted input.
 */
import { generate, parser as createParser } from "mqtt-packet";
import type { IConnectPacket, Packet, Parser } from "mqtt-packet";

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
  QoS,
  UserProperties,
} from "mqtt-packet";

/** MQTT protocol level: 3 = 3.1 (MQIsdp), 4 = 3.1.1, 5 = 5.0. */
export type ProtocolVersion = 3 | 4 | 5;

/** Why {@link readFrames} stopped: the stream cannot continue and the connection should close. */
export interface FrameError {
  /** `malformed-length`: Remaining Length longer than 4 bytes; `too-large`: packet exceeds the limit. */
  kind: "malformed-length" | "too-large";
  message: string;
}

/** Output of {@link readFrames}. */
export interface FrameResult {
  /** Complete packets (fixed header included), in stream order. Views into the input buffer. */
  frames: Uint8Array[];
  /**
   * Unconsumed input: the incomplete tail to prepend to the next chunk, or, when `error`
   * is set, everything from the offending packet on. A view into the input buffer.
   */
  rest: Uint8Array;
  /** Set when the stream is broken; `frames` still holds the packets before the fault. */
  error?: FrameError;
}

/** Output of {@link decodePacket}. */
export type DecodeResult = { ok: true; packet: Packet } | { ok: false; error: string };

/** A Remaining Length field is at most 4 bytes [MQTT-1.5.5] (3.1.1: section 2.2.3). */
const MAX_LENGTH_BYTES = 4;

const EMPTY = new Uint8Array(0);

/**
 * Splits a byte stream into complete MQTT control packets.
 *
 * Never throws. "Need more bytes" is the normal outcome for a partial packet: it comes back
 * in `rest`, which the caller keeps and prepends (see {@link concatBytes}) to the next chunk.
 * A packet larger than `maxPacketBytes` (fixed header included) is reported as `too-large`
 * as soon as its length field is complete, so its body is never buffered.
 *
 * @param buffer pending bytes: the previous `rest` followed by the new chunk.
 * @param maxPacketBytes largest accepted packet, fixed header included.
 */
export function readFrames(buffer: Uint8Array, maxPacketBytes: number): FrameResult {
  const frames: Uint8Array[] = [];
  const end = buffer.length;
  let offset = 0;

  while (offset < end) {
    let remaining = 0;
    let multiplier = 1;
    let pos = offset + 1;
    let lengthBytes = 0;
    let complete = false;

    while (pos < end) {
      const byte = buffer[pos]!;
      pos++;
      lengthBytes++;
      remaining += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) {
        complete = true;
        break;
      }
      if (lengthBytes === MAX_LENGTH_BYTES) {
        // [MQTT-1.5.5] / 3.1.1 §2.2.3: a fourth byte with the continuation bit set is malformed.
        return {
          frames,
          rest: buffer.subarray(offset),
          error: {
            kind: "malformed-length",
            message: "Remaining Length is encoded in more than 4 bytes",
          },
        };
      }
      multiplier *= 128;
    }
    if (!complete) break;

    const total = 1 + lengthBytes + remaining;
    if (total > maxPacketBytes) {
      return {
        frames,
        rest: buffer.subarray(offset),
        error: {
          kind: "too-large",
          message: `packet of ${total} bytes exceeds the maximum of ${maxPacketBytes}`,
        },
      };
    }
    if (offset + total > end) break;

    frames.push(buffer.subarray(offset, offset + total));
    offset += total;
  }

  return { frames, rest: offset === 0 ? buffer : offset === end ? EMPTY : buffer.subarray(offset) };
}

/**
 * Concatenates two byte arrays, returning one of them unchanged (no copy) when the other is empty.
 */
export function concatBytes(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  if (b.length === 0) return a;
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

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
 * Decodes one complete frame (as produced by {@link readFrames}) into an mqtt-packet Packet.
 *
 * Never throws. A CONNECT is decoded with the version it declares, whatever
 * `protocolVersion` says (the session learns the version from it). Decoded Buffers
 * (payloads, passwords, binary properties) may be views into `frame`: do not reuse its
 * memory while the packet is alive.
 *
 * @param frame exactly one packet, fixed header included.
 * @param protocolVersion the version negotiated by the connection's CONNECT.
 */
export function decodePacket(frame: Uint8Array, protocolVersion: ProtocolVersion): DecodeResult {
  if (frame.length < 2) return { ok: false, error: "incomplete packet" };

  // CONNECT gets a throwaway parser: mqtt-packet replaces a parser's settings with the CONNECT
  // it parses, which would switch a cached parser's version (and keep the password alive).
  const isConnect = frame[0]! >> 4 === 1;
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
    if (error !== null) return { ok: false, error };
    if (count === 0) return { ok: false, error: "incomplete packet" };
    return { ok: false, error: "trailing bytes after packet" };
  }

  const leaked = findParseFailure(packet);
  if (leaked !== null) return { ok: false, error: leaked };
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

/**
 * Reads the protocol version a decoded CONNECT asks for, or `null` when the protocol name and
 * level do not form a version this broker speaks ("MQIsdp"/3, "MQTT"/4, "MQTT"/5). Bridge mode
 * (level | 0x80, a non-standard extension mqtt-packet accepts) is refused as well; the caller
 * answers `null` with CONNACK "unacceptable protocol version" [MQTT-3.1.2-2].
 */
export function peekConnectVersion(packet: IConnectPacket): ProtocolVersion | null {
  if ("bridgeMode" in packet && packet.bridgeMode === true) return null;
  const { protocolId, protocolVersion } = packet;
  if (protocolId === "MQIsdp") return protocolVersion === 3 ? 3 : null;
  if (protocolId === "MQTT") return protocolVersion === 4 || protocolVersion === 5 ? protocolVersion : null;
  return null;
}

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

function isWholeFrame(bytes: Uint8Array): boolean {
  let remaining = 0;
  let multiplier = 1;
  for (let pos = 1; pos <= MAX_LENGTH_BYTES && pos < bytes.length; pos++) {
    const byte = bytes[pos]!;
    remaining += (byte & 0x7f) * multiplier;
    if ((byte & 0x80) === 0) return pos + 1 + remaining === bytes.length;
    multiplier *= 128;
  }
  return false;
}
