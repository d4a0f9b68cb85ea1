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
