// `edge-mqtt-broker/local`: the broker inside the calling Node process, for application test
// suites. The Worker is bundled the way `wrangler deploy` bundles it (once per content of the
// sources, cached under node_modules/.cache/edge-mqtt-broker) and run with Miniflare's API:
// Durable Objects, D1 with migrations/ applied, the console's static assets, wrangler.toml's vars
// and generated secrets, on 127.0.0.1. Types: local/index.d.mts.
import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { Log, LogLevel, Miniflare } from "miniflare";
import { PREPARED_FORMAT, readPrepared } from "./prepared.mjs";

/** @typedef {import("./index.d.mts").LocalBrokerOptions} LocalBrokerOptions */
/** @typedef {import("./index.d.mts").LocalBroker} LocalBroker */
/** @typedef {import("./index.d.mts").LocalDeviceCredentials} LocalDeviceCredentials */
/** @typedef {import("./index.d.mts").LocalMintOptions} LocalMintOptions */
/** @typedef {import("./prepared.mjs").PreparedWorker} PreparedWorker */
/** @typedef {import("./prepared.mjs").PreparedMigrations} PreparedMigrations */
/** @typedef {{ scriptPath: string, worker: PreparedWorker }} CacheEntry */

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, "..");
const CONFIG_PATH = join(ROOT, "wrangler.toml");
const DEFAULT_CACHE_DIR = join(ROOT, "node_modules/.cache/edge-mqtt-broker");
/** Inputs of the bundle and of the prepared description: a change to any of them means a new cache entry. */
const HASHED_PATHS = ["src", "migrations", "local", "wrangler.toml", "package.json", "package-lock.json"];
/** Files the `[build] command` (scripts/vendor-assets.mjs) writes; if one is gone, the entry is rebuilt. */
const BUILD_OUTPUTS = ["public/vendor/mqtt.min.js"];
/** Cache entries kept besides the current one (older ones are removed). */
const CACHE_KEEP = 3;
/** Kept in the persist folder so that a restart uses the same secrets (device passwords are peppered). */
const SECRETS_FILE = "local-broker-secrets.json";
const SECRET_KEYS = ["ADMIN_TOKEN", "JWT_SECRET", "DEVICE_PEPPER"];

const require = createRequire(import.meta.url);

/**
 * Starts a broker; see local/index.d.mts.
 * @param {LocalBrokerOptions} [options]
 * @returns {Promise<LocalBroker>}
 */
