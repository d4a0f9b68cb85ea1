/**
 * The admin HTTP API, mounted at `/admin/v1`: device provisioning and password rotation, token
 * minting for local development, disconnecting clients, and the read views of admin-views.ts. Every route needs `Authorization: Bearer <ADMIN_TOKEN>`.
 */

import { Hono, type Context } from "hono";
import type { Env } from "../env";
import { routerStub, sessionStub } from "../stubs";
import { isValidAccountId, timingSafeEqualString } from "../auth/passwords";
import { createDevice, deleteDevice, getDevice, listDevices, rotateDevicePassword, setDeviceDisabled, type Device } from "../auth/registry";
import { mintToken } from "../auth/tokens";
import { jwtConfigFromEnv } from "../auth/jwt";
import { jsonError } from "./errors";
import { isRecord } from "../guards";
import { parseLimit } from "./paging";
import { adminViews } from "./admin-views";

type AdminContext = Context<{ Bindings: Env }>;

const LIST_DEFAULT_LIMIT = 100;
const LIST_MAX_LIMIT = 1000;
const TOKEN_DEFAULT_TTL_SECONDS = 3600;
const TOKEN_MAX_TTL_SECONDS = 30 * 24 * 3600;
const SUBJECT_MAX_LENGTH = 128;
const ACL_MAX_ENTRIES = 100;

/** The admin routes; the Worker's app mounts them at `/admin/v1`. */
export const adminApi = new Hono<{ Bindings: Env }>();

adminApi.use("*", async (c, next) => {
  const expected = c.env.ADMIN_TOKEN;
  if (!expected) return jsonError(c, 503, "admin_disabled", "the admin API is disabled: ADMIN_TOKEN is not configured");
  const presented = bearerToken(c.req.header("Authorization"));
  if (presented === null || !timingSafeEqualString(presented, expected)) {
    c.header("WWW-Authenticate", "Bearer");
    return jsonError(c, 401, "unauthorized", "a valid admin bearer token is required");
  }
  await next();
});

// Every route is scoped to an account; a malformed account id can name nothing.
adminApi.use("/accounts/:accountId/*", async (c, next) => {
  if (!isValidAccountId(c.req.param("accountId"))) {
    return jsonError(c, 400, "invalid_account_id", "account ids are 1 to 64 characters of A-Z a-z 0-9 _ . -");
  }
  await next();
});

adminApi.post("/accounts/:accountId/devices", async (c) => {
  const accountId = c.req.param("accountId");
  const body = await readJson(c, true);
  if (!body.ok) return body.response;
  const value = body.value === undefined ? {} : body.value;
  if (!isRecord(value) || !hasOnlyKeys(value, ["deviceId"])) {
    return jsonError(c, 400, "invalid_body", 'expected an empty body or {"deviceId": "..."}');
  }
  const requested = value.deviceId;
  if (requested !== undefined && typeof requested !== "string") {
    return jsonError(c, 400, "invalid_device_id", "deviceId must be a string");
  }
  const pepper = c.env.DEVICE_PEPPER;
  if (!pepper) return jsonError(c, 503, "devices_disabled", "device provisioning is disabled: DEVICE_PEPPER is not configured");
  const created = await createDevice(c.env.DB, pepper, accountId, requested);
  if (!created.ok) {
    return created.error === "exists"
      ? jsonError(c, 409, "device_exists", "a device with this id already exists")
      : jsonError(c, 400, "invalid_device_id", "device ids are 1 to 64 characters of A-Z a-z 0-9 _ . -");
  }
  // The device's id is its client id: no other identity may use it from now on.
  await sessionStub(c.env, accountId, created.device.deviceId).reserve(accountId, created.device.deviceId, { kind: "device", id: created.device.deviceId });
  return c.json({ accountId, deviceId: created.device.deviceId, password: created.password }, 201);
});

adminApi.get("/accounts/:accountId/devices", async (c) => {
  const accountId = c.req.param("accountId");
  const limit = parseLimit(c.req.query("limit"), LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT);
  if (limit === null) return jsonError(c, 400, "invalid_limit", `limit must be an integer from 1 to ${LIST_MAX_LIMIT}`);
  const after = c.req.query("after") || undefined;
  // One extra row tells whether another page exists, so the last page never points at an empty one.
  const rows = await listDevices(c.env.DB, accountId, { limit: limit + 1, ...(after === undefined ? {} : { after }) });
  const page = rows.slice(0, limit);
  const next = rows.length > limit ? (page[page.length - 1]?.deviceId ?? null) : null;
  return c.json({ devices: page.map(deviceJson), next });
});

