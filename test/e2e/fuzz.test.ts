/**
 * Bounded, seeded, repeatable fuzz of the broker over real WebSockets (issue 5 acceptance).
 *
 * Many hostile connections (8 at a time), each: a valid anonymous CONNECT, then a stream of
 * mutated and malformed packets (bit flips, truncations, random length fields, random packet
 * types and flags, strings with bad bytes, garbage, the shared malformed table), cut into
 * WebSocket frames at random points, until the broker closes it or its budget is spent.
 * Meanwhile a control pair (JWT identities of another account, MQTT.js, QoS 1, persistent
 * subscriber) exchanges a numbered sequence. Pass: the control subscriber gets every number,
 * in order of first receipt; every hostile connection was closed by the broker or still answers
 * PINGREQ; the broker logged no error and no uncaught exception.
 *
 * Each connection's packets come from its own PRNG (seed FUZZ_SEED, default below, mixed with
 * the connection's index), so a run is repeatable whatever the timing; FUZZ_PACKETS changes the
 * bound (default 10,000 hostile packets).
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type { MqttClient } from "mqtt";
import { RawClient } from "../helpers/raw";
import { connectCollecting, end, sleep, waitFor } from "../helpers/mqtt";
import { mintToken } from "../helpers/admin";
import { mulberry32 } from "../helpers/random";
import { TEST_VARS, startBroker, stopBroker, type Broker } from "../helpers/broker";
import { MALFORMED, SERVER_ONLY, UNSUPPORTED_LEVELS } from "../helpers/malformed";
import { bytes, connect, frame, publish, subscribe, u16, unsubscribe, varint } from "../helpers/bytes";

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed2026);
const TARGET_PACKETS = Number(process.env.FUZZ_PACKETS ?? 10_000);
const CONCURRENCY = 8;
/** Hostile packets per connection, at most (drawn per connection from 4..MAX_BUDGET). */
const MAX_BUDGET = 64;
/** The broker's default packet limit (config.ts: payload + topic + headers + 8 KiB). */
const MAX_PACKET_BYTES = 131072 + 256 + 5 + 2 + 2 + 8 * 1024;

