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
 *
 * The second test is a hostile-load phase on the same broker (issue 15): seeded tasks, a few at
 * a time, each with its expected answer: frame floods past MAX_PACKETS_PER_FRAME, a frame at
 * the cap, PINGREQ and acknowledgement floods, SUBSCRIBE floods past the filter and
 * subscription limits, publish floods past PUBLISH_BURST, MQTT 5 user properties (and topic
 * levels, client ids) named after Object.prototype members, and a large retained set with
 * wildcard subscribers; meanwhile a second control pair in another account. Pass: every task
 * got its answer and none hung, the control pair lost nothing, no error line in the broker's log
 * during the phase.
 */
import { describe, it, expect, beforeAll, afterAll } from "vitest";
import type { MqttClient } from "mqtt";
import { RawClient } from "../helpers/raw";
import { connectCollecting, end, sleep } from "../helpers/mqtt";
import { mintToken } from "../helpers/admin";
import { mulberry32 } from "../helpers/random";
import { TEST_VARS, startBroker, stopBroker, type Broker } from "../helpers/broker";
import { MALFORMED, SERVER_ONLY, UNSUPPORTED_LEVELS } from "../helpers/malformed";
import type { Packet } from "mqtt-packet";
import { bytes, connect, frame, prop, props, publish, str, subscribe, u16, unsubscribe, utf8, varint } from "../helpers/bytes";
import { DEFAULT_LIMITS } from "../../src/config";

const SEED = Number(process.env.FUZZ_SEED ?? 0x5eed2026);
const TARGET_PACKETS = Number(process.env.FUZZ_PACKETS ?? 10_000);
const CONCURRENCY = 8;
/**
 * Client ids each worker takes in turn: sessions are reused, not piled up, and no id connects
 * anywhere near CONNECT_RATE_PER_CLIENT (1/s, bursts of 10), whose CONNACK 3 would end a
 * connection before its fuzz begins.
 */
const IDS_PER_WORKER = 16;
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
  // Anonymous, clean session; the client id is one of its worker's (IDS_PER_WORKER).
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

// ------------------------------------------------------------------ hostile load (issue 15)

/** The limits the hostile phase runs into: the broker's defaults (TEST_VARS leaves them alone). */
const L = DEFAULT_LIMITS;
/** Names of Object.prototype members: as user property names, topic levels and client ids they are data. */
const POISON_NAMES = ["__proto__", "constructor", "toString", "hasOwnProperty", "valueOf", "__defineGetter__", "prototype"] as const;
/** Hostile tasks at once. */
const HOSTILE_CONCURRENCY = 4;
/** A connection that gets nothing for this long while it waits for an answer is hung (a hang bound, not a timing threshold). */
const HANG_MS = 30_000;

/** What one hostile task saw: `counts` are summed per kind for the summary; `failures` fail the test. */
interface Outcome {
  kind: string;
  connections: number;
  v5: number;
  counts: Record<string, number>;
  failures: string[];
}

const outcome = (kind: string, v5: number, connections = 1): Outcome => ({ kind, connections, v5, counts: {}, failures: [] });
const add = (o: Outcome, key: string, n = 1): void => {
  o.counts[key] = (o.counts[key] ?? 0) + n;
};
const packetsOf = (raw: RawClient, cmd: Packet["cmd"]): number => raw.packets.reduce((n, p) => (p.cmd === cmd ? n + 1 : n), 0);
const versionOf = (r: Rng, p5: number): Version => (chance(r, p5) ? 5 : 4);

/** Polls `pred` until it holds (true) or `ms` pass (false). */
async function until(pred: () => boolean, ms = HANG_MS): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) return false;
    await sleep(20);
  }
  return true;
}

/**
 * Polls until `done` holds (true), or until `progress` (a count of what has arrived) stays the
 * same for HANG_MS (false: hung). A slow broker is not hung as long as answers keep coming.
 */
async function untilStalled(done: () => boolean, progress: () => number): Promise<boolean> {
  let last = progress();
  let at = Date.now();
  while (!done()) {
    await sleep(20);
    const now = progress();
    if (now !== last) {
      last = now;
      at = Date.now();
    } else if (Date.now() - at > HANG_MS) return false;
  }
  return true;
}

/** Closed by the broker within the hang bound? */
const closes = (raw: RawClient): Promise<boolean> => raw.waitClosed(HANG_MS).then(() => true, () => false);

/** A PINGREQ round trip: true when answered, false when the connection closed or hung. */
const answers = (raw: RawClient): Promise<boolean> => raw.pingRoundTrip(HANG_MS).then(() => true, () => false);

/** User name and password of a JWT identity (the user name is also the client id). */
type Credentials = { username: string; password: number[] };

/**
 * A raw connection, anonymous unless `credentials` are given; the CONNECT is built byte by byte
 * (5.0: with `properties`). Throws unless CONNACK 0.
 */
async function openRaw(url: string, clientId: string, v: Version, properties?: number[], credentials?: Credentials): Promise<RawClient> {
  const raw = await RawClient.open(url, { version: v });
  raw.sendBytes(connect({ clientId, keepAlive: 0, level: v, ...(v === 5 ? { properties: properties ?? props() } : {}), ...credentials }));
  const ack = await raw.next("connack", HANG_MS);
  const code = ack.cmd === "connack" ? (v === 5 ? ack.reasonCode : ack.returnCode) : undefined;
  if (code !== 0) throw new Error(`${clientId}: CONNACK ${String(code)}`);
  return raw;
}

/** One 5.0 user property per pair, in order (names may repeat). */
const userPairs = (pairs: ReadonlyArray<readonly [string, string]>): number[] => props(...pairs.map(([k, v]) => prop.user(k, v)));

/**
 * One frame holding more packets than MAX_PACKETS_PER_FRAME (PINGREQ, PUBLISH, SUBSCRIBE or a
 * mix; sometimes behind the CONNECT): refused whole. The connection closes (5.0 after CONNACK:
 * DISCONNECT 0x96), nothing in the frame is answered, and nothing is routed (the `flood/#`
 * watcher checks the last part).
 */
