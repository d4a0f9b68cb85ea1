import { describe, it, expect } from "vitest";
import mqttPacket from "mqtt-packet";
import {
  concatBytes,
  decodePacket,
  encodePacket,
  readFrames,
  type Packet,
  type ProtocolVersion,
} from "../../src/protocol/codec";
import { CANONICAL, MALFORMED, PROTOCOL_ERRORS, SERVER_ONLY, UNSUPPORTED_LEVELS, VALID_NEIGHBOURS, type WireCase } from "../helpers/malformed";
import { bytes, hex, publish } from "../helpers/bytes";
import { mulberry32 } from "../helpers/random";
import { decodeThroughParser } from "../../src/protocol/decode";

/** Fields mqtt-packet's parser sets on every packet it emits. */
function parsed(length: number, fields: Record<string, unknown>, header?: { qos?: number; dup?: boolean; retain?: boolean }): Record<string, unknown> {
  return { retain: false, qos: 0, dup: false, topic: null, payload: null, ...header, length, ...fields };
}

interface Vector {
  name: string;
  version: ProtocolVersion;
  bytes: Uint8Array;
  /** The packet as the parser emits it (decode expectation). */
  decoded: Record<string, unknown>;
  /** The packet as the broker would build it (encode input). */
  packet: Packet;
}

