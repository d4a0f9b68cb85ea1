/**
 * Token bucket for publishes per connection: `rate` tokens per second, at most `burst`
 * saved up. Kept in the socket attachment, so it survives hibernation. Pure.
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