async function frameFlood(url: string, i: number, r: Rng): Promise<Outcome> {
  const v = versionOf(r, 0.3);
  const o = outcome("frame flood", v === 5 ? 1 : 0);
  const n = int(r, L.maxPacketsPerFrame + 1, 4_000);
  const mix = pick(r, ["PINGREQ", "PUBLISH", "SUBSCRIBE", "mixed"] as const);
  const withConnect = chance(r, 0.2);
  const hello = connect({ clientId: `ff-${i}`, keepAlive: 0, level: v });
  const raw = withConnect ? await RawClient.open(url, { version: v }) : await openRaw(url, `ff-${i}`, v);
  const packet = (k: number): Uint8Array => {
    const what = mix === "mixed" ? pick(r, ["PINGREQ", "PUBLISH", "SUBSCRIBE"] as const) : mix;
    if (what === "PINGREQ") return frame(0xc0);
    if (what === "PUBLISH") return publish({ topic: `flood/${i}/${k % 8}`, qos: k % 2, id: (k % 65535) + 1, payload: utf8(String(k)), version: v });
    return subscribe((k % 65535) + 1, [[`flood/${i}/#`, 0]], v);
  };
  raw.sendBytes(bytes(...(withConnect ? [hello] : []), ...Array.from({ length: n }, (_, k) => packet(k))));
  add(o, "packets", n);
  if (withConnect) add(o, "behind CONNECT");
  if (await closes(raw)) add(o, "closed");
  else o.failures.push(`frame flood ${i}: ${n} packets (${mix}, MQTT ${v}${withConnect ? ", behind the CONNECT" : ""}) in one frame, not closed`);
  const answerCmds: Array<Packet["cmd"]> = ["pingresp", "suback", "puback", "publish", ...(withConnect ? (["connack"] as const) : [])];
  const answered = answerCmds.reduce((s, cmd) => s + packetsOf(raw, cmd), 0);
  add(o, "answered", answered);
  if (answered > 0) o.failures.push(`frame flood ${i}: ${answered} packets of a refused frame answered`);
  if (v === 5 && !withConnect) {
    add(o, "5.0 after CONNACK");
    const d = raw.packets.find((p) => p.cmd === "disconnect");
    if (d?.cmd === "disconnect" && d.reasonCode === 0x96) add(o, "DISCONNECT 0x96");
    else o.failures.push(`frame flood ${i}: 5.0, no DISCONNECT 0x96 (${d?.cmd === "disconnect" ? `0x${(d.reasonCode ?? 0).toString(16)}` : "none"})`);
  }
  raw.close();
  return o;
}

/** Exactly MAX_PACKETS_PER_FRAME PINGREQs in one frame: every one answered, the connection stays. */
async function frameAtCap(url: string, i: number, r: Rng): Promise<Outcome> {
  const v = versionOf(r, 0.5);
  const o = outcome("frame at the cap", v === 5 ? 1 : 0);
  const raw = await openRaw(url, `fc-${i}`, v);
  raw.sendBytes(bytes(...Array.from({ length: L.maxPacketsPerFrame }, () => frame(0xc0))));
  await untilStalled(() => raw.closed !== null || packetsOf(raw, "pingresp") >= L.maxPacketsPerFrame, () => raw.packets.length);
  add(o, "answered", packetsOf(raw, "pingresp"));
  if (raw.closed || packetsOf(raw, "pingresp") < L.maxPacketsPerFrame) {
    o.failures.push(`frame at the cap ${i}: ${packetsOf(raw, "pingresp")} of ${L.maxPacketsPerFrame} PINGRESPs, ${raw.closed ? `closed (${raw.closed.code})` : "hung"}`);
  } else if (await answers(raw)) add(o, "open");
  raw.close();
  return o;
}

/**
 * Frames at the cap, one after the other: of PINGREQs, which the packet budget counts (closed
 * once PACKET_BURST is spent faster than PACKET_RATE_PER_SECOND refills it, or all answered if
 * the broker handles them slower than that), or of PUBACK/PUBREC/PUBCOMP for packet ids the
 * broker never used, which it does not count (delivery acknowledgements). Either way: no hang.
 */
async function packetFlood(url: string, i: number, r: Rng, acks: boolean): Promise<Outcome> {
  const v = versionOf(r, 0.3);
  const o = outcome(acks ? "ack flood" : "PINGREQ flood", v === 5 ? 1 : 0);
  const frames = acks ? int(r, 8, 12) : int(r, 6, 10);
  const total = frames * L.maxPacketsPerFrame;
  const raw = await openRaw(url, `${acks ? "af" : "pf"}-${i}`, v);
  const unit = (): Uint8Array => (acks ? frame(pick(r, [0x40, 0x50, 0x70]), u16(int(r, 1, 65535))) : frame(0xc0));
  for (let f = 0; f < frames; f++) raw.sendBytes(bytes(...Array.from({ length: L.maxPacketsPerFrame }, unit)));
  add(o, "packets", total);
  const done = acks ? (await answers(raw)) || raw.closed !== null : await untilStalled(() => raw.closed !== null || packetsOf(raw, "pingresp") >= total, () => raw.packets.length);
  if (raw.closed) add(o, "closed");
  else if (done) add(o, "all answered");
  else o.failures.push(`${o.kind} ${i}: ${total} packets, neither closed nor all answered (${packetsOf(raw, "pingresp")} PINGRESPs)`);
  if (!acks) add(o, "PINGRESPs", packetsOf(raw, "pingresp"));
  raw.close();
  return o;
}

