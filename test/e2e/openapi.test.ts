import { describe, expect, inject, it } from "vitest";
import { Validator } from "@seriousme/openapi-schema-validator";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";

const brokerUrl = (): string => inject("brokerUrl");

describe("the OpenAPI document of the running broker", () => {
  it("is a valid OpenAPI 3.1 document (checked against the specification's JSON schema)", async () => {
    const res = await fetch(`${brokerUrl()}/openapi.json`);
    expect(res.status).toBe(200);
    const doc: unknown = await res.json();
    if (typeof doc !== "object" || doc === null || Array.isArray(doc)) throw new Error("not a JSON object");
    const validator = new Validator();
    const result = await validator.validate({ ...doc });
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe("3.1");
  });

  it("has every operation listed in docs/api.md", async () => {
    const doc: unknown = await (await fetch(`${brokerUrl()}/openapi.json`)).json();
    const paths = typeof doc === "object" && doc !== null && "paths" in doc && typeof doc.paths === "object" && doc.paths !== null ? doc.paths : {};
    const page = readFileSync(resolve(import.meta.dirname, "../../docs/api.md"), "utf8");
    const operations = Object.entries(paths).flatMap(([path, item]) => Object.keys(typeof item === "object" && item !== null ? item : {}).map((m) => `\`${m.toUpperCase()} ${path}\``));
    expect(operations.length).toBeGreaterThan(15);
    expect(operations.filter((op) => !page.includes(op))).toEqual([]);
  });

  it("is served with the reference page that renders it", async () => {
    const page = await fetch(`${brokerUrl()}/api.html`);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toMatch(/script-src 'self'/);
    const html = await page.text();
    expect(html).toContain('src="/api.js"');
    expect((await fetch(`${brokerUrl()}/api.js`)).status).toBe(200);
  });
});
