/**
 * One hostile or careless client cannot hurt anyone else: the HTTP publish rate limit per
 * identity, the streaming body limit, client ids named like Object.prototype members, and
 * JWT configuration failures answered as server problems. Each test also checks bystanders:
 * another identity of the same account and one of another account.
 *
 * The worker project runs with HTTP_PUBLISH_RATE_PER_SECOND = 1, HTTP_PUBLISH_BURST = 3 and
 * MAX_MULTI_CONNECTIONS = 3 (vitest.config.mts), so each limit is reached in a few requests.
 */
import { describe, expect, it } from "vitest";
import { SignJWT, generateKeyPair } from "jose";
import { SELF, createExecutionContext, env } from "cloudflare:test";
import type { Env } from "../../src/env";
import { app } from "../../src/http/app";
import { readState } from "../../src/limits/connection-limiter";
import { limiterStub } from "../../src/stubs";
import { isRecord } from "../../src/guards";
import { connectRaw, type RawConnection } from "./mqtt";

const E = env as unknown as Env;
const ADMIN = { Authorization: "Bearer test-admin-token", "Content-Type": "application/json" };
const BURST = 3;
const MAX_PAYLOAD = 128 * 1024;

const newAccount = (): string => `acc-${crypto.randomUUID()}`;
/** Device ids are unique across accounts. */
const newId = (prefix: string): string => `${prefix}-${crypto.randomUUID().slice(0, 8)}`;

async function adminPost(path: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await SELF.fetch(`https://broker/admin/v1${path}`, { method: "POST", headers: ADMIN, body: JSON.stringify(body) });
  const json: unknown = await res.json();
  if (res.status !== 201 || !isRecord(json)) throw new Error(`POST ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

interface Publisher {
  name: string;
  authorization: string;
  topic: string;
}

async function device(account: string, deviceId: string): Promise<Publisher> {
  const created = await adminPost(`/accounts/${account}/devices`, { deviceId });
  if (typeof created.password !== "string") throw new Error("no password");
  return { name: deviceId, authorization: `Basic ${btoa(`${deviceId}:${created.password}`)}`, topic: `xi/blue/v1/${account}/d/${deviceId}/t` };
}

async function token(account: string, subject: string): Promise<string> {
  const minted = await adminPost(`/accounts/${account}/tokens`, { subject, ttlSeconds: 600 });
  if (typeof minted.token !== "string") throw new Error("no token");
  return minted.token;
}

async function user(account: string, subject: string): Promise<Publisher> {
  return { name: subject, authorization: `Bearer ${await token(account, subject)}`, topic: `xi/blue/v1/${account}/u/${subject}` };
}

function publish(p: Publisher, init: RequestInit = {}): Promise<Response> {
  return SELF.fetch(`https://broker/api/v1/messages?topic=${encodeURIComponent(p.topic)}&qos=0`, {
    method: "POST",
    body: "x",
    ...init,
    headers: { authorization: p.authorization, ...(init.headers ?? {}) },
  });
}

async function errorOf(res: Response): Promise<{ status: number; code: unknown; message: unknown }> {
  const body: unknown = await res.json();
  const error = isRecord(body) && isRecord(body.error) ? body.error : {};
  return { status: res.status, code: error.code, message: typeof error.message };
}

/** Each bystander can still publish (its own bucket is full). */
async function expectUnaffected(bystanders: Publisher[]): Promise<void> {
  for (const p of bystanders) {
    const res = await publish(p);
    expect([p.name, res.status]).toEqual([p.name, 202]);
  }
}

describe("HTTP publish rate limit per identity", () => {
  it("past the burst an identity gets 429 with Retry-After and a JSON error; other identities are unaffected", async () => {
    const acc = newAccount();
    const other = newAccount();
    const noisy = newId("noisy");
    const attacker = await device(acc, noisy);
    const bystanders = [await device(acc, newId("quiet")), await user(acc, "app"), await device(other, newId("elsewhere")), await user(other, "app")];
    // A JWT subject with the device's id shares its limiter object, not its budget.
    const sameId = await user(acc, noisy);

    for (let i = 0; i < BURST; i++) expect((await publish(attacker)).status).toBe(202);
    // At 1 token per second, ten more at once cannot all find one.
    const flood = await Promise.all(Array.from({ length: 10 }, () => publish(attacker)));
    const refused = flood.filter((r) => r.status === 429);
    expect(refused.length).toBeGreaterThan(0);
    expect(flood.every((r) => r.status === 429 || r.status === 202)).toBe(true);
    for (const res of refused) {
      const retryAfter = Number(res.headers.get("Retry-After"));
      expect(Number.isInteger(retryAfter) && retryAfter >= 1).toBe(true);
      expect(await errorOf(res)).toEqual({ status: 429, code: "rate_limited", message: "string" });
    }
    await Promise.all(flood.filter((r) => r.status !== 429).map((r) => r.body?.cancel()));

    await expectUnaffected([...bystanders, sameId]);
    const stats = await limiterStub(E, acc, noisy).stats();
    expect(stats).toEqual({ mode: null, connections: 0 });
  });

  it("a JWT identity's budget is shared by all its tokens", async () => {
    const acc = newAccount();
    const first = await user(acc, "svc");
    const second = await user(acc, "svc");
    for (let i = 0; i < BURST; i++) expect((await publish(first)).status).toBe(202);
    const flood = await Promise.all(Array.from({ length: 10 }, () => publish(second)));
    expect(flood.some((r) => r.status === 429)).toBe(true);
    await Promise.all(flood.map((r) => r.body?.cancel()));
    await expectUnaffected([await user(acc, "svc-2"), await user(newAccount(), "svc")]);
  });
});