const VECTORS: Vector[] = [
  {
    name: "CONNECT 3.1.1 with will, username and password",
    version: 4,
    bytes: bytes(
      0x10, 33, // CONNECT, remaining length 33
      0, 4, "MQTT", // protocol name
      4, // protocol level 4 (3.1.1)
      0xce, // flags: username, password, will qos 1, will, clean session
      0, 30, // keep alive 30 s
      0, 4, "test", // client id
      0, 3, "w/t", // will topic
      0, 3, "bye", // will payload
      0, 1, "u", // username
      0, 2, "pw", // password
    ),
    decoded: parsed(33, {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clean: true,
      keepalive: 30,
      clientId: "test",
      will: { retain: false, qos: 1, topic: "w/t", payload: Buffer.from("bye") },
      username: "u",
      password: Buffer.from("pw"),
    }),
    packet: {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 4,
      clean: true,
      keepalive: 30,
      clientId: "test",
      will: { retain: false, qos: 1, topic: "w/t", payload: Buffer.from("bye") },
      username: "u",
      password: Buffer.from("pw"),
    },
  },
  {
    name: "CONNECT 3.1 (MQIsdp)",
    version: 3,
    bytes: bytes(
      0x10, 17, // CONNECT, remaining length 17
      0, 6, "MQIsdp", // protocol name
      3, // protocol level 3
      0x02, // flags: clean session
      0, 60, // keep alive 60 s
      0, 3, "abc", // client id
    ),
    decoded: parsed(17, {
      cmd: "connect",
      protocolId: "MQIsdp",
      protocolVersion: 3,
      clean: true,
      keepalive: 60,
      clientId: "abc",
    }),
    packet: { cmd: "connect", protocolId: "MQIsdp", protocolVersion: 3, clean: true, keepalive: 60, clientId: "abc" },
  },
  {
    name: "CONNECT 5.0 with Session Expiry Interval",
    version: 5,
    bytes: bytes(
      0x10, 20, // CONNECT, remaining length 20
      0, 4, "MQTT", // protocol name
      5, // protocol level 5
      0x02, // flags: clean start
      0, 10, // keep alive 10 s
      5, // properties length
      0x11, 0, 0, 0x0e, 0x10, // Session Expiry Interval 3600
      0, 2, "v5", // client id
    ),
    decoded: parsed(20, {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 5,
      clean: true,
      keepalive: 10,
      properties: { sessionExpiryInterval: 3600 },
      clientId: "v5",
    }),
    packet: {
      cmd: "connect",
      protocolId: "MQTT",
      protocolVersion: 5,
      clean: true,
      keepalive: 10,
      properties: { sessionExpiryInterval: 3600 },
      clientId: "v5",
    },
  },
  {
    name: "CONNACK session present, accepted",
    version: 4,
    bytes: bytes(
      0x20, 2, // CONNACK, remaining length 2
      0x01, // session present
      0x00, // return code 0 (accepted)
    ),
    decoded: parsed(2, { cmd: "connack", sessionPresent: true, returnCode: 0 }),
    packet: { cmd: "connack", sessionPresent: true, returnCode: 0 },
  },
  {
    name: "PUBLISH QoS 0 retained",
    version: 4,
    bytes: bytes(
      0x31, 7, // PUBLISH, QoS 0, retain; remaining length 7
      0, 3, "a/b", // topic
      "hi", // payload
    ),
    decoded: parsed(7, { cmd: "publish", topic: "a/b", payload: Buffer.from("hi") }, { retain: true }),
    packet: { cmd: "publish", qos: 0, dup: false, retain: true, topic: "a/b", payload: Buffer.from("hi") },
  },
  {
    name: "PUBLISH QoS 1 with packet identifier",
    version: 4,
    bytes: bytes(
      0x32, 12, // PUBLISH, QoS 1; remaining length 12
      0, 3, "a/b", // topic
      0, 10, // packet identifier 10
      "hello", // payload
    ),
    decoded: parsed(12, { cmd: "publish", topic: "a/b", messageId: 10, payload: Buffer.from("hello") }, { qos: 1 }),
    packet: { cmd: "publish", qos: 1, dup: false, retain: false, topic: "a/b", messageId: 10, payload: Buffer.from("hello") },
  },
  {
    name: "PUBLISH 5.0 QoS 1 with Message Expiry Interval",
    version: 5,
    bytes: bytes(
      0x32, 12, // PUBLISH, QoS 1; remaining length 12
      0, 1, "t", // topic
      0, 7, // packet identifier 7
      5, // properties length
      0x02, 0, 0, 0, 60, // Message Expiry Interval 60
      "x", // payload
    ),
    decoded: parsed(
      12,
      { cmd: "publish", topic: "t", messageId: 7, properties: { messageExpiryInterval: 60 }, payload: Buffer.from("x") },
      { qos: 1 },
    ),
    packet: {
      cmd: "publish",
      qos: 1,
      dup: false,
      retain: false,
      topic: "t",
      messageId: 7,
      properties: { messageExpiryInterval: 60 },
      payload: Buffer.from("x"),
    },
  },
  {
    name: "PUBACK",
    version: 4,
    bytes: bytes(
      0x40, 2, // PUBACK, remaining length 2
      0, 10, // packet identifier 10
    ),
    decoded: parsed(2, { cmd: "puback", messageId: 10 }),
    packet: { cmd: "puback", messageId: 10 },
  },
  {
    name: "SUBSCRIBE with two filters",
    version: 4,
    bytes: bytes(
      0x82, 12, // SUBSCRIBE (flags 0010), remaining length 12
      0, 1, // packet identifier 1
      0, 3, "a/+", 1, // filter a/+, QoS 1
      0, 1, "#", 2, // filter #, QoS 2
    ),
    decoded: parsed(
      12,
      { cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a/+", qos: 1 }, { topic: "#", qos: 2 }] },
      { qos: 1 }, // the parser reads the reserved header bits 0010 as QoS 1
    ),
    packet: { cmd: "subscribe", messageId: 1, subscriptions: [{ topic: "a/+", qos: 1 }, { topic: "#", qos: 2 }] },
  },
  {
    name: "SUBACK with a refused filter",
    version: 4,
    bytes: bytes(
      0x90, 5, // SUBACK, remaining length 5
      0, 1, // packet identifier 1
      1, 2, 0x80, // granted QoS 1, QoS 2, failure
    ),
    decoded: parsed(5, { cmd: "suback", messageId: 1, granted: [1, 2, 0x80] }),
    packet: { cmd: "suback", messageId: 1, granted: [1, 2, 0x80] },
  },
  {
    name: "UNSUBSCRIBE with two filters",
    version: 4,
    bytes: bytes(
      0xa2, 10, // UNSUBSCRIBE (flags 0010), remaining length 10
      0, 2, // packet identifier 2
      0, 3, "a/+", // filter
      0, 1, "#", // filter
    ),
    decoded: parsed(10, { cmd: "unsubscribe", messageId: 2, unsubscriptions: ["a/+", "#"] }, { qos: 1 }),
    packet: { cmd: "unsubscribe", messageId: 2, unsubscriptions: ["a/+", "#"] },
  },
  {
    name: "UNSUBACK",
    version: 4,
    bytes: bytes(0xb0, 2, 0, 2), // UNSUBACK, remaining length 2, packet identifier 2
    decoded: parsed(2, { cmd: "unsuback", messageId: 2 }),
    packet: { cmd: "unsuback", messageId: 2, granted: [] },
  },
  {
    name: "PINGREQ",
    version: 4,
    bytes: bytes(0xc0, 0),
    decoded: parsed(0, { cmd: "pingreq" }),
    packet: { cmd: "pingreq" },
  },
  {
    name: "PINGRESP",
    version: 4,
    bytes: bytes(0xd0, 0),
    decoded: parsed(0, { cmd: "pingresp" }),
    packet: { cmd: "pingresp" },
  },
  {
    name: "DISCONNECT",
    version: 4,
    bytes: bytes(0xe0, 0),
    decoded: parsed(0, { cmd: "disconnect" }),
    packet: { cmd: "disconnect" },
  },
];

function decodeOk(frame: Uint8Array, version: ProtocolVersion): Packet {
  const r = decodePacket(frame, version);
  if (!r.ok) throw new Error(`decode failed: ${r.error}`);
  return r.packet;
}

describe("codec vectors", () => {
  for (const v of VECTORS) {
    describe(v.name, () => {
      it("decodes", () => {
        expect(decodeOk(v.bytes, v.version)).toEqual(v.decoded);
      });
      it("encodes", () => {
        expect(Buffer.from(encodePacket(v.packet, v.version))).toEqual(Buffer.from(v.bytes));
      });
      it("round-trips", () => {
        const again = encodePacket(decodeOk(encodePacket(v.packet, v.version), v.version), v.version);
        expect(Buffer.from(again)).toEqual(Buffer.from(v.bytes));
      });
    });
  }
});

describe("decodePacket", () => {
  const connects = VECTORS.filter((v) => v.decoded.cmd === "connect");

  it("decodes CONNECT by its own version whatever version is passed", () => {
    for (const v of connects) {
      for (const passed of [3, 4, 5] as const) {
        expect(decodeOk(v.bytes, passed)).toEqual(v.decoded);
      }
    }
  });

  it("does not let a CONNECT change the version of later packets", () => {
    decodeOk(connects.find((v) => v.version === 5)!.bytes, 4);
    // A 4-byte PUBACK read as 5.0 would grow a reasonCode.
    expect(decodeOk(bytes(0x40, 2, 0, 10), 4)).not.toHaveProperty("reasonCode");
    expect(decodeOk(bytes(0x40, 2, 0, 10), 5)).toHaveProperty("reasonCode", 0);
  });

  const MALFORMED: Array<[string, ProtocolVersion, Uint8Array]> = [
    ["bad protocol name", 4, bytes(0x10, 12, 0, 4, "MQTX", 4, 0x02, 0, 30, 0, 0)],
    ["bad protocol level", 4, bytes(0x10, 12, 0, 4, "MQTT", 9, 0x02, 0, 30, 0, 0)],
    ["CONNECT reserved flag set [MQTT-3.1.2-3]", 4, bytes(0x10, 12, 0, 4, "MQTT", 4, 0x03, 0, 30, 0, 0)],
    ["SUBSCRIBE with reserved header bits 0000 [MQTT-3.8.1-1]", 4, bytes(0x80, 6, 0, 1, 0, 1, "a", 0)],
    ["SUBSCRIBE requesting QoS 3", 4, bytes(0x82, 6, 0, 1, 0, 1, "a", 3)],
    ["PUBLISH with both QoS bits set [MQTT-3.3.1-4]", 4, bytes(0x36, 5, 0, 1, "a", 0, 1)],
    ["packet type 0", 4, bytes(0x00, 0)],
    ["packet type 15 (AUTH) in 3.1.1", 4, bytes(0xf0, 0)],
    ["PUBACK too short for its packet identifier", 4, bytes(0x40, 1, 0)],
    ["PUBLISH topic longer than the packet", 4, bytes(0x30, 3, 0, 9, "a")],
    ["5.0 PUBLISH with unknown property", 5, bytes(0x30, 6, 0, 1, "a", 2, 0x7f, 0)],
    ["5.0 PUBLISH with truncated string property", 5, bytes(0x30, 8, 0, 1, "a", 3, 0x03, 0, 5, "A")],
    ["5.0 PUBLISH with duplicated property", 5, bytes(0x30, 9, 0, 1, "a", 4, 0x01, 1, 0x01, 0, "A")],
    ["5.0 DISCONNECT with invalid reason code", 5, bytes(0xe0, 1, 0x03)],
    ["trailing bytes after the packet", 4, bytes(0xc0, 0, 0xc0, 0)],
    ["incomplete packet", 4, bytes(0x30, 5, 0, 1)],
    ["single byte", 4, bytes(0xc0)],
    ["empty frame", 4, bytes()],
  ];

  for (const [name, version, frame] of MALFORMED) {
    it(`rejects ${name}`, () => {
      const r = decodePacket(frame, version);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error.length).toBeGreaterThan(0);
      // The parser must be usable after every failure.
      expect(decodeOk(bytes(0x40, 2, 0, 10), version)).toMatchObject({ cmd: "puback", messageId: 10 });
    });
  }

  it("keeps decoding after a failure that left the parser mid-packet", () => {
    const pub = encodePacket({ cmd: "publish", qos: 1, dup: false, retain: false, topic: "a/b", messageId: 7, payload: Buffer.from("hello") }, 4);
    expect(decodePacket(bytes(0x82, 6, 0, 1, 0, 1, "a", 3), 4).ok).toBe(false);
    expect(decodeOk(pub, 4)).toMatchObject({ topic: "a/b", messageId: 7, payload: Buffer.from("hello") });
    expect(decodeOk(pub, 4)).toMatchObject({ topic: "a/b", messageId: 7 });
  });
});

