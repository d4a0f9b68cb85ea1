/**
 * The admin HTTP API, mounted at `/admin/v1`: device provisioning and password rotation, token
 * minting for local development, disconnecting clients, and the read views of admin-views.ts.
 * Every route needs `Authorization: Bearer <ADMIN_TOKEN>`. Each route is defined with its
 * OpenAPI description and the valibot schemas that validate its path, query and body (api-doc.ts).
 */

import { Hono, type Context } from "hono";
import * as v from "valibot";
import type { Env } from "../env";
import { sessionStub } from "../stubs";
import { accountRouter, shardingOf } from "../router/shards";
import { getConfig } from "../config";
import { timingSafeEqualString } from "../auth/passwords";
import { createDevice, deleteDevice, getDevice, listDevices, rotateDevicePassword, setDeviceDisabled, type Device } from "../auth/registry";
import { mintToken } from "../auth/tokens";
import { jwtConfigFromEnv } from "../auth/jwt";
import { jsonError } from "./errors";
import { ACCOUNT_FIELD, ACCOUNT_ID, LIMIT, doc, jsonBody, params, query } from "./api-doc";
import { adminViews } from "./admin-views";

type AdminContext = Context<{ Bindings: Env }>;

const LIST_DEFAULT_LIMIT = 100;
const LIST_MAX_LIMIT = 1000;
const TOKEN_DEFAULT_TTL_SECONDS = 3600;
const TOKEN_MAX_TTL_SECONDS = 30 * 24 * 3600;
const SUBJECT_MAX_LENGTH = 128;
const ACL_MAX_ENTRIES = 100;

const DeviceSchema = v.object({
  accountId: v.string(),
  deviceId: v.string(),
  disabled: v.boolean(),
  createdAt: v.pipe(v.string(), v.description("ISO 8601")),
  updatedAt: v.pipe(v.string(), v.description("ISO 8601")),
});
const Credentials = v.object({
  accountId: v.string(),
  deviceId: v.string(),
  password: v.pipe(v.string(), v.description("shown only in this answer")),
});
const AccountParams = v.object({ accountId: ACCOUNT_ID });
const DeviceParams = v.object({ accountId: ACCOUNT_ID, deviceId: v.string() });
const ClientParams = v.object({ accountId: ACCOUNT_ID, clientId: v.string() });
const GroupParams = v.object({ accountId: ACCOUNT_ID, group: v.string() });
const TrueFalse = v.optional(v.picklist(["true", "false"]));

