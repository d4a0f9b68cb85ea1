/** Durable Object storage calls within the platform's limits. */

/** Keys per storage call, at most (a Durable Object storage limit). */
const STORAGE_BATCH = 128;

/** Deletes any number of keys, 128 per call. */
export async function deleteKeys(storage: DurableObjectStorage, keys: string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += STORAGE_BATCH) await storage.delete(keys.slice(i, i + STORAGE_BATCH));
}

/** Writes any number of entries, 128 per call. */
export async function putEntries(storage: DurableObjectStorage, entries: Array<[string, unknown]>): Promise<void> {
  for (let i = 0; i < entries.length; i += STORAGE_BATCH) await storage.put(Object.fromEntries(entries.slice(i, i + STORAGE_BATCH)));
}

/**
 * Deletes everything an object stored, its alarm included. An object whose storage holds nothing,
 * or only the key `only`, and no alarm is cleared by that one `delete` (or by nothing): a
 * `deleteAll` costs the local runtime about 1.5 ms of CPU even on an empty database, against two
 * reads (bench/README.md, the close rows of 2026-12-02). Any other key, or an alarm, takes the
 * `deleteAll` (which clears the alarm too since compatibility date 2026-02-24).
 */
export async function clearAll(storage: DurableObjectStorage, only?: string): Promise<void> {
  const [keys, alarm] = await Promise.all([storage.list({ limit: 2 }), storage.getAlarm()]);
  if (alarm === null && [...keys.keys()].every((k) => k === only)) {
    if (keys.size > 0 && only !== undefined) await storage.delete(only);
    return;
  }
  await storage.deleteAll();
}
