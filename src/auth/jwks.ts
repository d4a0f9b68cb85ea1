/**
 * A JWKS fetched by URL (`JWT_JWKS_URL`), kept per isolate. The key set is refreshed when
 * older than {@link JWKS_MAX_AGE_MS}; while the URL fails, the last good key set stays in
 * use for up to {@link JWKS_STALE_MS} after it was fetched, and the URL is tried again at
 * most every {@link JWKS_RETRY_MS}. Without a usable key set the verifier answers
 * "unavailable" (a server problem), never "bad credentials".
 */
import { createLocalJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from "jose";
import { isRecord } from "../guards";
import { errorMessage, log } from "../log";
import { readAtMost } from "../streams";

/** A fetched key set is used without asking the URL again for this long. */
export const JWKS_MAX_AGE_MS = 10 * 60 * 1000;
/** How long the last good key set is used while the URL fails. */
export const JWKS_STALE_MS = 60 * 60 * 1000;
/** After a failed fetch, or between refetches for an unknown `kid`, the URL is not asked again for this long. */
export const JWKS_RETRY_MS = 30 * 1000;
const FETCH_TIMEOUT_MS = 5_000;
/** A JWKS document is a few KiB; a larger answer is not read to the end. */
const MAX_JWKS_BYTES = 256 * 1024;

/** Outer shape only; createLocalJWKSet validates the keys themselves (and throws on a bad document). */
export function isJwksLike(doc: unknown): doc is JSONWebKeySet {
  return isRecord(doc) && Array.isArray(doc.keys);
}

export class RemoteJwks {
  private good: { keys: JWTVerifyGetKey; at: number } | null = null;
  private lastAttempt = Number.NEGATIVE_INFINITY;

  constructor(private readonly url: URL) {}

  /** The key set to verify with at `now` (ms), refreshing it first when it is due; null when there is none to use. */
  async keys(now: number): Promise<JWTVerifyGetKey | null> {
    if (this.good && now - this.good.at < JWKS_MAX_AGE_MS) return this.good.keys;
    if (now - this.lastAttempt >= JWKS_RETRY_MS) await this.refresh(now);
    return this.usable(now);
  }

  /**
   * A token names a key the set lacks: fetch again (the issuer may have rotated its keys),
   * unless the set was fetched or tried within the last {@link JWKS_RETRY_MS}. Returns the
   * new key set, `"unchanged"` when no fetch was due, or null when the fetch failed.
   */
  async refetch(now: number): Promise<JWTVerifyGetKey | "unchanged" | null> {
    if (now - this.lastAttempt < JWKS_RETRY_MS) return "unchanged";
    return (await this.refresh(now)) ? this.usable(now) : null;
  }

  private usable(now: number): JWTVerifyGetKey | null {
    return this.good && now - this.good.at < JWKS_STALE_MS ? this.good.keys : null;
  }

  private async refresh(now: number): Promise<boolean> {
    this.lastAttempt = now;
    try {
      // No redirects: one to an http:// URL would defeat the https:// rule.
      const res = await fetch(this.url, {
        headers: { accept: "application/json, application/jwk-set+json" },
        redirect: "manual",
        signal: AbortSignal.timeout(FETCH_TIMEOUT_MS),
      });
      if (res.status !== 200) {
        await res.body?.cancel().catch(() => undefined);
        throw new Error(`HTTP ${res.status}`);
      }
      const body = await readAtMost(res.body, MAX_JWKS_BYTES);
      if (body === null) throw new Error(`larger than ${MAX_JWKS_BYTES} bytes`);
      const doc: unknown = JSON.parse(new TextDecoder().decode(body));
      if (!isJwksLike(doc)) throw new Error("not a JWKS document");
      this.good = { keys: createLocalJWKSet(doc), at: now };
      return true;
    } catch (err) {
      const cached = this.usable(now) !== null;
      log(cached ? "warn" : "error", "jwt.jwks_fetch_failed", { url: this.url.href, error: errorMessage(err), usingCachedKeys: cached });
      return false;
    }
  }
}