describe("protocol rules at the codec boundary", () => {
  const PUBACK = bytes(0x40, 2, 0, 10);
  const label = (c: WireCase): string => `${c.name} (v${c.version}: ${hex(c.bytes)})`;

  describe("refuses each malformed case with its rule id", () => {
    for (const c of MALFORMED) {
      it(label(c), () => {
        const r = decodePacket(c.bytes, c.version);
        expect(r.ok).toBe(false);
        if (r.ok) return;
        expect(r.error).toContain(`[${c.spec}]`);
        expect(r.unsupportedLevel).toBeUndefined();
        expect(r.protocolError).toBeUndefined();
        // The cached parser still works afterwards.
        expect(decodeOk(PUBACK, c.version)).toMatchObject({ cmd: "puback", messageId: 10 });
      });
    }
  });

  describe("refuses each well-formed packet that breaks a protocol rule as a protocol error, not malformed", () => {
    for (const c of PROTOCOL_ERRORS) {
      it(label(c), () => {
        const r = decodePacket(c.bytes, c.version);
        expect(r).toMatchObject({ ok: false, protocolError: true });
        if (!r.ok) expect(r.error).toContain(`[${c.spec}]`);
        expect(decodeOk(PUBACK, c.version)).toMatchObject({ cmd: "puback", messageId: 10 });
      });
    }
  });

  describe("still decodes each rule's valid neighbours", () => {
    for (const c of VALID_NEIGHBOURS) {
      it(label(c), () => {
        decodeOk(c.bytes, c.version);
      });
    }
  });

  it("has a valid neighbour for every rule", () => {
    const neighboured = new Set(VALID_NEIGHBOURS.map((c) => c.spec));
    for (const c of [...MALFORMED, ...PROTOCOL_ERRORS]) expect(neighboured, c.spec).toContain(c.spec);
  });

  describe("reports an unsupported protocol level apart from malformed packets", () => {
    for (const c of UNSUPPORTED_LEVELS) {
      it(label(c), () => {
        const r = decodePacket(c.bytes, c.version);
        const level = c.bytes[4 + ((c.bytes[2]! << 8) | c.bytes[3]!)]; // after the 1-byte length and the name
        expect(r).toMatchObject({ ok: false, unsupportedLevel: true, protocolLevel: level });
        if (!r.ok) expect(r.error).toContain(`[${c.spec}]`);
      });
    }
  });

  describe("decodes packets only a server sends (the session refuses them)", () => {
    for (const c of SERVER_ONLY) {
      it(label(c), () => {
        decodeOk(c.bytes, c.version);
      });
    }
  });

  it("keeps the decoded strings of valid multi-byte topics exact", () => {
    for (const topic of ["é/€/😀", "a/\uFFFD", "\uFEFFa/\u{10FFFF}"]) {
      expect(decodeOk(publish({ topic }), 4)).toMatchObject({ topic });
    }
  });

  it("reads the decoded string of every field it validates", () => {
    // One bad field among several valid ones is found wherever it sits.
    const fields = ["client", "will", "user"] as const;
    for (const bad of fields) {
      const raw = (f: (typeof fields)[number]): number[] | string => (f === bad ? [0x61, 0xff] : f);
      const frame = bytes(
        0x10, 0, // length patched below
        0, 4, "MQTT", 4, 0xc6, 0, 60,
        ...lp(raw("client")), ...lp(raw("will")), ...lp("p"), ...lp(raw("user")), ...lp("pw"),
      );
      frame[1] = frame.length - 2;
      const r = decodePacket(frame, 4);
      expect(r.ok).toBe(false);
      if (!r.ok) expect(r.error).toMatch(/^\[MQTT-1\.5\.3-1\]: (client identifier|will topic|user name) /);
    }
  });
});

