import type { Context } from "hono";
import type { Env } from "../env";
import { jsonError } from "./errors";

/** Subprotocols we speak, in order of preference (MQTT 3.1 clients ask for `mqttv3.1`). */
const SUBPROTOCOLS = ["mqtt", "mqttv3.1"];

/**
 * `GET /mqtt`: hands the WebSocket upgrade to a fresh connection object. The client id
 * is not known until CONNECT arrives on the socket, so the object gets a unique id; it
 * claims the session by client id afterwards (see README, "Where session state lives").
 */
export async function mqttUpgrade(c: Context<{ Bindings: Env }>): Promise<Response> {
  if (c.req.header("upgrade")?.toLowerCase() !== "websocket") {
    return jsonError(c, 426, "upgrade_required", "GET /mqtt expects a WebSocket upgrade (subprotocol mqtt)");
  }
  const offered = (c.req.header("sec-websocket-protocol") ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "");
  const chosen = SUBPROTOCOLS.find((p) => offered.includes(p));
  if (offered.length > 0 && chosen === undefined) {
    return jsonError(c, 400, "unsupported_subprotocol", `supported subprotocols: ${SUBPROTOCOLS.join(", ")}`);
  }
  const headers = new Headers(c.req.raw.headers);
  headers.delete("x-mqtt-subprotocol");
  if (chosen) headers.set("x-mqtt-subprotocol", chosen);
  const stub = c.env.CONNECTION.get(c.env.CONNECTION.newUniqueId());
  return stub.fetch(new Request(c.req.raw.url, { method: "GET", headers }));
}
