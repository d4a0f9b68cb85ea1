import { describe, expect, it } from "vitest";
import { planTeardown, closeConnection } from "../../../src/session/handlers/teardown";
import type { Message } from "../../../src/router/messages";
import { FakeLink, connectedAttachment, connMeta } from "./fake-link";

const will: Message = { topic: "w", payload: new Uint8Array([1]), qos: 1, retain: false };
const traffic = { readBytes: 1, readMsg: 1, writeBytes: 2, writeMsg: 2 };
const inflight: Message = { topic: "t", payload: new Uint8Array(), qos: 1, retain: false, pid: 4, dup: true };
const shared: Message = { topic: "s", payload: new Uint8Array(), qos: 1, retain: false, pid: 5, share: "g\u0000s" };

const eventAction = (m: Message | undefined): unknown => (m ? JSON.parse(new TextDecoder().decode(m.payload)).Action : undefined);

describe("planTeardown", () => {
  it("a takeover by a clean start ends the persistent session: the will at once and the Disconnect event; the hand-over answers instead of detaching the session", () => {
    const plan = planTeardown({
      meta: connMeta({ expirySeconds: 3600, will, willDelaySeconds: 30 }),
      cause: "takenOver", handBack: false, resumed: false, willSuppressed: false, connected: true, traffic,
      unfinished: [inflight], unreleased: [], inboundQos2: [9], now: 10,
    });
    expect(plan.announce[0]).toBe(will); // no hand-back: the will delay cannot be kept by the session
    expect(eventAction(plan.announce[1])).toBe("Disconnect");
    expect(plan.sessionDetach).toBeNull();
    expect(plan.handover).toEqual({ messages: [inflight], inboundQos2: [9] });
    expect(plan.persistent).toBe(true);
    expect(plan.orphans).toEqual([]);
  });

  it("a takeover that resumes the session publishes no will: the session goes on (§3.1.2.5)", () => {
    const plan = planTeardown({
      meta: connMeta({ expirySeconds: 3600, will }),
      cause: "takenOver", handBack: false, resumed: true, willSuppressed: false, traffic,
      unfinished: [], unreleased: [], inboundQos2: [], now: 10,
    });
    expect(plan.announce.map(eventAction)).toEqual(["Disconnect"]);
  });

  it("QoS 2 messages whose PUBREL never came are published first, before the will", () => {
    const unreleased: Message = { topic: "q2", payload: new Uint8Array([2]), qos: 2, retain: false };
    const plan = planTeardown({
      meta: connMeta({ will }), cause: "networkLost", handBack: true, resumed: false, willSuppressed: false, traffic,
      unfinished: [], unreleased: [unreleased], inboundQos2: [3], now: 10,
    });
    expect(plan.announce.slice(0, 2)).toEqual([unreleased, will]);
    expect(eventAction(plan.announce[2])).toBe("Disconnect");
  });

  it("a lost persistent connection with a will delay hands the will to the session object", () => {
    const plan = planTeardown({
      meta: connMeta({ expirySeconds: 3600, will, willDelaySeconds: 30 }),
      cause: "networkLost", handBack: true, resumed: false, willSuppressed: false, connected: true, traffic, unfinished: [], unreleased: [], inboundQos2: [], now: 10,
    });
    expect(plan.announce.map(eventAction)).toEqual(["Disconnect"]);
    expect(plan.sessionDetach).toEqual({ handover: { messages: [], inboundQos2: [] }, expirySeconds: 3600, delayedWill: { message: will, delaySeconds: 30 } });
  });

  it("a clean session gives unfinished shared messages back to their groups and keeps nothing", () => {
    const plan = planTeardown({
      meta: connMeta({ expirySeconds: 0, identity: { kind: "user", account: "acc", id: "u", acl: { pub: [], sub: [] }, expiresAt: null } }),
      cause: "clientDisconnect", handBack: true, resumed: false, willSuppressed: false, connected: true, traffic, unfinished: [inflight, shared], unreleased: [], inboundQos2: [], now: 10,
    });
    expect(plan.orphans).toEqual([shared]);
    expect(plan.handover).toEqual({ messages: [], inboundQos2: [] });
    expect(plan.releaseSlot).toBe(true);
  });

  it("DISCONNECT publishes no will [MQTT-3.1.2-10]; an admin close can suppress it", () => {
    const base = { handBack: true, resumed: false, connected: true, traffic, unfinished: [], unreleased: [], inboundQos2: [], now: 10 };
    expect(planTeardown({ ...base, meta: connMeta({ will }), cause: "clientDisconnect", willSuppressed: false }).announce).toHaveLength(1);
    expect(planTeardown({ ...base, meta: connMeta({ will }), cause: "adminKick", willSuppressed: true }).announce).toHaveLength(1);
    expect(planTeardown({ ...base, meta: connMeta({ will }), cause: "adminKick", willSuppressed: false }).announce[0]).toBe(will);
  });
});