/** Length-prefixed field for {@link bytes}. */
function lp(value: string | number[]): Array<number | string> {
  const raw = typeof value === "string" ? Array.from(Buffer.from(value)) : value;
  return [raw.length >> 8, raw.length & 0xff, ...raw];
}

describe("encodePacket", () => {
  describe("writes the canonical short MQTT 5 acknowledgements (the shared table)", () => {
    for (const c of CANONICAL) {
      it(`${c.name} [${c.spec}]: ${hex(c.bytes)}`, () => {
        expect(hex(encodePacket(c.packet, c.version))).toBe(hex(c.bytes));
        // Each decodes back to what it says.
        const back = decodeOk(c.bytes, c.version);
        expect(back.cmd).toBe(c.packet.cmd);
        expect(back.messageId).toBe(c.packet.messageId);
      });
    }
  });

  it("throws instead of emitting a truncated packet", () => {
    expect(() => encodePacket({ cmd: "puback", messageId: 70000 }, 4)).toThrow();
    expect(() => encodePacket({ cmd: "publish", qos: 1, dup: false, retain: false, topic: "t", payload: "x" }, 4)).toThrow();
  });
});

/** Feeds chunks through readFrames the way a connection does, carrying `rest`. */
function feed(chunks: Uint8Array[], max = 1 << 20): Uint8Array[] {
  const out: Uint8Array[] = [];
  let pending: Uint8Array = new Uint8Array(0);
  for (const chunk of chunks) {
    const r = readFrames(concatBytes(pending, chunk), max);
    expect(r.error).toBeUndefined();
    out.push(...r.frames);
    pending = r.rest;
  }
  expect(pending.length).toBe(0);
  return out;
}

