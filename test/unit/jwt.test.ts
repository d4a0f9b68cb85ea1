import { describe, it, expect, beforeAll, afterAll, vi } from "vitest";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, importJWK, base64url, type CryptoKey, type JWTPayload } from "jose";
import { DEFAULT_MAX_TTL_SECONDS, jwtConfigFromEnv, verifyToken, type JwtConfig } from "../../src/auth/jwt";
import { JWKS_MAX_AGE_MS, JWKS_RETRY_MS, JWKS_STALE_MS } from "../../src/auth/jwks";
import { authenticateToken } from "../../src/auth/identity";
import { authenticateConnect } from "../../src/session/authenticate";
import { getConfig } from "../../src/config";
import type { IConnectPacket } from "../../src/protocol/codec";
import { isRecord } from "../../src/guards";
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

/** Never called: the JWT paths of authenticateConnect do not touch the device registry. */
const noDb = {} as D1Database;
const connectConfig = getConfig({});
const connectWith = (username: string, token: string): IConnectPacket => ({
  cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 60, clientId: username, username, password: Buffer.from(token),
});

function unsigned(header: object, payload: object): string {
  const enc = (o: object): string => base64url.encode(JSON.stringify(o));
  return `${enc(header)}.${enc(payload)}.`;
}

describe("jwtConfigFromEnv", () => {
  const TTL = DEFAULT_MAX_TTL_SECONDS;
  it("copies set values, drops empty ones and fills the default maximum lifetime", () => {
    expect(jwtConfigFromEnv({ JWT_SECRET: SECRET, JWT_JWKS: "", JWT_JWKS_URL: undefined })).toEqual({ secret: SECRET, maxTtlSeconds: TTL });
    expect(jwtConfigFromEnv({ JWT_JWKS: '{"keys":[]}', JWT_JWKS_URL: "https://x/jwks" })).toEqual({ jwks: '{"keys":[]}', jwksUrl: "https://x/jwks", maxTtlSeconds: TTL });
    expect(jwtConfigFromEnv({})).toEqual({ maxTtlSeconds: TTL });
    expect(jwtConfigFromEnv({ JWT_ISSUER: " https://idp.example/ ", JWT_AUDIENCE: "mqtt", JWT_MAX_TTL_SECONDS: "0" })).toEqual({
      issuer: "https://idp.example/",
      audience: "mqtt",
      maxTtlSeconds: 0,
    });
    expect(TTL).toBe(30 * 24 * 3600);
  });

  it("refuses a JWT_SECRET under 32 bytes, naming the var, and logs config.invalid once", () => {
    const lines: string[] = [];
    const spy = vi.spyOn(console, "error").mockImplementation((line: unknown) => void lines.push(String(line)));
    try {
      const short = "s".repeat(31);
      const config = jwtConfigFromEnv({ JWT_SECRET: short });
      expect(config.invalid).toEqual({ variable: "JWT_SECRET", message: expect.stringContaining("at least 32 bytes") });
      jwtConfigFromEnv({ JWT_SECRET: short });
      const logged = lines.map((l): unknown => JSON.parse(l)).filter((l) => isRecord(l) && l.event === "config.invalid");
      expect(logged).toEqual([{ level: "error", event: "config.invalid", var: "JWT_SECRET", error: expect.stringContaining("JWT_SECRET") }]);
    } finally {
      spy.mockRestore();
    }
    expect(jwtConfigFromEnv({ JWT_SECRET: "s".repeat(32) }).invalid).toBeUndefined();
    // Bytes, not characters: 16 two-byte characters are 32 bytes.
    expect(jwtConfigFromEnv({ JWT_SECRET: "é".repeat(16) }).invalid).toBeUndefined();
    expect(jwtConfigFromEnv({ JWT_SECRET: "é".repeat(15) }).invalid?.variable).toBe("JWT_SECRET");
  });

  it("accepts only https:// JWKS URLs (plain http:// for localhost)", () => {
    for (const ok of ["https://idp.example/.well-known/jwks.json", "http://127.0.0.1:8080/jwks", "http://localhost/jwks", "http://[::1]:9/jwks"]) {
      expect(jwtConfigFromEnv({ JWT_JWKS_URL: ok }).invalid, ok).toBeUndefined();
    }
    for (const bad of ["http://idp.example/jwks", "http://127.0.0.2.example/jwks", "ftp://idp.example/jwks", "file:///etc/jwks", "not a url"]) {
      expect(jwtConfigFromEnv({ JWT_JWKS_URL: bad }).invalid, bad).toEqual({ variable: "JWT_JWKS_URL", message: expect.any(String) });
    }
  });

  it("refuses an unparsable JWT_JWKS and a bad JWT_MAX_TTL_SECONDS", () => {
    expect(jwtConfigFromEnv({ JWT_JWKS: "not json" }).invalid?.variable).toBe("JWT_JWKS");
    expect(jwtConfigFromEnv({ JWT_JWKS: "{}" }).invalid?.variable).toBe("JWT_JWKS");
    for (const ttl of ["-1", "1.5", "a day"]) expect(jwtConfigFromEnv({ JWT_MAX_TTL_SECONDS: ttl }).invalid?.variable, ttl).toBe("JWT_MAX_TTL_SECONDS");
  });

  it("an invalid config answers every token misconfigured, and JWT logins with server unavailable", async () => {
    const short = "t".repeat(20);
    const config = jwtConfigFromEnv({ JWT_SECRET: short });
    const token = await hs(baseClaims(), "HS256", short);
    expect(await verifyToken(token, config, NOW_MS)).toEqual({ ok: false, reason: "misconfigured", problem: { variable: "JWT_SECRET", message: expect.any(String) } });
    const auth = await authenticateToken({ JWT_SECRET: short }, await hs(baseClaims({ exp: Math.floor(Date.now() / 1000) + 60 }), "HS256", short));
    expect(auth).toMatchObject({ ok: false, failure: "misconfigured", problem: { variable: "JWT_SECRET" } });
    const decision = await authenticateConnect(connectWith("user1", token), { DB: noDb, JWT_SECRET: short }, connectConfig, null);
    expect(decision).toMatchObject({ ok: false, code: 3 });
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
    ["long acc", { acc: "a".repeat(65) }],
    // The admin API's account id rule: 1-64 of A-Z a-z 0-9 _ . -
    ["acc with $", { acc: "$acc" }],
    ["acc with a space", { acc: "my acc" }],
    ["acc with unicode", { acc: "é-acc" }],
    ["acc with NUL", { acc: "a\u0000b" }],
    ["acc with :", { acc: "a:b" }],
  ];
  for (const [name, extra] of bad) {
    it(`rejects ${name}`, async () => {
      const res = await verifyToken(await hs(baseClaims(extra)), secretConfig, NOW_MS);
      expect(res).toEqual({ ok: false, reason: "invalid" });
    });
  }

  it("accepts a 128-character sub with $ / unicode, and a 64-character account id", async () => {
    const sub = `é$${"u".repeat(126)}`;
    const acc = `A.b_c-${"9".repeat(58)}`;
    const res = await verifyToken(await hs(baseClaims({ sub, acc })), secretConfig, NOW_MS);
    expect(res.ok && res.claims.sub === sub && res.claims.acc === acc).toBe(true);
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

describe("verifyToken issuer, audience and lifetime", () => {
  it("checks iss when JWT_ISSUER is set, and only then", async () => {
    const config: JwtConfig = { secret: SECRET, issuer: "https://idp.example/" };
    expect((await verifyToken(await hs(baseClaims({ iss: "https://idp.example/" })), config, NOW_MS)).ok).toBe(true);
    for (const iss of [undefined, "https://evil.example/", "https://idp.example"]) {
      expect(await verifyToken(await hs(baseClaims({ iss })), config, NOW_MS), String(iss)).toEqual({ ok: false, reason: "invalid" });
    }
    expect((await verifyToken(await hs(baseClaims({ iss: "anyone" })), secretConfig, NOW_MS)).ok).toBe(true);
  });

  it("checks aud when JWT_AUDIENCE is set (a string, or one of a list)", async () => {
    const config: JwtConfig = { secret: SECRET, audience: "mqtt-broker" };
    for (const aud of ["mqtt-broker", ["other", "mqtt-broker"]]) {
      expect((await verifyToken(await hs(baseClaims({ aud })), config, NOW_MS)).ok, String(aud)).toBe(true);
    }
    for (const aud of [undefined, "other-api", ["other"], "MQTT-BROKER"]) {
      expect(await verifyToken(await hs(baseClaims({ aud })), config, NOW_MS), String(aud)).toEqual({ ok: false, reason: "invalid" });
    }
    expect((await verifyToken(await hs(baseClaims({ aud: "other-api" })), secretConfig, NOW_MS)).ok).toBe(true);
  });

  it("refuses a token that lives longer than the maximum: exp - iat, or exp - now without iat", async () => {
    const config: JwtConfig = { secret: SECRET, maxTtlSeconds: 3600 };
    const cases: ReadonlyArray<[string, JWTPayload, boolean]> = [
      ["exactly the maximum", { iat: NOW_S - 600, exp: NOW_S + 3000 }, true],
      ["one second over", { iat: NOW_S - 600, exp: NOW_S + 3001 }, false],
      ["old iat, short remainder", { iat: NOW_S - 7200, exp: NOW_S + 60 }, false],
      ["no iat, within", { iat: undefined, exp: NOW_S + 3600 }, true],
      ["no iat, beyond", { iat: undefined, exp: NOW_S + 3601 }, false],
      // A future iat must not stretch the window: it counts as now.
      ["future iat", { iat: NOW_S + 86_400, exp: NOW_S + 86_400 + 60 }, false],
      ["ten years", { exp: NOW_S + 10 * 365 * 86_400 }, false],
    ];
    for (const [name, claims, ok] of cases) {
      const res = await verifyToken(await hs(baseClaims(claims)), config, NOW_MS);
      expect(res.ok, name).toBe(ok);
      if (!ok) expect(res, name).toEqual({ ok: false, reason: "invalid" });
    }
    const tenYears = await hs(baseClaims({ exp: NOW_S + 10 * 365 * 86_400 }));
    expect((await verifyToken(tenYears, { secret: SECRET, maxTtlSeconds: 0 }, NOW_MS)).ok).toBe(true);
    expect((await verifyToken(tenYears, jwtConfigFromEnv({ JWT_SECRET: SECRET }), NOW_MS)).ok).toBe(false);
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
  let base: string;
  /** Per path: the JWKS served (null: answer 500), and how often it was asked. */
  const served = new Map<string, { body: string | null; fetches: number }>();
  let key: { privateKey: CryptoKey; publicKey: CryptoKey };
  let rotated: { privateKey: CryptoKey; publicKey: CryptoKey };
  let jwk: object;
  let rotatedJwk: object;
  let paths = 0;

  beforeAll(async () => {
    key = await generateKeyPair("ES256", { extractable: true });
    rotated = await generateKeyPair("ES256", { extractable: true });
    jwk = { ...(await exportJWK(key.publicKey)), kid: "remote-1", alg: "ES256" };
    rotatedJwk = { ...(await exportJWK(rotated.publicKey)), kid: "remote-2", alg: "ES256" };
    server = createServer((req, res) => {
      const entry = served.get(req.url ?? "");
      if (entry) entry.fetches++;
      if (!entry || entry.body === null) {
        res.writeHead(500);
        res.end("down");
        return;
      }
      res.writeHead(200, { "content-type": "application/json" });
      res.end(entry.body);
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    const { port } = server.address() as AddressInfo;
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const jwksBody = (keys: object[] | string | null): string | null => (keys === null || typeof keys === "string" ? keys : JSON.stringify({ keys }));

  /** A JWKS (or any body; null: HTTP 500) at a path of its own: the key set cache is per URL and per process. */
  function endpoint(keys: object[] | string | null): { config: JwtConfig; entry: { body: string | null; fetches: number }; serve: (k: object[] | null) => void } {
    const path = `/jwks-${paths++}.json`;
    const entry = { body: jwksBody(keys), fetches: 0 };
    served.set(path, entry);
    return { config: { jwksUrl: `${base}${path}` }, entry, serve: (k) => void (entry.body = jwksBody(k)) };
  }

  const signed = (pair: { privateKey: CryptoKey }, kid: string, extra: JWTPayload = {}): Promise<string> =>
    new SignJWT(baseClaims(extra)).setProtectedHeader({ alg: "ES256", kid }).sign(pair.privateKey);

  it("fetches the JWKS once and reuses it", async () => {
    const { config, entry } = endpoint([jwk]);
    const r1 = await verifyToken(await signed(key, "remote-1"), config, NOW_MS);
    const r2 = await verifyToken(await signed(key, "remote-1", { sub: "user2" }), { ...config }, NOW_MS + 1000);
    expect(r1.ok && r1.claims.sub).toBe("user1");
    expect(r2.ok && r2.claims.sub).toBe("user2");
    expect(entry.fetches).toBe(1);
  });

  it("rejects a token whose key the remote JWKS lacks", async () => {
    const { config } = endpoint([jwk]);
    const other = await generateKeyPair("ES256");
    expect(await verifyToken(await signed(other, "remote-1"), config, NOW_MS)).toEqual({ ok: false, reason: "invalid" });
  });

  it("answers unavailable, not invalid, when the JWKS was never fetched", async () => {
    const token = await signed(key, "remote-1");
    const down = endpoint(null);
    expect(await verifyToken(token, down.config, NOW_MS)).toEqual({ ok: false, reason: "unavailable" });
    expect(await verifyToken(token, { jwksUrl: "http://127.0.0.1:9/jwks" }, NOW_MS)).toEqual({ ok: false, reason: "unavailable" });
    for (const body of ['{"no":"keys"}', "not json"]) {
      expect(await verifyToken(token, endpoint(body).config, NOW_MS), body).toEqual({ ok: false, reason: "unavailable" });
    }
  });

  it("keeps using the last good key set while the URL fails, for up to an hour, asking again at most every 30 s", async () => {
    const { config, entry, serve } = endpoint([jwk]);
    const token = await signed(key, "remote-1", { exp: NOW_S + 2 * 3600 });
    expect((await verifyToken(token, config, NOW_MS)).ok).toBe(true);
    serve(null);
    const stale = NOW_MS + JWKS_MAX_AGE_MS + 1;
    expect((await verifyToken(token, config, stale)).ok).toBe(true);
    expect(entry.fetches).toBe(2); // tried, failed, used the cached keys
    expect((await verifyToken(token, config, stale + JWKS_RETRY_MS - 1)).ok).toBe(true);
    expect(entry.fetches).toBe(2); // not asked again within 30 s
    expect((await verifyToken(token, config, stale + JWKS_RETRY_MS)).ok).toBe(true);
    expect(entry.fetches).toBe(3);
    expect(await verifyToken(token, config, NOW_MS + JWKS_STALE_MS)).toEqual({ ok: false, reason: "unavailable" });
    serve([jwk]);
    expect((await verifyToken(token, config, NOW_MS + JWKS_STALE_MS + JWKS_RETRY_MS)).ok).toBe(true);
  });

  it("fetches again for an unknown kid (key rotation), at most every 30 s; unavailable when that fetch fails", async () => {
    const { config, entry, serve } = endpoint([jwk]);
    expect((await verifyToken(await signed(key, "remote-1"), config, NOW_MS)).ok).toBe(true);
    serve([jwk, rotatedJwk]);
    const next = await signed(rotated, "remote-2");
    expect(await verifyToken(next, config, NOW_MS + 1000)).toEqual({ ok: false, reason: "invalid" }); // within the cooldown
    expect(entry.fetches).toBe(1);
    expect((await verifyToken(next, config, NOW_MS + JWKS_RETRY_MS)).ok).toBe(true);
    expect(entry.fetches).toBe(2);
    serve(null);
    const unknown = await signed(rotated, "remote-3");
    expect(await verifyToken(unknown, config, NOW_MS + 2 * JWKS_RETRY_MS)).toEqual({ ok: false, reason: "unavailable" });
    // The cached keys still verify the tokens they know.
    expect((await verifyToken(next, config, NOW_MS + 2 * JWKS_RETRY_MS)).ok).toBe(true);
  });

  it("answers a JWKS failure at CONNECT with CONNACK 3", async () => {
    const down = endpoint(null);
    const token = await signed(key, "remote-1", { exp: Math.floor(Date.now() / 1000) + 60, iat: undefined });
    const env = { DB: noDb, JWT_JWKS_URL: down.config.jwksUrl ?? "" };
    expect(await authenticateToken(env, token)).toEqual({ ok: false, failure: "unavailable" });
    expect(await authenticateConnect(connectWith("user1", token), env, connectConfig, null)).toMatchObject({ ok: false, code: 3, cause: "serverError" });
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