/**
 * SUBSCRIBE floods. One SUBSCRIBE with more filters than MAX_FILTERS_PER_SUBSCRIBE: the ones
 * past it get 0x80 (5.0: 0x97). SUBSCRIBEs of new filters until past MAX_SUBSCRIPTIONS:
 * exactly MAX_SUBSCRIPTIONS granted, the rest refused, in order. Then 500–1,500 SUBSCRIBEs in
 * frames of up to MAX_PACKETS_PER_FRAME (re-subscribing granted filters, or malformed filters):
 * closed past the packet budget, or every one answered if the broker handles them slower than
 * PACKET_RATE_PER_SECOND (then the budget never runs out: each filter of each SUBSCRIBE costs
 * the router a scan of the account's retained messages); no hang.
 */
async function subscribeFlood(url: string, i: number, r: Rng): Promise<Outcome> {
  const v = versionOf(r, 0.3);
  const o = outcome("SUBSCRIBE flood", v === 5 ? 1 : 0);
  const refused = v === 5 ? 0x97 : 0x80;
  const raw = await openRaw(url, `sf-${i}`, v);
  const codes = (p: Packet): unknown[] => (p.cmd === "suback" ? [...p.granted] : []);
  const n = int(r, L.maxFiltersPerSubscribe + 1, 4 * L.maxFiltersPerSubscribe);
  raw.sendBytes(subscribe(1, Array.from({ length: n }, (_, k) => [`sf/${i}/a/${k}`, k % 3] as const), v));
  const wide = codes(await raw.next("suback", HANG_MS));
  const wantWide = Array.from({ length: n }, (_, k) => (k < L.maxFiltersPerSubscribe ? k % 3 : refused));
  if (JSON.stringify(wide) === JSON.stringify(wantWide)) add(o, "filters per SUBSCRIBE as expected");
  else o.failures.push(`SUBSCRIBE flood ${i}: ${n} filters in one SUBSCRIBE: SUBACK ${JSON.stringify(wide)}`);

  const more = Math.ceil((L.maxSubscriptions - L.maxFiltersPerSubscribe) / L.maxFiltersPerSubscribe) + 1;
  raw.sendBytes(bytes(...Array.from({ length: more }, (_, s) => subscribe(2 + s, Array.from({ length: L.maxFiltersPerSubscribe }, (_, k) => [`sf/${i}/b/${s}/${k}`, 1] as const), v))));
  const flat: unknown[] = [];
  for (let s = 0; s < more; s++) flat.push(...codes(await raw.next("suback", HANG_MS)));
  const newGrants = L.maxSubscriptions - L.maxFiltersPerSubscribe;
  const wantFlat = flat.map((_, k) => (k < newGrants ? 1 : refused));
  if (JSON.stringify(flat) === JSON.stringify(wantFlat)) add(o, "subscriptions per session as expected");
  else o.failures.push(`SUBSCRIBE flood ${i}: past MAX_SUBSCRIPTIONS: SUBACK codes ${JSON.stringify(flat)}`);

  const total = int(r, 500, 1_500);
  const per = int(r, 100, L.maxPacketsPerFrame);
  const malformed = chance(r, 0.5);
  const filters = (k: number): Array<readonly [string, number]> =>
    Array.from({ length: 4 }, (_, j) => (malformed ? [`sf/${i}/#/${j}`, 0] as const : [`sf/${i}/a/${(k + j) % L.maxFiltersPerSubscribe}`, 1] as const));
  for (let sent = 0; sent < total; sent += per) {
    raw.sendBytes(bytes(...Array.from({ length: Math.min(per, total - sent) }, (_, k) => subscribe(((sent + k) % 65535) + 1, filters(sent + k), v))));
  }
  add(o, "flood SUBSCRIBEs", total);
  const done = await untilStalled(() => raw.closed !== null || packetsOf(raw, "suback") >= total, () => raw.packets.length);
  if (raw.closed) add(o, "flood closed");
  else if (done && (await answers(raw))) add(o, "flood all answered");
  else o.failures.push(`SUBSCRIBE flood ${i}: ${total} SUBSCRIBEs, neither closed nor all answered (${packetsOf(raw, "suback")} SUBACKs)`);
  raw.close();
  return o;
}

/**
 * More QoS 0 PUBLISHes in one frame than PUBLISH_BURST: closed past the publish budget (or all
 * routed, if the broker is slower than the refill). The `pflood/#` watcher checks that what was
 * routed came in order and nothing past the close.
 */
async function publishFlood(url: string, i: number, r: Rng, sent: Map<number, number>): Promise<Outcome> {
  const v = versionOf(r, 0.3);
  const o = outcome("publish flood", v === 5 ? 1 : 0);
  const n = int(r, L.publishBurst + 50, L.maxPacketsPerFrame);
  const raw = await openRaw(url, `pfl-${i}`, v);
  raw.sendBytes(bytes(...Array.from({ length: n }, (_, k) => publish({ topic: `pflood/${i}`, payload: utf8(`${i}:${k}`), version: v }))));
  sent.set(i, n);
  add(o, "publishes", n);
  if (await closes(raw)) add(o, "closed");
  else if (await answers(raw)) add(o, "all routed");
  else o.failures.push(`publish flood ${i}: neither closed nor answering`);
  raw.close();
  return o;
}

type Pair = readonly [string, string];

/** A received PUBLISH's user properties as [name, values] in first-seen order (mqtt-packet: a null-prototype object, repeated names as arrays). */
function receivedProps(p: Packet): Array<[string, string[]]> {
  const up = p.cmd === "publish" ? p.properties?.userProperties : undefined;
  if (!up) return [];
  return Object.keys(up).map((k): [string, string[]] => {
    const value: unknown = Reflect.get(up, k);
    return [k, Array.isArray(value) ? value.map(String) : [String(value)]];
  });
}

/** The same shape from the pairs sent. */
function sentProps(pairs: readonly Pair[]): Array<[string, string[]]> {
  const m = new Map<string, string[]>();
  for (const [k, v] of pairs) m.set(k, [...(m.get(k) ?? []), v]);
  return [...m];
}

