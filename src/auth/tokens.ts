/**
 * Minting HS256 JWTs: the admin API's stand-in for an external identity service, and the
 * tokens tests and the dev bootstrap connect with. Verification lives in `jwt.ts`.
 */

import { SignJWT } from "jose";

/** What a minted token says: who (`sub`), in which account (`acc`), for how long, optional topic ACLs, and the configured `iss` / `aud`. */
export interface MintTokenInput {
  subject: string;
  accountId: string;
  ttlSeconds: number;
  acl?: { pub: string[]; sub: string[] };
  issuer?: string;
  audience?: string;
}

/** Signs a token with HS256 under the UTF-8 bytes of `secret`; `exp` is now + `ttlSeconds`. */
export async function mintToken(secret: string, input: MintTokenInput): Promise<{ token: string; expiresAt: Date }> {
  const iat = Math.floor(Date.now() / 1000);
  const exp = iat + input.ttlSeconds;
  const claims: Record<string, unknown> = { acc: input.accountId };
  if (input.acl) claims.acl = { pub: input.acl.pub, sub: input.acl.sub };
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: "HS256", typ: "JWT" }).setSubject(input.subject).setIssuedAt(iat).setExpirationTime(exp);
  if (input.issuer !== undefined) jwt.setIssuer(input.issuer);
  if (input.audience !== undefined) jwt.setAudience(input.audience);
  const token = await jwt.sign(new TextEncoder().encode(secret));
  return { token, expiresAt: new Date(exp * 1000) };
}