type Rng = () => number;
const int = (r: Rng, lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
const pick = <T>(r: Rng, items: readonly T[]): T => items[Math.floor(r() * items.length)] as T;
const chance = (r: Rng, p: number): boolean => r() < p;
const randomBytes = (r: Rng, n: number): number[] => Array.from({ length: n }, () => int(r, 0, 255));

// ------------------------------------------------------------------ packet generators

const WORDS = ["f", "a", "b", "x1", "dev", "t", "é", "€", "😀", "$x"];

function topicName(r: Rng): string {
  const levels = Array.from({ length: int(r, 1, 4) }, () => pick(r, WORDS));
  return `f/${levels.join("/")}`;
}

function topicFilter(r: Rng): string {
  const levels = Array.from({ length: int(r, 1, 3) }, () => (chance(r, 0.2) ? "+" : pick(r, WORDS)));
  return `f/${levels.join("/")}${chance(r, 0.2) ? "/#" : ""}`;
}

/** Bytes a mutated string is made of: separators, wildcards, U+0000, bytes invalid in UTF-8, multi-byte starts. */
const STRING_BYTES = [0x00, 0xff, 0xfe, 0xc0, 0xc1, 0x80, 0xbf, 0xed, 0xa0, 0xf4, 0x90, 0xe2, 0x2f, 0x2b, 0x23, 0x24, 0x61, 0x62, 0x20];

function hostileString(r: Rng): number[] {
  if (chance(r, 0.1)) return [];
  return Array.from({ length: int(r, 1, 12) }, () => (chance(r, 0.6) ? pick(r, STRING_BYTES) : int(r, 0, 255)));
}

/** Protocol level of a hostile connection: 3.1.1 mostly, some MQTT 5 (packets then carry property blocks). */
type Version = 4 | 5;

/** A valid packet a client may send after CONNECT. */
function validPacket(r: Rng, v: Version): Uint8Array {
  const id = int(r, 1, 65535);
  switch (int(r, 0, 9)) {
    case 0:
    case 1:
    case 2: {
      const payload = randomBytes(r, chance(r, 0.1) ? int(r, 128, 400) : int(r, 0, 24));
      return publish({ topic: topicName(r), qos: int(r, 0, 2), id, payload, version: v });
    }
    case 3:
      return subscribe(id, Array.from({ length: int(r, 1, 3) }, () => [topicFilter(r), int(r, 0, 2)] as const), v);
    case 4:
      return unsubscribe(id, Array.from({ length: int(r, 1, 2) }, () => topicFilter(r)), v);
    case 5:
    case 6:
      return frame(0x40, u16(id)); // PUBACK for an id that may not exist
    case 7:
      return frame(0x50, u16(id)); // PUBREC
    case 8:
      return frame(0x62, u16(id)); // PUBREL
    default:
      return frame(0x70, u16(id)); // PUBCOMP
  }
}

/** Splits a frame into its first byte, Remaining Length bytes and body (for well-formed frames). */
function parts(p: Uint8Array): { first: number; body: Uint8Array } {
  let pos = 1;
  while (pos < p.length && pos < 5 && (p[pos]! & 0x80) !== 0) pos++;
  return { first: p[0]!, body: p.subarray(pos + 1) };
}

/** The shared malformed table per session version (CONNECT cases arrive as a second CONNECT). */
const table = (v: Version): Uint8Array[] =>
  [...MALFORMED, ...SERVER_ONLY].filter((c) => (v === 5 ? c.version === 5 : c.version !== 5)).concat(UNSUPPORTED_LEVELS).map((c) => c.bytes);
const TABLES: Record<Version, Uint8Array[]> = { 4: table(4), 5: table(5) };

/** Valid UTF-8 strings the topic rules refuse or that are unusual: wildcards in odd places, `$`, empty levels, long. */
const ODD_STRINGS = ["", "/", "//", "a+", "+a", "#/a", "a/#/b", "a//b", "$share/g/f/#", "$share/g", "$SYS/x", "f/\uFFFD", "f/\u{10FFFF}", "f/ /x", "f/" + "x/".repeat(20), "f/" + "é".repeat(140)];

/**
 * A mutation the broker answers without closing (most of the time): flags, ids, QoS and
 * strings changed within what the rules allow, or filters it refuses with SUBACK 0x80.
 */
function toleratedPacket(r: Rng, v: Version): { kind: string; bytes: Uint8Array } {
  const id = int(r, 1, 65535);
  switch (int(r, 0, 5)) {
    case 0: {
      // PUBLISH with random DUP / QoS 0-2 (RETAIN rarely: retained messages pile up), odd but valid topic.
      const qos = int(r, 0, 2);
      const flags = (chance(r, 0.5) ? 0x08 : 0) | (qos << 1) | (chance(r, 0.05) ? 1 : 0);
      const topic = chance(r, 0.5) ? topicName(r) : `f/${pick(r, ODD_STRINGS).replace(/[+#]/g, "x") || "e"}`;
      return { kind: "publish flags/strings", bytes: publish({ topic, qos, id, flags, payload: randomBytes(r, int(r, 0, 64)), version: v }) };
    }
    case 1:
    case 2:
      // SUBSCRIBE with odd filters: SUBACK 0x80 for the invalid ones.
      return { kind: "odd filters", bytes: subscribe(id, Array.from({ length: int(r, 1, 4) }, () => [chance(r, 0.6) ? pick(r, ODD_STRINGS) : topicFilter(r), int(r, 0, 2)] as const), v) };
    case 3:
      return { kind: "odd unsubscribe", bytes: unsubscribe(id, Array.from({ length: int(r, 1, 3) }, () => pick(r, ODD_STRINGS) || "x"), v) };
    case 4:
      // Acknowledgements for packet ids the broker never used.
      return { kind: "unknown ids", bytes: frame(pick(r, [0x40, 0x50, 0x62, 0x70]), u16(id)) };
    default:
      // A valid packet with a payload size that needs a 2- or 3-byte Remaining Length.
      return { kind: "long lengths", bytes: publish({ topic: topicName(r), qos: int(r, 0, 1), id, payload: randomBytes(r, chance(r, 0.95) ? int(r, 128, 2_000) : int(r, 16_384, 40_000)), version: v }) };
  }
}

/** A mutated or malformed packet; `kind` names the mutation for the report. */
function hostilePacket(r: Rng, v: Version): { kind: string; bytes: Uint8Array } {
  const base = validPacket(r, v);
  const n = int(r, 0, 99);
  if (n < 20) {
    const out = base.slice();
    for (let i = int(r, 1, 3); i > 0; i--) {
      const at = int(r, 0, out.length - 1);
      out[at] = (out[at] ?? 0) ^ (1 << int(r, 0, 7));
    }
    return { kind: "bit flip", bytes: out };
  }
  if (n < 28) {
    // Truncated: the header still announces the full length, so the stream desynchronizes.
    return { kind: "truncated (stream desync)", bytes: base.subarray(0, int(r, 1, Math.max(1, base.length - 1))).slice() };
  }
  if (n < 36) {
    // Truncated body with a consistent header: a field runs past the end of the packet.
    const { first, body } = parts(base);
    return { kind: "truncated body", bytes: frame(first, body.subarray(0, int(r, 0, Math.max(0, body.length - 1)))) };
  }
  if (n < 46) {
    // A random Remaining Length: shorter, longer, non-minimal, 5 bytes, or huge.
    const { first, body } = parts(base);
    const len = pick(r, [
      () => varint(int(r, 0, body.length + 64)),
      () => [0x80 | int(r, 0, 127), 0x00], // non-minimal encoding
      () => [0xff, 0xff, 0xff, 0xff, int(r, 0, 127)], // 5 bytes
      () => varint(int(r, MAX_PACKET_BYTES + 1, 268_435_455)), // over the packet limit
      () => [int(r, 0x80, 0xff)], // a continuation bit and nothing after
    ])();
    return { kind: "random length", bytes: Uint8Array.from([first, ...len, ...body]) };
  }
  if (n < 56) {
    const out = base.slice();
    out[0] = chance(r, 0.5) ? int(r, 0, 255) : (out[0]! & 0xf0) | int(r, 0, 15);
    return { kind: "random type/flags", bytes: out };
  }
  if (n < 70) {
    const s = hostileString(r);
    const id = int(r, 0, 3);
    const b = pick(r, [
      () => publish({ topic: s, qos: int(r, 0, 2), id, payload: randomBytes(r, int(r, 0, 8)), version: v }),
      () => subscribe(int(r, 1, 9), [[s, int(r, 0, 3)]], v),
      () => unsubscribe(int(r, 1, 9), [s], v),
      () => connect({ clientId: s }),
    ])();
    return { kind: "mutated string", bytes: b };
  }
  if (n < 80) return { kind: "garbage", bytes: Uint8Array.from(randomBytes(r, int(r, 1, 40))) };
  if (n < 92) return { kind: "malformed table", bytes: pick(r, TABLES[v]) };
  if (n < 96) {
    // A valid packet with a field swapped for a random one.
    const id = chance(r, 0.5) ? 0 : int(r, 1, 65535);
    return { kind: "mutated field", bytes: publish({ topic: topicName(r), qos: int(r, 0, 3), id, flags: int(r, 0, 15), version: v }) };
  }
  // A header announcing a body that never comes: small (zeros complete it) or over the packet limit.
  const announced = chance(r, 0.5) ? int(r, 1, 2_000) : int(r, MAX_PACKET_BYTES + 1, 268_435_455);
  return { kind: "header only", bytes: Uint8Array.from([0x30 | int(r, 0, 15), ...varint(announced)]) };
}

type FramingState = { state: "complete" } | { state: "partial"; need: number } | { state: "broken" };

/**
 * What the broker's framing (codec.ts readFrames) makes of the bytes sent so far: at a packet
 * boundary, waiting for `need` more bytes, or broken (a Remaining Length over 4 bytes or over
 * the packet limit: the broker closes). Incremental: complete packets are dropped as they pass.
 */
class Framer {
  private pending: Uint8Array = new Uint8Array(0);
  private broken = false;

  push(chunk: Uint8Array): void {
    if (this.broken) return;
    this.pending = this.pending.length === 0 ? chunk.slice() : bytes(this.pending, chunk);
    let off = 0;
    while (off < this.pending.length) {
      let remaining = 0;
      let mult = 1;
      let pos = off + 1;
      let lenBytes = 0;
      let complete = false;
      while (pos < this.pending.length) {
        const b = this.pending[pos++]!;
        lenBytes++;
        remaining += (b & 0x7f) * mult;
        if ((b & 0x80) === 0) {
          complete = true;
          break;
        }
        if (lenBytes === 4) {
          this.broken = true;
          return;
        }
        mult *= 128;
      }
      if (!complete) break;
      const total = 1 + lenBytes + remaining;
      if (total > MAX_PACKET_BYTES) {
        this.broken = true;
        return;
      }
      if (off + total > this.pending.length) break;
      off += total;
    }
    this.pending = this.pending.subarray(off);
  }

  state(): FramingState {
    if (this.broken) return { state: "broken" };
    if (this.pending.length === 0) return { state: "complete" };
    // A length field still open: one zero byte ends it (then the body may need more).
    let pos = 1;
    let remaining = 0;
    let mult = 1;
    while (pos < this.pending.length) {
      const b = this.pending[pos++]!;
      remaining += (b & 0x7f) * mult;
      if ((b & 0x80) === 0) return { state: "partial", need: pos + remaining - this.pending.length };
      mult *= 128;
    }
    return { state: "partial", need: 1 };
  }
}

// ------------------------------------------------------------------ one hostile connection

interface ConnResult {
  version: Version;
  packets: number;
  frames: number;
  bytes: number;
  closedByBroker: boolean;
  answeredPing: boolean;
  failure?: string;
}

async function hostileConnection(url: string, index: number, clientId: string, kinds: Map<string, number>): Promise<ConnResult> {
  const r = mulberry32((SEED ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0);
  const budget = int(r, 4, MAX_BUDGET);
  // How likely each packet is a hard mutation (bit flips, garbage, the malformed table, ...):
  // most of those close the connection, the rest keep it going through tolerated mutations.
  const hard = pick(r, [0.06, 0.15, 0.3, 0.5]);
  const v: Version = chance(r, 0.2) ? 5 : 4;
  const result: ConnResult = { version: v, packets: 0, frames: 0, bytes: 0, closedByBroker: false, answeredPing: false };
  const raw = await RawClient.open(url, { version: v });
  const framer = new Framer();
  const send = (b: Uint8Array): void => {
    raw.sendBytes(b);
    framer.push(b);
    result.frames++;
    result.bytes += b.length;
  };
  // Anonymous, clean session; one client id per worker: sessions are reused, not piled up.
  const hello = connect({ clientId, keepAlive: 0, level: v });
  const coalesce = chance(r, 0.15); // CONNECT and the first hostile packets in one frame
  if (!coalesce) {
    send(hello);
    try {
      await raw.next("connack", 15_000);
    } catch (err) {
      return { ...result, failure: `connection ${index}: no CONNACK: ${String(err)}` };
    }
  }
  /**
   * When the broker's framing is at a packet boundary: PINGREQ, then wait for PINGRESP or the
   * close, so the packets before it were handled (and counted honestly). False: neither in 15 s.
   */
  const probe = async (): Promise<boolean> => {
    send(frame(0xc0));
    try {
      await raw.next("pingresp", 15_000);
      result.answeredPing = true;
      return true;
    } catch {
      result.answeredPing = false;
      return raw.closed !== null;
    }
  };
  let first = true;
  // The budget, then one last hard mutation as the finale.
  while (result.packets <= budget && !raw.closed) {
    const group: Uint8Array[] = [];
    for (let i = int(r, 1, 4); i > 0 && result.packets <= budget; i--) {
      if (chance(r, 0.3) && result.packets < budget) group.push(validPacket(r, v));
      else {
        const isHard = result.packets === budget || chance(r, hard);
        const h = isHard ? hostilePacket(r, v) : toleratedPacket(r, v);
        const key = `${isHard ? "hard" : "tolerated"}: ${h.kind}`;
        kinds.set(key, (kinds.get(key) ?? 0) + 1);
        group.push(h.bytes);
        result.packets++;
      }
    }
    if (first && coalesce) group.unshift(hello);
    first = false;
    const stream = bytes(...group);
    // Random frame splits, also inside fixed headers and length fields.
    const cuts = chance(r, 0.4) ? Array.from({ length: int(r, 1, 3) }, () => int(r, 1, Math.max(1, stream.length - 1))).sort((a, b) => a - b) : [];
    let at = 0;
    for (const cut of [...cuts, stream.length]) {
      if (cut <= at) continue;
      send(stream.subarray(at, cut));
      at = cut;
    }
    // Back to a packet boundary (zeros complete a truncated packet or a length field), then
    // PINGREQ: the group was handled before the next one goes, so the counts are honest.
    let state = framer.state();
    for (let i = 0; i < 4 && state.state === "partial" && !raw.closed; i++) {
      send(new Uint8Array(state.need));
      state = framer.state();
    }
    if (raw.closed) break;
    if (state.state === "complete") {
      if (!(await probe())) {
        result.failure = `connection ${index}: neither closed nor answering PINGREQ after ${result.packets} packets`;
        break;
      }
    } else {
      // A Remaining Length over 4 bytes or over the packet limit: the broker must close.
      await raw.waitClosed(15_000).catch(() => {
        result.failure = `connection ${index}: a broken stream (${state.state}) was not closed`;
      });
      break;
    }
  }
  result.closedByBroker = raw.closed !== null;
  raw.close();
  return result;
}

// ------------------------------------------------------------------ the test

let broker: Broker;

beforeAll(async () => {
  broker = await startBroker({ vars: TEST_VARS });
}, 90_000);

afterAll(async () => {
  if (broker) await stopBroker(broker);
});

describe("fuzz", () => {
  it(`${TARGET_PACKETS} mutated/malformed packets over many connections; a QoS 1 control pair loses nothing; no Durable Object error`, async () => {
    const started = Date.now();
    // Control pair: another account, JWT identities, MQTT.js, persistent subscriber, QoS 1.
    const token = async (sub: string): Promise<string> => mintToken("ctl", sub, { url: broker.url });
    const subToken = await token("ctl-sub");
    const subscriber = await connectCollecting(
      { clientId: "ctl-sub", username: "ctl-sub", password: subToken, clean: false, reconnectPeriod: 1000 },
      broker.wsUrl,
    );
    await subscriber.client.subscribeAsync("ctl/seq", { qos: 1 });
    const publisher: MqttClient = (
      await connectCollecting({ clientId: "ctl-pub", username: "ctl-pub", password: await token("ctl-pub"), reconnectPeriod: 1000 }, broker.wsUrl)
    ).client;
    let reconnects = 0;
    subscriber.client.on("reconnect", () => reconnects++);
    publisher.on("reconnect", () => reconnects++);

    let fuzzing = true;
    let published = 0;
    const control = (async () => {
      // About 40 a second at most: well under the 100/s publish limit.
      while (fuzzing) {
        await publisher.publishAsync("ctl/seq", String(++published), { qos: 1 });
        await sleep(25);
      }
    })();

    // Hostile connections, CONCURRENCY at a time, until TARGET_PACKETS hostile packets are out.
    const kinds = new Map<string, number>();
    const results: ConnResult[] = [];
    let next = 0;
    let packets = 0;
    const worker = async (w: number): Promise<void> => {
      while (packets < TARGET_PACKETS) {
        // A client id per connection: reusing a few would run into the connect rate per client id.
        const index = next++;
        const res = await hostileConnection(broker.wsUrl, index, `fuzz-${w}-${index}`, kinds);
        packets += res.packets;
        results.push(res);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, (_, w) => worker(w)));
    fuzzing = false;
    await control;
    const fuzzMs = Date.now() - started;

    // The control subscriber got every number; first receipts in order.
    const firsts: number[] = [];
    const seen = new Set<number>();
    const collectFirsts = (): void => {
      firsts.length = 0;
      seen.clear();
      for (const m of subscriber.got) {
        const n = Number(m.payload);
        if (!seen.has(n)) {
          seen.add(n);
          firsts.push(n);
        }
      }
    };
    await waitFor(() => {
      collectFirsts();
      return seen.size >= published;
    }, `all ${published} control messages (have ${seen.size})`, 20_000).catch((err: unknown) => {
      collectFirsts();
      const missing = Array.from({ length: published }, (_, i) => i + 1).filter((n) => !seen.has(n));
      throw new Error(`${String(err)}; missing: ${missing.slice(0, 50).join(",")}`);
    });
    await end(publisher, subscriber.client);

    const sum = (prefix: string): number => [...kinds].filter(([k]) => k.startsWith(prefix)).reduce((n, [, v]) => n + v, 0);
    const closed = results.filter((x) => x.closedByBroker).length;
    const pinged = results.filter((x) => !x.closedByBroker && x.answeredPing).length;
    const failures = results.flatMap((x) => (x.failure ? [x.failure] : []));
    const out = broker.output().split("\n");
    const errors = out.filter((l) => l.includes('"level":"error"') || l.includes("Uncaught"));
    // Why a control client had to reconnect, if it did (the broker's own lines about it).
    const reloads = out.filter((l) => /reload/i.test(l));
    const controlEnds = out.filter((l) => /"clientId":"ctl-(sub|pub)"/.test(l) && /mqtt\.(close|disconnect)/.test(l));
    console.log(
      [
        `fuzz seed 0x${SEED.toString(16)}: ${packets} hostile packets (+ valid ones in between) in ${results.reduce((n, x) => n + x.frames, 0)} frames, ` +
          `${results.reduce((n, x) => n + x.bytes, 0)} bytes, over ${results.length} connections (${results.filter((x) => x.version === 5).length} MQTT 5) in ${(fuzzMs / 1000).toFixed(1)} s`,
        `  closed by the broker: ${closed}; open and answering PINGREQ at the end: ${pinged}; neither: ${failures.length}`,
        `  hard mutations ${sum("hard")}: ${[...kinds].filter(([k]) => k.startsWith("hard")).map(([k, v]) => `${k.slice(6)} ${v}`).join(", ")}`,
        `  tolerated mutations ${sum("tolerated")}: ${[...kinds].filter(([k]) => k.startsWith("tolerated")).map(([k, v]) => `${k.slice(11)} ${v}`).join(", ")}`,
        `  control: ${published} QoS 1 messages published, ${seen.size} received (${subscriber.got.length} with duplicates), ${reconnects} reconnects`,
        `  broker log: ${out.length} lines, ${errors.length} error lines${reloads.length > 0 ? `; ${reloads.length} wrangler reload line(s) (a source file changed during the run)` : ""}`,
        ...controlEnds.map((l) => `  control client ended: ${l}`),
        ...errors.slice(0, 20).map((l) => `  ERROR: ${l}`),
      ].join("\n"),
    );

    expect(packets).toBeGreaterThanOrEqual(TARGET_PACKETS);
    expect(failures).toEqual([]);
    expect(errors).toEqual([]);
    expect(firsts).toEqual(Array.from({ length: published }, (_, i) => i + 1));
    expect(closed + pinged).toBe(results.length);
    // A hang guard, not a speed check: ~50 s alone, up to three times that on a loaded machine.
  }, 480_000);
});
