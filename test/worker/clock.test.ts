/**
 * The shared keep-alive clock (KEEPALIVE_CLOCK = "shared") against real connection objects: at a
 * watched deadline it asks the connection; an ended connection is forgotten at no cost, and a
 * connection whose socket vanished (a runtime restart) gets its alarm at once, which ends its
 * session. The silent and the talking client over MQTT are in test/e2e/keepalive.test.ts.
 */
import { describe, it, expect } from "vitest";
import { abortAllDurableObjects, env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import type { Env } from "../../src/env";
import { clockStub, connectionStub, routerStub, sessionStub } from "../../src/stubs";
import { META_KEY } from "../../src/session/keys";
import { eventually } from "./mqtt";
import { connected, connectionIds, encode, open } from "./objects";
import type { ConnMeta } from "../../src/session/state";

const E = env as unknown as Env;

/** Polls `check` until it holds (10 s at most). */
const until = (what: string, check: () => Promise<boolean>): Promise<boolean> => eventually(check, (ok) => ok, what, 10_000);

const meta = (account: string, clientId: string): ConnMeta => ({
  account, clientId, cleanStart: true, expirySeconds: 0, willDelaySeconds: 0, will: null, protocolVersion: 4,
  identity: { kind: "anonymous", account, id: "anonymous", acl: { pub: ["#"], sub: ["#"] }, expiresAt: null },
  addr: "127.0.0.1", transport: "ws", connectedAt: Date.now(),
});

const watchedRows = (clock: ReturnType<typeof clockStub>): Promise<string[]> =>
  runInDurableObject(clock, (_instance, state) => state.storage.sql.exec<{ conn: string }>("SELECT conn FROM watched").toArray().map((r) => r.conn));

describe("KeepAliveClock in workerd", () => {
  it("asks a connection at its deadline: an ended one is forgotten without an alarm; one whose socket vanished gets its alarm now", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const clock = clockStub(E, account);
    const ended = E.CONNECTION.newUniqueId().toString();
    const vanished = E.CONNECTION.newUniqueId().toString();
    // Connected when the runtime restarted: its meta is stored, its socket is gone.
    await runInDurableObject(connectionStub(E, vanished), async (_instance, state) => {
      await state.storage.put(META_KEY, meta(account, "vanished"));
    });
    // Deadlines a little ahead, so both are still watched when counted (with a deadline of now the
    // first check can come before the count).
    const now = Date.now();
    expect(await clock.watch(ended, now + 2_000)).toBe(true);
    expect(await clock.watch(vanished, now + 2_500)).toBe(true);
    expect(await clock.size()).toBe(2);
    await until("both checks", async () => (await clock.size()) === 0);
    const alarmOf = (id: string): Promise<number | null> => runInDurableObject(connectionStub(E, id), (_instance, state) => state.storage.getAlarm());
    const metaOf = (id: string): Promise<unknown> => runInDurableObject(connectionStub(E, id), (_instance, state) => state.storage.get(META_KEY));
    expect(await alarmOf(ended)).toBeNull();
    expect(await metaOf(ended)).toBeUndefined();
    // The vanished one's alarm ran at once and ended its session: its storage is empty.
    await until("the vanished connection's teardown", async () => (await metaOf(vanished)) === undefined && (await alarmOf(vanished)) === null);
    // Both rows went with their checks.
    expect(await watchedRows(clock)).toEqual([]);
    // A bystander account's clock is its own object, untouched.
    expect(await clockStub(E, `${account}-other`).size()).toBe(0);
  });

  it("after a restart took its memory, its sweep alarm checks every connection it stored at once", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const clock = clockStub(E, account);
    const vanished = E.CONNECTION.newUniqueId().toString();
    await runInDurableObject(connectionStub(E, vanished), async (_instance, state) => {
      await state.storage.put(META_KEY, meta(account, "vanished"));
    });
    // Due in ten minutes: only the sweep can find it sooner.
    expect(await clock.watch(vanished, Date.now() + 600_000)).toBe(true);
    expect(await watchedRows(clock)).toEqual([vanished]);
    await abortAllDurableObjects();
    const woke = clockStub(E, account);
    expect(await woke.size()).toBe(0);
    expect(await runDurableObjectAlarm(woke)).toBe(true);
    const metaOf = (): Promise<unknown> => runInDurableObject(connectionStub(E, vanished), (_instance, state) => state.storage.get(META_KEY));
    await until("the vanished connection's teardown", async () => (await metaOf()) === undefined);
    await until("the clock forgetting it", async () => (await watchedRows(woke)).length === 0 && (await woke.size()) === 0);
  });

  it("after a restart, the sweep hands a connection that stored nothing its meta back: its will is published and its session ends", async () => {
    const clientId = `lost-${crypto.randomUUID()}`;
    const topic = `lost/${clientId}`;
    // The default clock: the meta rides in the attachment and the clock's row, the connection stores nothing.
    const { id } = await connected(clientId, { keepalive: 600, will: { topic, payload: Buffer.from("gone"), qos: 0, retain: true } });
    const stored = () => runInDurableObject(connectionStub(E, id), async (_instance, state) => (await state.storage.list()).size);
    expect(await stored()).toBe(0);
    expect(await watchedRows(clockStub(E, "dev"))).toContain(id);
    await abortAllDurableObjects();
    const woke = clockStub(E, "dev");
    expect(await runDurableObjectAlarm(woke)).toBe(true);
    await until("the clock forgetting it", async () => !(await watchedRows(woke)).includes(id));
    // The will was published (retained): a new subscriber gets it.
    const { c } = await connected(`sub-${clientId}`);
    c.ws.send(encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 0 }] }));
    await c.next("suback");
    const will = await c.next("publish");
    expect(will).toMatchObject({ topic, retain: true });
    expect(will.cmd === "publish" && new TextDecoder().decode(will.payload as Uint8Array)).toBe("gone");
    // Its session ended: the router has no target for it (a clean session's target goes with it).
    const target = await runInDurableObject(routerStub(E, "dev"), (_instance, state) =>
      state.storage.sql.exec<{ conn: string | null }>("SELECT conn FROM targets WHERE client_id = ?", clientId).toArray(),
    );
    expect(target).toEqual([]);
    c.ws.close();
  });

  it("after a restart, a takeover of a connection that stored nothing claims its meta from the clock: the will comes before the new CONNACK", async () => {
    const clientId = `taken-${crypto.randomUUID()}`;
    const topic = `taken/${clientId}`;
    const { id } = await connected(clientId, { keepalive: 600, will: { topic, payload: Buffer.from("gone"), qos: 0, retain: true } });
    await abortAllDurableObjects();
    // No sweep yet: the takeover alone must end the old connection.
    const again = await connected(clientId, { keepalive: 600 });
    expect(again.connack).toMatchObject({ returnCode: 0 });
    expect(await watchedRows(clockStub(E, "dev"))).not.toContain(id);
    const { c } = await connected(`sub-${clientId}`);
    c.ws.send(encode({ cmd: "subscribe", messageId: 1, subscriptions: [{ topic, qos: 0 }] }));
    await c.next("suback");
    const will = await c.next("publish");
    expect(will.cmd === "publish" && new TextDecoder().decode(will.payload as Uint8Array)).toBe("gone");
    c.ws.close();
    again.c.ws.close();
  });

  it("a connection refused at the session attach (client id of another identity) leaves no row in the clock; a bystander's stays", async () => {
    const clientId = `owned-${crypto.randomUUID()}`;
    // The session belongs to a device: an anonymous client with its id is refused (CONNACK 2).
    await sessionStub(E, "dev", clientId).attach("dev", clientId, E.CONNECTION.newUniqueId().toString(), { cleanStart: true, expirySeconds: 0, identity: { kind: "device", id: clientId } });
    const bystander = await connected(`bystander-${crypto.randomUUID()}`, { keepalive: 600 });
    const before = await connectionIds();
    const refused = await open();
    refused.ws.send(encode({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 600, clientId }));
    expect(await refused.next("connack")).toMatchObject({ returnCode: 2 });
    const id = [...(await connectionIds())].find((x) => !before.has(x));
    if (!id) throw new Error("connection object not found");
    await until("the refused connection unwatched", async () => !(await watchedRows(clockStub(E, "dev"))).includes(id));
    expect(await watchedRows(clockStub(E, "dev"))).toContain(bystander.id);
    bystander.c.ws.close();
  });

  it("moves a watched deadline instead of checking twice, and forgets an unwatched one", async () => {
    const clock = clockStub(E, `acc-${crypto.randomUUID()}`);
    const conn = E.CONNECTION.newUniqueId().toString();
    await clock.watch(conn, Date.now() + 60_000);
    await clock.watch(conn, Date.now() + 120_000);
    expect(await clock.size()).toBe(1);
    expect(await watchedRows(clock)).toEqual([conn]);
    await clock.unwatch(conn);
    expect(await clock.size()).toBe(0);
    expect(await watchedRows(clock)).toEqual([]);
  });
});
