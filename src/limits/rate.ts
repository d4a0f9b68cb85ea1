/**
 * Token bucket: `rate` tokens per second, at most `burst` saved up. Pure: the caller keeps
 * the bucket (a socket attachment, an object's memory). Used for the publish and packet
 * budgets of a connection, the HTTP publish budget of an identity and the connect rates.
 */
export interface Bucket {
  tokens: number;
  /** ms timestamp of the last refill. */
  at: number;
}

export function fullBucket(burst: number, now: number): Bucket {
  return { tokens: burst, at: now };
}

/** Takes one token; false when the bucket is empty (the publish exceeds the rate). */
export function take(bucket: Bucket, rate: number, burst: number, now: number): boolean {
  const elapsed = Math.max(0, now - bucket.at);
  bucket.tokens = Math.min(burst, bucket.tokens + (elapsed * rate) / 1000);
  bucket.at = now;
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}
