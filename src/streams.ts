/**
 * Reading a byte stream from outside (an HTTP request or response body) without trusting
 * its length: the count runs while the stream is read, and reading stops past the limit.
 */

/**
 * The whole of `body` if it holds at most `max` bytes; `null` as soon as more arrive, after
 * cancelling the stream, so the rest is never pulled (a chunked body announces no length).
 * A missing body is empty.
 */
export async function readAtMost(body: ReadableStream<Uint8Array> | null, max: number): Promise<Uint8Array | null> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel("body over the limit").catch(() => undefined);
      return null;
    }
    chunks.push(value);
  }
  // Always a fresh buffer: a chunk may be a view into a larger one, which an RPC would copy whole.
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}
