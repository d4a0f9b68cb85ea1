import { describe, expect, it } from "vitest";
import { Outbox } from "../../../src/session/outbox";
import type { Message } from "../../../src/router/messages";
import { deliverMessages } from "../../../src/session/handlers/deliver";
import { FakeLink, MemoryStorage, connectedAttachment } from "./fake-link";

const msg = (topic: string, qos: 1 | 2 = 1): Message => ({ topic, payload: new Uint8Array([1]), qos, retain: false });
const publishedPids = (actions: Awaited<ReturnType<Outbox["add"]>>): number[] => actions.flatMap((a) => (a.kind === "publish" ? [a.record.pid] : []));

describe("Outbox", () => {
  it("keeps at most the window in flight and admits the next one on PUBACK", async () => {
    const box = new Outbox(new MemoryStorage().asDurableObjectStorage(), 2);
    expect(publishedPids(await box.add([msg("a"), msg("b"), msg("c")]))).toEqual([1, 2]);
    expect(await box.complete(1, "puback")).toEqual({ kind: "done", next: [expect.objectContaining({ kind: "publish", record: expect.objectContaining({ pid: 3 }) })] });
    expect(await box.complete(1, "puback")).toEqual({ kind: "unknown" }); // a duplicate PUBACK changes nothing
  });

  it("an acknowledgement that is not its delivery's is unexpected: PUBREC for QoS 1, PUBACK for QoS 2, PUBCOMP before PUBREL", async () => {
    const box = new Outbox(new MemoryStorage().asDurableObjectStorage(), 10);
    await box.add([msg("one"), msg("two", 2)]);
    expect(await box.received(1)).toEqual({ kind: "unexpected" });
    expect(await box.complete(2, "puback")).toEqual({ kind: "unexpected" });
    expect(await box.complete(2, "pubcomp")).toEqual({ kind: "unexpected" });
    expect(await box.received(2)).toEqual({ kind: "released" });
    expect(await box.received(2)).toEqual({ kind: "released" }); // a repeated PUBREC gets PUBREL again
    expect(await box.complete(2, "pubcomp")).toEqual({ kind: "done", next: [] });
    expect(await box.received(7)).toEqual({ kind: "unknown" });
  });

  it("a PUBREC with a failure reason ends the QoS 2 delivery: no PUBREL, and the window admits the next message", async () => {
    const box = new Outbox(new MemoryStorage().asDurableObjectStorage(), 1);
    expect(publishedPids(await box.add([msg("a", 2), msg("b", 2)]))).toEqual([1]);
    expect(await box.received(1, true)).toEqual({ kind: "done", next: [expect.objectContaining({ kind: "publish", record: expect.objectContaining({ pid: 2 }) })] });
    expect(await box.complete(1, "pubcomp")).toEqual({ kind: "unknown" });
  });

  it("hands unfinished messages over with their packet ids and DUP; the next connection resends them as they were [MQTT-4.4.0-1]", async () => {
    const storage = new MemoryStorage().asDurableObjectStorage();
    const first = new Outbox(storage, 10);
    await first.add([msg("a"), msg("b", 2)]);
    expect(await first.received(2)).toEqual({ kind: "released" });
    const handover = await first.handover();
    expect(handover).toEqual([
      expect.objectContaining({ topic: "a", pid: 1, dup: true, released: false }),
      expect.objectContaining({ topic: "b", pid: 2, dup: true, released: true }),
    ]);
    const next = new Outbox(new MemoryStorage().asDurableObjectStorage(), 10);
    const actions = await next.add(handover);
    expect(actions).toEqual([
      { kind: "publish", record: expect.objectContaining({ pid: 1, dup: true }) },
      { kind: "pubrel", pid: 2 },
    ]);
  });

  it("survives a wake: a new Outbox over the same storage resends what was in flight", async () => {
    const storage = new MemoryStorage().asDurableObjectStorage();
    const box = new Outbox(storage, 10);
    await box.add([msg("a")]);
    const woken = new Outbox(storage, 10);
    expect(publishedPids(await woken.resend())).toEqual([1]);
  });
});

describe("delivery", () => {
  it("a message larger than the client's Maximum Packet Size is skipped and the next one flows", async () => {
    const link = new FakeLink(undefined, connectedAttachment(5, { maxPacketOut: 40 }));
    const big: Message = { topic: "t", payload: new Uint8Array(100), qos: 1, retain: false };
    await deliverMessages(link, [big, msg("small")]);
    expect(link.sent).toEqual([expect.objectContaining({ cmd: "publish", topic: "small", messageId: 2 })]);
  });

  it("QoS 0 before CONNACK waits; QoS 1 is stored and not sent", async () => {
    const link = new FakeLink(undefined, connectedAttachment(4, { phase: "connecting" }));
    await deliverMessages(link, [{ ...msg("q0"), qos: 0 }, msg("q1")]);
    expect(link.sent).toEqual([]);
    expect(link.state.early.map((m) => m.topic)).toEqual(["q0"]);
    expect((await link.state.outbox.handover()).map((m) => m.topic)).toEqual(["q1"]);
  });
});

