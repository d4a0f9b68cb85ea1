import { Hono } from "hono";
import type { Env } from "../env";
import { errorMessage, log } from "../log";
import { adminApi } from "./admin";
import { jsonError } from "./errors";
import { mqttUpgrade } from "./mqtt-upgrade";
import { httpPublish } from "./publish";
import { benchApi } from "./bench";

/** The Worker's HTTP surface. */
export const app = new Hono<{ Bindings: Env }>();

app.get("/mqtt", mqttUpgrade);

app.get("/health", (c) => c.json({ ok: true }));
app.route("/admin/v1", adminApi);
app.route("/__bench", benchApi);

app.post("/api/v1/messages", httpPublish);

app.notFound((c) => jsonError(c, 404, "not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`));

app.onError((err, c) => {
  log("error", "http.error", { path: new URL(c.req.url).pathname, error: errorMessage(err) });
  return jsonError(c, 500, "internal", "internal error");
});
