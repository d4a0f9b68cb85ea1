import { ACCOUNT_WIDE_ACL, deviceAcl, type Acl } from "../topics/acl";
import { jwtConfigFromEnv, verifyToken, type ConfigProblem, type JwtBindings } from "./jwt";
import { authenticateDevice } from "./registry";

/** Who is connecting or calling, after authentication. */
export interface Identity {
  kind: "device" | "user" | "anonymous";
  account: string;
  /** Device id, JWT `sub`, or "anonymous": the key of the connection-limit rules. */
  id: string;
  acl: Acl;
  /** When the credentials stop being valid (JWT `exp`, ms since epoch), else null. */
  expiresAt: number | null;
}

/**
 * The connection rules of a JWT identity (SPEC "Connection modes"): single = one connection,
 * its client id is the identity; multi = several, each with its own client id.
 */
export type ConnectionMode = "single" | "multi";

/** The connection-limit object's answer to a claim for a slot. */
export type ClaimResult =
  | { ok: true }
  /** `mixed`: the identity holds connections in the other mode; `full`: multi-mode cap reached. */
  | { ok: false; reason: "mixed" | "full" };

export type AuthFailure =
  /** Unknown device, wrong password, token that does not verify: CONNACK 4 / HTTP 401. */
  | "bad_credentials"
  /** Valid but expired token: CONNACK 5 / HTTP 401 token_expired. */
  | "expired"
  /** Disabled device: CONNACK 5 / HTTP 403. */
  | "disabled"
  /** No credentials and anonymous access off: CONNACK 5 / HTTP 401. */
  | "anonymous_disabled"
  /** The JWKS URL cannot be read and no recent key set is cached: CONNACK 3 / HTTP 503. */
  | "unavailable"
  /** A JWT var is unusable (e.g. a short `JWT_SECRET`): CONNACK 3 / HTTP 500 naming the var. */
  | "misconfigured";

/** The bindings authentication reads: the device registry, the password pepper, the JWT secrets. */
export interface AuthBindings extends JwtBindings {
  DB: D1Database;
  DEVICE_PEPPER?: string;
}

export type AuthResult =
  | { ok: true; identity: Identity }
  /** `problem`: for `misconfigured`, the var at fault (for the operator; HTTP names it). */
  | { ok: false; failure: AuthFailure; problem?: ConfigProblem };

/** Three base64url segments: the shape of a compact JWS. Device passwords are one segment. */
export function looksLikeJwt(s: string): boolean {
  return /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(s);
}

/** A device by id and password, against the D1 registry; the account comes from the registry. */
export async function authenticateDevicePassword(env: AuthBindings, deviceId: string, password: string): Promise<AuthResult> {
  const pepper = env.DEVICE_PEPPER;
  if (!pepper) return { ok: false, failure: "bad_credentials" };
  const result = await authenticateDevice(env.DB, pepper, deviceId, password);
  if (!result.ok) return { ok: false, failure: result.reason === "disabled" ? "disabled" : "bad_credentials" };
  const { accountId } = result.device;
  return { ok: true, identity: { kind: "device", account: accountId, id: deviceId, acl: deviceAcl(accountId, deviceId), expiresAt: null } };
}

/**
 * A user or application by JWT. `expectedSubject`, when given (the MQTT user name),
 * must equal the token's `sub`.
 */
export async function authenticateToken(env: JwtBindings, token: string, expectedSubject?: string): Promise<AuthResult> {
  const verified = await verifyToken(token, jwtConfigFromEnv(env));
  if (!verified.ok) {
    if (verified.reason === "misconfigured") return { ok: false, failure: "misconfigured", problem: verified.problem };
    if (verified.reason === "unavailable" || verified.reason === "expired") return { ok: false, failure: verified.reason };
    return { ok: false, failure: "bad_credentials" };
  }
  const { claims } = verified;
  if (expectedSubject !== undefined && claims.sub !== expectedSubject) return { ok: false, failure: "bad_credentials" };
  return {
    ok: true,
    identity: { kind: "user", account: claims.acc, id: claims.sub, acl: claims.acl ?? ACCOUNT_WIDE_ACL, expiresAt: claims.exp * 1000 },
  };
}

/**
 * Anonymous clients (a development convenience, like mosquitto's allow_anonymous) may do
 * what an account-wide token may, and also watch the account's `$SYS/` events.
 */
const ANONYMOUS_ACL: Acl = Object.freeze({ pub: ACCOUNT_WIDE_ACL.pub, sub: Object.freeze([...ACCOUNT_WIDE_ACL.sub, "$SYS/#"]) as string[] });

/** The configured anonymous account, or a refusal when anonymous access is off. */
export function anonymousIdentity(anonymousAccount: string | undefined): AuthResult {
  if (anonymousAccount === undefined) return { ok: false, failure: "anonymous_disabled" };
  return { ok: true, identity: { kind: "anonymous", account: anonymousAccount, id: "anonymous", acl: ANONYMOUS_ACL, expiresAt: null } };
}