describe("Outbox bound", () => {
  it("past MAX_QUEUED_MESSAGES the oldest messages waiting for the window are dropped and counted; in-flight ones stay", async () => {
    const box = new Outbox(new MemoryStorage().asDurableObjectStorage(), 1, 2);
    const actions = await box.add([msg("a"), msg("b"), msg("c"), msg("d"), msg("e")]);
    expect(publishedPids(actions)).toEqual([1]);
    expect(box.dropped).toBe(2);
    expect((await box.handover()).map((m) => m.topic)).toEqual(["a", "d", "e"]);
  });
});

describe("Outbox bound in bytes", () => {
  it("past MAX_QUEUED_BYTES of waiting messages (topic and payload) the oldest waiting ones are dropped and counted, whatever their count", async () => {
    const big = (topic: string): Message => ({ topic, payload: new Uint8Array(100), qos: 1, retain: false });
    const box = new Outbox(new MemoryStorage().asDurableObjectStorage(), 1, 1000, 10_000, 250);
    expect(publishedPids(await box.add([big("a"), big("b"), big("c"), big("d"), big("e")]))).toEqual([1]);
    expect(box.dropped).toBe(2); // b, c, d, e wait: 404 bytes; two go, 202 stay
    expect((await box.handover()).map((m) => m.topic)).toEqual(["a", "d", "e"]);
  });
});

describe("Outbox writes", () => {
  const persistentBox = (storage: MemoryStorage, window: number) => {
    const box = new Outbox(storage.asDurableObjectStorage(), window);
    box.setEphemeral(false);
    let mark = -1;
    box.trackAdmitted(mark, (seq) => (mark = seq));
    return { box, mark: () => mark };
  };

  it("a message that waits for the window is written once: its packet id is reserved when it is stored, admitting it writes nothing", async () => {
    const storage = new MemoryStorage();
    const { box } = persistentBox(storage, 1);
    const n = 20;
    const first = await box.add(Array.from({ length: n }, (_, i) => msg(`m${i}`)));
    expect(storage.rowsWritten).toBe(n); // every message stored once
    let pids = publishedPids(first);
    const order: number[] = [...pids];
    while (pids.length > 0) {
      const done = await box.complete(pids[0]!, "puback");
      if (done.kind !== "done") throw new Error(done.kind);
      pids = done.next.flatMap((a) => (a.kind === "publish" ? [a.record.pid] : []));
      order.push(...pids);
    }
    expect(order).toEqual(Array.from({ length: n }, (_, i) => i + 1));
    expect(storage.rowsWritten).toBe(2 * n); // + one delete per PUBACK
    expect(storage.data.size).toBe(0);
  });

  it("a PUBACK for a reserved id of a message not sent yet is unknown", async () => {
    const { box } = persistentBox(new MemoryStorage(), 1);
    expect(publishedPids(await box.add([msg("a"), msg("b")]))).toEqual([1]);
    expect(await box.complete(2, "puback")).toEqual({ kind: "unknown" });
  });

  it("after a wake, the admission mark tells admitted records (in flight) from waiting ones, with their packet ids", async () => {
    const storage = new MemoryStorage();
    const { box, mark } = persistentBox(storage, 2);
    await box.add([msg("a"), msg("b"), msg("c"), msg("d")]); // a, b sent; c, d wait
    const done = await box.complete(1, "puback"); // c admitted, stored as it was
    expect(done).toEqual({ kind: "done", next: [expect.objectContaining({ kind: "publish", record: expect.objectContaining({ pid: 3 }) })] });
    const woken = new Outbox(storage.asDurableObjectStorage(), 2);
    woken.setEphemeral(false);
    woken.trackAdmitted(mark(), () => undefined);
    expect(publishedPids(await woken.resend())).toEqual([2, 3]); // in flight: b and c
    expect(await woken.admit()).toEqual([]); // the window is full: d still waits
    const next = await woken.complete(3, "puback");
    expect(next).toEqual({ kind: "done", next: [expect.objectContaining({ kind: "publish", record: expect.objectContaining({ pid: 4 }) })] });
  });

  it("read without the mark (no socket after a restart), a waiting record with a reserved id may have been sent: handed over with DUP", async () => {
    const storage = new MemoryStorage();
    const { box } = persistentBox(storage, 1);
    await box.add([msg("a"), msg("b")]);
    const orphan = new Outbox(storage.asDurableObjectStorage(), 1);
    expect(await orphan.handover()).toEqual([
      expect.objectContaining({ topic: "a", pid: 1, dup: true }),
      expect.objectContaining({ topic: "b", dup: true }),
    ]);
  });
});

