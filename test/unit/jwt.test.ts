import { describe, it, expect, beforeAll, afterAll } from "vitest";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, importJWK, base64url, type CryptoKey, type JWTPayload } from "jose";
import { jwtConfigFromEnv, verifyToken, type JwtConfig } from "../../src/auth/jwt";
import { readCookie } from "../../src/auth/cookies";

const SECRET = "unit-test-secret-0123456789abcdef0123456789abcdef";
const NOW_S = 1_800_000_000;
const NOW_MS = NOW_S * 1000;
const secretConfig: JwtConfig = { secret: SECRET };

function baseClaims(extra: JWTPayload = {}): JWTPayload {
  return { sub: "user1", acc: "acc1", exp: NOW_S + 3600, iat: NOW_S, ...extra };
}

async function hs(payload: JWTPayload, alg = "HS256", secret: Uint8Array | string = SECRET): Promise<string> {
  const key = typeof secret === "string" ? new TextEncoder().encode(secret) : secret;
  return new SignJWT(payload).setProtectedHeader({ alg }).sign(key);
}

function unsigned(header: object, payload: object): string {
  const enc = (o: object): string => base64url.encode(JSON.stringify(o));
  return `${enc(header)}.${enc(payload)}.`;
}

describe("jwtConfigFromEnv", () => {
  it("copies set values and drops empty ones", () => {
    expect(jwtConfigFromEnv({ JWT_SECRET: "s", JWT_JWKS: "", JWT_JWKS_URL: undefined })).toEqual({ secret: "s" });
    expect(jwtConfigFromEnv({ JWT_JWKS: "{}", JWT_JWKS_URL: "https://x/jwks" })).toEqual({ jwks: "{}", jwksUrl: "https://x/jwks" });
    expect(jwtConfigFromEnv({})).toEqual({});
  });
});