const payloadOf = (p: Packet): string => (p.cmd === "publish" ? Buffer.from(p.payload).toString() : "");
const topicOf = (p: Packet): string => (p.cmd === "publish" ? p.topic : "");

/**
 * MQTT 5 PUBLISHes whose user properties are named after Object.prototype members (repeated,
 * interleaved), on topics whose levels are such names, from a client whose CONNECT and
 * SUBSCRIBE carry them too: delivered as data, with the same properties, to a 5.0 subscriber
 * (live and, for two retained ones, to a late subscriber), without properties to a 3.1.1
 * subscriber; no subscriber is disconnected.
 */
async function poisonProperties(url: string, i: number, r: Rng): Promise<Outcome> {
  const o = outcome("poison properties", 3, 4);
  const name = (): string => pick(r, POISON_NAMES);
  const pairs = (): Pair[] => Array.from({ length: int(r, 1, 6) }, () => [name(), chance(r, 0.3) ? name() : String(int(r, 0, 999))] as const);
  const base = `poison/${i}`;
  const a = await openRaw(url, `poison-a-${i}`, 5, userPairs(pairs()));
  // SUBSCRIBE with user properties: id, properties, filter, options.
  a.sendBytes(frame(0x82, u16(1), userPairs(pairs()), str(`${base}/#`), 1));
  await a.next("suback", HANG_MS);
  const b = await openRaw(url, `poison-b-${i}`, 4);
  b.sendBytes(subscribe(1, [[`${base}/__proto__/#`, 0], [`${base}/constructor/+`, 0]], 4));
  await b.next("suback", HANG_MS);
  const pub = await openRaw(url, `poison-p-${i}`, 5, userPairs(pairs()));

  interface Sent { topic: string; qos: number; retain: boolean; pairs: Pair[] }
  const msgs = new Map<string, Sent>();
  const level = (): string => (chance(r, 0.7) ? name() : "x");
  const count = int(r, 10, 40);
  const packets: Uint8Array[] = [];
  for (let k = 0; k < count + 2; k++) {
    const retain = k >= count;
    const topic = retain ? `${base}/ret/${POISON_NAMES[(i + k) % POISON_NAMES.length]}` : `${base}/${level()}/${level()}`;
    const qos = retain ? 1 : int(r, 0, 1);
    const m: Sent = { topic, qos, retain, pairs: pairs() };
    msgs.set(`${i}:${k}`, m);
    packets.push(publish({ topic, qos, id: k + 1, flags: (qos << 1) | (retain ? 1 : 0), payload: utf8(`${i}:${k}`), version: 5, properties: userPairs(m.pairs) }));
  }
  // A few frames, cut at random packet boundaries.
  for (let at = 0; at < packets.length; ) {
    const step = int(r, 1, 8);
    pub.sendBytes(bytes(...packets.slice(at, at + step)));
    at += step;
  }
  /** What the 3.1.1 subscriber's filters match. */
  const forB = (m: Sent): boolean => /^\/(__proto__|constructor)\/[^/]+$/.test(m.topic.slice(base.length));
  const acks = [...msgs.values()].filter((m) => m.qos === 1).length;
  await untilStalled(() => pub.closed !== null || packetsOf(pub, "puback") >= acks, () => pub.packets.length);
  add(o, "publishes", msgs.size);

  const check = (who: string, raw: RawClient, want: (m: Sent) => boolean, withProps: boolean): void => {
    const expected = [...msgs].filter(([, m]) => want(m)).map(([p]) => p);
    const got = raw.packets.filter((p) => p.cmd === "publish");
    add(o, `${who} expected`, expected.length);
    let ok = 0;
    for (const p of got) {
      const m = msgs.get(payloadOf(p));
      if (!m || m.topic !== topicOf(p)) {
        o.failures.push(`poison ${i}: ${who} got ${topicOf(p)} "${payloadOf(p)}"`);
        continue;
      }
      const props5 = receivedProps(p);
      const want5 = withProps ? sentProps(m.pairs) : [];
      if (JSON.stringify(props5) === JSON.stringify(want5)) ok++;
      else o.failures.push(`poison ${i}: ${who}: user properties ${JSON.stringify(props5)}, sent ${JSON.stringify(want5)}`);
    }
    add(o, `${who} delivered as data`, ok);
    if (got.length !== expected.length) o.failures.push(`poison ${i}: ${who} got ${got.length} of ${expected.length}`);
  };
  await untilStalled(() => a.closed !== null || packetsOf(a, "publish") >= msgs.size, () => a.packets.length);
  await untilStalled(() => b.closed !== null || packetsOf(b, "publish") >= [...msgs.values()].filter(forB).length, () => b.packets.length);
  for (const [who, raw] of [["5.0", a], ["3.1.1", b], ["publisher", pub]] as const) {
    if (await answers(raw)) add(o, "still connected");
    else o.failures.push(`poison ${i}: the ${who} ${who === "publisher" ? "" : "subscriber "}was disconnected (${raw.closed?.code ?? "hung"})`);
  }
  check("5.0", a, () => true, true);
  check("3.1.1", b, forB, false);

  const late = await openRaw(url, `poison-l-${i}`, 5);
  late.sendBytes(subscribe(1, [[`${base}/ret/#`, 1]], 5));
  await late.next("suback", HANG_MS);
  await untilStalled(() => late.closed !== null || packetsOf(late, "publish") >= 2, () => late.packets.length);
  check("retained", late, (m) => m.retain, true);
  if (!late.packets.every((p) => p.cmd !== "publish" || p.retain)) o.failures.push(`poison ${i}: a late subscriber's message without RETAIN`);
  for (const raw of [a, b, pub, late]) raw.close();
  return o;
}

/**
 * Client ids and topic levels named after Object.prototype members: each client subscribes to
 * `pid/<its id>` and publishes to every other's; each gets one message from every other.
 */
