/**
 * The HTTP API's route definitions and their OpenAPI 3.1 document (`GET /openapi.json`), from
 * one schema library (valibot): the schemas that document a route's path, query and body
 * are the ones that validate them, and every error code a route answers is listed with it.
 * `hono-openapi` collects the descriptions from the registered routes.
 */
import type { Context, MiddlewareHandler } from "hono";
import { describeRoute, resolver, validator, type GenerateSpecOptions, type ResponsesWithResolver } from "hono-openapi";
import * as v from "valibot";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import { jsonError } from "./errors";
import { ID_PATTERN } from "../auth/passwords";
import { isRecord } from "../guards";

/** `{"error": {"code", "message"}}` with the codes one status of one route can carry. */
function errorSchema(codes: readonly [string, ...string[]]) {
  return v.object({
    error: v.object({
      code: v.pipe(v.picklist(codes), v.description("stable machine-readable code")),
      message: v.pipe(v.string(), v.description("human-readable detail; may change")),
    }),
  });
}

/** Who may call a route: the admin token, a device or JWT client, or anyone. */
export type Access = "admin" | "client" | "public";

export interface RouteDoc {
  summary: string;
  description?: string;
  tags: [string, ...string[]];
  access: Access;
  /** The success answers: status -> description and (JSON) schema, or another media type. */
  ok: Record<number, { description: string; schema?: v.GenericSchema; mediaType?: string }>;
  /** The error answers this route itself gives: status -> codes (the access and config ones are added). */
  errors?: Partial<Record<ContentfulStatusCode, [string, ...string[]]>>;
  body?: { schema: v.GenericSchema; required: boolean; mediaType?: string; description?: string };
}

/** Errors every route can answer (a var that does not parse, an unexpected failure). */
const COMMON_ERRORS: Record<number, [string, ...string[]]> = { 500: ["config_invalid", "internal"] };
const ADMIN_ERRORS: Record<number, [string, ...string[]]> = { 401: ["unauthorized"], 503: ["admin_disabled"] };

const ERROR_DESCRIPTIONS: Record<number, string> = {
  400: "Bad request",
  401: "Not authenticated",
  403: "Not allowed",
  404: "Not found",
  409: "Conflict",
  413: "Payload too large",
  426: "Upgrade required",
  429: "Rate limited (Retry-After says when to try again)",
  500: "Server error",
  503: "Unavailable",
};

/** Merges error code lists by status, without repeats. */
function mergeErrors(...lists: Array<Partial<Record<number, string[]>> | undefined>): Map<number, [string, ...string[]]> {
  const out = new Map<number, Set<string>>();
  for (const list of lists) {
    for (const [status, codes] of Object.entries(list ?? {})) {
      const set = out.get(Number(status)) ?? new Set<string>();
      for (const code of codes ?? []) set.add(code);
      out.set(Number(status), set);
    }
  }
  const merged = new Map<number, [string, ...string[]]>();
  for (const [status, set] of [...out].sort(([a], [b]) => a - b)) {
    const [first, ...rest] = [...set];
    if (first !== undefined) merged.set(status, [first, ...rest]);
  }
  return merged;
}

