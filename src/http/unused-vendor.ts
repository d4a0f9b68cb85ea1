/**
 * Stands in for `zod/v4/core` in the Worker bundle (wrangler.toml `[alias]`). hono-openapi's
 * schema converters import each schema library they support on demand; the broker's schemas
 * are valibot's, so the zod branch never runs, yet zod (installed for the test pool) would be
 * bundled whole: about 500 KiB.
 */
export {};
