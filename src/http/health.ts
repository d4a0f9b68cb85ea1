import type { Context } from "hono";
import type { Env } from "../env";
import { errorMessage, log } from "../log";
import { healthStub } from "../stubs";
import { version as packageVersion } from "../../package.json";
import { errorBody } from "./errors";

/** A dependency that has not answered by then counts as failed. */
const CHECK_TIMEOUT_MS = 5_000;

/** One dependency check: resolves when the dependency answered. */
export type Probe = () => Promise<unknown>;
export type CheckResult = { ok: true } | { ok: false; error: string };
export interface HealthVersion {
  package: string;
  id: string;
  tag: string;
  timestamp: string;
}

async function runProbe(probe: Probe, timeoutMs: number): Promise<CheckResult> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    await Promise.race([probe(), timeout]);
    return { ok: true };
  } catch (err) {
    return { ok: false, error: errorMessage(err) };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs the probes side by side: 200 when all answered, else 503 with `error.message` naming each failed one. */
export async function healthAnswer(
  probes: Record<string, Probe>,
  version: HealthVersion,
  timeoutMs = CHECK_TIMEOUT_MS,
): Promise<{ status: 200 | 503; body: Record<string, unknown> }> {
  const results = await Promise.all(
    Object.entries(probes).map(async ([name, probe]): Promise<[string, CheckResult]> => [name, await runProbe(probe, timeoutMs)]),
  );
  const checks = Object.fromEntries(results);
  const failed = results.flatMap(([name, r]) => (r.ok ? [] : [`${name}: ${r.error}`]));
  if (failed.length === 0) return { status: 200, body: { ok: true, version, checks } };
  return { status: 503, body: { ok: false, ...errorBody("unhealthy", failed.join("; ")), version, checks } };
}

/**
 * `GET /health`: 200 when D1 answers (with the registry's table, so the migrations ran) and
 * a Durable Object starts and answers; 503 naming what failed otherwise. Both carry the
 * version: the package's, and the Worker version's id, tag and upload time
 * (`version_metadata`; under wrangler dev a random id and the start time).
 */
export async function health(c: Context<{ Bindings: Env }>): Promise<Response> {
  const meta = c.env.CF_VERSION_METADATA;
  const { status, body } = await healthAnswer(
    {
      d1: () => c.env.DB.prepare("SELECT 1 FROM devices LIMIT 1").all(),
      durableObject: () => healthStub(c.env).ping(),
    },
    { package: packageVersion, id: meta.id, tag: meta.tag, timestamp: meta.timestamp },
  );
  if (status !== 200) log("error", "health.failed", { error: body.error });
  return c.json(body, status);
}
