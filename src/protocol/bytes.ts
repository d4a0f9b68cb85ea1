const encoder = new TextEncoder();

/**
 * mqtt-packet hands out Buffers that may view a shared pool: copy to an exact, plain
 * Uint8Array before it is stored or sent over RPC (structured clone copies the whole
 * underlying buffer of a view).
 */
export function toBytes(payload: Uint8Array | string): Uint8Array {
  if (typeof payload === "string") return encoder.encode(payload);
  const copy = new Uint8Array(payload.byteLength);
  copy.set(payload);
  return copy;
}