/** A body of `total` bytes in 64 KiB chunks that counts what the server pulled. */
function countingBody(total: number): { body: ReadableStream<Uint8Array>; pulled: () => number } {
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) {
        controller.close();
        return;
      }
      sent += chunk.byteLength;
      controller.enqueue(chunk.slice());
    },
  }, { highWaterMark: 0 });
  return { body, pulled: () => sent };
}

describe("HTTP publish body limit", () => {
  it("a 16 MiB chunked body gets 413 once the running count passes MAX_PAYLOAD_BYTES, without being read whole", async () => {
    const acc = newAccount();
    const attacker = await device(acc, newId("big"));
    const stream = countingBody(16 * 1024 * 1024);
    const res = await publish(attacker, { body: stream.body });
    expect(await errorOf(res)).toEqual({ status: 413, code: "payload_too_large", message: "string" });
    expect(stream.pulled()).toBeLessThan(4 * MAX_PAYLOAD);
    // At the limit exactly, a chunked body is accepted.
    const exact = countingBody(MAX_PAYLOAD);
    expect((await publish(attacker, { body: exact.body })).status).toBe(202);
    await expectUnaffected([await device(acc, newId("small")), await device(newAccount(), newId("small2"))]);
  });

  it("a Content-Length over the limit is refused before the body is read", async () => {
    const acc = newAccount();
    const attacker = await device(acc, newId("declared"));
    const stream = countingBody(MAX_PAYLOAD + 1024);
    const res = await publish(attacker, { body: stream.body, headers: { "Content-Length": String(MAX_PAYLOAD + 1024) } });
    expect(await errorOf(res)).toEqual({ status: 413, code: "payload_too_large", message: "string" });
    expect(stream.pulled()).toBeLessThan(MAX_PAYLOAD);
    await expectUnaffected([await device(acc, newId("declared2")), await device(newAccount(), newId("declared3"))]);
  });
});

