import { describe, expect, it } from "vitest";
import type { IPublishPacket } from "../../../src/protocol/codec";
import { V5 } from "../../../src/protocol/codes";
import { decidePublish, onPublish } from "../../../src/session/handlers/publish";
import { onPuback, onPubrel } from "../../../src/session/handlers/acks";
import { closeConnection } from "../../../src/session/handlers/teardown";
import { TOPIC_ALIAS_MAXIMUM } from "../../../src/session/properties";
import { FakeLink, connectedAttachment, connMeta, deferred, settle, testConfig } from "./fake-link";

const publish = (messageId: number | undefined, qos: 0 | 1 | 2, topic = "a/b"): IPublishPacket => ({
  cmd: "publish", topic, payload: Buffer.from("x"), qos, retain: false, dup: false, ...(messageId === undefined ? {} : { messageId }),
});

describe("PUBLISH handler", () => {
  it("a QoS 1 PUBLISH calls the router once and sends PUBACK only after the call resolves", async () => {
    const link = new FakeLink();
    const call = deferred<void>();
    link.router.onPublish = () => call.promise;
    await onPublish(link, publish(7, 1));
    await settle();
    expect(link.router.published).toHaveLength(1);
    expect(link.router.published[0]?.map((m) => m.topic)).toEqual(["a/b"]);
    expect(link.cmds()).toEqual([]);
    call.resolve();
    await settle();
    expect(link.sent).toEqual([{ cmd: "puback", messageId: 7 }]);
    expect(link.router.published).toHaveLength(1);
  });

  it("no PUBACK and a close when the router call rejects", async () => {
    const link = new FakeLink();
    link.router.onPublish = () => Promise.reject(new Error("router down"));
    await onPublish(link, publish(7, 1));
    await settle();
    expect(link.cmds()).toEqual([]);
    expect(link.closes).toEqual(["serverError"]);
  });

  it("publishes arriving during a router call travel together in the next one, acknowledged in order", async () => {
    const link = new FakeLink();
    const calls = [deferred<void>(), deferred<void>()];
    let n = 0;
    link.router.onPublish = () => calls[n++]?.promise ?? Promise.resolve();
    await onPublish(link, publish(1, 1, "t/1"));
    await onPublish(link, publish(undefined, 0, "t/2"));
    await onPublish(link, publish(3, 1, "t/3"));
    await settle();
    expect(link.router.published.map((b) => b.map((m) => m.topic))).toEqual([["t/1"]]);
    calls[0]?.resolve();
    await settle();
    expect(link.sent).toEqual([{ cmd: "puback", messageId: 1 }]);
    expect(link.router.published.map((b) => b.map((m) => m.topic))).toEqual([["t/1"], ["t/2", "t/3"]]);
    calls[1]?.resolve();
    await settle();
    expect(link.sent).toEqual([{ cmd: "puback", messageId: 1 }, { cmd: "puback", messageId: 3 }]);
  });

  it("QoS 2 (Method A): stored and PUBREC at once, no router call before PUBREL; PUBREL routes it and PUBCOMP follows the call", async () => {
    const link = new FakeLink();
    await onPublish(link, publish(5, 2));
    await settle();
    expect(link.sent).toEqual([{ cmd: "pubrec", messageId: 5 }]);
    expect(link.router.published).toEqual([]);
    expect(await link.state.inboundQos2.has(5)).toBe(true);
    const call = deferred<void>();
    link.router.onPublish = () => call.promise;
    await onPubrel(link, { cmd: "pubrel", messageId: 5 });
    await settle();
    expect(link.router.published.flat().map((m) => m.topic)).toEqual(["a/b"]);
    expect(link.cmds()).toEqual(["pubrec"]);
    call.resolve();
    await settle();
    expect(link.sent).toEqual([{ cmd: "pubrec", messageId: 5 }, { cmd: "pubcomp", messageId: 5 }]);
    expect(await link.state.inboundQos2.has(5)).toBe(false);
  });

  it("a QoS 2 retransmission before PUBREL gets PUBREC again and is stored once; a repeated PUBREL routes nothing more", async () => {
    const link = new FakeLink();
    await onPublish(link, publish(5, 2));
    await onPublish(link, { ...publish(5, 2), dup: true });
    await onPubrel(link, { cmd: "pubrel", messageId: 5 });
    await onPubrel(link, { cmd: "pubrel", messageId: 5 });
    await settle();
    expect(link.router.published.flat()).toHaveLength(1);
    expect(link.cmds()).toEqual(["pubrec", "pubrec", "pubcomp", "pubcomp"]);
  });

  it("MQTT 5 Receive Maximum counts QoS 2 messages until their PUBREL; a retransmission is not counted again [MQTT-3.3.4-7]", async () => {
    const link = new FakeLink(testConfig({ maxInflight: 2 }), connectedAttachment(5), connMeta({ protocolVersion: 5 }));
    await onPublish(link, publish(1, 2));
    await onPublish(link, publish(2, 2));
    await onPublish(link, { ...publish(2, 2), dup: true });
    expect(link.closes).toEqual([]);
    await onPublish(link, publish(3, 2));
    expect(link.closes).toEqual(["receiveMaximumExceeded"]);
  });

  it("MQTT 5: PUBACK 0x10 when no subscription matched, 0x00 (short) when one did; 3.1.1 has no reason code", async () => {
    const link = new FakeLink(testConfig(), connectedAttachment(5), connMeta({ protocolVersion: 5 }));
    link.router.outcomes = (messages) => messages.map((m) => (m.topic === "seen" ? "matched" : "unmatched"));
    await onPublish(link, publish(1, 1, "nobody"));
    await onPublish(link, publish(2, 1, "seen"));
    await settle();
    expect(link.sent).toEqual([{ cmd: "puback", messageId: 1, reasonCode: V5.noMatchingSubscribers }, { cmd: "puback", messageId: 2 }]);
    const v4 = new FakeLink();
    v4.router.outcomes = (messages) => messages.map(() => "unmatched");
    await onPublish(v4, publish(1, 1));
    await settle();
    expect(v4.sent).toEqual([{ cmd: "puback", messageId: 1 }]);
  });

  it("a retained publish past the account's retained quota: MQTT 5 PUBACK 0x97, 3.1.1 a plain PUBACK; both report a LimitExceeded event", async () => {
    const link = new FakeLink(testConfig(), connectedAttachment(5), connMeta({ protocolVersion: 5 }));
    link.router.outcomes = (messages) => messages.map((m) => (m.topic === "full" ? "quota" : "matched"));
    await onPublish(link, publish(1, 1, "full"));
    await settle();
    expect(link.sent).toEqual([{ cmd: "puback", messageId: 1, reasonCode: V5.quotaExceeded }]);
    const event = link.router.published.at(-1)?.[0];
    expect(event?.topic).toMatch(/^\$SYS\/mon\//);
    expect(JSON.parse(new TextDecoder().decode(event?.payload))).toMatchObject({ Action: "LimitExceeded" });
    const v4 = new FakeLink();
    v4.router.outcomes = (messages) => messages.map(() => "quota");
    await onPublish(v4, publish(1, 1, "full"));
    await settle();
    expect(v4.sent).toEqual([{ cmd: "puback", messageId: 1 }]);
    expect(v4.router.published).toHaveLength(2);
  });

  it("a teardown routes the stored QoS 2 messages whose PUBREL never came, not one already in the router call", async () => {
    const link = new FakeLink();
    await onPublish(link, publish(1, 2, "in/flight"));
    await onPublish(link, publish(2, 2, "never/released"));
    const call = deferred<void>();
    link.router.onPublish = () => call.promise;
    await onPubrel(link, { cmd: "pubrel", messageId: 1 });
    await settle();
    const closing = closeConnection(link, "networkLost");
    call.resolve();
    await closing;
    expect(link.router.published.flat().map((m) => m.topic)).toEqual(["in/flight"]);
    expect(link.router.detached[0]?.announce?.[0]?.topic).toBe("never/released");
  });

  it("publishes waiting behind the router call in flight when the connection is lost are routed by the teardown, before the Disconnect event, once", async () => {
    const link = new FakeLink();
    const call = deferred<void>();
    link.router.onPublish = () => call.promise;
    await onPublish(link, publish(undefined, 0, "first"));
    await onPublish(link, publish(undefined, 0, "second"));
    await onPublish(link, publish(7, 1, "third"));
    await settle();
    const closing = closeConnection(link, "networkLost");
    call.resolve();
    await closing;
    expect(link.router.published.flat().map((m) => m.topic)).toEqual(["first"]);
    const announced = link.router.detached[0]?.announce?.map((m) => m.topic) ?? [];
    expect(announced.slice(0, 2)).toEqual(["second", "third"]);
    expect(announced.at(-1)).toMatch(/^\$SYS\/mon\//);
    expect(link.sent).toEqual([]); // the QoS 1 one was routed, never acknowledged: at least once
  });

  it("acknowledgements for packet ids the broker never used are charged to the packet budget", async () => {
    const link = new FakeLink(testConfig({ packetBurst: 3, packetRatePerSecond: 1 }));
    for (let id = 1; id <= 5 && link.closes.length === 0; id++) await onPuback(link, { cmd: "puback", messageId: id });
    expect(link.closes).toEqual(["rateExceeded"]);
  });

  it("MQTT 5 topic aliases: an alias never set is a protocol error (0x82); 0 or over the maximum is Topic Alias invalid (0x94)", async () => {
    const meta = connMeta({ protocolVersion: 5 });
    const aliased = (alias: number, topic = ""): IPublishPacket => ({ ...publish(undefined, 0, topic), properties: { topicAlias: alias } });
    const unset = new FakeLink(testConfig(), connectedAttachment(5), meta);
    await onPublish(unset, aliased(3));
    expect(unset.closes).toEqual(["protocolError"]);
    const zero = new FakeLink(testConfig(), connectedAttachment(5), meta);
    await onPublish(zero, aliased(0, "a"));
    expect(zero.closes).toEqual(["topicAliasInvalid"]);
    const over = new FakeLink(testConfig(), connectedAttachment(5), meta);
    await onPublish(over, aliased(TOPIC_ALIAS_MAXIMUM + 1, "a"));
    expect(over.closes).toEqual(["topicAliasInvalid"]);
  });

  it("past the publish rate the connection closes without routing", async () => {
    const link = new FakeLink(testConfig({ publishRatePerSecond: 1, publishBurst: 1 }), connectedAttachment(4, { bucket: { tokens: 1, at: 1_000 } }));
    await onPublish(link, publish(undefined, 0));
    await onPublish(link, publish(undefined, 0));
    await settle();
    expect(link.router.published.flat()).toHaveLength(1);
    expect(link.closes).toEqual(["rateExceeded"]);
  });

  it("an MQTT 5 publish the ACL refuses gets PUBACK 0x87 and is not routed", async () => {
    const meta = connMeta({ protocolVersion: 5, identity: { kind: "user", account: "acc", id: "u", acl: { pub: ["mine/#"], sub: [] }, expiresAt: null } });
    const link = new FakeLink(testConfig(), connectedAttachment(5), meta);
    await onPublish(link, publish(2, 1, "theirs/x"));
    await settle();
    expect(link.router.published).toEqual([]);
    expect(link.sent).toEqual([expect.objectContaining({ cmd: "puback", messageId: 2, reasonCode: V5.notAuthorized })]);
  });
});

describe("decidePublish", () => {
  const acl = { pub: ["a/#"], sub: [] };
  it("routes an allowed publish with its forwarded properties and expiry", () => {
    const packet: IPublishPacket = { ...publish(1, 1), properties: { contentType: "text/plain", messageExpiryInterval: 10 } };
    const d = decidePublish(packet, "a/b", new Uint8Array([1]), acl, "c1", 5_000);
    expect(d.reason).toBeUndefined();
    expect(d.message).toMatchObject({ topic: "a/b", qos: 1, from: "c1", props: { contentType: "text/plain" }, expiresAt: 15_000 });
  });
  it("refuses an invalid UTF-8 payload marked as UTF-8 with 0x99, before the ACL", () => {
    const packet: IPublishPacket = { ...publish(1, 1, "z"), properties: { payloadFormatIndicator: true } };
    expect(decidePublish(packet, "z", new Uint8Array([0xff]), acl, "c1", 0)).toMatchObject({ message: null, reason: V5.payloadFormatInvalid });
  });
  it("refuses a topic outside the ACL with 0x87", () => {
    expect(decidePublish(publish(1, 1, "b/c"), "b/c", new Uint8Array(), acl, "c1", 0)).toMatchObject({ message: null, reason: V5.notAuthorized });
  });
});