adminApi.get("/accounts/:accountId/devices/:deviceId", async (c) => {
  const device = await getDevice(c.env.DB, c.req.param("accountId"), c.req.param("deviceId"));
  if (device === null) return deviceNotFound(c);
  return c.json(deviceJson(device));
});

adminApi.patch("/accounts/:accountId/devices/:deviceId", async (c) => {
  const accountId = c.req.param("accountId");
  const deviceId = c.req.param("deviceId");
  const body = await readJson(c, false);
  if (!body.ok) return body.response;
  const value = body.value;
  if (!isRecord(value) || !hasOnlyKeys(value, ["disabled"]) || typeof value.disabled !== "boolean") {
    return jsonError(c, 400, "invalid_body", 'expected {"disabled": true|false}');
  }
  const device = await setDeviceDisabled(c.env.DB, accountId, deviceId, value.disabled);
  if (device === null) return deviceNotFound(c);
  // A device's client id is its device id. Kicking after the write means a reconnect already sees the flag.
  if (device.disabled) await sessionStub(c.env, accountId, deviceId).close("notAuthorized");
  return c.json(deviceJson(device));
});

adminApi.delete("/accounts/:accountId/devices/:deviceId", async (c) => {
  const accountId = c.req.param("accountId");
  const deviceId = c.req.param("deviceId");
  if (!(await deleteDevice(c.env.DB, accountId, deviceId))) return deviceNotFound(c);
  const session = sessionStub(c.env, accountId, deviceId);
  await session.close("notAuthorized");
  await session.unreserve();
  return c.body(null, 204);
});

/**
 * Password rotation: a fresh password, answered once; the old one stops working at once. The
 * device's live connection (a connection authenticated with the old password) is closed
 * (close code 180, MQTT 5 DISCONNECT 0x87) unless `?disconnect=false`, which keeps it open so
 * the new password can be handed to the device over it; its next CONNECT needs the new one.
 */
adminApi.post("/accounts/:accountId/devices/:deviceId/password", async (c) => {
  const accountId = c.req.param("accountId");
  const deviceId = c.req.param("deviceId");
  const disconnect = c.req.query("disconnect");
  if (disconnect !== undefined && disconnect !== "true" && disconnect !== "false") {
    return jsonError(c, 400, "invalid_query", "disconnect must be true or false");
  }
  const pepper = c.env.DEVICE_PEPPER;
  if (!pepper) return jsonError(c, 503, "devices_disabled", "device provisioning is disabled: DEVICE_PEPPER is not configured");
  const rotated = await rotateDevicePassword(c.env.DB, pepper, accountId, deviceId);
  if (rotated === null) return deviceNotFound(c);
  const disconnected = disconnect !== "false" && (await sessionStub(c.env, accountId, deviceId).close("notAuthorized"));
  return c.json({ accountId, deviceId, password: rotated.password, disconnected });
});

adminApi.post("/accounts/:accountId/tokens", async (c) => {
  const accountId = c.req.param("accountId");
  const body = await readJson(c, false);
  if (!body.ok) return body.response;
  const value = body.value;
  if (!isRecord(value) || !hasOnlyKeys(value, ["subject", "ttlSeconds", "acl"])) {
    return jsonError(c, 400, "invalid_body", 'expected {"subject": "...", "ttlSeconds": N, "acl": {"pub": [...], "sub": [...]}}');
  }
  const { subject, ttlSeconds = TOKEN_DEFAULT_TTL_SECONDS, acl } = value;
  if (!isValidSubject(subject)) {
    return jsonError(c, 400, "invalid_subject", `subject must be 1 to ${SUBJECT_MAX_LENGTH} characters without / + #`);
  }
  const jwt = jwtConfigFromEnv(c.env);
  if (jwt.invalid) return jsonError(c, 500, "config_invalid", `token minting is disabled: ${jwt.invalid.message}`);
  // A token longer-lived than the verifier accepts would be refused at every use.
  const maxTtl = jwt.maxTtlSeconds ? Math.min(TOKEN_MAX_TTL_SECONDS, jwt.maxTtlSeconds) : TOKEN_MAX_TTL_SECONDS;
  if (typeof ttlSeconds !== "number" || !Number.isInteger(ttlSeconds) || ttlSeconds < 1 || ttlSeconds > maxTtl) {
    return jsonError(c, 400, "invalid_ttl", `ttlSeconds must be an integer from 1 to ${maxTtl}`);
  }
  const parsedAcl = acl === undefined ? undefined : parseAcl(acl);
  if (parsedAcl === null) {
    return jsonError(c, 400, "invalid_acl", `acl must be {"pub": [...], "sub": [...]} with at most ${ACL_MAX_ENTRIES} strings each`);
  }
  if (!jwt.secret) return jsonError(c, 503, "jwt_disabled", "token minting is disabled: JWT_SECRET is not configured");
  const { token, expiresAt } = await mintToken(jwt.secret, {
    subject,
    accountId,
    ttlSeconds,
    ...(parsedAcl === undefined ? {} : { acl: parsedAcl }),
    ...(jwt.issuer === undefined ? {} : { issuer: jwt.issuer }),
    ...(jwt.audience === undefined ? {} : { audience: jwt.audience }),
  });
  return c.json({ token, expiresAt: expiresAt.toISOString() }, 201);
});