describe("readFrames", () => {
  const big = encodePacket({ cmd: "publish", qos: 1, dup: false, retain: false, topic: "t/x", messageId: 5, payload: Buffer.alloc(300, 0x61) }, 4);

  it("needs at least two bytes and a full length field", () => {
    expect(readFrames(bytes(), 100)).toEqual({ frames: [], rest: bytes() });
    const one = bytes(0x30);
    expect(readFrames(one, 100).rest).toBe(one);
    const partialLength = big.subarray(0, 2); // 300 needs two length bytes
    expect(readFrames(partialLength, 1000)).toEqual({ frames: [], rest: partialLength });
  });

  it("splits two packets coalesced in one chunk", () => {
    const a = VECTORS[5]!.bytes;
    const b = VECTORS[7]!.bytes;
    const r = readFrames(concatBytes(a, b), 1000);
    expect(r.error).toBeUndefined();
    expect(r.frames.map((f) => Buffer.from(f))).toEqual([Buffer.from(a), Buffer.from(b)]);
    expect(r.rest.length).toBe(0);
  });

  it("reassembles a packet split at every offset", () => {
    expect(big[1]! & 0x80).toBe(0x80); // the length field is 2 bytes, so splits fall inside it too
    for (let i = 0; i <= big.length; i++) {
      const frames = feed([big.subarray(0, i), big.subarray(i)]);
      expect(frames.length).toBe(1);
      expect(Buffer.from(frames[0]!)).toEqual(Buffer.from(big));
    }
  });

  it("reassembles a packet split in three chunks", () => {
    for (const [i, j] of [[1, 2], [2, 3], [1, 150], [3, big.length - 1], [100, 200]] as const) {
      const frames = feed([big.subarray(0, i), big.subarray(i, j), big.subarray(j)]);
      expect(frames.map((f) => Buffer.from(f))).toEqual([Buffer.from(big)]);
    }
  });

  it("returns a trailing partial packet as rest", () => {
    const ping = bytes(0xc0, 0);
    const r = readFrames(concatBytes(ping, big.subarray(0, 10)), 1000);
    expect(r.frames.length).toBe(1);
    expect(Buffer.from(r.rest)).toEqual(Buffer.from(big.subarray(0, 10)));
  });

  it("rejects a Remaining Length of more than 4 bytes", () => {
    const r = readFrames(bytes(0xc0, 0, 0x30, 0xff, 0xff, 0xff, 0xff, 0x01), 1 << 30);
    expect(r.error?.kind).toBe("malformed-length");
    expect(r.frames.length).toBe(1); // the PINGREQ before the fault
    expect(r.rest[0]).toBe(0x30);
  });

  it("rejects a packet over the limit from its length field alone", () => {
    // 1 MiB body announced; only 5 bytes present.
    const r = readFrames(bytes(0x30, 0x80, 0x80, 0x40, 0x00), 128 * 1024);
    expect(r.error?.kind).toBe("too-large");
    expect(r.frames).toEqual([]);
  });

  it("accepts a packet of exactly the limit and refuses one byte more", () => {
    const size = big.length;
    expect(readFrames(big, size).error).toBeUndefined();
    expect(readFrames(big, size).frames.length).toBe(1);
    expect(readFrames(big, size - 1).error?.kind).toBe("too-large");
    // Detected before the body arrives, too.
    expect(readFrames(big.subarray(0, 3), size - 1).error?.kind).toBe("too-large");
    expect(readFrames(big.subarray(0, 3), size).error).toBeUndefined();
  });
});

