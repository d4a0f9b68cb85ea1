/**
 * Stream framing: the fixed header and its Remaining Length, read straight from the bytes
 * (cheap, zero-copy, bounded by a size limit before any body is buffered).
 * Nothing here throws on untrusted input.
 */

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
 * Concatenates byte arrays, returning the one non-empty array unchanged (no copy) when all the
 * others are empty.
 */
export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let total = 0;
  let filled = 0;
  let only: Uint8Array | undefined;
  for (const p of parts) {
    if (p.length === 0) continue;
    total += p.length;
    filled++;
    only = p;
  }
  if (filled <= 1) return only ?? parts[parts.length - 1] ?? new Uint8Array(0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Offset of the variable header (after the Remaining Length), or -1 if the field is cut. */
export function bodyOffset(frame: Uint8Array): number {
  for (let pos = 1; pos <= MAX_LENGTH_BYTES && pos < frame.length; pos++) {
    if ((frame[pos]! & 0x80) === 0) return pos + 1;
  }
  return -1;
}

/** True when `bytes` is exactly one packet: its Remaining Length matches its size. */
export function isWholeFrame(bytes: Uint8Array): boolean {
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