describe("connection limiter: client ids named like Object.prototype members", () => {
  const PROTO_IDS = ["toString", "constructor", "valueOf", "hasOwnProperty", "__proto__"];

  const connectUser = (subject: string, jwt: string, clientId: string): Promise<RawConnection> => connectRaw(clientId, subject, jwt);

  async function waitForConnections(account: string, subject: string, n: number): Promise<void> {
    const deadline = Date.now() + 5_000;
    while ((await limiterStub(E, account, subject).stats()).connections !== n) {
      if (Date.now() > deadline) throw new Error(`limiter of ${subject} did not reach ${n} connections`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }

  it("count toward the multi-connection cap like any other id", async () => {
    const acc = newAccount();
    const jwt = await token(acc, "u");
    const codes: number[] = [];
    const open: RawConnection[] = [];
    for (const id of PROTO_IDS) {
      const conn = await connectUser("u", jwt, id);
      codes.push(conn.returnCode);
      if (conn.returnCode === 0) open.push(conn);
    }
    // Cap 3: the first three are admitted, the next two refused with CONNACK 3.
    expect(codes).toEqual([0, 0, 0, 3, 3]);
    expect(await limiterStub(E, acc, "u").stats()).toEqual({ mode: "multi", connections: 3 });

    // Freeing "toString" admits "__proto__", which then holds a slot like the others.
    open[0]?.ws.close(1000);
    await waitForConnections(acc, "u", 2);
    const proto = await connectUser("u", jwt, "__proto__");
    expect(proto.returnCode).toBe(0);
    expect((await connectUser("u", jwt, "hasOwnProperty")).returnCode).toBe(3);
    expect(await limiterStub(E, acc, "u").stats()).toEqual({ mode: "multi", connections: 3 });

    // Bystanders: another identity of the account and one of another account use the same ids.
    const bystanderJwt = await token(acc, "v");
    const elsewhereJwt = await token(newAccount(), "u");
    // (In the same account a client id whose session another identity holds is refused with
    // CONNACK 2, session ownership: the bystander there takes the one "u" never got.)
    expect((await connectUser("v", bystanderJwt, "hasOwnProperty")).returnCode).toBe(0);
    for (const id of ["toString", "__proto__", "constructor"]) {
      expect((await connectUser("u", elsewhereJwt, id)).returnCode).toBe(0);
    }
    for (const c of [...open.slice(1), proto]) c.ws.close(1000);
  });

  it("__proto__ cannot mix modes, either way", async () => {
    const acc = newAccount();
    const multiFirst = await token(acc, "m");
    const first = await connectUser("m", multiFirst, "__proto__");
    expect(first.returnCode).toBe(0);
    expect(await limiterStub(E, acc, "m").stats()).toEqual({ mode: "multi", connections: 1 });
    expect((await connectUser("m", multiFirst, "m")).returnCode).toBe(5);

    const singleFirst = await token(acc, "s");
    const single = await connectUser("s", singleFirst, "s");
    expect(single.returnCode).toBe(0);
    expect((await connectUser("s", singleFirst, "__proto__")).returnCode).toBe(5);

    // Bystander: a third identity of the account goes single, then (after it leaves) multi.
    const bystander = await token(acc, "b");
    const b1 = await connectUser("b", bystander, "b");
    expect(b1.returnCode).toBe(0);
    b1.ws.close(1000);
    await waitForConnections(acc, "b", 0);
    // "__proto__" itself is m's session (session ownership): b goes multi under "constructor".
    expect((await connectUser("b", bystander, "constructor")).returnCode).toBe(0);
    first.ws.close(1000);
    single.ws.close(1000);
  });

  it("reads the stored slots as pairs, and the earlier object form by its own keys only", () => {
    const pairs = readState({ mode: "multi", slots: [["__proto__", "c1"], ["toString", "c2"], ["bad", 7], "junk"] });
    expect([pairs.mode, [...pairs.slots]]).toEqual(["multi", [["__proto__", "c1"], ["toString", "c2"]]]);
    const old = readState({ mode: "single", slots: { dev: { conn: "c3" }, broken: { conn: 1 } } });
    expect([old.mode, [...old.slots]]).toEqual(["single", [["dev", "c3"]]]);
    expect(readState({ mode: "multi", slots: [] })).toEqual({ mode: null, slots: new Map() });
    expect(readState(undefined)).toEqual({ mode: null, slots: new Map() });
  });
});

describe("JWT configuration failures are server problems", () => {
  /** The Worker's HTTP app with some vars changed (the objects keep the project's bindings). */
  function withVars(vars: Partial<Env>): (p: Publisher) => Promise<Response> {
    const changed: Env = { ...E, ...vars };
    return async (p) =>
      app.fetch(
        new Request(`https://broker/api/v1/messages?topic=${encodeURIComponent(p.topic)}`, { method: "POST", headers: { authorization: p.authorization }, body: "x" }),
        changed,
        createExecutionContext(),
      );
  }

  it("a JWT_SECRET under 32 bytes answers JWT publishes 500 naming the var; devices are unaffected", async () => {
    const acc = newAccount();
    const send = withVars({ JWT_SECRET: "short-secret" });
    const res = await send(await user(acc, "app"));
    const body: unknown = await res.json();
    expect(res.status).toBe(500);
    expect(body).toEqual({ error: { code: "config_invalid", message: expect.stringContaining("JWT_SECRET") } });
    expect((await send(await device(acc, newId("dev")))).status).toBe(202);
    expect((await send(await device(newAccount(), newId("dev2")))).status).toBe(202);
  });

  it("a JWKS URL that cannot be read answers RS256/ES256 publishes 503 with Retry-After; HS256 and devices are unaffected", async () => {
    const acc = newAccount();
    const send = withVars({ JWT_JWKS_URL: "https://127.0.0.1:9/jwks.json" });
    const { privateKey } = await generateKeyPair("ES256");
    const es = await new SignJWT({ acc }).setProtectedHeader({ alg: "ES256", kid: "k1" }).setSubject("app").setIssuedAt().setExpirationTime("5m").sign(privateKey);
    const res = await send({ name: "es", authorization: `Bearer ${es}`, topic: `xi/blue/v1/${acc}/x` });
    expect(res.headers.get("Retry-After")).toBe("30");
    expect(await errorOf(res)).toEqual({ status: 503, code: "auth_unavailable", message: "string" });
    expect((await send(await user(acc, "hs"))).status).toBe(202);
    expect((await send(await device(acc, newId("dev3")))).status).toBe(202);
  });

  it("an http:// JWKS URL to another host is refused at config time (500), not fetched", async () => {
    const acc = newAccount();
    const send = withVars({ JWT_JWKS_URL: "http://idp.example/jwks.json" });
    const res = await send(await user(acc, "app"));
    expect(await errorOf(res)).toEqual({ status: 500, code: "config_invalid", message: "string" });
    expect((await send(await device(acc, newId("dev4")))).status).toBe(202);
  });
});
