// Cutting a TCP byte stream into whole MQTT control packets (MQTT 3.1.1 / 5.0, section 2.2:
// a fixed header of one type byte and a 1-4 byte "remaining length", then that many bytes).
// Plain JavaScript with JSDoc types so that `npx` runs it without a build step; `tsc` checks it.

/** The largest remaining length MQTT can encode (4 bytes of 7 bits). */
export const MAX_REMAINING_LENGTH = 268_435_455;

/** Why a stream cannot be cut: `malformed` (bad remaining length) or `too_large` (over the limit). */
export class PacketError extends Error {
  /**
   * @param {"malformed" | "too_large"} code
   * @param {string} message
   */
  constructor(code, message) {
    super(message);
    this.name = "PacketError";
    this.code = code;
  }
}

/**
 * Turns arbitrary chunks of an MQTT byte stream into whole packets, byte for byte. The size of
 * a packet is checked as soon as its fixed header has arrived, before its body is buffered: a
 * packet over `maxPacketBytes` throws a PacketError and the cutter must then be discarded.
 */
export class PacketCutter {
  /** @param {number} maxPacketBytes largest whole packet (fixed header included) accepted */
  constructor(maxPacketBytes) {
    if (!Number.isInteger(maxPacketBytes) || maxPacketBytes < 2) throw new RangeError("maxPacketBytes must be an integer >= 2");
    this.maxPacketBytes = maxPacketBytes;
    /** @type {Buffer[]} chunks not yet returned as packets, in arrival order */
    this.chunks = [];
    /** Bytes held in `chunks`. */
    this.buffered = 0;
    /** Length of the packet at the head of the buffer, or -1 while its fixed header is incomplete. */
    this.need = -1;
  }

  /**
   * Adds a chunk and returns the packets it completes (possibly none, possibly several).
   * @param {Buffer} chunk
   * @returns {Buffer[]}
   */
  push(chunk) {
    /** @type {Buffer[]} */
    const out = [];
    if (chunk.length === 0) return out;
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    for (;;) {
      if (this.need < 0) {
        const need = this.headerLength();
        if (need < 0) break;
        if (need > this.maxPacketBytes) {
          throw new PacketError("too_large", `packet of ${need} bytes is over the limit of ${this.maxPacketBytes}`);
        }
        this.need = need;
      }
      if (this.buffered < this.need) break;
      out.push(this.take(this.need));
      this.need = -1;
    }
    return out;
  }

  /** Bytes of an incomplete packet held back (0 between packets). */
  get pending() {
    return this.buffered;
  }

  /**
   * The whole length of the packet at the head of the buffer from its fixed header, or -1 if
   * the header is not complete yet.
   * @returns {number}
   */
  headerLength() {
    let value = 0;
    let multiplier = 1;
    for (let i = 1; i <= 4; i++) {
      const byte = this.byteAt(i);
      if (byte < 0) return -1;
      value += (byte & 0x7f) * multiplier;
      if ((byte & 0x80) === 0) return 1 + i + value;
      multiplier *= 128;
    }
    throw new PacketError("malformed", "remaining length longer than 4 bytes");
  }

  /**
   * The byte at `index` of the buffered stream, or -1 if not there yet.
   * @param {number} index
   */
  byteAt(index) {
    let i = index;
    for (const c of this.chunks) {
      if (i < c.length) return /** @type {number} */ (c[i]);
      i -= c.length;
    }
    return -1;
  }

  /**
   * Removes the first `n` buffered bytes and returns them as one Buffer (a view when they lie
   * in a single chunk, else one copy).
   * @param {number} n
   * @returns {Buffer}
   */
  take(n) {
    const first = /** @type {Buffer} */ (this.chunks[0]);
    if (first.length >= n) {
      this.buffered -= n;
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    /** @type {Buffer[]} */
    const parts = [];
    let left = n;
    while (left > 0) {
      const c = /** @type {Buffer} */ (this.chunks[0]);
      if (c.length <= left) {
        parts.push(c);
        this.chunks.shift();
        left -= c.length;
      } else {
        parts.push(c.subarray(0, left));
        this.chunks[0] = c.subarray(left);
        left = 0;
      }
    }
    this.buffered -= n;
    return Buffer.concat(parts, n);
  }
}

/**
 * What the log wants from a CONNECT packet: the protocol (`mqtt3`, `mqtt4`, `mqtt5`) and the
 * client id; undefined when the packet is not a well-formed CONNECT.
 * @param {Buffer} packet a whole packet as returned by PacketCutter
 * @returns {{ protocol: string, clientId: string } | undefined}
 */
export function describeConnect(packet) {
  if (packet.length < 2 || packet[0] !== 0x10) return undefined;
  let pos = 1;
  while (pos < packet.length && ((/** @type {number} */ (packet[pos])) & 0x80) !== 0) pos++;
  pos++; // past the last remaining-length byte
  /** @returns {number} */
  const u16 = () => {
    if (pos + 2 > packet.length) throw new RangeError("short");
    const v = packet.readUInt16BE(pos);
    pos += 2;
    return v;
  };
  try {
    const nameLen = u16();
    pos += nameLen;
    const level = packet[pos];
    if (level === undefined) return undefined;
    pos += 1 + 1 + 2; // level, flags, keep alive
    if (level === 5) {
      // properties: a variable byte integer length, then the properties
      let len = 0;
      let mul = 1;
      for (let i = 0; i < 4; i++) {
        const b = packet[pos++];
        if (b === undefined) return undefined;
        len += (b & 0x7f) * mul;
        mul *= 128;
        if ((b & 0x80) === 0) break;
      }
      pos += len;
    }
    const idLen = u16();
    if (pos + idLen > packet.length) return undefined;
    const clientId = packet.toString("utf8", pos, pos + idLen);
    const protocol = level === 3 ? "mqtt3" : level === 4 ? "mqtt4" : level === 5 ? "mqtt5" : `level${level}`;
    return { protocol, clientId };
  } catch {
    return undefined;
  }
}
