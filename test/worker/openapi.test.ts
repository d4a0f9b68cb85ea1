/// <reference types="vite/client" />
import { describe, expect, it } from "vitest";
import { SELF } from "cloudflare:test";
import { app } from "../../src/http/app";

// The sources, read at build time: every error code a route can answer must be documented.
const SOURCES = import.meta.glob("../../src/http/*.ts", { query: "?raw", import: "default", eager: true });

type Json = Record<string, unknown>;
const isJson = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);

async function document(): Promise<Json> {
  const res = await SELF.fetch("https://broker/openapi.json");
  expect(res.status).toBe(200);
  expect(res.headers.get("Content-Type")).toMatch(/^application\/json/);
  const body: unknown = await res.json();
  if (!isJson(body)) throw new Error("not a JSON object");
  return body;
}

/** Hono's `/a/:b` as OpenAPI's `/a/{b}`. */
const openApiPath = (path: string): string => path.replace(/:([A-Za-z0-9_]+)/g, "{$1}");

/** method + path -> status -> error codes, read from the document's error schemas. */
function documentedCodes(doc: Json): Map<string, Map<string, string[]>> {
  const out = new Map<string, Map<string, string[]>>();
  for (const [path, item] of Object.entries(doc.paths as Json)) {
    for (const [method, op] of Object.entries(item as Json)) {
      const byStatus = new Map<string, string[]>();
      for (const [status, response] of Object.entries((op as Json).responses as Json)) {
        const schema = ((response as Json).content as Json | undefined)?.["application/json"] as Json | undefined;
        const code = ((((schema?.schema as Json | undefined)?.properties as Json | undefined)?.error as Json | undefined)?.properties as Json | undefined)?.code as Json | undefined;
        if (Array.isArray(code?.enum)) byStatus.set(status, code.enum.map(String));
      }
      out.set(`${method.toUpperCase()} ${path}`, byStatus);
    }
  }
  return out;
}

describe("GET /openapi.json", () => {
  it("is an OpenAPI 3.1 document of the API with its security schemes", async () => {
    const doc = await document();
    expect(doc.openapi).toBe("3.1.0");
    expect(doc.info).toMatchObject({ title: "Edge MQTT broker HTTP API", version: expect.any(String) });
    expect(Object.keys(((doc.components as Json).securitySchemes as Json) ?? {}).sort()).toEqual(["adminToken", "deviceBasic", "jwtBearer"]);
    // Asked twice, the same document.
    expect(await document()).toEqual(doc);
  });

  it("describes every route the Worker serves (the bench's local counters aside)", async () => {
    const doc = await document();
    const documented = new Set(documentedCodes(doc).keys());
    const served = new Set(
      app.routes
        .filter((r) => r.method !== "ALL" && !r.path.startsWith("/__bench") && r.path !== "/openapi.json")
        .map((r) => `${r.method} ${openApiPath(r.path)}`),
    );
    expect(served.size).toBeGreaterThan(15);
    expect([...served].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((r) => !served.has(r))).toEqual([]);
    for (const path of [
      "GET /admin/v1/accounts/{accountId}/clients",
      "GET /admin/v1/accounts/{accountId}/sessions",
      "GET /admin/v1/accounts/{accountId}/retained",
      "DELETE /admin/v1/accounts/{accountId}/retained",
      "POST /admin/v1/accounts/{accountId}/devices/{deviceId}/password",
      "GET /admin/v1/accounts/{accountId}/stats",
      "GET /admin/v1/metrics",
      "POST /api/v1/messages",
    ]) {
      expect(documented.has(path), path).toBe(true);
    }
  });

  it("lists every error code the HTTP code can answer, and each admin route's auth errors", async () => {
    const doc = await document();
    const codes = documentedCodes(doc);
    const all = new Set([...codes.values()].flatMap((byStatus) => [...byStatus].map(([status, list]) => list.map((c) => `${status} ${c}`)).flat()));
    const used = new Set<string>();
    for (const [file, text] of Object.entries(SOURCES)) {
      if (file.endsWith("/bench.ts") || typeof text !== "string") continue;
      for (const m of text.matchAll(/jsonError\(\s*c,\s*(\d{3}),\s*"([a-z_]+)"/g)) used.add(`${m[1]} ${m[2]}`);
    }
    used.add("503 unhealthy"); // health.ts builds its body with errorBody
    // The answer to a path no route has is documented once, in the description of the document.
    used.delete("404 not_found");
    expect((doc.info as Json).description).toContain("404 `not_found`");
    expect(used.size).toBeGreaterThan(25);
    expect([...used].filter((c) => !all.has(c))).toEqual([]);
    for (const [route, byStatus] of codes) {
      expect(byStatus.get("500"), route).toEqual(["config_invalid", "internal"]);
      if (route.includes(" /admin/")) {
        expect(byStatus.get("401"), route).toEqual(["unauthorized"]);
        expect(byStatus.get("503"), route).toContain("admin_disabled");
      }
    }
  });

  it("documents parameters and bodies from the schemas that validate them", async () => {
    const doc = await document();
    const paths = doc.paths as Json;
    const list = ((paths["/admin/v1/accounts/{accountId}/devices"] as Json).get as Json).parameters as Json[];
    expect(list.map((p) => `${String(p.in)} ${String(p.name)}`).sort()).toEqual(["path accountId", "query after", "query limit"]);
    expect(list.find((p) => p.name === "accountId")).toMatchObject({ required: true, schema: { type: "string", pattern: "^[A-Za-z0-9_.-]{1,64}$" } });
    const tokens = (paths["/admin/v1/accounts/{accountId}/tokens"] as Json).post as Json;
    expect(tokens.requestBody).toMatchObject({
      required: true,
      content: { "application/json": { schema: { type: "object", required: ["subject"], additionalProperties: false } } },
    });
    const publish = (paths["/api/v1/messages"] as Json).post as Json;
    expect((publish.parameters as Json[]).find((p) => p.name === "qos")).toMatchObject({ in: "query", schema: { enum: ["0", "1", "2"] } });
    expect(Object.keys(publish.responses as Json).sort()).toEqual(["201", "202", "400", "401", "403", "413", "429", "500", "503"]);
  });
});