adminApi.delete("/accounts/:accountId/clients/:clientId", async (c) => {
  const publishWill = c.req.query("will") !== "false";
  const closed = await sessionStub(c.env, c.req.param("accountId"), c.req.param("clientId")).close("adminKick", { publishWill });
  if (!closed) return jsonError(c, 404, "client_not_connected", "no live connection with this client id");
  return c.body(null, 204);
});

adminApi.get("/accounts/:accountId/shared/:group", async (c) => {
  const accountId = c.req.param("accountId");
  const group = c.req.param("group");
  const filters = await routerStub(c.env, accountId).sharedGroup(group);
  if (filters.length === 0) return jsonError(c, 404, "shared_group_not_found", "no shared subscription with this group name");
  return c.json({ accountId, group, subscriptions: filters });
});

adminApi.route("/", adminViews);

/** The admin API's view of a device: never the password hash. */
function deviceJson(d: Device): Device {
  return { accountId: d.accountId, deviceId: d.deviceId, disabled: d.disabled, createdAt: d.createdAt, updatedAt: d.updatedAt };
}

function deviceNotFound(c: AdminContext): Response {
  return jsonError(c, 404, "device_not_found", "no device with this id in this account");
}

function bearerToken(header: string | undefined): string | null {
  const match = header?.match(/^Bearer\s+(\S+)\s*$/i);
  return match?.[1] ?? null;
}

type JsonBody = { ok: true; value: unknown } | { ok: false; response: Response };

/** The parsed request body; with `optional`, an empty body is `undefined` rather than an error. */
async function readJson(c: AdminContext, optional: boolean): Promise<JsonBody> {
  const text = await c.req.text();
  if (text.trim() === "") {
    return optional ? { ok: true, value: undefined } : { ok: false, response: jsonError(c, 400, "invalid_body", "a JSON body is required") };
  }
  try {
    const value: unknown = JSON.parse(text);
    return { ok: true, value };
  } catch {
    return { ok: false, response: jsonError(c, 400, "invalid_json", "the body is not valid JSON") };
  }
}

function hasOnlyKeys(v: Record<string, unknown>, allowed: readonly string[]): boolean {
  return Object.keys(v).every((k) => allowed.includes(k));
}

/** A JWT subject is the MQTT user name and, in single mode, a client id and topic level. */
function isValidSubject(v: unknown): v is string {
  return typeof v === "string" && v.length >= 1 && v.length <= SUBJECT_MAX_LENGTH && !/[/+#\u0000]/.test(v);
}

/** `{pub, sub}` as string lists; a missing list is empty (no rights of that kind). Null when malformed. */
function parseAcl(v: unknown): { pub: string[]; sub: string[] } | null {
  if (!isRecord(v) || !hasOnlyKeys(v, ["pub", "sub"])) return null;
  const pub = v.pub === undefined ? [] : stringList(v.pub);
  const sub = v.sub === undefined ? [] : stringList(v.sub);
  return pub === null || sub === null ? null : { pub, sub };
}

function stringList(v: unknown): string[] | null {
  if (!Array.isArray(v) || v.length > ACL_MAX_ENTRIES) return null;
  const out: string[] = [];
  for (const item of v) {
    if (typeof item !== "string") return null;
    out.push(item);
  }
  return out;
}
