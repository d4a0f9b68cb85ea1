#!/usr/bin/env node
// Run by local/index.mjs as a child process when its cache has no entry for the current sources:
//   node local/prepare.mjs <wrangler.toml> <out.json>
// Reads wrangler.toml with wrangler's own reader and writes what Miniflare needs to run the
// bundled Worker as `wrangler dev` would (bindings, Durable Objects with their SQLite flag, D1,
// the assets router, the vars, the D1 migrations split into statements) to <out.json>.
// A separate process keeps wrangler (~2.5 s to import) out of the caller's process.
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { unstable_getMiniflareWorkerOptions, unstable_readConfig, unstable_splitSqlQuery } from "wrangler";
import { PREPARED_FORMAT } from "./prepared.mjs";

/** @typedef {import("./prepared.mjs").PreparedWorker} PreparedWorker */
/** @typedef {import("./prepared.mjs").PreparedMigrations} PreparedMigrations */

const [configArg, outArg] = process.argv.slice(2);
if (!configArg || !outArg) {
  console.error("usage: node local/prepare.mjs <wrangler.toml> <out.json>");
  process.exit(2);
}
const configPath = resolve(configArg);
const configDir = dirname(configPath);

// wrangler's Config type does not resolve (its .d.ts imports are broken): read it as unknown.
const config = configFields(/** @type {unknown} */ (unstable_readConfig({ config: configPath })));
const { workerOptions } = unstable_getMiniflareWorkerOptions(configPath);

/**
 * The parts of wrangler's parsed config this file uses.
 * @param {unknown} raw
 * @returns {{ name: string | undefined, vars: Record<string, unknown>, d1: { binding: string, table: string | undefined, dir: string | undefined }[] }}
 */
function configFields(raw) {
  const c = isRecord(raw) ? raw : {};
  const d1 = Array.isArray(c.d1_databases) ? c.d1_databases.filter(isRecord) : [];
  return {
    name: typeof c.name === "string" ? c.name : undefined,
    vars: isRecord(c.vars) ? c.vars : {},
    d1: d1.flatMap((d) =>
      typeof d.binding === "string"
        ? [
            {
              binding: d.binding,
              table: typeof d.migrations_table === "string" ? d.migrations_table : undefined,
              dir: typeof d.migrations_dir === "string" ? d.migrations_dir : undefined,
            },
          ]
        : [],
    ),
  };
}

/**
 * @param {unknown} v
 * @returns {v is Record<string, unknown>}
 */
function isRecord(v) {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** @type {Record<string, string>} */
const vars = {};
for (const [k, v] of Object.entries(config.vars)) vars[k] = typeof v === "string" ? v : JSON.stringify(v);

/** @type {PreparedWorker["durableObjects"]} */
const durableObjects = {};
for (const [binding, d] of Object.entries(workerOptions.durableObjects ?? {})) {
  if (typeof d === "string") durableObjects[binding] = { className: d, useSQLite: false };
  else durableObjects[binding] = { className: d.className, useSQLite: d.useSQLite === true };
}

/** @type {Record<string, string>} */
const d1Databases = {};
for (const [binding, d] of Object.entries(workerOptions.d1Databases ?? {})) {
  d1Databases[binding] = typeof d === "string" ? d : d.id;
}

/**
 * The migrations of one D1 database, in the order `wrangler d1 migrations apply` uses
 * (file names sorted by their leading number).
 * @param {string} dir
 * @returns {PreparedMigrations["files"]}
 */
function migrationFiles(dir) {
  let names;
  try {
    names = readdirSync(dir).filter((n) => n.endsWith(".sql"));
  } catch {
    return [];
  }
  names.sort((a, b) => parseInt(a.split("_")[0] ?? "", 10) - parseInt(b.split("_")[0] ?? "", 10) || (a < b ? -1 : a > b ? 1 : 0));
  return names.map((name) => ({ name, statements: unstable_splitSqlQuery(readFileSync(join(dir, name), "utf8")) }));
}

/** @type {PreparedMigrations[]} */
const migrations = config.d1.map((d) => ({
  binding: d.binding,
  table: d.table ?? "d1_migrations",
  files: migrationFiles(resolve(configDir, d.dir ?? "migrations")),
}));

/** wrangler.toml's compatibility_date (wrangler dev and deploy refuse to run without one). */
function compatibilityDate() {
  const date = workerOptions.compatibilityDate;
  if (!date) throw new Error(`${configPath}: compatibility_date is missing`);
  return date;
}

const assets = workerOptions.assets;
/** @type {PreparedWorker} */
const prepared = {
  format: PREPARED_FORMAT,
  name: config.name ?? "worker",
  compatibilityDate: compatibilityDate(),
  compatibilityFlags: workerOptions.compatibilityFlags ?? [],
  vars,
  durableObjects,
  d1Databases,
  assets:
    assets === undefined
      ? null
      : { directory: assets.directory, routerConfig: assets.routerConfig ?? {}, assetConfig: assets.assetConfig ?? {} },
  migrations,
  versionMetadata: workerOptions.versionMetadata ?? null,
};
writeFileSync(outArg, JSON.stringify(prepared, null, 2) + "\n");
