import { describe, expect, it } from "vitest";
import { decodePacket, encodePacket, readFrames, type IPublishPacket } from "../../../src/protocol/codec";
import { forwardedProps, publishProperties, userPropertyMap } from "../../../src/session/properties";
import type { Message } from "../../../src/router/messages";

const POISON = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf"];

describe("user properties are data", () => {
  it("names that are Object.prototype members survive a PUBLISH encode and decode, in order, repeats kept", () => {
    const pairs = [...POISON.map((key) => ({ key, value: `v-${key}` })), { key: "__proto__", value: "again" }];
    const m: Message = { topic: "t", payload: new Uint8Array([1]), qos: 0, retain: false, props: { userProperties: pairs } };
    const properties = publishProperties(m, 0);
    const packet: IPublishPacket = { cmd: "publish", topic: "t", payload: Buffer.from([1]), qos: 0, retain: false, dup: false, ...(properties ? { properties } : {}) };
    const bytes = encodePacket(packet, 5);
    const { frames } = readFrames(bytes, 1 << 20);
    const decoded = frames[0] ? decodePacket(frames[0], 5) : null;
    if (!decoded?.ok || decoded.packet.cmd !== "publish") throw new Error("did not decode");
    const back = forwardedProps(decoded.packet.properties)?.userProperties;
    expect(back).toEqual([
      { key: "__proto__", value: "v-__proto__" },
      { key: "__proto__", value: "again" },
      ...POISON.slice(1).map((key) => ({ key, value: `v-${key}` })),
    ]);
  });

  it("the map has no prototype: no inherited name is mistaken for a value", () => {
    const map = userPropertyMap([{ key: "constructor", value: "x" }]);
    expect(Object.getPrototypeOf(map)).toBeNull();
    expect(Reflect.get(map, "constructor")).toBe("x");
    expect(Object.keys(map)).toEqual(["constructor"]);
  });
});
