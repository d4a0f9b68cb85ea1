/**
 * JWT verification for user / application identities (jose): HS256 with a shared
 * secret, RS256 / ES256 with a JWKS given inline or by URL; optional issuer and audience
 * checks and a maximum token lifetime.
 */
import {
  createLocalJWKSet,
  decodeProtectedHeader,
  errors,
  jwtVerify,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from "jose";
import { validateAcl, type Acl } from "../topics/acl";
import { log } from "../log";
import { isValidAccountId } from "./passwords";
import { RemoteJwks, isJwksLike } from "./jwks";

/** The verified claims the broker uses. */
export interface TokenClaims {
  /** Identity (user / application id); the MQTT username must equal it. */
  sub: string;
  /** Account the identity belongs to (the admin API's account id rule). */
  acc: string;
  /** Expiry, seconds since the epoch. */
  exp: number;
  /** Topic grants from the `acl` claim; `null` when absent (the caller applies the account-wide default). */
  acl: Acl | null;
}

/** A configuration value that makes JWT authentication unusable: which var, and why. */
export interface ConfigProblem {
  variable: string;
  message: string;
}

/** Where verification keys come from and what a token must say; an unset member is not configured or not checked. */
export interface JwtConfig {
  /** HS256 shared secret (its UTF-8 bytes are the key). */
  secret?: string;
  /** Inline JWKS document (JSON) for RS256 / ES256; takes precedence over `jwksUrl`. */
  jwks?: string;
  /** URL of a JWKS for RS256 / ES256. */
  jwksUrl?: string;
  /** Required `iss`. */
  issuer?: string;
  /** Required `aud` (one of the token's audiences). */
  audience?: string;
  /** Longest accepted lifetime, `exp - iat` (or `exp - now` without `iat`); 0 or unset: no limit. */
  maxTtlSeconds?: number;
  /** Set when a var is unusable: then every token is answered `misconfigured`. */
  invalid?: ConfigProblem;
}

/** Outcome of {@link verifyToken}. */
export type VerifyResult =
  | { ok: true; claims: TokenClaims }
  /**
   * `expired`: authentic but past `exp`; `invalid`: does not verify or breaks a claim rule;
   * `unconfigured`: no key source at all; `unavailable`: the JWKS URL cannot be read and no
   * recent key set is cached (a server problem, not the client's).
   */
  | { ok: false; reason: "expired" | "invalid" | "unconfigured" | "unavailable" }
  | { ok: false; reason: "misconfigured"; problem: ConfigProblem };

/** The vars and secrets JWT verification reads (a subset of the Worker's bindings); empty strings count as unset. */
export interface JwtBindings {
  JWT_SECRET?: string;
  JWT_JWKS?: string;
  JWT_JWKS_URL?: string;
  JWT_ISSUER?: string;
  JWT_AUDIENCE?: string;
  JWT_MAX_TTL_SECONDS?: string;
}

/** An HS256 secret shorter than this many bytes is refused (RFC 7518 §3.2: at least the hash size). */
export const MIN_SECRET_BYTES = 32;
/** `JWT_MAX_TTL_SECONDS` when unset: 30 days, the longest token the admin API mints. */
export const DEFAULT_MAX_TTL_SECONDS = 30 * 24 * 3600;

const configs = new WeakMap<JwtBindings, JwtConfig>();
const reported = new Set<string>();

/**
 * The JWT configuration from the Worker's vars, checked once per env object (one per
 * isolate): a `JWT_SECRET` under {@link MIN_SECRET_BYTES} bytes, a `JWT_JWKS_URL` that is
 * not `https:` (plain `http:` only for localhost), an unparsable `JWT_JWKS` or a bad
 * `JWT_MAX_TTL_SECONDS` make the config `invalid` and log `config.invalid` once.
 */
export function jwtConfigFromEnv(env: JwtBindings): JwtConfig {
  const cached = configs.get(env);
  if (cached) return cached;
  const config = parseJwtConfig(env);
  configs.set(env, config);
  if (config.invalid) {
    const key = `${config.invalid.variable}\u0000${config.invalid.message}`;
    if (!reported.has(key)) {
      reported.add(key);
      log("error", "config.invalid", { var: config.invalid.variable, error: config.invalid.message });
    }
  }
  return config;
}

function parseJwtConfig(env: JwtBindings): JwtConfig {
  const config: JwtConfig = {};
  const problem = (variable: string, message: string): JwtConfig => ({ ...config, invalid: { variable, message } });
  if (env.JWT_SECRET) {
    const bytes = new TextEncoder().encode(env.JWT_SECRET).byteLength;
    if (bytes < MIN_SECRET_BYTES) return problem("JWT_SECRET", `JWT_SECRET must be at least ${MIN_SECRET_BYTES} bytes (it has ${bytes}); generate one with: openssl rand -base64 32`);
    config.secret = env.JWT_SECRET;
  }
  if (env.JWT_JWKS) {
    if (!isJwksDocument(env.JWT_JWKS)) return problem("JWT_JWKS", 'JWT_JWKS must be a JWKS document: {"keys": [...]}');
    config.jwks = env.JWT_JWKS;
  }
  if (env.JWT_JWKS_URL) {
    const urlProblem = jwksUrlProblem(env.JWT_JWKS_URL);
    if (urlProblem) return problem("JWT_JWKS_URL", urlProblem);
    config.jwksUrl = env.JWT_JWKS_URL;
  }
  const issuer = env.JWT_ISSUER?.trim();
  if (issuer) config.issuer = issuer;
  const audience = env.JWT_AUDIENCE?.trim();
  if (audience) config.audience = audience;
  const ttl = env.JWT_MAX_TTL_SECONDS?.trim();
  if (ttl) {
    const n = Number(ttl);
    if (!Number.isInteger(n) || n < 0) return problem("JWT_MAX_TTL_SECONDS", "JWT_MAX_TTL_SECONDS must be a whole number of seconds (0 = no limit)");
    config.maxTtlSeconds = n;
  } else {
    config.maxTtlSeconds = DEFAULT_MAX_TTL_SECONDS;
  }
  return config;
}

function isJwksDocument(text: string): boolean {
  try {
    return isJwksLike(JSON.parse(text));
  } catch {
    return false;
  }
}

/** Loopback names: a local identity provider under `wrangler dev` may serve its JWKS over plain HTTP. */
const LOOPBACK_HOSTS = new Set(["localhost", "127.0.0.1", "[::1]"]);

/** Why `url` cannot be the JWKS URL, or null: `https:` only, plain `http:` for loopback hosts. */
export function jwksUrlProblem(url: string): string | null {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return "JWT_JWKS_URL is not a URL";
  }
  if (parsed.protocol === "https:") return null;
  if (parsed.protocol === "http:" && LOOPBACK_HOSTS.has(parsed.hostname)) return null;
  return "JWT_JWKS_URL must be an https:// URL (plain http:// only for localhost / 127.0.0.1)";
}

