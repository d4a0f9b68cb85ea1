/**
 * A live connection's retained Connect event is its delivery target's presence: written in
 * the target's row at the attach, read as the `$SYS/mon/<clientId>` retained message while the
 * connection is the target, with the newer of it and a stored event winning.
 */
import { describe, it, expect } from "vitest";
import { abortAllDurableObjects, env, runInDurableObject } from "cloudflare:test";
import type { Env } from "../../src/env";
import { routerStub } from "../../src/stubs";
import type { Message, RetainedCursor } from "../../src/router/messages";
import type { TopicRouter } from "../../src/router/router";

const E = env as unknown as Env;
const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const text = (m: Message | undefined): string => new TextDecoder().decode(m?.payload);
const event = (clientId: string, action: string): Message => ({ topic: `$SYS/mon/${clientId}`, payload: bytes(`${action}:${clientId}`), qos: 0, retain: true });
const conn = (): string => E.CONNECTION.newUniqueId().toString();

async function retainedOf(router: DurableObjectStub<TopicRouter>, filter: string, pageMessages = 1000): Promise<Message[]> {
  const first = await router.subscribe(`reader-${crypto.randomUUID()}`, [{ filter, qos: 0 }], 10, { pageMessages });
  const out = [...first.retained];
  let more: RetainedCursor | null = first.more;
  while (more) {
    const page = await router.retainedPage(more);
    out.push(...page.messages);
    more = page.more;
  }
  return out;
}

async function storedRows(router: DurableObjectStub<TopicRouter>): Promise<{ retained: number; presences: number }> {
  return runInDurableObject(router, (_instance, state) => {
    const sql = state.storage.sql;
    return {
      retained: sql.exec<{ n: number }>("SELECT count(*) AS n FROM retained").one().n,
      presences: sql.exec<{ n: number }>("SELECT count(*) AS n FROM targets WHERE presence IS NOT NULL").one().n,
    };
  });
}

