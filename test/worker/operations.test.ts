// Operability in workerd: a bad var answers 500 config_invalid everywhere without crashing a
// Durable Object; GET /health checks D1 and a Durable Object and reports the version.
import { describe, expect, it } from "vitest";
import { SELF, createExecutionContext, env, runInDurableObject, waitOnExecutionContext } from "cloudflare:test";
import type { Env } from "../../src/env";
import { app } from "../../src/http/app";
import { healthAnswer } from "../../src/http/health";
import { MqttConnection } from "../../src/session/connection";
import { isRecord } from "../../src/guards";
import { mintToken } from "../../src/auth/tokens";

const E = env as unknown as Env;

async function body(res: Response): Promise<Record<string, unknown>> {
  const json: unknown = await res.json();
  if (!isRecord(json)) throw new Error(`not a JSON object: ${JSON.stringify(json)}`);
  return json;
}

const MESSAGE = 'MAX_PAYLOAD_BYTES must be a whole number >= 1, got "128k"';

describe("a var that does not parse", () => {
  it("every Worker route answers 500 config_invalid naming the var", async () => {
    const bad: Env = { ...E, MAX_PAYLOAD_BYTES: "128k" };
    const requests = [
      new Request("http://broker/health"),
      new Request("http://broker/mqtt", { headers: { Upgrade: "websocket", "Sec-WebSocket-Protocol": "mqtt" } }),
      new Request("http://broker/admin/v1/accounts/acme/devices", { headers: { Authorization: "Bearer test-admin-token" } }),
      new Request("http://broker/api/v1/messages?topic=a", { method: "POST", body: "x" }),
    ];
    for (const request of requests) {
      const ctx = createExecutionContext();
      const res = await app.fetch(request, bad, ctx);
      await waitOnExecutionContext(ctx);
      expect({ path: new URL(request.url).pathname, status: res.status, body: await body(res) }).toEqual({
        path: new URL(request.url).pathname,
        status: 500,
        body: { error: { code: "config_invalid", message: MESSAGE } },
      });
    }
  });

  it("a connection object still starts, and refuses the upgrade the same way instead of accepting a socket", async () => {
    const stub = E.CONNECTION.get(E.CONNECTION.newUniqueId());
    const res = await runInDurableObject(stub, (_instance, state) => {
      const conn = new MqttConnection(state, { ...E, MAX_PAYLOAD_BYTES: "128k" });
      return conn.fetch(new Request("http://broker/mqtt", { headers: { Upgrade: "websocket" } }));
    });
    expect(res.webSocket).toBeNull();
    expect({ status: res.status, body: await body(res) }).toEqual({ status: 500, body: { error: { code: "config_invalid", message: MESSAGE } } });
    const sockets = await runInDurableObject(stub, (_instance, state) => state.getWebSockets().length);
    expect(sockets).toBe(0);
  });
});

describe("GET /health", () => {
  it("answers 200 when D1 and a Durable Object answer, with the version", async () => {
    const res = await SELF.fetch("http://broker/health");
    const json = await body(res);
    expect(res.status).toBe(200);
    expect(json).toMatchObject({ ok: true, checks: { d1: { ok: true }, durableObject: { ok: true } } });
    const version = json.version;
    if (!isRecord(version)) throw new Error("no version");
    expect(version.package).toBe("0.1.0");
    expect(typeof version.id).toBe("string");
    expect(typeof version.timestamp).toBe("string");
  });

  it("answers 503 naming each check that failed or did not answer", async () => {
    const version = { package: "0.1.0", id: "v", tag: "", timestamp: "t" };
    const answer = await healthAnswer(
      {
        d1: () => Promise.reject(new Error("D1_ERROR: no such table: devices")),
        durableObject: () => Promise.resolve(true),
        never: () => new Promise(() => undefined),
      },
      version,
      1,
    );
    expect(answer).toEqual({
      status: 503,
      body: {
        ok: false,
        error: { code: "unhealthy", message: "d1: D1_ERROR: no such table: devices; never: no answer within 1 ms" },
        version,
        checks: {
          d1: { ok: false, error: "D1_ERROR: no such table: devices" },
          durableObject: { ok: true },
          never: { ok: false, error: "no answer within 1 ms" },
        },
      },
    });
  });
});

describe("an upgrade the connection object cannot take", () => {
  it("answers 503 server_unavailable with Retry-After, never 500 (the object's fetch failing as under a storm's SQLITE_NOMEM)", async () => {
    // The one dependency replaced: a CONNECTION namespace whose objects fail to take the socket.
    const failing = { ...E.CONNECTION, newUniqueId: () => E.CONNECTION.newUniqueId(), get: () => ({ fetch: () => Promise.reject(new Error("SQLITE_NOMEM")) }) };
    const overloaded = { ...E, CONNECTION: failing } as unknown as Env;
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request("http://broker/mqtt", { headers: { Upgrade: "websocket", "Sec-WebSocket-Protocol": "mqtt" } }), overloaded, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("2");
    expect(await body(res)).toMatchObject({ error: { code: "server_unavailable" } });
    // A bystander's upgrade, on the objects that can take it, is served (101 with the socket).
    const ok = await SELF.fetch("http://broker/mqtt", { headers: { Upgrade: "websocket", "Sec-WebSocket-Protocol": "mqtt" } });
    expect(ok.status).toBe(101);
    ok.webSocket?.accept();
    ok.webSocket?.close(1000);
  });
});

describe("an HTTP publish the router cannot take", () => {
  it("answers 503 server_unavailable with Retry-After, never 500", async () => {
    const failingRouter = { ...E.ROUTER, idFromName: (n: string) => E.ROUTER.idFromName(n), get: () => ({ publish: () => Promise.reject(new Error("overloaded")) }) };
    const broken = { ...E, ROUTER: failingRouter } as unknown as Env;
    const { token } = await mintToken(E.JWT_SECRET ?? "", { subject: "ops", accountId: "ops", ttlSeconds: 60 });
    const ctx = createExecutionContext();
    const res = await app.fetch(new Request("http://broker/api/v1/messages?topic=ops/x&qos=1", { method: "POST", body: "x", headers: { authorization: `Bearer ${token}` } }), broken, ctx);
    await waitOnExecutionContext(ctx);
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).not.toBeNull();
    expect(await body(res)).toMatchObject({ error: { code: "server_unavailable" } });
    // Bystanders on the real routers: the same account and another one publish as before.
    for (const account of ["ops", "ops-bystander"]) {
      const t = await mintToken(E.JWT_SECRET ?? "", { subject: "ops", accountId: account, ttlSeconds: 60 });
      const served = await SELF.fetch(`http://broker/api/v1/messages?topic=${account}/x&qos=1`, { method: "POST", body: "x", headers: { authorization: `Bearer ${t.token}` } });
      expect(served.status, account).toBeLessThan(300);
    }
  });
});
