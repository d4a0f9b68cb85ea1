import { inject } from "vitest";
import type { MqttClient } from "mqtt";
import { connect, uid } from "./mqtt";

/** Calls the admin API of the shared test broker (or of the broker at `baseUrl`). */
export async function admin(method: string, path: string, body?: unknown, token = inject("adminToken"), baseUrl = inject("brokerUrl")): Promise<{ status: number; json: unknown }> {
  const res = await fetch(`${baseUrl}/admin/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as unknown) : null };
}

export interface DeviceCredentials {
  accountId: string;
  deviceId: string;
  password: string;
}

function isCredentials(v: unknown): v is DeviceCredentials {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.accountId === "string" && typeof r.deviceId === "string" && typeof r.password === "string";
}

export async function createDevice(accountId: string, deviceId?: string): Promise<DeviceCredentials> {
  const { status, json } = await admin("POST", `/accounts/${accountId}/devices`, deviceId ? { deviceId } : undefined);
  if (status !== 201 || !isCredentials(json)) throw new Error(`device creation failed: ${status} ${JSON.stringify(json)}`);
  return json;
}

/** Mints a JWT with the admin API; `opts.url`: a dedicated broker's base URL (default: the shared one). */
export async function mintToken(accountId: string, subject: string, opts: { ttlSeconds?: number; acl?: { pub: string[]; sub: string[] }; url?: string } = {}): Promise<string> {
  const body = { subject, ttlSeconds: opts.ttlSeconds ?? 600, ...(opts.acl ? { acl: opts.acl } : {}) };
  const { status, json } = await admin("POST", `/accounts/${accountId}/tokens`, body, undefined, opts.url);
  const token = typeof json === "object" && json !== null ? (json as Record<string, unknown>).token : undefined;
  if (status !== 201 || typeof token !== "string") throw new Error(`token mint failed: ${status} ${JSON.stringify(json)}`);
  return token;
}

export const deviceTopic = (d: DeviceCredentials, channel: string): string => `xi/blue/v1/${d.accountId}/d/${d.deviceId}/${channel}`;

/** A client of the anonymous test account whose token may also publish to `$`-topics (for the `$` rule tests). */
export async function privileged(): Promise<MqttClient> {
  const grants = ["#", "$SYS/#", "$x/#"];
  const subject = uid("priv");
  const password = await mintToken("anon", subject, { acl: { pub: grants, sub: grants } });
  return connect({ clientId: subject, username: subject, password });
}
