/**
 * Stands in for the schema libraries other than valibot in the Worker bundle (wrangler.toml
 * `[alias]`: zod, effect, sury and their converters). hono-openapi's converters import each
 * library they support on demand; the broker's schemas are valibot's, so those branches never
 * run, yet zod (installed for the test pool) would be bundled whole (about 500 KiB) and the
 * others would stay imports of missing modules.
 */
export {};
