import { Hono } from "hono";
import type { Env } from "../env";
import { countersEnabled, resetCounters, snapshot } from "../metrics";
import { jsonError } from "./errors";

/**
 * `/__bench`: the billable-unit counters of src/metrics.ts, for `npm run bench`. Answers 404
 * unless the var `BENCH_COUNTERS` is "1", so a normal deployment exposes nothing here.
 */
export const benchApi = new Hono<{ Bindings: Env }>();

benchApi.use(async (c, next) => {
  if (!countersEnabled(c.env)) return jsonError(c, 404, "not_found", `no route for ${c.req.method} ${new URL(c.req.url).pathname}`);
  await next();
});

benchApi.get("/counters", (c) => c.json(snapshot()));

benchApi.post("/counters/reset", (c) => {
  resetCounters();
  return c.json(snapshot());
});
