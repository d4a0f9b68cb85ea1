/**
 * The connection's own alarm (KEEPALIVE_CLOCK = "alarm", this project's setting; the `worker`
 * project runs the default, the shared clock): the meta stored at CONNECT comes with one alarm,
 * the connect timeout, which after CONNACK is the first keep-alive check.
 */
import { describe, it, expect } from "vitest";
import { env, runDurableObjectAlarm, runInDurableObject } from "cloudflare:test";
import type { Env } from "../../../src/env";
import { META_KEY } from "../../../src/session/keys";
import { eventually } from "../mqtt";
import { connected, connectionIds, encode, open } from "../objects";

const E = env as unknown as Env;

describe("MqttConnection with its own keep-alive alarm", () => {
  it("one alarm per connect: the connect timeout, armed at CONNECT with the meta, is the first keep-alive check, and re-arms for the deadline without closing", async () => {
    const before = await connectionIds();
    const t0 = Date.now();
    const c = await open();
    c.ws.send(encode({ cmd: "connect", protocolId: "MQTT", protocolVersion: 4, clean: true, keepalive: 60, clientId: `alarm-${crypto.randomUUID()}` }));
    await c.next("connack");
    const id = [...(await connectionIds())].find((x) => !before.has(x));
    if (!id) throw new Error("connection object not found");
    const stub = E.CONNECTION.get(E.CONNECTION.idFromString(id));
    const armed = await runInDurableObject(stub, (_i, state) => state.storage.getAlarm());
    // Still the connect timeout (30 s after the upgrade): nothing was armed at CONNACK.
    expect(armed).toBeGreaterThanOrEqual(t0 + 30_000);
    expect(armed).toBeLessThanOrEqual(Date.now() + 30_000);
    expect(await runDurableObjectAlarm(stub)).toBe(true);
    // Run early for the keep-alive deadline (1.5 × 60 s + 1 s after the last packet): re-armed for it, the client still connected.
    const rearmed = await runInDurableObject(stub, (_i, state) => state.storage.getAlarm());
    expect(rearmed).toBeGreaterThanOrEqual(t0 + 91_000);
    expect(rearmed).toBeLessThanOrEqual(Date.now() + 91_000);
    c.ws.send(encode({ cmd: "pingreq" }));
    await c.next("pingresp");
    expect(c.closed()).toBe(false);
    c.ws.close();
  });

  it("a connection that ends leaves no alarm and no stored key behind (deleteAll clears the alarm too)", async () => {
    const { c, id } = await connected(`ends-${crypto.randomUUID()}`, { clean: true, keepalive: 60 });
    const stub = E.CONNECTION.get(E.CONNECTION.idFromString(id));
    const stored = () =>
      runInDurableObject(stub, async (_i, state) => ({ alarm: await state.storage.getAlarm(), keys: (await state.storage.list()).size, meta: await state.storage.get(META_KEY) }));
    const during = await stored();
    expect(during.alarm).not.toBeNull();
    expect(during.meta).toMatchObject({ clientId: expect.stringMatching(/^ends-/) });
    c.ws.send(encode({ cmd: "disconnect" }));
    await eventually(stored, (after) => after.alarm === null && after.keys === 0, "no alarm and no key after the close", 3_000);
  });

  it("a keep alive whose deadline comes before the connect timeout is armed at CONNACK", async () => {
    const { c, id } = await connected(`alarm10-${crypto.randomUUID()}`, { keepalive: 10 });
    const armed = await runInDurableObject(E.CONNECTION.get(E.CONNECTION.idFromString(id)), (_i, state) => state.storage.getAlarm());
    expect(armed).toBeLessThanOrEqual(Date.now() + 16_000);
    c.ws.close();
  });
});
