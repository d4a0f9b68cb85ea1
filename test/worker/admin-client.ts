/** The admin API as the worker tests call it (SELF), with the JSON checks they share. */
import { expect } from "vitest";
import { SELF } from "cloudflare:test";

export const ADMIN_TOKEN = "test-admin-token";
export const BASE = "https://broker/admin/v1";

export type Json = Record<string, unknown>;

export function admin(method: string, path: string, body?: unknown, token: string | null = ADMIN_TOKEN): Promise<Response> {
  const headers = new Headers();
  if (token !== null) headers.set("Authorization", `Bearer ${token}`);
  let payload: string | undefined;
  if (typeof body === "string") payload = body;
  else if (body !== undefined) {
    payload = JSON.stringify(body);
    headers.set("Content-Type", "application/json");
  }
  return SELF.fetch(`${BASE}${path}`, { method, headers, ...(payload === undefined ? {} : { body: payload }) });
}

export async function json(res: Response): Promise<Json> {
  const body: unknown = await res.json();
  if (typeof body !== "object" || body === null || Array.isArray(body)) throw new Error(`not a JSON object: ${JSON.stringify(body)}`);
  return { ...body };
}

export async function expectError(res: Response, status: number, code: string): Promise<void> {
  const body = await json(res);
  expect({ status: res.status, code: (body.error as Json | undefined)?.code }).toEqual({ status, code });
  expect(typeof (body.error as Json).message).toBe("string");
}

export const newAccount = (): string => `acc-${crypto.randomUUID()}`;

export async function provision(account: string, deviceId?: string): Promise<{ deviceId: string; password: string }> {
  const res = await admin("POST", `/accounts/${account}/devices`, deviceId === undefined ? undefined : { deviceId });
  expect(res.status).toBe(201);
  const body = await json(res);
  if (typeof body.deviceId !== "string" || typeof body.password !== "string") throw new Error("bad create answer");
  return { deviceId: body.deviceId, password: body.password };
}