describe("concatBytes", () => {
  it("returns the non-empty side unchanged", () => {
    const a = bytes(1, 2);
    const empty = bytes();
    expect(concatBytes(a, empty)).toBe(a);
    expect(concatBytes(empty, a)).toBe(a);
    expect(Array.from(concatBytes(a, bytes(3)))).toEqual([1, 2, 3]);
  });
});


function randomPacket(rand: () => number): Packet {
  const int = (n: number): number => Math.floor(rand() * n);
  const id = 1 + int(65535);
  const kind = int(6);
  if (kind <= 2) {
    const qos = int(3) as 0 | 1 | 2;
    const payload = Buffer.alloc(int(rand() < 0.2 ? 4096 : 64));
    for (let i = 0; i < payload.length; i++) payload[i] = int(256);
    const topic = `t/${int(1000)}/${"x".repeat(int(40))}`;
    return qos === 0
      ? { cmd: "publish", qos, dup: false, retain: rand() < 0.5, topic, payload }
      : { cmd: "publish", qos, dup: rand() < 0.5, retain: rand() < 0.5, topic, messageId: id, payload };
  }
  if (kind === 3) return { cmd: "puback", messageId: id };
  if (kind === 4) return { cmd: "pingreq" };
  return { cmd: "subscribe", messageId: id, subscriptions: [{ topic: `a/${int(100)}/#`, qos: int(3) as 0 | 1 | 2 }] };
}