describe("a connection refused after its session was attached", () => {
  it("publishes neither its will nor a Disconnect event (it never got CONNACK 0)", () => {
    const plan = planTeardown({
      meta: connMeta({ will }), cause: "connectRateExceeded", handBack: true, resumed: false, willSuppressed: false, connected: false, unreleased: [],
      traffic, unfinished: [], inboundQos2: [], now: 10,
    });
    expect(plan.announce).toEqual([]);
    expect(plan.sessionDetach).not.toBeNull();
  });
});

describe("retained Disconnect events", () => {
  const base = { cause: "networkLost" as const, handBack: true, resumed: false, willSuppressed: false, connected: true, unreleased: [], traffic, unfinished: [], inboundQos2: [], now: 1_000, monitorRetainSeconds: 60 };
  it("expire for client ids chosen freely (multi mode, anonymous); stay for devices and single-mode users", () => {
    const user = (id: string) => ({ kind: "user" as const, account: "acc", id, acl: { pub: [], sub: [] }, expiresAt: null });
    const multi = planTeardown({ ...base, meta: connMeta({ clientId: "random-1", identity: user("u") }) }).announce[0];
    const single = planTeardown({ ...base, meta: connMeta({ clientId: "u", identity: user("u") }) }).announce[0];
    const anon = planTeardown({ ...base, meta: connMeta({ clientId: "x" }) }).announce[0];
    expect(multi).toMatchObject({ retain: true, expiresAt: 61_000 });
    expect(anon).toMatchObject({ retain: true, expiresAt: 61_000 });
    expect(single?.retain).toBe(true);
    expect(single?.expiresAt).toBeUndefined();
  });
});

describe("closeConnection", () => {
  it("runs once: the second caller gets the same hand-over, the router hears one detach", async () => {
    const link = new FakeLink(undefined, connectedAttachment(5), connMeta({ protocolVersion: 5 }));
    const [a, b] = await Promise.all([closeConnection(link, "keepAliveTimeout"), closeConnection(link, "networkLost")]);
    expect(a).toBe(b);
    expect(link.router.detached).toHaveLength(1);
    // MQTT 5: the broker says why before it closes (§4.13.2).
    expect(link.sent).toEqual([expect.objectContaining({ cmd: "disconnect", reasonCode: 0x8d })]);
    expect(link.storage.data.size).toBe(0);
  });
});

describe("a failed session hand-back", () => {
  it("keeps the hand-over and retries by alarm instead of deleting it; the retry detaches once and clears", async () => {
    const meta = connMeta({ expirySeconds: 3600 });
    const link = new FakeLink(undefined, connectedAttachment(4, { clean: false }), meta);
    await link.state.outbox.add([{ topic: "kept", payload: new Uint8Array([1]), qos: 1, retain: false }]);
    let calls = 0;
    link.services.session = () => ({
      attach: async () => ({ ok: true, sessionPresent: false, inboundQos2: [] }),
      detach: async () => {
        calls++;
        if (calls === 1) throw new Error("session object overloaded");
      },
    });
    await closeConnection(link, "networkLost");
    expect(link.pending?.detach.handover.messages.map((m) => m.topic)).toEqual(["kept"]);
    expect(link.storage.alarm).toBe(link.clock + 30_000);
    expect(link.router.detached).toHaveLength(1);
    // The alarm's retry: only the session detach runs again (no second will or Disconnect event).
    link.state.closing = null;
    await closeConnection(link, "networkLost");
    expect(calls).toBe(2);
    expect(link.router.detached).toHaveLength(1);
    expect(link.storage.data.size).toBe(0);
  });
});