/** Accepts `exp` up to this long in the past and `nbf` this far in the future, for clock skew between issuer and edge. */
const CLOCK_TOLERANCE_SECONDS = 5;
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
const remoteJwks = new Map<string, RemoteJwks | null>();

function cacheSet<V>(cache: Map<string, V>, key: string, value: V): V {
  if (cache.size >= MAX_CACHE_ENTRIES) cache.clear();
  cache.set(key, value);
  return value;
}

function secretKey(secret: string): Uint8Array {
  return secretKeys.get(secret) ?? cacheSet(secretKeys, secret, new TextEncoder().encode(secret));
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

function remoteKeySet(url: string): RemoteJwks | null {
  const cached = remoteJwks.get(url);
  if (cached !== undefined) return cached;
  let remote: RemoteJwks | null;
  try {
    remote = new RemoteJwks(new URL(url));
  } catch {
    remote = null;
  }
  return cacheSet(remoteJwks, url, remote);
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
  if (!isIdentifier(sub) || typeof acc !== "string" || !isValidAccountId(acc) || typeof exp !== "number") return null;
  const rawAcl: unknown = payload["acl"];
  let acl: Acl | null = null;
  if (rawAcl !== undefined) {
    acl = validateAcl(rawAcl);
    if (acl === null) return null;
  }
  return { sub, acc, exp, acl };
}

/**
 * Whether the token lives longer than `maxTtlSeconds`: `exp - iat`, where an `iat` later
 * than now counts as now (a future `iat` must not stretch the window), or `exp - now`.
 */
function tooLong(payload: JWTPayload, exp: number, maxTtlSeconds: number | undefined, nowMs: number): boolean {
  if (!maxTtlSeconds) return false;
  const nowS = Math.floor(nowMs / 1000);
  const issued = typeof payload.iat === "number" ? Math.min(payload.iat, nowS) : nowS;
  return exp - issued > maxTtlSeconds;
}

const INVALID: VerifyResult = { ok: false, reason: "invalid" };
const EXPIRED: VerifyResult = { ok: false, reason: "expired" };
const UNCONFIGURED: VerifyResult = { ok: false, reason: "unconfigured" };
const UNAVAILABLE: VerifyResult = { ok: false, reason: "unavailable" };

/**
 * Verify a compact JWS JWT. The key source is chosen by the header's `alg`: HS256 →
 * `secret`; RS256 / ES256 → the JWKS. Any other alg (incl. `none`), or an alg whose key
 * source is not configured, is `invalid`. `exp` is required; `iss` / `aud` must match
 * when configured; the lifetime must not exceed `maxTtlSeconds`; `sub` must be an
 * identifier (1–128 chars, no `/`, `+`, `#`, NUL) and `acc` an account id (1–64 of
 * `A-Z a-z 0-9 _ . -`); `acl` is optional but must be valid when present. `expired` is
 * only reported for a correctly signed token. A JWKS URL that cannot be read, with no key
 * set from it in the last hour, is `unavailable`; an invalid config is `misconfigured`.
 * @param now current time in milliseconds since the epoch (defaults to the clock).
 */
export async function verifyToken(token: string, config: JwtConfig, now?: number): Promise<VerifyResult> {
  if (config.invalid) return { ok: false, reason: "misconfigured", problem: config.invalid };
  if (!config.secret && !config.jwks && !config.jwksUrl) return UNCONFIGURED;
  if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) return INVALID;
  let alg: unknown;
  try {
    alg = decodeProtectedHeader(token).alg;
  } catch {
    return INVALID;
  }
  const nowMs = now ?? Date.now();
  const options: JWTVerifyOptions = {
    requiredClaims: ["exp"],
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
    currentDate: new Date(nowMs),
  };
  if (config.issuer !== undefined) options.issuer = config.issuer;
  if (config.audience !== undefined) options.audience = config.audience;
  try {
    let payload: JWTPayload;
    if (alg === "HS256") {
      if (!config.secret) return INVALID;
      options.algorithms = HMAC_ALGS;
      payload = (await jwtVerify(token, secretKey(config.secret), options)).payload;
    } else if (alg === "RS256" || alg === "ES256") {
      options.algorithms = ASYMMETRIC_ALGS;
      const verified = await verifyAsymmetric(token, config, options, nowMs);
      if (!verified.ok) return verified.failure;
      payload = verified.payload;
    } else {
      return INVALID;
    }
    const claims = claimsOf(payload);
    if (claims === null || tooLong(payload, claims.exp, config.maxTtlSeconds, nowMs)) return INVALID;
    return { ok: true, claims };
  } catch (err) {
    // jose checks the signature before the claims, so JWTExpired implies an authentic token.
    return err instanceof errors.JWTExpired ? EXPIRED : INVALID;
  }
}

