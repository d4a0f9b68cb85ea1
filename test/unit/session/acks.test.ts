import { describe, expect, it } from "vitest";
import type { Message } from "../../../src/router/messages";
import { V5 } from "../../../src/protocol/codes";
import { onPuback, onPubcomp, onPubrec } from "../../../src/session/handlers/acks";
import { deliverMessages } from "../../../src/session/handlers/deliver";
import { FakeLink, connectedAttachment, connMeta, testConfig } from "./fake-link";

const msg = (topic: string, qos: 1 | 2): Message => ({ topic, payload: new Uint8Array([1]), qos, retain: false });

/** A connection with one QoS 1 delivery (pid 1) and one QoS 2 delivery (pid 2) in flight. */
async function withDeliveries(version: 4 | 5 = 4, receiveMax = 10): Promise<FakeLink> {
  const link = new FakeLink(testConfig(), connectedAttachment(version, { receiveMax }), connMeta({ protocolVersion: version }));
  await deliverMessages(link, [msg("one", 1), msg("two", 2)]);
  link.sent.length = 0;
  return link;
}

describe("acknowledgements of the broker's deliveries", () => {
  it("PUBREC answers PUBREL; PUBCOMP then ends the delivery", async () => {
    const link = await withDeliveries();
    await onPubrec(link, { cmd: "pubrec", messageId: 2 });
    await onPubcomp(link, { cmd: "pubcomp", messageId: 2 });
    expect(link.sent).toEqual([{ cmd: "pubrel", messageId: 2 }]);
    expect(link.closes).toEqual([]);
  });

  it("an unsolicited PUBREC still gets PUBREL: MQTT 5 with 0x92 Packet Identifier not found", async () => {
    const v4 = await withDeliveries(4);
    await onPubrec(v4, { cmd: "pubrec", messageId: 9 });
    expect(v4.sent).toEqual([{ cmd: "pubrel", messageId: 9 }]);
    const v5 = await withDeliveries(5);
    await onPubrec(v5, { cmd: "pubrec", messageId: 9, reasonCode: 0 });
    expect(v5.sent).toEqual([{ cmd: "pubrel", messageId: 9, reasonCode: V5.packetIdNotFound }]);
    await onPubrec(v5, { cmd: "pubrec", messageId: 8, reasonCode: 0x80 }); // a failed one ends nothing: no answer
    expect(v5.sent).toHaveLength(1);
  });

  it("MQTT 5 PUBREC with a reason of 0x80 or more ends the QoS 2 delivery: no PUBREL, and the next message flows", async () => {
    const link = await withDeliveries(5, 2);
    await deliverMessages(link, [msg("three", 2)]); // waits: the window of 2 is full
    expect(link.sent).toEqual([]);
    await onPubrec(link, { cmd: "pubrec", messageId: 2, reasonCode: 0x80 });
    expect(link.sent).toEqual([expect.objectContaining({ cmd: "publish", topic: "three", messageId: 3 })]);
    await onPubcomp(link, { cmd: "pubcomp", messageId: 2 });
    expect(link.closes).toEqual([]);
  });

  it("a wrong acknowledgement for a delivery is a protocol error: PUBREC for QoS 1, PUBACK for QoS 2, PUBCOMP before PUBREL", async () => {
    for (const wrong of [
      (l: FakeLink) => onPubrec(l, { cmd: "pubrec", messageId: 1 }),
      (l: FakeLink) => onPuback(l, { cmd: "puback", messageId: 2 }),
      (l: FakeLink) => onPubcomp(l, { cmd: "pubcomp", messageId: 2 }),
    ]) {
      const link = await withDeliveries();
      await wrong(link);
      expect(link.closes).toEqual(["protocolError"]);
      expect(link.sent).toEqual([]);
    }
  });

  it("PUBACK and PUBCOMP for an id with no delivery are ignored (late duplicates)", async () => {
    const link = await withDeliveries();
    await onPuback(link, { cmd: "puback", messageId: 1 });
    await onPuback(link, { cmd: "puback", messageId: 1 });
    await onPubcomp(link, { cmd: "pubcomp", messageId: 7 });
    expect(link.closes).toEqual([]);
    expect(link.sent).toEqual([]);
  });
});
