import { describe, it, expect } from "vitest";
import { env } from "cloudflare:test";
import type { Env } from "../../src/env";
import { routerStub, sessionStub } from "../../src/stubs";
import type { Message } from "../../src/router/messages";

const E = env as unknown as Env;
const noHandover = { messages: [], inboundQos2: [] };
const ANON = { kind: "anonymous" as const, id: "anonymous" };
/** A retained will: the router's retained store shows whether it was published. */
const will = (name: string): Message => ({ topic: `will/${name}`, payload: new TextEncoder().encode(name), qos: 1, retain: true });

describe("MqttSession in workerd", () => {
  it("a will waiting for its delay: a resuming reconnect cancels it [MQTT-3.1.3-9]; a clean start ends the session and publishes it at once (§3.1.2.5)", async () => {
    const account = `acc-${crypto.randomUUID()}`;
    const session = sessionStub(E, account, "w");
    const conn = (): string => E.CONNECTION.newUniqueId().toString();

    const first = conn();
    await session.attach(account, "w", first, { cleanStart: false, expirySeconds: 600, identity: ANON });
    await session.detach(first, { handover: noHandover, expirySeconds: 600, delayedWill: { message: will("first"), delaySeconds: 300 } });
    const resumed = conn();
    await session.attach(account, "w", resumed, { cleanStart: false, expirySeconds: 600, identity: ANON });
    await session.detach(resumed, { handover: noHandover, expirySeconds: 600, delayedWill: { message: will("second"), delaySeconds: 300 } });
    await session.attach(account, "w", conn(), { cleanStart: true, expirySeconds: 0, identity: ANON });

    const { retained } = await routerStub(E, account).subscribe("watch", [{ filter: "will/#", qos: 1 }], 10);
    expect(retained.map((m) => m.topic)).toEqual(["will/second"]);
  });
});