/** The OpenAPI description of one route, as middleware (it does nothing at request time). */
export function doc(d: RouteDoc): MiddlewareHandler {
  const responses: ResponsesWithResolver = {};
  for (const [status, ok] of Object.entries(d.ok)) {
    responses[status] = ok.schema
      ? { description: ok.description, content: { [ok.mediaType ?? "application/json"]: { schema: resolver(ok.schema) } } }
      : { description: ok.description };
  }
  const errors = mergeErrors(COMMON_ERRORS, d.access === "admin" ? ADMIN_ERRORS : undefined, d.errors);
  for (const [status, codes] of errors) {
    responses[String(status)] = {
      description: `${ERROR_DESCRIPTIONS[status] ?? "Error"}: ${codes.map((c) => `\`${c}\``).join(", ")}`,
      content: { "application/json": { schema: resolver(errorSchema(codes)) } },
    };
  }
  const security: Array<Record<string, string[]>> =
    d.access === "admin" ? [{ adminToken: [] }] : d.access === "client" ? [{ deviceBasic: [] }, { jwtBearer: [] }] : [];
  return describeRoute({
    summary: d.summary,
    ...(d.description === undefined ? {} : { description: d.description }),
    tags: d.tags,
    security,
    responses,
    ...(d.body
      ? {
          requestBody: {
            required: d.body.required,
            ...(d.body.description === undefined ? {} : { description: d.body.description }),
            content: { [d.body.mediaType ?? "application/json"]: { schema: resolver(d.body.schema) } },
          },
        }
      : {}),
  });
}

/** For each key of a query or path schema, the error a bad value gets (`*`: any other problem). */
export type FieldErrors = Record<string, readonly [code: string, message: string]>;

/** The top-level key an issue is about, or "*". */
function issueKey(issue: { path?: ReadonlyArray<PropertyKey | { key: unknown }> | undefined }): string {
  const first = issue.path?.[0];
  if (first === undefined) return "*";
  return String(typeof first === "object" ? first.key : first);
}

function failWith(c: Context, issues: ReadonlyArray<{ path?: ReadonlyArray<PropertyKey | { key: unknown }> | undefined }>, fields: FieldErrors): Response {
  const key = issues[0] ? issueKey(issues[0]) : "*";
  const [code, message] = fields[key] ?? fields["*"] ?? ["invalid_request", "the request is not valid"];
  return jsonError(c, 400, code, message);
}

/** Validates the path parameters with `schema` (documented from it); a bad one answers 400 with its field's code. */
export function params<S extends v.GenericSchema>(schema: S, fields: FieldErrors) {
  return validator("param", schema, (result, c) => (result.success ? undefined : failWith(c, result.error, fields)));
}

/** Validates the query with `schema` (documented from it); a bad one answers 400 with its field's code. */
export function query<S extends v.GenericSchema>(schema: S, fields: FieldErrors) {
  return validator("query", schema, (result, c) => (result.success ? undefined : failWith(c, result.error, fields)));
}

export type BodyResult<T> = { ok: true; value: T } | { ok: false; response: Response };

/**
 * The JSON body read and validated with `schema` (the one `doc` documents). Not the `json`
 * validator: that one skips bodies sent without `Content-Type: application/json`, and curl
 * users send those. An empty body is `undefined` when `optional`.
 */
export async function jsonBody<S extends v.GenericSchema>(
  c: Context,
  schema: S,
  opts: { optional: boolean; fields: FieldErrors },
): Promise<BodyResult<v.InferOutput<S> | undefined>> {
  const text = await c.req.text();
  if (text.trim() === "") {
    return opts.optional ? { ok: true, value: undefined } : { ok: false, response: jsonError(c, 400, "invalid_body", "a JSON body is required") };
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, response: jsonError(c, 400, "invalid_json", "the body is not valid JSON") };
  }
  const misplaced = arrayForObject(schema, value);
  if (misplaced !== null) return { ok: false, response: failWith(c, misplaced === "*" ? [] : [{ path: [misplaced] }], opts.fields) };
  const parsed = v.safeParse(schema, value);
  if (parsed.success) return { ok: true, value: parsed.output };
  // A value that is not an object at all, or a top-level key the schema does not know, is the body's fault.
  const issue = parsed.issues[0];
  const bodyFault = !issue.path || issue.path.length === 0 || (issue.path.length === 1 && issue.expected === "never");
  return { ok: false, response: failWith(c, bodyFault ? [] : parsed.issues, opts.fields) };
}

/** What `arrayForObject` reads of a valibot schema: its kind, object entries, optional wrapping. */
interface SchemaShape {
  type: string;
  entries?: Record<string, SchemaShape>;
  wrapped?: SchemaShape;
}

function isShape(x: unknown): x is SchemaShape {
  return isRecord(x) && typeof x.type === "string";
}

/**
 * valibot's object schemas accept an array (its indexes are the keys), and JSON has both: the
 * top-level key (or "*" for the body itself) where an array stands for an object, else null.
 */
function arrayForObject(schema: unknown, value: unknown, key = "*"): string | null {
  if (!isShape(schema)) return null;
  const shape = schema.type === "optional" || schema.type === "nullable" ? schema.wrapped : schema;
  if (!shape?.entries) return null;
  if (Array.isArray(value)) return key;
  if (!isRecord(value)) return null;
  for (const [name, entry] of Object.entries(shape.entries)) {
    const found = arrayForObject(entry, value[name], key === "*" ? name : key);
    if (found !== null) return found;
  }
  return null;
}

/** The account id of every `/accounts/<accountId>/…` route. */
export const ACCOUNT_ID = v.pipe(v.string(), v.regex(ID_PATTERN), v.description("1 to 64 characters of A-Z a-z 0-9 _ . -"));
export const ACCOUNT_FIELD: FieldErrors = {
  accountId: ["invalid_account_id", "account ids are 1 to 64 characters of A-Z a-z 0-9 _ . -"],
};

/** `?limit=`: a whole number from 1; larger than the route's maximum is that maximum. */
export const LIMIT = v.optional(v.pipe(v.string(), v.regex(/^0*[1-9][0-9]*$/), v.description("page size (a whole number >= 1; more than the maximum gives the maximum)")));

/** The `info`, security schemes and tags of the document. */
export function documentation(version: string): NonNullable<GenerateSpecOptions["documentation"]> {
  return {
    openapi: "3.1.0",
    info: {
      title: "Edge MQTT broker HTTP API",
      version,
      description:
        "HTTP publish API (`/api/v1`) and admin API (`/admin/v1`) of the MQTT broker on Cloudflare Workers. " +
        'Every error answers `{"error": {"code", "message"}}`; each operation lists its codes by status. ' +
        "A path or method the API does not have answers 404 `not_found`.",
    },
    tags: [
      { name: "publish", description: "Publish over HTTP with a device's or a user's credentials" },
      { name: "devices", description: "Device registry and passwords" },
      { name: "tokens", description: "JWTs for local development" },
      { name: "clients", description: "Live connections and sessions" },
      { name: "retained", description: "Retained messages" },
      { name: "monitoring", description: "Stats, metrics and health" },
      { name: "mqtt", description: "The MQTT over WebSocket endpoint" },
    ],
    components: {
      securitySchemes: {
        adminToken: { type: "http", scheme: "bearer", description: "ADMIN_TOKEN (a wrangler secret)" },
        deviceBasic: { type: "http", scheme: "basic", description: "device id and device password" },
        jwtBearer: { type: "http", scheme: "bearer", bearerFormat: "JWT", description: "a user's JWT (HS256, RS256 or ES256)" },
      },
    },
  };
}