describe("stream fuzz", () => {
  it("reassembles ~200 random packets fed in random chunks", () => {
    for (const seed of [1, 2, 3]) {
      const rand = mulberry32(seed);
      const packets = Array.from({ length: 200 }, () => randomPacket(rand));
      const stream = Buffer.concat(packets.map((p) => encodePacket(p, 4)));
      const chunks: Uint8Array[] = [];
      for (let off = 0; off < stream.length; ) {
        const n = 1 + Math.floor(rand() * (rand() < 0.5 ? 16 : 3000));
        chunks.push(stream.subarray(off, off + n));
        off += n;
      }
      const decoded = feed(chunks).map((f) => decodeOk(f, 4));
      expect(decoded.length).toBe(packets.length);
      decoded.forEach((d, i) => expect(d).toMatchObject(packets[i]!));
    }
  });

  it("never throws on random garbage", () => {
    const rand = mulberry32(42);
    const valid = VECTORS.map((v) => v.bytes);
    for (let n = 0; n < 2000; n++) {
      let input: Uint8Array;
      if (n % 2 === 0) {
        input = new Uint8Array(Math.floor(rand() * 64));
        for (let i = 0; i < input.length; i++) input[i] = Math.floor(rand() * 256);
      } else {
        // Mutate a valid vector so the parser gets past the header more often.
        input = Uint8Array.from(valid[Math.floor(rand() * valid.length)]!);
        for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) input[Math.floor(rand() * input.length)] = Math.floor(rand() * 256);
      }
      const version = (3 + Math.floor(rand() * 3)) as ProtocolVersion;
      expect(() => {
        const r = readFrames(input, 4096);
        for (const f of r.frames) decodePacket(f, version);
        decodePacket(input, version);
      }).not.toThrow();
    }
    // Parsers still work afterwards.
    for (const v of VECTORS) expect(decodeOk(v.bytes, v.version)).toEqual(v.decoded);
  });
});

describe("PUBLISH written directly (the delivery hot path)", () => {
  it("is byte for byte what mqtt-packet's generate() writes, for 3.1, 3.1.1 and 5.0 without properties", () => {
    let seed = 7;
    const rand = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const topics = ["a", "a/b/c", "é/ü/漢字", "$SYS/mon/x", "t/".repeat(100) + "end", "x".repeat(300)];
    const sizes = [0, 1, 100, 127, 128, 16_383, 16_384, 70_000];
    for (const version of [3, 4, 5] as const) {
      for (let i = 0; i < 200; i++) {
        const qos = rand(3) as 0 | 1 | 2;
        const packet: mqttPacket.IPublishPacket = {
          cmd: "publish",
          topic: topics[rand(topics.length)] ?? "a",
          payload: Buffer.alloc(sizes[rand(sizes.length)] ?? 0, rand(256)),
          qos,
          retain: rand(2) === 1,
          dup: qos > 0 && rand(2) === 1,
          ...(qos > 0 ? { messageId: 1 + rand(65535) } : {}),
        };
        const ours = Buffer.from(encodePacket(packet, version));
        const theirs = mqttPacket.generate(packet, { protocolVersion: version });
        expect(ours.equals(theirs), `${version} ${JSON.stringify({ ...packet, payload: packet.payload.length })}`).toBe(true);
      }
    }
  });

  it("leaves what it does not write to generate(): properties, out-of-range ids", () => {
    const withProps: mqttPacket.IPublishPacket = { cmd: "publish", topic: "a", payload: Buffer.from("x"), qos: 1, retain: false, dup: false, messageId: 3, properties: { contentType: "text/plain" } };
    expect(Buffer.from(encodePacket(withProps, 5)).equals(mqttPacket.generate(withProps, { protocolVersion: 5 }))).toBe(true);
    expect(() => encodePacket({ cmd: "publish", topic: "a", payload: Buffer.from("x"), qos: 1, retain: false, dup: false, messageId: 70_000 }, 4)).toThrow();
  });
});

