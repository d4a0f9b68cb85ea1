/**
 * `clearAll` against a real object's storage in workerd: what an ended connection or a clean
 * session leaves behind. It must remove everything (every key and the alarm) and may skip the
 * `deleteAll` only when the object holds nothing, or the one key it names, and no alarm.
 */
import { describe, it, expect } from "vitest";
import { env, runInDurableObject } from "cloudflare:test";
import type { Env } from "../../src/env";
import { sessionStub } from "../../src/stubs";
import { clearAll } from "../../src/storage";

const E = env as unknown as Env;

let n = 0;
/** Runs `fn` in a fresh object's storage, counting the `deleteAll` calls it makes. */
function inFreshObject<T>(fn: (storage: DurableObjectStorage, deleteAlls: () => number) => Promise<T>): Promise<T> {
  return runInDurableObject(sessionStub(E, "storage-test", `c${n++}`), async (_instance, state) => {
    const storage = state.storage;
    const real = storage.deleteAll.bind(storage);
    let calls = 0;
    storage.deleteAll = (opts?: DurableObjectPutOptions) => {
      calls++;
      return real(opts);
    };
    try {
      return await fn(storage, () => calls);
    } finally {
      storage.deleteAll = real;
    }
  });
}

async function leftOver(storage: DurableObjectStorage): Promise<{ keys: string[]; alarm: number | null }> {
  return { keys: [...(await storage.list()).keys()], alarm: await storage.getAlarm() };
}

describe("clearAll", () => {
  it("an object that stored nothing: no deleteAll, nothing left", async () => {
    const r = await inFreshObject(async (s, deleteAlls) => {
      await clearAll(s);
      return { ...(await leftOver(s)), deleteAlls: deleteAlls() };
    });
    expect(r).toEqual({ keys: [], alarm: null, deleteAlls: 0 });
  });

  it("only the named key: that key deleted alone", async () => {
    const r = await inFreshObject(async (s, deleteAlls) => {
      await s.put("meta", { a: 1 });
      await clearAll(s, "meta");
      return { ...(await leftOver(s)), deleteAlls: deleteAlls() };
    });
    expect(r).toEqual({ keys: [], alarm: null, deleteAlls: 0 });
  });

  it("another key beside the named one: everything goes", async () => {
    const r = await inFreshObject(async (s, deleteAlls) => {
      await s.put({ meta: 1, "q:0": "queued" });
      await clearAll(s, "meta");
      return { ...(await leftOver(s)), deleteAlls: deleteAlls() };
    });
    expect(r).toEqual({ keys: [], alarm: null, deleteAlls: 1 });
  });

  it("a key and no name given: everything goes", async () => {
    const r = await inFreshObject(async (s) => {
      await s.put("rx", new Uint8Array([1, 2]));
      await clearAll(s);
      return leftOver(s);
    });
    expect(r).toEqual({ keys: [], alarm: null });
  });

  it("an alarm alone, or with the named key: the alarm goes too", async () => {
    const r = await inFreshObject(async (s) => {
      await s.setAlarm(Date.now() + 60_000);
      await clearAll(s);
      const alone = await leftOver(s);
      await s.put("meta", 1);
      await s.setAlarm(Date.now() + 60_000);
      await clearAll(s, "meta");
      return { alone, withKey: await leftOver(s) };
    });
    expect(r).toEqual({ alone: { keys: [], alarm: null }, withKey: { keys: [], alarm: null } });
  });

  it("a write not yet flushed is seen: the key written just before goes", async () => {
    const r = await inFreshObject(async (s) => {
      void s.put("meta", 1);
      void s.put("other", 2);
      await clearAll(s, "meta");
      return leftOver(s);
    });
    expect(r).toEqual({ keys: [], alarm: null });
  });
});
