/** Page sizes of the admin API's lists. */

/** `?limit=`: absent gives `fallback`, above `max` gives `max`; null when not a whole number >= 1. */
export function parseLimit(raw: string | undefined, fallback: number, max: number): number | null {
  if (raw === undefined || raw === "") return fallback;
  if (!/^\d+$/.test(raw)) return null;
  const n = Number(raw);
  if (n < 1) return null;
  return Math.min(n, max);
}