async function poisonIds(url: string): Promise<Outcome> {
  const o = outcome("poison client ids", Math.ceil(POISON_NAMES.length / 2), POISON_NAMES.length);
  const clients = await Promise.all(POISON_NAMES.map((id, k) => openRaw(url, id, k % 2 === 0 ? 5 : 4)));
  await Promise.all(clients.map(async (c, k) => {
    c.sendBytes(subscribe(1, [[`pid/${POISON_NAMES[k]}`, 1]], c.version === 5 ? 5 : 4));
    await c.next("suback", HANG_MS);
  }));
  clients.forEach((c, k) => {
    const v = c.version === 5 ? 5 : 4;
    c.sendBytes(bytes(...POISON_NAMES.filter((_, j) => j !== k).map((to, j) => publish({ topic: `pid/${to}`, qos: 1, id: j + 1, payload: utf8(POISON_NAMES[k] ?? ""), version: v }))));
  });
  const others = POISON_NAMES.length - 1;
  await Promise.all(clients.map((c) => untilStalled(() => c.closed !== null || packetsOf(c, "publish") >= others, () => c.packets.length)));
  for (const [k, c] of clients.entries()) {
    const from = c.packets.filter((p) => p.cmd === "publish").map(payloadOf).sort();
    const want = POISON_NAMES.filter((_, j) => j !== k).slice().sort();
    add(o, "delivered", from.length);
    add(o, "expected", want.length);
    if (JSON.stringify(from) !== JSON.stringify(want)) o.failures.push(`poison client id ${POISON_NAMES[k]}: got ${JSON.stringify(from)}`);
    if (!(await answers(c))) o.failures.push(`poison client id ${POISON_NAMES[k]}: disconnected`);
  }
  for (const c of clients) c.close();
  return o;
}

/**
 * A retained set large in count and bytes in one account of its own (`hoard`, JWT identities
 * from `auth`; kept apart from the anonymous account, where each SUBSCRIBE of the floods would
 * scan it): several
 * publishers, each storing a burst of QoS 1 retained messages (most a few KiB, some tens of
 * KiB, about one in a hundred at MAX_PAYLOAD_BYTES); then wildcard subscribers: QoS 0, QoS 1
 * acknowledging every delivery, QoS 1 never acknowledging (5.0; it stalls at the in-flight
 * window), and `#`. For now (account quotas come separately) the answer is only checked to be
 * a SUBACK or a clean close, with the broker still up; the counts are reported.
 */
async function retainedSet(url: string, r: Rng, auth: (id: string) => Promise<Credentials>, report: string[]): Promise<Outcome> {
  const publishers = 4;
  const per = L.publishBurst - 50;
  const o = outcome("retained set", 1, publishers + 4);
  const size = (): number => {
    const x = r();
    return x < 0.88 ? int(r, 64, 6_000) : x < 0.99 ? int(r, 6_000, 24_000) : L.maxPayloadBytes;
  };
  let bytesSent = 0;
  const open = async (id: string, v: Version): Promise<RawClient> => openRaw(url, id, v, undefined, await auth(id));
  const pubs = await Promise.all(Array.from({ length: publishers }, (_, j) => open(`hoard-pub-${j}`, 4)));
  for (const [j, p] of pubs.entries()) {
    for (let k = 0; k < per; k++) {
      const payload = new Uint8Array(size()).fill(0x61 + (k % 26));
      bytesSent += payload.length;
      p.sendBytes(publish({ topic: `hoard/${j}/${k}`, qos: 1, id: k + 1, flags: 0x03, payload }));
    }
  }
  await Promise.all(pubs.map((p) => untilStalled(() => p.closed !== null || packetsOf(p, "puback") >= per, () => p.packets.length)));
  const stored = pubs.reduce((n, p) => n + packetsOf(p, "puback"), 0);
  add(o, "sent", publishers * per);
  add(o, "acknowledged", stored);
  for (const [j, p] of pubs.entries()) {
    if (p.closed) add(o, "publishers closed");
    else if (packetsOf(p, "puback") < per) o.failures.push(`retained set: publisher ${j} neither closed nor acknowledged (${packetsOf(p, "puback")} of ${per})`);
  }
  // The subscribers; each must get a SUBACK or be closed.
  const subs = [
    { who: "QoS 0", raw: await open("hoard-sub-0", 4), filter: "hoard/#", qos: 0 },
    { who: "QoS 1", raw: await open("hoard-sub-1", 4), filter: "hoard/#", qos: 1 },
    { who: "QoS 1 never acknowledging", raw: await open("hoard-sub-stall", 5), filter: "hoard/#", qos: 1 },
    { who: "`#`", raw: await open("hoard-sub-all", 4), filter: "#", qos: 0 },
  ];
  // The acknowledging subscriber: a PUBACK for each QoS 1 delivery, as it arrives.
  let acked = 0;
  const acking = subs[1]!.raw;
  const acker = setInterval(() => {
    for (; acked < acking.packets.length && !acking.closed; acked++) {
      const p = acking.packets[acked];
      if (p?.cmd === "publish" && p.qos === 1 && p.messageId) acking.sendBytes(frame(0x40, u16(p.messageId)));
    }
  }, 20);
  for (const s of subs) s.raw.sendBytes(subscribe(1, [[s.filter, s.qos]], s.raw.version === 5 ? 5 : 4));
  const answersOf: string[] = [];
  for (const { who, raw } of subs) {
    const ok = await untilStalled(() => raw.closed !== null || packetsOf(raw, "suback") > 0, () => raw.packets.length);
    const a = packetsOf(raw, "suback") > 0 ? "SUBACK" : raw.closed ? `closed (${raw.closed.code})` : "";
    if (!ok || a === "") o.failures.push(`retained set: the ${who} subscriber got neither SUBACK nor a close`);
    answersOf.push(a);
  }
  // Deliveries: until no count grows for 3 s (bounded), then report.
  const counts = (): number[] => subs.map(({ raw }) => packetsOf(raw, "publish"));
  let last = counts();
  for (let t = 0, still = 0; t < 40 && still < 3; t++) {
    await sleep(1_000);
    const now = counts();
    still = JSON.stringify(now) === JSON.stringify(last) ? still + 1 : 0;
    last = now;
  }
  clearInterval(acker);
  const health = await fetch(url.replace(/^ws/, "http").replace(/\/mqtt$/, "/health")).then((res) => res.ok, () => false);
  if (!health) o.failures.push("retained set: /health does not answer after the wildcard SUBSCRIBEs");
  for (const { who, raw } of subs) {
    if (raw.closed) add(o, "subscribers closed");
    else if (!(await answers(raw))) o.failures.push(`retained set: the ${who} subscriber is neither closed nor answering`);
  }
  const received = subs[0]!.raw.packets.reduce((n, p) => n + (p.cmd === "publish" ? p.payload.length : 0), 0);
  report.push(
    `  retained set: ${publishers * per} QoS 1 retained messages (${(bytesSent / 1e6).toFixed(1)} MB) in account hoard, ${stored} acknowledged; wildcard SUBSCRIBEs: ` +
      subs.map(({ who }, k) => `${who} ${answersOf[k]}, ${last[k]} received`).join("; ") + ` (${(received / 1e6).toFixed(1)} MB to the QoS 0 subscriber)`,
  );
  for (const raw of [...pubs, ...subs.map((x) => x.raw)]) raw.close();
  return o;
}