/**
 * RS256 / ES256 with the inline JWKS, or the one at the URL. A token whose `kid` the URL's
 * key set lacks makes it fetch again (keys rotate), at most every 30 s; when that fetch
 * fails the answer is `unavailable`: the key may well exist.
 */
async function verifyAsymmetric(token: string, config: JwtConfig, options: JWTVerifyOptions, nowMs: number): Promise<Verified> {
  if (config.jwks) {
    const keySet = localKeySet(config.jwks);
    if (keySet === null) return { ok: false, failure: INVALID };
    return { ok: true, payload: (await jwtVerify(token, keySet, options)).payload };
  }
  if (!config.jwksUrl) return { ok: false, failure: INVALID };
  const remote = remoteKeySet(config.jwksUrl);
  if (remote === null) return { ok: false, failure: { ok: false, reason: "misconfigured", problem: { variable: "JWT_JWKS_URL", message: "JWT_JWKS_URL is not a URL" } } };
  const keySet = await remote.keys(nowMs);
  if (keySet === null) return { ok: false, failure: UNAVAILABLE };
  try {
    return { ok: true, payload: (await jwtVerify(token, keySet, options)).payload };
  } catch (err) {
    if (!(err instanceof errors.JWKSNoMatchingKey)) throw err;
    const fresh = await remote.refetch(nowMs);
    if (fresh === null) return { ok: false, failure: UNAVAILABLE };
    if (fresh === "unchanged") throw err;
    return { ok: true, payload: (await jwtVerify(token, fresh, options)).payload };
  }
}

/** A signature-checked payload, or the answer to give instead (kept apart: the payload is the sender's). */
type Verified = { ok: true; payload: JWTPayload } | { ok: false; failure: VerifyResult };