describe("presence: the Connect event kept with its target", () => {
  it("is written with the target, not as a retained row, and read as the topic's retained message; the Disconnect replaces it; a later Connect wins again", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    const first = conn();
    expect(await router.attach(account, "dev1", first, { cleanStart: true, persistent: false, presence: event("dev1", "Connect1") })).toEqual({ ok: true });
    expect(await storedRows(router)).toEqual({ retained: 0, presences: 1 });
    for (const filter of ["$SYS/mon/dev1", "$SYS/mon/+", "$SYS/#", "$SYS/+/dev1"]) {
      const got = await retainedOf(router, filter);
      expect(got.map((m) => [m.topic, text(m), m.retain])).toEqual([["$SYS/mon/dev1", "Connect1:dev1", true]]);
    }
    // A wildcard at the start never matches a `$` topic [MQTT-4.7.2-1].
    expect(await retainedOf(router, "#")).toEqual([]);
    expect((await router.adminStats()).retained.monitorEvents).toBe(1);

    await router.detach(account, "dev1", first, { persistent: false, announce: [event("dev1", "Disconnect1")] });
    expect(await storedRows(router)).toEqual({ retained: 1, presences: 0 });
    expect((await retainedOf(router, "$SYS/mon/+")).map(text)).toEqual(["Disconnect1:dev1"]);

    // Reconnecting costs no retained write: the presence is newer than the stored Disconnect.
    const second = conn();
    await router.attach(account, "dev1", second, { cleanStart: true, persistent: false, presence: event("dev1", "Connect2") });
    expect(await storedRows(router)).toEqual({ retained: 1, presences: 1 });
    expect((await retainedOf(router, "$SYS/mon/+")).map(text)).toEqual(["Connect2:dev1"]);
    expect((await retainedOf(router, "$SYS/mon/dev1")).map(text)).toEqual(["Connect2:dev1"]);
    // One topic, one retained event in the counts.
    expect((await router.adminStats()).retained.monitorEvents).toBe(1);
    expect((await router.stats()).retained).toBe(1);
    const listed = await router.listRetained({ filter: "$SYS/mon/#", limit: 10 });
    expect(listed.items.map((i) => i.topic)).toEqual(["$SYS/mon/dev1"]);

    // A Disconnect published after it (a late detach of a taken-over connection) is newer: it wins.
    await router.publish(account, [event("dev1", "Disconnect-late")]);
    expect((await retainedOf(router, "$SYS/mon/+")).map(text)).toEqual(["Disconnect-late:dev1"]);

    // Survives a restart of the router object (storage, not memory).
    await router.attach(account, "dev1", conn(), { cleanStart: true, persistent: false, presence: event("dev1", "Connect3") });
    await abortAllDurableObjects();
    const woke = routerStub(E, account);
    expect((await retainedOf(woke, "$SYS/mon/dev1")).map(text)).toEqual(["Connect3:dev1"]);
  });

  it("is delivered live with the retain flag as before, and a persistent session's offline target has none", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    const p = conn();
    await router.attach(account, "p", p, { cleanStart: false, persistent: true, presence: event("p", "Connect") });
    expect(await storedRows(router)).toEqual({ retained: 0, presences: 1 });
    await router.detach(account, "p", p, { persistent: true, announce: [] });
    // The offline target stays (persistent), its presence goes.
    expect(await storedRows(router)).toEqual({ retained: 0, presences: 0 });
    expect(await retainedOf(router, "$SYS/mon/#")).toEqual([]);
    expect((await router.stats()).sessions).toBe(1);
    // A server-assigned client id's event is not retained: published, never kept.
    await router.attach(account, "auto-x", conn(), { cleanStart: true, persistent: false, presence: { ...event("auto-x", "Connect"), retain: false } });
    expect(await storedRows(router)).toEqual({ retained: 0, presences: 0 });
    // A presence whose topic is not the client's own monitor topic is published as any retained message.
    await router.attach(account, "q", conn(), { cleanStart: true, persistent: false, presence: event("someone-else", "Connect") });
    expect(await storedRows(router)).toEqual({ retained: 1, presences: 0 });
  });

  it("the admin's delete of the retained event removes the presence too", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    await router.publish(account, [event("d", "Disconnect-old")]);
    await router.attach(account, "d", conn(), { cleanStart: true, persistent: false, presence: event("d", "Connect") });
    expect(await router.deleteRetained("$SYS/mon/d")).toBe(true);
    expect(await storedRows(router)).toEqual({ retained: 0, presences: 0 });
    expect(await retainedOf(router, "$SYS/mon/#")).toEqual([]);
    expect(await router.deleteRetained("$SYS/mon/d")).toBe(false);
  });

  it("merges stored events and presences in topic order across chunks and pages, each topic once, the newer of the two", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const router = routerStub(E, account);
    // Stored events on every third id, presences on the others, both on the first ten: more than one read chunk (200) of
    // each, the presences' chunk ending first.
    await runInDurableObject(router, (_instance, state) => {
      const sql = state.storage.sql;
      for (let i = 0; i < 600; i++) {
        const id = `c${String(i).padStart(4, "0")}`;
        if (i % 3 === 0 || i < 10) {
          sql.exec("INSERT INTO retained (topic, payload, qos, props, expires_at, bytes, monitor, seq) VALUES (?, ?, 0, NULL, NULL, 10, 1, ?)", `$SYS/mon/${id}`, bytes(`stored:${id}`), 1000 + i);
        }
        if (i % 3 !== 0 || i < 10) {
          // The first ten have both: on every third id the presence is older than the stored event.
          const seq = i < 10 && i % 3 === 0 ? 1 : 5000 + i;
          sql.exec("INSERT INTO targets (client_id, conn, persistent, presence, presence_seq) VALUES (?, 'x', 0, ?, ?)", id, bytes(`live:${id}`), seq);
        }
      }
      sql.exec("INSERT INTO retained (topic, payload, qos, props, expires_at, bytes, monitor, seq) VALUES ('$SYS/other', ?, 0, NULL, NULL, 10, 0, 1)", bytes("other"));
    });
    await abortAllDurableObjects();
    const woke = routerStub(E, account);
    const expected = Array.from({ length: 600 }, (_, i) => {
      const id = `c${String(i).padStart(4, "0")}`;
      const live = i % 3 !== 0;
      return `${live ? "live" : "stored"}:${id}`;
    });
    for (const pageMessages of [7, 1000]) {
      const got = await retainedOf(woke, "$SYS/mon/+", pageMessages);
      expect(got.map(text)).toEqual(expected);
    }
    const all = await retainedOf(woke, "$SYS/#");
    expect(all.map(text)).toEqual([...expected, "other"]);
    // One topic: the newer of the two.
    expect((await retainedOf(woke, "$SYS/mon/c0003")).map(text)).toEqual(["stored:c0003"]);
    expect((await retainedOf(woke, "$SYS/mon/c0004")).map(text)).toEqual(["live:c0004"]);
    expect((await retainedOf(woke, "$SYS/mon/c0599/+")).map(text)).toEqual([]);
    expect((await woke.listRetained({ filter: "$SYS/mon/#", limit: 1000 })).items).toHaveLength(600);
  });
});