/** Runs the tasks `n` at a time; a task that throws becomes a failed outcome. */
async function lanes(tasks: ReadonlyArray<{ kind: string; run: () => Promise<Outcome> }>, n: number): Promise<Outcome[]> {
  const out: Outcome[] = [];
  let next = 0;
  const lane = async (): Promise<void> => {
    for (let t = tasks[next++]; t; t = tasks[next++]) {
      const task = t;
      out.push(await task.run().catch((err: unknown): Outcome => ({ ...outcome(task.kind, 0), failures: [`${task.kind}: ${String(err)}`] })));
    }
  };
  await Promise.all(Array.from({ length: n }, lane));
  return out;
}

// ------------------------------------------------------------------ the control pair

interface ControlReport {
  ids: string[];
  published: number;
  received: number;
  withDuplicates: number;
  reconnects: number;
  /** Numbers in order of first receipt. */
  firsts: number[];
  missing: number[];
}

/**
 * The control pair: another account (`ctl`), JWT identities, MQTT.js, a persistent QoS 1
 * subscriber, a numbered sequence at about 40 a second (well under the publish limit) until
 * `stop`, which waits (bounded) for every number and reports.
 */
async function startControl(b: Broker, tag: string): Promise<{ stop: () => Promise<ControlReport> }> {
  const [subId, pubId, topic] = [`ctl-sub${tag}`, `ctl-pub${tag}`, `ctl/seq${tag}`];
  const token = (sub: string): Promise<string> => mintToken("ctl", sub, { url: b.url });
  const subscriber = await connectCollecting({ clientId: subId, username: subId, password: await token(subId), clean: false, reconnectPeriod: 1000 }, b.wsUrl);
  await subscriber.client.subscribeAsync(topic, { qos: 1 });
  const publisher: MqttClient = (await connectCollecting({ clientId: pubId, username: pubId, password: await token(pubId), reconnectPeriod: 1000 }, b.wsUrl)).client;
  let reconnects = 0;
  subscriber.client.on("reconnect", () => reconnects++);
  publisher.on("reconnect", () => reconnects++);
  let running = true;
  let published = 0;
  const loop = (async () => {
    while (running) {
      await publisher.publishAsync(topic, String(++published), { qos: 1 });
      await sleep(25);
    }
  })();
  return {
    async stop(): Promise<ControlReport> {
      running = false;
      await loop;
      const firsts: number[] = [];
      const seen = new Set<number>();
      const collectFirsts = (): boolean => {
        firsts.length = 0;
        seen.clear();
        for (const m of subscriber.got) {
          const n = Number(m.payload);
          if (!seen.has(n)) {
            seen.add(n);
            firsts.push(n);
          }
        }
        return seen.size >= published;
      };
      await until(collectFirsts, 20_000);
      await end(publisher, subscriber.client);
      const missing = Array.from({ length: published }, (_, i) => i + 1).filter((n) => !seen.has(n));
      return { ids: [subId, pubId], published, received: seen.size, withDuplicates: subscriber.got.length, reconnects, firsts, missing };
    },
  };
}

/** The control pair's line of a summary, and the broker's lines about it ending. */
function controlLines(c: ControlReport, log: string[]): string[] {
  const ends = log.filter((l) => c.ids.some((id) => l.includes(`"clientId":"${id}"`)) && /mqtt\.(close|disconnect)/.test(l));
  return [
    `  control (account ctl): ${c.published} QoS 1 messages published, ${c.received} received (${c.withDuplicates} with duplicates), ${c.reconnects} reconnects${c.missing.length ? `; missing: ${c.missing.slice(0, 50).join(",")}` : ""}`,
    ...ends.map((l) => `  control client ended: ${l}`),
  ];
}