export async function startLocalBroker(options = {}) {
  const entry = await cachedWorker(resolve(options.cacheDir ?? DEFAULT_CACHE_DIR));
  const { worker } = entry;
  const persistTo = options.persistTo === undefined ? undefined : resolve(options.persistTo);
  if (persistTo !== undefined) mkdirSync(persistTo, { recursive: true });
  const bindings = { ...worker.vars, ...secrets(persistTo), ...(options.vars ?? {}) };
  const adminToken = bindings.ADMIN_TOKEN ?? "";
  const sink = options.log ?? errorsToStderr;

  const mf = new Miniflare({
    host: "127.0.0.1",
    port: options.port ?? 0,
    log: new SinkLog(sink),
    logRequests: false,
    // Structured workerd logs: one call per console.* line of the Worker (nothing goes to this
    // process's stdout unless the sink writes it there).
    handleStructuredLogs: ({ level, message }) => {
      sink(message, level);
    },
    telemetry: { enabled: false },
    // The placeholder `Request.cf` (no fetch from workers.cloudflare.com, nothing cached on disk).
    cf: false,
    // `wrangler dev --persist-to <dir>` keeps its Miniflare state under <dir>/v3.
    ...(persistTo === undefined ? {} : { defaultPersistRoot: join(persistTo, "v3") }),
    workers: [
      {
        name: worker.name,
        modules: true,
        scriptPath: entry.scriptPath,
        // Module names are relative to this folder (the default, the cwd, may not contain the cache).
        modulesRoot: dirname(entry.scriptPath),
        compatibilityDate: worker.compatibilityDate,
        compatibilityFlags: worker.compatibilityFlags,
        bindings,
        durableObjects: worker.durableObjects,
        d1Databases: worker.d1Databases,
        ...(worker.assets === null ? {} : { assets: worker.assets }),
        ...(worker.versionMetadata === null ? {} : { versionMetadata: worker.versionMetadata }),
      },
    ],
  });

  let port;
  try {
    port = Number((await mf.ready).port);
    for (const m of worker.migrations) await applyMigrations(await mf.getD1Database(m.binding), m);
  } catch (err) {
    await mf.dispose().catch(() => undefined);
    throw err;
  }

  const httpUrl = `http://127.0.0.1:${port}`;
  /**
   * @param {string} path below /admin/v1
   * @param {unknown} body
   * @returns {Promise<{ status: number, json: unknown }>}
   */
  const adminPost = async (path, body) => {
    const res = await fetch(`${httpUrl}/admin/v1${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, json: text ? /** @type {unknown} */ (JSON.parse(text)) : null };
  };

  /** @type {Promise<void> | undefined} */
  let stopping;
  return {
    url: `ws://127.0.0.1:${port}/mqtt`,
    httpUrl,
    port,
    adminToken,
    async mintToken(account, subject, opts = {}) {
      const body = {
        subject,
        ...(opts.ttlSeconds === undefined ? {} : { ttlSeconds: opts.ttlSeconds }),
        ...(opts.acl === undefined ? {} : { acl: opts.acl }),
      };
      const { status, json } = await adminPost(`/accounts/${encodeURIComponent(account)}/tokens`, body);
      const token = isRecord(json) ? json.token : undefined;
      if (status !== 201 || typeof token !== "string") throw new Error(`minting a token failed: ${status} ${JSON.stringify(json)}`);
      return token;
    },
    async provisionDevice(account, deviceId) {
      const { status, json } = await adminPost(
        `/accounts/${encodeURIComponent(account)}/devices`,
        deviceId === undefined ? undefined : { deviceId },
      );
      if (status !== 201 || !isCredentials(json)) throw new Error(`provisioning a device failed: ${status} ${JSON.stringify(json)}`);
      return { accountId: json.accountId, deviceId: json.deviceId, password: json.password };
    },
    stop() {
      stopping ??= mf.dispose();
      return stopping;
    },
  };
}

/**
 * The default log sink: the Worker's error lines and Miniflare's warnings and errors (a runtime
 * that fails to start says why there) go to stderr; the rest is dropped.
 * @param {string} line
 * @param {string} level
 */
function errorsToStderr(line, level) {
  if (level === "error" || level === "miniflare") process.stderr.write(`${line}\n`);
}

/** Miniflare's own messages (warnings and errors) to the caller's sink. */
class SinkLog extends Log {
  /** @param {(line: string, level: string) => void} sink */
  constructor(sink) {
    super(LogLevel.WARN);
    this.sink = sink;
  }

  /**
   * @override
   * @param {string} message
   */
  log(message) {
    this.sink(message, "miniflare");
  }
}

/**
 * ADMIN_TOKEN, JWT_SECRET (32 random bytes) and DEVICE_PEPPER: new ones per start, or the ones
 * kept in the persist folder (created there on its first start).
 * @param {string | undefined} persistTo
 * @returns {Record<string, string>}
 */
function secrets(persistTo) {
  const file = persistTo === undefined ? undefined : join(persistTo, SECRETS_FILE);
  /** @type {Record<string, string>} */
  const values = {};
  if (file !== undefined && existsSync(file)) {
    const saved = /** @type {unknown} */ (JSON.parse(readFileSync(file, "utf8")));
    if (isRecord(saved)) for (const [k, v] of Object.entries(saved)) if (typeof v === "string" && v !== "") values[k] = v;
  }
  let added = false;
  for (const key of SECRET_KEYS) {
    if (values[key] !== undefined) continue;
    values[key] = randomBytes(32).toString("base64url");
    added = true;
  }
  if (file !== undefined && added) writeFileSync(file, JSON.stringify(values, null, 2) + "\n", { mode: 0o600 });
  return values;
}

/**
 * Applies the migrations not yet recorded in the bookkeeping table, each in one batch with its
 * record, like `wrangler d1 migrations apply --local` (same table, same names), so a persisted
 * folder is migrated once whichever of the two ran first.
 * @param {D1Database} db
 * @param {PreparedMigrations} m
 */
async function applyMigrations(db, m) {
  await db
    .prepare(
      `CREATE TABLE IF NOT EXISTS ${m.table}(
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		name       TEXT UNIQUE,
		applied_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP NOT NULL
);`,
    )
    .run();
  const { results } = await db.prepare(`SELECT name FROM ${m.table}`).all();
  const applied = new Set(results.map((r) => r.name));
  for (const file of m.files) {
    if (applied.has(file.name)) continue;
    const statements = file.statements.map((s) => db.prepare(s));
    await db.batch([...statements, db.prepare(`INSERT INTO ${m.table} (name) VALUES (?)`).bind(file.name)]);
  }
}

/** @type {Map<string, Promise<CacheEntry>>} */
const building = new Map();

/**
 * The cache entry for the current sources: built once (per process and on disk), then reused.
 * @param {string} cacheDir
 * @returns {Promise<CacheEntry>}
 */
function cachedWorker(cacheDir) {
  const dir = join(cacheDir, sourceHash());
  let entry = building.get(dir);
  if (entry === undefined) {
    entry = loadOrBuild(cacheDir, dir);
    building.set(dir, entry);
    entry.catch(() => building.delete(dir));
  }
  return entry;
}

/**
 * @param {string} cacheDir
 * @param {string} dir
 * @returns {Promise<CacheEntry>}
 */
async function loadOrBuild(cacheDir, dir) {
  const cached = readEntry(dir);
  if (cached !== null && BUILD_OUTPUTS.every((f) => existsSync(join(ROOT, f)))) return cached;

  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  const tmpPrepared = `${tmp}.json`;
  try {
    // Both steps read only the sources; they run side by side (wrangler creates the folder).
    await Promise.all([
      runNode([wranglerBin(), "deploy", "--dry-run", "--outdir", tmp, "--config", CONFIG_PATH]),
      runNode([join(HERE, "prepare.mjs"), CONFIG_PATH, tmpPrepared]),
    ]);
    renameSync(tmpPrepared, join(tmp, "worker.json"));
    // An entry that is there and complete (only a build output was missing) stays: another
    // process may be starting from it.
    if (readEntry(dir) === null) {
      rmSync(dir, { recursive: true, force: true });
      try {
        renameSync(tmp, dir);
      } catch (err) {
        // Another process finished the same entry first: use it.
        if (readEntry(dir) === null) throw err;
      }
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(tmpPrepared, { force: true });
  }
  pruneCache(cacheDir, dir);
  const built = readEntry(dir);
  if (built === null) throw new Error(`local broker: the bundle in ${dir} is incomplete`);
  return built;
}

/**
 * @param {string} dir
 * @returns {CacheEntry | null}
 */
function readEntry(dir) {
  const scriptPath = join(dir, "index.js");
  if (!existsSync(scriptPath)) return null;
  const worker = readPrepared(join(dir, "worker.json"));
  return worker === null ? null : { scriptPath, worker };
}

/**
 * Removes all but the newest CACHE_KEEP entries besides `current`.
 * @param {string} cacheDir
 * @param {string} current
 */
function pruneCache(cacheDir, current) {
  try {
    const others = readdirSync(cacheDir)
      .map((name) => join(cacheDir, name))
      .filter((p) => p !== current && !p.includes(".tmp-"))
      .map((p) => ({ p, mtime: statSync(p).mtimeMs }))
      .sort((a, b) => b.mtime - a.mtime);
    for (const { p } of others.slice(CACHE_KEEP)) rmSync(p, { recursive: true, force: true });
  } catch {
    // best effort
  }
}

/** A hash of everything the bundle and the prepared description are made from. */
function sourceHash() {
  const h = createHash("sha256");
  h.update(`format ${PREPARED_FORMAT}\0root ${ROOT}\0wrangler ${wranglerVersion()}\0`);
  for (const top of HASHED_PATHS) {
    const abs = join(ROOT, top);
    if (!existsSync(abs)) continue;
    const files = statSync(abs).isDirectory()
      ? readdirSync(abs, { recursive: true, encoding: "utf8" })
          .map((rel) => join(abs, rel))
          .filter((p) => statSync(p).isFile())
          .sort()
      : [abs];
    for (const file of files) {
      h.update(`${relative(ROOT, file)}\0`);
      h.update(readFileSync(file));
      h.update("\0");
    }
  }
  return h.digest("hex").slice(0, 24);
}

function wranglerPackage() {
  const file = require.resolve("wrangler/package.json");
  const pkg = /** @type {{ version?: unknown, bin?: unknown }} */ (JSON.parse(readFileSync(file, "utf8")));
  return { dir: dirname(file), pkg };
}

function wranglerVersion() {
  const { pkg } = wranglerPackage();
  return typeof pkg.version === "string" ? pkg.version : "unknown";
}

function wranglerBin() {
  const { dir, pkg } = wranglerPackage();
  const bin = isRecord(pkg.bin) && typeof pkg.bin.wrangler === "string" ? pkg.bin.wrangler : "bin/wrangler.js";
  return join(dir, bin);
}

/**
 * Runs `node <args>` in the package root, quietly; rejects with its output on failure.
 * @param {string[]} args
 * @returns {Promise<void>}
 */
function runNode(args) {
  return new Promise((ok, fail) => {
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: {
        ...process.env,
        CI: "true",
        NO_COLOR: "1",
        CLOUDFLARE_CF_FETCH_ENABLED: "false",
        WRANGLER_SEND_METRICS: "false",
        XDG_CONFIG_HOME: join(ROOT, ".wrangler/config"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let out = "";
    child.stdout.on("data", (d) => (out += String(d)));
    child.stderr.on("data", (d) => (out += String(d)));
    child.on("error", fail);
    child.on("close", (code, signal) => {
      if (code === 0) ok();
      else fail(new Error(`local broker: \`node ${args.join(" ")}\` failed (${code ?? signal}):\n${out}`));
    });
  });
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, unknown>}
 */
function isRecord(v) {
  return typeof v === "object" && v !== null;
}

/**
 * @param {unknown} v
 * @returns {v is LocalDeviceCredentials}
 */
function isCredentials(v) {
  return isRecord(v) && typeof v.accountId === "string" && typeof v.deviceId === "string" && typeof v.password === "string";
}