describe("Outbox: a clean session's messages that wait for the window", () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const cleanBox = (storage: MemoryStorage, window: number, holdMs: number) => {
    const box = new Outbox(storage.asDurableObjectStorage(), window, Number.POSITIVE_INFINITY, holdMs);
    box.setEphemeral(true);
    return box;
  };
  /** Acknowledges each packet id as it goes out, one PUBACK at a time; returns the order sent. */
  const drain = async (box: Outbox, first: number[]): Promise<number[]> => {
    const order = [...first];
    const inFlight = [...first];
    while (inFlight.length > 0) {
      const done = await box.complete(inFlight.shift()!, "puback");
      if (done.kind !== "done") throw new Error(done.kind);
      const pids = publishedPids(done.next);
      order.push(...pids);
      inFlight.push(...pids);
    }
    return order;
  };

  it("are held in memory and cost no row when the client acknowledges before the hold ends", async () => {
    const storage = new MemoryStorage();
    const box = cleanBox(storage, 1, 20);
    const first = publishedPids(await box.add([msg("a"), msg("b"), msg("c")]));
    expect(first).toEqual([1]);
    expect(box.held()).toBe(2);
    expect(storage.rowsWritten).toBe(0);
    expect(await drain(box, first)).toEqual([1, 2, 3]);
    await sleep(60); // past the hold: nothing is left to write
    expect(storage.rowsWritten).toBe(0);
  });

  it("still waiting when the hold ends, they are written once each; after a wake (memory lost) a PUBACK admits them in order", async () => {
    const storage = new MemoryStorage();
    const box = cleanBox(storage, 1, 20);
    expect(publishedPids(await box.add([msg("a"), msg("b"), msg("c")]))).toEqual([1]);
    await sleep(60);
    expect(box.held()).toBe(0);
    expect(storage.rowsWritten).toBe(2); // b and c; a is on the wire, not stored
    // Hibernation: a new Outbox over the same storage; the in-flight a was never stored.
    const woken = cleanBox(storage, 1, 20);
    const next = await woken.complete(1, "puback"); // acknowledges a, which the wake forgot
    expect(next).toEqual({ kind: "done", next: [expect.objectContaining({ kind: "publish", record: expect.objectContaining({ pid: 2, message: expect.objectContaining({ topic: "b" }) }) })] });
    expect(await drain(woken, [2])).toEqual([2, 3]);
    expect(storage.data.size).toBe(0);
    expect(await woken.complete(3, "puback")).toEqual({ kind: "unknown" }); // a late duplicate is still nothing
  });

  it("a connection that ends (hand-over or reset) cancels the hold: nothing is written after it", async () => {
    for (const end of ["handover", "reset"] as const) {
      const storage = new MemoryStorage();
      const box = cleanBox(storage, 1, 20);
      await box.add([msg("a"), msg("b")]);
      if (end === "handover") await box.handover();
      else box.reset();
      await sleep(60);
      expect(storage.rowsWritten, end).toBe(0);
    }
  });

  it("QoS 2 and shared-subscription messages are stored at once, as their flows need", async () => {
    const storage = new MemoryStorage();
    const box = cleanBox(storage, 1, 10_000);
    await box.add([msg("a"), msg("q2", 2), { ...msg("s"), share: "g/t" }]);
    expect(storage.rowsWritten).toBe(2);
    expect(box.held()).toBe(0);
    box.reset();
  });
});

describe("Outbox admission in chunks", () => {
  it("admits waiting messages once an eighth of the window is free, in order, never past the window; new ones queue behind them", async () => {
    const box = new Outbox(new MemoryStorage().asDurableObjectStorage(), 16); // chunk of 2
    const first = publishedPids(await box.add(Array.from({ length: 20 }, (_, i) => msg(`m${i}`))));
    expect(first).toEqual(Array.from({ length: 16 }, (_, i) => i + 1));
    expect(await box.complete(1, "puback")).toEqual({ kind: "done", next: [] }); // 1 free < 2
    // A message that arrives now must not overtake the four waiting ones, though a slot is free.
    expect(publishedPids(await box.add([msg("late")]))).toEqual([]);
    const two = await box.complete(2, "puback");
    if (two.kind !== "done") throw new Error(two.kind);
    expect(two.next.map((a) => (a.kind === "publish" ? a.record.message.topic : ""))).toEqual(["m16", "m17"]);
    // The rest follow in order, two at a time, as pairs of slots free up.
    const batches: string[][] = [];
    for (let pid = 3; pid <= 16; pid++) {
      const r = await box.complete(pid, "puback");
      if (r.kind === "done" && r.next.length > 0) batches.push(r.next.map((a) => (a.kind === "publish" ? a.record.message.topic : "")));
    }
    expect(batches).toEqual([["m18", "m19"], ["late"]]);
  });

  it("with nothing in flight, whatever fits goes out at once, so a small window never stalls", async () => {
    const box = new Outbox(new MemoryStorage().asDurableObjectStorage(), 3); // chunk of 1
    expect(publishedPids(await box.add([msg("a"), msg("b"), msg("c"), msg("d"), msg("e")]))).toEqual([1, 2, 3]);
    const next = await box.complete(1, "puback");
    expect(next.kind === "done" && publishedPids(next.next)).toEqual([4]);
  });
});
