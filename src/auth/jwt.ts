/**
 * JWT verification for user / application identities (jose): HS256 with a shared
 * secret, RS256 / ES256 with a JWKS given inline or by URL.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from "jose";
import { validateAcl, type Acl } from "../topics/acl";
import { isRecord } from "../guards";

/** The verified claims the broker uses. */
export interface TokenClaims {
  /** Identity (user / application id); the MQTT username must equal it. */
  sub: string;
  /** Account the identity belongs to. */
  acc: string;
  /** Expiry, seconds since the epoch. */
  exp: number;
  /** Topic grants from the `acl` claim; `null` when absent (the caller applies the account-wide default). */
  acl: Acl | null;
}

/** Where verification keys come from; an unset member is not configured. */
export interface JwtConfig {
  /** HS256 shared secret (its UTF-8 bytes are the key). */
  secret?: string;
  /** Inline JWKS document (JSON) for RS256 / ES256; takes precedence over `jwksUrl`. */
  jwks?: string;
  /** URL of a JWKS for RS256 / ES256. */
  jwksUrl?: string;
}

/** Outcome of {@link verifyToken}. `unconfigured`: no key source is configured at all. */
export type VerifyResult =
  | { ok: true; claims: TokenClaims }
  | { ok: false; reason: "expired" | "invalid" | "unconfigured" };

/** The JWT-related secrets of the Worker environment; empty strings count as unset. */
/** The secrets JWT verification reads (a subset of the Worker's bindings). */
export interface JwtBindings {
  JWT_SECRET?: string;
  JWT_JWKS?: string;
  JWT_JWKS_URL?: string;
}

export function jwtConfigFromEnv(env: JwtBindings): JwtConfig {
  const config: JwtConfig = {};
  if (env.JWT_SECRET) config.secret = env.JWT_SECRET;
  if (env.JWT_JWKS) config.jwks = env.JWT_JWKS;
  if (env.JWT_JWKS_URL) config.jwksUrl = env.JWT_JWKS_URL;
  return config;
}

/** Accepts `exp` up to this long in the past and `nbf` this far in the future, for clock skew between issuer and edge. */
const CLOCK_TOLERANCE_SECONDS = 5;
/** Remote JWKS documents are refetched at most this often (plus on an unknown `kid`, per jose's cooldown). */
const REMOTE_JWKS_MAX_AGE_MS = 10 * 60 * 1000;
/** Longer tokens are rejected before any parsing (the MQTT password field allows 64 KiB). */
const MAX_TOKEN_LENGTH = 16 * 1024;
const MAX_ID_LENGTH = 128;
/** Bounds the per-isolate key caches; configs change only on redeploy, so this is never reached in practice. */
const MAX_CACHE_ENTRIES = 8;

const HMAC_ALGS = ["HS256"];
const ASYMMETRIC_ALGS = ["RS256", "ES256"];

// Per-isolate caches: a Worker isolate serves many connections, so keys are parsed once.
const secretKeys = new Map<string, Uint8Array>();
/** `null` caches "this JWKS document is unusable" so a bad config is not reparsed per CONNECT. */
const localJwks = new Map<string, JWTVerifyGetKey | null>();
const remoteJwks = new Map<string, JWTVerifyGetKey | null>();

function cacheSet<V>(cache: Map<string, V>, key: string, value: V): V {
  if (cache.size >= MAX_CACHE_ENTRIES) cache.clear();
  cache.set(key, value);
  return value;
}

function secretKey(secret: string): Uint8Array {
  return secretKeys.get(secret) ?? cacheSet(secretKeys, secret, new TextEncoder().encode(secret));
}

/** Outer shape only; createLocalJWKSet validates the keys themselves (and throws on a bad document). */
function isJwksLike(doc: unknown): doc is JSONWebKeySet {
  return isRecord(doc) && Array.isArray(doc.keys);
}

