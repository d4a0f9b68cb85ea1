/**
 * A cursor over the raw fields of one frame, for the checks mqtt-packet's decoded form cannot
 * answer: strict strings (./strings), property values it turns into booleans, the exact end of a
 * packet's fields (./rules). Reads past the end throw {@link LayoutError}, which the callers catch.
 */
import { bodyOffset } from "./framing";

/** A field runs past the end of the frame (or the frame has no whole fixed header). */
export class LayoutError extends Error {}

/** 5.0 property ids (one byte each; all are below 0x80) → name and wire type. */
export type PropertyKind = "byte" | "int16" | "int32" | "var" | "string" | "pair" | "binary";
export const PROPERTY_KINDS: ReadonlyMap<number, readonly [string, PropertyKind]> = new Map([
  [0x01, ["payloadFormatIndicator", "byte"]],
  [0x02, ["messageExpiryInterval", "int32"]],
  [0x03, ["contentType", "string"]],
  [0x08, ["responseTopic", "string"]],
  [0x09, ["correlationData", "binary"]],
  [0x0b, ["subscriptionIdentifier", "var"]],
  [0x11, ["sessionExpiryInterval", "int32"]],
  [0x12, ["assignedClientIdentifier", "string"]],
  [0x13, ["serverKeepAlive", "int16"]],
  [0x15, ["authenticationMethod", "string"]],
  [0x16, ["authenticationData", "binary"]],
  [0x17, ["requestProblemInformation", "byte"]],
  [0x18, ["willDelayInterval", "int32"]],
  [0x19, ["requestResponseInformation", "byte"]],
  [0x1a, ["responseInformation", "string"]],
  [0x1c, ["serverReference", "string"]],
  [0x1f, ["reasonString", "string"]],
  [0x21, ["receiveMaximum", "int16"]],
  [0x22, ["topicAliasMaximum", "int16"]],
  [0x23, ["topicAlias", "int16"]],
  [0x24, ["maximumQoS", "byte"]],
  [0x25, ["retainAvailable", "byte"]],
  [0x26, ["userProperty", "pair"]],
  [0x27, ["maximumPacketSize", "int32"]],
  [0x28, ["wildcardSubscriptionAvailable", "byte"]],
  [0x29, ["subscriptionIdentifiersAvailable", "byte"]],
  [0x2a, ["sharedSubscriptionAvailable", "byte"]],
]);
export const FIXED_SIZES: Readonly<Record<"byte" | "int16" | "int32", number>> = { byte: 1, int16: 2, int32: 4 };

/** Reads a frame's body (after the fixed header) field by field. */
export class FieldReader {
  protected pos: number;
  protected readonly end: number;

  constructor(protected readonly bytes: Uint8Array) {
    this.pos = bodyOffset(bytes);
    this.end = bytes.length;
    if (this.pos < 0) throw new LayoutError();
  }

  /** Bytes left after the cursor. */
  get remaining(): number {
    return this.end - this.pos;
  }

  /** Offset of the cursor in the frame. */
  get offset(): number {
    return this.pos;
  }

  skip(n: number): void {
    if (this.pos + n > this.end) throw new LayoutError();
    this.pos += n;
  }

  u8(): number {
    if (this.pos >= this.end) throw new LayoutError();
    return this.bytes[this.pos++]!;
  }

  u16(): number {
    return (this.u8() << 8) | this.u8();
  }

  varint(): number {
    let value = 0;
    for (let i = 0, mul = 1; i < 4; i++, mul *= 128) {
      const b = this.u8();
      value += (b & 0x7f) * mul;
      if ((b & 0x80) === 0) return value;
    }
    throw new LayoutError();
  }

  /** Skips a length-prefixed binary (or string) field. */
  binary(): void {
    this.skip(this.u16());
  }

  /** Skips one property value of wire type `type`. */
  skipValue(type: PropertyKind): void {
    if (type === "string" || type === "binary") this.binary();
    else if (type === "pair") {
      this.binary();
      this.binary();
    } else if (type === "var") this.varint();
    else this.skip(FIXED_SIZES[type]);
  }

  /** Reads a property block's length and returns the offset where the block ends. */
  propertiesEnd(): number {
    const length = this.varint();
    const stop = this.pos + length;
    if (stop > this.end) throw new LayoutError();
    return stop;
  }

  /** The next property's id, name and wire type (an unknown id breaks the layout). */
  property(): { id: number; name: string; type: PropertyKind } {
    const id = this.u8();
    const kind = PROPERTY_KINDS.get(id);
    if (kind === undefined) throw new LayoutError();
    return { id, name: kind[0], type: kind[1] };
  }
}
