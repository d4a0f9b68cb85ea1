import { describe, expect, it } from "vitest";
import type { ISubscribePacket } from "../../../src/protocol/codec";
import { V5 } from "../../../src/protocol/codes";
import { onSubscribe, planSubscribe } from "../../../src/session/handlers/subscribe";
import { onPuback } from "../../../src/session/handlers/acks";
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
    link.router.retained = [[{ topic: "a/x", payload: new Uint8Array([1]), qos: 0, retain: true }]];
    await onSubscribe(link, sub(["a/x", "b/y"], 0));
    expect(link.sent[0]).toEqual({ cmd: "suback", messageId: 3, granted: [0, 0x80] });
    expect(link.sent[1]).toMatchObject({ cmd: "publish", topic: "a/x", retain: true });
    // The refusal is reported as a LimitExceeded event.
    expect(link.router.published).toHaveLength(1);
  });

  it("retained messages come in pages: QoS 0 pages are read at once; QoS 1 reading pauses while the next page would not fit in MAX_OUTBOX_MESSAGES, and acknowledgements resume it; nothing is dropped", async () => {
    const meta = connMeta({ identity: { kind: "user", account: "acc", id: "u", acl, expiresAt: null } });
    const qos0 = new FakeLink(testConfig(), connectedAttachment(4), meta);
    const page = (n: number, qos: 0 | 1, from = 0) => Array.from({ length: n }, (_, i) => ({ topic: `a/${from + i}`, payload: new Uint8Array([i]), qos, retain: true }));
    qos0.router.retained = [page(3, 0), page(3, 0, 3), page(3, 0, 6)];
    await onSubscribe(qos0, sub(["a/#"], 0));
    expect(qos0.sent.filter((p) => p.cmd === "publish")).toHaveLength(9);
    expect(qos0.router.pagesRead).toBe(2);

    const config = testConfig({ maxInflight: 2, maxOutboxMessages: 4 }); // pauses at 2 waiting
    const qos1 = new FakeLink(config, connectedAttachment(4), meta);
    qos1.state.outbox.setWindow(2);
    qos1.router.retained = [page(2, 1), page(2, 1, 2), page(2, 1, 4), page(2, 1, 6), page(2, 1, 8), page(2, 1, 10)];
    await onSubscribe(qos1, sub(["a/#"], 1));
    const sentIds = () => qos1.sent.flatMap((p) => (p.cmd === "publish" && p.messageId ? [p.messageId] : []));
    // 2 in the window, then pages 2 and 3 wait (4 = MAX_OUTBOX_MESSAGES); page 4 would not fit beside them.
    expect(sentIds()).toHaveLength(2);
    expect(qos1.router.pagesRead).toBe(2);
    expect(qos1.state.outbox.waiting()).toBe(4);
    for (let round = 0; round < 10; round++) for (const id of sentIds()) await onPuback(qos1, { cmd: "puback", messageId: id });
    const topics = qos1.sent.flatMap((p) => (p.cmd === "publish" ? [p.topic] : []));
    expect(new Set(topics).size).toBe(12);
    expect(qos1.state.outbox.dropped).toBe(0);
  });

  it("QoS 1 retained reading also pauses while the next page would not fit in MAX_QUEUED_BYTES beside what waits: large messages are not dropped", async () => {
    const meta = connMeta({ identity: { kind: "user", account: "acc", id: "u", acl, expiresAt: null } });
    const size = 300 * 1024;
    // Room for what waits and one more page (512 KiB) only while at most one large message waits.
    const config = testConfig({ maxInflight: 1, maxOutboxMessages: 1000, maxQueuedBytes: size + 512 * 1024 + 1024 });
    const link = new FakeLink(config, connectedAttachment(4), meta);
    link.state.outbox.setWindow(1);
    link.router.retained = Array.from({ length: 8 }, (_, i) => [{ topic: `a/${i}`, payload: new Uint8Array(size), qos: 1 as const, retain: true }]);
    await onSubscribe(link, sub(["a/#"], 1));
    const sentIds = () => link.sent.flatMap((p) => (p.cmd === "publish" && p.messageId ? [p.messageId] : []));
    expect(link.state.outbox.waiting()).toBeLessThanOrEqual(2);
    for (let round = 0; round < 20; round++) for (const id of sentIds()) await onPuback(link, { cmd: "puback", messageId: id });
    const topics = link.sent.flatMap((p) => (p.cmd === "publish" ? [p.topic] : []));
    expect(new Set(topics).size).toBe(8);
    expect(link.state.outbox.dropped).toBe(0);
  });
});