function localKeySet(jwks: string): JWTVerifyGetKey | null {
  const cached = localJwks.get(jwks);
  if (cached !== undefined) return cached;
  let keySet: JWTVerifyGetKey | null = null;
  try {
    const doc: unknown = JSON.parse(jwks);
    if (isJwksLike(doc)) keySet = createLocalJWKSet(doc);
  } catch {
    keySet = null;
  }
  return cacheSet(localJwks, jwks, keySet);
}

function remoteKeySet(url: string): JWTVerifyGetKey | null {
  const cached = remoteJwks.get(url);
  if (cached !== undefined) return cached;
  let keySet: JWTVerifyGetKey | null;
  try {
    keySet = createRemoteJWKSet(new URL(url), { cacheMaxAge: REMOTE_JWKS_MAX_AGE_MS });
  } catch {
    keySet = null;
  }
  return cacheSet(remoteJwks, url, keySet);
}

function asymmetricKeySet(config: JwtConfig): JWTVerifyGetKey | null {
  if (config.jwks) return localKeySet(config.jwks);
  if (config.jwksUrl) return remoteKeySet(config.jwksUrl);
  return null;
}

/** `sub` / `acc` become topic levels and object names: no separators or wildcards, no NUL. */
function isIdentifier(value: unknown): value is string {
  if (typeof value !== "string" || value.length === 0 || value.length > MAX_ID_LENGTH) return false;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c === 0x2f || c === 0x2b || c === 0x23 || c === 0) return false;
  }
  return true;
}

function claimsOf(payload: JWTPayload): TokenClaims | null {
  const sub: unknown = payload.sub;
  const acc: unknown = payload["acc"];
  const exp: unknown = payload.exp;
  if (!isIdentifier(sub) || !isIdentifier(acc) || typeof exp !== "number") return null;
  const rawAcl: unknown = payload["acl"];
  let acl: Acl | null = null;
  if (rawAcl !== undefined) {
    acl = validateAcl(rawAcl);
    if (acl === null) return null;
  }
  return { sub, acc, exp, acl };
}

const INVALID: VerifyResult = { ok: false, reason: "invalid" };
const EXPIRED: VerifyResult = { ok: false, reason: "expired" };
const UNCONFIGURED: VerifyResult = { ok: false, reason: "unconfigured" };

/**
 * Verify a compact JWS JWT. The key source is chosen by the header's `alg`: HS256 →
 * `secret`; RS256 / ES256 → the JWKS. Any other alg (incl. `none`), or an alg whose key
 * source is not configured, is `invalid`. `exp` is required; `sub` and `acc` must be
 * identifiers (1–128 chars, no `/`, `+`, `#`, NUL); `acl` is optional but must be valid
 * when present. `expired` is only reported for a correctly signed token. A JWKS that
 * cannot be fetched or parsed also yields `invalid`.
 * @param now current time in milliseconds since the epoch (defaults to the clock).
 */
export async function verifyToken(token: string, config: JwtConfig, now?: number): Promise<VerifyResult> {
  if (!config.secret && !config.jwks && !config.jwksUrl) return UNCONFIGURED;
  if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return INVALID;
  let alg: unknown;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch {
    return INVALID;
  }
  const options: JWTVerifyOptions = {
    requiredClaims: ["exp"],
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
  };
  if (now !== undefined) options.currentDate = new Date(now);
  try {
    let payload: JWTPayload;
    if (alg === "HS256") {
      if (!config.secret) return INVALID;
      options.algorithms = HMAC_ALGS;
      payload = (await jwtVerify(token, secretKey(config.secret), options)).payload;
    } else if (alg === "RS256" || alg === "ES256") {
      const keySet = asymmetricKeySet(config);
      if (keySet === null) return INVALID;
      options.algorithms = ASYMMETRIC_ALGS;
      payload = (await jwtVerify(token, keySet, options)).payload;
    } else {
      return INVALID;
    }
    const claims = claimsOf(payload);
    return claims === null ? INVALID : { ok: true, claims };
  } catch (err) {
    // jose checks the signature before the claims, so JWTExpired implies an authentic token.
    return err instanceof errors.JWTExpired ? EXPIRED : INVALID;
  }
}