const CreateBody = v.strictObject({
  deviceId: v.optional(v.pipe(v.string(), v.description("1 to 64 characters of A-Z a-z 0-9 _ . -; generated when absent"))),
});
const PatchBody = v.strictObject({ disabled: v.boolean() });
const FilterList = v.optional(v.pipe(v.array(v.string()), v.maxLength(ACL_MAX_ENTRIES)));
const TokenBody = v.strictObject({
  subject: v.pipe(v.string(), v.minLength(1), v.maxLength(SUBJECT_MAX_LENGTH), v.regex(/^[^/+#\u0000]*$/), v.description("the JWT sub: user name and, in single mode, client id")),
  ttlSeconds: v.optional(v.pipe(v.number(), v.integer(), v.minValue(1), v.description(`lifetime; default ${TOKEN_DEFAULT_TTL_SECONDS}, at most JWT_MAX_TTL_SECONDS`))),
  acl: v.optional(v.strictObject({ pub: FilterList, sub: FilterList })),
});

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

adminApi.post(
  "/accounts/:accountId/devices",
  doc({
    summary: "Provision a device",
    description: "Registers a device and answers its password, the only time it is shown. The device id is reserved as that device's client id.",
    tags: ["devices"],
    access: "admin",
    body: { schema: CreateBody, required: false },
    ok: { 201: { description: "Created", schema: Credentials } },
    errors: { 400: ["invalid_account_id", "invalid_json", "invalid_body", "invalid_device_id"], 409: ["device_exists"], 503: ["devices_disabled"] },
  }),
  params(AccountParams, ACCOUNT_FIELD),
  async (c) => {
    const { accountId } = c.req.valid("param");
    const body = await jsonBody(c, CreateBody, {
      optional: true,
      fields: { deviceId: ["invalid_device_id", "deviceId must be a string"], "*": ["invalid_body", 'expected an empty body or {"deviceId": "..."}'] },
    });
    if (!body.ok) return body.response;
    const pepper = c.env.DEVICE_PEPPER;
    if (!pepper) return jsonError(c, 503, "devices_disabled", "device provisioning is disabled: DEVICE_PEPPER is not configured");
    const created = await createDevice(c.env.DB, pepper, accountId, body.value?.deviceId);
    if (!created.ok) {
      return created.error === "exists"
        ? jsonError(c, 409, "device_exists", "a device with this id already exists")
        : jsonError(c, 400, "invalid_device_id", "device ids are 1 to 64 characters of A-Z a-z 0-9 _ . -");
    }
    // The device's id is its client id: no other identity may use it from now on.
    await sessionStub(c.env, accountId, created.device.deviceId).reserve(accountId, created.device.deviceId, { kind: "device", id: created.device.deviceId });
    return c.json({ accountId, deviceId: created.device.deviceId, password: created.password }, 201);
  },
);

adminApi.get(
  "/accounts/:accountId/devices",
  doc({
    summary: "List devices",
    description: "An account's devices in id order, a page at a time: pass the answer's `next` as `after` for the next page.",
    tags: ["devices"],
    access: "admin",
    ok: { 200: { description: "One page", schema: v.object({ devices: v.array(DeviceSchema), next: v.nullable(v.string()) }) } },
    errors: { 400: ["invalid_account_id", "invalid_limit"] },
  }),
  params(AccountParams, ACCOUNT_FIELD),
  query(v.object({ limit: LIMIT, after: v.optional(v.string()) }), { limit: ["invalid_limit", `limit must be an integer from 1 to ${LIST_MAX_LIMIT}`] }),
  async (c) => {
    const { accountId } = c.req.valid("param");
    const q = c.req.valid("query");
    const limit = Math.min(Number(q.limit ?? LIST_DEFAULT_LIMIT), LIST_MAX_LIMIT);
    const after = q.after || undefined;
    // One extra row tells whether another page exists, so the last page never points at an empty one.
    const rows = await listDevices(c.env.DB, accountId, { limit: limit + 1, ...(after === undefined ? {} : { after }) });
    const page = rows.slice(0, limit);
    const next = rows.length > limit ? (page[page.length - 1]?.deviceId ?? null) : null;
    return c.json({ devices: page.map(deviceJson), next });
  },
);

adminApi.get(
  "/accounts/:accountId/devices/:deviceId",
  doc({
    summary: "Get a device",
    tags: ["devices"],
    access: "admin",
    ok: { 200: { description: "The device", schema: DeviceSchema } },
    errors: { 400: ["invalid_account_id"], 404: ["device_not_found"] },
  }),
  params(DeviceParams, ACCOUNT_FIELD),
  async (c) => {
    const { accountId, deviceId } = c.req.valid("param");
    const device = await getDevice(c.env.DB, accountId, deviceId);
    if (device === null) return deviceNotFound(c);
    return c.json(deviceJson(device));
  },
);

adminApi.patch(
  "/accounts/:accountId/devices/:deviceId",
  doc({
    summary: "Disable or enable a device",
    description: "Disabling closes the device's live connection (close code 180); its next CONNECT is refused with 5.",
    tags: ["devices"],
    access: "admin",
    body: { schema: PatchBody, required: true },
    ok: { 200: { description: "The device", schema: DeviceSchema } },
    errors: { 400: ["invalid_account_id", "invalid_json", "invalid_body"], 404: ["device_not_found"] },
  }),
  params(DeviceParams, ACCOUNT_FIELD),
  async (c) => {
    const { accountId, deviceId } = c.req.valid("param");
    const body = await jsonBody(c, PatchBody, { optional: false, fields: { "*": ["invalid_body", 'expected {"disabled": true|false}'] } });
    if (!body.ok) return body.response;
    if (body.value === undefined) return jsonError(c, 400, "invalid_body", 'expected {"disabled": true|false}');
    const device = await setDeviceDisabled(c.env.DB, accountId, deviceId, body.value.disabled);
    if (device === null) return deviceNotFound(c);
    // A device's client id is its device id. Kicking after the write means a reconnect already sees the flag.
    if (device.disabled) await sessionStub(c.env, accountId, deviceId).close("notAuthorized");
    return c.json(deviceJson(device));
  },
);

adminApi.delete(
  "/accounts/:accountId/devices/:deviceId",
  doc({
    summary: "Delete a device",
    description: "Closes its live connection and frees its client id.",
    tags: ["devices"],
    access: "admin",
    ok: { 204: { description: "Deleted" } },
    errors: { 400: ["invalid_account_id"], 404: ["device_not_found"] },
  }),
  params(DeviceParams, ACCOUNT_FIELD),
  async (c) => {
    const { accountId, deviceId } = c.req.valid("param");
    if (!(await deleteDevice(c.env.DB, accountId, deviceId))) return deviceNotFound(c);
    const session = sessionStub(c.env, accountId, deviceId);
    await session.close("notAuthorized");
    await session.unreserve();
    return c.body(null, 204);
  },
);

adminApi.post(
  "/accounts/:accountId/devices/:deviceId/password",
  doc({
    summary: "Rotate a device's password",
    description:
      "Answers a fresh password, once; the old one stops working at once. The device's live connection (authenticated with the old password) " +
      "is closed (close code 180, MQTT 5 DISCONNECT 0x87) unless `disconnect=false`, which keeps it open so the new password can be handed to the " +
      "device over it; its next CONNECT needs the new one.",
    tags: ["devices"],
    access: "admin",
    ok: { 200: { description: "The new password", schema: v.object({ ...Credentials.entries, disconnected: v.pipe(v.boolean(), v.description("whether a live connection was closed")) }) } },
    errors: { 400: ["invalid_account_id", "invalid_query"], 404: ["device_not_found"], 503: ["devices_disabled"] },
  }),
  params(DeviceParams, ACCOUNT_FIELD),
  query(v.object({ disconnect: TrueFalse }), { "*": ["invalid_query", "disconnect must be true or false"] }),
  async (c) => {
    const { accountId, deviceId } = c.req.valid("param");
    const { disconnect } = c.req.valid("query");
    const pepper = c.env.DEVICE_PEPPER;
    if (!pepper) return jsonError(c, 503, "devices_disabled", "device provisioning is disabled: DEVICE_PEPPER is not configured");
    const rotated = await rotateDevicePassword(c.env.DB, pepper, accountId, deviceId);
    if (rotated === null) return deviceNotFound(c);
    const disconnected = disconnect !== "false" && (await sessionStub(c.env, accountId, deviceId).close("notAuthorized"));
    return c.json({ accountId, deviceId, password: rotated.password, disconnected });
  },
);

adminApi.post(
  "/accounts/:accountId/tokens",
  doc({
    summary: "Mint a JWT (development)",
    description: "An HS256 token signed with JWT_SECRET: a stand-in for an external identity service.",
    tags: ["tokens"],
    access: "admin",
    body: { schema: TokenBody, required: true },
    ok: { 201: { description: "The token", schema: v.object({ token: v.string(), expiresAt: v.pipe(v.string(), v.description("ISO 8601")) }) } },
    errors: {
      400: ["invalid_account_id", "invalid_json", "invalid_body", "invalid_subject", "invalid_ttl", "invalid_acl"],
      503: ["jwt_disabled"],
    },
  }),
  params(AccountParams, ACCOUNT_FIELD),
  async (c) => {
    const { accountId } = c.req.valid("param");
    const jwt = jwtConfigFromEnv(c.env);
    // A token longer-lived than the verifier accepts would be refused at every use.
    const maxTtl = jwt.maxTtlSeconds ? Math.min(TOKEN_MAX_TTL_SECONDS, jwt.maxTtlSeconds) : TOKEN_MAX_TTL_SECONDS;
    const body = await jsonBody(c, TokenBody, {
      optional: false,
      fields: {
        subject: ["invalid_subject", `subject must be 1 to ${SUBJECT_MAX_LENGTH} characters without / + #`],
        ttlSeconds: ["invalid_ttl", `ttlSeconds must be an integer from 1 to ${maxTtl}`],
        acl: ["invalid_acl", `acl must be {"pub": [...], "sub": [...]} with at most ${ACL_MAX_ENTRIES} strings each`],
        "*": ["invalid_body", 'expected {"subject": "...", "ttlSeconds": N, "acl": {"pub": [...], "sub": [...]}}'],
      },
    });
    if (!body.ok) return body.response;
    if (body.value === undefined) return jsonError(c, 400, "invalid_body", "a JSON body is required");
    const { subject, ttlSeconds = TOKEN_DEFAULT_TTL_SECONDS, acl } = body.value;
    if (jwt.invalid) return jsonError(c, 500, "config_invalid", `token minting is disabled: ${jwt.invalid.message}`);
    if (ttlSeconds > maxTtl) return jsonError(c, 400, "invalid_ttl", `ttlSeconds must be an integer from 1 to ${maxTtl}`);
    if (!jwt.secret) return jsonError(c, 503, "jwt_disabled", "token minting is disabled: JWT_SECRET is not configured");
    const { token, expiresAt } = await mintToken(jwt.secret, {
      subject,
      accountId,
      ttlSeconds,
      // A missing list is empty (no rights of that kind).
      ...(acl === undefined ? {} : { acl: { pub: acl.pub ?? [], sub: acl.sub ?? [] } }),
      ...(jwt.issuer === undefined ? {} : { issuer: jwt.issuer }),
      ...(jwt.audience === undefined ? {} : { audience: jwt.audience }),
    });
    return c.json({ token, expiresAt: expiresAt.toISOString() }, 201);
  },
);

adminApi.delete(
  "/accounts/:accountId/clients/:clientId",
  doc({
    summary: "Disconnect a client",
    description: "Closes the live connection with this client id now (close code 94, MQTT 5 DISCONNECT 0x98); its will is published unless `will=false`.",
    tags: ["clients"],
    access: "admin",
    ok: { 204: { description: "Disconnected" } },
    errors: { 400: ["invalid_account_id", "invalid_query"], 404: ["client_not_connected"] },
  }),
  params(ClientParams, ACCOUNT_FIELD),
  query(v.object({ will: TrueFalse }), { "*": ["invalid_query", "will must be true or false"] }),
  async (c) => {
    const { accountId, clientId } = c.req.valid("param");
    const publishWill = c.req.valid("query").will !== "false";
    const closed = await sessionStub(c.env, accountId, clientId).close("adminKick", { publishWill });
    if (!closed) return jsonError(c, 404, "client_not_connected", "no live connection with this client id");
    return c.body(null, 204);
  },
);

const SharedMember = v.object({ clientId: v.string(), qos: v.picklist([0, 1, 2]), online: v.boolean() });

adminApi.get(
  "/accounts/:accountId/shared/:group",
  doc({
    summary: "Inspect a shared subscription group",
    tags: ["clients"],
    access: "admin",
    ok: {
      200: {
        description: "The group's filters, members and queued messages",
        schema: v.object({ accountId: v.string(), group: v.string(), subscriptions: v.array(v.object({ filter: v.string(), members: v.array(SharedMember), queued: v.number() })) }),
      },
    },
    errors: { 400: ["invalid_account_id"], 404: ["shared_group_not_found"] },
  }),
  params(GroupParams, ACCOUNT_FIELD),
  async (c) => {
    const { accountId, group } = c.req.valid("param");
    const filters = await accountRouter(c.env, accountId, shardingOf(getConfig(c.env).limits)).sharedGroup(group);
    if (filters.length === 0) return jsonError(c, 404, "shared_group_not_found", "no shared subscription with this group name");
    return c.json({ accountId, group, subscriptions: filters });
  },
);

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