describe("PUBLISH read directly (the publish hot path)", () => {
  /** The result without the prototype (mqtt-packet's Packet class) and with the payload as bytes, for comparing. */
  const plain = (r: ReturnType<typeof decodePacket>): unknown =>
    r.ok ? { ...r.packet, ...("payload" in r.packet && r.packet.payload != null ? { payload: Buffer.from(r.packet.payload).toString("base64") } : {}) } : r;

  it("gives what mqtt-packet and the rules give, for 2,400 random PUBLISH frames, valid and broken, on 3.1, 3.1.1 and 5.0", () => {
    const rand = mulberry32(20261201);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)] as T;
    const topics = ["a", "a/b/c", "bench/in/7", "$SYS/mon/x", "", "é/ü", "a\u0000b", "t/".repeat(200) + "end"];
    const sizes = [0, 1, 64, 127, 128, 16_384, 20_000];
    let direct = 0;
    for (const version of [3, 4, 5] as const) {
      for (let i = 0; i < 800; i++) {
        const qos = pick([0, 1, 2] as const);
        const packet: mqttPacket.IPublishPacket = {
          cmd: "publish", topic: pick(topics), payload: Buffer.alloc(pick(sizes), Math.floor(rand() * 256)), qos,
          retain: rand() < 0.5, dup: qos > 0 && rand() < 0.5, ...(qos > 0 ? { messageId: rand() < 0.1 ? 0 : 1 + Math.floor(rand() * 65535) } : {}),
          ...(version === 5 && rand() < 0.3 ? { properties: pick([{ contentType: "text/plain" }, { payloadFormatIndicator: true }, { messageExpiryInterval: 5 }]) } : {}),
        };
        let frame: Uint8Array;
        try {
          frame = new Uint8Array(mqttPacket.generate(packet, { protocolVersion: version }));
        } catch {
          continue; // a packet id mqtt-packet will not write
        }
        // Broken variants: a flipped fixed-header bit, a cut frame, a topic length past the end, a stray byte.
        const variant = Math.floor(rand() * 6);
        if (variant === 1) frame[0] = frame[0]! ^ (1 << Math.floor(rand() * 4));
        if (variant === 2 && frame.length > 3) frame = frame.slice(0, 2 + Math.floor(rand() * (frame.length - 2)));
        if (variant === 3 && frame.length > 4) frame[frame[1]! & 0x80 ? 3 : 2] = 0xff;
        if (variant === 4 && frame.length > 5) frame[frame.length - 1 - Math.floor(rand() * 3)] = pick([0x00, 0x80, 0xc3, 0xff]);
        const ours = decodePacket(frame, version);
        const theirs = decodeThroughParser(frame, version);
        expect(plain(ours), `${version} variant ${variant} ${Buffer.from(frame.subarray(0, 24)).toString("hex")}`).toEqual(plain(theirs));
        if (ours.ok && (ours.packet.cmd !== "publish" || ours.packet.properties === undefined)) direct++;
      }
    }
    expect(direct).toBeGreaterThan(500); // the direct path was taken, not only the fallback
  }, 60_000);

  it("acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP) read directly give what the parser gives, for every first byte, length and packet id shape", () => {
    const rand = mulberry32(20261202);
    let direct = 0;
    for (const version of [3, 4, 5] as const) {
      for (let first = 0x40; first <= 0x7f; first++) {
        for (const body of [[0, 1], [0, 0], [0xff, 0xff], [1, 2, 0], [1, 2, 0x10], [1, 2, 0x80, 0], [1]]) {
          for (const len of [body.length, body.length + 1]) {
            const frame = new Uint8Array([first, len, ...body].slice(0, 2 + Math.max(body.length, 0)));
            const ours = decodePacket(frame, version);
            const theirs = decodeThroughParser(frame, version);
            expect(plain(ours), `${version} ${Buffer.from(frame).toString("hex")}`).toEqual(plain(theirs));
            if (ours.ok) direct++;
          }
        }
        const pid = 1 + Math.floor(rand() * 65535);
        const frame = new Uint8Array([first, 2, pid >> 8, pid & 0xff]);
        expect(plain(decodePacket(frame, version))).toEqual(plain(decodeThroughParser(frame, version)));
      }
    }
    expect(direct).toBeGreaterThan(20);
  });
});
