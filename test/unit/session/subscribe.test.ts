import { describe, expect, it } from "vitest";
import type { ISubscribePacket } from "../../../src/protocol/codec";
import { V5 } from "../../../src/protocol/codes";
import { onSubscribe, planSubscribe } from "../../../src/session/handlers/subscribe";
import { FakeLink, connectedAttachment, connMeta, testConfig } from "./fake-link";

const acl = { pub: [], sub: ["a/#", "b/+"] };
const sub = (topics: string[], qos: 0 | 1 | 2 = 1): ISubscribePacket => ({ cmd: "subscribe", messageId: 3, subscriptions: topics.map((topic) => ({ topic, qos })) });

describe("planSubscribe", () => {
  it("answers each filter in order: granted QoS, ACL denial, invalid filter (3.1.1: 0x80)", () => {
    const plan = planSubscribe(sub(["a/x", "c/#", "a/#/x", "b/y"]), acl, testConfig().limits, 4);
    if (!plan.ok) throw new Error("expected a plan");
    expect(plan.codes).toEqual([1, 0x80, 0x80, 1]);
    expect(plan.denied).toEqual(["c/#"]);
    expect(plan.requests.map((r) => r.filter)).toEqual(["a/x", "b/y"]);
    expect(plan.slots).toEqual([0, 3]);
  });

  it("MQTT 5 says why: 0x87 not authorized, 0x8f invalid, 0x97 past the per-packet limit", () => {
    const limits = testConfig({ maxFiltersPerSubscribe: 2 }).limits;
    const plan = planSubscribe(sub(["c/#", "a/#/x", "a/1"]), acl, limits, 5);
    if (!plan.ok) throw new Error("expected a plan");
    expect(plan.codes).toEqual([V5.notAuthorized, V5.topicFilterInvalid, V5.quotaExceeded]);
    expect(plan.requests).toEqual([]);
  });

  it("no local on a shared subscription is a protocol error [MQTT-3.8.3-4]", () => {
    const packet: ISubscribePacket = { cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "$share/g/a/x", qos: 0, nl: true }] };
    expect(planSubscribe(packet, acl, testConfig().limits, 5)).toEqual({ ok: false });
  });
});

describe("SUBSCRIBE handler", () => {
  it("SUBACK carries the router's quota refusals, then the retained messages follow", async () => {
    const meta = connMeta({ identity: { kind: "user", account: "acc", id: "u", acl, expiresAt: null } });
    const link = new FakeLink(testConfig(), connectedAttachment(4), meta);
    link.router.granted = (requests) => requests.map((_, i) => i === 0);
    link.router.retained = [{ topic: "a/x", payload: new Uint8Array([1]), qos: 0, retain: true }];
    await onSubscribe(link, sub(["a/x", "b/y"], 0));
    expect(link.sent[0]).toEqual({ cmd: "suback", messageId: 3, granted: [0, 0x80] });
    expect(link.sent[1]).toMatchObject({ cmd: "publish", topic: "a/x", retain: true });
    // The refusal is reported as a LimitExceeded event.
    expect(link.router.published).toHaveLength(1);
  });
});
