import { Hono } from "hono";
import type { Env } from "../env";
import { loadConfig } from "../config";
import { errorMessage, log } from "../log";
import { adminApi } from "./admin";
import { configInvalidResponse, jsonError } from "./errors";
import { health } from "./health";
import { mqttUpgrade } from "./mqtt-upgrade";
import { publishApi } from "./publish";
import { benchApi } from "./bench";
import { openAPIRouteHandler } from "hono-openapi";
import * as v from "valibot";
import { doc, documentation } from "./api-doc";
import { version as packageVersion } from "../../package.json";

/** The Worker's HTTP surface. */
export const app = new Hono<{ Bindings: Env }>();

// Vars that do not parse: every request answers 500 `config_invalid` naming them (and
// `config.invalid` is logged once per isolate) instead of running on guessed limits.
app.use(async (c, next) => {
  const loaded = loadConfig(c.env);
  if (!loaded.ok) return configInvalidResponse(loaded.error);
  await next();
});

app.get(
  "/mqtt",
  doc({
    summary: "MQTT over WebSocket",
    description:
      "The WebSocket endpoint of MQTT 3.1, 3.1.1 and 5.0 (subprotocol `mqtt`, or `mqttv3.1`). Credentials travel in CONNECT: " +
      "device id and password, or a JWT as the password; browsers may send the JWT in a cookie and the CSRF token as the password.",
    tags: ["mqtt"],
    access: "public",
    ok: { 101: { description: "Switching protocols: MQTT packets follow as binary frames" } },
    errors: { 400: ["unsupported_subprotocol"], 426: ["upgrade_required"] },
  }),
  mqttUpgrade,
);

const Check = v.object({ ok: v.boolean(), error: v.optional(v.string()) });
const Health = v.object({
  ok: v.boolean(),
  version: v.object({ package: v.string(), id: v.string(), tag: v.string(), timestamp: v.string() }),
  checks: v.object({ d1: Check, durableObject: Check }),
});

app.get(
  "/health",
  doc({
    summary: "Health",
    description: "D1 (with the registry's table) and one Durable Object answer, with the deployed version. A 503 names what failed and carries the same fields.",
    tags: ["monitoring"],
    access: "public",
    ok: { 200: { description: "Healthy", schema: Health } },
    errors: { 503: ["unhealthy"] },
  }),
  health,
);

// Generated on the first request, from every route registered by then (all of them).
app.get("/openapi.json", openAPIRouteHandler(app, { documentation: documentation(packageVersion), defaultValidationErrorResponse: false }));
app.route("/admin/v1", adminApi);
app.route("/__bench", benchApi);

app.route("/api/v1", publishApi);

app.notFound((c) => jsonError(c, 404, "not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`));

app.onError((err, c) => {
  log("error", "http.error", { path: new URL(c.req.url).pathname, error: errorMessage(err) });
  return jsonError(c, 500, "internal", "internal error");
});
