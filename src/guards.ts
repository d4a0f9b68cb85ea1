/** Guards for data that enters from outside (storage reads, RPC arguments, JSON bodies): `unknown` in, a type out. */

/** A non-null object that is not an array: its fields can be read as `unknown`. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === "string");
}
