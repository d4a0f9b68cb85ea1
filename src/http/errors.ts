import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { ConfigError } from "../config";

/** The one JSON error shape of the HTTP API: `{"error": {"code", "message"}}`. */
export function errorBody(code: string, message: string): { error: { code: string; message: string } } {
  return { error: { code, message } };
}

export function jsonError(c: Context, status: ContentfulStatusCode, code: string, message: string): Response {
  return c.json(errorBody(code, message), status);
}

/** The answer to every request while the vars do not parse: 500 `config_invalid`, naming each bad var. */
export function configInvalidResponse(error: ConfigError): Response {
  return Response.json(errorBody("config_invalid", error.message), { status: 500 });
}