/** Error lines of the broker's log (an error for hostile input is a bug: hostile input is warn or info). */
const errorLines = (log: string[]): string[] => log.filter((l) => l.includes('"level":"error"') || l.includes("Uncaught"));

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
    const control = await startControl(broker, "");

    // Hostile connections, CONCURRENCY at a time, until TARGET_PACKETS hostile packets are out.
    const kinds = new Map<string, number>();
    const results: ConnResult[] = [];
    let next = 0;
    let packets = 0;
    const worker = async (w: number): Promise<void> => {
      for (let k = 0; packets < TARGET_PACKETS; k++) {
        const res = await hostileConnection(broker.wsUrl, next++, `fuzz-${w}-${k % IDS_PER_WORKER}`, kinds);
        packets += res.packets;
        results.push(res);
      }
    };
    await Promise.all(Array.from({ length: CONCURRENCY }, (_, w) => worker(w)));
    const fuzzMs = Date.now() - started;
    const ctl = await control.stop();

    const sum = (prefix: string): number => [...kinds].filter(([k]) => k.startsWith(prefix)).reduce((n, [, v]) => n + v, 0);
    const closed = results.filter((x) => x.closedByBroker).length;
    const pinged = results.filter((x) => !x.closedByBroker && x.answeredPing).length;
    const failures = results.flatMap((x) => (x.failure ? [x.failure] : []));
    const out = broker.output().split("\n");
    const errors = errorLines(out);
    const rateRefused = out.filter((l) => l.includes('"event":"session.connect_rate_exceeded"'));
    // Why a control client had to reconnect, if it did (the broker's own lines about it).
    const reloads = out.filter((l) => /reload/i.test(l));
    console.log(
      [
        `fuzz seed 0x${SEED.toString(16)}: ${packets} hostile packets (+ valid ones in between) in ${results.reduce((n, x) => n + x.frames, 0)} frames, ` +
          `${results.reduce((n, x) => n + x.bytes, 0)} bytes, over ${results.length} connections (${results.filter((x) => x.version === 5).length} MQTT 5) in ${(fuzzMs / 1000).toFixed(1)} s`,
        `  closed by the broker: ${closed}; open and answering PINGREQ at the end: ${pinged}; neither: ${failures.length}`,
        `  hard mutations ${sum("hard")}: ${[...kinds].filter(([k]) => k.startsWith("hard")).map(([k, v]) => `${k.slice(6)} ${v}`).join(", ")}`,
        `  tolerated mutations ${sum("tolerated")}: ${[...kinds].filter(([k]) => k.startsWith("tolerated")).map(([k, v]) => `${k.slice(11)} ${v}`).join(", ")}`,
        ...controlLines(ctl, out),
        `  CONNECTs refused for the connect rate per client id: ${rateRefused.length}`,
        `  broker log: ${out.length} lines, ${errors.length} error lines${reloads.length > 0 ? `; ${reloads.length} wrangler reload line(s) (a source file changed during the run)` : ""}`,
        ...errors.slice(0, 20).map((l) => `  ERROR: ${l}`),
      ].join("\n"),
    );

    expect(packets).toBeGreaterThanOrEqual(TARGET_PACKETS);
    expect(failures).toEqual([]);
    expect(errors).toEqual([]);
    expect(rateRefused).toEqual([]);
    expect(ctl.missing).toEqual([]);
    expect(ctl.firsts).toEqual(Array.from({ length: ctl.published }, (_, i) => i + 1));
    expect(closed + pinged).toBe(results.length);
    // A hang guard, not a speed check: ~50 s alone, up to three times that on a loaded machine.
  }, 480_000);

  it("hostile load (frame, packet, SUBSCRIBE and publish floods, poison properties, a large retained set): each gets its answer; a QoS 1 control pair in another account loses nothing; no error line", async () => {
    const started = Date.now();
    const logFrom = broker.output().length;
    const control = await startControl(broker, "-hostile");
    // Watches what the floods publish: a refused frame routes nothing, a publish flood routes in order.
    const watcher = await openRaw(broker.wsUrl, "flood-watcher", 4);
    watcher.sendBytes(subscribe(1, [["flood/#", 0], ["pflood/#", 0]], 4));
    await watcher.next("suback", HANG_MS);

    const retainedReport: string[] = [];
    const floods = new Map<number, number>();
    const order = mulberry32((SEED ^ 0x0badf00d) >>> 0);
    type Make = (i: number, r: Rng) => Promise<Outcome>;
    const plan: Array<[number, string, Make]> = [
      [16, "frame flood", (i, r) => frameFlood(broker.wsUrl, i, r)],
      [2, "frame at the cap", (i, r) => frameAtCap(broker.wsUrl, i, r)],
      [3, "PINGREQ flood", (i, r) => packetFlood(broker.wsUrl, i, r, false)],
      [1, "ack flood", (i, r) => packetFlood(broker.wsUrl, i, r, true)],
      [3, "SUBSCRIBE flood", (i, r) => subscribeFlood(broker.wsUrl, i, r)],
      [3, "publish flood", (i, r) => publishFlood(broker.wsUrl, i, r, floods)],
      [4, "poison properties", (i, r) => poisonProperties(broker.wsUrl, i, r)],
      [1, "poison client ids", () => poisonIds(broker.wsUrl)],
    ];
    const tasks: Array<{ kind: string; run: () => Promise<Outcome> }> = [];
    for (const [n, kind, make] of plan) {
      for (let k = 0; k < n; k++) {
        const i = tasks.length + 1;
        tasks.push({ kind, run: () => make(i, mulberry32((SEED ^ Math.imul(i + 0x10000, 0x9e3779b1)) >>> 0)) });
      }
    }
    // Seeded order (Fisher-Yates), the retained set first: it takes longest.
    for (let k = tasks.length - 1; k > 0; k--) {
      const j = int(order, 0, k);
      [tasks[k], tasks[j]] = [tasks[j]!, tasks[k]!];
    }
    const hoardAuth = async (id: string): Promise<Credentials> => ({ username: id, password: utf8(await mintToken("hoard", id, { url: broker.url })) });
    tasks.unshift({ kind: "retained set", run: () => retainedSet(broker.wsUrl, mulberry32(SEED >>> 0), hoardAuth, retainedReport) });
    const outcomes = await lanes(tasks, HOSTILE_CONCURRENCY);

    // Nothing of a refused frame was routed: a marker published after every flood arrives alone.
    const marker = await openRaw(broker.wsUrl, "flood-marker", 4);
    marker.sendBytes(publish({ topic: "flood/marker", qos: 1, id: 1, payload: utf8("marker") }));
    await marker.next("puback", HANG_MS);
    marker.close();
    const failures = outcomes.flatMap((o) => o.failures);
    if (!(await until(() => watcher.packets.some((p) => topicOf(p) === "flood/marker")))) failures.push("the flood watcher did not get the marker");
    const routed = watcher.packets.filter((p) => p.cmd === "publish");
    const leaked = routed.filter((p) => topicOf(p).startsWith("flood/") && topicOf(p) !== "flood/marker");
    if (leaked.length > 0) failures.push(`${leaked.length} PUBLISHes of refused frames were routed (first: ${topicOf(leaked[0]!)})`);
    // A publish flood's messages arrive in the order sent, none twice, none past what was sent.
    let floodDelivered = 0;
    for (const [i, n] of floods) {
      const ks = routed.filter((p) => topicOf(p) === `pflood/${i}`).map((p) => Number(payloadOf(p).split(":")[1]));
      floodDelivered += ks.length;
      if (ks.some((k, j) => k >= n || (j > 0 && k <= ks[j - 1]!))) failures.push(`publish flood ${i}: routed out of order or past the close: ${ks.slice(0, 20).join(",")}…`);
    }
    watcher.close();
    // The broker is up and serves a newcomer in the hostile account.
    const newcomer = await openRaw(broker.wsUrl, "hostile-newcomer", 4);
    if (!(await answers(newcomer))) failures.push("a new connection after the hostile phase does not answer PINGREQ");
    newcomer.close();
    const hostileMs = Date.now() - started;
    const ctl = await control.stop();

    const log = broker.output().slice(logFrom).split("\n");
    const errors = errorLines(log);
    const warns = new Map<string, number>();
    for (const l of log) {
      const m = /"level":"warn","event":"([^"]+)"/.exec(l);
      if (m?.[1]) warns.set(m[1], (warns.get(m[1]) ?? 0) + 1);
    }
    const byKind = new Map<string, { n: number; c: Record<string, number> }>();
    for (const o of outcomes) {
      const k = byKind.get(o.kind) ?? { n: 0, c: {} };
      k.n++;
      for (const [key, v] of Object.entries(o.counts)) k.c[key] = (k.c[key] ?? 0) + v;
      byKind.set(o.kind, k);
    }
    /** A kind's summary line; `c(key)` is the key's count summed over the kind's tasks. */
    const line = (kind: string, text: (c: (key: string) => number) => string): string => {
      const k = byKind.get(kind);
      return k ? `  ${kind} ×${k.n}: ${text((key) => k.c[key] ?? 0)}` : `  ${kind}: none`;
    };
    const n = (x: number): string => x.toLocaleString("en-US");
    console.log(
      [
        `hostile load seed 0x${SEED.toString(16)}: ${outcomes.length} tasks over ${outcomes.reduce((s, o) => s + o.connections, 0)} connections ` +
          `(${outcomes.reduce((s, o) => s + o.v5, 0)} MQTT 5), ${HOSTILE_CONCURRENCY} at a time, in ${(hostileMs / 1000).toFixed(1)} s`,
        line("frame flood", (c) => `${n(c("packets"))} packets in frames over ${L.maxPacketsPerFrame} (${c("behind CONNECT")} behind the CONNECT): closed ${c("closed")}, packets answered ${c("answered")}, DISCONNECT 0x96 ${c("DISCONNECT 0x96")} of ${c("5.0 after CONNACK")} (5.0 after CONNACK)`),
        line("frame at the cap", (c) => `${L.maxPacketsPerFrame} PINGREQs in one frame each: ${n(c("answered"))} PINGRESPs in all, still open ${c("open")}`),
        line("PINGREQ flood", (c) => `${n(c("packets"))} PINGREQs in frames of ${L.maxPacketsPerFrame}: closed past the packet budget ${c("closed")}, all answered ${c("all answered")}; ${n(c("PINGRESPs"))} PINGRESPs`),
        line("ack flood", (c) => `${n(c("packets"))} PUBACK/PUBREC/PUBCOMP for unused ids: closed ${c("closed")}, all handled and still open ${c("all answered")}`),
        line("SUBSCRIBE flood", (c) => `SUBACK past ${L.maxFiltersPerSubscribe} filters as expected ${c("filters per SUBSCRIBE as expected")}, past ${L.maxSubscriptions} subscriptions as expected ${c("subscriptions per session as expected")}; ${n(c("flood SUBSCRIBEs"))} more SUBSCRIBEs: closed ${c("flood closed")}, all answered ${c("flood all answered")}`),
        line("publish flood", (c) => `${n(c("publishes"))} QoS 0 PUBLISHes (over ${L.publishBurst} each, one frame): closed past the publish budget ${c("closed")}, all routed ${c("all routed")}; ${n(floodDelivered)} routed, in order, none past the close`),
        line("poison properties", (c) => `${c("publishes")} MQTT 5 PUBLISHes with user properties named ${POISON_NAMES.join(", ")}: as data to 5.0 ${c("5.0 delivered as data")}/${c("5.0 expected")}, to 3.1.1 (no properties) ${c("3.1.1 delivered as data")}/${c("3.1.1 expected")}, retained to a late subscriber ${c("retained delivered as data")}/${c("retained expected")}; connections still up ${c("still connected")}`),
        line("poison client ids", (c) => `${POISON_NAMES.length} clients named ${POISON_NAMES.join(", ")} on topics so named: ${c("delivered")}/${c("expected")} delivered`),
        ...retainedReport,
        ...controlLines(ctl, log),
        `  broker log: ${log.length} lines in the phase, ${errors.length} error lines; warn: ${[...warns].map(([k, v]) => `${k} ${v}`).join(", ") || "none"}`,
        ...failures.slice(0, 30).map((f) => `  FAILURE: ${f}`),
        ...errors.slice(0, 20).map((l) => `  ERROR: ${l}`),
      ].join("\n"),
    );

    expect(failures).toEqual([]);
    expect(errors).toEqual([]);
    expect(ctl.missing).toEqual([]);
    expect(ctl.firsts).toEqual(Array.from({ length: ctl.published }, (_, i) => i + 1));
    // A hang guard, as above.
  }, 300_000);
});
