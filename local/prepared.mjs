// The cache entry's description of the Worker (written by local/prepare.mjs, read by
// local/index.mjs): what Miniflare needs besides the bundle, derived from wrangler.toml.
import { readFileSync } from "node:fs";

/** Bumped when the shape below changes, so old cache entries are rebuilt. */
export const PREPARED_FORMAT = 2;

/**
 * @typedef {object} PreparedMigrations
 * @property {string} binding the D1 binding
 * @property {string} table wrangler's bookkeeping table (`d1_migrations` unless `migrations_table` says otherwise)
 * @property {{ name: string, statements: string[] }[]} files in the order they are applied
 */

/**
 * @typedef {object} PreparedWorker
 * @property {number} format
 * @property {string} name the Worker's name (Miniflare keys persisted Durable Objects by it, as wrangler dev does)
 * @property {string} compatibilityDate
 * @property {string[]} compatibilityFlags
 * @property {Record<string, string>} vars wrangler.toml's [vars]
 * @property {Record<string, { className: string, useSQLite: boolean }>} durableObjects
 * @property {Record<string, string>} d1Databases binding -> database id
 * @property {NonNullable<import("miniflare").WorkerOptions["assets"]> | null} assets
 * @property {PreparedMigrations[]} migrations
 * @property {string | null} versionMetadata the `version_metadata` binding's name (Miniflare fills it with a random id)
 */

/**
 * Reads a prepared description; null when the file is missing or from another format.
 * @param {string} file
 * @returns {PreparedWorker | null}
 */
export function readPrepared(file) {
  let value;
  try {
    value = /** @type {unknown} */ (JSON.parse(readFileSync(file, "utf8")));
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null || !("format" in value) || value.format !== PREPARED_FORMAT) return null;
  return /** @type {PreparedWorker} */ (value);
}
