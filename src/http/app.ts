import { Hono } from "hono";
import type { Env } from "../env";
import { loadConfig } from "../config";
import { errorMessage, log } from "../log";
import { adminApi } from "./admin";
import { configInvalidResponse, jsonError } from "./errors";
import { health } from "./health";
import { mqttUpgrade } from "./mqtt-upgrade";
import { httpPublish } from "./publish";
import { benchApi } from "./bench";

/** The Worker's HTTP surface. */
export const app = new Hono<{ Bindings: Env }>();

// Vars that do not parse: every request answers 500 `config_invalid` naming them (and
// `config.invalid` is logged once per isolate) instead of running on guessed limits.
app.use(async (c, next) => {
  const loaded = loadConfig(c.env);
  if (!loaded.ok) return configInvalidResponse(loaded.error);
  await next();
});

app.get("/mqtt", mqttUpgrade);

app.get("/health", health);
app.route("/admin/v1", adminApi);
app.route("/__bench", benchApi);

app.post("/api/v1/messages", httpPublish);

app.notFound((c) => jsonError(c, 404, "not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`));

app.onError((err, c) => {
  log("error", "http.error", { path: new URL(c.req.url).pathname, error: errorMessage(err) });
  return jsonError(c, 500, "internal", "internal error");
});