describe("verifyToken HS256", () => {
  it("accepts a valid token", async () => {
    const res = await verifyToken(await hs(baseClaims()), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: true, claims: { sub: "user1", acc: "acc1", exp: NOW_S + 3600, acl: null } });
  });

  it("uses the real clock by default", async () => {
    const exp = Math.floor(Date.now() / 1000) + 60;
    const res = await verifyToken(await hs(baseClaims({ exp, iat: undefined })), secretConfig);
    expect(res.ok).toBe(true);
  });

  it("reports an expired token as expired", async () => {
    const res = await verifyToken(await hs(baseClaims({ exp: NOW_S - 60 })), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "expired" });
  });

  it("tolerates 5 s of clock skew on exp", async () => {
    const token = await hs(baseClaims({ exp: NOW_S - 3 }));
    expect((await verifyToken(token, secretConfig, NOW_MS)).ok).toBe(true);
    expect(await verifyToken(token, secretConfig, NOW_MS + 10_000)).toEqual({ ok: false, reason: "expired" });
  });

  it("rejects a token not yet valid (nbf)", async () => {
    const res = await verifyToken(await hs(baseClaims({ nbf: NOW_S + 60 })), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "invalid" });
  });

  it("requires exp", async () => {
    const res = await verifyToken(await hs(baseClaims({ exp: undefined })), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "invalid" });
  });

  it("rejects a non-numeric exp", async () => {
    const res = await verifyToken(await hs(baseClaims({ exp: "soon" as unknown as number })), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "invalid" });
  });

  it("rejects a wrong secret", async () => {
    const res = await verifyToken(await hs(baseClaims(), "HS256", "another-secret"), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "invalid" });
  });

  it("reports an expired token with a bad signature as invalid, not expired", async () => {
    const res = await verifyToken(await hs(baseClaims({ exp: NOW_S - 60 }), "HS256", "another-secret"), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "invalid" });
  });

  it("rejects alg none", async () => {
    const res = await verifyToken(unsigned({ alg: "none", typ: "JWT" }, baseClaims()), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "invalid" });
  });

  it("rejects HS384/HS512 with the same secret", async () => {
    for (const alg of ["HS384", "HS512"]) {
      const res = await verifyToken(await hs(baseClaims(), alg), secretConfig, NOW_MS);
      expect(res, alg).toEqual({ ok: false, reason: "invalid" });
    }
  });

  it("rejects a tampered payload", async () => {
    const [h, , s] = (await hs(baseClaims())).split(".");
    const forged = `${h}.${base64url.encode(JSON.stringify(baseClaims({ acc: "victim" })))}.${s}`;
    expect(await verifyToken(forged, secretConfig, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
  });

  it("rejects garbage and oversized tokens", async () => {
    for (const t of ["", "abc", "a.b.c", "....", "eyJhbGciOiJIUzI1NiJ9", `${"a".repeat(20_000)}.b.c`]) {
      expect(await verifyToken(t, secretConfig, NOW_MS), t.slice(0, 20)).toEqual({ ok: false, reason: "invalid" });
    }
  });

  it("rejects a payload that is not a JSON object", async () => {
    const key = new TextEncoder().encode(SECRET);
    const { CompactSign } = await import("jose");
    const token = await new CompactSign(new TextEncoder().encode("[1,2]")).setProtectedHeader({ alg: "HS256" }).sign(key);
    expect(await verifyToken(token, secretConfig, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
  });

  it("reports unconfigured when no key source is set", async () => {
    expect(await verifyToken(await hs(baseClaims()), {}, NOW_MS)).toEqual({ ok: false, reason: "unconfigured" });
    expect(await verifyToken(await hs(baseClaims()), { secret: "", jwks: "", jwksUrl: "" }, NOW_MS)).toEqual({
      ok: false,
      reason: "unconfigured",
    });
  });
});

describe("verifyToken sub / acc", () => {
  const bad: ReadonlyArray<[string, JWTPayload]> = [
    ["missing sub", { sub: undefined }],
    ["empty sub", { sub: "" }],
    ["numeric sub", { sub: 42 as unknown as string }],
    ["sub with /", { sub: "a/b" }],
    ["sub with +", { sub: "a+" }],
    ["sub with #", { sub: "#" }],
    ["sub with NUL", { sub: "a\u0000b" }],
    ["long sub", { sub: "u".repeat(129) }],
    ["missing acc", { acc: undefined }],
    ["empty acc", { acc: "" }],
    ["object acc", { acc: { id: "x" } }],
    ["acc with /", { acc: "acc/1" }],
    ["acc with +", { acc: "+" }],
    ["acc with #", { acc: "a#" }],
    ["long acc", { acc: "a".repeat(129) }],
  ];
  for (const [name, extra] of bad) {
    it(`rejects ${name}`, async () => {
      const res = await verifyToken(await hs(baseClaims(extra)), secretConfig, NOW_MS);
      expect(res).toEqual({ ok: false, reason: "invalid" });
    });
  }

  it("accepts 128-character identifiers and $ / unicode", async () => {
    const res = await verifyToken(await hs(baseClaims({ sub: "u".repeat(128), acc: "é$-acc" })), secretConfig, NOW_MS);
    expect(res.ok && res.claims.sub.length === 128 && res.claims.acc === "é$-acc").toBe(true);
  });
});

describe("verifyToken acl claim", () => {
  it("returns a valid acl", async () => {
    const acl = { pub: ["a/#"], sub: ["a/+", "$SYS/mon/#"] };
    const res = await verifyToken(await hs(baseClaims({ acl })), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: true, claims: { sub: "user1", acc: "acc1", exp: NOW_S + 3600, acl } });
  });

  it("fills a missing list with an empty one", async () => {
    const res = await verifyToken(await hs(baseClaims({ acl: { sub: ["x"] } })), secretConfig, NOW_MS);
    expect(res.ok && res.claims.acl).toEqual({ pub: [], sub: ["x"] });
  });

  it("rejects a malformed acl", async () => {
    for (const acl of [null, "all", [], { pub: "a" }, { pub: ["a/#/b"] }, { sub: [1] }]) {
      const res = await verifyToken(await hs(baseClaims({ acl })), secretConfig, NOW_MS);
      expect(res, JSON.stringify(acl)).toEqual({ ok: false, reason: "invalid" });
    }
  });
});

describe("verifyToken RS256 / ES256 via inline JWKS", () => {
  let rsa: { privateKey: CryptoKey; publicKey: CryptoKey };
  let ec: { privateKey: CryptoKey; publicKey: CryptoKey };
  let otherRsa: { privateKey: CryptoKey; publicKey: CryptoKey };
  let jwks: string;

  beforeAll(async () => {
    rsa = await generateKeyPair("RS256", { extractable: true });
    ec = await generateKeyPair("ES256", { extractable: true });
    otherRsa = await generateKeyPair("RS256", { extractable: true });
    jwks = JSON.stringify({
      keys: [
        { ...(await exportJWK(rsa.publicKey)), kid: "rsa-1", alg: "RS256", use: "sig" },
        { ...(await exportJWK(ec.publicKey)), kid: "ec-1", alg: "ES256", use: "sig" },
      ],
    });
  });

  const sign = (key: Parameters<SignJWT["sign"]>[0], alg: string, kid: string, extra: JWTPayload = {}): Promise<string> =>
    new SignJWT(baseClaims(extra)).setProtectedHeader({ alg, kid }).sign(key);

  it("accepts RS256", async () => {
    const res = await verifyToken(await sign(rsa.privateKey, "RS256", "rsa-1"), { jwks }, NOW_MS);
    expect(res.ok && res.claims.sub).toBe("user1");
  });

  it("accepts ES256", async () => {
    const res = await verifyToken(await sign(ec.privateKey, "ES256", "ec-1"), { jwks }, NOW_MS);
    expect(res.ok && res.claims.acc).toBe("acc1");
  });

  it("accepts RS256 without a kid when one key fits", async () => {
    const token = await new SignJWT(baseClaims()).setProtectedHeader({ alg: "RS256" }).sign(rsa.privateKey);
    expect((await verifyToken(token, { jwks }, NOW_MS)).ok).toBe(true);
  });

  it("reports expired for an authentic expired token", async () => {
    const res = await verifyToken(await sign(ec.privateKey, "ES256", "ec-1", { exp: NOW_S - 60 }), { jwks }, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "expired" });
  });

  it("rejects a token signed by an unknown key", async () => {
    const res = await verifyToken(await sign(otherRsa.privateKey, "RS256", "rsa-1"), { jwks }, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "invalid" });
  });

  it("rejects PS256 / RS512 even though the key is RSA", async () => {
    const privateJwk = await exportJWK(rsa.privateKey);
    for (const alg of ["PS256", "RS512"]) {
      // Same key material, re-imported for the other algorithm (WebCrypto keys are bound to one).
      const same = await importJWK({ ...privateJwk, alg }, alg);
      const res = await verifyToken(await sign(same, alg, "rsa-1"), { jwks, secret: SECRET }, NOW_MS);
      expect(res, alg).toEqual({ ok: false, reason: "invalid" });
    }
  });

  it("rejects RS256 when only a secret is configured", async () => {
    const res = await verifyToken(await sign(rsa.privateKey, "RS256", "rsa-1"), secretConfig, NOW_MS);
    expect(res).toEqual({ ok: false, reason: "invalid" });
  });

  it("rejects HS256 when only a JWKS is configured", async () => {
    expect(await verifyToken(await hs(baseClaims()), { jwks }, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
  });

  it("rejects HS256 signed with the public key bytes (alg confusion)", async () => {
    const pem = await exportSPKI(rsa.publicKey);
    const jwkJson = JSON.stringify(await exportJWK(rsa.publicKey));
    for (const keyBytes of [pem, jwkJson]) {
      const token = await new SignJWT(baseClaims()).setProtectedHeader({ alg: "HS256", kid: "rsa-1" }).sign(new TextEncoder().encode(keyBytes));
      expect(await verifyToken(token, { jwks }, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
      expect(await verifyToken(token, { jwks, secret: SECRET }, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
    }
  });

  it("treats an unusable JWKS document as a key source that verifies nothing", async () => {
    const token = await sign(rsa.privateKey, "RS256", "rsa-1");
    for (const bad of ["not json", "{}", '{"keys": 1}', "[]", "null"]) {
      expect(await verifyToken(token, { jwks: bad }, NOW_MS), bad).toEqual({ ok: false, reason: "invalid" });
    }
  });

  it("prefers the inline JWKS over the URL", async () => {
    const res = await verifyToken(await sign(rsa.privateKey, "RS256", "rsa-1"), { jwks, jwksUrl: "http://127.0.0.1:9/never" }, NOW_MS);
    expect(res.ok).toBe(true);
  });
});

describe("verifyToken via remote JWKS", () => {
  let server: Server;
  let url: string;
  let fetches = 0;
  let key: { privateKey: CryptoKey; publicKey: CryptoKey };

  beforeAll(async () => {
    key = await generateKeyPair("ES256", { extractable: true });
    const body = JSON.stringify({ keys: [{ ...(await exportJWK(key.publicKey)), kid: "remote-1", alg: "ES256" }] });
    server = createServer((_req, res) => {
      fetches++;
      res.writeHead(200, { "content-type": "application/json" });
      res.end(body);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    url = `http://127.0.0.1:${port}/.well-known/jwks.json`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  it("fetches the JWKS once and reuses it", async () => {
    const config: JwtConfig = { jwksUrl: url };
    const t1 = await new SignJWT(baseClaims()).setProtectedHeader({ alg: "ES256", kid: "remote-1" }).sign(key.privateKey);
    const t2 = await new SignJWT(baseClaims({ sub: "user2" })).setProtectedHeader({ alg: "ES256", kid: "remote-1" }).sign(key.privateKey);
    const r1 = await verifyToken(t1, config, NOW_MS);
    const r2 = await verifyToken(t2, { jwksUrl: url }, NOW_MS);
    expect(r1.ok && r1.claims.sub).toBe("user1");
    expect(r2.ok && r2.claims.sub).toBe("user2");
    expect(fetches).toBe(1);
  });

  it("rejects a token whose key the remote JWKS lacks", async () => {
    const other = await generateKeyPair("ES256");
    const token = await new SignJWT(baseClaims()).setProtectedHeader({ alg: "ES256", kid: "remote-1" }).sign(other.privateKey);
    expect(await verifyToken(token, { jwksUrl: url }, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
  });

  it("reports invalid when the JWKS cannot be fetched", async () => {
    const token = await new SignJWT(baseClaims()).setProtectedHeader({ alg: "ES256", kid: "remote-1" }).sign(key.privateKey);
    expect(await verifyToken(token, { jwksUrl: "http://127.0.0.1:9/jwks" }, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
    expect(await verifyToken(token, { jwksUrl: "not a url" }, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
  });
});

describe("readCookie", () => {
  const cases: ReadonlyArray<[string | null, string, string | null]> = [
    [null, "jwt", null],
    ["", "jwt", null],
    ["jwt=abc", "jwt", "abc"],
    ["a=1; jwt=abc.def.ghi; b=2", "jwt", "abc.def.ghi"],
    ["a=1;jwt=abc;b=2", "jwt", "abc"],
    ["  jwt = abc  ;", "jwt", "abc"],
    ["xjwt=1; jwt=2", "jwt", "2"],
    ["jwtx=1", "jwt", null],
    ["jwt=1; jwt=2", "jwt", "1"],
    ['jwt="quoted"', "jwt", "quoted"],
    ["jwt=", "jwt", ""],
    ["flag; jwt=abc", "jwt", "abc"],
    ["a=b=c; jwt=x=y", "jwt", "x=y"],
    ["jwt=a%20b", "jwt", "a b"],
    ["jwt=100%", "jwt", "100%"],
    ["JWT=abc", "jwt", null],
    [";;; jwt=abc ;;", "jwt", "abc"],
    ["a=1", "", null],
  ];
  for (const [header, name, want] of cases) {
    it(`${JSON.stringify(header)} [${name}] → ${JSON.stringify(want)}`, () => {
      expect(readCookie(header, name)).toBe(want);
    });
  }
});
