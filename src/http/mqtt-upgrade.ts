import type { Context } from "hono";
import type { Env } from "../env";
import { jsonError } from "./errors";
import { timingSafeEqualString } from "../auth/passwords";
import { errorMessage, log } from "../log";

import { ADDR_HEADER, BRIDGE_ADDR_HEADER, BRIDGE_TOKEN_HEADER, SUBPROTOCOL_HEADER, TRANSPORT_HEADER } from "../headers";

/**
 * The client's address: the bridge's forwarded device address when the request carries the
 * shared `BRIDGE_TOKEN` (otherwise any client could claim any address), else the address
 * the edge saw.
 */
function clientAddress(c: Context<{ Bindings: Env }>): { addr: string; transport: "ws" | "tcp" } {
  const edge = c.req.header("cf-connecting-ip") ?? "";
  const token = c.env.BRIDGE_TOKEN;
  const presented = c.req.header(BRIDGE_TOKEN_HEADER);
  if (token && presented && timingSafeEqualString(presented, token)) {
    return { addr: c.req.header(BRIDGE_ADDR_HEADER) ?? edge, transport: "tcp" };
  }
  return { addr: edge, transport: "ws" };
}

/** Subprotocols we speak, in order of preference (MQTT 3.1 clients ask for `mqttv3.1`). */
const SUBPROTOCOLS = ["mqtt", "mqttv3.1"];

/**
 * `GET /mqtt`: hands the WebSocket upgrade to a fresh connection object. The client id
 * is not known until CONNECT arrives on the socket, so the object gets a unique id; it
 * claims the session by client id afterwards (docs/architecture.md, "Where session state lives").
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
  // Internal headers for the connection object: whatever the client sent under these names is replaced.
  headers.delete(SUBPROTOCOL_HEADER);
  if (chosen) headers.set(SUBPROTOCOL_HEADER, chosen);
  const peer = clientAddress(c);
  headers.set(ADDR_HEADER, peer.addr);
  headers.set(TRANSPORT_HEADER, peer.transport);
  try {
    const stub = c.env.CONNECTION.get(c.env.CONNECTION.newUniqueId());
    return await stub.fetch(new Request(c.req.raw.url, { method: "GET", headers }));
  } catch (err) {
    // The connection object could not take the socket (overloaded, out of memory, being
    // reset): a retryable answer, never a 500, and nothing was attached anywhere yet.
    log("warn", "http.upgrade_unavailable", { error: errorMessage(err) });
    c.header("Retry-After", String(UPGRADE_RETRY_SECONDS));
    return jsonError(c, 503, "server_unavailable", "the broker cannot take this connection now; retry shortly");
  }
}

/** What a refused upgrade asks the client to wait. */
const UPGRADE_RETRY_SECONDS = 2;
